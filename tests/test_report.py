"""The report's contract, checked on hand-written result JSONs: published vs measured cells, "not run" cells,
mean +- sample std and n, the Welch interval and the verdict wording, failed runs ignored, diverged runs counted."""
import json
import os

import pytest

from conftest import ROOT
from benchmarks.report.markdown import gain_interval, verdict, write_report
from benchmarks.run.runner import SCHEMA_VERSION, write_atomic
from benchmarks.run.schema import problems
from benchmarks.targets.loader import load_targets

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
    assert _line(filled, "| WordCNN | erm |") == "| WordCNN | erm | 69.50 | 70.00 ± 1.00 (n=3) | +0.50 | 70.00 ± 1.00 (n=3) | — | 10 s |"
    assert _line(filled, "| WordCNN | blcl |") == \
        "| WordCNN | blcl | 71.29 | 72.00 ± 1.00 (n=3) [failed: 1] | +0.71 | 72.00 ± 1.00 (n=3) | 74.00 ± 0.00 (n=3) | 10 s |"
    assert _line(filled, "| WordCNN | blcl-label") == \
        "| WordCNN | blcl-label (as blcl) | 71.29 | not run | — | — | — | — |"


def test_verdicts(filled):
    # per-seed differences 2, 2, 2: paired interval of zero width; the published gain (1.79) lies outside
    line = _line(filled, "| BLCL (Eq. 3 as printed) improves WordCNN on MR over conventional training | blcl vs erm")
    assert "| +1.79 | +2.00 [+2.00, +2.00] (paired) |" in line
    assert "gain reproduced (significant); the published gain lies outside the interval" in line
    # a claim naming a variant covers that variant only, with the published gain of the column it is compared as
    section = filled.split("## blcl-table5:")[1].split("\n## ")[0]
    label = [ln for ln in section.splitlines() if ln.startswith("| BLCL (label reading) improves WordCNN")]
    assert len(label) == 1 and "| blcl-label vs erm | +1.79 | — | not run |" in label[0]
    assert len([ln for ln in section.splitlines() if "| blcl vs erm |" in ln]) == 1


def test_claims_at_a_glance_open_the_report(filled):
    assert filled.startswith("# clrepro reproduction report\n\n## Claims at a glance\n")
    glance = filled.split("## Claims at a glance")[1].split("\n## ")[0]
    line = _line(glance, "| BLCL (Eq. 3 as printed) improves WordCNN on MR")
    assert line == ("| BLCL (Eq. 3 as printed) improves WordCNN on MR over conventional training | `full` (10 ep, "
                    "seeds 0,1,2): **reproduced** +2.00 [+2.00, +2.00] (paired) | +1.79 | [blcl-table5](#blcl-table5) |")
    assert _line(glance, "| BLCL (label reading) improves WordCNN").endswith("| not run | +1.79 | [blcl-table5](#blcl-table5) |")
    # every claim of every target has exactly one line (noise rates apart)
    n_claims = sum(len(t.raw.get("claims", [])) for t in TARGETS.values() if t.raw["paper"] != "ext")
    assert len([ln for ln in glance.splitlines() if ln.startswith("| ") and "](#" in ln]) >= n_claims
    assert "Totals (claim x budget run): " in glance and "1 reproduced" in glance


def test_uncertain_published_values_give_no_published_gain(tmp_path):
    t = TARGETS["blcl-table2"]
    for plan in t.plans("full"):
        if plan.row == "resnet8" and plan.variant in ("erm", "codistill"):
            acc = 60.0 + plan.spec["seed"] + (1.0 if plan.variant == "codistill" else 0.0)
            write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{plan.run_id}.json"), record(plan, acc))
    text = write_report(TARGETS, str(tmp_path / "results"), str(tmp_path / "REPORT.md"))
    section = text.split("## blcl-table2:")[1].split("\n## ")[0]
    line = _line(section, "| ResNet-8: Co-distillation beats conventional training | codistill vs erm")
    assert "| — | +1.00 [+1.00, +1.00] (paired) |" in line and "published gain" not in line  # no +10.06
    assert _line(section, "| ResNet-8 | codistill |").startswith(
        "| ResNet-8 | codistill | 70.27 (alignment uncertain) | 62.00 ± 1.00 (n=3) | — |")


def test_table4_untouched_and_summary(filled):
    assert "| [blcl-table5](#blcl-table5) | BLCL Table V | 6 / 9 |" in filled
    assert "| [blcl-table4](#blcl-table4) | BLCL Table IV | 0 / 18 |" in filled
    assert _line(filled, "| MLP | erm |") == "| MLP | erm | 98.76 | not run | — | — | — | — |"
    assert "Seeds run: 0, 1, 2, 3; device: cpu (test)" in filled


