"""The result-JSON contract (schema version 1): `problems(record)` lists what is missing or mistyped."""
from __future__ import annotations

from benchmarks.targets.spec import run_id

STATUSES = ("ok", "failed", "diverged")
TOP = {"schema_version": int, "run_id": str, "target": str, "row": str, "variant": str, "compare_as": str,
       "spec": dict, "status": str, "error": (str, type(None)), "final_test_acc": (float, int, type(None)),
       "best_test_acc": (float, int, type(None)), "history": list, "extras": dict, "provenance": dict}
SPEC = {"budget": str, "data": dict, "method": dict, "model": dict, "recipe": dict, "seed": int}
NUM = (float, int, type(None))  # null: a non-finite value of a diverged run
EPOCH = {"epoch": int, "lr": (float, int), "train_loss": NUM, "train_ce": NUM, "train_acc": NUM, "test_loss": NUM,
         "test_acc": NUM, "seconds": (float, int), "quartile_share": list, "quartile_share_ce": list}
PROVENANCE = {"git_sha": (str, type(None)), "git_dirty": (bool, type(None)), "python": str, "torch": str,
              "torchvision": str, "cuda": (str, type(None)), "device": str, "host": str, "start": str, "end": str,
              "wall_seconds": (float, int)}


def _check(where: str, obj: dict, fields: dict) -> list[str]:
    out = []
    for key, typ in fields.items():
        if key not in obj:
            out.append(f"{where}: missing {key!r}")
        elif not isinstance(obj[key], typ) or (typ is int and isinstance(obj[key], bool)):
            out.append(f"{where}: {key!r} has type {type(obj[key]).__name__}")
    return out


def problems(rec: dict) -> list[str]:
    out = _check("record", rec, TOP)
    if out:
        return out
    out += _check("spec", rec["spec"], SPEC)
    out += _check("provenance", rec["provenance"], PROVENANCE)
    if rec["status"] not in STATUSES:
        out.append(f"status {rec['status']!r} not in {STATUSES}")
    if rec["run_id"] != run_id(rec["spec"]):
        out.append("run_id is not the hash of the spec")
    if rec["status"] == "ok":
        if not rec["history"]:
            out.append("status ok with an empty history")
        if rec["final_test_acc"] is None:
            out.append("status ok without final_test_acc")
    for i, h in enumerate(rec["history"]):
        out += _check(f"history[{i}]", h, EPOCH)
        if len(h.get("quartile_share", [])) != 4:
            out.append(f"history[{i}]: quartile_share must have 4 entries")
    return out
