"""Rows sized for a 2-core CPU (issue 19): row-level seeds / scale_of / reason in the target YAMLs, the report's
"for scale" cells, and the CPU-hours estimate from measured speed (benchmarks/perf/cost.py) with its FLOP cache."""
import json
import math
import os

import pytest
import torch
import yaml

from conftest import ROOT
from benchmarks.perf import cost
from benchmarks.errors import UsageError
from benchmarks.report.markdown import write_report
from benchmarks.run.runner import teacher_plans, write_atomic
from benchmarks.targets.loader import load_targets
from tests.test_report import record

TARGETS = load_targets(os.path.join(ROOT, "benchmarks", "targets"))


def _cpu(target):
    return [p for p in TARGETS[target].plans("full") if p.row.startswith("cpu-")]


def test_the_five_cpu_rows_and_their_runs():
    sl5 = _cpu("superloss-fig5")
    assert len(sl5) == 24 and {p.spec["data"]["noise"]["rate"] for p in sl5} == {0.2, 0.4, 0.6, 0.8}
    assert {p.spec["model"]["name"] for p in sl5} == {"resnet8"} and {p.variant for p in sl5} == {"ce", "sl-logc-c10"}
    sl4 = _cpu("superloss-fig4")
    assert [(p.variant, p.spec["seed"], p.spec["data"]["dataset"]) for p in sl4] == [("sl-logc-c100", 0, "cifar100")]
    dp = _cpu("dataparams-table2")
    assert len(dp) == 18
    inst = [p for p in dp if p.variant == "dp-inst"]
    assert {p.spec["data"]["noise"]["kind"] for p in inst} == {"uniform", "shuffle"}
    m = inst[0].spec["method"]
    assert (m["level"], m["lr_inst"], m["wd_inst"], m["init_inst"], m["skip_rows"]) == \
        ("instance", 0.2, 0.0, 1.0, "zero_grad")  # the official CIFAR setting and the official update
    assert sum(p.spec["data"]["noise"].get("drop_corrupted", False) for p in dp) == 6
    # dataparams-fig4's CPU rows are the same runs (its Fig. 4 view reads them)
    assert {p.run_id for p in _cpu("dataparams-fig4")} == {p.run_id for p in inst}
    dcd = _cpu("dcd-table1")
    students = [p for p in dcd if p.row == "cpu-cifar10"]
    assert {p.variant for p in students} == {"erm", "kd-cpu", "mekd-cpu", "dcd-cpu"}
    assert all(p.spec["data"]["val_size"] == 5000 for p in dcd)
    teachers = {p.run_id for p in dcd if p.row == "cpu-cifar10-teacher"}
    used = {t.run_id for p in students for t in teacher_plans(p).values()}
    assert used == teachers and len(teachers) == 3  # one teacher per seed, trained by the teacher row
    assert {p.spec["roles"]["teacher"]["model"]["name"] for p in students if "roles" in p.spec} == {"resnet20"}
    rnd = _cpu("dataparams-random")
    assert [(p.variant, p.spec["seed"]) for p in rnd] == [("erm", 0), ("dp-class", 0)]
    assert {p.spec["data"]["noise"]["rate"] for p in rnd} == {1.0}


def test_cpu_rows_leave_the_paper_rows_untouched():
    for target in ("superloss-fig5", "dataparams-table2", "dcd-table1", "dataparams-random", "superloss-fig4"):
        for p in TARGETS[target].plans("full"):
            if not p.row.startswith("cpu-"):
                assert p.spec["model"]["name"] not in ("resnet8",) or target == "dcd-table1"
                assert p.spec["seed"] in (0, 1, 2)
    paper = [p for p in TARGETS["superloss-fig5"].plans("full") if not p.row.startswith("cpu-")]
    assert len(paper) == 90 and {p.spec["recipe"]["epochs"] for p in paper} == {120}


def test_explicit_seeds_override_row_seeds():
    t = TARGETS["superloss-fig4"]
    assert {p.spec["seed"] for p in t.plans("full", seeds=[5]) if p.row == "cpu-cifar100"} == {5}


