"""BLCL loss, Eq. (3) of the BLCL paper, against hand-computed numbers.

Student logits are chosen as logs of small integers so the softmax is exact:
  sample 0: z = log(1, 2, 5)  ->  q = (1/8, 2/8, 5/8),   -log q = (log 8, log 4, log 8/5)
  sample 1: z = log(3, 1, 6)  ->  q = (0.3, 0.1, 0.6),   -log q = (log 10/3, log 10, log 10/6)
Teacher probabilities: p0 = (0.81, 0.09, 0.10) (so p^1.5 = 0.729, 0.027, 0.1^1.5), p1 = (0.25, 0.36, 0.39)
(so p^1.5 = 0.125, 0.216, 0.39^1.5). Targets y = (0, 2).
"""
from __future__ import annotations

import math

import pytest
import torch

import methods
from methods.blcl import blcl_loss

LOGITS = [[math.log(1), math.log(2), math.log(5)], [math.log(3), math.log(1), math.log(6)]]
Q = [[1 / 8, 2 / 8, 5 / 8], [0.3, 0.1, 0.6]]
TEACHER = [[0.81, 0.09, 0.10], [0.25, 0.36, 0.39]]
TARGETS = [0, 2]

# Hand computations (values below were evaluated with plain float arithmetic, and are re-derived in
# `test_hand_values_are_self_consistent` from the formulas with math.log only):
# literal, r=1.5:  s0 = 0.729*log 8 + 0.027*log 4 + 0.1^1.5*log(8/5)
#                  s1 = 0.125*log(10/3) + 0.216*log 10 + 0.39^1.5*log(10/6)
# label,   r=1.5:  s0 = 0.729*log 8,   s1 = 0.39^1.5*log(10/6)
EXPECTED_CE = {
    ("literal", 1.5): [1.5682056514, 0.7722690755],
    ("label", 1.5): [1.5159128839, 0.1244140949],
    ("literal", 2.0): [1.3802506161, 0.4513599057],
    ("label", 2.0): [1.3643215955, 0.0776965774],
    ("literal", 0.5): [2.4360138935, 2.3025479578],
    ("label", 0.5): [1.8714973875, 0.3190104998],
}
# MSE base: L(q, e_k) = mean_j (q_j - [j==k])^2.
#   sample 0: |q|^2 = 30/64 -> L_k = (30/64 - 2 q_k + 1)/3 = (0.40625, 0.3229166667, 0.0729166667)
#   sample 1: |q|^2 = 0.46  -> L_k = (0.2866666667, 0.42, 0.0866666667)
MSE_PER_CLASS = [[0.40625, 0.32291666667, 0.07291666667], [0.28666666667, 0.42, 0.08666666667]]
EXPECTED_MSE = {
    ("literal", 1.5): [0.3071808275, 0.1476614266],
    ("label", 1.5): [0.2961562500, 0.0211080932],
}


def _inputs(requires_grad: bool = False):
    z = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=requires_grad)
    p = torch.tensor(TEACHER, dtype=torch.float64)
    y = torch.tensor(TARGETS, dtype=torch.long)
    return z, p, y


def test_hand_values_are_self_consistent():
    """Re-derive the literals above from their formulas with `math` only (guards against typos)."""
    for (reading, r), want in EXPECTED_CE.items():
        for i in range(2):
            terms = [TEACHER[i][k] ** r * -math.log(Q[i][k]) for k in range(3)]
            got = sum(terms) if reading == "literal" else terms[TARGETS[i]]
            assert got == pytest.approx(want[i], abs=1e-9)
    for i in range(2):
        sq = sum(v * v for v in Q[i])
        for k in range(3):
            direct = sum((Q[i][j] - (j == k)) ** 2 for j in range(3)) / 3
            assert direct == pytest.approx(MSE_PER_CLASS[i][k], abs=1e-9)
            assert (sq - 2 * Q[i][k] + 1) / 3 == pytest.approx(direct, abs=1e-12)


