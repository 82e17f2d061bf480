"""Issue 12: the matrix on Ray. On a local Ray instance (2 CPUs, no GPU): the same run ids and accuracies as the
local launcher; a worker killed mid-run is retried without a duplicate or a lost run; a run whose retries are
exhausted is recorded failed with the cause; a KD student's task starts only after its teacher's and names the
teacher's run id and checkpoint sha256; a run another driver holds is not submitted."""
import glob
import hashlib
import json
import os

import pytest
import torch

ray = pytest.importorskip("ray")

from conftest import ROOT  # noqa: E402
from benchmarks.run.launchers.ray_launcher import GPU_SHARE, gpus_for, init_kwargs, run_plans_ray  # noqa: E402
from benchmarks.run.runner import acquire, run_plans, teacher_plans  # noqa: E402
from benchmarks.run.schema import problems  # noqa: E402
from benchmarks.run.store import checkpoint_path, index_results  # noqa: E402
from benchmarks.targets.loader import load_targets  # noqa: E402
from engine.options import EngineOptions  # noqa: E402

TARGETS = load_targets(os.path.join(ROOT, "benchmarks", "targets"))


@pytest.fixture(scope="module")
def cluster(data_root):
    ray.init(**init_kwargs(None, data_root, num_cpus=2))  # num_cpus=2, include_dashboard=False, this tree
    yield
    ray.shutdown()


def table4_mlp(seeds=(0,)):
    return [p for p in TARGETS["blcl-table4"].plans("smoke", seeds=list(seeds)) if p.row == "mlp"]


def distill(variants, seed=0):
    return [p for p in TARGETS["ext-distill-fashion"].plans("smoke", seeds=[seed]) if p.variant in variants]


def records(res):
    return {rid: json.load(open(path)) for rid, path in index_results(str(res)).items()}


def side_files(res, tag):
    return glob.glob(os.path.join(str(res), "runs", "*", f"*.{tag}-*.json"))


def test_gpu_share_by_model():
    small = [p for p in TARGETS["blcl-table4"].plans("smoke", seeds=[0]) if p.row == "resnet20"]
    assert GPU_SHARE["resnet20"] < 1 and GPU_SHARE["wrn28_10"] == 1 and GPU_SHARE["densenet_bc_100_12"] == 1
    assert gpus_for(small[:1]) == 0.25 and gpus_for(small[:3]) == 0.75  # a packed group of three
    assert gpus_for(small[:1], per_run=0.5) == 0.5
    kd = distill({"kd"})[0]
    assert gpus_for([kd]) == 0.25  # MLP student and MLP teacher


def test_ray_gives_the_local_launchers_runs(cluster, tmp_path, data_root):
    plans = table4_mlp()
    snaps = {plans[0].run_id: {1}}  # per-example loss snapshots (and their embedding) come back from the worker
    assert run_plans(plans, data_root, str(tmp_path / "local"), torch.device("cpu"), snapshots=snaps) == 0
    assert run_plans_ray(plans, data_root, str(tmp_path / "ray"), "cpu", snapshots=snaps) == 0
    local, remote = records(tmp_path / "local"), records(tmp_path / "ray")
    assert set(remote) == set(local) == {p.run_id for p in plans}
    for rid, rec in remote.items():
        assert problems(rec) == [] and rec["status"] == "ok"
        assert rec["provenance"]["launcher"] == "ray"
        for key in ("git_sha", "git_dirty", "argv"):  # the driver's, whose source tree the workers run
            assert rec["provenance"][key] == local[rid]["provenance"][key]
        assert rec["final_test_acc"] == local[rid]["final_test_acc"]  # on CPU: the same numbers
        assert rec["history"][0]["train_loss"] == pytest.approx(local[rid]["history"][0]["train_loss"], rel=1e-5)
    a, b = local[plans[0].run_id]["extras"]["snapshots"], remote[plans[0].run_id]["extras"]["snapshots"]
    assert b["epochs"] == a["epochs"] == [1] and os.path.isfile(tmp_path / b["file"])
    assert os.path.isfile(tmp_path / b["embedding"]) and b["embedding"].replace("ray", "local") == a["embedding"]
    assert "snapshots" not in remote[plans[1].run_id]["extras"]
    assert run_plans_ray(plans, data_root, str(tmp_path / "ray"), "cpu") == 0  # all done: nothing submitted
    assert records(tmp_path / "ray") == remote


