"""An example plugin (README: Benchmark your own method): focal loss (Lin et al., ICCV 2017) as a method.

    FL_i = (1 - p_i)^gamma * CE_i,   p_i = softmax(z_i)_{y_i} = exp(-CE_i)

It down-weights easy samples, the opposite of a curriculum's easy-first weighting, so it is a natural method to put
next to BLCL and SPL. Load it with `--plugin examples/focal_plugin.py`; `examples/targets/ext-focal-mnist.yaml`
runs it on BLCL Table IV's MNIST MLP row against that row's ERM and BLCL.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from methods import Method, register_method
from methods.base import Batch, StepContext, StepOut


@register_method
class Focal(Method):
    name = "focal"
    packable = True  # per-sample losses, a batch mean, no state: K seeds can train in one packed network

    @dataclass(frozen=True)
    class Config:
        gamma: float = 2.0  # 0 gives plain cross-entropy

        def __post_init__(self):
            if not isinstance(self.gamma, (int, float)) or isinstance(self.gamma, bool) or self.gamma < 0:
                raise ValueError(f"gamma={self.gamma!r}: must be a number >= 0")

    def train_step(self, batch: Batch, ctx: StepContext) -> StepOut:
        logits = ctx.nets["model"](batch.x)
        ce = F.cross_entropy(logits, batch.y, reduction="none")
        loss = (1 - (-ce).exp()) ** self.cfg.gamma * ce
        ctx.update("model", loss.mean())
        return StepOut(loss=loss.detach(), logits=logits.detach(), ce=ce.detach())
