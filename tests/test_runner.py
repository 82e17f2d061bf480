"""Runner contract: run ids are hashes of canonical specs, finished runs are never rerun or overwritten (also
when another target made them), failed runs are retried with the old record kept, writes are atomic."""
import glob
import hashlib
import json
import os

import pytest
import torch

from conftest import ROOT
from benchmarks.run.runner import index_results, run_plans, write_atomic
from benchmarks.targets.spec import canonical, run_id
from benchmarks.run.schema import problems
from benchmarks.targets.loader import Plan, load_targets

TARGETS = load_targets(os.path.join(ROOT, "benchmarks", "targets"))


def smoke_plan(seed=0, variant="erm"):
    return [p for p in TARGETS["blcl-table5"].plans("smoke", seeds=[seed]) if p.variant == variant][0]


def test_run_id_is_short_sha256_of_sorted_json():
    p = smoke_plan()
    assert p.run_id == hashlib.sha256(json.dumps(p.spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    shuffled = dict(reversed(list(p.spec.items())))
    assert run_id(shuffled) == p.run_id and canonical(shuffled) == canonical(p.spec)
    assert smoke_plan(seed=1).run_id != p.run_id
    assert "target" not in p.spec  # the same spec from two targets is one run


def test_spec_has_every_default():
    p = smoke_plan(variant="blcl-label")
    assert p.spec["method"] == {"name": "blcl", "r": 1.5, "reading": "label", "base": "ce",
                                "teacher_probs": "before_update"}
    assert p.spec["model"] == {"name": "wordcnn", "dropout": 0.5, "embed_dim": 300, "maps": 100, "max_norm": 3.0,
                               "widths": [3, 4, 5]}
    assert p.spec["recipe"]["epochs"] == 1 and p.spec["data"]["train_subset"] == 256
    assert p.compare_as == "blcl"
    full = [q for q in TARGETS["blcl-table5"].plans("full") if q.variant == "blcl-label"][0]
    assert full.spec["recipe"]["epochs"] == 10 and full.spec["data"]["train_subset"] is None


def test_failed_run_is_retried_and_old_record_kept(tmp_path, data_root):
    plan = smoke_plan()
    path = tmp_path / "runs" / plan.target / f"{plan.run_id}.json"
    write_atomic(str(path), {"run_id": plan.run_id, "status": "failed", "error": "old"})
    assert run_plans([plan], data_root, str(tmp_path), torch.device("cpu")) == 0
    assert json.load(open(path))["status"] == "ok"
    assert json.load(open(tmp_path / "runs" / plan.target / f"{plan.run_id}.failed-1.json"))["error"] == "old"
    assert list(index_results(str(tmp_path))) == [plan.run_id]  # archived records are not results


def test_finished_run_of_another_target_is_reused(tmp_path, data_root):
    plan = smoke_plan()
    assert run_plans([plan], data_root, str(tmp_path / "a"), torch.device("cpu")) == 0
    rec = json.load(open(tmp_path / "a" / "runs" / plan.target / f"{plan.run_id}.json"))
    other = tmp_path / "b" / "runs" / "blcl-other" / f"{plan.run_id}.json"
    write_atomic(str(other), {**rec, "target": "blcl-other"})
    before = open(other, "rb").read()
    assert run_plans([plan], data_root, str(tmp_path / "b"), torch.device("cpu")) == 0
    assert open(other, "rb").read() == before
    assert not (tmp_path / "b" / "runs" / plan.target).exists()


def test_an_exception_is_a_failed_record_not_a_crash(tmp_path):
    base = smoke_plan()
    spec = json.loads(json.dumps(base.spec))
    spec["data"]["dataset"] = "nosuch"  # load_dataset raises: recorded as failed, the matrix goes on
    plan = Plan(base.target, base.row, base.variant, base.compare_as, spec)
    assert run_plans([plan], str(tmp_path), str(tmp_path / "res"), torch.device("cpu")) == 1
    rec = json.load(open(tmp_path / "res" / "runs" / plan.target / f"{plan.run_id}.json"))
    assert rec["status"] == "failed" and "nosuch" in rec["error"] and rec["final_test_acc"] is None
    assert problems(rec) == []


def test_write_atomic_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "runs" / "t" / "abc.json"
    with pytest.raises(TypeError):
        write_atomic(str(target), {"bad": object()})
    assert not target.exists()
    assert glob.glob(str(tmp_path / "runs" / "t" / "*")) == []


def test_non_finite_values_are_written_as_null(tmp_path):
    p = tmp_path / "r.json"
    write_atomic(str(p), {"history": [{"train_loss": float("nan"), "test_loss": float("inf"), "lr": 0.1}]})
    assert json.loads(p.read_text()) == {"history": [{"train_loss": None, "test_loss": None, "lr": 0.1}]}


def test_lock_is_exclusive_and_released_on_close(tmp_path):
    from benchmarks.run.runner import acquire

    held = acquire(str(tmp_path), "abc")
    assert held is not None
    assert acquire(str(tmp_path), "abc") is None  # another worker asks: refused
    held.close()  # also what happens when the holder dies
    again = acquire(str(tmp_path), "abc")
    assert again is not None
    again.close()


def test_a_run_locked_elsewhere_is_skipped(tmp_path, data_root):
    from benchmarks.run.runner import acquire

    plan = smoke_plan()
    held = acquire(str(tmp_path), plan.run_id)
    try:
        assert run_plans([plan], data_root, str(tmp_path), torch.device("cpu")) == 0
        assert not (tmp_path / "runs" / plan.target / f"{plan.run_id}.json").exists()
    finally:
        held.close()


def test_result_files_are_world_readable(tmp_path):
    p = tmp_path / "r.json"
    write_atomic(str(p), {"a": 1})
    assert oct(os.stat(p).st_mode & 0o777) == "0o644"


def test_results_version_enters_the_run_id_only_from_2_on():
    from benchmarks.targets.spec import versioned

    spec = smoke_plan().spec
    assert versioned(spec, 1) is spec
    assert run_id(versioned(spec, 2)) != run_id(spec)
    assert versioned(spec, 2)["results_version"] == 2


def test_no_download_fails_the_run_without_touching_the_network(tmp_path):
    plan = smoke_plan()
    assert run_plans([plan], str(tmp_path / "empty"), str(tmp_path / "res"), torch.device("cpu"), download=False) == 1
    rec = json.load(open(tmp_path / "res" / "runs" / plan.target / f"{plan.run_id}.json"))
    assert rec["status"] == "failed" and "FileNotFoundError" in rec["error"]
    assert not (tmp_path / "empty").exists()
