"""Dynamic Curriculum Distillation (DCD: Sec. IV, Eqs. (8)-(16), Algorithm 1; Sec. V-A/V-C).

A frozen teacher (restored from another run) distils into the student (the reported role). Each curriculum
step (one epoch, Sec. V-C) Algorithm 1 runs:
1. Val_s = the student's validation accuracy (a fraction in [0, 1]); C_j = max(Val_s^j - Val_s^{j-1}, 0), Eq. (11).
2. If s > C_j (a stall), the difficulty is recomputed with the current student snapshot:
   phi_i = w_CE * CE(p_s, y) + w_KD * L_KD(p_s, p_t), Eq. (8), w_CE = max(0, Val_s - 1/k), Eq. (9),
   w_KD = max(0, Val_t - Val_s), Eq. (10); L_KD = T^2 * KL(p_t^T || p_s^T), Eq. (2)'s tau^2 scaling.
3. The training scheduler selects the samples whose difficulty RANK lies in a window (Sec. IV-C: "the order of
   the sample ... rather than the absolute value"), ranked and windowed within each class so the class mix of
   every epoch is the training set's (Sec. V-C). The selected samples get v_i = 1, the others 0, Eq. (14).

Eqs. (12)-(13) leave alpha, C_v, mu and partial undefined; the reading implemented (`WindowScheduler`):
- the window covers the rank fractions [lower, upper) of each class, ranked easy -> hard by phi; it starts at
  [0, init_fraction) (1/3 by default: the toy experiment's and MEKD's first stage);
- after `patience` consecutive stalls (C_j < s) the window moves by `step_fraction` (patience = 1: at every
  stall; patience = 2 is Algorithm 1's literal "if s > c_{j-1} and s > c_j"), and never backwards:
  `grow`: the upper edge grows, the lower edge stays at 0 (the amount of data grows to the full set: a
  curriculum by Sec. III-B's definition); `slide`: both edges move by the same amplitude ("updated by the same
  amplitude simultaneously") until the upper edge reaches 1; the next move then covers everything;
- once the window covers all data it stays there (and the ranking is no longer computed);
- epoch 0 builds the first ranking (with the untrained student: w_CE ~ 0, the teacher term dominates, as
  Sec. IV-B intends); when both weights are 0 every phi is 0 and the stable sort keeps index order.
Other choices: the teacher's training-set logits for phi are computed once (frozen, eval mode, no
augmentation); the training loss uses the teacher's logits on the same augmented batch. `loss="eq16"`:
CE + T^2 * KL(p_t^T || p_s^T) (Eq. (16) with Eq. (2)'s temperature and tau^2); `loss="eq17"`:
(1 - beta) * CE + beta * T^2 * KL (Eq. (17), the KD backbone of Sec. V-A). KL is taken teacher -> student
(Hinton), whatever order the paper's KL(P_s, P_t) notation suggests. The mini-batch reduction is the mean.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .base import Batch, Method, StepContext, StepOut
from .kd import soft_kl
from .registry import register_method

_EPS = 1e-9


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r}: accuracies are fractions in [0, 1], not percentages")


def indicator_weights(val_s: float, val_t: float, num_classes: int) -> tuple[float, float]:
    """(w_CE, w_KD) of Eqs. (9)-(10) from the student's and teacher's validation accuracies (fractions)."""
    _check_fraction("val_s", val_s)
    _check_fraction("val_t", val_t)
    return max(0.0, val_s - 1.0 / num_classes), max(0.0, val_t - val_s)


def difficulty(ce: torch.Tensor, kd: torch.Tensor, w_ce: float, w_kd: float) -> torch.Tensor:
    """phi_i = w_CE * L_CE + w_KD * L_KD, Eq. (8)."""
    return w_ce * ce + w_kd * kd


def marginal_gain(val_now: float, val_prev: float) -> float:
    """C^j = max(Val_s^j - Val_s^{j-1}, 0), Eq. (11)."""
    return max(val_now - val_prev, 0.0)


def kd_terms(s_logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor,
             T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (CE(student, y), T^2 * KL(softmax(t/T) || softmax(s/T))): the two terms of Eqs. (2), (16), (17),
    the KL term being KD's own (`methods.kd.soft_kl`), so eq17 is exactly the KD baseline's loss."""
    return F.cross_entropy(s_logits, y, reduction="none"), soft_kl(s_logits, t_logits, T)


def rank_within_classes(scores: torch.Tensor, labels: torch.Tensor | None,
                        num_classes: int) -> list[torch.Tensor]:
    """Sample indices of each class sorted easy -> hard by `scores` (stable); one group of all samples if
    `labels` is None."""
    if labels is None:
        return [scores.argsort(stable=True)]
    groups = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().squeeze(1)
        groups.append(idx[scores[idx].argsort(stable=True)])
    return groups


