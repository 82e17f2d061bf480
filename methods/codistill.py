"""Co-distillation (deep mutual learning), BLCL's baseline [25][26] "with identical computation" to BLCL: two peers
of the same architecture train on the same batches; each minimises CE plus KL(other || self) against the other
peer's detached probabilities. Peer one is reported (its initial weights equal ERM's model and BLCL's student for
the same seed; peer two's equal BLCL's teacher).

Choices: `weight` of the KL term (config; 1 as in deep mutual learning). Both peers run forward on the batch
first; peer one steps, then peer two, each against the other's probabilities from that forward pass (before
either update), so the order of the two steps does not matter.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Batch, Method, StepContext, StepOut
from .registry import register_method


def codistill_loss(logits: torch.Tensor, peer_logits: torch.Tensor, targets: torch.Tensor,
                   weight: float = 1.0) -> torch.Tensor:
    """Per-sample CE(logits, y) + weight * KL(softmax(peer) || softmax(logits)); the peer is detached."""
    logp = F.log_softmax(logits, dim=1)
    peer_logp = F.log_softmax(peer_logits.detach(), dim=1)
    kl = (peer_logp.exp() * (peer_logp - logp)).sum(1)
    return F.nll_loss(logp, targets, reduction="none") + weight * kl


@register_method
class CoDistillation(Method):
    name = "codistill"
    roles = ("peer1", "peer2")
    reported = "peer1"
    packable = True

    @dataclass(frozen=True)
    class Config:
        weight: float = 1.0

        def __post_init__(self):
            if not isinstance(self.weight, (int, float)) or isinstance(self.weight, bool) or self.weight < 0:
                raise ValueError(f"weight={self.weight!r}: the KL weight must be a number >= 0")

    def train_step(self, batch: Batch, ctx: StepContext) -> StepOut:
        a, b = ctx.nets["peer1"](batch.x), ctx.nets["peer2"](batch.x)
        loss_a = codistill_loss(a, b, batch.y, self.cfg.weight)
        loss_b = codistill_loss(b, a, batch.y, self.cfg.weight)
        ctx.update("peer1", loss_a.mean())
        ctx.update("peer2", loss_b.mean())
        return StepOut(loss=loss_a.detach(), logits=a.detach(), logs={"peer2_loss": loss_b.detach()})
