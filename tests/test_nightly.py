"""Nightly suites and their tolerance-band check (benchmarks/nightly/suite.py), on synthetic result JSONs in the exact
record schema: no training. Band: reference mean +- max(3 x seed std / sqrt(n), floor)."""
from __future__ import annotations

import json
import math
import os

import pytest
import yaml

from benchmarks import cli
from benchmarks.nightly import suite as nightly
from benchmarks.run.schema import problems
from benchmarks.run.store import write_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = "ext-noise-fashion"  # a real target with claims; its full budget at noise 0 gives 6 cells x 3 seeds
CELL = f"{TARGET}/full/mlp/%s/0"
ACC = {"erm": 80.0, "spl": 81.0, "codistill": 80.5, "blcl-label": 82.0, "dataparams": 81.5, "superloss": 83.0}
SEED_OFFSET = {0: -0.3, 1: 0.1, 2: 0.2}


def targets():
    return nightly._targets(nightly.TARGET_DIR)


def plans():
    return [p for p in targets()[TARGET].plans("full", seeds=[0, 1, 2]) if p.spec["data"]["noise"]["rate"] == 0.0]


def record(plan, acc: float | None, status: str = "ok") -> dict:
    ok = status == "ok"
    hist = [{"epoch": 1, "lr": 0.05, "train_loss": 0.4, "train_ce": 0.4, "train_acc": 85.0, "test_loss": 0.5,
             "test_acc": acc, "seconds": 1.0, "quartile_share": [0.1, 0.2, 0.3, 0.4],
             "quartile_share_ce": [0.1, 0.2, 0.3, 0.4]}]
    rec = {"schema_version": 1, "run_id": plan.run_id, "target": plan.target, "row": plan.row,
           "variant": plan.variant, "compare_as": plan.compare_as, "spec": plan.spec, "status": status,
           "error": None if ok else "RuntimeError: boom", "final_test_acc": acc if ok else None,
           "best_test_acc": acc if ok else None, "history": hist if ok else [], "extras": {},
           "provenance": {"git_sha": "0" * 40, "git_dirty": False, "python": "3.11.7", "torch": "2.14.1",
                          "torchvision": "0.29.1", "cuda": None, "device": "cpu (x86_64, 2 threads)",
                          "device_type": "cpu", "host": "test", "start": "2026-01-01T00:00:00+00:00",
                          "end": "2026-01-01T00:01:00+00:00", "wall_seconds": 60.0}}
    assert problems(rec) == []
    return rec


def write_runs(results, shift: dict | None = None, status: dict | None = None) -> None:
    """One record per plan: ACC[variant] + a per-seed offset (+ shift[variant]); status[(variant, seed)]."""
    for p in plans():
        v, seed = p.variant, p.spec["seed"]
        st = (status or {}).get((v, seed), "ok")
        acc = ACC[v] + SEED_OFFSET[seed] + (shift or {}).get(v, 0.0)
        write_atomic(os.path.join(results, "runs", p.target, f"{p.run_id}.json"), record(p, acc, st))


@pytest.fixture
def env(tmp_path):
    """A suite `syn` (ext-noise-fashion at noise 0), its results and a baseline written by --update-baseline."""
    suites, baselines, results = (str(tmp_path / d) for d in ("suites", "baselines", "results"))
    os.makedirs(suites)
    suite = {"name": "syn", "seeds": [0, 1, 2],
             "targets": [{"target": TARGET, "budget": "full", "filter": r"data\.noise\.rate=0\.0\b"}]}
    write_suite(suites, suite)
    write_runs(results)

    def run(*extra: str) -> int:
        return nightly.main(["syn", "--results", results, "--check-only", "--suites", suites,
                             "--baselines", baselines, *extra])

    assert run("--update-baseline") == 0
    return {"run": run, "suites": suites, "suite": suite, "results": results,
            "baseline": os.path.join(baselines, "syn.json")}


def write_suite(suites: str, suite: dict) -> None:
    with open(os.path.join(suites, f"{suite['name']}.yaml"), "w") as f:
        yaml.safe_dump(suite, f)


def test_band_arithmetic():
    assert nightly.band(80.0, 1.0, 4, 0.5) == pytest.approx((78.5, 81.5))   # 3 x 1 / sqrt(4) = 1.5 > floor
    assert nightly.band(80.0, 0.1, 4, 0.5) == pytest.approx((79.5, 80.5))   # the floor wins
    assert nightly.band(80.0, None, 1, 0.5) == pytest.approx((79.5, 80.5))  # one run: no std, the floor alone
    assert nightly.band(80.0, math.nan, 3, 2.0) == pytest.approx((78.0, 82.0))
    lo, hi = nightly.band(70.0, 3.0, 3, 0.5)
    assert hi - 70.0 == pytest.approx(3 * 3.0 / math.sqrt(3))


