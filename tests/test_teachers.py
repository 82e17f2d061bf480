"""Runs restored from other runs (KD's teacher) and the results store's hardening: the teacher trains first, once,
its checkpoint is verified by sha256 before use, a crash between teacher and student loses nothing, a corrupt
checkpoint is retrained (the old record kept), and a schema-breaking record is archived and rerun."""
import glob
import hashlib
import json
import os

import pytest
import torch

from conftest import ROOT
from benchmarks.report.markdown import write_report
from benchmarks.run.runner import _Session, run_plans, teacher_plans
from benchmarks.run.schema import problems
from benchmarks.run.store import checkpoint_path, index_results, write_atomic
from benchmarks.targets.loader import load_targets

TARGETS = load_targets(os.path.join(ROOT, "benchmarks", "targets"))
CPU = torch.device("cpu")


def kd_plan(variant="kd", seed=0):
    return [p for p in TARGETS["ext-distill-fashion"].plans("smoke", seeds=[seed]) if p.variant == variant][0]


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest(), os.stat(path).st_mtime_ns


def test_student_trains_its_teacher_first_and_records_it(tmp_path, data_root):
    plan = kd_plan()
    res = str(tmp_path / "results")
    assert run_plans([plan], data_root, res, CPU) == 0
    tplan = teacher_plans(plan)["teacher"]
    assert plan.spec["roles"]["teacher"]["from_run"] == tplan.spec  # the student's run id covers the teacher
    assert tplan.spec["method"]["name"] == "erm" and tplan.spec["model"]["hidden"] == 1000
    assert tplan.spec["seed"] == plan.spec["seed"] and tplan.spec["data"] == plan.spec["data"]
    idx = index_results(res)
    teacher = json.load(open(idx[tplan.run_id]))
    student = json.load(open(idx[plan.run_id]))
    assert problems(teacher) == [] and problems(student) == []
    ckpt = checkpoint_path(res, tplan.run_id)
    assert os.path.isfile(ckpt) and not ckpt.startswith(res)  # beside results/, outside the committed tree
    assert teacher["extras"]["checkpoint_sha256"] == hashlib.sha256(open(ckpt, "rb").read()).hexdigest()
    assert student["status"] == "ok"
    # the frozen teacher's accuracy as the student sees it equals the teacher run's own final accuracy
    assert student["extras"]["teacher_final_test_acc"] == pytest.approx(teacher["final_test_acc"])
    # the student's record names the exact teacher weights it was distilled from
    assert student["extras"]["teacher_checkpoint_sha256"] == teacher["extras"]["checkpoint_sha256"]
    assert student["extras"]["teacher_run_id"] == tplan.run_id


def test_a_second_student_reuses_the_teacher(tmp_path, data_root):
    res = str(tmp_path / "results")
    assert run_plans([kd_plan("kd")], data_root, res, CPU) == 0
    tid = teacher_plans(kd_plan("kd"))["teacher"].run_id
    before = _digest(index_results(res)[tid]), _digest(checkpoint_path(res, tid))
    assert run_plans([kd_plan("mekd")], data_root, res, CPU) == 0  # same teacher spec, other method
    assert (_digest(index_results(res)[tid]), _digest(checkpoint_path(res, tid))) == before


def test_a_crash_between_teacher_and_student_loses_nothing(tmp_path, data_root, monkeypatch):
    plan = kd_plan()
    res = str(tmp_path / "results")
    tid = teacher_plans(plan)["teacher"].run_id
    real_run = _Session.run

    def dying_run(self, p, role_states=None, add_extras=None):  # the process dies (kill -9 writes nothing) once the teacher is done
        if p.run_id == plan.run_id:
            raise KeyboardInterrupt
        return real_run(self, p, role_states, add_extras)

    monkeypatch.setattr(_Session, "run", dying_run)
    with pytest.raises(KeyboardInterrupt):
        run_plans([plan], data_root, res, CPU)
    monkeypatch.setattr(_Session, "run", real_run)
    assert plan.run_id not in index_results(res)
    before = _digest(index_results(res)[tid]), _digest(checkpoint_path(res, tid))
    assert run_plans([plan], data_root, res, CPU) == 0  # resumes: the student only
    assert (_digest(index_results(res)[tid]), _digest(checkpoint_path(res, tid))) == before
    assert json.load(open(index_results(res)[plan.run_id]))["status"] == "ok"


def test_a_corrupt_checkpoint_is_retrained_never_used(tmp_path, data_root):
    plan = kd_plan()
    res = str(tmp_path / "results")
    assert run_plans([plan], data_root, res, CPU) == 0
    tid = teacher_plans(plan)["teacher"].run_id
    old_teacher = open(index_results(res)[tid]).read()
    with open(checkpoint_path(res, tid), "r+b") as f:  # flip bytes in the middle
        f.seek(200)
        f.write(b"\x00garbage\x00")
    os.remove(index_results(res)[plan.run_id])  # ask for the student again
    assert run_plans([plan], data_root, res, CPU) == 0
    kept = glob.glob(os.path.join(res, "runs", "*", f"{tid}.superseded-1.json"))
    assert len(kept) == 1 and open(kept[0]).read() == old_teacher  # the old record is kept, not overwritten
    new = json.load(open(index_results(res)[tid]))
    assert new["extras"]["checkpoint_sha256"] == hashlib.sha256(open(checkpoint_path(res, tid), "rb").read()).hexdigest()


def test_schema_breaking_record_is_archived_rerun_and_named_in_the_report(tmp_path, data_root):
    plan = [p for p in TARGETS["blcl-table5"].plans("smoke", seeds=[0]) if p.variant == "erm"][0]
    res = tmp_path / "results"
    bad = res / "runs" / plan.target / f"{plan.run_id}.json"
    write_atomic(str(bad), {"status": "ok"})  # parses, says ok, breaks the schema
    text = write_report(TARGETS, str(res), str(tmp_path / "REPORT.md"))  # the report skips it, naming it
    assert "Result files skipped" in text and f"{plan.run_id}.json" in text and "breaks the schema" in text
    assert run_plans([plan], data_root, str(res), CPU) == 0
    assert json.load(open(bad))["status"] == "ok" and problems(json.load(open(bad))) == []
    assert json.load(open(res / "runs" / plan.target / f"{plan.run_id}.failed-1.json")) == {"status": "ok"}
    (res / "runs" / plan.target / "0123456789ab.json").write_text("{truncated")
    text = write_report(TARGETS, str(res), str(tmp_path / "REPORT.md"))
    assert "0123456789ab.json" in text and "unreadable" in text
