"""`include:` (issue 20): a target names another target's variants, recipes and rows instead of copying them, so
the figure targets and a researcher's own target train exactly the table's runs; bad includes are named."""
import os

import pytest
import yaml

from conftest import ROOT
from benchmarks.errors import UsageError
from benchmarks.targets.loader import load_target, load_targets

TDIR = os.path.join(ROOT, "benchmarks", "targets")
TARGETS = load_targets(TDIR)


@pytest.mark.parametrize("fig,table", [("blcl-fig3", "blcl-table1"), ("blcl-fig5", "blcl-table1"),
                                       ("blcl-fig6", "blcl-table1"), ("blcl-fig8", "blcl-table1"),
                                       ("blcl-fig10", "blcl-table3"), ("dataparams-fig4", "dataparams-table2")])
def test_figure_targets_hold_only_what_they_draw_and_train_the_tables_runs(fig, table):
    raw = yaml.safe_load(open(os.path.join(TDIR, f"{fig}.yaml")))
    assert raw["include"] == table and "recipes" not in raw
    assert all(set(r) <= {"use", "variants", "scale_of"} for r in raw["rows"])
    for budget in TARGETS[fig].raw["budgets"]:
        if budget in TARGETS[table].raw["budgets"] and TARGETS[fig].raw["budgets"][budget] == \
                TARGETS[table].raw["budgets"][budget]:
            assert {p.run_id for p in TARGETS[fig].plans(budget)} <= {p.run_id for p in TARGETS[table].plans(budget)}


def test_an_edit_to_the_table_recipe_reaches_the_figure(tmp_path):
    for name in ("blcl-table1", "blcl-fig5"):
        raw = yaml.safe_load(open(os.path.join(TDIR, f"{name}.yaml")))
        if name == "blcl-table1":
            raw["recipes"]["resnet"]["optimizer"]["weight_decay"] = 5.0e-4
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    fig = load_target(str(tmp_path / "blcl-fig5.yaml"))  # the copy beside it wins over the built-in one
    assert {p.spec["recipe"]["optimizer"]["weight_decay"] for p in fig.plans("full")} == {5.0e-4}


def _own(tmp_path, **over):
    raw = {"name": "ext-mine", "paper": "ext", "artifact": "mine", "title": "t", "include": "blcl-table4",
           "rows": [{"use": "mlp", "variants": ["erm", "blcl"]}]}
    raw.update(over)
    path = tmp_path / "ext-mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_include_from_a_folder_of_ones_own(tmp_path):
    t = load_target(_own(tmp_path))
    table = {p.run_id for p in TARGETS["blcl-table4"].plans("full") if p.row == "mlp"}
    assert {p.run_id for p in t.plans("full")} <= table and len(t.plans("full")) == 6


@pytest.mark.parametrize("over,needle", [
    ({"include": "blcl-table99"}, "include 'blcl-table99': no target of that name"),
    ({"include": "../etc"}, "include must name a target"),
    ({"rows": [{"use": "nosuchrow"}]}, "use 'nosuchrow' is not a row of blcl-table4; rows: mlp"),
    ({"variants": {"erm": {"method": "spl"}}}, "variants.erm differs from blcl-table4's variants.erm"),
    ({"rows": [{"use": "mlp", "variants": ["nosuch"]}]}, "unknown variant 'nosuch'"),
])
def test_bad_includes_are_named(tmp_path, over, needle):
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_target(_own(tmp_path, **over))


def test_include_cycle_is_named(tmp_path):
    for a, b in (("ext-a", "ext-b"), ("ext-b", "ext-a")):
        (tmp_path / f"{a}.yaml").write_text(yaml.safe_dump(
            {"name": a, "paper": "ext", "artifact": a, "title": a, "include": b, "rows": []}))
    with pytest.raises(UsageError, match="makes a cycle"):
        load_target(str(tmp_path / "ext-a.yaml"))
