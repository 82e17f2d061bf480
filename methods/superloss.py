"""SuperLoss (Castells, Weinzaepfel, Revaud, "SuperLoss: a generic loss for robust curriculum learning",
NeurIPS 2020).

The confidence-aware loss of a sample with base loss l and confidence sigma > 0,
    L(l, sigma) = (l - tau) * sigma + lam * (log sigma)^2,
is minimised in closed form by
    sigma* = exp(-W(0.5 * max(-2/e, (l - tau) / lam))),  W the principal branch of Lambert W,
and the SuperLoss is SL(l) = L(l, sigma*). sigma* is treated as a constant (detached), so
d SL / d theta = sigma* * d l / d theta: easy samples (l < tau) are up-weighted, hard ones down-weighted.
Below (l - tau) / lam = -2/e, L has no minimum (it is unbounded below in sigma); the clamp gives sigma* = e there,
as in the unofficial implementation AlanChou/Super-Loss.

Choices the paper leaves open, made explicit here (`Config`):
- `tau`: `logC` is log(num_classes), the expected cross-entropy at chance (AlanChou/Super-Loss); `ema` is an
  exponential moving average of the batch-mean base loss (FastEstimator's variant, momentum 0.9 by default),
  initialised with the first batch's mean. The tau used for a batch is the average *before* that batch's update
  (so the first batch uses its own mean). The paper reports little difference between tau variants (FastEstimator).
- `lam`: 1.0 by default; AlanChou/Super-Loss uses 1 for CIFAR-10 and 0.25 for CIFAR-100 (a code comment).
- batch reduction: the mean of SL over the mini-batch.

`lambertw` is a torch implementation (no numpy/scipy, no host sync), so the functional core `sigma_star` /
`superloss` can be dropped into any training loop on any device.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Batch, Method, StepContext, StepOut
from .registry import register_method

# W0 around the branch point in p = sqrt(2 (e z + 1)) (Corless et al. 1996, Eq. 4.22), constant term first.
_BRANCH_SERIES = (-1.0, 1.0, -1 / 3, 11 / 72, -43 / 540, 769 / 17280, -221 / 8505, 680863 / 43545600,
                  -1963 / 204120, 226287557 / 37623398400)
_SERIES_ONLY_P = 0.05  # below this p the series alone is exact to float64 (next term ~4e-3 p^10)
_HALLEY_STEPS = 3  # cubic convergence from a <4% guess: 2 already reach float64 precision on [-1/e, 1e300]


@functools.lru_cache(maxsize=None)
def _inv_e_split(dtype: torch.dtype) -> tuple[float, float]:
    """1/e as hi + lo with hi representable in `dtype`, so z + 1/e is computed without cancellation."""
    hi = torch.tensor(math.exp(-1.0), dtype=dtype).item()
    with localcontext() as ctx:
        ctx.prec = 40
        lo = float(Decimal(-1).exp() - Decimal(hi))
    return hi, lo


@torch.no_grad()
def lambertw(z: Tensor) -> Tensor:
    """Principal branch W0(z) for real z (inputs below -1/e are clamped to -1/e), in z's dtype and device.

    Initial guess: the branch-point series for z < -0.25, Winitzki's log approximation elsewhere; then a fixed
    number of Halley steps. Within p < 0.05 of the branch point the series is used as is (Halley is
    ill-conditioned there). Not differentiable (computed without autograd)."""
    if not z.is_floating_point():
        z = z.float()
    hi, lo = _inv_e_split(z.dtype)
    z = z.clamp_min(-hi)
    p = (2 * math.e * ((z + hi) + lo)).clamp_min(0).sqrt()  # = sqrt(2 (e z + 1)), accurate near -1/e
    pc = p.clamp_max(2.0)  # the series is only used for small p: keep the other lanes finite
    series = torch.full_like(z, _BRANCH_SERIES[-1])
    for c in reversed(_BRANCH_SERIES[:-1]):
        series = series * pc + c
    l1 = torch.log1p(z)
    w = torch.where(z < -0.25, series, l1 * (1 - torch.log1p(l1) / (2 + l1)))
    for _ in range(_HALLEY_STEPS):
        ew = torch.exp(w)
        f = w * ew - z
        wp1 = w + 1
        wp1 = torch.where(wp1 == 0, torch.ones_like(wp1), wp1)
        denom = ew * wp1 - (w + 2) * f / (2 * wp1)
        step = torch.where(denom == 0, torch.zeros_like(f), f / denom)
        w = w - step
    return torch.where(p < _SERIES_ONLY_P, series, w)


def _as_tau(tau: float | Tensor) -> float | Tensor:
    return tau.detach() if isinstance(tau, Tensor) else tau


def _w_star(losses: Tensor, tau: float | Tensor, lam: float) -> Tensor:
    """W(0.5 max(-2/e, (l - tau)/lam)) = -log sigma*, detached."""
    beta = (losses.detach() - _as_tau(tau)) / lam
    return lambertw(0.5 * beta.clamp_min(-2 / math.e))


def sigma_star(losses: Tensor, tau: float | Tensor, lam: float) -> Tensor:
    """Optimal confidence per sample, exp(-W(0.5 max(-2/e, (l - tau)/lam))), detached."""
    return torch.exp(-_w_star(losses, tau, lam))


def _superloss_sigma(losses: Tensor, tau: float | Tensor, lam: float) -> tuple[Tensor, Tensor]:
    w = _w_star(losses, tau, lam)  # log sigma* = -w
    sigma = torch.exp(-w)
    return (losses - _as_tau(tau)) * sigma + lam * w * w, sigma


def superloss(losses: Tensor, tau: float | Tensor, lam: float) -> Tensor:
    """Per-sample SuperLoss (l - tau) sigma* + lam (log sigma*)^2; the gradient is sigma* d l (sigma*, tau
    detached)."""
    return _superloss_sigma(losses, tau, lam)[0]


@register_method
class SuperLoss(Method):
    name = "superloss"

    @dataclass(frozen=True)
    class Config:
        tau: Literal["logC", "ema"] = "logC"
        lam: float = 1.0
        ema_momentum: float = 0.9

        def __post_init__(self):
            def number(v: Any) -> bool:
                return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

            if not number(self.lam) or self.lam <= 0:
                raise ValueError(f"lam={self.lam!r}: must be a number > 0")
            if not number(self.ema_momentum) or not 0 <= self.ema_momentum < 1:
                raise ValueError(f"ema_momentum={self.ema_momentum!r}: must be a number in [0, 1)")

    def __init__(self, config: Any, num_classes: int, num_train: int):
        super().__init__(config, num_classes, num_train)
        self.ema: Tensor | None = None  # EMA of the batch-mean base loss (tau="ema"); None until the first batch

    @property
    def packable(self) -> bool:  # the EMA threshold is a statistic of the whole batch: one per run
        return self.cfg.tau == "logC"

    def _tau(self, base: Tensor) -> Tensor:
        """tau for this batch (0-d, on base's device); updates the EMA afterwards (no host sync)."""
        if self.cfg.tau == "logC":
            return torch.tensor(math.log(self.num_classes), device=base.device, dtype=base.dtype)
        mean = base.detach().mean()
        tau = mean.clone() if self.ema is None else self.ema.to(mean.device, mean.dtype)
        m = self.cfg.ema_momentum
        self.ema = m * tau + (1 - m) * mean
        return tau

    def train_step(self, batch: Batch, ctx: StepContext) -> StepOut:
        logits = ctx.nets["model"](batch.x)
        base = F.cross_entropy(logits, batch.y, reduction="none")
        tau = self._tau(base)
        loss, sigma = _superloss_sigma(base, tau, self.cfg.lam)
        ctx.update("model", loss.mean())
        return StepOut(loss=loss.detach(), logits=logits.detach(), ce=base.detach(),
                       logs={"tau": tau.expand_as(base), "sigma_mean": sigma.detach()})

    def on_epoch_end(self, epoch: int, ctx: StepContext, noisy_mask: Tensor) -> dict[str, Any]:
        return {"tau": float(self.ema)} if self.cfg.tau == "ema" and self.ema is not None else {}

    def state_dict(self) -> dict[str, Any]:
        return {"ema": None if self.ema is None else self.ema.detach().clone(), "ema_initialised": self.ema is not None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        extra = sorted(set(state) - {"ema", "ema_initialised"})
        if extra:
            raise ValueError(f"method {self.name!r}: unexpected state keys {extra}")
        self.ema = state["ema"].clone() if state.get("ema_initialised") else None
