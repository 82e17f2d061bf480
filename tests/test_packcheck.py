"""`./reproduce.sh packcheck` (issue 11): packed and unpacked runs of a target trained side by side in scratch
folders, compared per seed and judged per cell against the seed noise; the suite's results/ untouched."""
import json
import os

import pytest

from conftest import ROOT
from benchmarks.perf import packcheck
from benchmarks.report.performance import performance_section


def test_packcheck_smoke_contract(tmp_path, data_root):
    before = sorted(os.listdir(os.path.join(ROOT, "results", "runs")))
    argv = ["blcl-table4", "--budget", "smoke", "--filter", "row=mlp variant=erm ", "--seeds", "0,1", "--pack",
            "2", "--device", "cpu", "--out", str(tmp_path), "--data", data_root]
    rc = packcheck.main(argv)
    with open(tmp_path / "packcheck-blcl-table4-cpu.json") as f:
        res = json.load(f)
    assert rc in (0, 1)  # 1: a cell differs (two tiny seeds can); the JSON says which
    assert res["target"] == "blcl-table4" and res["budget"] == "smoke" and res["pack"] == 2
    assert res["device_class"] == "cpu" and res["engine_options"]["amp"] == "none"
    assert [r["seed"] for r in res["runs"]] == [0, 1]
    for r in res["runs"]:
        assert r["unpacked_status"] == r["packed_status"] == "ok"
        assert r["difference"] == pytest.approx(r["packed"] - r["unpacked"])
        assert sorted(r["packed_with"]) == sorted(x["run_id"] for x in res["runs"])  # really trained packed
    (cell,) = res["cells"]
    assert cell["seeds"] == [0, 1] and cell["max_abs_difference"] == max(abs(r["difference"]) for r in res["runs"])
    lo, hi = cell["interval"]
    assert cell["verdict"].startswith("agree") == (lo <= 0 <= hi)
    assert cell["mean_difference"] == pytest.approx(sum(r["difference"] for r in res["runs"]) / 2)
    assert res["pooled"]["n"] == 2 and (rc == 0) == cell["verdict"].startswith("agree")
    assert sorted(os.listdir(os.path.join(ROOT, "results", "runs"))) == before
    text = performance_section(str(tmp_path))
    assert "### Packed vs unpacked runs (CPU" in text and "| mlp | erm | 0 |" in text and cell["verdict"] in text


def test_compare_verdicts():
    class P:
        def __init__(self, seed, rid):
            self.run_id, self.row, self.variant = rid, "r", "erm"
            self.spec = {"seed": seed, "model": {"name": "m"}}

    plans = [P(0, "a"), P(1, "b"), P(2, "c")]

    def recs(accs):
        return {p.run_id: {"final_test_acc": a, "status": "ok", "provenance": {"wall_seconds": 1.0}}
                for p, a in zip(plans, accs)}

    # differences -0.5, 0, +0.5: mean 0, paired interval about +-1.24: agree
    _, (cell,) = packcheck.compare(plans, recs([90.0, 91.0, 92.0]), recs([90.5, 91.0, 91.5]))
    assert cell["seed_std"] == pytest.approx(1.0) and cell["max_abs_difference"] == pytest.approx(0.5)
    assert cell["mean_difference"] == pytest.approx(0.0) and cell["interval"][1] == pytest.approx(1.2421, abs=1e-3)
    assert cell["verdict"].startswith("agree")
    # packed 2.9-3.1 points above every seed: a systematic shift
    _, (cell,) = packcheck.compare(plans, recs([90.0, 91.0, 92.0]), recs([93.0, 94.1, 94.9]))
    assert cell["verdict"].startswith("DIFFER") and cell["interval"][0] > 0
    _, (cell,) = packcheck.compare(plans, recs([90.0, 91.0, 92.0]), {"a": recs([90.0])["a"]})
    assert cell["verdict"].startswith("not decided")


@pytest.mark.parametrize("argv,name", [(["blcl-table4", "--pack", "1"], "--pack"),
                                       (["nosuch"], "nosuch"),
                                       (["blcl-table4", "--filter", "row=nosuchrow"], "matches")])
def test_bad_input_exits_2(argv, name, capsys, tmp_path):
    assert packcheck.main(argv + ["--out", str(tmp_path)]) == 2
    assert name in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # nothing written
