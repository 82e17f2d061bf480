"""The report's contract, checked on hand-written result JSONs: published vs measured cells, "not run" cells,
mean +- sample std and n, the Welch interval and the verdict wording, failed runs ignored, diverged runs counted."""
import json
import os

import pytest

from conftest import ROOT
from benchmarks.report import gain_interval, verdict, write_report
from benchmarks.runner import SCHEMA_VERSION, write_atomic
from benchmarks.schema import problems
from benchmarks.targets import load_targets

TARGETS = load_targets(os.path.join(ROOT, "benchmarks", "targets"))


def record(plan, acc, status="ok", teacher=None):
    hist = [{"epoch": 1, "lr": 0.01, "train_loss": 0.5, "train_ce": 0.5, "train_acc": 80.0, "test_loss": 0.6,
             "test_acc": acc if acc is not None else 0.0, "seconds": 1.0, "quartile_share": [0.1, 0.2, 0.3, 0.4],
             "quartile_share_ce": [0.1, 0.2, 0.3, 0.4]}]
    extras = {} if teacher is None else {"teacher_final_test_acc": teacher}
    return {"schema_version": SCHEMA_VERSION, "run_id": plan.run_id, "target": plan.target, "row": plan.row,
            "variant": plan.variant, "compare_as": plan.compare_as, "spec": plan.spec, "status": status,
            "error": None if status != "failed" else "RuntimeError: boom", "final_test_acc": acc,
            "best_test_acc": acc, "history": hist if status != "failed" else [], "extras": extras,
            "provenance": {"git_sha": "abc", "git_dirty": False, "python": "3.11", "torch": "2", "torchvision": "0",
                           "cuda": None, "device": "cpu (test)", "host": "h", "start": "s", "end": "e",
                           "wall_seconds": 10.0}}


@pytest.fixture
def filled(tmp_path):
    """blcl-table5 at full budget: erm 69/70/71, blcl 71/72/73 (+ a failed 4th seed), blcl-label not run."""
    t = TARGETS["blcl-table5"]
    accs = {"erm": [69.0, 70.0, 71.0], "blcl": [71.0, 72.0, 73.0]}
    for plan in t.plans("full"):
        if plan.variant in accs:
            rec = record(plan, accs[plan.variant][plan.spec["seed"]],
                         teacher=74.0 if plan.variant == "blcl" else None)
            assert problems(rec) == []
            write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{plan.run_id}.json"), rec)
    extra = t.plans("full", seeds=[3])
    failed = [p for p in extra if p.variant == "blcl"][0]
    write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{failed.run_id}.json"), record(failed, None, "failed"))
    return write_report(TARGETS, str(tmp_path / "results"), str(tmp_path / "REPORT.md"))


def _line(text, start):
    return next(ln for ln in text.splitlines() if ln.startswith(start))


def test_cells(filled):
    assert _line(filled, "| WordCNN | erm |") == "| WordCNN | erm | 69.50 | 70.00 ± 1.00 (n=3) | +0.50 | — | 10 s |"
    assert _line(filled, "| WordCNN | blcl |") == \
        "| WordCNN | blcl | 71.29 | 72.00 ± 1.00 (n=3) [failed: 1] | +0.71 | 74.00 ± 0.00 (n=3) | 10 s |"
    assert _line(filled, "| WordCNN | blcl-label") == \
        "| WordCNN | blcl-label (as blcl) | 71.29 | not run | — | — | — |"


def test_verdicts(filled):
    # gain 2.00, se = sqrt(1/3 + 1/3) = 0.8165, Welch df = 4, t(0.975, 4) = 2.7764 -> half-width 2.267
    line = _line(filled, "| BLCL improves WordCNN on MR over conventional training | blcl vs erm")
    assert "| +1.79 | +2.00 [-0.27, +4.27] |" in line
    assert "not significant" in line and "published gain lies within" in line
    assert "| — | not run |" in _line(filled, "| BLCL improves WordCNN on MR over conventional training | blcl-label")


def test_table4_untouched_and_summary(filled):
    assert "| [blcl-table5](#blcl-table5) | BLCL Table V | 6 / 9 |" in filled
    assert "| [blcl-table4](#blcl-table4) | BLCL Table IV | 0 / 18 |" in filled
    assert _line(filled, "| MLP | erm |") == "| MLP | erm | 98.76 | not run | — | — | — |"
    assert "Seeds run: 0, 1, 2, 3; device: cpu (test)" in filled


def test_figures_linked_and_written(filled, tmp_path):
    for fig in ("loss_curves", "quartile_shares"):
        rel = f"results/figures/blcl-table5/full-{fig}.png"
        assert f"]({rel})" in filled
        assert os.path.getsize(tmp_path / rel) > 1000


def test_report_is_deterministic(filled, tmp_path):
    again = write_report(TARGETS, str(tmp_path / "results"), str(tmp_path / "REPORT2.md"))
    assert again == filled


@pytest.mark.parametrize("a,b,expect", [
    ([2.0, 2.1, 1.9], [0.0, 0.1, -0.1], "reproduced"),   # gain 2 +- small, published 2
    ([5.0, 5.1, 4.9], [0.0, 0.1, -0.1], "gain reproduced (significant), size differs"),
    ([0.0, 0.1, -0.1], [2.0, 2.1, 1.9], "contradicted"),
])
def test_verdict_rules(a, b, expect):
    iv = gain_interval(a, b)
    assert verdict(2.0, iv, len(a), len(b)).startswith(expect)


def test_verdict_needs_two_seeds():
    assert gain_interval([1.0], [0.0, 0.5]) is None
    assert verdict(1.0, None, 1, 2).startswith("too few runs")
    assert verdict(1.0, None, 0, 3) == "not run"


def test_welch_interval_value():
    gain, lo, hi = gain_interval([71.0, 72.0, 73.0], [69.0, 70.0, 71.0])
    assert gain == pytest.approx(2.0)
    assert hi - gain == pytest.approx(2.7764 * (2 / 3) ** 0.5, rel=1e-4)


def test_json_round_trip_is_sorted(tmp_path):
    plan = TARGETS["blcl-table5"].plans("full")[0]
    p = str(tmp_path / "x.json")
    write_atomic(p, record(plan, 70.0))
    text = open(p).read()
    assert json.loads(text)["run_id"] == plan.run_id
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"