@pytest.mark.parametrize("mutate,needle", [
    (lambda r: r["rows"][-1].update(scale_of="nosuchrow"), "scale_of 'nosuchrow'"),
    (lambda r: r["rows"][-1].update(seeds=[]), "seeds must be a non-empty list"),
    (lambda r: r["rows"][-1].update(seeds=["0"]), "seeds must be a non-empty list"),
    (lambda r: r["rows"][-1].update(reason=""), "reason must be a non-empty string"),
])
def test_bad_row_keys_are_named(tmp_path, mutate, needle):
    raw = yaml.safe_load(open(os.path.join(ROOT, "benchmarks", "targets", "superloss-fig4.yaml")))
    mutate(raw)
    (tmp_path / "superloss-fig4.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UsageError, match=needle):
        load_targets(str(tmp_path))


def test_report_shows_the_paper_row_for_scale_without_a_difference(tmp_path):
    t = TARGETS["dataparams-table2"]
    accs = {"erm": [60.0, 61.0, 62.0], "dp-inst": [70.0, 72.0, 71.0]}
    for p in t.plans("full"):
        if p.row == "cpu-cifar10-uniform":
            write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{p.run_id}.json"),
                         record(p, accs[p.variant][p.spec["seed"]]))
    text = write_report({t.name: t}, str(tmp_path / "results"), str(tmp_path / "REPORT.md"))
    row = "| CPU row: CIFAR-10, 40% noise (uniform), ResNet-8, 20 epochs, noise 0.4 | erm |"
    line = next(ln for ln in text.splitlines() if ln.startswith(row))
    assert "67.97 ± 0.62 (the paper's CIFAR-10, 40% noise (uniform); for scale)" in line
    assert "| 61.00 ± 1.00 (n=3) | — |" in line  # no measured - published across backbones
    section = text.split("\n## dataparams-table2:")[1]
    claim = next(ln for ln in section.splitlines() if ln.startswith("| CPU row (ResNet-8, 20 epochs), CIFAR-10, 40% uniform"))
    assert "+23.13 (the paper's CIFAR-10, 40% noise (uniform); for scale)" in claim
    assert "+10.00 [" in claim and "gain reproduced (significant) |" in claim  # no 'published gain lies ...'
    assert "Rows sized for a 2-core CPU" in text and "ResNet-8 for 20 epochs (lr x0.1 at 13 and 17)" in text


HERE = "Test CPU family 1 model 1, avx2"


def _cpu_run(tmp_path, plan, seconds, cpu=HERE, selected=None):
    rec = record(plan, 50.0)
    rec["provenance"].update(device_type="cpu", engine={"pack": 1}, cpu=cpu)
    rec["history"] = [dict(rec["history"][0], epoch=e + 1, seconds=s) for e, s in enumerate(seconds)]
    for h, n in zip(rec["history"], selected or []):
        h["extras"] = {"n_selected": n}
    write_atomic(str(tmp_path / "runs" / plan.target / f"{plan.run_id}.json"), rec)