def select_window(groups: list[torch.Tensor], lower: float, upper: float) -> torch.Tensor:
    """The indices whose rank fraction lies in [lower, upper) within every group (at least one per non-empty
    group), sorted."""
    chosen = []
    for g in groups:
        n = len(g)
        if n == 0:
            continue
        lo = min(math.floor(lower * n + 0.5), n - 1)
        hi = max(math.floor(upper * n + 0.5), lo + 1)
        chosen.append(g[lo:hi])
    return torch.cat(chosen).sort().values


class WindowScheduler:
    """The positive training scheduler (Sec. IV-C, Eqs. (11)-(14)) over rank fractions, in the reading stated in
    the module docstring. Feed it the student's validation accuracy once per curriculum step with `update`."""

    def __init__(self, s: float = 0.01, init_fraction: float = 1 / 3, step_fraction: float = 1 / 3,
                 window: str = "grow", patience: int = 1):
        if window not in ("grow", "slide"):
            raise ValueError(f"window {window!r}; allowed: ['grow', 'slide']")
        self.s, self.step, self.mode, self.patience = s, step_fraction, window, patience
        self.lower, self.upper = 0.0, min(init_fraction, 1.0)
        self.prev: float | None = None  # Val_s^{j-1}
        self.gain: float | None = None  # C_j of the last step (None at the first)
        self.stalls = 0  # consecutive steps with C_j < s
        self.history: list[tuple[float, float]] = []  # (lower, upper) used at each step (DCD Fig. 4)

    @property
    def full(self) -> bool:
        return self.lower <= 0.0 and self.upper >= 1.0

    def _move(self) -> None:
        if self.full:
            return
        if self.mode == "grow":
            self.upper += self.step
        elif self.upper >= 1.0:  # slide: the window reached the hardest samples; now take everything
            self.lower = 0.0
        else:
            self.lower, self.upper = self.lower + self.step, self.upper + self.step
        if self.upper >= 1.0 - _EPS:
            self.upper = 1.0

    def update(self, val: float) -> bool:
        """One curriculum step with Val_s^j = `val` (a fraction). Returns whether the difficulty must be
        recomputed: at the first step, or at a stall (Algorithm 1: `if s > c_j`)."""
        _check_fraction("val", val)
        if self.prev is None:
            refresh = True
        else:
            self.gain = marginal_gain(val, self.prev)
            refresh = self.s > self.gain
            self.stalls = self.stalls + 1 if refresh else 0
            if self.stalls >= self.patience:
                self._move()
        self.prev = val
        self.history.append((self.lower, self.upper))
        return refresh

    def state_dict(self) -> dict[str, Any]:
        return {"lower": self.lower, "upper": self.upper, "prev": self.prev, "gain": self.gain,
                "stalls": self.stalls, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lower, self.upper, self.prev = state["lower"], state["upper"], state["prev"]
        self.gain, self.stalls = state["gain"], state["stalls"]
        self.history = [tuple(h) for h in state["history"]]


def ranking_state(groups: list[torch.Tensor] | None) -> dict[str, Any]:
    """A ranking (from `rank_within_classes`) as plain tensors and lists, for `state_dict`."""
    if groups is None:
        return {"order": None, "sizes": None}
    return {"order": torch.cat(groups).cpu(), "sizes": [len(g) for g in groups]}


def ranking_from_state(state: dict[str, Any]) -> list[torch.Tensor] | None:
    return None if state["order"] is None else list(torch.split(state["order"], state["sizes"]))


class Distiller(Method):
    """Shared by DCD and MEKD: a frozen teacher distilled into the student with the per-sample loss
    a * CE + b * T^2 * KL (`loss_weights`), and the student's per-sample terms on the whole training set."""

    roles = ("student", "teacher")
    reported = "student"
    frozen = ("teacher",)
    init_streams = {"teacher": "teacher"}

    def __init__(self, config: Any, num_classes: int, num_train: int):
        super().__init__(config, num_classes, num_train)
        self.teacher_logits: torch.Tensor | None = None

    def loss_weights(self) -> tuple[float, float]:
        return 1.0 - self.cfg.beta, self.cfg.beta  # Eq. (17)

    def setup(self, ctx: StepContext) -> None:
        ctx.nets["teacher"].eval()
        self.teacher_logits = ctx.score_train("teacher")[1].float()  # frozen: computed once

    def student_terms(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (CE, T^2 KL) of the current student snapshot on the training set (eval mode)."""
        _, logits = ctx.score_train("student")
        with torch.no_grad():
            return kd_terms(logits.float(), self.teacher_logits, ctx.train_labels, self.cfg.T)

    def train_step(self, batch: Batch, ctx: StepContext) -> StepOut:
        s_logits = ctx.nets["student"](batch.x)
        with torch.no_grad():
            t_logits = ctx.nets["teacher"](batch.x)
        ce, kd = kd_terms(s_logits, t_logits, batch.y, self.cfg.T)
        a, b = self.loss_weights()
        loss = a * ce + b * kd
        ctx.update("student", loss.mean())
        return StepOut(loss=loss.detach(), logits=s_logits.detach(),
                       logs={"ce": ce.detach().mean(), "kd": kd.detach().mean()})


def check_distill_config(cfg: Any) -> None:
    """Validation shared by the DCD and MEKD configs."""
    if not cfg.T > 0:
        raise ValueError(f"T={cfg.T!r}: the temperature must be > 0")
    if not 0.0 <= cfg.beta <= 1.0:
        raise ValueError(f"beta={cfg.beta!r}: must lie in [0, 1]")


@register_method
class DCD(Distiller):
    name = "dcd"

    @dataclass(frozen=True)
    class Config:
        T: float = 3.0  # distillation temperature (Sec. V-A)
        s: float = 0.01  # stall threshold on the validation-accuracy gain, as a fraction (Sec. V-C)
        init_fraction: float = 1 / 3  # first window: the easiest third of each class
        step_fraction: float = 1 / 3  # window move per stall
        window: Literal["grow", "slide"] = "grow"
        patience: int = 1  # consecutive stalls before the window moves (2: Algorithm 1 literally)
        per_class: bool = True  # rank and window within each class (Sec. V-C)
        loss: Literal["eq16", "eq17"] = "eq16"
        beta: float = 0.5  # only for loss=eq17

        def __post_init__(self):
            check_distill_config(self)
            if not self.s >= 0:
                raise ValueError(f"s={self.s!r}: must be >= 0")
            for key in ("init_fraction", "step_fraction"):
                if not 0.0 < getattr(self, key) <= 1.0:
                    raise ValueError(f"{key}={getattr(self, key)!r}: must lie in (0, 1]")
            if not isinstance(self.patience, int) or self.patience < 1:
                raise ValueError(f"patience={self.patience!r}: must be an integer >= 1")

    def __init__(self, config: Config, num_classes: int, num_train: int):
        super().__init__(config, num_classes, num_train)
        c = config
        self.sched = WindowScheduler(c.s, c.init_fraction, c.step_fraction, c.window, c.patience)
        self.groups: list[torch.Tensor] | None = None  # the current ranking
        self.weights: tuple[float, float] | None = None  # (w_CE, w_KD) of the current ranking
        self.val_t: float | None = None
        self.val_s: float | None = None
        self.n_selected = num_train

    def loss_weights(self) -> tuple[float, float]:
        return (1.0, 1.0) if self.cfg.loss == "eq16" else super().loss_weights()

    def setup(self, ctx: StepContext) -> None:
        if not ctx.has_val:
            raise ValueError("dcd needs a validation split: set data.val_size")
        self.val_t = ctx.evaluate("teacher", "val")[1] / 100.0
        super().setup(ctx)

    def epoch_indices(self, epoch: int, ctx: StepContext) -> torch.Tensor | None:
        self.val_s = ctx.evaluate("student", "val")[1] / 100.0
        refresh = self.sched.update(self.val_s)
        if self.sched.full:
            self.n_selected = ctx.num_train
            return None
        if refresh or self.groups is None:
            self.weights = indicator_weights(self.val_s, self.val_t, ctx.num_classes)
            phi = difficulty(*self.student_terms(ctx), *self.weights)
            labels = ctx.train_labels if self.cfg.per_class else None
            self.groups = rank_within_classes(phi, labels, ctx.num_classes)
        idx = select_window(self.groups, self.sched.lower, self.sched.upper)
        self.n_selected = len(idx)
        return idx.to(ctx.device)

    def on_epoch_end(self, epoch: int, ctx: StepContext, noisy_mask: torch.Tensor) -> dict[str, Any]:
        w_ce, w_kd = self.weights if self.weights is not None else (None, None)
        return {"window": [self.sched.lower, self.sched.upper], "val_student": self.val_s,
                "val_teacher": self.val_t, "w_ce": w_ce, "w_kd": w_kd, "gain": self.sched.gain,
                "n_selected": self.n_selected}

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.sched.state_dict(), "ranking": ranking_state(self.groups),
                "weights": None if self.weights is None else list(self.weights)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sched.load_state_dict(state["scheduler"])
        self.groups = ranking_from_state(state["ranking"])
        self.weights = None if state["weights"] is None else tuple(state["weights"])