def test_figures_linked_and_written(filled, tmp_path):
    for fig in ("loss_curves", "quartile_shares"):
        rel = f"results/figures/blcl-table5/full-{fig}.png"
        assert f"]({rel})" in filled
        assert os.path.getsize(tmp_path / rel) > 1000


def test_report_is_deterministic(filled, tmp_path):
    again = write_report(TARGETS, str(tmp_path / "results"), str(tmp_path / "REPORT2.md"))
    assert again == filled


def _seeds(values):
    return dict(enumerate(values))


@pytest.mark.parametrize("a,b,expect", [
    ([2.0, 2.3, 1.9], [0.0, 0.1, -0.1], "gain reproduced (significant); the published gain lies within"),
    ([5.0, 5.3, 4.9], [0.0, 0.1, -0.1], "gain reproduced (significant); the published gain lies outside"),
    ([0.0, 0.1, -0.1], [2.0, 2.3, 1.9], "contradicted"),
    ([1.0, -1.0, 0.5], [0.0, 0.0, 0.0], "not significant"),
])
def test_verdict_rules(a, b, expect):
    iv = gain_interval(_seeds(a), _seeds(b))
    assert verdict(2.0, iv, len(a), len(b)).startswith(expect)


def test_verdict_without_published_gain_says_nothing_of_size():
    iv = gain_interval(_seeds([2.0, 2.3, 1.9]), _seeds([0.0, 0.1, -0.1]))
    assert verdict(None, iv, 3, 3) == "gain reproduced (significant)"


def test_verdict_needs_two_seeds():
    assert gain_interval({0: 1.0}, {0: 0.0, 1: 0.5}) is None
    assert verdict(1.0, None, 1, 2).startswith("too few runs")
    assert verdict(1.0, None, 0, 3) == "not run"


def test_paired_interval_value():
    # differences 2, 1, 3: mean 2, sd 1, t(0.975, 2) = 4.3027 -> half-width 4.3027 / sqrt(3)
    gain, lo, hi, kind = gain_interval(_seeds([71.0, 71.0, 74.0]), _seeds([69.0, 70.0, 71.0]))
    assert kind == "paired" and gain == pytest.approx(2.0)
    assert hi - gain == pytest.approx(4.3027 / 3**0.5, rel=1e-4)


def test_welch_interval_when_seeds_differ():
    # 71,72,73 vs 69,70,71 on other seeds: se = sqrt(1/3 + 1/3), Welch df = 4, t(0.975, 4) = 2.7764
    gain, lo, hi, kind = gain_interval({0: 71.0, 1: 72.0, 2: 73.0}, {3: 69.0, 4: 70.0, 5: 71.0})
    assert kind == "Welch" and gain == pytest.approx(2.0)
    assert hi - gain == pytest.approx(2.7764 * (2 / 3) ** 0.5, rel=1e-4)


def test_json_round_trip_is_sorted(tmp_path):
    plan = TARGETS["blcl-table5"].plans("full")[0]
    p = str(tmp_path / "x.json")
    write_atomic(p, record(plan, 70.0))
    text = open(p).read()
    assert json.loads(text)["run_id"] == plan.run_id
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"


def test_claims_compare_within_each_noise_rate(tmp_path):
    import copy

    from benchmarks.targets.loader import Target

    raw = copy.deepcopy(TARGETS["blcl-table5"].raw)
    raw["rows"][0]["noise"] = {"kind": "symmetric", "rates": [0.2, 0.4]}
    raw["published"] = []
    t = Target(raw, "x.yaml")
    acc = {(0.2, "erm"): 60.0, (0.2, "blcl"): 61.0, (0.4, "erm"): 40.0, (0.4, "blcl"): 41.0}
    for plan in t.plans("full"):
        key = (plan.spec["data"]["noise"]["rate"], plan.variant)
        if key in acc:
            rec = record(plan, acc[key] + 0.1 * plan.spec["seed"] * (plan.variant == "blcl"))
            write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{plan.run_id}.json"), rec)
    text = write_report({t.name: t}, str(tmp_path / "results"), str(tmp_path / "R.md"))
    for rate in ("0.2", "0.4"):
        line = _line(text, f"| BLCL (Eq. 3 as printed) improves WordCNN on MR over conventional training (noise {rate}) "
                           f"| blcl vs erm")
        assert "| — | +1.10 [" in line and "gain reproduced (significant)" in line, line


