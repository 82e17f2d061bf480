"""Optimizers and per-epoch learning-rate schedules from recipe dicts (registries, torch implementations)."""
from __future__ import annotations

import inspect

import torch

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adadelta": torch.optim.Adadelta}


def _constant(opt, epochs):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)


def _multistep(opt, epochs, milestones, gamma=0.1):
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)


def _cosine(opt, epochs, eta_min=0.0):
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=eta_min)


def _exponential(opt, epochs, gamma):
    return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)


def _cosine_restarts(opt, epochs, period, period_mult=1, eta_min=0.0):
    """Periodic cosine (SGDR, Loshchilov & Hutter): back to the initial lr every `period` epochs (times
    `period_mult` after each restart); DCD Sec. V-E's "cosine" whose periodic increase helps."""
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=period, T_mult=period_mult, eta_min=eta_min)


SCHEDULES = {"constant": _constant, "multistep": _multistep, "cosine": _cosine, "exponential": _exponential,
             "cosine_restarts": _cosine_restarts}


def _check(kind: str, name: str, table: dict, fn, kwargs: dict, skip: set[str]) -> None:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; allowed: {', '.join(sorted(table))}")
    params = set(inspect.signature(fn).parameters) - skip
    bad = sorted(set(kwargs) - params)
    if bad:
        raise ValueError(f"{kind} {name!r} has no option {bad}; allowed: {sorted(params)}")


def check_optimizer(cfg: dict) -> None:
    kw = {k: v for k, v in cfg.items() if k != "name"}
    _check("optimizer", cfg.get("name", ""), OPTIMIZERS, OPTIMIZERS.get(cfg.get("name"), lambda: 0), kw,
           {"params", "self"})


def check_schedule(cfg: dict) -> None:
    kw = {k: v for k, v in cfg.items() if k != "name"}
    _check("schedule", cfg.get("name", ""), SCHEDULES, SCHEDULES.get(cfg.get("name"), lambda: 0), kw,
           {"opt", "epochs"})


def build_optimizer(cfg: dict, params, fused: bool = False) -> torch.optim.Optimizer:
    """`fused`: use the optimizer's fused kernel where it has one (the GPU fast path); else its default."""
    check_optimizer(cfg)
    kw = {k: v for k, v in cfg.items() if k != "name"}
    cls = OPTIMIZERS[cfg["name"]]
    if fused and "fused" in inspect.signature(cls).parameters:
        kw["fused"] = True
    return cls(params, **kw)


def build_schedule(cfg: dict, opt: torch.optim.Optimizer, epochs: int):
    check_schedule(cfg)
    kw = {k: v for k, v in cfg.items() if k != "name"}
    return SCHEDULES[cfg["name"]](opt, epochs, **kw)


def lr_curve(cfg: dict, epochs: int, lr: float = 0.1) -> list[float]:
    """The learning rate of each epoch under schedule `cfg`, as the engine steps it (no training)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = build_schedule(cfg, opt, epochs)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out
