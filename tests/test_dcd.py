"""DCD (Dynamic Curriculum Distillation): Eqs. (8)-(11), the window scheduler (Eqs. (12)-(14) as read in
methods/dcd.py), per-class ranking, and the method's hooks end to end on a FakeContext."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import methods.dcd  # noqa: F401  (registers dcd)
from methods.base import Batch
from methods.dcd import (WindowScheduler, difficulty, indicator_weights, kd_terms, marginal_gain,
                         rank_within_classes, select_window)
from methods.registry import build_method, make_config
from tests.fakes import FakeContext


class TableNet(nn.Module):
    """Logits looked up by sample id (x[:, 0]): the test controls every score. One dummy parameter so the
    fake context can build an optimizer."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table.clone()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.table[x[:, 0].long()] + 0 * self.dummy


# --- Eqs. (8)-(11) -------------------------------------------------------------------------------------------

def test_indicator_weights_values_and_clipping():
    assert indicator_weights(0.6, 0.9, 10) == pytest.approx((0.5, 0.3))  # (0.6 - 1/10, 0.9 - 0.6)
    assert indicator_weights(0.05, 0.9, 10) == pytest.approx((0.0, 0.85))  # below chance: w_CE clipped at 0
    assert indicator_weights(0.95, 0.9, 10) == pytest.approx((0.85, 0.0))  # student beats teacher: w_KD = 0
    assert indicator_weights(0.5, 0.5, 2) == (0.0, 0.0)


@pytest.mark.parametrize("val_s, val_t", [(60.0, 0.9), (0.6, 93.5), (-0.1, 0.9), (0.6, 1.01)])
def test_indicator_weights_rejects_percentages(val_s, val_t):
    with pytest.raises(ValueError, match="fraction"):
        indicator_weights(val_s, val_t, 10)


def test_difficulty_and_gain():
    ce, kd = torch.tensor([1.0, 2.0]), torch.tensor([4.0, 0.5])
    assert torch.allclose(difficulty(ce, kd, 0.5, 0.25), torch.tensor([1.5, 1.125]))
    assert marginal_gain(0.5, 0.3) == pytest.approx(0.2)
    assert marginal_gain(0.3, 0.5) == 0.0


def test_kd_terms_against_hand_computation():
    s = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [1.0, 1.0]])
    ce, kd = kd_terms(s, t, torch.tensor([1, 0]), T=1.0)
    assert torch.allclose(ce, torch.tensor([math.log(4 / 3), math.log(2.0)]))
    # KL((3/4, 1/4) || (1/4, 3/4)) = 3/4 log 3 + 1/4 log(1/3) = 1/2 log 3; equal logits: 0
    assert torch.allclose(kd, torch.tensor([0.5 * math.log(3.0), 0.0]), atol=1e-6)
    _, kd3 = kd_terms(3 * s, 3 * t, torch.tensor([1, 0]), T=3.0)  # T^2 scaling at the same softened probs
    assert torch.allclose(kd3, 9 * kd, atol=1e-5)


# --- the window scheduler -------------------------------------------------------------------------------------

SCRIPT = [0.10, 0.30, 0.305, 0.50, 0.501]  # gains: -, 0.2, 0.005, 0.195, 0.001 -> stalls at steps 2 and 4


def _run(sched: WindowScheduler, vals) -> list[bool]:
    return [sched.update(v) for v in vals]


def _flat(pairs) -> list[float]:
    return [v for pair in pairs for v in pair]


def test_grow_moves_only_on_stalls():
    sched = WindowScheduler(s=0.01, init_fraction=0.2, step_fraction=0.2, window="grow")
    refresh = _run(sched, SCRIPT)
    assert refresh == [True, False, True, False, True]  # first ranking, then only at stalls
    assert _flat(sched.history) == pytest.approx(_flat([(0, 0.2), (0, 0.2), (0, 0.4), (0, 0.4), (0, 0.6)]))
    assert sched.gain == pytest.approx(0.001)


