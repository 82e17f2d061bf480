"""SuperLoss's figures as targets (issue 10, SuperLoss part): the settings the suite could source, every-epoch loss
snapshots with the corruption mask for Fig. 4, and each target end to end at smoke budget on tiny files in the real
on-disk formats."""
import glob
import json
import os

import numpy as np
import pytest

from conftest import ROOT
from benchmarks.run.schema import problems
from benchmarks.targets.loader import load_targets, snapshot_epochs
from fixtures_data import run_smoke

TARGETS = load_targets(os.path.join(ROOT, "benchmarks", "targets"))


def test_fig5_settings_and_no_invented_numbers():
    t = TARGETS["superloss-fig5"]
    assert not t.raw.get("published")  # no number is known: none is shown
    plans = [p for p in t.plans("full") if not p.row.startswith("cpu-")]  # the paper's rows (the CPU row: below)
    assert sorted({p.spec["data"]["noise"]["rate"] for p in plans}) == [0.0, 0.2, 0.4, 0.6, 0.8]
    lam = {(p.row, p.spec["method"]["tau"]): p.spec["method"]["lam"] for p in plans if p.spec["method"]["name"] == "superloss"}
    assert lam == {("cifar10", "logC"): 1.0, ("cifar10", "ema"): 1.0, ("cifar100", "logC"): 0.25, ("cifar100", "ema"): 0.25}
    assert len(plans) == 90
    cpu = [p for p in t.plans("full") if p.row == "cpu-cifar10"]
    assert len(cpu) == 24 and {p.spec["method"].get("lam") for p in cpu} == {None, 1.0}


def test_fig4_reuses_fig5_runs_and_snapshots_every_epoch():
    fig5 = {p.run_id for p in TARGETS["superloss-fig5"].plans("full")}
    fig4 = [p for p in TARGETS["superloss-fig4"].plans("full") if p.row == "cifar100"]
    assert {p.run_id for p in fig4} <= fig5 and all(p.spec["data"]["noise"]["rate"] == 0.6 for p in fig4)
    snaps = snapshot_epochs(TARGETS)
    assert all(snaps[p.run_id] == set(range(1, 121)) for p in fig4)
    cpu = [p for p in TARGETS["superloss-fig4"].plans("full") if p.row == "cpu-cifar100"]
    assert len(cpu) == 1 and snaps[cpu[0].run_id] == set(range(1, 31))


SMOKE = ["superloss-fig3", "superloss-fig4", "superloss-fig5"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    base = tmp_path_factory.mktemp("sl")
    return base, run_smoke(str(base), SMOKE)


def test_every_superloss_target_runs_at_smoke_budget(smoke):
    base, codes = smoke
    assert codes == {t: 0 for t in SMOKE}
    recs = [json.load(open(f)) for f in glob.glob(str(base / "results" / "runs" / "*" / "*.json"))]
    # 12 paper-row runs + the CPU rows at 60% noise (smoke rates 0 and 0.6): fig5 CE and SuperLoss, fig4 SuperLoss
    assert len(recs) == 15 and all(problems(r) == [] and r["status"] == "ok" for r in recs)
    noisy = [r for r in recs if r["extras"].get("snapshots")]
    assert {r["run_id"] for r in noisy} == {p.run_id for p in TARGETS["superloss-fig4"].plans("smoke", seeds=[0])}
    for r in noisy:
        arrays = np.load(base / r["extras"]["snapshots"]["file"])
        assert {"ce_1", "loss_1", "noisy"} <= set(arrays.files)
        assert arrays["noisy"].sum() == round(0.6 * 4)  # symmetric noise corrupts exactly round(p N) labels
    for fig in ("superloss-fig4/smoke-loss_groups.png", "superloss-fig5/smoke-noise_curves.png",
                "superloss-fig3/full-superloss_surface.png"):
        assert os.path.isfile(base / "results" / "figures" / fig)
