"""Knowledge distillation (Hinton et al. 2015; DCD Eq. (17)) from a frozen teacher restored from another run:
l_i = (1 - beta) CE(student, y) + beta T^2 KL(softmax(teacher / T) || softmax(student / T)); T = 3 in DCD
(Sec. V-A). The T^2 factor keeps the soft term's gradient scale independent of T (Hinton et al. Sec. 2).
The teacher is in eval mode (BN running statistics, no dropout) and sees the same augmented batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Batch, Method, StepContext, StepOut
from .registry import register_method


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """Per-sample T^2 KL(softmax(teacher/T) || softmax(student/T)); the teacher is detached."""
    log_s = F.log_softmax(student_logits / T, dim=1)
    log_t = F.log_softmax(teacher_logits.detach() / T, dim=1)
    return T * T * (log_t.exp() * (log_t - log_s)).sum(1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, T: float = 3.0,
            beta: float = 0.5) -> torch.Tensor:
    """Per-sample (1 - beta) CE + beta T^2 KL (DCD Eq. 17)."""
    ce = F.cross_entropy(student_logits, targets, reduction="none")
    return (1.0 - beta) * ce + beta * soft_kl(student_logits, teacher_logits, T)


def _check_kd(T, beta) -> None:
    if not isinstance(T, (int, float)) or isinstance(T, bool) or T <= 0:
        raise ValueError(f"T={T!r}: the temperature must be a number > 0")
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not 0 <= beta <= 1:
        raise ValueError(f"beta={beta!r}: must be a number in [0, 1]")


@register_method
class KD(Method):
    name = "kd"
    roles = ("student", "teacher")
    reported = "student"
    frozen = ("teacher",)
    init_streams = {"teacher": "teacher"}
    packable = True  # each slot's teacher is its own seed's, packed like the student

    @dataclass(frozen=True)
    class Config:
        T: float = 3.0
        beta: float = 0.5

        def __post_init__(self):
            _check_kd(self.T, self.beta)

    def train_step(self, batch: Batch, ctx: StepContext) -> StepOut:
        with torch.no_grad():
            t_logits = ctx.nets["teacher"](batch.x)
        s_logits = ctx.nets["student"](batch.x)
        loss = kd_loss(s_logits, t_logits, batch.y, self.cfg.T, self.cfg.beta)
        ctx.update("student", loss.mean())
        return StepOut(loss=loss.detach(), logits=s_logits.detach())