def test_published_only_baselines_are_rendered_never_as_our_runs(tmp_path):
    import shutil

    import yaml

    tdir = tmp_path / "targets"
    tdir.mkdir()
    raw = yaml.safe_load(open(os.path.join(ROOT, "benchmarks", "targets", "blcl-table5.yaml")))
    raw["published_only"] = {"l2t-dlf": "L2T-DLF [30]"}
    raw["published"].append({"row": "wordcnn", "variant": "l2t-dlf", "value": 70.25, "source": "test"})
    yaml.safe_dump(raw, open(tdir / "blcl-table5.yaml", "w"))
    targets = load_targets(str(tdir))
    text = write_report(targets, str(tmp_path / "results"), str(tmp_path / "REPORT.md"))
    assert _line(text, "| WordCNN | L2T-DLF [30] |") == \
        "| WordCNN | L2T-DLF [30] | 70.25 | published only: not a method of this suite | — | — | — | — |"
    raw["published_only"] = {"erm": "clash"}  # a quoted name may not be a variant
    yaml.safe_dump(raw, open(tdir / "blcl-table5.yaml", "w"))
    from benchmarks.errors import UsageError

    with pytest.raises(UsageError, match="published_only"):
        load_targets(str(tdir))
    shutil.rmtree(tdir)


def _noise_records(tmp_path):
    """ext-noise-fashion at full budget, two seeds: ERM falls with noise, Data Parameters' sigma splits."""
    t = TARGETS["ext-noise-fashion"]
    for plan in t.plans("full", seeds=[0, 1]):
        if plan.variant not in ("erm", "dataparams"):
            continue
        rate = plan.spec["data"]["noise"]["rate"]
        rec = record(plan, 88.0 - 40 * rate + plan.spec["seed"])
        if plan.variant == "dataparams":
            rec["history"][0]["extras"] = {"inst_sigma_clean_mean": 1.0, "inst_sigma_noisy_mean": 1.0 + rate}
        write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{plan.run_id}.json"), rec)
    return write_report(TARGETS, str(tmp_path / "results"), str(tmp_path / "REPORT.md"))


def test_noise_study_figures_and_per_rate_claims(tmp_path):
    from benchmarks.report.figures import run_frame, sigma_frame

    text = _noise_records(tmp_path)
    figs = os.listdir(tmp_path / "results" / "figures" / "ext-noise-fashion")
    assert sorted(figs) == ["full-loss_curves.png", "full-noise_curves.png", "full-sigma_clean_noisy.png"]
    # one claim line per noise rate; equal accuracies per seed: a zero gain, not significant
    lines = [ln for ln in text.split("\n## ext-noise-fashion:")[1].splitlines() if ln.startswith("| Data Parameters (instance) beat ERM")]
    assert len(lines) == 5 and all("+0.00" in ln for ln in lines)
    # the clean cell of a row that sweeps the noise names its rate too (never read as a noisy cell)
    assert sum("(noise 0) |" in ln for ln in lines) == 1 and all("(noise " in ln for ln in lines)
    t = TARGETS["ext-noise-fashion"]
    from benchmarks.run.store import cell_key, load_records

    cells, _ = load_records(str(tmp_path / "results"))
    by_cell = {}
    for p in t.plans("full"):
        by_cell.setdefault((p.row, p.variant, p.compare_as, p.spec["data"]["noise"]["rate"]),
                           cells.get(cell_key(p.spec), []))
    runs = run_frame(by_cell, {"mlp": "MLP"})
    assert len(runs) == 20 and set(runs["variant"]) == {"erm", "dataparams"}
    assert runs[(runs.rate == 0.4) & (runs.seed == 1)]["final"].tolist() == [73.0, 73.0]
    sig = sigma_frame(by_cell, {"mlp": "MLP"})
    assert set(sig["samples"]) == {"clean", "corrupted"}
    assert sig[(sig.rate == 0.8) & (sig.samples == "corrupted")]["sigma"].tolist() == [1.8, 1.8]


def test_teacher_per_seed_cells_report_every_seed(tmp_path):
    """ext-distill-fashion: each student seed learns from the teacher of its own seed, so the students' specs
    differ in the teacher's seed too; all three seeds are one cell (a regression: only seed 0 was counted)."""
    t = TARGETS["ext-distill-fashion"]
    plans = t.plans("full")
    kd = [p for p in plans if p.variant == "kd"]
    assert len({p.spec["roles"]["teacher"]["from_run"]["seed"] for p in kd}) == 3  # the premise
    for plan in plans:
        if plan.variant in ("erm", "kd"):
            rec = record(plan, 80.0 + plan.spec["seed"] + (plan.variant == "kd"),
                         teacher=90.0 if plan.variant == "kd" else None)
            write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{plan.run_id}.json"), rec)
    text = write_report({t.name: t}, str(tmp_path / "results"), str(tmp_path / "R.md"))
    kd_line = next(ln for ln in text.splitlines() if "| kd |" in ln)
    assert "82.00 ± 1.00 (n=3)" in kd_line and "90.00 ± 0.00 (n=3)" in kd_line, kd_line
    claim = _line(text, "| KD improves the student over training alone | kd vs erm")
    assert "+1.00 [" in claim, claim
    assert "| EXT Study: curriculum distillation on Fashion-MNIST | 6 / 12 |" in text