def test_update_baseline_then_pass(env, capsys):
    base = json.load(open(env["baseline"]))
    with open(env["baseline"]) as f:
        assert f.read() == json.dumps(base, indent=1, sort_keys=True) + "\n"  # sorted, indented: a reviewable diff
    part = base["devices"]["cpu"]
    cell = part["cells"][CELL % "erm"]
    assert cell["n"] == 3 and cell["mean"] == pytest.approx(80.0) and len(cell["run_ids"]) == 3
    assert cell["std"] == pytest.approx(0.2646, abs=1e-3)
    assert part["device"] == ["cpu (x86_64, 2 threads)"] and part["date"] and base["floor"] == 0.5
    assert part["claims"][f"{TARGET}/full/mlp/superloss-vs-erm/0"]["verdict"].startswith("gain reproduced")
    capsys.readouterr()
    assert env["run"]() == 0
    out = capsys.readouterr().out
    assert "0 failing" in out and "| ok |" in out
    check = json.load(open(os.path.join(env["results"], "nightly-check.json")))
    assert check["status"] == "pass" and len(check["rows"]) == 6 + 5  # 6 cells, 5 claims
    assert os.path.isfile(os.path.join(env["results"], "nightly-check.md"))


def test_perturbed_method_drifts(env, capsys):
    # SuperLoss 2 points lower, as if its loss were silently scaled: outside 83 +- max(3 x 0.26 / sqrt 3, 0.5)
    write_runs(env["results"], shift={"superloss": -2.0})
    capsys.readouterr()
    assert env["run"]() == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(f"| {CELL % 'superloss'} |"))
    assert "**drift**" in line and "83.00" in line and "81.00" in line and "82.50 – 83.50" in line
    assert "-2.00 points" in line
    assert sum("**drift**" in x for x in out.splitlines()) == 1  # only that cell
    check = json.load(open(os.path.join(env["results"], "nightly-check.json")))
    assert check["status"] == "fail"


def test_within_band_passes(env):
    write_runs(env["results"], shift={"superloss": 0.4})  # inside the 0.5 floor
    assert env["run"]() == 0


def test_failed_run_fails(env, capsys):
    write_runs(env["results"], status={("spl", 1): "failed"})
    capsys.readouterr()
    assert env["run"]() == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(f"| {CELL % 'spl'} |"))
    assert "**failed**" in line and "(failed)" in line


def test_missing_run_fails(env, capsys):
    p = next(p for p in plans() if p.variant == "dataparams")
    os.remove(os.path.join(env["results"], "runs", TARGET, f"{p.run_id}.json"))
    capsys.readouterr()
    assert env["run"]() == 1
    assert "**missing**" in capsys.readouterr().out


def test_expected_failure_is_shown_not_failing(env, capsys):
    write_runs(env["results"], status={("spl", 1): "failed"})
    write_suite(env["suites"], {**env["suite"], "expected_failures": [
        {"cell": CELL % "spl", "reason": "known: SPL crashes on seed 1"},
        {"claim": f"{TARGET}/full/mlp/spl-vs-erm/0", "reason": "two SPL seeds give no significant gain"}]})
    capsys.readouterr()
    assert env["run"]() == 0
    out = capsys.readouterr().out.splitlines()
    line = next(x for x in out if x.startswith(f"| {CELL % 'spl'} |"))
    assert "| expected |" in line and "known: SPL crashes on seed 1" in line
    line = next(x for x in out if x.startswith(f"| {TARGET}/full/mlp/spl-vs-erm/0 |"))
    assert "| expected |" in line and "flipped" in line


def test_flipped_claim_fails(env, capsys):
    base = json.load(open(env["baseline"]))
    base["target_floors"] = {TARGET: 10.0}  # per-target floor: every cell stays inside its band
    write_atomic(env["baseline"], base)
    write_runs(env["results"], shift={"codistill": -0.7})  # codistill now 0.2 below ERM on every seed
    capsys.readouterr()
    assert env["run"]() == 1
    out = capsys.readouterr().out.splitlines()
    assert not any("**drift**" in x for x in out)
    line = next(x for x in out if x.startswith(f"| {TARGET}/full/mlp/codistill-vs-erm/0 |"))
    assert "**flipped**" in line and "gain reproduced" in line and "contradicted" in line
    assert "outside the measured interval: the gain itself moved" in line  # the gain moved, not just its verdict


def test_bad_suite_key_exits_2(env, capsys):
    write_suite(env["suites"], {**env["suite"], "bogus": 1})
    assert env["run"]() == 2
    err = capsys.readouterr().err
    assert "'bogus'" in err and "allowed:" in err and "expected_failures" in err


def test_bad_entry_key_and_filter_exit_2(env, capsys):
    write_suite(env["suites"], {**env["suite"], "targets": [{"target": TARGET, "rows": "mlp"}]})
    assert env["run"]() == 2
    assert "'rows'" in capsys.readouterr().err
    write_suite(env["suites"], {**env["suite"], "targets": [{"target": TARGET, "filter": "row=nothing"}]})
    assert env["run"]() == 2
    assert "matches no run" in capsys.readouterr().err


def test_unknown_suite_exits_2(env, capsys):
    assert nightly.main(["no-such-suite", "--check-only", "--suites", env["suites"]]) == 2
    assert "unknown suite 'no-such-suite'" in capsys.readouterr().err


