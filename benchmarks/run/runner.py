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

Training and writing are separate: `train_records` trains a run or packed group and returns its records (no file
but the mid-run checkpoint); `write_records` writes snapshots, checkpoints and JSONs into the results folder. The
local launcher (`run_plans`) does both in this process; the Ray launcher (`benchmarks.run.launchers.ray_launcher`)
trains on workers and writes on the driver.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import time
import traceback

import torch
from tqdm import tqdm

from data import load_dataset
from engine.options import EngineOptions
from engine.trainer import group_key, pack_decline_reason, train_group

from benchmarks.run.provenance import environment
from benchmarks.run.store import (archive, checkpoint_path, embedding_path, file_sha256, index_results, is_finished, read_json,
                    read_record, save_embedding, save_snapshots, write_atomic)
from benchmarks.targets.loader import Plan, teacher_plans  # noqa: F401  (teacher_plans: re-exported)

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




def valid_checkpoint(results: str, rid: str) -> str | None:
    """The checkpoint path of finished run `rid` if its file exists and matches the sha256 in its record."""
    found = index_results(results).get(rid)
    rec = read_record(found)[0] if found else None
    path = checkpoint_path(results, rid)
    if rec is None or rec["status"] != "ok" or not os.path.isfile(path):
        return None
    want = rec["extras"].get("checkpoint_sha256")
    return path if want and file_sha256(path) == want else None


def checkpoint_bytes(state: dict) -> bytes:
    """A run's final state as the exact bytes of its checkpoint file (what a KD student restores)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def write_checkpoint(results: str, rid: str, blob: bytes) -> str:
    """Write checkpoints/<rid>.pt atomically from its bytes; returns its sha256."""
    path = checkpoint_path(results, rid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    return file_sha256(path)


def state_from_checkpoint(blob: bytes) -> dict:
    """The reported network's state dict out of a checkpoint's bytes."""
    saved = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    return saved["nets"][saved["reported"]]


def embedding_key(data: dict) -> str:
    """One 2-D embedding per dataset and training subset (the figures' common view)."""
    key = hashlib.sha256(json.dumps([data["dataset"], data.get("train_subset"), data.get("val_size"),
                                     data.get("val_seed")]).encode()).hexdigest()[:10]
    return f"{data['dataset']}-{key}"


def present_embeddings(results: str) -> frozenset[str]:
    folder = os.path.dirname(embedding_path(results, "x"))
    return frozenset(f[:-4] for f in os.listdir(folder) if f.endswith(".npz")) if os.path.isdir(folder) else frozenset()


def _snapshot_payload(plan: Plan, splits, snapshots: dict, have_embeddings) -> dict:
    """What `write_records` needs to write a run's loss snapshots: the arrays, and the 2-D embedding of the
    training set unless the results folder already has it (`have_embeddings`: keys present there)."""
    from engine.trainer import embed_2d, train_positions

    data = plan.spec["data"]
    key = embedding_key(data)
    xy = None
    if key not in have_embeddings:
        tr, _ = train_positions(splits, data)
        xy = embed_2d(splits.x_train[tr]).numpy()
    return {"arrays": {k: v.numpy() for k, v in snapshots.items()}, "embedding_key": key, "embedding": xy}


def _write_snapshots(plan: Plan, results: str, payload: dict) -> dict:
    """Write the run's loss snapshots and (once per dataset and training subset) the 2-D embedding they are drawn
    on; returns what the record keeps about them."""
    key = payload["embedding_key"]
    emb = embedding_path(results, key)
    rel_emb = os.path.relpath(emb, os.path.dirname(os.path.abspath(results)))
    if not os.path.isfile(emb):
        xy = payload["embedding"]
        if xy is None:
            raise RuntimeError(f"embedding {key} is missing from {results} and the run did not compute it")
        rel_emb = save_embedding(results, key, xy)
    rel = save_snapshots(results, plan.target, plan.run_id, payload["arrays"])
    return {"file": rel, "sha256": file_sha256(os.path.join(os.path.dirname(os.path.abspath(results)), rel)),
            "embedding": rel_emb, "epochs": sorted({int(k.split("_")[1]) for k in payload["arrays"] if "_" in k})}


def _record_head(plan: Plan) -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": plan.run_id, "target": plan.target, "row": plan.row,
            "variant": plan.variant, "compare_as": plan.compare_as, "spec": plan.spec}


def resume_path(results: str, plans: list[Plan], checkpoints: str | None = None) -> str:
    """Mid-run checkpoint of one run, or of a packed group (named by its run ids): in `checkpoints` when given
    (a folder every node reaches), else beside the final checkpoints."""
    key = plans[0].run_id if len(plans) == 1 else "pack-" + hashlib.sha256(
        ",".join(p.run_id for p in plans).encode()).hexdigest()[:12]
    folder = checkpoints or os.path.dirname(checkpoint_path(results, key))
    return os.path.join(folder, f"{key}.resume.pt")


