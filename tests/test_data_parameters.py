"""Data Parameters (Saxena et al., NeurIPS 2019): gradients against Eqs. (3)-(5), the sparse momentum SGD of
Sec. 3.1 / the official SparseSGD, the Method's hooks with FakeContext, and the Config checks."""
from __future__ import annotations

import copy
import json
import math
import statistics

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import methods.data_parameters  # noqa: F401  (registers "dataparams")
from methods.base import Batch
from methods.data_parameters import DataParameters
from methods.registry import build_method, make_config
from tests.fakes import FakeContext

LO, HI = math.log(1 / 20), math.log(20)


def eq4(z: torch.Tensor, y: int, sigma: float) -> float:
    """dL/dsigma of one sample, Eq. (4)/(5), computed from the formula with float64."""
    z = z.double()
    p = torch.softmax(z / sigma, dim=0)
    mask = torch.ones_like(p, dtype=torch.bool)
    mask[y] = False
    q = p[mask] / (1 - p[y])
    return ((1 - p[y]) / sigma**2 * (z[y] - (q * z[mask]).sum())).item()


def set_log(param: torch.Tensor, values) -> None:
    with torch.no_grad():
        param.copy_(torch.log(torch.as_tensor(values, dtype=param.dtype)))


def test_eq4_single_sample_class_level():
    torch.manual_seed(0)
    dp = DataParameters(4, 3, level="class")
    set_log(dp.class_log_sigma, [0.5, 1.7, 2.0, 0.9])
    z, y, idx = torch.randn(1, 4) * 3, torch.tensor([1]), torch.tensor([2])
    F.cross_entropy(dp.scale_logits(z, y, idx), y).backward()
    sigma = 1.7
    got = dp.class_log_sigma.grad[1].item() / sigma  # dL/dsigma = dL/dlog sigma / sigma
    assert got == pytest.approx(eq4(z[0], 1, sigma), rel=1e-5, abs=1e-7)
    assert abs(got) > 1e-3
    assert torch.count_nonzero(dp.class_log_sigma.grad) == 1


@pytest.mark.parametrize("reading", ["batch_mean", "class_mean"])
def test_eq4_batch_class_grad_readings(reading):
    torch.manual_seed(1)
    sig = [0.5, 1.7, 2.0, 0.9]
    dp = DataParameters(4, 6, level="class", class_grad=reading, wd_class=0.0, lr_class=0.01)
    set_log(dp.class_log_sigma, sig)
    z, y, idx = torch.randn(6, 4) * 2, torch.tensor([0, 2, 0, 1, 0, 2]), torch.arange(6)
    dp.zero_grad()
    F.cross_entropy(dp.scale_logits(z, y, idx), y).backward()
    # autograd of the batch mean: sum over the class's samples / B (the official reading)
    for c in range(3):
        per = [eq4(z[i], c, sig[c]) for i in range(6) if y[i] == c]
        assert dp.class_log_sigma.grad[c].item() / sig[c] == pytest.approx(sum(per) / 6, rel=1e-5, abs=1e-7)
    dp.step()
    # with a zero buffer and no weight decay, the buffer after one step is the gradient the step used
    for c in range(3):
        per = [eq4(z[i], c, sig[c]) for i in range(6) if y[i] == c]
        want = sum(per) / 6 if reading == "batch_mean" else sum(per) / len(per)
        assert dp.class_momentum[c].item() / sig[c] == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert dp.class_momentum[3].item() == 0.0
    assert torch.equal(dp.class_log_sigma.data[3], torch.log(torch.tensor(0.9)))


