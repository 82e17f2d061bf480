"""Runs a target's matrix: skips finished runs, trains the rest, writes one JSON per run atomically.

Result files live at results/runs/<target>/<run_id>.json. A run whose JSON exists anywhere under results/runs
with status `ok` or `diverged` is finished and never rerun or rewritten (the same spec from another target is
the same run). A `failed` run is retried; its old record is kept beside it as <run_id>.failed-<k>.json.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import glob
import json
import math
import os
import re
import tempfile
import time
import traceback

import torch
from tqdm import tqdm

from data import load_dataset
from engine import train

from .provenance import environment
from .targets import Plan

SCHEMA_VERSION = 1
FINISHED = ("ok", "diverged")
RUN_FILE = re.compile(r"^[0-9a-f]{12}\.json$")


def index_results(results: str) -> dict[str, str]:
    """run_id -> path of its result JSON, over all targets."""
    out = {}
    for path in sorted(glob.glob(os.path.join(results, "runs", "*", "*.json"))):
        if RUN_FILE.match(os.path.basename(path)):
            out[os.path.basename(path)[:-5]] = path
    return out


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def is_finished(path: str | None) -> bool:
    if not path:
        return False
    try:
        return read_json(path).get("status") in FINISHED
    except (OSError, json.JSONDecodeError):
        return False


def finite(obj):
    """Non-finite floats (a diverged run's losses) become null, so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def write_atomic(path: str, obj: dict) -> None:
    obj = finite(obj)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, allow_nan=False)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _archive_failed(path: str) -> None:
    k = 1
    while os.path.exists(f"{path[:-5]}.failed-{k}.json"):
        k += 1
    os.replace(path, f"{path[:-5]}.failed-{k}.json")


def acquire(results: str, rid: str):
    """Claim run `rid` for this process with an exclusive flock on results/locks/<rid>.lock; returns the open
    file (closing it, or the process dying, releases the claim) or None when another worker holds it. Lets
    several workers share one results folder without training the same spec twice, across targets too."""
    os.makedirs(os.path.join(results, "locks"), exist_ok=True)
    f = open(os.path.join(results, "locks", f"{rid}.lock"), "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
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


def execute(plan: Plan, data_root: str, results: str, device: torch.device, env: dict, cache: dict,
            progress=None, download: bool = True) -> dict:
    """Train one plan and write its JSON; returns the record."""
    spec = plan.spec
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    record = {"schema_version": SCHEMA_VERSION, "run_id": plan.run_id, "target": plan.target, "row": plan.row,
              "variant": plan.variant, "compare_as": plan.compare_as, "spec": spec}
    try:
        name = spec["data"]["dataset"]
        if name not in cache:
            cache[name] = load_dataset(name, data_root, download=download)
        out = train(spec, cache[name], device, on_epoch=progress)
        record.update(out, error=None)
    except Exception as e:  # a failed run is recorded, not lost; KeyboardInterrupt writes nothing
        record.update(status="failed", error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}",
                      final_test_acc=None, best_test_acc=None, history=[], extras={})
    end = dt.datetime.now(dt.timezone.utc)
    record["provenance"] = {**env, "start": started.isoformat(timespec="seconds"),
                            "end": end.isoformat(timespec="seconds"), "wall_seconds": round(time.perf_counter() - t0, 3)}
    path = os.path.join(results, "runs", plan.target, f"{plan.run_id}.json")
    if os.path.exists(path):
        if is_finished(path):  # another process finished it meanwhile: keep theirs, never overwrite
            return read_json(path)
        _archive_failed(path)
    write_atomic(path, record)
    return record


def run_plans(plans: list[Plan], data_root: str, results: str, device: torch.device, fail_fast: bool = False,
              download: bool = True) -> int:
    """Run every unfinished plan; returns the number of runs that failed."""
    done = index_results(results)
    todo = [p for p in plans if not is_finished(done.get(p.run_id))]
    tqdm.write(f"{len(plans)} runs in the matrix, {len(plans) - len(todo)} already done, {len(todo)} to run "
               f"on {device}")
    env = environment(device)
    cache: dict = {}
    failed = skipped = 0
    bar = tqdm(todo, desc="runs", unit="run", dynamic_ncols=True)
    for plan in bar:
        lock = acquire(results, plan.run_id)
        if lock is None:
            tqdm.write(f"[skip] {plan.run_id} is running in another process")
            skipped += 1
            continue
        if is_finished(index_results(results).get(plan.run_id)):  # finished by another process meanwhile
            lock.close()
            continue
        epochs = tqdm(total=plan.spec["recipe"]["epochs"], desc=f"{plan.run_id} {plan.variant}", unit="ep",
                      leave=False, dynamic_ncols=True)

        def on_epoch(rec, epochs=epochs):
            epochs.set_postfix(test_acc=f"{rec['test_acc']:.2f}", loss=f"{rec['train_loss']:.3f}")
            epochs.update(1)

        try:
            rec = execute(plan, data_root, results, device, env, cache, on_epoch, download)
        finally:
            lock.close()
        epochs.close()
        acc = rec.get("final_test_acc")
        tqdm.write(f"[{rec['status']}] {plan.target} {plan.row} {plan.variant} seed={plan.spec['seed']} "
                   f"budget={plan.spec['budget']} id={plan.run_id} "
                   f"test_acc={'-' if acc is None else f'{acc:.2f}'} "
                   f"wall={rec['provenance']['wall_seconds']:.0f}s")
        if rec["status"] == "failed":
            failed += 1
            tqdm.write(rec["error"])
            if fail_fast:
                break
    if skipped:
        tqdm.write(f"{skipped} run(s) skipped: held by another worker; rerun later to pick up their results")
    return failed