def _table1(tmp_path, budget, accs, source=None, engine=None):
    """blcl-table1's ResNet-20 row at `budget`: variant -> accuracy per seed (seed index)."""
    t = TARGETS["blcl-table1"]
    for plan in t.plans(budget):
        if plan.row == "resnet20" and plan.variant in accs and plan.spec["seed"] < len(accs[plan.variant]):
            rec = record(plan, accs[plan.variant][plan.spec["seed"]])
            if source:
                rec["provenance"]["data_source"] = source
            if engine:
                rec["provenance"]["engine"] = engine
            assert problems(rec) == []
            write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{plan.run_id}.json"), rec)
    return write_report(TARGETS, str(tmp_path / "results"), str(tmp_path / "REPORT.md"))


def _section(text, target, budget):
    part = text.split(f'<a id="{target}"></a>')[1].split("<a id=")[0]
    return part.split(f"### Budget `{budget}`")[1].split("### Budget")[0]


def test_outside_anchor_next_to_the_full_budget_run(tmp_path):
    src = {"copy": "webp-mosaics", "path": "/x/CIFAR10", "sha256": {"x_train": "9d6dff11476b50fa" + "0" * 48,
                                                                     "x_test": "8c6044d24ea39f7c" + "0" * 48}}
    text = _section(_table1(tmp_path, "full", {"erm": [90.5]}, src), "blcl-table1", "full")
    he = _line(text, "| ResNet-20 | erm | 91.25 |")
    assert "He et al. 2016" in he and "| 90.50 (n=1) | -0.75 |" in he and "more than 0.5 points below: find out why" in he
    ref = _line(text, "| ResNet-20 | erm | 91.73 |")
    assert "-1.23" in ref and ref.endswith("| — |")  # no tolerance given: no check
    assert "Data: cifar10: this project's lossless WebP copy (`CIFAR10/`" in text and "x_train 9d6dff11476b…" in text
    assert "not the published archive" in text


def test_outside_anchor_within_tolerance(tmp_path):
    text = _section(_table1(tmp_path, "full", {"erm": [91.0]}), "blcl-table1", "full")
    assert "| -0.25 | within 0.5 points or above |" in _line(text, "| ResNet-20 | erm | 91.25 |")
    # no engine options recorded: said so, not assumed
    assert "Computed with: ResNet-20 erm: seed 0, 1 epoch, float32 (engine options not recorded), cpu (test)." in text


def test_outside_anchor_says_its_arithmetic(tmp_path):
    engine = {"amp": "bf16", "channels_last": True, "compile": False, "fused": True, "pack": 1}
    text = _section(_table1(tmp_path, "full", {"erm": [91.0]}, engine=engine), "blcl-table1", "full")
    assert "Computed with: ResNet-20 erm: seed 0, 1 epoch, bf16 autocast (weights and optimizer in float32)" in text
    with pytest.raises(ValueError, match="amp='fp8'; allowed"):
        _table1(tmp_path, "full", {"erm": [91.0]}, engine=dict(engine, amp="fp8"))


def test_reduced_budget_labelled_and_given_verdicts(tmp_path):
    text = _section(_table1(tmp_path, "reduced", {"erm": [85.0, 86.0, 85.5], "blcl": [86.0, 87.5, 86.0]}),
                    "blcl-table1", "reduced")
    assert "16 epochs instead of 160" in text and "CPU budget: 16 of 160 epochs" in text
    assert "shown for scale, not as the same setting" in text
    assert "| Verdict (budget `reduced`) |" in text and "| Published gain (full budget) |" in text
    row = _line(text, "| ResNet-20: BLCL (Eq. 3 as printed) beats conventional training | blcl vs erm | +1.25 |")
    assert "+1.00 [" in row and "(paired)" in row
    # the outside anchors compare with the full budget only
    assert "Outside anchors" not in text


