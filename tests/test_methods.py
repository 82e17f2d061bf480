"""Registry-driven method checks (timm's tests/test_models.py pattern): every registered method trains through the
real engine, steps every trainable role and never a frozen one, and saves and restores its own state; plus the
functional cores of SPL, co-distillation and KD against hand computations, and the generic interface growth
(initial weights per (seed, role), validation split, epoch subsets)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from data import Splits
from engine import train
from engine.trainer import build_nets, split_validation
from fakes import FakeContext
from methods import Batch, build_method, config_dict, list_methods, make_config, method_class
from methods.codistill import codistill_loss
from methods.kd import kd_loss
from methods.spl import kept_count, spl_weights

CPU = torch.device("cpu")


def toy_splits(n_train=240, n_test=120, seed=0) -> Splits:
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.arange(n) % 3
        x = torch.randint(0, 60, (n, 1, 6, 6), generator=g)
        for c in range(3):
            x[y == c, :, :, 2 * c : 2 * c + 2] += 150
        return x.to(torch.uint8), y.long()

    x_tr, y_tr = make(n_train)
    x_te, y_te = make(n_test)
    return Splits(name="toy3", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, num_classes=3, kind="image")


MODEL = {"name": "mlp500", "hidden": 12, "activation": "relu"}


def toy_spec(method: dict, epochs=3, lr=0.05, val_size=60, seed=0, noise=None) -> dict:
    spec = {"seed": seed, "budget": "smoke",
            "data": {"dataset": "toy3", "noise": noise or {"kind": "none", "rate": 0.0}, "train_subset": None,
                     "test_subset": None, "val_size": val_size, "val_seed": 0},
            "recipe": {"epochs": epochs, "batch_size": 32, "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9},
                       "schedule": {"name": "constant"}, "augment": "none"},
            "model": MODEL, "method": method}
    frozen = method_class(method["name"]).frozen
    if frozen:
        spec["roles"] = {r: {"model": {**MODEL, "hidden": 20}} for r in frozen}
    return spec


def frozen_states(spec: dict, splits: Splits) -> dict:
    """A trained stand-in for every frozen role (what the runner restores from the teacher's checkpoint)."""
    out = {}
    for role, block in spec.get("roles", {}).items():
        t = train({**toy_spec({"name": "erm"}, epochs=2), "model": block["model"]}, splits, CPU, keep_state=True)
        out[role] = t["state"]["nets"]["model"]
    return out


def full_method(name: str) -> dict:
    return {"name": name, **config_dict(make_config(name, {}))}


@pytest.fixture(scope="module")
def splits():
    return toy_splits()


@pytest.mark.parametrize("name", list_methods())
def test_every_method_trains_steps_its_roles_and_restores_state(name, splits):
    spec = toy_spec(full_method(name))
    states = frozen_states(spec, splits)
    cls = method_class(name)
    torch.manual_seed(spec["seed"])
    before = build_nets(build_method(name, {}, 3, 180), spec, splits, CPU, states)
    out = train(spec, splits, CPU, role_states=states, keep_state=True)
    assert out["status"] == "ok", out
    assert all(math.isfinite(h["train_loss"]) for h in out["history"])
    assert out["extras"]["num_val"] == 60 and out["extras"]["num_train"] == 180
    trained = out["state"]["nets"]
    assert set(trained) == set(cls.roles) - set(cls.frozen)
    for role, sd in trained.items():  # every trainable role moved
        assert any(not torch.equal(sd[k], v) for k, v in before[role].state_dict().items()), role
    for role in cls.frozen:  # frozen roles are restored and never trained: their test accuracy is the teacher's
        assert f"{role}_final_test_acc" in out["extras"]
        assert not any(f"{role}_test_acc" in h for h in out["history"])
    # the method's own state round-trips through a fresh instance, set up as a resumed run would be
    fresh = build_method(name, {k: v for k, v in spec["method"].items() if k != "name"}, 3, 180)
    x = splits.x_train.float() / 255
    fresh.setup(FakeContext(before, x[:180], splits.y_train[:180], 3, x[180:], splits.y_train[180:],
                            frozen=cls.frozen))
    fresh.load_state_dict(out["state"]["method"])
    assert _equal(fresh.state_dict(), out["state"]["method"])


def _equal(a, b) -> bool:
    """Deep equality of nested state (dicts, lists, tensors, numbers)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("name", list_methods())
def test_every_method_is_deterministic(name, splits):
    spec = toy_spec(full_method(name), epochs=2)
    states = frozen_states(spec, splits)
    a = train(spec, splits, CPU, role_states=states)
    b = train(spec, splits, CPU, role_states=states)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])


def test_frozen_role_without_a_checkpoint_is_refused(splits):
    with pytest.raises(ValueError, match="frozen.*checkpoint"):
        train(toy_spec(full_method("kd")), splits, CPU)


# ---------------- initial weights per (seed, role) ----------------


def _init_nets(name: str, splits, seed=0):
    spec = toy_spec(full_method(name), seed=seed)
    states = frozen_states(spec, splits)
    torch.manual_seed(seed)
    return build_nets(build_method(name, {}, 3, 180), spec, splits, CPU, states)


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_pairing_of_initial_weights_across_methods(splits):
    erm, blcl, co = _init_nets("erm", splits), _init_nets("blcl", splits), _init_nets("codistill", splits)
    sl, dp, spl = _init_nets("superloss", splits), _init_nets("dataparams", splits), _init_nets("spl", splits)
    for other in (blcl["student"], co["peer1"], sl["model"], dp["model"], spl["model"]):
        assert _same(erm["model"], other)
    assert _same(blcl["teacher"], co["peer2"])  # the second network of the main stream
    assert not _same(blcl["student"], blcl["teacher"])
    assert not _same(erm["model"], _init_nets("erm", splits, seed=1)["model"])


def test_a_role_in_its_own_stream_changes_no_other_role(splits):
    # KD's student is ERM's model although KD builds a teacher too; the teacher's own stream is seeded by
    # (seed, "teacher"), so building it leaves the global generator (dropout, later roles) untouched
    kd = _init_nets("kd", splits)
    assert _same(kd["student"], _init_nets("erm", splits)["model"])
    spec = toy_spec(full_method("kd"))
    states = frozen_states(spec, splits)
    after = {}
    for name, st in (("erm", None), ("kd", states)):
        torch.manual_seed(0)
        build_nets(build_method(name, {}, 3, 180), spec, splits, CPU, st)
        after[name] = torch.rand(3)  # the next draws of the global generator (dropout, later roles)
    assert torch.equal(after["erm"], after["kd"])


# ---------------- validation split and epoch subsets ----------------


def test_validation_split_is_disjoint_fixed_and_seeded():
    keep, val = split_validation(100, 20, seed=0)
    assert len(val) == 20 and len(keep) == 80 and not set(keep.tolist()) & set(val.tolist())
    assert torch.equal(split_validation(100, 20, seed=0)[1], val)
    assert not torch.equal(split_validation(100, 20, seed=1)[1], val)
    keep0, val0 = split_validation(100, None, seed=0)
    assert val0 is None and torch.equal(keep0, torch.arange(100))
    with pytest.raises(ValueError, match="val_size"):
        split_validation(10, 10, seed=0)


class _Half(method_class("erm")):
    """ERM on the first half of the training set only (an epoch subset, as curricula return)."""

    name = "_half_test_only"

    def epoch_indices(self, epoch, ctx):
        self.progress_seen = []
        return torch.arange(ctx.num_train // 2)

    def train_step(self, batch, ctx):
        assert int(batch.idx.max()) < ctx.num_train // 2
        self.progress_seen.append(ctx.progress)
        return super().train_step(batch, ctx)


def test_epoch_subset_statistics_and_progress(monkeypatch, splits):
    from methods import registry

    monkeypatch.setitem(registry._METHODS, _Half.name, _Half)
    spec = toy_spec({"name": _Half.name}, epochs=1, lr=0.0, val_size=None)  # lr 0: the weights never move
    out = train(spec, splits, CPU)
    assert out["status"] == "ok"
    # the epoch statistics average over the 120 samples used, not the 240 of the set (a mean over all 240 would
    # count the 120 unseen samples' zero buffer entries and halve the CE)
    torch.manual_seed(0)
    net = build_nets(build_method("erm", {}, 3, 240), spec, splits, CPU)["model"]
    x = splits.x_train[:120].float() / 255
    with torch.no_grad():
        logits = net(x)
    h = out["history"][0]
    assert h["train_ce"] == pytest.approx(F.cross_entropy(logits, splits.y_train[:120]).item(), rel=1e-5)
    assert h["train_acc"] == pytest.approx(100 * (logits.argmax(1) == splits.y_train[:120]).float().mean().item())


def test_progress_runs_over_the_epochs_with_a_subset():
    splits = toy_splits()
    seen = []

    class Probe(_Half):
        name = "_probe_test_only"

        def train_step(self, batch, ctx):
            seen.append(ctx.progress)
            return method_class("erm").train_step(self, batch, ctx)

    from methods import registry

    registry._METHODS[Probe.name] = Probe
    try:
        train(toy_spec({"name": Probe.name}, epochs=2, val_size=None), splits, CPU)
    finally:
        del registry._METHODS[Probe.name]
    # 120 samples per epoch in batches of 32: 4 steps an epoch, progress (epoch + i/120) / 2
    assert seen == pytest.approx([0.0, 32 / 240, 64 / 240, 96 / 240, 0.5, 0.5 + 32 / 240, 0.5 + 64 / 240,
                                  0.5 + 96 / 240])


# ---------------- SPL ----------------


@pytest.mark.parametrize("m", [1, 2, 7, 20, 128])
def test_spl_kept_counts_along_the_schedule(m):
    assert kept_count(m, 0.0) == 1  # K = M - 1 at the start
    assert kept_count(m, 1.0) == m  # K = 0 at the end
    ps = [i / 1000 for i in range(1001)]
    counts = [kept_count(m, p) for p in ps]
    assert counts == sorted(counts)  # never falls
    for p, c in zip(ps, counts):  # K = ceil((M - 1)(1 - p)): linear in p
        assert c == m - math.ceil((m - 1) * (1 - p) - 1e-9)


@pytest.mark.parametrize("m", [2, 7, 128])
def test_spl_ramp_reaches_the_whole_batch_at_its_fraction(m):
    """ramp 0.5: K falls from M - 1 to 0 over the first half of training, K = ceil((M - 1)(1 - p / 0.5)), then 0."""
    assert kept_count(m, 0.0, 0.5) == 1 and kept_count(m, 0.5, 0.5) == m and kept_count(m, 0.8, 0.5) == m
    for p in [i / 100 for i in range(51)]:
        assert kept_count(m, p, 0.5) == m - math.ceil((m - 1) * (1 - p / 0.5) - 1e-9)
        assert kept_count(m, p / 2, 0.5) == kept_count(m, p, 1.0)  # the same line, twice as fast


def test_spl_ramp_is_a_later_reading_outside_the_default_spec():
    """The default ramp (1.0, the reading every earlier SPL run used) stays out of the spec, so those runs keep
    their ids; any other ramp enters it; a ramp outside (0, 1] is refused, naming the key."""
    from methods import config_dict, make_config

    assert config_dict(make_config("spl", {"normalize": "kept"})) == {"normalize": "kept"}
    assert config_dict(make_config("spl", {"normalize": "kept", "ramp": 1.0})) == {"normalize": "kept"}
    assert config_dict(make_config("spl", {"ramp": 0.5})) == {"normalize": "kept", "ramp": 0.5}
    for bad in (0, 1.5, -0.1, True, "half"):
        with pytest.raises(ValueError, match="ramp="):
            make_config("spl", {"ramp": bad})


def test_spl_ramp_changes_the_kept_samples_in_a_step():
    losses = torch.tensor([0.5, 3.0, 0.1, 2.0, 1.0])
    assert spl_weights(losses, 0.25, 0.5).tolist() == [1, 0, 1, 0, 1]  # as progress 0.5 of the whole-training line
    assert spl_weights(losses, 0.5, 0.5).tolist() == [1, 1, 1, 1, 1]


def test_spl_weights_keep_the_smallest_losses():
    losses = torch.tensor([0.5, 3.0, 0.1, 2.0, 1.0])
    assert spl_weights(losses, 0.0).tolist() == [0, 0, 1, 0, 0]
    assert spl_weights(losses, 0.5).tolist() == [1, 0, 1, 0, 1]  # K = ceil(4 * 0.5) = 2 dropped
    assert spl_weights(losses, 1.0).tolist() == [1, 1, 1, 1, 1]


class _Capture(FakeContext):
    def update(self, role, loss):
        self.losses = getattr(self, "losses", []) + [(role, loss.detach())]
        super().update(role, loss)


def _linear_ctx(roles=("model",), seed=0, frozen=()):
    torch.manual_seed(seed)
    nets = {r: torch.nn.Linear(4, 3) for r in roles}
    x = torch.randn(5, 4)
    return _Capture(nets, x, torch.tensor([0, 1, 2, 0, 1]), 3, frozen=frozen), x


@pytest.mark.parametrize("normalize,denom", [("kept", 3.0), ("batch", 5.0)])
def test_spl_normaliser(normalize, denom):
    ctx, x = _linear_ctx()
    ctx.progress = 0.5  # K = ceil(4 * 0.5) = 2 of 5 dropped: 3 kept
    y = ctx.train_labels
    ce = F.cross_entropy(ctx.nets["model"](x), y, reduction="none").detach()
    m = build_method("spl", {"normalize": normalize}, 3, 5)
    out = m.train_step(Batch(x=x, y=y, idx=torch.arange(5)), ctx)
    kept = ce.sort().values[:3]
    assert ctx.losses[0][1].item() == pytest.approx(kept.sum().item() / denom, rel=1e-6)
    assert int((out.loss > 0).sum()) == 3


# ---------------- co-distillation ----------------


def test_codistill_loss_hand_computation_and_no_gradient_to_the_peer():
    logits = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
    peer = torch.tensor([[0.0, 2.0, 0.0]], requires_grad=True)
    y = torch.tensor([0])
    p, q = F.softmax(logits, 1), F.softmax(peer, 1)
    want = -torch.log(p[0, 0]) + (q * (q.log() - p.log())).sum()  # CE + KL(peer || self)
    got = codistill_loss(logits, peer, y)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got.sum().backward()
    assert peer.grad is None  # the peer's probabilities are a constant target
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_codistill_steps_both_peers_against_pre_update_predictions():
    ctx, x = _linear_ctx(("peer1", "peer2"))
    a0, b0 = ctx.nets["peer1"](x).detach(), ctx.nets["peer2"](x).detach()
    y = ctx.train_labels
    m = build_method("codistill", {}, 3, 5)
    m.train_step(Batch(x=x, y=y, idx=torch.arange(5)), ctx)
    assert ctx.updates == ["peer1", "peer2"]
    # peer two's loss is computed against peer one's logits from before peer one's step
    assert ctx.losses[1][1].item() == pytest.approx(codistill_loss(b0, a0, y).mean().item(), rel=1e-6)


# ---------------- KD ----------------


def test_kd_loss_T2_scaling_and_kl_direction_by_hand():
    s = torch.tensor([[2.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 3.0, 0.0]])
    y = torch.tensor([0])
    T, beta = 3.0, 0.4
    ps = torch.softmax(s / T, 1)
    pt = torch.softmax(t / T, 1)
    kl_t_s = (pt * (pt.log() - ps.log())).sum()  # KL(teacher || student), Hinton's direction
    ce = -torch.log_softmax(s, 1)[0, 0]
    want = (1 - beta) * ce + beta * T * T * kl_t_s
    got = kd_loss(s, t, y, T=T, beta=beta)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    kl_s_t = (ps * (ps.log() - pt.log())).sum()
    assert abs(got.item() - ((1 - beta) * ce + beta * T * T * kl_s_t).item()) > 1e-3  # the other direction differs
    assert abs(got.item() - ((1 - beta) * ce + beta * kl_t_s).item()) > 1e-3  # without T^2 differs
    # the soft term's gradient w.r.t. the student logits is beta * T * (p_s - p_t) (Hinton Sec. 2)
    g = torch.autograd.grad(kd_loss(s, t, y, T=T, beta=1.0).sum(), s)[0]
    assert torch.allclose(g, T * (ps - pt).detach(), atol=1e-6)


def test_kd_steps_only_the_student():
    ctx, x = _linear_ctx(("student", "teacher"), frozen=("teacher",))
    t_before = {k: v.clone() for k, v in ctx.nets["teacher"].state_dict().items()}
    m = build_method("kd", {}, 3, 5)
    m.train_step(Batch(x=x, y=ctx.train_labels, idx=torch.arange(5)), ctx)
    assert ctx.updates == ["student"]
    assert all(torch.equal(v, ctx.nets["teacher"].state_dict()[k]) for k, v in t_before.items())


@pytest.mark.parametrize("name", list_methods())
def test_a_methods_own_ce_is_the_ce_of_its_logits(name, splits, monkeypatch):
    """The engine takes `StepOut.ce` for its CE statistics instead of computing them again: where a method gives
    it, it must be the per-sample CE of the reported logits against the batch labels."""
    cls = method_class(name)
    real = cls.train_step

    def spy(self, batch, ctx):
        out = real(self, batch, ctx)
        if out.ce is not None:
            expect = F.cross_entropy(out.logits.float(), batch.y, reduction="none")
            torch.testing.assert_close(out.ce.float(), expect)
        return out

    monkeypatch.setattr(cls, "train_step", spy)
    spec = toy_spec(full_method(name), epochs=1)
    assert train(spec, splits, CPU, role_states=frozen_states(spec, splits))["status"] == "ok"
