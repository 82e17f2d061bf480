"""Engine: augmentation, quartile shares, optimizer/schedule registries, and the training loop on a toy problem."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from data import Splits
from engine import AUGMENTS, quartile_shares, train
from engine.augment import random_crop, random_flip
from engine.optim import build_optimizer, build_schedule

# ---------------- augmentation ----------------


def _distinct_images(n=6, c=2, h=8, w=8, seed=0):
    # continuous random values: two different windows of the padded image can never coincide
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_random_crop_shape_dtype_unchanged():
    x = _distinct_images(5, 3, 32, 32)
    out = random_crop(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype


def test_random_crop_is_a_window_of_the_padded_input():
    pad = 4
    x = _distinct_images(12, 2, 8, 8)
    out = random_crop(x, torch.Generator().manual_seed(1), pad=pad)
    xp = F.pad(x, (pad, pad, pad, pad))
    offsets = []
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(out[i], xp[i, :, dy : dy + 8, dx : dx + 8])]
        assert len(matches) == 1, f"sample {i}: {matches}"  # exactly one of the 81 offsets, same for all channels
        offsets.append(matches[0])
    assert len(set(offsets)) > 3  # offsets are drawn per sample, not one for the whole batch


def test_random_crop_offsets_cover_the_range():
    # 1x1 images with pad 4: the output is x itself iff offset (4, 4), else 0; over 2000 samples the
    # centre offset (prob 1/81) must appear, but far from always
    x = torch.ones(2000, 1, 1, 1)
    out = random_crop(x, torch.Generator().manual_seed(0), pad=4)
    hits = int(out.sum())
    assert 0 < hits < 100  # expected ~24.7


def test_random_crop_deterministic_for_fixed_generator():
    x = _distinct_images(16, 3, 8, 8)
    a = random_crop(x, torch.Generator().manual_seed(5))
    b = random_crop(x, torch.Generator().manual_seed(5))
    c = random_crop(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_random_flip_flips_about_half():
    # n = 2000, each flipped with p = 0.5: sd of the fraction ~0.011; tolerance 0.05 ~ 4.5 sd
    x = _distinct_images(2000, 1, 4, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same ^ flipped).all())  # each sample is either untouched or mirrored left-right
    assert abs(flipped.float().mean().item() - 0.5) < 0.05
    again = random_flip(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_augment_registry():
    assert set(AUGMENTS) == {"none", "crop", "crop_flip"}
    x = _distinct_images(4, 1, 8, 8)
    assert AUGMENTS["none"](x, torch.Generator()) is x


# ---------------- quartile shares ----------------

def test_quartile_shares_hand_example():
    shares = quartile_shares(torch.arange(1, 9, dtype=torch.float32))
    assert shares == pytest.approx([3 / 36, 7 / 36, 11 / 36, 15 / 36], abs=1e-6)
    # order of the input does not matter: the losses are sorted, easiest quartile first
    perm = torch.tensor([7.0, 2.0, 5.0, 1.0, 8.0, 3.0, 6.0, 4.0])
    assert quartile_shares(perm) == pytest.approx([3 / 36, 7 / 36, 11 / 36, 15 / 36], abs=1e-6)


def test_quartile_shares_sum_to_one_and_increase():
    x = torch.rand(1001, generator=torch.Generator().manual_seed(0))
    shares = quartile_shares(x)
    assert len(shares) == 4
    assert sum(shares) == pytest.approx(1.0, abs=1e-5)
    assert shares == sorted(shares)


def test_quartile_shares_degenerate():
    assert quartile_shares(torch.zeros(10)) == [0.25] * 4
    assert quartile_shares(torch.ones(8)) == pytest.approx([0.25] * 4)


# ---------------- optimizers and schedules ----------------

def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


def test_build_optimizer_values():
    opt = build_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}, _params())
    assert isinstance(opt, torch.optim.SGD)
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"]) == (0.1, 0.9, 5e-4)
    assert isinstance(build_optimizer({"name": "adadelta", "rho": 0.95}, _params()), torch.optim.Adadelta)


def test_build_optimizer_bad_name_or_option():
    with pytest.raises(ValueError, match="rmsprop"):
        build_optimizer({"name": "rmsprop", "lr": 0.1}, _params())
    with pytest.raises(ValueError, match="nesterovv"):
        build_optimizer({"name": "sgd", "lr": 0.1, "nesterovv": True}, _params())


def test_build_schedule_bad_name_or_option():
    opt = build_optimizer({"name": "sgd", "lr": 0.1}, _params())
    with pytest.raises(ValueError, match="steplr"):
        build_schedule({"name": "steplr"}, opt, 10)
    with pytest.raises(ValueError, match="gama"):
        build_schedule({"name": "multistep", "milestones": [80, 120], "gama": 0.1}, opt, 160)


def _lrs(schedule_cfg, epochs, lr=0.1):
    opt = build_optimizer({"name": "sgd", "lr": lr, "momentum": 0.9}, _params())
    sched = build_schedule(schedule_cfg, opt, epochs)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])  # lr used during this epoch
        opt.step()
        sched.step()
    out.append(opt.param_groups[0]["lr"])
    return out


def test_multistep_schedule_values():
    lrs = _lrs({"name": "multistep", "milestones": [80, 120]}, 160)
    assert lrs[0] == pytest.approx(0.1) and lrs[79] == pytest.approx(0.1)
    assert lrs[80] == pytest.approx(0.01) and lrs[119] == pytest.approx(0.01)  # after 80 epochs: x0.1
    assert lrs[120] == pytest.approx(0.001) and lrs[160] == pytest.approx(0.001)  # after 120 epochs: x0.01


def test_other_schedules_values():
    assert _lrs({"name": "constant"}, 5) == pytest.approx([0.1] * 6)
    cos = _lrs({"name": "cosine"}, 10)
    assert cos[5] == pytest.approx(0.05) and cos[10] == pytest.approx(0.0, abs=1e-12)
    assert _lrs({"name": "exponential", "gamma": 0.5}, 3) == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    # periodic cosine (SGDR): halfway down after 2 of 4 epochs, back to the start at each restart
    sgdr = _lrs({"name": "cosine_restarts", "period": 4}, 9)
    assert sgdr[0] == sgdr[4] == sgdr[8] == pytest.approx(0.1) and sgdr[2] == pytest.approx(0.05)
    assert sgdr[3] < sgdr[2] < sgdr[1] < sgdr[0]


# ---------------- the training loop ----------------

def _toy_splits(n_train=256, n_test=128, seed=0):
    """2-class 1x4x4 uint8 images: class 0 bright on the left half, class 1 bright on the right half, noisy."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.arange(n) % 2
        x = torch.randint(0, 60, (n, 1, 4, 4), generator=g)
        left = y == 0
        x[left, :, :, :2] += 150
        x[~left, :, :, 2:] += 150
        return x.to(torch.uint8), y.long()

    x_tr, y_tr = make(n_train)
    x_te, y_te = make(n_test)
    return Splits(name="toy", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, num_classes=2, kind="image")