def train_records(plans: list[Plan], data_root: str, device: torch.device, env: dict, cache: dict,
                  progress=None, download: bool = True, keep_state: set[str] = frozenset(),
                  role_states: list[dict | None] | None = None, snapshot_epochs: dict | None = None,
                  add_extras: list[dict] | None = None, options: EngineOptions | None = None,
                  checkpoint: str | None = None, have_embeddings=frozenset()) -> list[tuple[dict, dict | None, dict | None]]:
    """Train one run, or K runs packed (one spec apart from the seeds); returns per run (record, snapshots,
    state): the full record (provenance included, status `failed` with the cause when training raised), the
    payload `write_records` turns into snapshot files (or None), and the final state of a run in `keep_state`
    (or None). Writes no file but the mid-run checkpoint `checkpoint` (None: none), which lets a killed run
    resume. `have_embeddings`: the embedding keys the results folder already holds (others are computed here)."""
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    opts = dataclasses.replace(options or EngineOptions(), checkpoint=checkpoint)
    records = [_record_head(p) for p in plans]
    snaps_out: list[dict | None] = [None] * len(plans)
    states_out: list[dict | None] = [None] * len(plans)
    source = None
    try:
        name = plans[0].spec["data"]["dataset"]
        if name not in cache:
            cache[name] = load_dataset(name, data_root, download=download)
        source = cache[name].meta.get("source")
        outs = train_group([p.spec for p in plans], cache[name], device, on_epoch=progress,
                           role_states=role_states, keep_state=[p.run_id in keep_state for p in plans],
                           snapshot_epochs=[(snapshot_epochs or {}).get(p.run_id) for p in plans], options=opts)
        for i, (plan, rec, out, extra) in enumerate(zip(plans, records, outs, add_extras or [None] * len(plans))):
            out["extras"].update(extra or {})
            snaps = out.pop("snapshots", None)
            if snaps:
                snaps_out[i] = _snapshot_payload(plan, cache[name], snaps, have_embeddings)
            state = out.pop("state", None)
            if state is not None and out["status"] == "ok":
                states_out[i] = state
            rec["engine"] = out.pop("engine")
            rec.update(out, error=None)
    except Exception as e:  # a failed run is recorded, not lost; KeyboardInterrupt writes nothing
        snaps_out, states_out = [None] * len(plans), [None] * len(plans)
        for rec in records:
            rec.update(status="failed", error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}",
                       final_test_acc=None, best_test_acc=None, history=[], extras={})
    end = dt.datetime.now(dt.timezone.utc)
    for rec in records:
        engine = rec.pop("engine", None) or {**opts.record(), "pack": len(plans)}
        if len(plans) > 1:
            engine["packed_with"] = [p.run_id for p in plans]
        rec["provenance"] = {**env, "start": started.isoformat(timespec="seconds"),
                             "end": end.isoformat(timespec="seconds"),
                             "wall_seconds": round(time.perf_counter() - t0, 3), "engine": engine}
        if source is not None:  # which copy of the data (e.g. CIFAR's WebP mosaics and their sha256, data/)
            rec["provenance"]["data_source"] = source
    return list(zip(records, snaps_out, states_out))


def write_records(plans: list[Plan], outs: list[tuple[dict, dict | None, dict | None | bytes]], results: str,
                  keep_state: set[str] = frozenset(), resume: str | None = None) -> list[dict]:
    """Write what `train_records` returned into the results folder: per run its snapshots, its checkpoint (a
    state dict or the checkpoint's bytes; sha256 into the record) and then its JSON, atomically. A run finished
    elsewhere meanwhile keeps that record (unless it is a teacher whose checkpoint is rewritten); a failed or
    broken file at the run's path is archived first. `resume`: the group's mid-run checkpoint, deleted once
    every JSON is written and none failed. Returns the records now in the folder."""
    out_records = []
    for plan, (rec, snaps, state) in zip(plans, outs):
        path = os.path.join(results, "runs", plan.target, f"{plan.run_id}.json")
        old = index_results(results).get(plan.run_id)
        if old and is_finished(old) and plan.run_id not in keep_state:  # finished elsewhere meanwhile: keep theirs
            out_records.append(read_json(old))
            continue
        rec = dict(rec)
        rec["extras"] = dict(rec.get("extras") or {})
        try:
            if snaps:
                rec["extras"]["snapshots"] = _write_snapshots(plan, results, snaps)
            if state is not None and rec["status"] == "ok":
                blob = state if isinstance(state, bytes) else checkpoint_bytes(state)
                rec["extras"]["checkpoint_sha256"] = write_checkpoint(results, plan.run_id, blob)
        except Exception as e:  # a run whose files cannot be written is not finished
            rec.update(status="failed", error=f"writing its files failed: {type(e).__name__}: {e}",
                       final_test_acc=None, best_test_acc=None, history=[], extras={})
        if old:
            archive(old, "superseded" if is_finished(old) else "failed")
        write_atomic(path, rec)
        out_records.append(rec)
    if resume and os.path.exists(resume) and all(r["status"] != "failed" for r, _, _ in outs):
        os.remove(resume)  # every JSON is written: the mid-run state is no longer needed
    return out_records


