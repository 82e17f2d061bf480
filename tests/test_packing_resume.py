"""Issue 11: packed runs equal unpacked ones; a run killed with SIGKILL resumes from its mid-run checkpoint and
ends with the same JSON as an uninterrupted run (apart from timings); the hot loop skips work it need not do."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from benchmarks.run.runner import run_plans
from benchmarks.targets.loader import load_targets
from data import load_dataset
from engine.options import CPU_COMPILE_MIN_STEPS, EngineOptions
from engine.packing import PackedNet
from engine.trainer import group_key, pack_decline_reason, train, train_group
from methods import build_method, list_methods
from models import create_model

CPU = torch.device("cpu")
RECIPE = {"epochs": 2, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9,
                                                         "weight_decay": 5e-4},
          "schedule": {"name": "multistep", "milestones": [1]}, "augment": "crop", "normalize": [0.13, 0.31]}


def spec(seed, method, model, rate=0.2, subset=192, **data):
    return {"seed": seed, "method": method, "model": model, "recipe": RECIPE,
            "data": {"dataset": "mnist", "train_subset": subset, "test_subset": 128,
                     "noise": {"kind": "symmetric", "rate": rate}, **data}}


@pytest.fixture(scope="module")
def mnist(data_root):
    return load_dataset("mnist", data_root, download=False)


def packable_methods():
    return [m for m in list_methods() if build_method(m, {}, 10, 1).packable]


def teacher_states(seeds, model):
    out = []
    for s in seeds:
        torch.manual_seed(100 + s)
        out.append({"teacher": create_model(model["name"], 10, (1, 28, 28), None).state_dict()})
    return out


def test_every_method_declares_whether_it_packs():
    assert {"erm", "blcl", "codistill", "kd", "superloss"} <= set(packable_methods())
    for name in ("spl", "dataparams", "dcd", "mekd"):
        assert not build_method(name, {}, 10, 1).packable, name
    assert not build_method("superloss", {"tau": "ema"}, 10, 1).packable  # an EMA over the whole batch


@pytest.mark.parametrize("name", ["erm", "blcl", "codistill", "kd", "superloss", "erm_mse"])
def test_packed_runs_equal_unpacked_runs(mnist, name):
    """Three seeds in one packed network: first-epoch losses within float tolerance, accuracies equal."""
    model = {"name": "mlp500"}
    specs = [spec(s, {"name": name}, model) for s in (0, 1, 2)]
    states = teacher_states((0, 1, 2), model) if name == "kd" else [None] * 3
    single = [train(sp, mnist, CPU, role_states=st) for sp, st in zip(specs, states)]
    packed = train_group(specs, mnist, CPU, role_states=states)
    for a, b in zip(single, packed):
        for ha, hb in zip(a["history"], b["history"]):
            assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-5, abs=1e-6)
            assert hb["train_acc"] == pytest.approx(ha["train_acc"], abs=1.0)
        assert b["final_test_acc"] == pytest.approx(a["final_test_acc"], abs=1.0)
        assert b["engine"]["pack"] == 3 and a["engine"]["pack"] == 1
    assert len({round(r["history"][0]["train_loss"], 6) for r in packed}) == 3  # each slot is its own seed


def test_packed_per_sample_statistics_land_on_their_samples(mnist):
    """Per-step losses, CEs and logs are written by position in the epoch and scattered to their samples at the
    epoch's end: a packed slot's per-sample snapshots equal its unpacked run's, with a last partial batch
    (200 = 6 x 32 + 8) and a method whose objective is not its CE (BLCL, per-sample logs)."""
    specs = [spec(s, {"name": "blcl"}, {"name": "mlp500"}, subset=200) for s in (0, 1)]
    single = [train(sp, mnist, CPU, snapshot_epochs={1, 2}) for sp in specs]
    packed = train_group(specs, mnist, CPU, snapshot_epochs=[{1, 2}, {1, 2}])
    for a, b in zip(single, packed):
        for key in ("loss_1", "ce_1", "loss_2", "ce_2"):
            torch.testing.assert_close(b["snapshots"][key], a["snapshots"][key], rtol=1e-4, atol=1e-5)
        assert not torch.equal(a["snapshots"]["loss_1"], a["snapshots"]["ce_1"])  # the objective is not the CE
        assert (a["snapshots"]["loss_1"] > 0).all()  # every sample was written
        for ha, hb in zip(a["history"], b["history"]):
            for key in ["train_acc", "train_ce", "teacher_loss", "quartile_share", "quartile_share_by_ce"]:
                assert hb[key] == pytest.approx(ha[key], rel=1e-4, abs=1e-5), key
    assert not torch.equal(single[0]["snapshots"]["loss_1"], single[1]["snapshots"]["loss_1"])


def test_epoch_sequence_is_each_steps_batches_slot_major():
    from engine.trainer import epoch_sequence

    orders = [torch.tensor([3, 0, 4, 1, 2]), torch.tensor([1, 2, 0, 4, 3])]
    seq = epoch_sequence(orders, 2, 5)
    # step 0: slot 0's [3, 0], slot 1's [1, 2] + 5; step 1: [4, 1], [0, 4] + 5; step 2 (partial): [2], [3] + 5
    assert seq.tolist() == [3, 0, 6, 7, 4, 1, 5, 9, 2, 8]
    assert epoch_sequence(orders[:1], 2, 5) is orders[0]


def test_packed_batchnorm_network_equals_unpacked(mnist):
    specs = [spec(s, {"name": "erm"}, {"name": "resnet8"}, subset=96) for s in (0, 1)]
    single = [train(sp, mnist, CPU) for sp in specs]
    packed = train_group(specs, mnist, CPU)
    for a, b in zip(single, packed):
        assert b["history"][0]["train_loss"] == pytest.approx(a["history"][0]["train_loss"], rel=1e-4)
        assert b["history"][-1]["test_loss"] == pytest.approx(a["history"][-1]["test_loss"], rel=1e-3)


def test_packed_slot_state_is_the_unpacked_network_state():
    torch.manual_seed(0)
    nets = [create_model("resnet8", 10, (1, 28, 28), None) for _ in range(2)]
    packed = PackedNet(nets)
    x = torch.randn(6, 1, 28, 28)
    packed.eval()
    out = packed(torch.cat([x, x]))
    for k, net in enumerate(nets):
        assert packed.slot_state_dict(k).keys() == net.state_dict().keys()
        torch.testing.assert_close(out[6 * k : 6 * (k + 1)], net.eval()(x), rtol=1e-4, atol=1e-5)


def test_packing_declines_what_it_cannot_reproduce(mnist):
    mlp = {"name": "mlp500"}
    for method in ({"name": "spl"}, {"name": "dataparams"}, {"name": "superloss", "tau": "ema"}):
        assert "declines packing" in pack_decline_reason(spec(0, method, mlp), mnist)
    assert "drop_corrupted" in pack_decline_reason(
        spec(0, {"name": "erm"}, mlp, noise={"kind": "symmetric", "rate": 0.2, "drop_corrupted": True}), mnist)
    assert pack_decline_reason(spec(0, {"name": "erm"}, mlp), mnist) is None
    with pytest.raises(ValueError, match="cannot be packed"):
        train_group([spec(s, {"name": "spl"}, mlp) for s in (0, 1)], mnist, CPU)
    with pytest.raises(ValueError, match="apart from their seeds"):
        train_group([spec(0, {"name": "erm"}, mlp), spec(1, {"name": "erm"}, mlp, rate=0.4)], mnist, CPU)
    with pytest.raises(ValueError, match="constraints"):
        PackedNet([create_model("wordcnn", 2, (20,), 50) for _ in range(2)])
    with pytest.raises(ValueError, match="dropout"):
        PackedNet([torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.3)) for _ in range(2)])
    PackedNet([torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.0)) for _ in range(2)])


def test_group_key_ignores_only_the_seeds():
    a = spec(0, {"name": "kd"}, {"name": "mlp500"})
    a["roles"] = {"teacher": {"from_run": {**spec(0, {"name": "erm"}, {"name": "mlp500"})}}}
    b = json.loads(json.dumps(a))
    b["seed"], b["roles"]["teacher"]["from_run"]["seed"] = 1, 1
    assert group_key(a) == group_key(b)
    b["recipe"] = {**b["recipe"], "batch_size": 64}
    assert group_key(a) != group_key(b)


def test_the_engine_uses_the_methods_own_ce(mnist, monkeypatch):
    """No CE is computed twice per step: ERM computes its batch-mean CE once per step; the per-sample CE (its
    objective and the CE statistics) comes from one batched pass over the epoch's kept logits; where the logits
    are too many to keep, once per step instead. A method that gives its own CE (SPL) gets none from the engine."""
    import engine.stats as st
    import engine.trainer as tr

    calls = []
    real = tr.F.cross_entropy
    monkeypatch.setattr(tr.F, "cross_entropy", lambda *a, **k: calls.append(a[0].shape[0]) or real(*a, **k))
    train(spec(0, {"name": "erm"}, {"name": "mlp500"}), mnist, CPU)
    epochs, steps, evals = 2, 2 * (192 // 32), 2  # 2 epochs of 6 batches; one test pass (128 images) per epoch
    assert calls.count(32) == steps and calls.count(192) == epochs and calls.count(128) == evals
    assert len(calls) == steps + epochs + evals
    calls.clear()
    monkeypatch.setattr(st, "LOGITS_KEPT_MAX", 0)  # keep no logits: the per-sample CE per step
    train(spec(0, {"name": "erm"}, {"name": "mlp500"}), mnist, CPU)
    assert calls.count(32) == 2 * steps and len(calls) == 2 * steps + evals
    calls.clear()
    monkeypatch.setattr(st, "LOGITS_KEPT_MAX", 1 << 26)
    train(spec(0, {"name": "spl"}, {"name": "mlp500"}), mnist, CPU)
    assert calls.count(192) == 0  # SPL's own per-sample CE serves


def test_runner_packs_and_each_run_keeps_its_own_id_and_json(tmp_path, data_root):
    plans = [p for p in load_targets(os.path.join(ROOT, "benchmarks", "targets"))["blcl-table4"].plans(
        "smoke", seeds=[0, 1]) if p.row == "mlp" and p.variant == "erm"]
    assert run_plans(plans, data_root, str(tmp_path / "a"), CPU, pack=2) == 0
    assert run_plans(plans, data_root, str(tmp_path / "b"), CPU, pack=1) == 0
    for p in plans:
        a = json.load(open(tmp_path / "a" / "runs" / p.target / f"{p.run_id}.json"))
        b = json.load(open(tmp_path / "b" / "runs" / p.target / f"{p.run_id}.json"))
        assert a["provenance"]["engine"]["packed_with"] == [q.run_id for q in plans]
        assert "packed_with" not in b["provenance"]["engine"]
        assert a["final_test_acc"] == pytest.approx(b["final_test_acc"], abs=0.5)


# ---- kill -9 mid-run, then resume ----------------------------------------------------------------------------

def _target_dir(tmp_path):
    """blcl-table4 with a 3-epoch smoke budget, so a run can be killed in its middle."""
    src = open(os.path.join(ROOT, "benchmarks", "targets", "blcl-table4.yaml")).read()
    line = "  smoke: {epochs: 1, train_subset: 512, test_subset: 512}"
    assert line in src
    d = tmp_path / "targets"
    d.mkdir()
    (d / "blcl-table4.yaml").write_text(src.replace(line, "  smoke: {epochs: 3, train_subset: 192, test_subset: 128}"))
    return str(d)


def _cli(tmp_path, results, *extra, kill=None):
    env = {**os.environ, "CLREPRO_DATA": _data_root(), "CLREPRO_NO_DOWNLOAD": "1", "OMP_NUM_THREADS": "1"}
    env.pop("CLREPRO_FAULT_KILL_AT_EPOCH", None)
    if kill:
        env["CLREPRO_FAULT_KILL_AT_EPOCH"] = str(kill)
    return subprocess.run([sys.executable, "-m", "benchmarks", "blcl-table4", "--budget", "smoke",
                           "--targets", _target_dir_cached(tmp_path), "--results", str(results),
                           "--checkpoint-every", "1", *extra], cwd=ROOT, env=env, capture_output=True, text=True)


def _data_root():
    from conftest import real_data_root

    return real_data_root()


_DIRS = {}


def _target_dir_cached(tmp_path):
    if tmp_path not in _DIRS:
        _DIRS[tmp_path] = _target_dir(tmp_path)
    return _DIRS[tmp_path]


def _strip(rec):
    rec = json.loads(json.dumps(rec))
    rec.pop("provenance")
    for h in rec["history"]:
        h.pop("seconds")
        h.pop("train_seconds")
    return rec


@pytest.mark.parametrize("regex,pack,seeds", [("row=resnet20 variant=erm ", "1", "0"),
                                              ("row=mlp variant=blcl ", "2", "0,1")])
def test_kill_9_mid_run_then_resume_gives_the_same_json(tmp_path, data_root, regex, pack, seeds):
    """SIGKILL right after epoch 2's checkpoint; the rerun resumes there and writes what an uninterrupted run
    writes (the ResNet-20 run covers augmentation and batch norm; the MLP case a packed BLCL pair)."""
    args_variant = ["--filter", regex, "--pack", pack, "--seeds", seeds]
    killed = _cli(tmp_path, tmp_path / "k" / "results", *args_variant, kill=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ckpts = list((tmp_path / "k" / "checkpoints").glob("*.resume.pt"))
    assert ckpts, "a mid-run checkpoint must exist after the kill"
    done_before = list((tmp_path / "k" / "results" / "runs").rglob("*.json"))
    resumed = _cli(tmp_path, tmp_path / "k" / "results", *args_variant)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    clean = _cli(tmp_path, tmp_path / "c" / "results", *args_variant)
    assert clean.returncode == 0, clean.stderr[-2000:]
    files = sorted((tmp_path / "c" / "results" / "runs").rglob("*.json"))
    assert files
    n_resumed = 0
    for f in files:
        a = json.load(open(f))
        b = json.load(open(tmp_path / "k" / "results" / "runs" / f.parent.name / f.name))
        assert _strip(a) == _strip(b)
        n_resumed += b["provenance"]["engine"]["resumed_from_epoch"] == 2
    assert n_resumed >= 1 and len(done_before) < len(files)
    assert not list((tmp_path / "k" / "checkpoints").glob("*.resume.pt"))  # deleted once the JSONs are written


def test_fast_path_switches_train_and_are_recorded(mnist):
    """bf16 autocast, channels_last and fused SGD (the CUDA defaults; compile is left to the GPU) also run on the
    CPU: the record says which were on, and the first-epoch loss stays close to the float32 run's."""
    sp = spec(0, {"name": "erm"}, {"name": "resnet8"}, subset=64)
    fast = train(sp, mnist, CPU, options=EngineOptions(amp="bf16", channels_last=True, fused=True))
    plain = train(sp, mnist, CPU)
    assert fast["engine"] == {"amp": "bf16", "channels_last": True, "compile": False, "fused": True, "pack": 1,
                              "resumed_from_epoch": None}
    assert plain["engine"]["amp"] == "none" and not plain["engine"]["channels_last"]
    assert fast["history"][0]["train_loss"] == pytest.approx(plain["history"][0]["train_loss"], rel=0.05)
    assert EngineOptions.for_device(torch.device("cuda")).record() == {"amp": "bf16", "channels_last": True,
                                                                     "compile": True, "fused": True}
    # issue 18: channels_last and torch's fused SGD/Adam are the CPU default; compile only for long convnet runs
    cpu = EngineOptions.for_device(CPU)
    assert cpu.record() == {"amp": "none", "channels_last": True, "compile": False, "fused": True}
    assert cpu.compile_min_steps == CPU_COMPILE_MIN_STEPS > 0
    assert EngineOptions.for_device(CPU, compile="off").compile_min_steps == 0
    assert EngineOptions.for_device(CPU, compile="on").record()["compile"] is True
    assert EngineOptions.for_device(CPU, compile="on").record()["amp"] == "none"  # no bf16 on the CPU
    off = EngineOptions.for_device(CPU, fast="off")
    assert off.record() == {"amp": "none", "channels_last": False, "compile": False, "fused": False}
    assert off.compile_min_steps == 0
    with pytest.raises(ValueError, match="amp"):
        EngineOptions(amp="fp8")


