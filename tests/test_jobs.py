"""`--jobs N` (benchmarks/run/launchers/jobs.py): N local drivers share one results folder. Every run of the matrix is
trained by exactly one of them, each child uses cores // N threads and writes no report, a KD teacher is trained
once while its sibling waits, bad input exits 2 before anything is written, and stopping the parent stops its
children."""
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from benchmarks.cli import main
from benchmarks.errors import UsageError
from benchmarks.run.launchers.jobs import child_threads, this_job, without_jobs
from benchmarks.run.store import index_results


def test_without_jobs_drops_both_spellings():
    argv = ["blcl-table4", "--jobs", "2", "--budget", "smoke", "--jobs=3", "--seeds", "0", "--jo", "4", "--job=5"]
    assert without_jobs(argv) == ["blcl-table4", "--budget", "smoke", "--seeds", "0"]


def test_child_threads_split_the_cores():
    assert child_threads(2, cores=2) == 1 and child_threads(3, cores=16) == 5 and child_threads(4, cores=2) == 1


@pytest.mark.parametrize("text,ok", [("1/2", (1, 2)), ("3/3", (3, 3)), ("0/2", None), ("3/2", None), ("x", None)])
def test_job_environment_is_checked(monkeypatch, text, ok):
    monkeypatch.setenv("CLREPRO_JOB", text)
    if ok:
        assert this_job() == ok
    else:
        with pytest.raises(UsageError, match="CLREPRO_JOB"):
            this_job()


