"""The command line's fast path (issue 20): cached targets equal the fully validated ones and import no torch;
the cache follows every YAML and source it depends on; cached dataset presence sees files appear and go; figures
are redrawn only when their inputs change."""
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from benchmarks.targets import catalog
from benchmarks.errors import UsageError
from benchmarks.targets.loader import load_targets as load_full

TDIR = os.path.join(ROOT, "benchmarks", "targets")


def _plans(targets):
    return {(n, b): [(p.row, p.variant, p.compare_as, p.run_id) for p in t.plans(b)]
            for n, t in targets.items() for b in t.raw["budgets"]}


def test_cached_targets_equal_the_validated_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path))
    full = load_full(TDIR)
    first = catalog.load_targets(TDIR)  # a miss: the full path, then written
    assert os.listdir(tmp_path) and all(t.cached is None for t in first.values())
    hit = catalog.load_targets(TDIR)
    assert all(t.cached is not None for t in hit.values())
    assert _plans(hit) == _plans(full) and {n: t.raw for n, t in hit.items()} == {n: t.raw for n, t in full.items()}
    # explicit seeds take the full path and agree with it
    t = hit["blcl-table4"]
    assert [p.run_id for p in t.plans("full", seeds=[7])] == [p.run_id for p in full["blcl-table4"].plans("full", seeds=[7])]


def test_a_warm_command_line_imports_no_torch(tmp_path):
    env = {**os.environ, "CLREPRO_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    code = ("import sys\nfrom benchmarks.cli import main\nrc = main(sys.argv[1:])\n"
            "assert rc == 0, rc\nassert 'torch' not in sys.modules, 'torch imported'\n")
    for argv in (["list"], ["blcl-table1", "--dry-run"], ["report", "--report", str(tmp_path / "R.md"),
                                                          "--results", str(tmp_path / "results")]):
        subprocess.run([sys.executable, "-c", "from benchmarks.cli import main; main(%r)" % argv], cwd=ROOT, env=env,
                       capture_output=True, timeout=600)  # warm the cache
        r = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, (argv, r.stderr[-2000:])


def test_the_cache_follows_the_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path / "cache"))
    tdir = tmp_path / "targets"
    tdir.mkdir()
    shutil.copy(os.path.join(TDIR, "blcl-table4.yaml"), tdir)
    before = catalog.load_targets(str(tdir))["blcl-table4"].plans("full")
    raw = yaml.safe_load(open(tdir / "blcl-table4.yaml"))
    raw["recipes"]["mnist-mlp"]["epochs"] = 3
    (tdir / "blcl-table4.yaml").write_text(yaml.safe_dump(raw))
    after = catalog.load_targets(str(tdir))["blcl-table4"].plans("full")
    assert {p.spec["recipe"]["epochs"] for p in after if p.row == "mlp"} == {3}
    assert {p.run_id for p in before} != {p.run_id for p in after}
    raw["recipes"]["mnist-mlp"]["epochs"] = 0  # invalid: the full path names it, and nothing stale is served
    (tdir / "blcl-table4.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UsageError, match="epochs must be a positive integer"):
        catalog.load_targets(str(tdir))


def test_the_cache_follows_the_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path))
    k1 = catalog._key(TDIR)
    monkeypatch.setattr(catalog, "_source_digest", lambda pkg: "changed" if pkg == "methods" else "same")
    assert catalog._key(TDIR) != k1


def test_cached_presence_sees_files_appear_and_go(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(catalog, "_PRESENCE", catalog._DiskCache("presence.json"))
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    assert catalog.present("mnist", str(root)) is False
    raw.mkdir(parents=True)
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for n in names:
        (raw / n).write_bytes(b"x")
    assert catalog.present("mnist", str(root)) is True  # the recorded paths changed: checked afresh
    monkeypatch.setattr("data.dataset_present", lambda *a: pytest.fail("a cache hit must not run the full check"))
    assert catalog.present("mnist", str(root)) is True
    (raw / names[0]).unlink()
    monkeypatch.undo()
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path / "cache"))
    assert catalog.present("mnist", str(root)) is False


def test_figures_are_redrawn_only_when_their_inputs_change(tmp_path, monkeypatch):
    from benchmarks.report import figures
    from benchmarks.report.markdown import write_report
    from benchmarks.run.runner import write_atomic
    from tests.test_report import record

    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path / "cache"))
    targets = load_full(TDIR)
    t = targets["blcl-table5"]
    plans = [p for p in t.plans("full") if p.variant == "erm"]
    for i, p in enumerate(plans):
        write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{p.run_id}.json"), record(p, 70.0 + i))
    calls = []
    real = figures.draw
    monkeypatch.setattr(figures, "draw", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    write_report({t.name: t}, str(tmp_path / "results"), str(tmp_path / "R.md"))
    assert sorted(calls) == ["loss_curves", "quartile_shares"]
    calls.clear()
    write_report({t.name: t}, str(tmp_path / "results"), str(tmp_path / "R.md"))
    assert calls == []  # same inputs: the PNGs are kept
    write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{plans[0].run_id}.json"), record(plans[0], 60.0))
    write_report({t.name: t}, str(tmp_path / "results"), str(tmp_path / "R.md"))
    assert sorted(calls) == ["loss_curves", "quartile_shares"]
    os.remove(tmp_path / "results" / "figures" / t.name / "full-loss_curves.png")
    calls.clear()
    write_report({t.name: t}, str(tmp_path / "results"), str(tmp_path / "R.md"))
    assert calls == ["loss_curves"]