def _spec(method=None, epochs=3, lr=0.1, noise=None, schedule=None):
    return {
        "seed": 0,
        "budget": "smoke",
        "data": {"dataset": "toy", "noise": noise or {"kind": "none", "rate": 0.0}, "train_subset": None,
                 "test_subset": None},
        "recipe": {"epochs": epochs, "batch_size": 32, "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9},
                   "schedule": schedule or {"name": "constant"}, "augment": "none"},
        "model": {"name": "mlp500", "hidden": 16, "activation": "relu"},
        "method": method or {"name": "erm"},
    }


BLCL = {"name": "blcl", "r": 1.5, "reading": "label", "base": "ce", "teacher_probs": "before_update"}
HISTORY_KEYS = {"epoch", "lr", "train_loss", "train_ce", "train_acc", "test_loss", "test_acc", "quartile_share",
                "quartile_share_ce", "seconds", "train_seconds", "quartile_share_by_ce"}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def erm_runs():
    splits = _toy_splits()
    return train(_spec(), splits, CPU), train(_spec(), splits, CPU)


def _strip_seconds(history):
    return [{k: v for k, v in rec.items() if k not in ("seconds", "train_seconds")} for rec in history]


def test_train_erm_history_and_accuracy(erm_runs):
    res, _ = erm_runs
    assert res["status"] == "ok"
    hist = res["history"]
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    for rec in hist:
        assert set(rec) == HISTORY_KEYS
        assert rec["lr"] == pytest.approx(0.1)
        assert len(rec["quartile_share"]) == 4 and sum(rec["quartile_share"]) == pytest.approx(1.0, abs=1e-5)
        assert rec["quartile_share_by_ce"] == pytest.approx(rec["quartile_share"], abs=1e-6)  # ERM: objective = CE
        assert rec["train_loss"] == pytest.approx(rec["train_ce"], rel=1e-5)  # ERM's objective is the CE
        assert 0.0 <= rec["train_acc"] <= 100.0 and rec["seconds"] >= 0
    assert hist[-1]["test_acc"] > 90.0
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert res["final_test_acc"] == hist[-1]["test_acc"]
    assert res["best_test_acc"] == max(r["test_acc"] for r in hist)
    assert hist[res["best_epoch"] - 1]["test_acc"] == res["best_test_acc"]
    ex = res["extras"]
    assert ex["reported_role"] == "model" and ex["roles"] == ["model"]
    assert ex["parameters_per_network"] == 16 * 16 + 16 + 16 * 2 + 2
    assert (ex["num_train"], ex["num_test"]) == (256, 128)
    assert ex["noisy_fraction"] == 0.0


