"""Self-paced learning as BLCL's baseline (BLCL Sec. V-A, after [23]): within each M-sized mini-batch the K samples
with the largest loss are dropped, K falling linearly from M - 1 to 0 over training ("we filter data instances
with top K largest training loss values within a M-sized mini-batch, where K linearly drops from M - 1 to 0").

Choices the paper leaves open (config):
- the schedule: K = ceil((M - 1) * (1 - progress / ramp)), progress the fraction of training steps done, so the
  kept count M - K starts at 1 and never falls. `ramp` (default 1: "during training" read as the whole of it) is
  the fraction of training by which K reaches 0; `ramp: 0.5` is the reading where the whole batch is back by
  He et al.'s first lr decay (half of training), after which SPL trains as ERM does;
- `normalize`: the batch objective is the sum of the kept losses divided by the number kept (`kept`, default:
  the kept samples' mean CE, so the step size does not shrink early on) or by M (`batch`, a 0/1-weighted mean).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from .base import Batch, Method, StepContext, StepOut
from .registry import LATER_READING, register_method


def kept_count(m: int, progress: float, ramp: float = 1.0) -> int:
    """M - K with K = ceil((M - 1)(1 - progress / ramp)): 1 at progress 0, M from progress `ramp` on, never falls."""
    p = min(max(float(progress) / ramp, 0.0), 1.0)
    return m - math.ceil(round((m - 1) * (1.0 - p), 9))


def spl_weights(losses: torch.Tensor, progress: float, ramp: float = 1.0) -> torch.Tensor:
    """0/1 weights keeping the `kept_count` smallest losses of the mini-batch (ties: lowest index first)."""
    m = losses.numel()
    keep = kept_count(m, progress, ramp)
    w = torch.zeros_like(losses)
    order = torch.sort(losses.detach(), stable=True).indices
    w[order[:keep]] = 1.0
    return w


@register_method
class SPL(Method):
    name = "spl"

    @dataclass(frozen=True)
    class Config:
        normalize: Literal["kept", "batch"] = "kept"
        ramp: float = field(default=1.0, metadata=LATER_READING)  # added later: at 1.0 the earlier runs' ids hold

        def __post_init__(self):
            if isinstance(self.ramp, bool) or not isinstance(self.ramp, (int, float)) or not 0 < self.ramp <= 1:
                raise ValueError(f"ramp={self.ramp!r}: the fraction of training by which K reaches 0 must be in "
                                 f"(0, 1]")

    def train_step(self, batch: Batch, ctx: StepContext) -> StepOut:
        logits = ctx.nets["model"](batch.x)
        ce = F.cross_entropy(logits, batch.y, reduction="none")
        w = spl_weights(ce, ctx.progress, self.cfg.ramp)
        denom = w.sum() if self.cfg.normalize == "kept" else ce.numel()
        ctx.update("model", (w * ce).sum() / denom)
        return StepOut(loss=(w * ce).detach(), logits=logits.detach(), ce=ce.detach(), logs={"kept_fraction": w})
