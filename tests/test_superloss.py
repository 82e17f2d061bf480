"""SuperLoss (Castells et al., NeurIPS 2020): torch Lambert W against scipy, the closed-form optimal confidence
sigma* against the confidence-aware loss it minimises, the detached-sigma* gradient, and the registered method."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.special import lambertw as scipy_lambertw

import methods.superloss  # noqa: F401  (registers "superloss")
from methods.base import Batch
from methods.registry import build_method, make_config
from methods.superloss import lambertw, sigma_star, superloss
from tests.fakes import FakeContext

INV_E = 1 / math.e


def reference_w(z: np.ndarray) -> np.ndarray:
    """scipy's W0; scipy returns nan at float64(-1/e) (just below the true -1/e), where W0 = -1."""
    w = scipy_lambertw(z).real
    return np.where(z <= -INV_E, -1.0, w)


def grid() -> np.ndarray:
    return np.unique(np.concatenate([
        [-INV_E, 0.0, 1e-300, 1e-30, 1e-12, -1e-12, 1.0, math.e, 1e4],
        -INV_E + np.logspace(-15, -0.5, 300),  # approach the branch point
        np.linspace(-INV_E, 1e4, 5001),
        np.logspace(-20, 4, 300), -np.logspace(-20, math.log10(INV_E) - 1e-12, 300),
    ]))


def test_lambertw_matches_scipy_float64():
    z = grid()
    w = lambertw(torch.tensor(z, dtype=torch.float64))
    assert w.dtype == torch.float64 and torch.isfinite(w).all()
    ref = reference_w(z)
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-6, atol=1e-300)
    assert w[z == -INV_E].item() == -1.0 and w[z == 0].item() == 0.0
    assert abs(w[z == 1e-30].item() - 1e-30) <= 1e-36  # W(z) ~ z near 0: relative accuracy holds
    assert w[z == 1.0].item() == pytest.approx(0.5671432904097838, rel=1e-14)  # omega constant


def test_lambertw_float32_and_inverse():
    z32 = torch.tensor(grid(), dtype=torch.float32)
    w32 = lambertw(z32)
    assert w32.dtype == torch.float32 and torch.isfinite(w32).all()
    z = z32.double().numpy()  # compare on the values float32 actually holds
    np.testing.assert_allclose(w32.double().numpy(), reference_w(z), rtol=1e-5, atol=1e-30)
    w64 = lambertw(torch.tensor(grid(), dtype=torch.float64))
    zz = torch.tensor(grid(), dtype=torch.float64)
    torch.testing.assert_close(w64 * torch.exp(w64), zz.clamp_min(-INV_E), rtol=1e-13, atol=1e-15)


def test_lambertw_clamps_below_branch_point():
    w = lambertw(torch.tensor([-1.0, -0.5, -INV_E - 1e-9], dtype=torch.float64))
    assert torch.equal(w, torch.full_like(w, -1.0))
    assert lambertw(torch.tensor([-2 / math.e * 0.5])).item() == -1.0


def test_sigma_star_values():
    tau, lam = 2.0, 0.5
    assert sigma_star(torch.tensor([tau], dtype=torch.float64), tau, lam).item() == pytest.approx(1.0, abs=1e-15)
    losses = torch.linspace(tau - 2 / math.e * lam + 1e-6, tau + 50, 2001, dtype=torch.float64)
    s = sigma_star(losses, tau, lam)
    assert (s[1:] < s[:-1]).all() and s[0] < math.e and s[-1] < 0.1
    # at and beyond the clamp (l - tau)/lam <= -2/e: W(-1/e) = -1, so sigma* = e
    clipped = torch.tensor([tau - 2 / math.e * lam, tau - 3.0, -10.0], dtype=torch.float64)
    torch.testing.assert_close(sigma_star(clipped, tau, lam), torch.full((3,), math.e, dtype=torch.float64))
    # tau as a 0-d tensor gives the same result; sigma* is detached
    l = losses.clone().requires_grad_()
    s2 = sigma_star(l, torch.tensor(tau, dtype=torch.float64), lam)
    assert not s2.requires_grad
    torch.testing.assert_close(s2, s)


def test_sigma_star_is_stationary_point_of_confidence_aware_loss():
    tau, lam = 1.3, 0.7
    losses = torch.tensor([0.9, 1.1, 1.3, 2.0, 5.0, 40.0], dtype=torch.float64)
    assert ((losses - tau) / lam > -2 / math.e).all()
    sigma = sigma_star(losses, tau, lam).clone().requires_grad_()
    cal = (losses - tau) * sigma + lam * torch.log(sigma) ** 2
    (grad,) = torch.autograd.grad(cal.sum(), sigma)
    torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-12)


