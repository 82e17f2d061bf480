"""A budget that cuts the epochs scales the learning-rate schedule to the same fractions of training (issue 18)."""
import os

import pytest
import yaml

from conftest import ROOT
from benchmarks.targets.loader import load_target, load_targets, scale_schedule
from engine.optim import lr_curve

TARGETS = load_targets(os.path.join(ROOT, "benchmarks", "targets"))


def _lrs(schedule, epochs):
    return lr_curve(schedule, epochs, 0.1)


def test_blcl_table1_reduced_decays_at_the_same_fractions():
    plan = next(p for p in TARGETS["blcl-table1"].plans("reduced") if p.row == "resnet20")
    recipe = plan.spec["recipe"]
    assert recipe["epochs"] == 16 and recipe["schedule"]["milestones"] == [8, 12]
    lrs = _lrs(recipe["schedule"], 16)
    assert lrs[7] == pytest.approx(0.1) and lrs[8] == pytest.approx(0.01) and lrs[12] == pytest.approx(0.001)
    full = next(p for p in TARGETS["blcl-table1"].plans("full") if p.row == "resnet20").spec["recipe"]
    assert full["schedule"]["milestones"] == [80, 120]  # the paper's setting is untouched


@pytest.mark.parametrize("schedule,epochs,new,expect", [
    ({"name": "multistep", "milestones": [80, 120], "gamma": 0.1}, 160, 30, {"milestones": [15, 22]}),
    ({"name": "multistep", "milestones": [150, 250], "gamma": 0.1}, 300, 30, {"milestones": [15, 25]}),
    ({"name": "multistep", "milestones": [80, 120], "gamma": 0.1}, 160, 1, {"milestones": [1]}),
    ({"name": "cosine_restarts", "period": 10}, 100, 20, {"period": 2}),
    ({"name": "exponential", "gamma": 0.9}, 10, 5, {"gamma": pytest.approx(0.81)}),
    ({"name": "cosine"}, 160, 16, {}),
    ({"name": "constant"}, 160, 16, {}),
])
def test_scale_schedule(schedule, epochs, new, expect):
    out = scale_schedule(schedule, epochs, new)
    assert out == {**schedule, **expect}
    assert schedule == dict(schedule)  # the recipe's own dict is not changed


def test_exponential_scaled_ends_at_the_same_lr():
    full = _lrs({"name": "exponential", "gamma": 0.9}, 10)
    short = _lrs(scale_schedule({"name": "exponential", "gamma": 0.9}, 10, 5), 5)
    assert short[-1] * 0.81 == pytest.approx(full[-1] * 0.9)


def test_every_multistep_target_budget_keeps_its_milestones_inside_training():
    for t in TARGETS.values():
        for budget in t.raw["budgets"]:
            for p in t.plans(budget, seeds=[0]):
                r = p.spec["recipe"]
                if r["schedule"]["name"] == "multistep" and r["epochs"] > 1:
                    assert max(r["schedule"]["milestones"]) <= r["epochs"], (t.name, budget, r)


def test_a_budget_with_its_own_schedule_keeps_it(tmp_path):
    raw = yaml.safe_load(open(os.path.join(ROOT, "benchmarks", "targets", "blcl-table1.yaml")))
    raw["budgets"]["reduced"] = {"epochs": 10, "schedule": {"name": "multistep", "milestones": [3], "gamma": 0.5}}
    path = tmp_path / "blcl-table1.yaml"
    path.write_text(yaml.safe_dump(raw))
    plan = load_target(str(path)).plans("reduced")[0]
    assert plan.spec["recipe"]["schedule"] == {"name": "multistep", "milestones": [3], "gamma": 0.5}
