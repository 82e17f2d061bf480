"""MEKD (DCD paper Sec. V-B): three stages (easiest 1/3, re-ranked easiest 2/3, all) at the configured epochs,
difficulty CE + T^2 KL with equal weights, per-class ranking, on a FakeContext with a student whose scores the
test sets."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import methods.dcd  # noqa: F401
import methods.mekd  # noqa: F401  (registers mekd)
from methods.base import Batch
from methods.dcd import kd_terms, rank_within_classes, select_window
from methods.mekd import stage_of
from methods.registry import build_method, make_config
from tests.fakes import FakeContext
from tests.test_dcd import TableNet

K = 3
COUNTS = (60, 30, 10)


def _labels() -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def _table(seed: int, n: int) -> torch.Tensor:
    return 2.0 * torch.randn(n, K, generator=torch.Generator().manual_seed(seed))


def _setup(params=None, num_epochs=12):
    labels = _labels()
    n = len(labels)
    nets = {"student": TableNet(_table(1, n)), "teacher": TableNet(_table(2, n))}
    ctx = FakeContext(nets, torch.arange(n).float()[:, None], labels, K, frozen=("teacher",))
    ctx.num_epochs = num_epochs
    method = build_method("mekd", {"stage_ends": (0.25, 0.5), **(params or {})}, K, n)
    method.setup(ctx)
    return method, ctx, labels


def _expected(ctx, labels, fraction, per_class=True):
    """The easiest `fraction` of each class under phi = CE + T^2 KL of the current student snapshot."""
    ce, kd = kd_terms(ctx.nets["student"].table, ctx.nets["teacher"].table, labels, 3.0)
    return select_window(rank_within_classes(ce + kd, labels if per_class else None, K), 0.0, fraction)


def test_stage_of():
    assert [stage_of(e, 12, (0.25, 0.5)) for e in range(12)] == [1] * 3 + [2] * 3 + [3] * 6
    assert [stage_of(e, 10, (1 / 6, 1 / 2)) for e in range(10)] == [1] * 2 + [2] * 3 + [3] * 5
    assert stage_of(0, 5, (0.0, 0.0)) == 3


def test_stage_fractions_at_the_configured_epochs():
    method, ctx, labels = _setup()
    for epoch in range(12):
        idx = method.epoch_indices(epoch, ctx)
        share = 1 / 3 if epoch < 3 else 2 / 3 if epoch < 6 else None
        extras = method.on_epoch_end(epoch, ctx, torch.zeros(len(labels), dtype=torch.bool))
        assert extras["stage"] == (1 if epoch < 3 else 2 if epoch < 6 else 3)
        if share is None:
            assert idx is None and extras["n_selected"] == len(labels)
            continue
        counts = torch.bincount(labels[idx], minlength=K)
        assert all(abs(counts[c].item() - share * n) <= 1 for c, n in enumerate(COUNTS))
        assert extras["n_selected"] == len(idx)


def test_reranks_with_the_current_student_at_the_stage_2_boundary():
    method, ctx, labels = _setup()
    stage1 = _expected(ctx, labels, 1 / 3)  # the untrained student snapshot ranks stage 1
    assert torch.equal(method.epoch_indices(0, ctx), stage1)
    ctx.nets["student"].table = _table(3, len(labels))  # the student "learns": stage 1 keeps its ranking
    assert torch.equal(method.epoch_indices(1, ctx), stage1)
    assert torch.equal(method.epoch_indices(2, ctx), stage1)
    assert not method.reranked
    stage2 = method.epoch_indices(3, ctx)
    assert method.reranked
    assert torch.equal(stage2, _expected(ctx, labels, 2 / 3))  # the new snapshot's easiest 2/3 per class
    ctx.nets["student"].table = _table(1, len(labels))  # the stage-1 snapshot's 2/3 differ: the test can tell
    assert not torch.equal(stage2, _expected(ctx, labels, 2 / 3))
    ctx.nets["student"].table = _table(4, len(labels))
    assert torch.equal(method.epoch_indices(4, ctx), stage2)  # no re-ranking inside stage 2


def test_global_ranking_when_not_per_class():
    method, ctx, labels = _setup({"per_class": False})
    assert torch.equal(method.epoch_indices(0, ctx), _expected(ctx, labels, 1 / 3, per_class=False))


def test_state_round_trip_resumes_inside_stage_2():
    a, ctx_a, labels = _setup()
    for epoch in range(4):
        a.epoch_indices(epoch, ctx_a)
    state = copy.deepcopy(a.state_dict())
    b, ctx_b, _ = _setup()
    b.load_state_dict(state)
    for ctx in (ctx_a, ctx_b):  # the student moved on: resuming must not re-rank inside the stage
        ctx.nets["student"].table = _table(5, len(labels))
    assert torch.equal(a.epoch_indices(4, ctx_a), b.epoch_indices(4, ctx_b))
    assert not b.reranked


def test_training_updates_only_the_student_with_eq17():
    torch.manual_seed(0)
    x, y = torch.randn(30, 4), torch.randint(0, K, (30,))
    nets = {"student": nn.Linear(4, K), "teacher": nn.Linear(4, K).requires_grad_(False)}
    ctx = FakeContext(nets, x, y, K, frozen=("teacher",))
    ctx.num_epochs = 4
    method = build_method("mekd", {"beta": 0.25}, K, 30)
    method.setup(ctx)
    teacher0 = copy.deepcopy(nets["teacher"].state_dict())
    idx = method.epoch_indices(0, ctx)
    with torch.no_grad():
        ce, kd = kd_terms(nets["student"](x[idx]), nets["teacher"](x[idx]), y[idx], 3.0)
    student0 = nets["student"].weight.detach().clone()
    out = method.train_step(Batch(x=x[idx], y=y[idx], idx=idx), ctx)
    assert torch.allclose(out.loss, 0.75 * ce + 0.25 * kd, atol=1e-6)
    for k, v in teacher0.items():
        assert torch.equal(nets["teacher"].state_dict()[k], v)
    assert not torch.equal(nets["student"].weight, student0) and ctx.updates == ["student"]


def test_needs_the_number_of_epochs():
    method, ctx, _ = _setup()
    del ctx.num_epochs
    with pytest.raises(ValueError, match="num_epochs"):
        method.epoch_indices(0, ctx)


@pytest.mark.parametrize("params, key", [({"stage_ends": (0.6, 0.5)}, "stage_ends"),
                                         ({"stage_ends": (0.5,)}, "stage_ends"),
                                         ({"fractions": (0.0, 0.5)}, "fractions"),
                                         ({"fractions": (0.7, 0.5)}, "fractions"),
                                         ({"beta": -0.1}, "beta"), ({"T": -1.0}, "T=")])
def test_config_validation(params, key):
    with pytest.raises(ValueError, match=key):
        make_config("mekd", params)


def test_config_defaults_and_lists():
    cfg = make_config("mekd", {"stage_ends": [0.2, 0.6]})  # YAML gives lists
    assert cfg.stage_ends == (0.2, 0.6) and cfg.fractions == pytest.approx((1 / 3, 2 / 3))
    assert make_config("mekd", {}).stage_ends == pytest.approx((1 / 6, 1 / 2))
    assert (make_config("mekd", {}).T, make_config("mekd", {}).beta) == (3.0, 0.5)


def test_toy_curriculum_ranks_once_by_the_teacher_loss():
    # DCD Sec. III-C / Fig. 1: samples ranked by the teacher's classification loss, never re-ranked
    method, ctx, labels = _setup({"difficulty": "teacher_ce", "rerank": False})
    t_ce = nn.functional.cross_entropy(ctx.nets["teacher"].table, labels, reduction="none")
    groups = rank_within_classes(t_ce, labels, K)
    assert torch.equal(method.epoch_indices(0, ctx), select_window(groups, 0.0, 1 / 3))
    ctx.nets["student"].table = _table(3, len(labels))  # whatever the student does, the order stays the teacher's
    assert torch.equal(method.epoch_indices(3, ctx), select_window(groups, 0.0, 2 / 3))
    assert method.epoch_indices(6, ctx) is None
    with pytest.raises(ValueError, match="difficulty"):
        make_config("mekd", {"difficulty": "student"})
