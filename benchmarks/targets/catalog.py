"""The fast path of the command line: targets and dataset presence without importing torch.

Loading the targets validates every YAML against the registries of methods, models, datasets and optimisers and
expands each budget into run specs, which needs torch (about 2 s to import on a 2-core machine) and seconds of
work. All of it is derivable from the YAML files and the sources, so it is cached in `$CLREPRO_CACHE` (default
`~/.cache/clrepro`) keyed by the sha256 of: every target YAML of the folder and of the built-in folder (includes),
the sources of methods/, models/, data/, engine/, benchmarks/targets/loader.py and benchmarks/targets/spec.py, and the loaded
plugins. A hit gives `Target`s whose default-seed plans come from the cache; anything else (other seeds, a miss)
takes the full path, so a cached answer is always the answer the full path would give.

Dataset presence (`present`) is cached with the paths the dataset's own check looked at and what it found; a hit
re-checks those paths (stat calls, no torch), so a dataset that appears or disappears is seen at once.
"""
from __future__ import annotations

import hashlib
import json
import os

from benchmarks.cache import REPO, DiskCache as _DiskCache, cache_dir as _cache_dir, source_digest as _source_digest
from benchmarks.targets.loader import TARGET_DIR, Plan, Target

CATALOG_VERSION = 1
_PRESENCE = _DiskCache("presence.json")


def _key(directory: str) -> str:
    from benchmarks.plugins import LOADED

    h = hashlib.sha256(f"catalog {CATALOG_VERSION}".encode())
    for folder in dict.fromkeys([os.path.abspath(directory), os.path.abspath(TARGET_DIR)]):
        if not os.path.isdir(folder):
            continue
        for fn in sorted(os.listdir(folder)):
            if fn.endswith(".yaml"):
                h.update(f"{folder}/{fn}".encode())
                with open(os.path.join(folder, fn), "rb") as f:
                    h.update(f.read())
    for pkg in ("methods", "models", "data", "engine"):
        h.update(_source_digest(pkg).encode())
    for rel in ("benchmarks/targets/loader.py", "benchmarks/targets/spec.py"):
        with open(os.path.join(REPO, rel), "rb") as f:
            h.update(f.read())
    h.update(",".join(sorted(str(v.get("sha256")) for v in LOADED.values())).encode())
    return h.hexdigest()


def _path(directory: str) -> str:
    tag = hashlib.sha256(os.path.abspath(directory).encode()).hexdigest()[:12]
    return os.path.join(_cache_dir(), f"targets-{tag}.json")


def load_targets(directory: str = TARGET_DIR) -> dict[str, Target]:
    """`benchmarks.targets.loader.load_targets`, from the cache when nothing it depends on changed."""
    key, path = _key(directory), _path(directory)
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("key") == key:
            return {name: Target(e["raw"], e["path"], cached={b: [Plan(name, *p) for p in plans]
                                                              for b, plans in e["plans"].items()})
                    for name, e in data["targets"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from benchmarks.targets.loader import load_targets as load_full

    targets = load_full(directory)  # validates: a UsageError here is never cached
    data = {"key": key, "targets": {
        name: {"raw": t.raw, "path": t.path,
               "plans": {b: [[p.row, p.variant, p.compare_as, p.spec] for p in t.plans(b)] for b in t.raw["budgets"]}}
        for name, t in targets.items()}}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs speed
    return targets


_CHECKS = {"isfile": os.path.isfile, "isdir": os.path.isdir, "exists": os.path.exists}


def present(name: str, root: str) -> bool:
    """`data.dataset_present(name, root)`, from the paths its check looked at last time if they still say the same."""
    key = f"{_source_digest('data')}|{name}|{os.path.abspath(root)}"
    entry = _PRESENCE._load().get(key)
    if entry and all(_CHECKS[kind](p) == seen for p, kind, seen in entry["checks"]):
        return entry["answer"]
    from data import dataset_present

    checks: list = []
    saved = {kind: getattr(os.path, kind) for kind in _CHECKS}

    def recorder(kind, fn):
        def check(p):
            seen = fn(p)
            checks.append([os.fspath(p), kind, seen])
            return seen

        return check

    try:
        for kind, fn in saved.items():
            setattr(os.path, kind, recorder(kind, fn))
        answer = dataset_present(name, root)
    finally:
        for kind, fn in saved.items():
            setattr(os.path, kind, fn)
    _PRESENCE.put(key, {"answer": bool(answer), "checks": checks})
    return bool(answer)
