"""Your own method against the papers' (README: Benchmark your own method): the walkthrough's plugin and target run
at smoke budget and give the same JSONs, tables, verdict lines and figures as built-in methods; a broken plugin is
a clear error naming the file (exit 2, nothing written)."""
import glob
import hashlib
import json
import os

import pytest

from conftest import ROOT
from benchmarks.run.schema import problems
from benchmarks.targets.loader import load_targets
from tests.test_cli import _args, _nothing_written, cli  # noqa: F401  (fixture)

PLUGIN = os.path.join(ROOT, "examples", "focal_plugin.py")
TARGETS = os.path.join(ROOT, "examples", "targets")


def test_walkthrough_runs_at_smoke_budget(tmp_path, cli, data_root):  # noqa: F811
    r = cli("ext-focal-mnist", "--targets", TARGETS, "--plugin", PLUGIN, "--budget", "smoke", "--device", "cpu",
            *_args(tmp_path), data=data_root)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.load(open(f)) for f in glob.glob(str(tmp_path / "results" / "runs" / "*" / "*.json"))]
    assert len(recs) == 9 and all(problems(rec) == [] and rec["status"] == "ok" for rec in recs)
    focal = [rec for rec in recs if rec["spec"]["method"]["name"] == "focal"]
    assert len(focal) == 3 and focal[0]["spec"]["method"]["gamma"] == 2.0
    sha = hashlib.sha256(open(PLUGIN, "rb").read()).hexdigest()
    assert all(rec["provenance"]["plugins"][0]["sha256"] == sha for rec in recs)
    assert focal[0]["provenance"]["plugins"][0]["methods"] == ["focal"]
    # ERM and BLCL are BLCL Table IV's own runs: the same run ids
    table4 = load_targets()["blcl-table4"]
    ids = {p.run_id for p in table4.plans("smoke") if p.row == "mlp" and p.variant in ("erm", "blcl")}
    assert {rec["run_id"] for rec in recs if rec["spec"]["method"]["name"] != "focal"} == ids
    report = open(tmp_path / "REPORT.md").read()
    section = report.split("## ext-focal-mnist:")[1]
    assert "| MLP | focal | — |" in section and "| MLP | erm | 98.76 |" in section  # Table IV's published ERM
    assert "| Focal loss (gamma 2) improves the MNIST MLP over conventional training |" in report.split("## ext-")[0]
    assert os.path.isfile(tmp_path / "results" / "figures" / "ext-focal-mnist" / "smoke-loss_curves.png")


def test_plugin_from_the_environment(tmp_path, cli, data_root, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CLREPRO_PLUGINS", PLUGIN)
    r = cli("ext-focal-mnist", "--targets", TARGETS, "--budget", "smoke", "--dry-run", *_args(tmp_path),
            data=data_root)
    assert r.returncode == 0, r.stderr
    assert "9 runs, 0 done, 9 to run" in r.stdout


def test_the_target_without_its_plugin_says_how(tmp_path, cli, data_root):  # noqa: F811
    import benchmarks.plugins as plugins
    import methods.registry as reg

    saved, loaded = reg._METHODS.pop("focal", None), dict(plugins.LOADED)  # as in a fresh process
    plugins.LOADED.clear()
    try:
        r = cli("ext-focal-mnist", "--targets", TARGETS, "--budget", "smoke", *_args(tmp_path), data=data_root)
    finally:
        plugins.LOADED.update(loaded)
        if saved is not None:
            reg._METHODS["focal"] = saved
    assert r.returncode == 2 and "unknown method 'focal'" in r.stderr and "--plugin" in r.stderr
    _nothing_written(tmp_path)


@pytest.mark.parametrize("source,needle", [
    ("def broken(:\n", "SyntaxError"),
    ("import numpy\nraise RuntimeError('my bug')\n", "RuntimeError: my bug"),
    ("from methods import register_method, Method\n\n@register_method\nclass E(Method):\n    name = 'erm'\n",
     "registered twice"),
    ("import no_such_package_here\n", "ModuleNotFoundError"),
])
def test_a_broken_plugin_is_named_with_exit_2(tmp_path, cli, data_root, source, needle):  # noqa: F811
    bad = tmp_path / "my_method.py"
    bad.write_text(source)
    r = cli("blcl-table4", "--budget", "smoke", "--plugin", str(bad), *_args(tmp_path), data=data_root)
    assert r.returncode == 2
    assert str(bad) in r.stderr and needle in r.stderr and "Traceback" not in r.stderr
    if needle in ("SyntaxError", "RuntimeError: my bug"):
        line = 1 if needle == "SyntaxError" else 2
        assert f"{bad}:{line}" in r.stderr
    _nothing_written(tmp_path)


@pytest.mark.parametrize("plugin,needle", [("no/such/file.py", "no such file"),
                                           ("no_such_module_xyz", "no module of that name")])
def test_a_missing_plugin_is_named(tmp_path, cli, data_root, plugin, needle):  # noqa: F811
    r = cli("list", "--plugin", plugin, *_args(tmp_path), data=data_root)
    assert r.returncode == 2 and plugin in r.stderr and needle in r.stderr
    _nothing_written(tmp_path)