@pytest.mark.parametrize("reading,r", sorted(EXPECTED_CE))
def test_ce_matches_hand_computation(reading, r):
    z, p, y = _inputs()
    got = blcl_loss(z, p, y, r=r, reading=reading, base="ce")
    assert got.shape == (2,)  # per-sample, not reduced
    assert got.tolist() == pytest.approx(EXPECTED_CE[(reading, r)], abs=1e-8)


@pytest.mark.parametrize("reading", ["literal", "label"])
def test_mse_matches_hand_computation(reading):
    z, p, y = _inputs()
    got = blcl_loss(z, p, y, r=1.5, reading=reading, base="mse")
    assert got.tolist() == pytest.approx(EXPECTED_MSE[(reading, 1.5)], abs=1e-8)
    # and the per-class MSE values themselves: with a one-hot teacher on class k and r=1, the literal
    # reading picks out exactly L(q, e_k)
    for k in range(3):
        onehot = torch.zeros(2, 3, dtype=torch.float64)
        onehot[:, k] = 1.0
        one = blcl_loss(z, onehot, y, r=1.0, reading="literal", base="mse")
        assert one.tolist() == pytest.approx([MSE_PER_CLASS[0][k], MSE_PER_CLASS[1][k]], abs=1e-9)


def test_float32_inputs_work():
    z, p, y = _inputs()
    got = blcl_loss(z.float(), p.float(), y, r=1.5, reading="literal", base="ce")
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx(EXPECTED_CE[("literal", 1.5)], abs=1e-5)


def test_paper_worked_example_sec_iv_b():
    """BLCL Sec. IV-B, binary, r = 1.5: teacher (0.9, 0.1) -> weights ~0.85 and ~0.03; (0.5, 0.5) -> ~0.35 each.

    With a uniform student (q = (1/2, 1/2)) every CE term is log 2, so loss / log 2 is the weight itself."""
    z = torch.zeros(3, 2, dtype=torch.float64)
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    w_label = blcl_loss(z, p, torch.tensor([0, 1, 0]), r=1.5, reading="label") / math.log(2)
    assert w_label[0].item() == pytest.approx(0.854, abs=5e-4)  # 0.9^1.5 = 0.85381
    assert w_label[1].item() == pytest.approx(0.0316, abs=5e-5)  # 0.1^1.5 = 0.03162
    assert w_label[2].item() == pytest.approx(0.354, abs=5e-4)  # 0.5^1.5 = 0.35355
    w_total = blcl_loss(z, p, torch.tensor([0, 0, 0]), r=1.5, reading="literal") / math.log(2)
    assert w_total[0].item() == pytest.approx(0.854 + 0.0316, abs=6e-4)
    assert w_total[2].item() == pytest.approx(2 * 0.354, abs=1e-3)
    # the paper's point: the easy example keeps a larger total weight than the difficult one
    assert w_total[0] > w_total[2]


def test_r_zero_literal_is_sum_of_all_class_ces():
    # r = 0: every weight is 1, so the literal reading is sum_k -log q_k
    z, p, y = _inputs()
    got = blcl_loss(z, p, y, r=0.0, reading="literal")
    want = [math.log(8) + math.log(4) + math.log(8 / 5), math.log(10 / 3) + math.log(10) + math.log(10 / 6)]
    assert got.tolist() == pytest.approx(want, abs=1e-9)


def test_teacher_probs_receive_no_gradient():
    z, _, y = _inputs(requires_grad=True)
    p = torch.tensor(TEACHER, dtype=torch.float64, requires_grad=True)
    for reading in ("literal", "label"):
        for base in ("ce", "mse"):
            z.grad = None
            blcl_loss(z, p, y, r=1.5, reading=reading, base=base).sum().backward()
            assert p.grad is None
            assert z.grad is not None and z.grad.abs().sum() > 0