def test_slide_moves_only_on_stalls():
    sched = WindowScheduler(s=0.01, init_fraction=0.2, step_fraction=0.2, window="slide")
    _run(sched, SCRIPT)
    assert _flat(sched.history) == pytest.approx(_flat([(0, 0.2), (0, 0.2), (0.2, 0.4), (0.2, 0.4), (0.4, 0.6)]))


@pytest.mark.parametrize("window", ["grow", "slide"])
def test_window_never_moves_back_and_ends_full(window):
    sched = WindowScheduler(s=0.01, init_fraction=0.3, step_fraction=0.25, window=window)
    _run(sched, SCRIPT + [0.501] * 8 + [0.9, 0.95])  # stalls: the window must reach everything and stay
    lows, ups = zip(*sched.history)
    assert all(b >= a for a, b in zip(ups, ups[1:]))
    assert sched.history[-1] == (0.0, 1.0) and sched.full
    first_full = sched.history.index((0.0, 1.0))
    assert all(h == (0.0, 1.0) for h in sched.history[first_full:])
    assert all(b >= a for a, b in zip(lows[:first_full], lows[1:first_full]))  # lower edge: forward only
    if window == "grow":
        assert set(lows) == {0.0}
    else:  # slide: [0,.3) [.25,.55) [.5,.8) [.75,1) then everything
        assert sched.history[first_full - 1] == pytest.approx((0.75, 1.0))


def test_patience_two_is_algorithm_1_literal():
    sched = WindowScheduler(s=0.01, init_fraction=0.2, step_fraction=0.2, patience=2)
    refresh = _run(sched, [0.1, 0.105, 0.3, 0.301, 0.302, 0.303])
    assert refresh == [True, True, False, True, True, True]  # phi is recomputed at every stall ...
    assert [u for _, u in sched.history] == pytest.approx([0.2, 0.2, 0.2, 0.2, 0.4, 0.6])  # ... moves at the 2nd


def test_scheduler_rejects_percentages():
    with pytest.raises(ValueError, match="fraction"):
        WindowScheduler().update(45.0)


# --- per-class ranking and selection ---------------------------------------------------------------------------

def _imbalanced(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((60,), 0), torch.full((30,), 1), torch.full((10,), 2)])
    perm = torch.randperm(100, generator=g)
    return labels[perm], torch.rand(100, generator=g)


@pytest.mark.parametrize("lower, upper", [(0.0, 1 / 3), (0.0, 2 / 3), (1 / 3, 2 / 3), (0.5, 1.0), (0.0, 1.0)])
def test_selection_keeps_class_proportions(lower, upper):
    labels, phi = _imbalanced()
    idx = select_window(rank_within_classes(phi, labels, 3), lower, upper)
    assert len(set(idx.tolist())) == len(idx)
    counts = torch.bincount(labels[idx], minlength=3)
    for c, n in enumerate([60, 30, 10]):
        assert abs(counts[c].item() - (upper - lower) * n) <= 1


def test_selection_is_the_lowest_phi_within_each_class():
    labels, phi = _imbalanced(1)
    idx = select_window(rank_within_classes(phi, labels, 3), 0.0, 1 / 3)
    chosen = torch.zeros(100, dtype=torch.bool)
    chosen[idx] = True
    for c in range(3):
        in_c = labels == c
        assert phi[chosen & in_c].max() < phi[~chosen & in_c].min()
        k = int((chosen & in_c).sum())
        assert set(idx[labels[idx] == c].tolist()) == set(torch.nonzero(in_c).squeeze(1)[phi[in_c].argsort()[:k]]
                                                           .tolist())


def test_global_ranking_ignores_classes():
    labels, phi = _imbalanced(2)
    idx = select_window(rank_within_classes(phi, None, 3), 0.0, 0.25)
    assert set(idx.tolist()) == set(phi.argsort()[:25].tolist())