def test_cpu_hours_from_measured_runs(tmp_path):
    sl4 = _cpu("superloss-fig4")[0]  # ResNet-8, CIFAR-100, 30 epochs
    r8 = [p for p in TARGETS["blcl-table1"].plans("reduced") if p.row == "resnet8" and p.variant == "erm"][0]
    _cpu_run(tmp_path, r8, [100.0, 30.0, 31.0, 29.0, 30.0])  # median 30 s per 50,000-image epoch
    rates = cost.CpuRates.measure(str(tmp_path), here=HERE)
    f8 = cost.forward_flops(json.dumps(r8.spec["model"], sort_keys=True), "cifar10")
    rate, how = rates.rate("resnet8", f8)
    assert rate == pytest.approx(3 * f8 * 50000 / 30.0) and how == "measured: resnet8, 1 CPU measurement on this CPU"
    hours, how = rates.plan_hours(sl4)
    f8c100 = cost.forward_flops(json.dumps(sl4.spec["model"], sort_keys=True), "cifar100")
    assert hours == pytest.approx(3 * f8c100 * 50000 * 30 / rate / 3600)
    assert 0.2 < hours < 0.3
    # a model never run on the CPU takes the nearest measured model's rate, and says so
    r20 = [p for p in TARGETS["blcl-table1"].plans("reduced") if p.row == "resnet20" and p.variant == "erm"][0]
    hours20, how = rates.plan_hours(r20)
    assert how == "no CPU run of resnet20: the rate of resnet8, nearest in FLOPs, on this CPU"
    f20 = cost.forward_flops(json.dumps(r20.spec["model"], sort_keys=True), "cifar10")
    assert hours20 == pytest.approx(3 * f20 * 50000 * 16 / rate / 3600)
    # a bf16-autocast run is not a measurement of the float32 default (it would halve the estimate)
    r8b = [p for p in TARGETS["blcl-table1"].plans("reduced") if p.row == "resnet8" and p.variant == "spl"][0]
    _cpu_run(tmp_path, r8b, [10.0, 10.0, 10.0])
    rec_path = tmp_path / "runs" / r8b.target / f"{r8b.run_id}.json"
    rec = json.loads(rec_path.read_text())
    rec["provenance"]["engine"]["amp"] = "bf16"
    rec_path.write_text(json.dumps(rec))
    assert cost.CpuRates.measure(str(tmp_path), here=HERE).rate("resnet8", f8) == (
        rate, "measured: resnet8, 1 CPU measurement on this CPU")
    # packed runs, GPU runs and failed runs are not measurements of this CPU
    assert cost.CpuRates.measure(str(tmp_path / "nothing"), here=HERE).plan_hours(sl4) is None


def test_cpu_speed_is_taken_from_this_cpu_kind_when_measured(tmp_path):
    """Hosts differ ~2x: this CPU kind's measurements win; without any, all are used and the estimate says so."""
    plans = [p for p in TARGETS["blcl-table1"].plans("reduced") if p.row == "resnet8"]
    _cpu_run(tmp_path, plans[0], [30.0], cpu="Fast CPU, avx512")
    _cpu_run(tmp_path, plans[1], [30.0], cpu=None)  # a record from before `cpu` was written
    f8 = cost.forward_flops(json.dumps(plans[0].spec["model"], sort_keys=True), "cifar10")
    fast = 3 * f8 * 50000 / 30.0
    rate, how = cost.CpuRates.measure(str(tmp_path), here=HERE).rate("resnet8", f8)
    assert rate == pytest.approx(fast)
    assert how == "measured: resnet8, 2 CPU measurements on other CPUs (none on this one)"
    _cpu_run(tmp_path, plans[2], [60.0])  # this CPU, twice as slow: the only measurement used from now on
    rates = cost.CpuRates.measure(str(tmp_path), here=HERE)
    assert rates.rate("resnet8", f8) == (pytest.approx(fast / 2), "measured: resnet8, 1 CPU measurement on this CPU")
    # a model measured only elsewhere takes this CPU's nearest model, not the other host's own measurement
    r20 = [p for p in TARGETS["blcl-table1"].plans("reduced") if p.row == "resnet20"][0]
    _cpu_run(tmp_path, r20, [10.0], cpu="Fast CPU, avx512")
    f20 = cost.forward_flops(json.dumps(r20.spec["model"], sort_keys=True), "cifar10")
    rates = cost.CpuRates.measure(str(tmp_path), here=HERE)
    assert rates.rate("resnet20", f20) == (
        pytest.approx(fast / 2), "no CPU run of resnet20: the rate of resnet8, nearest in FLOPs, on this CPU")
    assert rates.rate("resnet20", f20) != cost.CpuRates.measure(str(tmp_path), here="Fast CPU, avx512").rate(
        "resnet20", f20)