def test_eq5_joint_same_gradient_for_class_and_instance():
    torch.manual_seed(2)
    dp = DataParameters(3, 5, level="joint")
    cls, inst = [0.8, 1.3, 0.6], [0.05, 0.4, 1.1, 0.2, 2.5]
    set_log(dp.class_log_sigma, cls)
    set_log(dp.inst_log_sigma, inst)
    z, y, idx = torch.randn(4, 3) * 2, torch.tensor([2, 0, 2, 1]), torch.tensor([4, 0, 1, 3])
    assert torch.allclose(dp.sigma(y, idx), torch.tensor([cls[2] + inst[4], cls[0] + inst[0], cls[2] + inst[1],
                                                          cls[1] + inst[3]]))
    for i in range(4):  # one sample at a time: both parameters get dL/dsigma* of Eq. (5)
        dp.zero_grad()
        F.cross_entropy(dp.scale_logits(z[i:i + 1], y[i:i + 1], idx[i:i + 1]), y[i:i + 1]).backward()
        c, j = y[i].item(), idx[i].item()
        want = eq4(z[i], c, cls[c] + inst[j])
        assert dp.class_log_sigma.grad[c].item() / cls[c] == pytest.approx(want, rel=1e-5, abs=1e-7)
        assert dp.inst_log_sigma.grad[j].item() / inst[j] == pytest.approx(want, rel=1e-5, abs=1e-7)
    dp.zero_grad()  # the batch mean: each instance gets 1/B of its own sample's gradient
    F.cross_entropy(dp.scale_logits(z, y, idx), y).backward()
    for i in range(4):
        c, j = y[i].item(), idx[i].item()
        want = eq4(z[i], c, cls[c] + inst[j]) / 4
        assert dp.inst_log_sigma.grad[j].item() / inst[j] == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert dp.inst_log_sigma.grad[2].item() == 0.0


@pytest.mark.parametrize("level", ["class", "instance", "joint"])
def test_eq3_logit_gradient(level):
    torch.manual_seed(3)
    dp = DataParameters(4, 6, level=level, init_class=1.5, init_inst=0.7)
    z = (torch.randn(5, 4) * 2).requires_grad_()
    y, idx = torch.tensor([0, 3, 3, 1, 2]), torch.tensor([5, 1, 0, 2, 4])
    F.cross_entropy(dp.scale_logits(z, y, idx), y, reduction="sum").backward()
    sigma = {"class": 1.5, "instance": 0.7, "joint": 2.2}[level]
    want = (torch.softmax(z.detach() / sigma, 1) - F.one_hot(y, 4)) / sigma
    assert torch.allclose(z.grad, want, atol=1e-6)


def _step(dp: DataParameters, y, idx, cls_grad=None, inst_grad=None) -> None:
    """Register a batch's rows and step with hand-set gradients."""
    y, idx = torch.as_tensor(y), torch.as_tensor(idx)
    dp.scale_logits(torch.zeros(len(y), 1), y, idx)
    dp.zero_grad()
    if cls_grad is not None:
        dp.class_log_sigma.grad = torch.as_tensor(cls_grad, dtype=torch.float32)
    if inst_grad is not None:
        dp.inst_log_sigma.grad = torch.as_tensor(inst_grad, dtype=torch.float32)
    dp.step()


def test_absent_rows_keep_value_and_momentum():
    torch.manual_seed(4)
    dp = DataParameters(5, 8, level="joint", lr_class=0.1, lr_inst=0.2, wd_class=1e-2, wd_inst=1e-2)
    z = torch.randn(2, 5)
    y, idx = torch.tensor([0, 1]), torch.tensor([2, 5])
    F.cross_entropy(dp.scale_logits(z, y, idx), y).backward()
    before = dp.state_dict()
    dp.step()
    after = dp.state_dict()
    for name, rows, absent in (("class", [0, 1], [2, 3, 4]), ("inst", [2, 5], [0, 1, 3, 4, 6, 7])):
        p, b = f"{name}_log_sigma", f"{name}_momentum"
        assert torch.equal(after[p][absent], before[p][absent]) and torch.equal(after[b][absent], before[b][absent])
        assert (after[p][rows] != before[p][rows]).all() and (after[b][rows] != 0).all()
    # next batch touches other rows: the rows of the first batch keep value and (non-zero) momentum bit-identical
    z2 = torch.randn(2, 5)
    y2, idx2 = torch.tensor([3, 3]), torch.tensor([0, 7])
    dp.zero_grad()
    F.cross_entropy(dp.scale_logits(z2, y2, idx2), y2).backward()
    dp.step()
    last = dp.state_dict()
    for key, rows in (("class_log_sigma", [0, 1]), ("class_momentum", [0, 1]), ("inst_log_sigma", [2, 5]),
                      ("inst_momentum", [2, 5])):
        assert torch.equal(last[key][rows], after[key][rows])
    assert last["class_log_sigma"][3] != after["class_log_sigma"][3]
    assert (last["inst_log_sigma"][[0, 7]] != after["inst_log_sigma"][[0, 7]]).all()