def _cli(*argv, timeout=600):
    return subprocess.run([sys.executable, "-m", "benchmarks", *argv, "--device", "cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _records(res):
    return {rid: json.load(open(p)) for rid, p in index_results(str(res)).items()}


@pytest.mark.parametrize("args,needle", [(["--jobs", "0"], "--jobs '0'"),
                                         (["--jobs", "2", "--launcher", "ray"], "--jobs 2")])
def test_bad_jobs_exit_2_and_write_nothing(tmp_path, capsys, args, needle):
    try:
        rc = main(["blcl-table4", "--budget", "smoke", "--results", str(tmp_path / "r"),
                   "--report", str(tmp_path / "REPORT.md"), *args])
    except SystemExit as e:
        rc = e.code
    assert rc == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "REPORT.md").exists()


def test_two_jobs_train_each_run_once(tmp_path, data_root):
    res, report = tmp_path / "r", tmp_path / "REPORT.md"
    r = _cli("blcl-table4", "--budget", "smoke", "--filter", "row=mlp", "--seeds", "0,1", "--jobs", "2",
             "--results", str(res), "--report", str(report), "--data", data_root)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = _records(res)
    assert len(recs) == 6 and all(rec["status"] == "ok" for rec in recs.values())
    trained = re.findall(r"^\[job ([12])\] \[ok\] .* id=([0-9a-f]{12}) ", r.stdout, re.M)
    assert sorted(rid for _, rid in trained) == sorted(recs)  # each run once, none twice
    threads = child_threads(2)
    for rec in recs.values():
        assert "--jobs" not in rec["provenance"]["argv"]
        assert rec["provenance"]["device"].endswith(f"{threads} threads)")
    assert "every run of the matrix is finished" in r.stdout
    assert report.exists() and r.stdout.count("report: ") == 1  # the parent's report, once
    again = _cli("blcl-table4", "--budget", "smoke", "--filter", "row=mlp", "--seeds", "0,1", "--jobs", "2",
                 "--results", str(res), "--report", str(report), "--data", data_root)
    assert again.returncode == 0 and "[ok]" not in again.stdout  # nothing left to train
    assert _records(res) == recs


def test_a_teacher_is_trained_once_while_the_sibling_waits(tmp_path, data_root):
    res = tmp_path / "r"
    r = _cli("ext-distill-fashion", "--budget", "smoke", "--filter", "variant=(kd|mekd) ", "--seeds", "0",
             "--jobs", "2", "--results", str(res), "--report", str(tmp_path / "REPORT.md"), "--data", data_root)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = _records(res)
    students = [rec for rec in recs.values() if rec["variant"] in ("kd", "mekd")]
    assert len(students) == 2
    teachers = {rec["extras"]["teacher_run_id"] for rec in students}
    shas = {rec["extras"]["teacher_checkpoint_sha256"] for rec in students}
    assert len(teachers) == 1 and len(shas) == 1  # one teacher, the same bytes for both students
    assert len(re.findall(rf"\[ok\] .* id={teachers.pop()} ", r.stdout)) == 1


def test_stopping_the_parent_stops_the_children(tmp_path, data_root):
    p = subprocess.Popen([sys.executable, "-m", "benchmarks", "blcl-table4", "--budget", "reduced", "--filter",
                          "row=mlp", "--jobs", "2", "--device", "cpu", "--results", str(tmp_path / "r"), "--report",
                          str(tmp_path / "REPORT.md"), "--data", data_root], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    children = []
    try:
        lines, deadline = [], time.time() + 180
        while time.time() < deadline:  # until both children have started on the matrix
            ready, _, _ = select.select([p.stdout], [], [], 1.0)
            if ready:
                line = p.stdout.readline()
                if not line:
                    break
                lines.append(line)
            if sum("[job" in x and "runs in the matrix" in x for x in lines) == 2:
                break
        children = _children(p.pid)
        assert len(children) == 2, "".join(lines)
        p.send_signal(signal.SIGTERM)
        rest, _ = p.communicate(timeout=60)
        assert p.returncode == 130, "".join(lines) + rest
        assert "job 1 exited -15" in rest and "job 2 exited -15" in rest  # each child got the forwarded SIGTERM
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(c) for c in children):
            time.sleep(0.2)
        assert not any(_alive(c) for c in children)
        assert not (tmp_path / "REPORT.md").exists()  # interrupted: no report from half a matrix
    finally:
        for pid in [p.pid, *children]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by a dead parent) counts as stopped
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_nightly_trains_with_jobs_then_checks_once(tmp_path, data_root):
    import yaml

    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "syn.yaml").write_text(yaml.safe_dump({
        "name": "syn", "seeds": [0, 1], "targets": [{"target": "blcl-table4", "budget": "smoke", "filter": "row=mlp"}]}))
    res = tmp_path / "r"
    r = _cli("nightly", "syn", "--suites", str(suites), "--baselines", str(tmp_path / "b"), "--results", str(res),
             "--data", data_root, "--jobs", "2")
    recs = _records(res)
    assert len(recs) == 6 and all(rec["status"] == "ok" for rec in recs.values())
    trained = re.findall(r"^\[job [12]\] \[ok\] .* id=([0-9a-f]{12}) ", r.stdout, re.M)
    assert sorted(trained) == sorted(recs)
    assert (res / "REPORT.md").exists()
    assert r.returncode == 2 and r.stderr.count("no cpu baseline for suite 'syn'") == 1  # the parent's check, once


def test_fail_fast_stops_the_siblings(tmp_path, monkeypatch):
    """--fail-fast with --jobs: the first child to fail stops the others (a stand-in interpreter plays the
    children: job 1 fails at once, job 2 would train for a minute)."""
    import io

    from benchmarks.run.launchers.jobs import run_jobs

    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nif [ "$CLREPRO_JOB" = 1/2 ]; then echo "run failed"; exit 1; fi\n'
                    'echo training; exec sleep 60\n')
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    out = io.StringIO()
    t0 = time.time()
    assert run_jobs(["blcl-table4", "--fail-fast"], 2, out=out, stop_on_failure=True) == 1
    assert time.time() - t0 < 30
    text = out.getvalue()
    assert "[job 1] run failed" in text and "job 1 exited 1" in text and "job 2 exited -15" in text