def test_teacher_probs_from_a_graph_receive_no_gradient():
    """Teacher probabilities computed from teacher logits (as in BLCL.train_step) must not pull gradient back."""
    t_logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    z, _, y = _inputs(requires_grad=True)
    blcl_loss(z, torch.softmax(t_logits, 1), y, r=1.5, reading="literal").sum().backward()
    assert t_logits.grad is None


def test_student_gradient_label_reading_is_analytic():
    """d/dz [w * -log softmax(z)_y] = w * (softmax(z) - onehot(y)), with w = p_y^r a constant."""
    z, p, y = _inputs(requires_grad=True)
    r = 1.5
    blcl_loss(z, p, y, r=r, reading="label", base="ce").sum().backward()
    for i in range(2):
        w = TEACHER[i][TARGETS[i]] ** r
        want = [w * (Q[i][k] - (k == TARGETS[i])) for k in range(3)]
        assert z.grad[i].tolist() == pytest.approx(want, abs=1e-10)


def test_student_gradient_literal_reading_is_analytic():
    """d/dz sum_k w_k * -log q_k = (sum_k w_k) q - w."""
    z, p, y = _inputs(requires_grad=True)
    r = 1.5
    blcl_loss(z, p, y, r=r, reading="literal", base="ce").sum().backward()
    for i in range(2):
        w = [TEACHER[i][k] ** r for k in range(3)]
        want = [sum(w) * Q[i][k] - w[k] for k in range(3)]
        assert z.grad[i].tolist() == pytest.approx(want, abs=1e-10)


def test_invalid_reading_raises_naming_it():
    z, p, y = _inputs()
    with pytest.raises(ValueError, match="sideways"):
        blcl_loss(z, p, y, reading="sideways")


def test_invalid_base_raises_naming_it():
    z, p, y = _inputs()
    with pytest.raises(ValueError, match="hinge"):
        blcl_loss(z, p, y, reading="label", base="hinge")
    with pytest.raises(ValueError, match="hinge"):
        blcl_loss(z, p, y, reading="literal", base="hinge")


# ---- the method class, through the registry ----

def test_build_blcl_defaults_and_values():
    m = methods.build_method("blcl", {}, 10, 100)
    assert (m.cfg.r, m.cfg.reading, m.cfg.base, m.cfg.teacher_probs) == (1.5, "literal", "ce", "before_update")
    assert m.roles[0] == "student" and "teacher" in m.roles and m.reported == "student"
    m = methods.build_method("blcl", {"r": 2.0, "reading": "label", "base": "mse", "teacher_probs": "after_update"},
                             10, 100)
    assert (m.cfg.r, m.cfg.reading, m.cfg.base, m.cfg.teacher_probs) == (2.0, "label", "mse", "after_update")
    assert (m.num_classes, m.num_train) == (10, 100)


def test_build_blcl_unknown_parameter_raises_keyerror():
    with pytest.raises(KeyError, match="temperature"):
        methods.build_method("blcl", {"r": 1.5, "temperature": 2.0}, 10, 100)


def test_build_blcl_bad_reading_lists_allowed_values():
    with pytest.raises(ValueError) as e:
        methods.build_method("blcl", {"reading": "bogus"}, 10, 100)
    msg = str(e.value)
    assert "bogus" in msg and "literal" in msg and "label" in msg


def test_build_blcl_bad_base_lists_allowed_values():
    with pytest.raises(ValueError) as e:
        methods.build_method("blcl", {"base": "l1"}, 10, 100)
    msg = str(e.value)
    assert "l1" in msg and "'ce'" in msg and "'mse'" in msg


def test_unknown_method_raises_keyerror_listing_known():
    with pytest.raises(KeyError) as e:
        methods.build_method("coteaching", {}, 10, 100)
    assert "coteaching" in str(e.value) and "blcl" in str(e.value) and "erm" in str(e.value)
