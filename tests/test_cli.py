"""The command line's contract: bad input exits 2 naming the bad value and writes nothing; smoke budgets run
both targets end to end with schema-valid JSONs; a rerun runs nothing and leaves the JSONs byte-identical."""
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from benchmarks.cli import main
from benchmarks.run.schema import problems

TARGETS = os.path.join(ROOT, "benchmarks", "targets")


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """Call the command line in-process (as `python -m benchmarks` does) and capture its exit code and output."""

    def call(*args, data=None):
        capsys.readouterr()
        argv = list(args) + (["--data", data] if data else [])
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's own errors
            rc = e.code
        out = capsys.readouterr()
        return Result(rc, out.out, out.err)

    return call


def test_module_entry_point_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks", "nosuchtarget", *_args(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "nosuchtarget" in r.stderr
    _nothing_written(tmp_path)


def _nothing_written(tmp_path):
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "REPORT.md").exists()


def _args(tmp_path):
    return ["--results", str(tmp_path / "results"), "--report", str(tmp_path / "REPORT.md")]


def test_unknown_target_exits_2_and_lists_known(tmp_path, cli):
    r = cli("table99", *_args(tmp_path))
    assert r.returncode == 2
    assert "table99" in r.stderr and "blcl-table4" in r.stderr and "blcl-table5" in r.stderr
    _nothing_written(tmp_path)


@pytest.mark.parametrize("args,needle", [(["--budget", "huge"], "huge"), (["--seeds", "0,x"], "0,x"),
                                         (["--filter", "("], "("), (["--device", "tpu"], "tpu")])
def test_bad_option_exits_2(tmp_path, cli, args, needle):
    r = cli("blcl-table5", *args, *_args(tmp_path))
    assert r.returncode == 2 and needle in r.stderr
    _nothing_written(tmp_path)


def _bad_target(cli, tmp_path, mutate):
    d = tmp_path / "targets"
    d.mkdir()
    raw = yaml.safe_load(open(os.path.join(TARGETS, "blcl-table5.yaml")))
    mutate(raw)
    (d / "blcl-table5.yaml").write_text(yaml.safe_dump(raw))
    return cli("blcl-table5", "--budget", "smoke", "--targets", str(d), *_args(tmp_path))


@pytest.mark.parametrize("mutate,needle", [
    (lambda raw: raw.update(epochz=3), "epochz"),
    (lambda raw: raw["variants"]["blcl"].update(rr=2), "rr"),
    (lambda raw: raw["variants"]["blcl"].update(reading="both"), "both"),
    (lambda raw: raw["variants"].update(spl={"method": "nosuch"}), "nosuch"),
    (lambda raw: raw["rows"][0].update(dataset="cifar11"), "cifar11"),
    (lambda raw: raw["rows"][0]["model"].update(name="resnet20"), "resnet20"),
    (lambda raw: raw["recipes"]["mr-wordcnn"]["optimizer"].update(name="lamb"), "lamb"),
    (lambda raw: raw["budgets"].update(tiny={"epochs": 1}), "tiny"),
    (lambda raw: raw["rows"][0]["model"].update(dropout="lots"), "lots"),
    (lambda raw: raw["recipes"]["mr-wordcnn"]["optimizer"].update(lr="fast"), "fast"),
    (lambda raw: raw["rows"][0]["noise"].update(rates=[0.2]), "none"),
    (lambda raw: raw["rows"].append(dict(raw["rows"][0])), "unique"),
    (lambda raw: raw["published"][0].update(value="n/a"), "n/a"),
    (lambda raw: raw["variants"].update(erm=None), "variants.erm"),
    (lambda raw: raw["rows"][0]["noise"].update(rates=0.5), "rates"),
    (lambda raw: raw.update(external=[{"row": "wordcnn", "variant": "ermm", "value": 1.0, "source": "x"}]), "ermm"),
    (lambda raw: raw.update(external=[{"row": "wordcnn", "variant": "erm", "value": "high", "source": "x"}]), "high"),
    (lambda raw: raw.update(external=[{"row": "wordcnn", "variant": "erm", "value": 1.0, "sauce": "x"}]), "sauce"),
    (lambda raw: raw["budgets"]["reduced"].update(reasons="x"), "reasons"),
    (lambda raw: raw["claims"][0].update(metric="val_loss"), "val_loss"),
    (lambda raw: raw["claims"][0].update(trend=3), "trend"),
    (lambda raw: raw["claims"][0].update(trend="grows with the noise"), "2+ noise rates"),
    (lambda raw: raw.update(read_at_epoch={"epoch": 84, "off": 120}), "off"),
    (lambda raw: raw.update(read_at_epoch={"epoch": 84, "of": 12}), "epoch <= of"),
])
def test_bad_yaml_exits_2_naming_the_key(tmp_path, cli, mutate, needle):
    r = _bad_target(cli, tmp_path, mutate)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    _nothing_written(tmp_path)