def test_cpu_kind_names_model_family_and_vector_unit(monkeypatch, tmp_path):
    from benchmarks.run import host, provenance

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                    "model name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx avx2 fma\n\nprocessor\t: 1\n"
                    "model name\t: other\nflags\t\t: avx512f\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(info if f == "/proc/cpuinfo" else f, *a, **k))
    host._cpuinfo.cache_clear()
    try:
        assert host.cpu_kind() == "AMD EPYC family 25 model 1, avx2"
        assert host.cpu_name() == "AMD EPYC"
        assert provenance.environment(torch.device("cpu"))["cpu"] == "AMD EPYC family 25 model 1, avx2"
        assert provenance.device_name(torch.device("cpu")).startswith("cpu (AMD EPYC family 25 model 1, avx2, ")
    finally:
        host._cpuinfo.cache_clear()


def test_teacher_forward_and_oracle_subset_enter_the_cpu_estimate(tmp_path):
    r8 = [p for p in TARGETS["blcl-table1"].plans("reduced") if p.row == "resnet8" and p.variant == "erm"][0]
    _cpu_run(tmp_path, r8, [30.0])
    rates = cost.CpuRates.measure(str(tmp_path), here=HERE)
    dcd = _cpu("dcd-table1")
    erm = next(p for p in dcd if p.row == "cpu-cifar10" and p.variant == "erm")
    kd = next(p for p in dcd if p.variant == "kd-cpu" and p.spec["seed"] == erm.spec["seed"])
    f8 = cost.forward_flops(json.dumps(erm.spec["model"], sort_keys=True), "cifar10")
    f20 = cost.forward_flops(json.dumps({"name": "resnet20"}, sort_keys=True), "cifar10")
    assert rates.plan_hours(kd)[0] / rates.plan_hours(erm)[0] == pytest.approx((3 * f8 + f20) / (3 * f8))
    dp = _cpu("dataparams-table2")
    oracle = next(p for p in dp if p.variant == "oracle")
    base = next(p for p in dp if p.variant == "erm")
    assert rates.plan_hours(oracle)[0] / rates.plan_hours(base)[0] == pytest.approx(0.6, abs=1e-3)


