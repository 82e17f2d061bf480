"""ERM: plain empirical risk minimisation (BLCL Eq. (2), "conventional training"), with cross-entropy (`erm`) or,
for BLCL Sec. IV-E / Tables VI-VII, with the MSE base loss (`erm_mse`: mean over classes of the squared error of
the softmax output against the one-hot label, the loss `blcl` uses with `base: mse`)."""
from __future__ import annotations

import torch.nn.functional as F

from .base import Batch, Method, StepContext, StepOut
from .blcl import per_class_loss
from .registry import register_method


@register_method
class ERM(Method):
    name = "erm"
    packable = True
    objective_is_ce = True

    def objective(self, logits, y):
        return F.cross_entropy(logits, y, reduction="none")

    def train_step(self, batch: Batch, ctx: StepContext) -> StepOut:
        logits = ctx.nets["model"](batch.x)
        if self.objective_is_ce:  # the batch-mean CE; the engine takes the per-sample CE from the logits
            ctx.update("model", F.cross_entropy(logits, batch.y))
            return StepOut(loss=None, logits=logits.detach())
        loss = self.objective(logits, batch.y)
        ctx.update("model", loss.mean())
        return StepOut(loss=loss.detach(), logits=logits.detach())


@register_method
class ERMMSE(ERM):
    name = "erm_mse"
    objective_is_ce = False

    def objective(self, logits, y):
        return per_class_loss(logits, "mse").gather(1, y.view(-1, 1)).squeeze(1)