def test_list_and_dry_run(tmp_path, cli, data_root):
    r = cli("list", data=data_root)
    assert r.returncode == 0
    assert "blcl-table4" in r.stdout and "18" in r.stdout and "mnist [present]" in r.stdout
    r = cli("table4", "--budget", "smoke", "--dry-run", "--filter", "row=mlp", *_args(tmp_path), data=data_root)
    assert r.returncode == 0
    assert "9 runs, 0 done, 9 to run" in r.stdout and "resnet20" not in r.stdout
    _nothing_written(tmp_path)


def _digests(results):
    return {p: (hashlib.sha256(open(p, "rb").read()).hexdigest(), os.stat(p).st_mtime_ns)
            for p in glob.glob(os.path.join(results, "runs", "*", "*.json"))}


@pytest.mark.parametrize("target,n_runs,n_figs,extra", [
    ("blcl-table4", 18, 2, []), ("blcl-table5", 9, 2, []), ("ext-mr-kim", 15, 2, []),
    ("ext-noise-fashion", 30, 3, ["--seeds", "0"]),  # every method under every noise rate, one seed (CI time)
    ("ext-distill-fashion", 15, 1, []),  # 12 students and their 3 teachers (one per seed, shared by KD/MEKD/DCD)
])
def test_smoke_end_to_end_and_rerun_is_a_noop(tmp_path, cli, data_root, target, n_runs, n_figs, extra):
    r = cli(target, "--budget", "smoke", "--device", "cpu", *extra, *_args(tmp_path), data=data_root)
    assert r.returncode == 0, r.stderr[-3000:]
    files = glob.glob(str(tmp_path / "results" / "runs" / target / "*.json"))
    assert len(files) == n_runs
    for f in files:
        rec = json.load(open(f))
        assert problems(rec) == [], (f, problems(rec))
        assert rec["status"] == "ok" and rec["spec"]["budget"] == "smoke" and rec["target"] == target
        assert os.path.basename(f) == rec["run_id"] + ".json"
    report = (tmp_path / "REPORT.md").read_text()
    assert f"## {target}" in report and "### Budget `smoke`" in report and "not run" in report
    figs = glob.glob(str(tmp_path / "results" / "figures" / target / "smoke-*.png"))
    assert len(figs) == n_figs
    before = _digests(str(tmp_path / "results"))
    r = cli(target, "--budget", "smoke", "--device", "cpu", *extra, *_args(tmp_path), data=data_root)
    assert r.returncode == 0
    n_matrix = n_runs - 3 if target == "ext-distill-fashion" else n_runs  # teachers are not in the matrix
    assert f"{n_matrix} runs in the matrix, {n_matrix} already done, 0 to run" in r.stdout + r.stderr
    assert _digests(str(tmp_path / "results")) == before
    assert (tmp_path / "REPORT.md").read_text() == report


def test_filter_matching_nothing_exits_2(tmp_path, cli):
    r = cli("blcl-table5", "--filter", "row=nosuchrow", *_args(tmp_path))
    assert r.returncode == 2 and "nosuchrow" in r.stderr
    _nothing_written(tmp_path)


def test_data_folder_without_the_dataset_exits_2_before_writing(tmp_path, cli):
    empty = tmp_path / "nodata"
    empty.mkdir()
    r = cli("blcl-table5", "--budget", "smoke", "--no-download", *_args(tmp_path), data=str(empty))
    assert r.returncode == 2
    assert "'mr'" in r.stderr and str(empty) in r.stderr
    _nothing_written(tmp_path)


def test_results_naming_a_file_exits_2(tmp_path, cli):
    f = tmp_path / "afile"
    f.write_text("x")
    r = cli("blcl-table5", "--budget", "smoke", "--results", str(f), "--report", str(tmp_path / "REPORT.md"))
    assert r.returncode == 2 and "afile" in r.stderr and "file" in r.stderr
    assert f.read_text() == "x" and not (tmp_path / "REPORT.md").exists()


def test_help_names_the_other_commands(capsys):
    """`reproduce.sh --help` lists the subcommands dispatched before its own parser, and each answers --help."""
    from benchmarks.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("'bench'", "'packcheck TARGET'", "'nightly SUITE'", "'test'"):
        assert cmd in out, cmd
    for cmd in ("bench", "packcheck", "nightly"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0 and f"reproduce.sh {cmd}" in capsys.readouterr().out