def execute(plans: list[Plan], data_root: str, results: str, device: torch.device, env: dict, cache: dict,
            progress=None, download: bool = True, keep_state: set[str] = frozenset(),
            role_states: list[dict | None] | None = None, snapshot_epochs: dict | None = None,
            add_extras: list[dict] | None = None, options: EngineOptions | None = None,
            checkpoints: str | None = None) -> list[dict]:
    """Train one run, or K runs packed, and write one JSON per run (with `keep_state`, first that run's
    checkpoint): `train_records` then `write_records`. A mid-run checkpoint (in `checkpoints`, else beside the
    final ones) lets a killed run resume; it is deleted once the JSONs are written."""
    resume = resume_path(results, plans, checkpoints)
    outs = train_records(plans, data_root, device, env, cache, progress, download, keep_state, role_states,
                         snapshot_epochs, add_extras, options, checkpoint=resume,
                         have_embeddings=present_embeddings(results))
    return write_records(plans, outs, results, keep_state, resume)


class _Session:
    """What one `run_plans` call shares: device, environment, dataset cache, options."""

    def __init__(self, data_root, results, device, download, teacher_ids, snapshots=None, options=None,
                 checkpoints=None):
        self.data_root, self.results, self.device, self.download = data_root, results, device, download
        self.checkpoints = checkpoints
        self.snapshots = snapshots or {}
        self.env = environment(device)
        self.cache: dict = {}
        self.teacher_ids = teacher_ids
        self.options = options or EngineOptions.for_device(device)  # the fast path on CUDA unless told

    def run(self, plan: Plan, role_states=None, add_extras=None) -> dict:
        return self.run_group([plan], [role_states], [add_extras])[0]

    def run_group(self, plans: list[Plan], role_states=None, add_extras=None) -> list[dict]:
        first = plans[0]
        label = first.variant if len(plans) == 1 else f"{first.variant} x{len(plans)} packed"
        epochs = tqdm(total=first.spec["recipe"]["epochs"], desc=f"{first.run_id} {label}", unit="ep",
                      leave=False, dynamic_ncols=True)

        def on_epoch(recs):
            rec = next((r for r in recs if r is not None), None)
            if rec is not None:
                epochs.n = rec["epoch"]
                epochs.set_postfix(test_acc=f"{rec['test_acc']:.2f}", loss=f"{rec['train_loss']:.3f}")

        try:
            recs = execute(plans, self.data_root, self.results, self.device, self.env, self.cache, on_epoch,
                           self.download, keep_state=self.teacher_ids, role_states=role_states,
                           snapshot_epochs=self.snapshots, add_extras=add_extras, options=self.options,
                           checkpoints=self.checkpoints)
        finally:
            epochs.close()
        for plan, rec in zip(plans, recs):
            report_line(plan, rec, len(plans))
        return recs

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
            with open(ckpt, "rb") as f:
                blob = f.read()
            states[role] = state_from_checkpoint(blob)
            used.update(teacher_extras(role, tplan.run_id, blob))
        return states, used


def teacher_extras(role: str, rid: str, blob: bytes) -> dict:
    """What a student's record says about the checkpoint a role was restored from."""
    return {f"{role}_checkpoint_sha256": hashlib.sha256(blob).hexdigest(), f"{role}_run_id": rid}


def report_line(plan: Plan, rec: dict, pack: int = 1, where: str = "") -> None:
    acc = rec.get("final_test_acc")
    tqdm.write(f"[{rec['status']}] {plan.target} {plan.row} {plan.variant} seed={plan.spec['seed']} "
               f"budget={plan.spec['budget']} id={plan.run_id} "
               f"test_acc={'-' if acc is None else f'{acc:.2f}'} wall={rec['provenance']['wall_seconds']:.0f}s"
               + (f" packed x{pack}" if pack > 1 else "") + where)
    if rec["status"] == "failed":
        tqdm.write(rec["error"])


def todo_plans(plans: list[Plan], results: str) -> list[Plan]:
    done = index_results(results)
    return [p for p in plans if not is_finished(done.get(p.run_id))]