def test_smoke_budget_gives_no_verdicts(tmp_path):
    t = TARGETS["blcl-table5"]
    for plan in t.plans("smoke"):
        write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{plan.run_id}.json"), record(plan, 50.0))
    text = _section(write_report(TARGETS, str(tmp_path / "results"), str(tmp_path / "REPORT.md")),
                    "blcl-table5", "smoke")
    assert "no verdicts at this budget" in text and "| Claim |" not in text


def test_every_constant_lr_target_declares_a_measure_over_epochs():
    for t in TARGETS.values():
        constant = any(r["schedule"]["name"] == "constant" for r in t.raw["recipes"].values())
        if constant and any(t.plans("full")):
            assert (t.raw.get("measure") or {}).get("last_k", 0) >= 2, t.name


def test_measure_last_k_is_the_mean_of_the_last_epochs(tmp_path):
    t = TARGETS["blcl-table5"]
    assert t.raw["measure"] == {"last_k": 3}
    for p in t.plans("full"):
        if p.variant in ("erm", "blcl"):
            rec = record(p, 70.0)
            base = 70.0 if p.variant == "erm" else 72.0
            rec["history"] = [dict(rec["history"][0], epoch=e + 1, test_acc=base + e + p.spec["seed"])
                              for e in range(10)]  # last three epochs: base + 7..9 + seed
            rec["final_test_acc"] = rec["history"][-1]["test_acc"]
            write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{p.run_id}.json"), rec)
    text = write_report({t.name: t}, str(tmp_path / "results"), str(tmp_path / "R.md"))
    assert "mean test accuracy (%) over its last 3 epochs" in text
    assert "| WordCNN | erm | 69.50 | 79.00 ± 1.00 (n=3) | +9.50 |" in text  # mean of 77..79 + seed: 78 + 1
    assert "+2.00 [+2.00, +2.00] (paired)" in text


def _history_record(p, accs):
    rec = record(p, accs[-1])
    rec["history"] = [dict(rec["history"][0], epoch=e + 1, test_acc=a) for e, a in enumerate(accs)]
    return rec


def test_rerun_verdicts_compared_per_measure(tmp_path):
    """A rerun folder (results/reruns/<label>/runs/) of the same run ids: the report counts, per measure, the claims
    whose verdict changes. Here BLCL's final-epoch gain is +2 on every seed in both sets, but in the rerun its
    epochs 8-9 fall, so its last-3 mean gain is no longer significant: 1 of 1 changes under the target's measure,
    0 of 1 under the final epoch; the ERM runs are rerun identically."""
    t = TARGETS["blcl-table5"]
    low = [-2.0, -4.0, 0.5]
    for p in t.plans("full"):
        s = p.spec["seed"]
        erm = [70.0 + 0.5 * s] * 10
        if p.variant == "erm":
            committed = rerun = erm
        elif p.variant == "blcl":
            committed = [a + 2.0 for a in erm]
            rerun = [a + 2.0 for a in erm[:7]] + [erm[7] + low[s], erm[8] + low[s], erm[9] + 2.0]
        else:
            continue
        write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{p.run_id}.json"), _history_record(p, committed))
        write_atomic(str(tmp_path / "results" / "reruns" / "again" / "runs" / t.name / f"{p.run_id}.json"),
                     _history_record(p, rerun))
    for p in t.plans("full", seeds=[3]):  # a committed seed the rerun lacks: left out of the comparison
        if p.variant in ("erm", "blcl"):
            write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{p.run_id}.json"),
                         _history_record(p, [70.0 if p.variant == "erm" else 50.0] * 10))
    text = write_report({t.name: t}, str(tmp_path / "results"), str(tmp_path / "R.md"))
    section = text.split("#### Verdicts on a rerun (`reruns/again`, budget `full`)")[1].split("\n## ")[0]
    assert ("mean of last 3 epochs (the target's measure): **1 of 1** verdicts change; "
            "final epoch: **0 of 1** verdicts change") in section
    assert "3 of 6 reruns identical to their committed run" in section
    assert "6 runs (seeds 0, 1, 2) trained again" in section and "same spec and seed (6 runs)" in section
    changed = [ln for ln in section.splitlines() if ln.endswith("**changed** |")]
    assert len(changed) == 1 and "| mean of last 3 epochs" in changed[0] and "| reproduced +2.00" in changed[0]
    assert "| not reproduced" in changed[0]
    glance = text.split("## Claims at a glance")[1].split("\n## ")[0]
    assert ("- [blcl-table5](#blcl-table5) `full`, rerun `again`: mean of last 3 epochs (the target's measure): "
            "1 of 1 change at the rerun's seeds, 0 of 1 at all the study's seeds; final epoch: 0 of 1 change at the "
            "rerun's seeds, 0 of 1 at all the study's seeds.") in glance
    # at all four seeds (seed 3's gain -20 dominates) the rerun's runs in place of seeds 0-2 change no verdict
    assert ("At all the study's seeds (0, 1, 2, 3), with the rerun's runs in place of the committed ones of seeds "
            "0, 1, 2, the verdicts that change: mean of last 3 epochs (the target's measure): **0 of 1**; "
            "final epoch: **0 of 1**") in section
    # the section's own verdict is the committed runs' over all their seeds (seed 3 included)
    assert "| blcl vs erm | +1.79 | -3.50 [" in text.split("#### Verdicts on a rerun")[0]