def test_a_curriculum_counts_the_images_it_trained_on(tmp_path):
    """MEKD's stages and DCD's window train on a subset (extras.n_selected): the rate divides the images actually
    trained on by the epoch's seconds, and the row's other seeds are estimated at the measured share."""
    dcd = _cpu("dcd-table1")
    erm0, erm1 = sorted((p for p in dcd if p.variant == "erm"), key=lambda p: p.spec["seed"])[:2]
    mekd0, mekd1 = sorted((p for p in dcd if p.variant == "mekd-cpu"), key=lambda p: p.spec["seed"])[:2]
    kd1 = next(p for p in dcd if p.variant == "kd-cpu" and p.spec["seed"] == 1)
    _cpu_run(tmp_path, erm0, [30.0] * 15)  # 45,000 images in 30 s
    rate0 = cost.CpuRates.measure(str(tmp_path), here=HERE).rate("resnet8", 1.0)[0]
    # a curriculum of the same speed: a third of the data in a third of the time for 10 epochs, all of it for 5
    # (the median epoch is a short one: a rate from the whole training set would be 3x too fast)
    n = cost.train_images(mekd0.spec)
    assert n == 45000
    sel = [n // 3] * 10 + [n] * 5
    f8 = cost.forward_flops(json.dumps(erm0.spec["model"], sort_keys=True), "cifar10")
    f20 = cost.forward_flops(json.dumps({"name": "resnet20"}, sort_keys=True), "cifar10")
    kd_secs = 30.0 * (3 * f8 + f20) / (3 * f8)  # its work per image adds the teacher's forward
    _cpu_run(tmp_path, mekd0, [kd_secs / 3] * 10 + [kd_secs] * 5, selected=sel)
    rates = cost.CpuRates.measure(str(tmp_path), here=HERE)
    assert [r for r, _, _ in rates.pool["resnet8"]] == pytest.approx([rate0, rate0])  # not 3x for the short epochs
    # seed 1 of the same row: estimated at the measured share of sample passes, (10/3 + 5) / 15 = 5/9
    full, how_full = rates.plan_hours(kd1)
    part, how = rates.plan_hours(mekd1)
    assert part / full == pytest.approx(5 / 9)
    assert how == (f"{how_full}; mekd trains on 56% of the full-data sample passes (measured on 1 finished run "
                   f"of its setting)")
    assert rates.plan_hours(erm1) == rates.plan_hours(erm0) and " trains on " not in rates.plan_hours(erm1)[1]
    # another setting of the method (more epochs) has no measured share: the whole training set every epoch
    other = dict(mekd1.spec, recipe=dict(mekd1.spec["recipe"], epochs=30))
    hours, how = rates.run_hours(other, 1)
    assert hours == pytest.approx(2 * full) and how == how_full
    # a record with fewer epochs than its recipe measures no share
    _cpu_run(tmp_path, mekd1, [kd_secs / 3] * 5, selected=[n // 3] * 5)
    shares = cost.CpuRates.measure(str(tmp_path), here=HERE).shares
    assert shares[cost.setting_key(mekd1.spec)] == [pytest.approx(5 / 9)]
    assert shares[cost.setting_key(erm1.spec)] == [1.0]


def test_flops_are_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path))
    cost.forward_flops.cache_clear()
    monkeypatch.setattr(cost, "_FLOPS_CACHE", cost._DiskCache("flops.json"))
    model = json.dumps({"name": "resnet8"})
    first = cost.forward_flops(model, "cifar10")
    assert math.isclose(first, json.load(open(tmp_path / "flops.json"))[next(iter(
        json.load(open(tmp_path / "flops.json"))))])
    cost.forward_flops.cache_clear()
    monkeypatch.setattr(cost, "_FLOPS_CACHE", cost._DiskCache("flops.json"))
    monkeypatch.setattr(cost, "_count_flops", lambda *a: pytest.fail("counted again despite the cache"))
    assert cost.forward_flops(model, "cifar10") == first
    cost.forward_flops.cache_clear()


def test_list_shows_the_cpu_rows_with_cpu_hours(capsys, tmp_path, monkeypatch):
    from benchmarks.cli import main
    from benchmarks.run import host

    monkeypatch.setattr(host, "cpu_kind", lambda: HERE)
    r8 = [p for p in TARGETS["blcl-table1"].plans("reduced") if p.row == "resnet8" and p.variant == "erm"][0]
    _cpu_run(tmp_path, r8, [30.0])
    assert main(["list", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "CPU-h" in out and "Rows and budgets sized for a CPU:" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("superloss-fig5") and "row cpu-cifar10" in ln)
    assert line.split()[3] == "24" and "measured: resnet8, 1 CPU measurement on this CPU" in line
    assert 2.0 < float(line.split()[4]) < 5.0
    assert out.splitlines()[-1].startswith(f"speeds measured on this CPU, this one being {HERE}: resnet8 ") and "GFLOP/s" in out
    # a second host's runs: the estimate keeps this CPU's speed and the spread between hosts is printed
    r8b = [p for p in TARGETS["blcl-table1"].plans("reduced") if p.row == "resnet8" and p.variant == "spl"][0]
    _cpu_run(tmp_path, r8b, [15.0], cpu="Fast CPU, avx512")
    assert main(["list", "--results", str(tmp_path)]) == 0
    out2 = capsys.readouterr().out
    assert next(ln for ln in out2.splitlines() if ln.startswith("superloss-fig5") and "row cpu-cifar10" in ln) == line
    assert out2.splitlines()[-1].startswith("by CPU (all models): Fast CPU, avx512: ")
    assert f"{HERE} (this one): " in out2.splitlines()[-1]
    # a finished curriculum run: its row names the speed once, then the curriculum's measured share
    mekd = next(p for p in _cpu("dcd-table1") if p.variant == "mekd-cpu")
    _cpu_run(tmp_path, mekd, [10.0] * 15, selected=[15000] * 15)
    assert main(["list", "--results", str(tmp_path)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("dcd-table1") and "row cpu-cifar10 " in ln)
    assert line.endswith("measured: resnet8, 2 CPU measurements on this CPU; mekd trains on 33% of the full-data "
                         "sample passes (measured on 1 finished run of its setting)")
