"""Run specs: the canonical, hashable description of one training run, and its run id.

A spec holds everything that determines the result (method with all hyper-parameters, model, data and noise,
recipe after budget overrides, budget name, seed) and nothing that does not (target name, device). The run id is
the first 12 hex digits of the sha256 of the spec as sorted, compact JSON, so the same run requested by two
targets is one run.
"""
from __future__ import annotations

import hashlib
import json

# Bump when a code change alters what an existing spec would produce (engine, a method, a loader, the noise
# transform), so old and new results never share a run id. Version 1 is implicit (not written into the spec), so
# the ids of runs made before this field existed stay valid.
RESULTS_VERSION = 1


def versioned(spec: dict, version: int = RESULTS_VERSION) -> dict:
    return spec if version == 1 else {**spec, "results_version": version}


def canonical(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def seedless(spec: dict) -> dict:
    """`spec` without its seed and without the seeds of the runs its roles are restored from (a KD student of
    seed s learns from the teacher of seed s): the runs of one table cell share it."""
    def strip(d):
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if k != "seed"}

    out = {k: v for k, v in spec.items() if k != "seed"}
    if "roles" in out:
        out["roles"] = strip(out["roles"])
    return out


def run_id(spec: dict) -> str:
    return hashlib.sha256(canonical(spec).encode()).hexdigest()[:12]


def flat(spec: dict, prefix: str = "") -> str:
    """`key=value` pairs of a nested spec, space-separated, for --filter matching."""
    parts = []
    for k, v in sorted(spec.items()):
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            parts.append(flat(v, key + "."))
        else:
            parts.append(f"{key}={json.dumps(v) if not isinstance(v, str) else v}")
    return " ".join(parts)