def test_no_rerun_no_rerun_block(filled):
    assert "Verdicts on a rerun" not in filled


def test_figure_from_files_kept_in_a_clone_without_them(tmp_path, monkeypatch):
    """loss_groups reads snapshot files that may live only under checkpoints/ of the clone that trained them: a
    clone missing any of them keeps the committed PNG while the same settings and runs (same file sha256) stand
    behind it, and never redraws it from fewer runs."""
    import hashlib

    import benchmarks.report.figures as figures
    from benchmarks.report.markdown import draw_cached

    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path / "cache"))
    results, out = tmp_path / "results", tmp_path / "results" / "figures" / "t"
    (tmp_path / "results" / "embeddings").mkdir(parents=True)
    (tmp_path / "results" / "embeddings" / "e.npz").write_bytes(b"xy")
    (tmp_path / "checkpoints").mkdir()
    recs = []
    for rid in ("r1", "r2"):
        f = tmp_path / "checkpoints" / f"{rid}.snapshots.npz"
        f.write_bytes(rid.encode())
        recs.append({"run_id": rid, "status": "ok", "extras": {"snapshots": {
            "file": f"checkpoints/{rid}.snapshots.npz", "embedding": "results/embeddings/e.npz",
            "sha256": hashlib.sha256(rid.encode()).hexdigest()}}})
    drawn = []

    def fake_draw(kind, t, budget, by_cell, labels, out_dir, devices, spec=None, results=None):
        drawn.append(kind)
        os.makedirs(out_dir, exist_ok=True)
        p = os.path.join(out_dir, f"{budget}-{kind}.png")
        open(p, "wb").write(b"png %d" % len(drawn))
        return p

    monkeypatch.setattr(figures, "draw", fake_draw)
    t = TARGETS["superloss-fig4"]

    def call(rs, spec=None):
        return draw_cached("loss_groups", t, "reduced", {("a", "b", "b", 0.6): rs}, {}, str(out), [],
                           spec=spec or {}, results=str(results))

    png = call(recs)
    side = json.load(open(png + ".inputs.json"))
    assert side["runs"] == [[r["run_id"], r["extras"]["snapshots"]["sha256"]] for r in recs] and len(drawn) == 1
    (tmp_path / "checkpoints" / "r2.snapshots.npz").unlink()  # a clone with only some of the files
    assert call(recs) == png and len(drawn) == 1 and open(png, "rb").read() == b"png 1"  # kept, not redrawn
    assert call(recs, spec={"split_epoch": 5}) == png and len(drawn) == 2  # other settings: drawn anew...
    assert not os.path.exists(png + ".inputs.json")  # ...from fewer files: the PNG no longer stands for the runs
    json.dump(side, open(png + ".inputs.json", "w"))  # the committed PNG and sidecar back (a fresh clone)
    open(png, "wb").write(b"png 1")
    (tmp_path / "checkpoints" / "r2.snapshots.npz").write_bytes(b"stale")  # a file with another sha256
    assert call(recs) == png and len(drawn) == 2  # counts as missing: the recorded PNG is kept
    other = [recs[0], dict(recs[1], run_id="r3")]
    assert call(other) == png and len(drawn) == 3  # other runs: drawn anew, never the kept PNG
    assert not os.path.exists(png + ".inputs.json") and call(recs) == png and len(drawn) == 4


