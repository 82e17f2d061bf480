"""Runs a target's matrix: skips finished runs, trains the rest, writes one JSON per run atomically.

Result files live at results/runs/<target>/<run_id>.json (see `store`). A run whose JSON exists anywhere under
results/runs, passes the schema and has status `ok` or `diverged` is finished and never rerun or rewritten (the
same spec from another target is the same run). Anything else is retried; the old file is kept beside it as
<run_id>.failed-<k>.json.

Teachers: a spec whose `roles.<role>.from_run` names another run's spec (KD's teacher) needs that run's
checkpoint. The runner trains the teacher first, once, under its own lock, writes its checkpoint
(checkpoints/<teacher_id>.pt, sha256 recorded in the teacher's JSON) and then its JSON; the student's run id
covers the teacher's spec. A missing or corrupt checkpoint (sha256 differs from the record) is retrained, never
used; the teacher's previous record is then kept as <teacher_id>.superseded-<k>.json.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import time
import traceback

import torch
from tqdm import tqdm

from data import load_dataset
from engine import train

from .provenance import environment
from .store import (archive, checkpoint_path, embedding_path, file_sha256, index_results, is_finished, read_json,
                    read_record, save_embedding, save_snapshots, write_atomic)
from .targets import Plan

SCHEMA_VERSION = 1


def acquire(results: str, rid: str, wait: bool = False):
    """Claim run `rid` for this process with an exclusive flock on results/locks/<rid>.lock; returns the open
    file (closing it, or the process dying, releases the claim) or None when another worker holds it. Lets
    several workers share one results folder without training the same spec twice, across targets too."""
    os.makedirs(os.path.join(results, "locks"), exist_ok=True)
    f = open(os.path.join(results, "locks", f"{rid}.lock"), "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        f.close()
        return None
    return f


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def teacher_plans(plan: Plan) -> dict[str, Plan]:
    """role -> the plan of the run whose checkpoint the role is restored from."""
    return {role: Plan(plan.target, plan.row, role, role, block["from_run"])
            for role, block in plan.spec.get("roles", {}).items() if "from_run" in block}


def valid_checkpoint(results: str, rid: str) -> str | None:
    """The checkpoint path of finished run `rid` if its file exists and matches the sha256 in its record."""
    found = index_results(results).get(rid)
    rec = read_record(found)[0] if found else None
    path = checkpoint_path(results, rid)
    if rec is None or rec["status"] != "ok" or not os.path.isfile(path):
        return None
    want = rec["extras"].get("checkpoint_sha256")
    return path if want and file_sha256(path) == want else None


def _save_checkpoint(results: str, rid: str, state: dict) -> str:
    path = checkpoint_path(results, rid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return file_sha256(path)


def _save_snapshots(plan: Plan, results: str, splits, snapshots: dict) -> dict:
    """Write the run's loss snapshots and (once per dataset and training subset) the 2-D embedding they are drawn
    on; returns what the record keeps about them."""
    from engine.trainer import embed_2d, train_positions

    data = plan.spec["data"]
    key = hashlib.sha256(json.dumps([data["dataset"], data.get("train_subset"), data.get("val_size"),
                                     data.get("val_seed")]).encode()).hexdigest()[:10]
    key = f"{data['dataset']}-{key}"
    emb = embedding_path(results, key)
    rel_emb = os.path.relpath(emb, os.path.dirname(os.path.abspath(results)))
    if not os.path.isfile(emb):
        tr, _ = train_positions(splits, data)
        rel_emb = save_embedding(results, key, embed_2d(splits.x_train[tr]).numpy())
    rel = save_snapshots(results, plan.target, plan.run_id, {k: v.numpy() for k, v in snapshots.items()})
    return {"file": rel, "sha256": file_sha256(os.path.join(os.path.dirname(os.path.abspath(results)), rel)),
            "embedding": rel_emb, "epochs": sorted({int(k.split("_")[1]) for k in snapshots if "_" in k})}


def execute(plan: Plan, data_root: str, results: str, device: torch.device, env: dict, cache: dict,
            progress=None, download: bool = True, keep_state: bool = False, role_states: dict | None = None,
            snapshot_epochs: set[int] | None = None, add_extras: dict | None = None) -> dict:
    """Train one plan and write its JSON (and, with `keep_state`, first its checkpoint); returns the record."""
    spec = plan.spec
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    record = {"schema_version": SCHEMA_VERSION, "run_id": plan.run_id, "target": plan.target, "row": plan.row,
              "variant": plan.variant, "compare_as": plan.compare_as, "spec": spec}
    try:
        name = spec["data"]["dataset"]
        if name not in cache:
            cache[name] = load_dataset(name, data_root, download=download)
        out = train(spec, cache[name], device, on_epoch=progress, role_states=role_states, keep_state=keep_state,
                    snapshot_epochs=snapshot_epochs)
        out["extras"].update(add_extras or {})
        snaps = out.pop("snapshots", None)
        if snaps:
            out["extras"]["snapshots"] = _save_snapshots(plan, results, cache[name], snaps)
        state = out.pop("state", None)
        if state is not None and out["status"] == "ok":
            out["extras"]["checkpoint_sha256"] = _save_checkpoint(results, plan.run_id, state)
        record.update(out, error=None)
    except Exception as e:  # a failed run is recorded, not lost; KeyboardInterrupt writes nothing
        record.update(status="failed", error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}",
                      final_test_acc=None, best_test_acc=None, history=[], extras={})
    end = dt.datetime.now(dt.timezone.utc)
    record["provenance"] = {**env, "start": started.isoformat(timespec="seconds"),
                            "end": end.isoformat(timespec="seconds"), "wall_seconds": round(time.perf_counter() - t0, 3)}
    path = os.path.join(results, "runs", plan.target, f"{plan.run_id}.json")
    old = index_results(results).get(plan.run_id)
    if old and is_finished(old) and not keep_state:  # another process finished it meanwhile: keep theirs
        return read_json(old)
    if old:
        archive(old, "superseded" if is_finished(old) else "failed")
    write_atomic(path, record)
    return record


class _Session:
    """What one `run_plans` call shares: device, environment, dataset cache, options."""

    def __init__(self, data_root, results, device, download, teacher_ids, snapshots=None):
        self.data_root, self.results, self.device, self.download = data_root, results, device, download
        self.snapshots = snapshots or {}
        self.env = environment(device)
        self.cache: dict = {}
        self.teacher_ids = teacher_ids

    def run(self, plan: Plan, role_states=None, add_extras=None) -> dict:
        epochs = tqdm(total=plan.spec["recipe"]["epochs"], desc=f"{plan.run_id} {plan.variant}", unit="ep",
                      leave=False, dynamic_ncols=True)

        def on_epoch(rec):
            epochs.set_postfix(test_acc=f"{rec['test_acc']:.2f}", loss=f"{rec['train_loss']:.3f}")
            epochs.update(1)

        try:
            rec = execute(plan, self.data_root, self.results, self.device, self.env, self.cache, on_epoch,
                          self.download, keep_state=plan.run_id in self.teacher_ids, role_states=role_states,
                          snapshot_epochs=self.snapshots.get(plan.run_id), add_extras=add_extras)
        finally:
            epochs.close()
        acc = rec.get("final_test_acc")
        tqdm.write(f"[{rec['status']}] {plan.target} {plan.row} {plan.variant} seed={plan.spec['seed']} "
                   f"budget={plan.spec['budget']} id={plan.run_id} "
                   f"test_acc={'-' if acc is None else f'{acc:.2f}'} wall={rec['provenance']['wall_seconds']:.0f}s")
        if rec["status"] == "failed":
            tqdm.write(rec["error"])
        return rec

    def role_states(self, plan: Plan) -> tuple[dict[str, dict], dict]:
        """Restore every `from_run` role, training its run first when its checkpoint is missing or corrupt;
        returns (state dicts by role, the extras naming the checkpoints used: <role>_checkpoint_sha256)."""
        states, used = {}, {}
        for role, tplan in teacher_plans(plan).items():
            ckpt = valid_checkpoint(self.results, tplan.run_id)
            if ckpt is None:
                lock = acquire(self.results, tplan.run_id, wait=True)  # another worker may be training it
                try:
                    ckpt = valid_checkpoint(self.results, tplan.run_id)
                    if ckpt is None:
                        tqdm.write(f"[teacher] {tplan.run_id} for {plan.run_id}: no valid checkpoint, training it")
                        rec = self.run(tplan, *self.role_states(tplan))
                        if rec["status"] != "ok":
                            raise RuntimeError(f"teacher run {tplan.run_id} ended {rec['status']}")
                        ckpt = valid_checkpoint(self.results, tplan.run_id)
                finally:
                    lock.close()
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)
            states[role] = saved["nets"][saved["reported"]]
            used[f"{role}_checkpoint_sha256"] = file_sha256(ckpt)
            used[f"{role}_run_id"] = tplan.run_id
        return states, used


def todo_plans(plans: list[Plan], results: str) -> list[Plan]:
    done = index_results(results)
    return [p for p in plans if not is_finished(done.get(p.run_id))]


def run_plans(plans: list[Plan], data_root: str, results: str, device: torch.device, fail_fast: bool = False,
              download: bool = True, cache: dict | None = None, snapshots: dict[str, set[int]] | None = None) -> int:
    """Run every unfinished plan; returns the number of runs that failed. `cache`: datasets already loaded;
    `snapshots`: run id -> epochs at which to save per-example losses (the figures that ask for them)."""
    todo = todo_plans(plans, results)
    tqdm.write(f"{len(plans)} runs in the matrix, {len(plans) - len(todo)} already done, {len(todo)} to run "
               f"on {device}")
    teacher_ids = {t.run_id for p in plans for t in teacher_plans(p).values()}
    session = _Session(data_root, results, device, download, teacher_ids, snapshots)
    session.cache.update(cache or {})
    failed = skipped = 0
    for plan in tqdm(todo, desc="runs", unit="run", dynamic_ncols=True):
        lock = acquire(results, plan.run_id)
        if lock is None:
            tqdm.write(f"[skip] {plan.run_id} is running in another process")
            skipped += 1
            continue
        try:
            if is_finished(index_results(results).get(plan.run_id)):  # finished by another process meanwhile
                continue
            try:
                states = session.role_states(plan)
            except Exception as e:  # the student cannot start: record why, as a failed run
                states = e
            if isinstance(states, Exception):
                rec = _failed_without_training(plan, session, states)
            else:
                rec = session.run(plan, *states)
        finally:
            lock.close()
        if rec["status"] == "failed":
            failed += 1
            if fail_fast:
                break
    if skipped:
        tqdm.write(f"{skipped} run(s) skipped: held by another worker; rerun later to pick up their results")
    return failed


def _failed_without_training(plan: Plan, session: _Session, err: Exception) -> dict:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    record = {"schema_version": SCHEMA_VERSION, "run_id": plan.run_id, "target": plan.target, "row": plan.row,
              "variant": plan.variant, "compare_as": plan.compare_as, "spec": plan.spec, "status": "failed",
              "error": f"{type(err).__name__}: {err}", "final_test_acc": None, "best_test_acc": None,
              "history": [], "extras": {}, "provenance": {**session.env, "start": now, "end": now, "wall_seconds": 0.0}}
    path = os.path.join(session.results, "runs", plan.target, f"{plan.run_id}.json")
    old = index_results(session.results).get(plan.run_id)
    if old:
        archive(old, "failed")
    write_atomic(path, record)
    tqdm.write(f"[failed] {plan.run_id}: {record['error']}")
    return record