def test_unknown_expected_failure_exits_2(env, capsys):
    write_suite(env["suites"], {**env["suite"], "expected_failures": [{"cell": "nope/full/x/y/0", "reason": "r"}]})
    assert env["run"]() == 2
    assert "'nope/full/x/y/0'" in capsys.readouterr().err


def test_missing_baseline_exits_2(env, capsys):
    os.remove(env["baseline"])
    assert env["run"]() == 2
    assert "--update-baseline" in capsys.readouterr().err


def test_baseline_of_other_device_class_exits_2(env, capsys):
    base = json.load(open(env["baseline"]))
    base["devices"] = {"cuda": base["devices"]["cpu"]}
    write_atomic(env["baseline"], base)
    assert env["run"]() == 2
    err = capsys.readouterr().err
    assert "no cpu baseline" in err and "--update-baseline" in err


def test_cli_dispatches_nightly(capsys):
    assert cli.main(["nightly", "no-such-suite", "--check-only"]) == 2
    assert "unknown suite" in capsys.readouterr().err


def test_committed_cpu_baseline_passes_on_committed_runs(tmp_path, capsys):
    """The checked-in cpu-nightly baseline against the real CPU runs committed under results/runs."""
    rc = nightly.main(["cpu-nightly", "--results", os.path.join(ROOT, "results"), "--check-only",
                       "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    check = json.load(open(tmp_path / "nightly-check.json"))
    assert check["device_class"] == "cpu" and check["status"] == "pass"
    assert 45 * 60 < check["wall_seconds"] < 75 * 60  # about one hour of 2-core wall time


@pytest.mark.parametrize("name", sorted(f[:-5] for f in os.listdir(nightly.SUITE_DIR) if f.endswith(".yaml")))
def test_suites_name_existing_targets_and_filters_match(name):
    suite = nightly.load_suite(name)
    for entry in suite["targets"]:
        assert entry["target"] in targets()
        assert nightly.suite_plans({**suite, "targets": [entry]}, targets())  # raises when the filter matches none
    for x in suite.get("expected_failures") or []:
        assert x["reason"].strip()


def test_workflow_shape_and_readme():
    with open(os.path.join(ROOT, ".github", "workflows", "nightly.yml")) as f:
        wf = yaml.safe_load(f)
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert on["schedule"][0]["cron"]
    jobs = wf["jobs"]
    assert jobs["gpu-nightly"]["runs-on"] == ["self-hosted", "gpu"]
    assert jobs["cpu-nightly"]["runs-on"] == "ubuntu-latest"
    commands = {"gpu-nightly": "CLREPRO_PYTHON=python3 ./reproduce.sh nightly gpu-nightly",
                "cpu-nightly": "./reproduce.sh nightly cpu-nightly"}
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for job, cmd in commands.items():
        steps = jobs[job]["steps"]
        uses = [s.get("uses", "") for s in steps]
        assert any(u.startswith("actions/cache") for u in uses)
        assert [s.get("run") for s in steps if "reproduce.sh" in s.get("run", "")] == [cmd]
        upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
        assert upload["if"] == "always()"
        for name in ("REPORT.md", "nightly-check.md", "nightly-check.json", "runs/**/*.json"):
            assert f"results-nightly/{job}/{name}" in upload["with"]["path"]
        assert cmd in readme, f"README.md should document {cmd!r}"


def test_cells_and_claims_use_the_targets_measure(env, capsys):
    """ext-noise-fashion declares measure: {last_k: 5}: a run whose last epoch jumps by 10 points (the rest flat)
    moves its cell by 2, inside the floor when the baseline is made on the same runs, and the baseline says so."""
    for p in plans():
        path = os.path.join(env["results"], "runs", p.target, f"{p.run_id}.json")
        rec = json.load(open(path))
        acc = rec["final_test_acc"]
        rec["history"] = [dict(rec["history"][0], epoch=e + 1, test_acc=acc) for e in range(9)]
        rec["history"].append(dict(rec["history"][0], epoch=10, test_acc=acc + 10.0))
        rec["final_test_acc"] = acc + 10.0
        write_atomic(path, rec)
    assert env["run"]("--update-baseline") == 0
    base = json.load(open(env["baseline"]))["devices"]["cpu"]
    cell = base["cells"][CELL % "erm"]
    assert cell["measure"] == "last_5_mean"
    assert math.isclose(cell["mean"], ACC["erm"] + 2.0, abs_tol=1e-3)  # (4 x acc + (acc + 10)) / 5 over seeds
    assert all(c["measure"] == "last_5_mean" for c in base["claims"].values())


def test_baseline_of_another_measure_is_no_reference(env, capsys):
    base = json.load(open(env["baseline"]))
    for c in list(base["devices"]["cpu"]["cells"].values()) + list(base["devices"]["cpu"]["claims"].values()):
        c.pop("measure")  # a baseline made before the target declared its measure: the final epoch's
    write_atomic(env["baseline"], base)
    assert env["run"]() == 1
    out = capsys.readouterr().out
    assert "the baseline measured final_epoch, the target now measures last_5_mean: run --update-baseline" in out