def test_momentum_and_weight_decay_two_steps():
    lr, wd, m = 0.3, 0.05, 0.9
    dp = DataParameters(3, 4, level="joint", lr_class=lr, lr_inst=lr, wd_class=wd, wd_inst=wd, init_class=1.5,
                        init_inst=2.0)
    g1, g2 = 0.4, -0.25
    th_c, th_i = math.log(1.5), math.log(2.0)
    _step(dp, [1], [2], cls_grad=[0, g1, 0], inst_grad=[0, 0, g1, 0])
    _step(dp, [1], [2], cls_grad=[0, g2, 0], inst_grad=[0, 0, g2, 0])
    for th0, p, buf in ((th_c, dp.class_log_sigma[1], dp.class_momentum[1]),
                        (th_i, dp.inst_log_sigma[2], dp.inst_momentum[2])):
        v1 = g1 + wd * th0
        th1 = th0 - lr * v1
        v2 = m * v1 + g2 + wd * th1
        th2 = th1 - lr * v2
        assert buf.item() == pytest.approx(v2, rel=1e-5)
        assert p.item() == pytest.approx(th2, rel=1e-5)
    assert dp.class_log_sigma[0].item() == pytest.approx(th_c) and dp.class_momentum[0].item() == 0.0


@pytest.mark.parametrize("reading", ["batch_mean", "class_mean"])
def test_class_weight_decay_and_rescaling_with_repeated_class(reading):
    """Class 1 twice in a batch of 3: batch_mean (official) decays n_c * wd * theta; class_mean rescales by B/n_c
    and decays once."""
    lr, wd, g = 0.1, 0.02, 0.3
    dp = DataParameters(3, 4, level="class", lr_class=lr, wd_class=wd, init_class=2.0, class_grad=reading)
    th = math.log(2.0)
    _step(dp, [1, 0, 1], [0, 1, 2], cls_grad=[0.0, g, 0.0])
    v = g + 2 * wd * th if reading == "batch_mean" else g * 3 / 2 + wd * th
    assert dp.class_momentum[1].item() == pytest.approx(v, rel=1e-5)
    assert dp.class_log_sigma[1].item() == pytest.approx(th - lr * v, rel=1e-5)
    assert dp.class_momentum[0].item() == pytest.approx(wd * th, rel=1e-5)  # present once, zero CE gradient


def test_clamp_with_huge_lr():
    dp = DataParameters(3, 4, level="joint", lr_class=1e6, lr_inst=1e6)
    _step(dp, [0, 1], [1, 3], cls_grad=[1.0, -1.0, 0.0], inst_grad=[0.0, -1.0, 0.0, 1.0])
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    assert torch.equal(dp.class_log_sigma.data, torch.stack([f32(LO), f32(HI), f32(0.0)]))
    assert torch.equal(dp.inst_log_sigma.data, torch.stack([f32(0.0), f32(HI), f32(0.0), f32(LO)]))


def test_joint_paper_init_is_clamped_like_the_official_code():
    dp = DataParameters(3, 4, level="joint", init_inst=0.001)
    assert dp.inst_log_sigma[0].item() == pytest.approx(math.log(0.001))
    _step(dp, [0], [1], cls_grad=[0.0, 0.0, 0.0], inst_grad=[0.0, 0.0, 0.0, 0.0])
    assert torch.allclose(dp.inst_log_sigma.data, torch.full((4,), LO))