def test_every_class_keeps_a_sample():
    labels = torch.tensor([0] * 20 + [1])
    idx = select_window(rank_within_classes(torch.rand(21), labels, 2), 0.0, 0.1)
    assert set(labels[idx].tolist()) == {0, 1}


# --- the method end to end ---------------------------------------------------------------------------------------

def _linear_setup(seed=0, n=90, lr=0.1, params=None, with_val=True):
    torch.manual_seed(seed)
    w_true = torch.randn(3, 5)
    x, xv = torch.randn(n, 5), torch.randn(60, 5)
    y, yv = (x @ w_true.T).argmax(1), (xv @ w_true.T).argmax(1)
    teacher = nn.Linear(5, 3)
    with torch.no_grad():
        teacher.weight.copy_(w_true)
        teacher.bias.zero_()
    nets = {"student": nn.Linear(5, 3), "teacher": teacher.requires_grad_(False)}
    ctx = FakeContext(nets, x, y, 3, xv if with_val else None, yv if with_val else None, lr=lr,
                      frozen=("teacher",))
    return build_method("dcd", params or {}, 3, n), ctx, x, y


def _epoch(method, epoch, ctx, x, y, bs=16):
    idx = method.epoch_indices(epoch, ctx)
    idx = torch.arange(len(y)) if idx is None else idx
    for i in range(0, len(idx), bs):
        b = idx[i : i + bs]
        out = method.train_step(Batch(x=x[b], y=y[b], idx=b), ctx)
        assert out.loss.shape == (len(b),) and not out.loss.requires_grad
    return idx, method.on_epoch_end(epoch, ctx, torch.zeros(len(y), dtype=torch.bool))


@pytest.mark.parametrize("params", [{}, {"window": "slide", "loss": "eq17", "step_fraction": 0.25}])
def test_dcd_end_to_end_trains_only_the_student(params):
    method, ctx, x, y = _linear_setup(params=params)
    teacher0 = copy.deepcopy(ctx.nets["teacher"].state_dict())
    student0 = copy.deepcopy(ctx.nets["student"].state_dict())
    method.setup(ctx)
    assert method.val_t == 1.0  # the teacher is the labelling rule; accuracies are fractions
    for epoch in range(4):
        idx, extras = _epoch(method, epoch, ctx, x, y)
        assert set(extras) == {"window", "val_student", "val_teacher", "w_ce", "w_kd", "gain", "n_selected"}
        assert extras["n_selected"] == len(idx) and 0.0 <= extras["val_student"] <= 1.0
        if epoch == 0:
            counts = torch.bincount(y[idx], minlength=3)
            assert all(abs(counts[c] - torch.sum(y == c) / 3) <= 1 for c in range(3))
            assert extras["gain"] is None and extras["window"] == pytest.approx([0.0, 1 / 3])
    for k, v in teacher0.items():
        assert torch.equal(ctx.nets["teacher"].state_dict()[k], v)
    assert not torch.equal(ctx.nets["student"].weight, student0["weight"])
    assert set(ctx.updates) == {"student"}


def test_dcd_loss_is_eq16_or_eq17():
    for loss, (a, b) in [("eq16", (1.0, 1.0)), ("eq17", (0.7, 0.3))]:
        method, ctx, x, y = _linear_setup(params={"loss": loss, "beta": 0.3}, lr=0.0)
        s, t = ctx.nets["student"](x[:8]), ctx.nets["teacher"](x[:8])
        out = method.train_step(Batch(x=x[:8], y=y[:8], idx=torch.arange(8)), ctx)
        ce = F.cross_entropy(s, y[:8], reduction="none")
        kl = F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="none").sum(1)
        assert torch.allclose(out.loss, a * ce + b * 9 * kl, atol=1e-5)