def test_a_killed_worker_is_retried_without_duplicate_or_loss(cluster, tmp_path, data_root, monkeypatch):
    """The first attempt SIGKILLs its worker after epoch 1 (checkpointed); Ray retries the task, which resumes
    from the mid-run checkpoint in --checkpoints and writes one ok JSON."""
    plan = distill({"erm"})[0]
    monkeypatch.setenv("CLREPRO_FAULT_ONCE_DIR", str(tmp_path / "markers"))
    opts = EngineOptions(kill_at_epoch=1, checkpoint_every=1)
    res = tmp_path / "results"
    assert run_plans_ray([plan], data_root, str(res), "cpu", options=opts, max_retries=2,
                         checkpoints=str(tmp_path / "shared-ckpt")) == 0
    assert os.listdir(tmp_path / "markers") == [f"{plan.run_id}.attempted"]  # the first attempt did die
    recs = records(res)
    assert list(recs) == [plan.run_id] and recs[plan.run_id]["status"] == "ok"
    rec = recs[plan.run_id]
    assert rec["provenance"]["engine"]["resumed_from_epoch"] == 1 and len(rec["history"]) == 3
    assert side_files(res, "failed") == [] and os.listdir(tmp_path / "shared-ckpt") == []  # resume file removed


def test_exhausted_retries_give_a_failed_record_naming_the_cause(cluster, tmp_path, data_root, monkeypatch):
    plan = table4_mlp()[0]
    monkeypatch.delenv("CLREPRO_FAULT_ONCE_DIR", raising=False)
    res = tmp_path / "results"
    assert run_plans_ray([plan], data_root, str(res), "cpu", options=EngineOptions(kill_at_epoch=1),
                         max_retries=1) == 1
    rec = records(res)[plan.run_id]
    assert problems(rec) == [] and rec["status"] == "failed"
    assert "retries" in rec["error"] and ("Worker" in rec["error"] or "died" in rec["error"]), rec["error"]


def test_a_student_task_waits_for_its_teacher_and_names_its_checkpoint(cluster, tmp_path, data_root):
    plans = distill({"kd", "erm"})
    res = tmp_path / "results"
    assert run_plans_ray(plans, data_root, str(res), "cpu") == 0
    kd = next(p for p in plans if p.variant == "kd")
    tid = teacher_plans(kd)["teacher"].run_id
    recs = records(res)
    assert set(recs) == {p.run_id for p in plans} | {tid}
    teacher, student = recs[tid], recs[kd.run_id]
    assert student["provenance"]["start"] >= teacher["provenance"]["end"]  # started after the teacher ended
    sha = hashlib.sha256(open(checkpoint_path(str(res), tid), "rb").read()).hexdigest()
    assert teacher["extras"]["checkpoint_sha256"] == sha
    assert student["extras"]["teacher_run_id"] == tid and student["extras"]["teacher_checkpoint_sha256"] == sha
    assert student["extras"]["teacher_final_test_acc"] == pytest.approx(teacher["final_test_acc"])
    mekd = distill({"mekd"})  # a second student reuses the teacher's checkpoint (ray.put), never retrains it
    assert run_plans_ray(mekd, data_root, str(res), "cpu") == 0
    assert records(res)[tid] == teacher
    assert records(res)[mekd[0].run_id]["extras"]["teacher_checkpoint_sha256"] == sha


def test_a_run_held_by_another_driver_is_not_submitted(cluster, tmp_path, data_root):
    plan = table4_mlp()[0]
    res = str(tmp_path / "results")
    lock = acquire(res, plan.run_id)  # another driver's claim
    try:
        assert run_plans_ray([plan], data_root, res, "cpu") == 0
    finally:
        lock.close()
    assert index_results(res) == {}


def test_cli_launcher_ray(cluster, tmp_path, data_root, monkeypatch, capsys):
    """`--launcher ray` through the command line (on the instance already up); Ray flags need it."""
    from benchmarks.cli import main

    monkeypatch.setenv("CLREPRO_DATA", data_root)
    args = ["blcl-table4", "--budget", "smoke", "--filter", "row=mlp variant=erm ", "--seeds", "0",
            "--results", str(tmp_path / "results"), "--no-download"]
    assert main(args + ["--address", "auto"]) == 2 and "needs --launcher ray" in capsys.readouterr().err
    assert main(args + ["--launcher", "ray", "--max-retries", "1"]) == 0
    assert [r["status"] for r in records(tmp_path / "results").values()] == ["ok"]
    assert os.path.isfile(tmp_path / "REPORT.md")
    assert main(args + ["--launcher", "ray", "--cpus-per-run", "64"]) == 0  # all done: nothing to submit
    other = [str(tmp_path / "other") if a == str(tmp_path / "results") else a for a in args]
    other += ["--launcher", "ray", "--cpus-per-run", "64"]
    assert main(other) == 2 and "no Ray node can hold" in capsys.readouterr().err