def _setup(level: str = "joint", **params):
    torch.manual_seed(5)
    x, y = torch.randn(10, 3), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    model = nn.Linear(3, 4)
    method = build_method("dataparams", {"level": level, **params}, 4, 10)
    ctx = FakeContext({"model": model}, x, y, 4)
    method.setup(ctx)
    return method, ctx, x, y


def test_train_step_steps_model_and_data_parameters_and_returns_unscaled_logits():
    method, ctx, x, y = _setup("joint", init_class=1.5, init_inst=0.5)
    assert ctx.steppers["model"] == [method.dp]
    model = ctx.nets["model"]
    model_before = copy.deepcopy(model)
    dp_before = method.dp.state_dict()
    idx = torch.tensor([0, 3, 5, 6])
    out = method.train_step(Batch(x=x[idx], y=y[idx], idx=idx), ctx)
    assert ctx.updates == ["model"]
    raw = model_before(x[idx]).detach()
    assert torch.allclose(out.logits, raw)  # unscaled: what the model itself predicts (test time)
    assert torch.allclose(out.loss, F.cross_entropy(raw / 2.0, y[idx], reduction="none"), atol=1e-6)
    assert out.logs["sigma_mean"].item() == pytest.approx(2.0)
    assert not torch.equal(model.weight, model_before.weight)
    after = method.dp.state_dict()
    assert not torch.equal(after["inst_log_sigma"][idx], dp_before["inst_log_sigma"][idx])
    assert torch.equal(after["inst_log_sigma"][[1, 2, 4]], dp_before["inst_log_sigma"][[1, 2, 4]])
    assert not torch.equal(after["class_log_sigma"], dp_before["class_log_sigma"])


def test_fig4_extras():
    method, ctx, _, _ = _setup("joint")
    sig = [float(v) for v in range(1, 11)]
    set_log(method.dp.inst_log_sigma, sig)
    set_log(method.dp.class_log_sigma, [1.0, 2.0, 0.5, 4.0])
    noisy = torch.zeros(10, dtype=torch.bool)
    noisy[[2, 8, 9]] = True
    ex = method.on_epoch_end(0, ctx, noisy)
    json.dumps(ex)
    clean = [s for i, s in enumerate(sig) if i not in (2, 8, 9)]
    bad = [3.0, 9.0, 10.0]
    assert ex["inst_sigma_clean_mean"] == pytest.approx(statistics.mean(clean), rel=1e-5)
    assert ex["inst_sigma_clean_std"] == pytest.approx(statistics.stdev(clean), rel=1e-5)
    assert ex["inst_sigma_noisy_mean"] == pytest.approx(statistics.mean(bad), rel=1e-5)
    assert ex["inst_sigma_noisy_std"] == pytest.approx(statistics.stdev(bad), rel=1e-5)
    assert ex["noisy_share_top40"] == pytest.approx(0.5)  # top 4 sigmas: samples 9, 8, 7, 6
    assert ex["class_sigma"] == pytest.approx([1.0, 2.0, 0.5, 4.0], rel=1e-6)
    none = method.on_epoch_end(0, ctx, torch.zeros(10, dtype=torch.bool))
    assert none["noisy_share_top40"] is None and none["inst_sigma_noisy_mean"] is None
    json.dumps(none)
    assert set(build_and_extras("class")) == {"class_sigma", "saturated_rows_class"}
    assert "class_sigma" not in build_and_extras("instance") and "noisy_share_top40" in build_and_extras("instance")


def build_and_extras(level: str) -> dict:
    method, ctx, _, _ = _setup(level)
    return method.on_epoch_end(0, ctx, torch.zeros(10, dtype=torch.bool))