def test_dcd_refreshes_ranking_only_on_stalls():
    """A student whose scores the test sets, and scripted validation accuracies: the selection follows the
    student snapshot taken at the stall epochs only."""
    n, k = 30, 3
    labels = torch.arange(n) % k
    t_table = 5.0 * F.one_hot(labels, k).float()
    s_table = torch.randn(n, k, generator=torch.Generator().manual_seed(0))
    nets = {"student": TableNet(s_table), "teacher": TableNet(t_table)}
    ctx = FakeContext(nets, torch.arange(n).float()[:, None], labels, k, torch.zeros(3, 1), torch.zeros(3).long(),
                      frozen=("teacher",))
    vals = iter([90.0, 10.0, 50.0, 50.5])  # the teacher, then the student at epochs 0..2
    ctx.evaluate = lambda role, split="val": (0.0, next(vals))
    method = build_method("dcd", {"init_fraction": 0.2, "step_fraction": 0.2}, k, n)
    method.setup(ctx)

    def expected(lower, upper, val_s):
        w = indicator_weights(val_s, 0.9, k)
        ce, kd = kd_terms(nets["student"].table, t_table, labels, 3.0)
        return select_window(rank_within_classes(difficulty(ce, kd, *w), labels, k), lower, upper)

    first = expected(0.0, 0.2, 0.10)
    assert torch.equal(method.epoch_indices(0, ctx), first)
    nets["student"].table = torch.randn(n, k, generator=torch.Generator().manual_seed(1))
    # a new snapshot, but no stall (gain 0.4): the ranking and the window stay
    assert torch.equal(method.epoch_indices(1, ctx), first)
    assert method.weights == pytest.approx((0.0, 0.8))
    assert torch.equal(method.epoch_indices(2, ctx), expected(0.0, 0.4, 0.505))  # stall: re-rank and grow
    assert method.weights == pytest.approx((0.505 - 1 / 3, 0.9 - 0.505))


def test_dcd_state_round_trip_continues_identically():
    params = {"step_fraction": 0.2, "init_fraction": 0.2}
    a, ctx_a, x, y = _linear_setup(lr=0.0, params=params)  # lr 0: the accuracy stalls, the window moves
    a.setup(ctx_a)
    for epoch in range(2):
        _epoch(a, epoch, ctx_a, x, y)
    state = copy.deepcopy(a.state_dict())
    b, ctx_b, _, _ = _linear_setup(lr=0.0, params=params)
    ctx_b.nets["student"].load_state_dict(ctx_a.nets["student"].state_dict())
    b.setup(ctx_b)
    b.load_state_dict(state)
    ia, ib = a.epoch_indices(2, ctx_a), b.epoch_indices(2, ctx_b)
    assert torch.equal(ia, ib)
    assert a.sched.history == b.sched.history and a.sched.history[-1] == pytest.approx((0.0, 0.6))


def test_dcd_needs_a_validation_split():
    method, ctx, _, _ = _linear_setup(with_val=False)
    with pytest.raises(ValueError, match="val_size"):
        method.setup(ctx)


@pytest.mark.parametrize("params, key", [({"s": -0.1}, "s="), ({"init_fraction": 0.0}, "init_fraction"),
                                         ({"step_fraction": 1.5}, "step_fraction"), ({"T": 0}, "T="),
                                         ({"beta": 2.0}, "beta"), ({"patience": 0}, "patience"),
                                         ({"window": "jump"}, "window"), ({"loss": "eq8"}, "loss")])
def test_dcd_config_validation(params, key):
    with pytest.raises(ValueError, match=key):
        make_config("dcd", params)


def test_dcd_registration():
    from methods.registry import method_class
    cls = method_class("dcd")
    assert cls.roles == ("student", "teacher") and cls.reported == "student"
    assert cls.frozen == ("teacher",) and cls.init_streams == {"teacher": "teacher"}
    cfg = make_config("dcd", {})
    assert (cfg.T, cfg.s, cfg.window, cfg.loss) == (3.0, 0.01, "grow", "eq16")