def pack_groups(todo: list[Plan], pack: int | str, device: torch.device, splits_of) -> list[list[Plan]]:
    """Split the plans to run into groups trained together. Plans are packed only when their specs differ in
    the seeds alone and the method and models allow it (`engine.trainer.pack_decline_reason`). `pack`: "auto"
    (up to 4 on CUDA; 1 on CPU, where a packed convolution is slower than K sequential ones, measured in
    results/bench) or an int K (1: never pack)."""
    size = (4 if device.type == "cuda" else 1) if pack == "auto" else int(pack)
    if size <= 1:
        return [[p] for p in todo]
    groups: dict[str, list[Plan]] = {}
    for p in todo:
        groups.setdefault(group_key(p.spec), []).append(p)
    out = []
    for plans in groups.values():
        if len(plans) == 1 or pack_decline_reason(plans[0].spec, splits_of(plans[0])) is not None:
            out += [[p] for p in plans]
        else:
            out += [plans[i : i + size] for i in range(0, len(plans), size)]
    order = {p.run_id: i for i, p in enumerate(todo)}
    return sorted(out, key=lambda g: order[g[0].run_id])


def run_plans(plans: list[Plan], data_root: str, results: str, device: torch.device, fail_fast: bool = False,
              download: bool = True, cache: dict | None = None, snapshots: dict[str, set[int]] | None = None,
              pack: int | str = "auto", options: EngineOptions | None = None, checkpoints: str | None = None) -> int:
    """Run every unfinished plan in this process (the local launcher); returns the number of runs that failed.
    `cache`: datasets already loaded; `snapshots`: run id -> epochs at which to save per-example losses (the
    figures that ask for them); `pack`: see `pack_groups`; `options`: how the engine computes (fast path,
    checkpoint interval); `checkpoints`: folder of the mid-run checkpoints (default: checkpoints/)."""
    todo = todo_plans(plans, results)
    tqdm.write(f"{len(plans)} runs in the matrix, {len(plans) - len(todo)} already done, {len(todo)} to run "
               f"on {device}")
    teacher_ids = {t.run_id for p in plans for t in teacher_plans(p).values()}
    session = _Session(data_root, results, device, download, teacher_ids, snapshots, options, checkpoints)
    session.cache.update(cache or {})

    def splits_of(plan):
        name = plan.spec["data"]["dataset"]
        if name not in session.cache:
            session.cache[name] = load_dataset(name, data_root, download=download)
        return session.cache[name]

    failed = skipped = 0
    groups = pack_groups(todo, pack, device, splits_of) if len(todo) > 1 else [[p] for p in todo]
    bar = tqdm(total=len(todo), desc="runs", unit="run", dynamic_ncols=True)
    for group in groups:
        locks, claimed = [], []
        for i, plan in enumerate(group):
            lock = acquire(results, plan.run_id)
            if lock is None and i == 0 and len(group) > 1:  # drivers side by side (--jobs) leave a group whole
                tqdm.write(f"[skip] {', '.join(p.run_id for p in group)}: packed group held by another process")
                skipped += len(group)
                break
            if lock is None:
                tqdm.write(f"[skip] {plan.run_id} is running in another process")
                skipped += 1
            elif is_finished(index_results(results).get(plan.run_id)):  # finished by another process meanwhile
                lock.close()
            else:
                locks.append(lock)
                claimed.append(plan)
        try:
            ready, states, extras, recs = [], [], [], []
            for plan in claimed:
                try:
                    st, used = session.role_states(plan)
                except Exception as e:  # the student cannot start: record why, as a failed run
                    recs.append(_failed_without_training(plan, session, e))
                    continue
                ready.append(plan)
                states.append(st)
                extras.append(used)
            if len(ready) == 1:
                recs.append(session.run(ready[0], states[0], extras[0]))
            elif ready:
                recs += session.run_group(ready, states, extras)
        finally:
            for lock in locks:
                lock.close()
        bar.update(len(group))
        failed += sum(r["status"] == "failed" for r in recs)
        if failed and fail_fast:
            break
    bar.close()
    if skipped:
        tqdm.write(f"{skipped} run(s) skipped: held by another driver (a --jobs sibling or another process); "
                   f"rerun later to pick up any it did not finish")
    return failed


def failed_record(plan: Plan, env: dict, error: str) -> dict:
    """The record of a run that could not train (its teacher failed, its worker died past the retries)."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {"schema_version": SCHEMA_VERSION, "run_id": plan.run_id, "target": plan.target, "row": plan.row,
            "variant": plan.variant, "compare_as": plan.compare_as, "spec": plan.spec, "status": "failed",
            "error": error, "final_test_acc": None, "best_test_acc": None, "history": [], "extras": {},
            "provenance": {**env, "start": now, "end": now, "wall_seconds": 0.0}}


def _failed_without_training(plan: Plan, session: _Session, err: Exception) -> dict:
    record = failed_record(plan, session.env, f"{type(err).__name__}: {err}")
    write_records([plan], [(record, None, None)], session.results)
    tqdm.write(f"[failed] {plan.run_id}: {record['error']}")
    return record