def test_saturated_rows_counted_per_run(tmp_path):
    """issue 19: how often the two Data Parameters readings can differ (in-batch rows with a zero gradient)."""
    t = TARGETS["dataparams-table2"]
    for plan in t.plans("full"):
        if plan.row == "cpu-cifar10-uniform" and plan.variant == "dp-inst" and plan.spec["seed"] < 2:
            rec = record(plan, 80.0)
            rec["history"] = [dict(rec["history"][0], epoch=e, extras={"saturated_rows_instance": n,
                                                                         "saturated_rows_class": int(e == 1)})
                              for e, n in ((1, 0), (2, 3), (3, 1500 * (plan.spec["seed"] + 1)))]
            assert problems(rec) == []
            write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{plan.run_id}.json"), rec)
    text = write_report(TARGETS, str(tmp_path / "results"), str(tmp_path / "REPORT.md"))
    assert "exactly zero in float32" in text
    head = "- CPU row: CIFAR-10, 40% noise (uniform), ResNet-8, 20 epochs, noise 0.4, dp-inst"
    line = _line(text, head + " (instance level")
    assert "(instance level: an epoch's in-batch rows are one per training sample; skip_rows zero_grad): " \
           "seed 0: 1,503 rows, epochs 2-3 (2 of 3); seed 1: 3,003 rows, epochs 2-3 (2 of 3)" in line, line
    line = _line(text, head + " (class level")
    assert "distinct classes; skip_rows zero_grad): seed 0: 1 rows, epochs 1-1 (1 of 3); seed 1: 1 rows" in line, line


def test_sigma_panels_keep_rows_apart(tmp_path):
    """Data Parameters Fig. 4 view: the uniform and the shuffle rows share a noise rate but are separate panels,
    never pooled into one curve (a regression: panels were keyed by rate alone)."""
    from benchmarks.report.figures import sigma_frame
    from benchmarks.run.store import cell_key, load_records

    t = TARGETS["dataparams-table2"]
    for plan in t.plans("full"):
        if plan.row in ("cpu-cifar10-uniform", "cpu-cifar10-shuffle") and plan.variant == "dp-inst":
            rec = record(plan, 76.0)
            clean = 0.9 if plan.row.endswith("uniform") else 0.7
            rec["history"][0]["extras"] = {"inst_sigma_clean_mean": clean, "inst_sigma_noisy_mean": 1.2,
                                           "noisy_share_top40": 0.8}
            rec["extras"]["noisy_fraction"] = 0.36
            write_atomic(str(tmp_path / "results" / "runs" / t.name / f"{plan.run_id}.json"), rec)
    cells, _ = load_records(str(tmp_path / "results"))
    by_cell = {}
    for p in t.plans("full"):
        by_cell.setdefault((p.row, p.variant, p.compare_as, p.spec["data"]["noise"]["rate"]),
                           cells.get(cell_key(p.spec), []))
    sig = sigma_frame(by_cell, {r["id"]: r.get("label", r["id"]) for r in t.raw["rows"]})
    clean = sig[sig.samples == "clean"].groupby("panel")["sigma"].agg(["mean", "count"])
    assert len(clean) == 2 and sorted(clean["mean"].round(6)) == [0.7, 0.9], clean
    assert set(clean["count"]) == {3}
    write_report({t.name: t}, str(tmp_path / "results"), str(tmp_path / "R.md"))
    assert os.path.exists(tmp_path / "results" / "figures" / t.name / "full-sigma_clean_noisy.png")


def test_trend_slope_matches_least_squares():
    """SuperLoss Fig. 5's "by more as the noise grows": the slope of the per-seed gains on the rate, per +0.1 noise,
    with the t interval of ordinary least squares (checked against scipy.stats.linregress)."""
    from scipy.stats import linregress, t as student

    from benchmarks.report.stats import trend_interval

    gains = {0.2: [0.5, 1.0, 0.0], 0.4: [2.0, 2.5, 1.0], 0.6: [3.0, 4.5, 4.0], 0.8: [7.0, 6.0, 8.5]}
    points = [(r, {s: 50.0 + g for s, g in enumerate(gs)}, {s: 50.0 for s in range(3)}) for r, gs in gains.items()]
    slope, lo, hi, how = trend_interval(points)
    x = [r for r, gs in gains.items() for _ in gs]
    y = [g for gs in gains.values() for g in gs]
    ref = linregress(x, y)
    half = student.ppf(0.975, len(x) - 2) * ref.stderr
    assert slope == pytest.approx(0.1 * ref.slope) and lo == pytest.approx(0.1 * (ref.slope - half))
    assert hi == pytest.approx(0.1 * (ref.slope + half)) and "12 paired differences" in how
    assert lo > 0
    # flat gains: the interval holds zero; one rate or too few pairs: no trend
    flat = [(r, {0: 51.0, 1: 52.0}, {0: 50.0, 1: 50.0}) for r in (0.2, 0.4, 0.6)]
    assert trend_interval(flat)[1] < 0 < trend_interval(flat)[2]
    assert trend_interval(points[:1]) is None and trend_interval([(0.2, {0: 1.0}, {0: 0.0})] * 2) is None
    # two rates but only two paired differences: no degrees of freedom left, no interval
    assert trend_interval([(0.2, {0: 1.0}, {0: 0.0}), (0.4, {0: 2.0}, {0: 0.0})]) is None