def test_train_is_deterministic(erm_runs):
    a, b = erm_runs
    assert _strip_seconds(a["history"]) == _strip_seconds(b["history"])
    assert a["extras"] == b["extras"]


def test_train_different_seed_differs(erm_runs):
    spec = _spec()
    spec["seed"] = 1
    other = train(spec, _toy_splits(), CPU)
    assert _strip_seconds(other["history"]) != _strip_seconds(erm_runs[0]["history"])


def test_train_blcl_history_carries_teacher():
    res = train(_spec(method=dict(BLCL)), _toy_splits(), CPU)
    hist = res["history"]
    assert len(hist) == 3
    for rec in hist:
        assert set(rec) == HISTORY_KEYS | {"teacher_loss", "teacher_test_loss", "teacher_test_acc"}
        assert rec["teacher_loss"] > 0
        # the student's training objective is the weighted CE, p_y^r * CE <= CE
        assert rec["train_loss"] <= rec["train_ce"] + 1e-6
    assert res["extras"]["reported_role"] == "student"
    assert res["extras"]["roles"] == ["student", "teacher"]
    assert res["extras"]["teacher_final_test_acc"] == hist[-1]["teacher_test_acc"]
    assert hist[-1]["teacher_test_acc"] > 90.0
    assert hist[-1]["test_acc"] > 90.0


def test_erm_model_and_blcl_student_start_from_identical_weights():
    # lr = 0: nothing moves, so after one epoch each network is evaluated at its initial weights. ERM's model
    # and BLCL's student (built first) must coincide for the same seed; the teacher must not.
    splits = _toy_splits()
    erm = train(_spec(epochs=1, lr=0.0), splits, CPU)["history"][0]
    blcl = train(_spec(method=dict(BLCL), epochs=1, lr=0.0), splits, CPU)["history"][0]
    assert blcl["test_loss"] == erm["test_loss"]
    assert blcl["test_acc"] == erm["test_acc"]
    assert blcl["teacher_test_loss"] != blcl["test_loss"]


