"""Balanced-Loss Curriculum Learning (BLCL, IEEE Access; Eq. (3), Algorithm 1).

A teacher and a student of the same architecture train together. Each step the teacher takes a plain CE step
(Alg. 1 lines 5-7), then the student takes a step on the balanced loss, Eq. (3), weighted by the teacher's
detached class probabilities raised to the power r (lines 8-10). The student is the reported model.

Eq. (3) reads  sum_i sum_k f_t(x_i)_k^r * L(f_s(x_i), T_k)  with "T_k means that the k-th class is the correct
label". Two readings are implemented (`reading`):
- `literal`: sum over all classes k of p_t(x)_k^r * L(f_s(x), one-hot k);
- `label`:   p_t(x)_y^r * L(f_s(x), y), only the labelled class.
Other choices the paper leaves open, made explicit here:
- batch reduction: the mean over the mini-batch (Eq. (2)/(3) write a sum; the stated learning rates assume a mean);
- `teacher_probs`: `before_update` uses the predictions of line 5 (Alg. 1 as written), `after_update` predicts
  again with the updated teacher ("after trained on each mini-batch, the teacher model predicts", Sec. IV-A);
- `base="mse"` (Sec. IV-E, Tables VI/VII): L(q, e_k) = mean over classes of (q - e_k)^2 on softmax outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .base import Batch, Method, StepContext, StepOut
from .registry import register_method

READINGS = ("literal", "label")
BASES = ("ce", "mse")


def per_class_loss(student_logits: torch.Tensor, base: str) -> torch.Tensor:
    """L(f_s(x), one-hot k) for every class k: shape (N, C)."""
    if base == "ce":
        return -F.log_softmax(student_logits, dim=1)
    if base == "mse":
        q = F.softmax(student_logits, dim=1)
        c = q.shape[1]
        # mean_j (q_j - [j == k])^2 = (|q|^2 - 2 q_k + 1) / C
        return ((q * q).sum(1, keepdim=True) - 2 * q + 1) / c
    raise ValueError(f"base loss {base!r}; allowed: {list(BASES)}")


def blcl_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, targets: torch.Tensor, r: float = 1.5,
              reading: str = "literal", base: str = "ce") -> torch.Tensor:
    """Per-sample BLCL loss, Eq. (3). `teacher_probs` is detached here (theta_t* is not updated by Eq. (3))."""
    if reading not in READINGS:
        raise ValueError(f"reading {reading!r}; allowed: {list(READINGS)}")
    w = teacher_probs.detach().clamp_min(0.0).pow(r)
    per_class = per_class_loss(student_logits, base)
    if reading == "literal":
        return (w * per_class).sum(dim=1)
    y = targets.view(-1, 1)
    return (w.gather(1, y) * per_class.gather(1, y)).squeeze(1)


@register_method
class BLCL(Method):
    name = "blcl"
    roles = ("student", "teacher")  # the student is built first: same initial weights as ERM's model for a seed
    reported = "student"
    packable = True

    @dataclass(frozen=True)
    class Config:
        r: float = 1.5
        reading: Literal["literal", "label"] = "literal"
        base: Literal["ce", "mse"] = "ce"
        teacher_probs: Literal["before_update", "after_update"] = "before_update"

        def __post_init__(self):
            if not isinstance(self.r, (int, float)) or isinstance(self.r, bool) or self.r < 0:
                raise ValueError(f"r={self.r!r}: the exponent must be a number >= 0")

    def train_step(self, batch: Batch, ctx: StepContext) -> StepOut:
        teacher, student = ctx.nets["teacher"], ctx.nets["student"]
        t_logits = teacher(batch.x)
        t_loss = F.cross_entropy(t_logits, batch.y, reduction="none")
        probs = F.softmax(t_logits.detach(), dim=1)
        ctx.update("teacher", t_loss.mean())
        if self.cfg.teacher_probs == "after_update":  # a prediction: eval mode (no dropout, BN running stats)
            teacher.eval()
            with torch.no_grad():
                probs = F.softmax(teacher(batch.x), dim=1)
            teacher.train()
        s_logits = student(batch.x)
        s_loss = blcl_loss(s_logits, probs, batch.y, self.cfg.r, self.cfg.reading, self.cfg.base)
        ctx.update("student", s_loss.mean())
        return StepOut(loss=s_loss.detach(), logits=s_logits.detach(), logs={"teacher_loss": t_loss.detach()})