def test_trend_and_train_metric_claims_in_the_report(tmp_path):
    """issue 19: SuperLoss's CPU row gets a verdict on the gain's trend over the noise rate; Data Parameters'
    random-label row compares training accuracy (memorisation), and its one seed shows the difference without an
    interval."""
    sl = TARGETS["superloss-fig5"]
    for plan in sl.plans("full"):
        if plan.row == "cpu-cifar10":
            rate, seed = plan.spec["data"]["noise"]["rate"], plan.spec["seed"]
            gain = 10 * rate + 0.5 * seed if plan.variant == "sl-logc-c10" else 0.0  # grows with the noise
            write_atomic(str(tmp_path / "results" / "runs" / sl.name / f"{plan.run_id}.json"),
                         record(plan, 60.0 - 30 * rate + gain))
    dr = TARGETS["dataparams-random"]
    for plan in dr.plans("full"):
        if plan.row == "cpu-cifar100":
            rec = record(plan, 1.0)
            # 6 epochs of training accuracy; measure last_k 5: the mean of epochs 2-6
            rec["history"] = [dict(rec["history"][0], epoch=e, test_acc=1.0,
                                   train_acc=(10.0 * e if plan.variant == "erm" else 2.0 * e)) for e in range(1, 7)]
            if plan.variant == "dp-class":  # resumed from a mid-run checkpoint: its wall is the last process's
                rec["provenance"].update(wall_seconds=50.0, engine={"resumed_from_epoch": 3})
            write_atomic(str(tmp_path / "results" / "runs" / dr.name / f"{plan.run_id}.json"), rec)
    text = write_report({sl.name: sl, dr.name: dr}, str(tmp_path / "results"), str(tmp_path / "R.md"))
    sl_text, dr_text = text.split("\n## superloss-fig5:")[1], text.split("\n## dataparams-random:")[1]
    trend = _line(sl_text, "| CPU row (ResNet-8, 15 epochs): SuperLoss's (tau = log C) gain over CE grows")
    assert "| +1.00 [+0." in trend and "(per +0.1 noise; least squares over 12 paired differences)" in trend, trend
    assert "gain reproduced (significant)" in trend
    per_rate = _line(sl_text, "| CPU row (ResNet-8, 15 epochs): SuperLoss (tau = log C) beats CE under label noise (noise 0.8)")
    assert "+8.50 [" in per_rate, per_rate
    mem = _line(dr_text, "| CPU row (ResNet-20, 75 epochs, one seed), all labels random: the class curriculum slows")
    assert "| erm vs dp-class | — | +32.00 (one seed: no interval) | too few runs" in mem, mem
    assert "gain's slope over the noise rate" not in dr_text  # a claim without `trend` has no trend row
    # the rows table shows the claim's metric next to the test accuracy (chance here): the mean of epochs 2-6
    erm_row = _line(dr_text, "| CPU row: CIFAR-100, all labels random, ResNet-20, 75 epochs, one seed, noise 1 | erm |")
    assert "| 1.00 (n=1); train_acc: 40.00 (n=1) |" in erm_row, erm_row
    dp_row = _line(dr_text, "| CPU row: CIFAR-100, all labels random, ResNet-20, 75 epochs, one seed, noise 1 | dp-class |")
    assert "; train_acc: 8.00 (n=1) |" in dp_row and "The claims compare `train_acc`" in dr_text, dp_row
    # a resumed run's time is its last process's, and the cell says so; a run trained in one go gets no remark
    assert dp_row.endswith("| 50 s (1 of 1 runs resumed, at epoch 3: the time of the last process only) |"), dp_row
    assert "resumed" not in erm_row, erm_row
    # SuperLoss's claims are on test accuracy: no extra metric (its section ends where Data Parameters' begins)
    assert "train_acc:" not in sl_text.split("\n## dataparams-random:")[0]
    # the trend verdict is in the claims-at-a-glance summary too
    assert text.count("CPU row (ResNet-8, 15 epochs): SuperLoss's (tau = log C) gain over CE grows") == 2


def test_read_epoch_scales_with_the_run_length():
    """Data Parameters reads at epoch 84 of 120; a 20-epoch CPU row at the same fraction (14), an int is absolute."""
    from benchmarks.report.stats import read_epoch

    at = {"epoch": 84, "of": 120}
    assert read_epoch(at, 120) == (84, "at epoch 84")
    assert read_epoch(at, 20) == (14, "at epoch 14 (84/120 of training)")
    assert read_epoch(at, 1) == (1, "at epoch 1 (84/120 of training)")
    assert read_epoch(84, 20) == (84, "at epoch 84")
