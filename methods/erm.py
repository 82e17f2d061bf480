"""ERM: plain empirical risk minimisation with cross-entropy (BLCL Eq. (2), "conventional training")."""
from __future__ import annotations

import torch.nn.functional as F

from .base import Batch, Method, StepContext, StepOut
from .registry import register_method


@register_method
class ERM(Method):
    name = "erm"

    def train_step(self, batch: Batch, ctx: StepContext) -> StepOut:
        logits = ctx.nets["model"](batch.x)
        loss = F.cross_entropy(logits, batch.y, reduction="none")
        ctx.update("model", loss.mean())
        return StepOut(loss=loss.detach(), logits=logits.detach())
