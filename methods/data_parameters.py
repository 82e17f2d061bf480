"""Data Parameters (Saxena, Tuzel, DeCoste, NeurIPS 2019): a learnable temperature per class and/or per sample.

Each class c has a parameter sigma_class_c and each training sample i a parameter sigma_inst_i. During training the
logits of sample i are divided by its data parameter before the softmax cross-entropy (Eq. (1)):
    L_i = -log softmax(z_i / sigma_i)_{y_i},   sigma_i = sigma_class_{y_i} (class level), sigma_inst_i (instance
    level) or sigma_class_{y_i} + sigma_inst_i (joint, Sec. 2.2),
and model and data parameters both minimise the mean loss (Eq. (2)). Autograd yields Eq. (3) for the logits,
dL_i/dz_ij = (p_ij - 1[j = y_i]) / sigma_i, and Eq. (4)/(5) for the data parameter,
dL_i/dsigma_i = (1 - p_iy)/sigma_i^2 * (z_iy - sum_{j != y} q_ij z_ij), q_ij = p_ij / (1 - p_iy); in the joint
case the class and the instance parameter of a sample receive the same per-sample gradient (Eq. (5)).
Inference (Sec. 2.2): logits are NOT scaled at test time; the engine evaluates the raw model, and `StepOut.logits`
are the unscaled logits too.

Implementation (Sec. 3.1 and the official code, apple/ml-data-parameters):
- parameters are stored as log sigma, initialised to log(init); the paper's joint curriculum uses init_inst 0.001
  (here an explicit argument, default 1.0; note the clamp below lifts 0.001 to 1/20 after the first step, as in
  the official code);
- a sparse SGD with momentum 0.9 (official `SparseSGD`); which rows it leaves alone (value and momentum buffer kept,
  "we do not update the momentum buffer") has two readings, `skip_rows`:
  - `zero_grad` (default, the official `SparseSGD(skip_update_zero_grad=True)`, which produced the published
    numbers): every row whose gradient, weight decay included, is exactly 0. That is every row absent from the
    batch, and also a row in the batch whose gradient is exactly zero in float32 (its scaled softmax saturated to
    one-hot, which happens with wd_inst = 0 once sigma is small);
  - `absent` (the text, Sec. 3.1: parameters "not present in the mini-batch"): only the rows absent from the batch;
    a saturated in-batch row gets its momentum buffer decayed and its value moved.
  `saturated_rows` counts the in-batch rows with an exactly zero gradient (the only rows where the readings differ);
  `on_epoch_end` reports the epoch's count per level;
- weight decay 0.5 * wd * (log sigma)^2 on the mini-batch's entries only (official: added to the loss as a sum
  over the batch's samples, so class c present n_c times decays with n_c * wd * log sigma_c, see `class_grad`);
- after each step log sigma is clamped to [log 1/20, log 20] (the whole tensor, as the official code does);
- the data parameters keep a constant learning rate (the model's LR schedule does not apply to them).

Two readings of the class gradient (`class_grad`):
- `batch_mean` (official code): autograd of the batch-mean loss, i.e. class c's gradient is the sum of its samples'
  gradients divided by the batch size B, plus the official weight decay n_c * wd * log sigma_c;
- `class_mean` (the text, Sec. 2.2: "class parameters average the gradient from all samples of the class present in
  a mini-batch"): the class gradient is rescaled by B / n_c (the mean over the class's samples), plus
  wd * log sigma_c once.
Instance gradients are autograd's in both readings (1/B times the per-sample gradient, official code).

Label noise of kind `shuffle` (the official code permutes the images of the first p*N training samples, labels
staying put) lives in data/noise.py. `on_epoch_end` reports Fig. 4's statistics: instance sigma of clean vs.
corrupted samples and the share of corrupted samples among the 40% largest instance sigmas.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Batch, Method, StepContext, StepOut
from .registry import register_method

LEVELS = ("class", "instance", "joint")
CLASS_GRADS = ("batch_mean", "class_mean")
SKIP_ROWS = ("zero_grad", "absent")


class DataParameters:
    """Class and/or instance data parameters (stored as log sigma) with their own sparse momentum SGD.

    Satisfies `methods.base.Stepper`: attach it to the model's role and the engine zeroes it before the backward
    and steps it after the model's optimizer. The rows a step touches are the batch's classes / instances from the
    last `scale_logits` call."""

    def __init__(self, num_classes: int, num_instances: int, level: str = "class", lr_class: float = 0.1,
                 lr_inst: float = 0.1, wd_class: float = 5e-4, wd_inst: float = 0.0, init_class: float = 1.0,
                 init_inst: float = 1.0, momentum: float = 0.9, class_grad: str = "batch_mean",
                 clamp: tuple[float, float] = (math.log(1 / 20), math.log(20)), skip_rows: str = "zero_grad",
                 device: torch.device | str | None = None):
        if level not in LEVELS:
            raise ValueError(f"level {level!r}; allowed: {list(LEVELS)}")
        if class_grad not in CLASS_GRADS:
            raise ValueError(f"class_grad {class_grad!r}; allowed: {list(CLASS_GRADS)}")
        if skip_rows not in SKIP_ROWS:
            raise ValueError(f"skip_rows {skip_rows!r}; allowed: {list(SKIP_ROWS)}")
        self.skip_rows = skip_rows
        self.saturated_rows = {"class": 0, "instance": 0}
        self.level, self.class_grad, self.momentum, self.clamp = level, class_grad, momentum, clamp
        self.lr_class, self.lr_inst, self.wd_class, self.wd_inst = lr_class, lr_inst, wd_class, wd_inst
        self.uses_class = level in ("class", "joint")
        self.uses_inst = level in ("instance", "joint")

        def make(n: int, init: float) -> nn.Parameter:
            return nn.Parameter(torch.full((n,), math.log(init), dtype=torch.float32, device=device))

        self.class_log_sigma: nn.Parameter | None = make(num_classes, init_class) if self.uses_class else None
        self.inst_log_sigma: nn.Parameter | None = make(num_instances, init_inst) if self.uses_inst else None
        self.class_momentum = torch.zeros_like(self.class_log_sigma.data) if self.uses_class else None
        self.inst_momentum = torch.zeros_like(self.inst_log_sigma.data) if self.uses_inst else None
        self._targets: torch.Tensor | None = None
        self._indices: torch.Tensor | None = None

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.class_log_sigma, self.inst_log_sigma) if p is not None]

    def sigma(self, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The effective data parameter sigma_i of each sample, shape (B,) (differentiable)."""
        s = 0.0
        if self.uses_class:
            s = s + self.class_log_sigma[targets].exp()
        if self.uses_inst:
            s = s + self.inst_log_sigma[indices].exp()
        return s

    def scale_logits(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """logits / sigma (Eq. (1)), training only; remembers the batch's rows for the next `step`."""
        self._targets, self._indices = targets.detach(), indices.detach()
        return logits / self.sigma(targets, indices)[:, None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """Sparse momentum SGD on the batch's rows, weight decay on those rows, then the clamp."""
        if self.uses_class and self._targets is not None:
            rows, counts = torch.unique(self._targets, return_counts=True)
            if self.class_grad == "class_mean":
                scale, decay = len(self._targets) / counts, torch.ones_like(counts)
            else:
                scale, decay = torch.ones_like(counts), counts
            self._sparse_step(self.class_log_sigma, self.class_momentum, rows, scale, decay, self.lr_class,
                              self.wd_class, "class")
        if self.uses_inst and self._indices is not None:
            rows, counts = torch.unique(self._indices, return_counts=True)
            self._sparse_step(self.inst_log_sigma, self.inst_momentum, rows, torch.ones_like(counts), counts,
                              self.lr_inst, self.wd_inst, "instance")

    def _sparse_step(self, p: nn.Parameter, buf: torch.Tensor, rows: torch.Tensor, scale: torch.Tensor,
                     decay: torch.Tensor, lr: float, wd: float, level: str) -> None:
        if p.grad is None:
            return
        theta = p.data[rows]
        g = p.grad[rows] * scale.to(theta.dtype) + wd * decay.to(theta.dtype) * theta
        v = self.momentum * buf[rows] + g
        zero = g == 0
        self.saturated_rows[level] = self.saturated_rows[level] + zero.sum()  # a tensor: no device sync per step
        if self.skip_rows == "zero_grad":  # official SparseSGD: a zero-gradient row keeps its value and buffer
            v = torch.where(zero, buf[rows], v)
            buf[rows] = v
            p.data[rows] = torch.where(zero, theta, theta - lr * v)
        else:
            buf[rows] = v
            p.data[rows] = theta - lr * v
        p.data.clamp_(*self.clamp)

    def state_dict(self) -> dict[str, torch.Tensor]:
        names = ("class_log_sigma", "class_momentum", "inst_log_sigma", "inst_momentum")
        return {k: getattr(self, k).detach().clone() for k in names if getattr(self, k) is not None}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        if set(state) != set(own):
            raise ValueError(f"data parameters state has keys {sorted(state)}, expected {sorted(own)}")
        with torch.no_grad():
            for k, v in state.items():
                getattr(self, k).copy_(v)


def _stats(values: torch.Tensor) -> tuple[float | None, float | None]:
    """(mean, unbiased std) or None where undefined."""
    mean = values.mean().item() if len(values) else None
    std = values.std().item() if len(values) > 1 else None
    return mean, std


@register_method
class DataParametersMethod(Method):
    name = "dataparams"

    @dataclass(frozen=True)
    class Config:
        level: Literal["class", "instance", "joint"] = "class"
        lr_class: float = 0.1
        lr_inst: float = 0.2
        wd_class: float = 5e-4
        wd_inst: float = 0.0
        init_class: float = 1.0
        init_inst: float = 1.0
        class_grad: Literal["batch_mean", "class_mean"] = "batch_mean"
        skip_rows: Literal["zero_grad", "absent"] = "zero_grad"

        def __post_init__(self):
            for key, positive in (("lr_class", True), ("lr_inst", True), ("wd_class", False), ("wd_inst", False),
                                  ("init_class", True), ("init_inst", True)):
                v = getattr(self, key)
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                        or (v <= 0 if positive else v < 0):
                    raise ValueError(f"{key}={v!r}: must be a number {'> 0' if positive else '>= 0'}")

    dp: DataParameters

    def setup(self, ctx: StepContext) -> None:
        c = self.cfg
        self.dp = DataParameters(ctx.num_classes, self.num_train, c.level, lr_class=c.lr_class, lr_inst=c.lr_inst,
                                 wd_class=c.wd_class, wd_inst=c.wd_inst, init_class=c.init_class,
                                 init_inst=c.init_inst, class_grad=c.class_grad, skip_rows=c.skip_rows,
                                 device=ctx.device)
        ctx.attach("model", self.dp)

    def train_step(self, batch: Batch, ctx: StepContext) -> StepOut:
        logits = ctx.nets["model"](batch.x)
        scaled = self.dp.scale_logits(logits, batch.y, batch.idx)
        loss = F.cross_entropy(scaled, batch.y, reduction="none")
        sigma_mean = self.dp.sigma(batch.y, batch.idx).detach().mean()
        ctx.update("model", loss.mean())
        return StepOut(loss=loss.detach(), logits=logits.detach(), logs={"sigma_mean": sigma_mean})

    def on_epoch_end(self, epoch: int, ctx: StepContext, noisy_mask: torch.Tensor) -> dict[str, Any]:
        """Fig. 4: instance sigma of clean vs. corrupted samples, and the share of corrupted samples among the 40%
        of samples with the largest instance sigma (None without corruption); class sigmas as a list."""
        out: dict[str, Any] = {}
        if self.dp.uses_inst:
            s = self.dp.inst_log_sigma.detach().exp().cpu()
            noisy = noisy_mask.detach().cpu().bool()
            out["inst_sigma_clean_mean"], out["inst_sigma_clean_std"] = _stats(s[~noisy])
            out["inst_sigma_noisy_mean"], out["inst_sigma_noisy_std"] = _stats(s[noisy])
            k = (2 * len(s)) // 5
            share = None
            if noisy.any() and k > 0:
                share = noisy[s.topk(k).indices].float().mean().item()
            out["noisy_share_top40"] = share
        if self.dp.uses_class:
            out["class_sigma"] = self.dp.class_log_sigma.detach().exp().cpu().tolist()
        for level, n in self.dp.saturated_rows.items():  # in-batch rows with an exactly zero gradient this epoch
            if (level == "class" and self.dp.uses_class) or (level == "instance" and self.dp.uses_inst):
                out[f"saturated_rows_{level}"] = int(n)
            self.dp.saturated_rows[level] = 0
        return out

    def state_dict(self) -> dict[str, Any]:
        return self.dp.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dp.load_state_dict(state)
