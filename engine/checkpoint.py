"""Mid-run checkpoints (issue 11): the full state of a run (or packed group) between epochs, so that a killed
long run resumes where it stopped and, on CPU, ends with the same result as an uninterrupted one.

Saved: networks, optimizers, LR schedules, the method's own state, every random generator the loop draws from
(global CPU and CUDA, each slot's batch-order and augmentation generators), the history and snapshots so far.
Written atomically (temporary file, then rename). A checkpoint names the run ids it belongs to; one whose ids
or format differ is ignored (the run restarts), never half-used.
"""
from __future__ import annotations

import os

import torch

FORMAT = 1


def save(path: str, state: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load(path: str | None, keys: list[str]) -> dict | None:
    """The checkpoint at `path` if it exists and belongs to exactly these run `keys`; None otherwise."""
    if not path or not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a truncated file from a kill during an old-style write: start over
        return None
    if state.get("format") != FORMAT or state.get("keys") != keys:
        return None
    return state


def rng_state(generators: dict[str, list[torch.Generator]]) -> dict:
    out = {"torch": torch.get_rng_state(), "gens": {k: [g.get_state() for g in gs] for k, gs in generators.items()}}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict, generators: dict[str, list[torch.Generator]]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, gs in generators.items():
        for g, s in zip(gs, state["gens"][k]):
            g.set_state(s)