def test_superloss_is_min_over_sigma():
    tau, lam = 2.3, 0.25
    losses = torch.tensor([2.3 - 0.09, 1.5 + 0.75, 2.3, 3.0, 8.0], dtype=torch.float64)
    assert ((losses - tau) / lam > -2 / math.e).all()
    sig = torch.logspace(-4, math.log10(math.e), 400001, dtype=torch.float64)
    grid_min = ((losses[:, None] - tau) * sig + lam * torch.log(sig) ** 2).min(dim=1).values
    sl = superloss(losses, tau, lam)
    assert (sl <= grid_min + 1e-12).all()
    torch.testing.assert_close(sl, grid_min, rtol=0, atol=1e-8)
    assert superloss(torch.tensor([tau]), tau, lam).item() == 0.0  # sigma* = 1 at l = tau


def test_gradient_is_sigma_star_times_base_gradient():
    torch.manual_seed(0)
    model = nn.Linear(5, 4).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 4, (16,))
    tau = torch.tensor(math.log(4), dtype=torch.float64)

    def grads(objective) -> list[torch.Tensor]:
        model.zero_grad()
        ce = F.cross_entropy(model(x) * 3, y, reduction="none")
        objective(ce).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    g_sl = grads(lambda ce: superloss(ce, tau, 0.5))
    g_ref = grads(lambda ce: sigma_star(ce, tau, 0.5).detach() * ce)
    g_ce = grads(lambda ce: ce)
    for a, b, c in zip(g_sl, g_ref, g_ce):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        assert not torch.allclose(a, c)  # the weighting matters (sigma* != 1 for these samples)


def make_ctx(num_classes: int = 3, n: int = 12):
    torch.manual_seed(1)
    model = nn.Linear(4, num_classes)
    x, y = torch.randn(n, 4), torch.randint(0, num_classes, (n,))
    return FakeContext({"model": model}, x, y, num_classes), Batch(x=x, y=y, idx=torch.arange(n))


def test_method_logc_step():
    ctx, batch = make_ctx()
    method = build_method("superloss", {"lam": 0.25}, num_classes=3, num_train=12)
    model = ctx.nets["model"]
    before = [p.detach().clone() for p in model.parameters()]
    base = F.cross_entropy(model(batch.x), batch.y, reduction="none").detach()
    out = method.train_step(batch, ctx)
    assert ctx.updates == ["model"]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # logs are per sample (the engine averages them over the epoch; packed runs split them by run)
    torch.testing.assert_close(out.logs["tau"], torch.full((12,), math.log(3)))
    torch.testing.assert_close(out.loss, superloss(base, math.log(3), 0.25))
    torch.testing.assert_close(out.logs["sigma_mean"], sigma_star(base, math.log(3), 0.25))
    torch.testing.assert_close(out.ce, base)
    assert out.loss.shape == (12,) and not out.loss.requires_grad and out.logits.shape == (12, 3)
    assert method.on_epoch_end(0, ctx, torch.zeros(12, dtype=torch.bool)) == {}


def test_method_ema_follows_batch_means_and_resumes():
    m = 0.8
    ctx, batch = make_ctx()
    method = build_method("superloss", {"tau": "ema", "ema_momentum": m}, num_classes=3, num_train=12)
    model = ctx.nets["model"]
    ema = None
    for step in range(4):
        mean = F.cross_entropy(model(batch.x), batch.y).item()
        out = method.train_step(batch, ctx)
        expected_tau = mean if ema is None else ema  # tau of a batch: the EMA before this batch's update
        assert out.logs["tau"].shape == (12,)
        assert out.logs["tau"][0].item() == pytest.approx(expected_tau, rel=1e-6)
        ema = mean if ema is None else m * ema + (1 - m) * mean
        assert method.state_dict()["ema"].item() == pytest.approx(ema, rel=1e-6)
    assert method.on_epoch_end(0, ctx, torch.zeros(12, dtype=torch.bool)) == {"tau": pytest.approx(ema, rel=1e-6)}

    # a resumed method continues identically
    state = method.state_dict()
    resumed = build_method("superloss", {"tau": "ema", "ema_momentum": m}, num_classes=3, num_train=12)
    resumed.load_state_dict(state)
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    out_a = method.train_step(batch, ctx)
    model.load_state_dict(model_state)
    out_b = resumed.train_step(batch, ctx)
    assert torch.equal(out_a.logs["tau"], out_b.logs["tau"]) and torch.equal(out_a.loss, out_b.loss)
    assert torch.equal(method.state_dict()["ema"], resumed.state_dict()["ema"])

    fresh = build_method("superloss", {"tau": "ema"}, num_classes=3, num_train=12)
    assert fresh.state_dict()["ema_initialised"] is False
    fresh.load_state_dict(fresh.state_dict())
    assert fresh.ema is None


@pytest.mark.parametrize("params", [{"lam": 0.0}, {"lam": -1.0}, {"ema_momentum": 1.0}, {"ema_momentum": -0.1}])
def test_config_rejects_bad_numbers(params):
    key = next(iter(params))
    with pytest.raises(ValueError, match=key):
        make_config("superloss", params)


def test_config_rejects_bad_tau_and_keeps_defaults():
    with pytest.raises(ValueError, match="tau"):
        make_config("superloss", {"tau": "mean"})
    cfg = make_config("superloss", {})
    assert (cfg.tau, cfg.lam, cfg.ema_momentum) == ("logC", 1.0, 0.9)