def test_state_dict_round_trip():
    method, ctx, x, y = _setup("joint", class_grad="class_mean")
    idx = torch.tensor([1, 2, 7])
    method.train_step(Batch(x=x[idx], y=y[idx], idx=idx), ctx)
    state = method.state_dict()
    assert set(state) == {"class_log_sigma", "class_momentum", "inst_log_sigma", "inst_momentum"}
    other, ctx2, _, _ = _setup("joint", class_grad="class_mean")
    other.load_state_dict(state)
    ctx2.nets["model"].load_state_dict(ctx.nets["model"].state_dict())
    for k, v in other.state_dict().items():
        assert torch.equal(v, state[k])
    idx = torch.tensor([2, 4, 7])  # same next step on both: the restored momentum gives the same result
    method.train_step(Batch(x=x[idx], y=y[idx], idx=idx), ctx)
    other.train_step(Batch(x=x[idx], y=y[idx], idx=idx), ctx2)
    for k, v in other.state_dict().items():
        assert torch.equal(v, method.state_dict()[k])
    cls_only, _, _, _ = _setup("class")
    with pytest.raises(ValueError):
        cls_only.load_state_dict(state)


def test_config_validation():
    cfg = make_config("dataparams", {})
    assert (cfg.level, cfg.lr_class, cfg.lr_inst, cfg.wd_class, cfg.wd_inst, cfg.class_grad) == \
        ("class", 0.1, 0.2, 5e-4, 0.0, "batch_mean")
    with pytest.raises(ValueError, match="level"):
        make_config("dataparams", {"level": "sample"})
    with pytest.raises(ValueError, match="class_grad"):
        make_config("dataparams", {"class_grad": "sum"})
    for key, bad in (("lr_class", 0.0), ("lr_inst", -0.1), ("wd_class", -1e-4), ("wd_inst", -1.0),
                     ("init_class", 0.0), ("init_inst", -1.0), ("lr_class", "0.1"), ("lr_inst", True)):
        with pytest.raises(ValueError, match=key):
            make_config("dataparams", {key: bad})
    assert make_config("dataparams", {"level": "joint", "wd_inst": 0.0}).level == "joint"


def _official_reference(level, batches, n_cls, n_inst, lr, wd, init=1.0, momentum=0.9):
    """The official update restated: the weight decay 0.5 * wd * (log sigma)^2 of each sample's row added to the
    batch-mean loss, torch's SGD with momentum on the whole tensor, then every row whose gradient is exactly 0
    reverted to its value and momentum buffer before the step (SparseSGD(skip_update_zero_grad=True)), then the
    clamp. Returns the final log sigma and momentum buffer."""
    n = n_cls if level == "class" else n_inst
    p = torch.full((n,), math.log(init), requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum)
    for z, y, idx in batches:
        rows = y if level == "class" else idx
        opt.zero_grad()
        ls = p[rows]
        loss = F.cross_entropy(z / ls.exp()[:, None], y) + 0.5 * wd * (ls ** 2).sum()
        loss.backward()
        before = p.detach().clone()
        buf_before = opt.state[p]["momentum_buffer"].clone() if "momentum_buffer" in opt.state[p] else None
        opt.step()
        with torch.no_grad():
            zero = p.grad == 0
            p[zero] = before[zero]
            if buf_before is not None:
                opt.state[p]["momentum_buffer"][zero] = buf_before[zero]
            p.clamp_(LO, HI)
    return p.detach(), opt.state[p]["momentum_buffer"]