def test_cpu_auto_compiles_only_long_convnet_runs(mnist, monkeypatch):
    """CPU `--compile auto`: a convnet run of at least `compile_min_steps` steps is compiled, a shorter one and any
    network without convolutions are not; the record says which happened."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: calls.append(type(m).__name__) or m)
    conv = spec(0, {"name": "erm"}, {"name": "resnet8"}, subset=64)  # 64 samples, batch 32, 2 epochs: 4 steps
    short = train(conv, mnist, CPU, options=EngineOptions(channels_last=True, compile_min_steps=5))
    assert short["engine"]["compile"] is False and calls == []
    long_ = train(conv, mnist, CPU, options=EngineOptions(channels_last=True, compile_min_steps=4))
    assert long_["engine"]["compile"] is True and calls
    calls.clear()
    mlp = dict(spec(0, {"name": "erm"}, {"name": "mlp500", "hidden": 32}, subset=64))
    flat = train(mlp, mnist, CPU, options=EngineOptions(channels_last=True, compile_min_steps=1))
    assert flat["engine"]["compile"] is False and calls == []


def test_compiled_step_is_reused_across_runs_of_one_shape(mnist):
    """`torch.compile` (the CUDA default, checked here on the CPU): the second and third runs of one architecture
    and batch shape compile nothing new (dynamo's frame count stays put), and compiled runs, packed ones
    included, give the uncompiled losses."""
    import shutil

    import torch._dynamo.utils as dynamo_utils

    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler; none on PATH")
    base = spec(0, {"name": "erm"}, {"name": "mlp500", "hidden": 32}, rate=0.0, subset=96)
    base = dict(base, recipe=dict(RECIPE, augment="none", epochs=1))
    opts = EngineOptions(compile=True)
    first = train(base, mnist, CPU, options=opts)
    frames = dynamo_utils.counters["frames"]["total"]
    assert frames > 0
    again = [train(dict(base, seed=s), mnist, CPU, options=opts) for s in (1, 2)]
    assert dynamo_utils.counters["frames"]["total"] == frames  # no recompilation for a new run of one shape
    plain = [train(dict(base, seed=s), mnist, CPU) for s in (0, 1, 2)]
    for c, p in zip([first, *again], plain):
        assert c["engine"]["compile"] and not p["engine"]["compile"]
        assert c["history"][0]["train_loss"] == pytest.approx(p["history"][0]["train_loss"], rel=1e-5)
    packed = train_group([dict(base, seed=s) for s in (1, 2)], mnist, CPU, options=opts)
    for c, p in zip(packed, plain[1:]):
        assert c["history"][0]["train_loss"] == pytest.approx(p["history"][0]["train_loss"], rel=1e-5)
