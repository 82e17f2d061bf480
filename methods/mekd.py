"""Predefined Multi-Evaluator Curriculum distillation (MEKD, DCD paper Sec. V-B; not the CVPR 2024 method).

"MEKD employs teacher network simulation loss and student network confidence as complexity indicators with
equal weight": the difficulty is phi_i = CE(p_s, y_i) + T^2 * KL(p_t^T || p_s^T), i.e. DCD's Eq. (8) with
w_CE = w_KD = 1; "student network confidence" is read as the student's CE against the label. Three stages:
1. the easiest `fractions[0]` (1/3) of the samples, ranked with the student snapshot at the first epoch of the
   stage. That student is untrained, as the paper says: its CE is ~log k and its KL term measures the
   teacher's softened prediction against a near-uniform student, so the teacher dominates the ranking;
2. re-ranked with the current student snapshot at the stage's first epoch, the easiest `fractions[1]` (2/3);
3. all samples.
Stage lengths are not published. `stage_ends` are the fractions of the run's epochs at which stages 1 and 2
end: epoch e (0-based) is in stage 1 while e / num_epochs < stage_ends[0], in stage 2 while < stage_ends[1].
The default (1/6, 1/2) keeps the toy experiment's (Sec. III-C) 10k : 20k step ratio between stages 1 and 2 and
leaves the second half of the run ("until convergence") to the full set. Ranking is within each class
(`per_class`, as DCD Sec. V-C does), so every stage keeps the training set's class mix. The training loss is
Eq. (17): (1 - beta) * CE + beta * T^2 * KL, T = 3 (Sec. V-A). The teacher's training-set logits for phi are
computed once (frozen); the number of epochs is read from `ctx.num_epochs`.

The toy experiment of Sec. III-C (Fig. 1) is the same schedule with `difficulty: teacher_ce` (samples ranked
once by the teacher's classification loss) and `rerank: false` (stage 2 keeps that ranking).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .base import StepContext
from .dcd import (Distiller, check_distill_config, difficulty, rank_within_classes, ranking_from_state,
                  ranking_state, select_window)
from .registry import register_method


def stage_of(epoch: int, num_epochs: int, stage_ends: tuple[float, float]) -> int:
    """1, 2 or 3: the MEKD stage of 0-based `epoch` in a run of `num_epochs`."""
    frac = epoch / num_epochs
    return 1 if frac < stage_ends[0] else 2 if frac < stage_ends[1] else 3


@register_method
class MEKD(Distiller):
    name = "mekd"

    @dataclass(frozen=True)
    class Config:
        T: float = 3.0
        beta: float = 0.5
        stage_ends: tuple[float, float] = (1 / 6, 1 / 2)  # fractions of the epochs where stages 1 and 2 end
        fractions: tuple[float, float] = (1 / 3, 2 / 3)  # share of each class trained on in stages 1 and 2
        per_class: bool = True
        difficulty: Literal["equal", "teacher_ce"] = "equal"  # teacher_ce: the toy experiment's (Sec. III-C)
        rerank: bool = True  # re-rank with the current student at stage 2's first epoch

        def __post_init__(self):
            check_distill_config(self)
            for key in ("stage_ends", "fractions"):
                object.__setattr__(self, key, tuple(getattr(self, key)))
            a, b = self.stage_ends if len(self.stage_ends) == 2 else (None, None)
            if a is None or not 0.0 <= a <= b <= 1.0:
                raise ValueError(f"stage_ends={self.stage_ends!r}: two fractions 0 <= a <= b <= 1")
            f1, f2 = self.fractions if len(self.fractions) == 2 else (None, None)
            if f1 is None or not 0.0 < f1 <= f2 <= 1.0:
                raise ValueError(f"fractions={self.fractions!r}: two fractions 0 < f1 <= f2 <= 1")

    def __init__(self, config: Config, num_classes: int, num_train: int):
        super().__init__(config, num_classes, num_train)
        self.groups: list[torch.Tensor] | None = None
        self.ranked_stage: int | None = None  # the stage whose first epoch built `groups`
        self.stage = 1
        self.reranked = False
        self.n_selected = num_train

    def epoch_indices(self, epoch: int, ctx: StepContext) -> torch.Tensor | None:
        num_epochs = getattr(ctx, "num_epochs", None)
        if not num_epochs:
            raise ValueError("mekd schedules its stages by fractions of the run: the context must give num_epochs")
        self.stage = stage_of(epoch, num_epochs, self.cfg.stage_ends)
        self.reranked = False
        if self.stage == 3:
            self.n_selected = ctx.num_train
            return None
        if self.ranked_stage is None or (self.cfg.rerank and self.ranked_stage != self.stage):
            # first epoch of a stage: rank with the current student (or once by the teacher's loss)
            if self.cfg.difficulty == "teacher_ce":
                phi = F.cross_entropy(self.teacher_logits, ctx.train_labels, reduction="none")
            else:
                phi = difficulty(*self.student_terms(ctx), 1.0, 1.0)
            labels = ctx.train_labels if self.cfg.per_class else None
            self.groups = rank_within_classes(phi, labels, ctx.num_classes)
            self.ranked_stage, self.reranked = self.stage, True
        idx = select_window(self.groups, 0.0, self.cfg.fractions[self.stage - 1])
        self.n_selected = len(idx)
        return idx.to(ctx.device)

    def on_epoch_end(self, epoch: int, ctx: StepContext, noisy_mask: torch.Tensor) -> dict[str, Any]:
        return {"stage": self.stage, "reranked": self.reranked, "n_selected": self.n_selected}

    def state_dict(self) -> dict[str, Any]:
        return {"ranking": ranking_state(self.groups), "ranked_stage": self.ranked_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.groups = ranking_from_state(state["ranking"])
        self.ranked_stage = state["ranked_stage"]