def _saturating_batches(n_cls, n_inst, steps=6, seed=0):
    """Random batches; sample 0 is in every batch from the second on: in the second with ordinary logits (its
    momentum buffer becomes non-zero), from the third on with a margin of 120 for its label, so its softmax is
    one-hot in float32 and its gradient (wd 0) is exactly zero."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in range(steps):
        idx = torch.randperm(n_inst, generator=g)[:4]
        if s >= 1:
            idx[0] = 0
        y = idx % n_cls
        z = torch.randn(4, n_cls, generator=g)
        if s >= 2:
            z[idx == 0] = -60.0
            z[idx == 0, 0] = 60.0
        out.append((z, y, idx))
    return out


@pytest.mark.parametrize("level,wd", [("instance", 0.0), ("instance", 1e-3), ("class", 0.0), ("class", 5e-4)])
def test_default_matches_the_official_sparse_sgd_update(level, wd):
    n_cls, n_inst, lr = 3, 9, 0.2
    batches = _saturating_batches(n_cls, n_inst)
    dp = DataParameters(n_cls, n_inst, level=level, lr_class=lr, lr_inst=lr, wd_class=wd, wd_inst=wd)
    assert dp.skip_rows == "zero_grad"
    for z, y, idx in batches:
        dp.zero_grad()
        F.cross_entropy(dp.scale_logits(z, y, idx), y).backward()
        dp.step()
    want_p, want_buf = _official_reference(level, batches, n_cls, n_inst, lr, wd)
    p, buf = (dp.class_log_sigma, dp.class_momentum) if level == "class" else (dp.inst_log_sigma, dp.inst_momentum)
    assert torch.allclose(p.data, want_p, rtol=1e-6, atol=1e-7)
    assert torch.allclose(buf, want_buf, rtol=1e-6, atol=1e-7)


def test_saturated_in_batch_sample_under_both_readings():
    """Sample 0 is in the second batch but its scaled softmax is exactly one-hot (sigma 1/20, margin 120): zero
    gradient. Official (`zero_grad`): value and momentum buffer kept. Text (`absent`): it is in the batch, so its
    buffer decays (0.9 v) and its value moves by -lr * 0.9 v. Sample 1 (in the batch, not saturated) is updated
    alike by both; sample 2 (absent) is kept by both."""
    lr, m = 0.2, 0.9
    res = {}
    for reading in ("zero_grad", "absent"):
        dp = DataParameters(2, 3, level="instance", lr_inst=lr, wd_inst=0.0, skip_rows=reading)
        y, idx = torch.tensor([0, 1]), torch.tensor([0, 1])
        F.cross_entropy(dp.scale_logits(torch.tensor([[0.3, 0.1], [0.2, 0.4]]), y, idx), y).backward()
        dp.step()
        with torch.no_grad():  # put sample 0 at the lower clamp, keeping its momentum buffer
            dp.inst_log_sigma[0] = LO
        before = dp.state_dict()
        assert before["inst_momentum"][0] != 0
        z = torch.tensor([[60.0, -60.0], [0.5, 0.1]])
        dp.zero_grad()
        F.cross_entropy(dp.scale_logits(z, y, idx), y).backward()
        assert dp.inst_log_sigma.grad[0] == 0.0 and dp.inst_log_sigma.grad[1] != 0.0
        dp.step()
        res[reading] = (before, dp.state_dict(), int(dp.saturated_rows["instance"]))
    (b0, a0, n0), (b1, a1, n1) = res["zero_grad"], res["absent"]
    assert n0 == n1 == 1  # the first step had none, the second one (sample 0)
    assert torch.equal(a0["inst_log_sigma"][0], b0["inst_log_sigma"][0])
    assert torch.equal(a0["inst_momentum"][0], b0["inst_momentum"][0])
    v = m * b1["inst_momentum"][0]
    assert a1["inst_momentum"][0].item() == pytest.approx(v.item(), rel=1e-6)
    want = max((b1["inst_log_sigma"][0] - lr * v).item(), LO)
    assert a1["inst_log_sigma"][0].item() == pytest.approx(want, rel=1e-6)
    assert a1["inst_log_sigma"][0] != a0["inst_log_sigma"][0] or a1["inst_momentum"][0] != a0["inst_momentum"][0]
    for k in ("inst_log_sigma", "inst_momentum"):
        assert torch.equal(a0[k][1], a1[k][1]) and a0[k][1] != b0[k][1]
        assert torch.equal(a0[k][2], b0[k][2]) and torch.equal(a1[k][2], b1[k][2])


def test_epoch_end_reports_and_resets_the_saturated_count():
    method, ctx, x, y = _setup("instance", wd_inst=0.0)
    method.dp.saturated_rows["instance"] = torch.tensor(3)
    out = method.on_epoch_end(1, ctx, torch.zeros(10, dtype=torch.bool))
    assert out["saturated_rows_instance"] == 3 and "saturated_rows_class" not in out
    assert method.on_epoch_end(2, ctx, torch.zeros(10, dtype=torch.bool))["saturated_rows_instance"] == 0
