"""The results store, torch-free (the runner, the report and the figures share it).

Layout: results/runs/<target>/<run_id>.json, one strict-JSON record per run (contract: `schema.problems`).
A record is *finished* when it parses, passes the schema and has status `ok` or `diverged`: such a run is never
rerun or rewritten. Anything else at a run's path (a failed run, a truncated or schema-breaking file) is moved
aside as <run_id>.failed-<k>.json before the run is retried, so no record is ever lost or silently overwritten.
Checkpoints (e.g. a KD teacher's weights) live in checkpoints/<run_id>.pt beside results/, outside git.
Per-example loss snapshots (BLCL Figs. 3/4/10/11) are a compressed array per run: results/runs/<target>/
<run_id>.snapshots.npz when at most 1 MB (committed), else checkpoints/<run_id>.snapshots.npz (not in git); the
fixed 2-D embedding of a training set is cached once per dataset in results/embeddings/<key>.npz.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import tempfile
from collections import defaultdict

import numpy as np

from benchmarks.run.schema import problems
from benchmarks.targets.spec import canonical, seedless

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


def read_record(path: str) -> tuple[dict | None, str | None]:
    """(record, None) for a schema-valid record, else (None, why)."""
    try:
        rec = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"unreadable: {type(e).__name__}: {e}"
    if not isinstance(rec, dict):
        return None, "not a JSON object"
    bad = problems(rec)
    if bad:
        return None, "breaks the schema: " + "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
    return rec, None


def is_finished(path: str | None) -> bool:
    if not path:
        return False
    rec, _ = read_record(path)
    return rec is not None and rec["status"] in FINISHED


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
    """Write strict JSON to a temporary file in the same folder, then rename it over `path` (0644)."""
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


def archive(path: str, tag: str = "failed") -> str:
    """Move a record aside as <run_id>.<tag>-<k>.json (k = first free number); returns the new path."""
    k = 1
    while os.path.exists(f"{path[:-5]}.{tag}-{k}.json"):
        k += 1
    new = f"{path[:-5]}.{tag}-{k}.json"
    os.replace(path, new)
    return new


def cell_key(spec: dict) -> str:
    """Everything but the seeds (the run's and its teachers'): the runs of one table cell."""
    return canonical(seedless(spec))


def load_records(results: str) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """(cell key -> schema-valid records of all statuses, sorted by seed; path -> why, for files skipped)."""
    cells: dict[str, list[dict]] = defaultdict(list)
    skipped: dict[str, str] = {}
    for path in index_results(results).values():
        rec, why = read_record(path)
        if rec is None:
            skipped[path] = why
            continue
        cells[cell_key(rec["spec"])].append(rec)
    for recs in cells.values():
        recs.sort(key=lambda r: r["spec"]["seed"])
    return cells, skipped


def checkpoint_path(results: str, rid: str) -> str:
    """checkpoints/<run_id>.pt beside the results folder (ignored by git)."""
    return os.path.join(os.path.dirname(os.path.abspath(results)), "checkpoints", f"{rid}.pt")


SNAPSHOT_GIT_LIMIT = 1 << 20  # bytes: larger snapshot files stay out of git (checkpoints/)


def _save_npz(path: str, arrays: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp.npz")
    os.close(fd)
    np.savez_compressed(tmp, **arrays)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def file_sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def save_snapshots(results: str, target: str, rid: str, arrays: dict) -> str:
    """Write a run's loss snapshots (float16); returns the path relative to the results folder's parent."""
    arrays = {k: np.asarray(v, dtype=np.float16) for k, v in arrays.items()}
    path = os.path.join(results, "runs", target, f"{rid}.snapshots.npz")
    _save_npz(path, arrays)
    if os.path.getsize(path) > SNAPSHOT_GIT_LIMIT:
        big = os.path.join(os.path.dirname(checkpoint_path(results, rid)), f"{rid}.snapshots.npz")
        os.makedirs(os.path.dirname(big), exist_ok=True)
        os.replace(path, big)
        path = big
    return os.path.relpath(path, os.path.dirname(os.path.abspath(results)))


def embedding_path(results: str, key: str) -> str:
    return os.path.join(results, "embeddings", f"{key}.npz")


def save_embedding(results: str, key: str, xy) -> str:
    _save_npz(embedding_path(results, key), {"xy": np.asarray(xy, dtype=np.float16)})
    return os.path.relpath(embedding_path(results, key), os.path.dirname(os.path.abspath(results)))


def snapshots_present(results: str, rec: dict) -> bool:
    """Whether `read_snapshots` would find this run's files: its snapshot file with the recorded sha256, and its
    embedding."""
    info = rec["extras"].get("snapshots") or {}
    base = os.path.dirname(os.path.abspath(results))
    try:
        path = os.path.join(base, info["file"])
        return (os.path.isfile(path) and file_sha256(path) == info.get("sha256")
                and os.path.isfile(os.path.join(base, info["embedding"])))
    except (KeyError, OSError, TypeError):
        return False


def read_snapshots(results: str, rec: dict) -> tuple[dict | None, np.ndarray | None]:
    """(loss arrays by name, 2-D coordinates) of a run, or (None, None) when its files are missing."""
    info = rec["extras"].get("snapshots") or {}
    base = os.path.dirname(os.path.abspath(results))
    try:
        path = os.path.join(base, info["file"])
        if file_sha256(path) != info.get("sha256"):  # e.g. another results folder's file under checkpoints/
            return None, None
        snaps = dict(np.load(path))
        xy = np.load(os.path.join(base, info["embedding"]))["xy"].astype(np.float32)
    except (KeyError, OSError, ValueError):
        return None, None
    return snaps, xy