def test_train_schedule_lr_recorded_per_epoch():
    res = train(_spec(schedule={"name": "multistep", "milestones": [1, 2], "gamma": 0.1}), _toy_splits(), CPU)
    assert [r["lr"] for r in res["history"]] == pytest.approx([0.1, 0.01, 0.001])


def test_train_with_label_noise_reports_noisy_fraction():
    res = train(_spec(noise={"kind": "symmetric", "rate": 0.25}, epochs=1), _toy_splits(), CPU)
    assert res["extras"]["noisy_fraction"] == 0.25  # exactly round(0.25 * 256) = 64 flipped of 256


def test_quartile_shares_ranked_by_another_difficulty():
    # objective 4,3,2,1 on samples whose difficulty (CE) ranks them 1,2,3,4: the easiest quarter by CE
    # carries the largest objective (what BLCL Fig. 6 shows for easy examples)
    loss = torch.tensor([4.0, 3.0, 2.0, 1.0])
    ce = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert quartile_shares(loss, ce) == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert quartile_shares(loss) == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_crop_pads_with_black_before_normalisation():
    from engine.trainer import Prepared, _normalizer

    x = torch.zeros(8, 1, 6, 6, dtype=torch.uint8)  # an all-black image
    norm = _normalizer([0.5, 0.25], 1, CPU)
    data = Prepared(x, torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long),
                    torch.zeros(8, dtype=torch.bool), x, torch.zeros(8, dtype=torch.long), "image", norm)
    out = data.inputs(x, AUGMENTS["crop"], torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.full_like(out, -2.0))  # padding is black too: (0 - 0.5) / 0.25


def test_per_channel_normalisation():
    from engine.trainer import _normalizer

    mean, std = _normalizer([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]], 3, CPU)
    assert mean.shape == (1, 3, 1, 1) and mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.parametrize("packed", [1, 2])
@pytest.mark.parametrize("keep_logits", [True, False])
def test_per_sample_statistics_belong_to_their_samples(packed, keep_logits, monkeypatch):
    """With lr = 0 the network never changes, so the CE the engine records for sample i (snapshot `ce_1`, written
    by position in the epoch and scattered back at its end) must be the CE of the initial network on sample i
    with its (noisy) training label, computed here directly; 250 = 7 x 32 + 26 leaves a partial last batch. Both
    ways: from the epoch's kept logits at its end, and per step (logits too many to keep)."""
    import engine.stats
    from engine.trainer import prepare, train_group
    from models import create_model

    if not keep_logits:
        monkeypatch.setattr(engine.stats, "LOGITS_KEPT_MAX", 0)

    splits = _toy_splits(n_train=250)
    sp = _spec(epochs=1, lr=0.0, noise={"kind": "symmetric", "rate": 0.3})
    specs = [dict(sp, seed=s) for s in range(packed)]
    outs = train_group(specs, splits, CPU, keep_state=True, snapshot_epochs=[{1}] * packed)
    for s, out in zip(specs, outs):
        net = create_model("mlp500", 2, (1, 4, 4), None, hidden=16, activation="relu")
        net.load_state_dict(out["state"]["nets"]["model"])
        data = prepare(splits, s["data"], s["recipe"], s["seed"], CPU)
        with torch.no_grad():
            ce = F.cross_entropy(net(data.inputs(data.x_train)), data.y_train, reduction="none")
        torch.testing.assert_close(out["snapshots"]["ce_1"], ce, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out["snapshots"]["loss_1"], ce, rtol=1e-5, atol=1e-6)  # ERM: objective = CE
        acc = 100.0 * (net(data.inputs(data.x_train)).argmax(1) == data.y_train).float().mean().item()
        assert out["history"][0]["train_acc"] == pytest.approx(acc, abs=1e-6)
    if packed == 2:
        assert not torch.equal(outs[0]["snapshots"]["ce_1"], outs[1]["snapshots"]["ce_1"])
