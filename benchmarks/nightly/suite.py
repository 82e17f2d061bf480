"""Nightly reproduction with tolerance bands: `./reproduce.sh nightly SUITE [options]`.

A suite (`benchmarks/nightly/suites/<name>.yaml`) lists targets, each with a budget, seeds and a `--filter` regex. The
command runs them into a results folder (default `results-nightly/<suite>/`; the runner skips finished runs, so
a second call resumes), then checks every table cell -- (target, budget, row, variant, noise rate): the runs that
differ only by seed, as report.py groups them -- and every claim verdict against the checked-in baseline
`benchmarks/nightly/baselines/<suite>.json` for the device class of the runs (`cpu` or `cuda`, from their provenance).
A run is measured as the report measures it: the target's `measure` (a constant-lr target's mean test accuracy of
the last k epochs), else the final epoch's; the baseline records which, and a reference of another measure is no
reference.

Band rule: a cell passes when its measured mean over seeds lies within  reference mean +- max(3 x reference seed
std / sqrt(n), floor),  n the reference's run count and floor the baseline's `floor` (accuracy points) or its per-target override in `target_floors`. A failed or diverged run, a
missing run, a cell or claim the baseline lacks, or a claim whose verdict (report.py's 95% t interval over seeds:
gain reproduced / not significant / contradicted) differs from the baseline's fails the check -- unless the suite
lists it under `expected_failures` with a reason: it is then shown as "expected" and does not fail.

Exit status: 0 everything within its band; 1 drift or failure; 2 bad input (unknown suite, bad suite key, a filter
matching nothing, no baseline for the device class). `--update-baseline` rewrites the device class's part of the
baseline from the current results (sorted, indented JSON: n, mean, std and run ids per cell, verdict per claim,
device name, date), keeping the floors, then checks against it. `--check-only` trains nothing. The check table is
printed and written as `nightly-check.md` and `nightly-check.json` into `--out` (default: the results folder).
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import os
import re
import sys

import yaml

from benchmarks.common import ROOT, _int_at_least, default_data_root, load_needed
from benchmarks.errors import UsageError
from benchmarks.run.launchers.jobs import INTERRUPTED, run_jobs, this_job
from benchmarks.report.stats import _accs, _by_seed, _stats, gain_interval, verdict
from benchmarks.run.store import index_results, read_record, write_atomic
from benchmarks.targets.loader import BUDGETS, TARGET_DIR, _keys, load_targets, resolve, snapshot_epochs

SUITE_DIR = os.path.join(os.path.dirname(__file__), "suites")
BASELINE_DIR = os.path.join(os.path.dirname(__file__), "baselines")
SUITE_KEYS = {"name", "description", "budget", "seeds", "targets", "expected_failures"}
ENTRY_KEYS = {"target", "budget", "seeds", "filter"}
EXPECTED_KEYS = {"cell", "claim", "reason"}
DEFAULT_FLOOR = 0.5  # accuracy points
PASSING = ("ok", "expected")


def band(mean: float, std: float | None, n: int, floor: float) -> tuple[float, float]:
    """reference mean +- max(3 x seed std / sqrt(n), floor); with one run (no std) the floor alone."""
    half = floor if n < 2 or std is None or not math.isfinite(std) else max(3 * std / math.sqrt(n), floor)
    return mean - half, mean + half


# ---------------------------------------------------------------------------------------------- suites and plans

def load_suite(name: str, suite_dir: str = SUITE_DIR) -> dict:
    """Read and validate `<suite_dir>/<name>.yaml`; UsageError naming the bad key or value."""
    path = os.path.join(suite_dir, f"{name}.yaml")
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(suite_dir) if f.endswith(".yaml")) if os.path.isdir(suite_dir) else []
        raise UsageError(f"unknown suite {name!r}; known: {', '.join(known) or 'none'} (in {suite_dir})")
    w = os.path.basename(path)
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UsageError(f"{w}: not valid YAML: {e}") from None
    _keys(w, raw, SUITE_KEYS, {"name", "targets"})
    if raw["name"] != name:
        raise UsageError(f"{w}: name {raw['name']!r} must equal the file name {name!r}")
    if not isinstance(raw["targets"], list) or not raw["targets"]:
        raise UsageError(f"{w}: targets must be a non-empty list of {{target, budget, seeds, filter}}")
    for i, e in enumerate([raw] + raw["targets"]):
        where = w if i == 0 else f"{w}: targets[{i - 1}]"
        if i:
            _keys(where, e, ENTRY_KEYS, {"target"})
        if "budget" in e and e["budget"] not in BUDGETS:
            raise UsageError(f"{where}: budget {e['budget']!r}; allowed: {', '.join(BUDGETS)}")
        if "seeds" in e and (not isinstance(e["seeds"], list) or not e["seeds"] or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in e["seeds"])):
            raise UsageError(f"{where}: seeds must be a non-empty list of integers, got {e['seeds']!r}")
        if e.get("filter") is not None:
            try:
                re.compile(e["filter"])
            except (re.error, TypeError) as err:
                raise UsageError(f"{where}: filter {e['filter']!r} is not a valid regular expression: {err}") from None
    for i, x in enumerate(raw.get("expected_failures") or []):
        _keys(f"{w}: expected_failures[{i}]", x, EXPECTED_KEYS, {"reason"})
        if ("cell" in x) == ("claim" in x) or not str(x["reason"]).strip():
            raise UsageError(f"{w}: expected_failures[{i}] must name one cell or one claim, with a reason")
    return raw


@functools.lru_cache(maxsize=4)
def _targets(directory: str):
    return load_targets(directory)


def suite_plans(suite: dict, targets) -> list:
    """The plans of every entry (target resolved as the CLI does, budget and seeds defaulting to the suite's,
    filtered like `--filter`), each run once."""
    plans = {}
    for i, e in enumerate(suite["targets"]):
        budget, seeds = e.get("budget", suite.get("budget", "full")), e.get("seeds", suite.get("seeds"))
        got = [p for t in resolve(e["target"], targets) for p in t.plans(budget, seeds)]
        if e.get("filter") is not None:
            got = [p for p in got if p.matches(re.compile(e["filter"]))]
        if not got:
            raise UsageError(f"{suite['name']}.yaml: targets[{i}]: filter {e.get('filter')!r} matches no run of "
                             f"{e['target']!r} at budget {budget!r}")
        for p in got:
            plans.setdefault((p.target, p.run_id), p)
    return list(plans.values())


def cell_id(p) -> str:
    return f"{p.target}/{p.spec['budget']}/{p.row}/{p.variant}/{p.spec['data']['noise']['rate']:g}"


# ----------------------------------------------------------------------------------------------- measurement

def last_k_of(targets, target: str) -> int | None:
    """The target's `measure: {last_k: k}` (constant-lr targets: the mean test accuracy of the last k epochs)."""
    return ((targets or {}).get(target) and (targets[target].raw.get("measure") or {}).get("last_k")) or None


def measure_name(last_k: int | None) -> str:
    return f"last_{last_k}_mean" if last_k else "final_epoch"


def measure(plans, results: str, targets=None) -> dict[str, dict]:
    """cell id -> its plans' ok records, the run ids that are missing or failed, the provenance of all records, and
    the target's measure (`last_k`: each run's mean test accuracy over its last k epochs; None: the final epoch's)."""
    index = index_results(results)
    cells: dict[str, dict] = {}
    for p in plans:
        c = cells.setdefault(cell_id(p), {"plan": p, "records": [], "missing": [], "failed": [], "devices": [],
                                          "last_k": last_k_of(targets, p.target)})
        path = index.get(p.run_id)
        rec, why = read_record(path) if path else (None, None)
        if rec is not None:
            c["devices"].append(rec["provenance"])
        if path is None:
            c["missing"].append(p.run_id)
        elif rec is None or rec["status"] != "ok":
            c["failed"].append(f"{p.run_id} ({rec['status'] if rec else why})")
        else:
            c["records"].append(rec)
    return cells


def claims(cells: dict[str, dict], targets) -> dict[str, dict]:
    """claim id -> measured gain and verdict, as report.py derives them (full budget only; a claim names a variant
    or, for every variant compared as it, a published column); claims whose cells the suite leaves out are skipped."""
    out = {}
    for cid, c in cells.items():
        p = c["plan"]
        if p.spec["budget"] != "full":
            continue
        t = targets[p.target]
        for cl in t.raw.get("claims", []):
            named = p.variant if cl["method"] in t.raw["variants"] else p.compare_as
            if p.row != cl["row"] or named != cl["method"]:
                continue
            rate = p.spec["data"]["noise"]["rate"]
            base = next((b for b in cells.values() if b["plan"].target == p.target and b["plan"].row == p.row
                         and b["plan"].variant == cl["baseline"] and b["plan"].spec["budget"] == "full"
                         and b["plan"].spec["data"]["noise"]["rate"] == rate), None)
            if base is None:
                continue
            k = last_k_of(targets, p.target)
            metric = cl.get("metric", "test_acc")
            a, b = _by_seed(c["records"], k, metric), _by_seed(base["records"], k, metric)
            iv = gain_interval(a, b)
            key = f"{p.target}/full/{p.row}/{p.variant}-vs-{cl['baseline']}/{rate:g}"
            out[key] = {"verdict": verdict(None, iv, len(a), len(b)), "measure": measure_name(k),
                        "gain": None if iv is None else [round(x, 4) for x in iv[:3]]}
    return out


def device_class(cells: dict[str, dict]) -> str | None:
    """`cpu` or `cuda` from the runs' provenance; None without runs; UsageError when they mix both."""
    found = {}
    for c in cells.values():
        for prov in c["devices"]:
            cls = prov.get("device_type") or ("cpu" if prov["device"].startswith("cpu") else "cuda")
            found[cls] = found.get(cls, 0) + 1
    if len(found) > 1:
        raise UsageError(f"the suite's runs mix device classes {found}; check each in its own results folder")
    return next(iter(found), None)


# ------------------------------------------------------------------------------------------------- baseline

def make_baseline(suite: str, cells: dict, claim_res: dict, cls: str, old: dict | None) -> dict:
    """The device class's part rebuilt from the current ok cells; other classes and the floors kept."""
    out = old or {"suite": suite, "floor": DEFAULT_FLOOR, "target_floors": {}, "devices": {}}
    recs = [r for c in cells.values() for r in c["records"]]
    part = {"date": dt.date.today().isoformat(),
            "device": sorted({r["provenance"]["device"] for r in recs}),
            "git_sha": sorted({r["provenance"]["git_sha"] or "unknown" for r in recs}),
            "cells": {}, "claims": {k: v for k, v in claim_res.items()}}
    for cid, c in cells.items():
        if c["missing"] or c["failed"] or not c["records"]:
            print(f"warning: {cid} left out of the baseline (missing: {c['missing']}, failed: {c['failed']})",
                  file=sys.stderr)
            continue
        mean, std, n = _stats(_accs(c["records"], c.get("last_k")))
        part["cells"][cid] = {"mean": round(mean, 4), "std": None if n < 2 else round(std, 4), "n": n,
                              "measure": measure_name(c.get("last_k")),
                              "run_ids": sorted(r["run_id"] for r in c["records"])}
    out["devices"][cls] = part
    return out


# ---------------------------------------------------------------------------------------------------- check

def check(suite: dict, cells: dict, claim_res: dict, baseline: dict, cls: str) -> list[dict]:
    """One row per cell and claim: reference, band, measured, n and verdict (see the module docstring)."""
    ref = baseline["devices"][cls]
    expected = {x.get("cell") or x.get("claim"): x["reason"] for x in suite.get("expected_failures") or []}
    rows = []
    for cid, c in cells.items():
        accs = _accs(c["records"], c.get("last_k"))
        mean = _stats(accs)[0] if accs else None
        now = measure_name(c.get("last_k"))
        row = {"kind": "cell", "id": cid, "reference": None, "band": None, "measured": mean, "n": len(accs),
               "verdict": "ok", "note": ""}
        r = ref["cells"].get(cid)
        if r is not None:
            floor = baseline.get("target_floors", {}).get(c["plan"].target, baseline.get("floor", DEFAULT_FLOOR))
            row["reference"], row["band"] = r["mean"], list(band(r["mean"], r["std"], r["n"], floor))
        if c["failed"]:
            row.update(verdict="failed", note="runs not ok: " + ", ".join(c["failed"]))
        elif c["missing"]:
            row.update(verdict="missing", note="no result for " + ", ".join(c["missing"]))
        elif r is None:
            row.update(verdict="no reference", note="cell not in the baseline: run --update-baseline")
        elif r.get("measure", "final_epoch") != now:  # baselines made before a target declared its measure
            row.update(verdict="no reference", note=f"the baseline measured {r.get('measure', 'final_epoch')}, the "
                       f"target now measures {now}: run --update-baseline")
        elif not row["band"][0] <= mean <= row["band"][1]:
            row.update(verdict="drift", note=f"{mean - r['mean']:+.2f} points from the reference")
        rows.append(row)
    for key, m in claim_res.items():
        r = ref["claims"].get(key)
        row = {"kind": "claim", "id": key, "reference": r and r["verdict"], "band": None,
               "measured": m["verdict"], "n": None, "verdict": "ok",
               "note": "" if m["gain"] is None else "gain {:+.2f} [{:+.2f}, {:+.2f}]".format(*m["gain"])}
        if r is None:
            row.update(verdict="no reference", note="claim not in the baseline: run --update-baseline")
        elif r.get("measure", "final_epoch") != m["measure"]:
            row.update(verdict="no reference", note=f"the baseline measured {r.get('measure', 'final_epoch')}, the "
                       f"target now measures {m['measure']}: run --update-baseline")
        elif r["verdict"].split(";")[0] != m["verdict"].split(";")[0]:
            row["verdict"] = "flipped"
            if m["gain"] is not None and r.get("gain") is not None:  # a hint for the reader; the verdict stands
                inside = m["gain"][1] <= r["gain"][0] <= m["gain"][2]
                row["note"] += (f"; reference gain {r['gain'][0]:+.2f} "
                                + ("inside the measured interval: the verdict crossed its significance boundary, "
                                   "the gain did not move beyond seed noise" if inside
                                   else "outside the measured interval: the gain itself moved"))
        rows.append(row)
    for row in rows:
        if row["id"] in expected:
            if row["verdict"] == "ok":
                row["note"] = (row["note"] + "; " if row["note"] else "") + "listed in expected_failures but passes"
            else:
                why = expected[row["id"]]
                row.update(verdict="expected", note=f"{row['verdict']}: {row['note']} (expected: {why})")
    return rows


def _num(x) -> str:
    return "—" if x is None else f"{x:.2f}"


def render(suite: str, cls: str, rows: list[dict], wall: float, results: str) -> str:
    bad = [r for r in rows if r["verdict"] not in PASSING]
    out = [f"# Nightly check: {suite} ({cls})", "",
           f"Results: `{results}`; {len(rows)} cells and claims, {len(bad)} failing; wall time of the suite's runs "
           f"{wall / 60:.1f} min. Band: reference mean ± max(3 × seed std / √n, floor).", "",
           "| Cell / claim | Reference mean | Band | Measured mean | n | Verdict | Note |",
           "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["verdict"] in PASSING, r["kind"], r["id"])):
        if r["kind"] == "cell":
            bnd = "—" if r["band"] is None else "{:.2f} – {:.2f}".format(*r["band"])
            ref, meas = _num(r["reference"]), _num(r["measured"])
        else:
            ref, bnd, meas = r["reference"] or "—", "—", r["measured"]
        shown = r["verdict"] if r["verdict"] in PASSING else f"**{r['verdict']}**"
        out.append(f"| {r['id']} | {ref} | {bnd} | {meas} | {'—' if r['n'] is None else r['n']} | {shown} "
                   f"| {r['note']} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- command line

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reproduce.sh nightly", description="Run a suite and check it against its "
                                "baseline: reference mean ± max(3 × seed std / √n, floor) per cell.")
    p.add_argument("suite", help="a suite under benchmarks/nightly/suites (e.g. cpu-nightly, gpu-nightly)")
    p.add_argument("--results", default=None, help="results folder (default: results-nightly/<suite>/)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data", default=None, help="dataset root (default: $CLREPRO_DATA, else ~/.cache/clrepro/data)")
    p.add_argument("--no-download", action="store_true", default=bool(os.environ.get("CLREPRO_NO_DOWNLOAD")))
    p.add_argument("--check-only", action="store_true", help="train nothing: check the results already there")
    p.add_argument("--update-baseline", action="store_true",
                   help="rewrite the baseline of the runs' device class from the current results, then check")
    p.add_argument("--out", default=None, help="folder for nightly-check.md/.json (default: the results folder)")
    p.add_argument("--jobs", type=_int_at_least("--jobs", 1), default=1, metavar="N",
                   help="train with N drivers side by side on this machine (as ./reproduce.sh TARGET --jobs N; "
                        "2 on a 2-core CPU), then check once")
    p.add_argument("--suites", default=SUITE_DIR, help=argparse.SUPPRESS)
    p.add_argument("--baselines", default=BASELINE_DIR, help=argparse.SUPPRESS)
    p.add_argument("--targets", default=TARGET_DIR, help=argparse.SUPPRESS)
    return p


def _check_expected(suite: dict, plans, targets) -> None:
    """Every expected_failures entry names a cell or claim of the suite (a typo would hide nothing)."""
    cells = {cell_id(p): {"plan": p, "records": []} for p in plans}
    known = set(cells) | set(claims(cells, targets))
    for x in suite.get("expected_failures") or []:
        name = x.get("cell") or x.get("claim")
        if name not in known:
            raise UsageError(f"{suite['name']}.yaml: expected_failures names {name!r}, not a cell or claim of the "
                             f"suite; a cell reads <target>/<budget>/<row>/<variant>/<noise rate>, a claim "
                             f"<target>/full/<row>/<variant>-vs-<baseline>/<noise rate>")


class Interrupted(Exception):
    """The --jobs children were stopped by a signal: nothing is checked."""


def _run(args, argv: list[str], plans, targets, chosen, results: str) -> None:
    from benchmarks.report.markdown import write_report
    from benchmarks.run.runner import resolve_device, run_plans, todo_plans

    try:
        device = resolve_device(args.device)
    except RuntimeError as e:
        raise UsageError(str(e)) from None
    data_root = args.data or default_data_root()
    cache = load_needed(todo_plans(plans, results), data_root, not args.no_download)
    snaps = snapshot_epochs(targets, sorted({p.spec["seed"] for p in plans}))  # figures sharing these runs
    job = this_job()
    if args.jobs > 1 and job is None:  # N children train (each: this command, --jobs left out); then one report
        del cache  # loaded only to check the data before any child starts; each child loads its own
        rc = run_jobs(["nightly", *argv, "--results", results], args.jobs)
        if rc == INTERRUPTED:  # no check of half-trained results, and never a baseline from them
            raise Interrupted()
        if rc == 2:
            raise UsageError("a --jobs child refused its input (see its [job i] lines)")
    else:
        run_plans(plans, data_root, results, device, download=not args.no_download, cache=cache, snapshots=snaps)
    if job is None:
        write_report(chosen, results, os.path.join(results, "REPORT.md"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    results = args.results or os.path.join(ROOT, "results-nightly", args.suite)
    try:
        this_job()  # a malformed $CLREPRO_JOB is bad input
        if os.path.exists(results) and not os.path.isdir(results):
            raise UsageError(f"--results {results!r} is an existing file; name a folder")
        suite = load_suite(args.suite, args.suites)
        targets = _targets(args.targets)
        plans = suite_plans(suite, targets)
        _check_expected(suite, plans, targets)
        if not args.check_only:
            _run(args, argv, plans, targets, {p.target: targets[p.target] for p in plans}, results)
            if this_job() is not None:  # a --jobs child trains only; its parent checks
                return 0
        cells = measure(plans, results, targets)
        cls = device_class(cells)
        if cls is None:
            raise UsageError(f"no finished run of suite {args.suite!r} under {results!r}; run it without --check-only")
        claim_res = claims(cells, targets)
        path = os.path.join(args.baselines, f"{args.suite}.json")
        try:
            with open(path) as f:
                baseline = json.load(f)
        except FileNotFoundError:
            baseline = None
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"baseline {path} is unreadable: {e}") from None
        if args.update_baseline:
            baseline = make_baseline(args.suite, cells, claim_res, cls, baseline)
            write_atomic(path, baseline)
            print(f"baseline for {cls} written: {path}")
        if baseline is None or cls not in baseline.get("devices", {}):
            raise UsageError(f"no {cls} baseline for suite {args.suite!r} in {path}: once the suite's runs are done "
                             f"on a {cls} machine, run `./reproduce.sh nightly {args.suite} --check-only "
                             f"--update-baseline`, review the diff and commit it")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted:
        print("nightly: stopped by a signal; nothing checked (rerun the same command to resume)", file=sys.stderr)
        return INTERRUPTED
    rows = check(suite, cells, claim_res, baseline, cls)
    wall = sum(r["provenance"]["wall_seconds"] for c in cells.values() for r in c["records"])
    text = render(args.suite, cls, rows, wall, results)
    print(text)
    out = args.out or results
    failing = [r for r in rows if r["verdict"] not in PASSING]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "nightly-check.md"), "w") as f:
        f.write(text)
    write_atomic(os.path.join(out, "nightly-check.json"),
                 {"suite": args.suite, "device_class": cls, "results": results, "wall_seconds": round(wall, 3),
                  "status": "fail" if failing else "pass", "rows": rows})
    return 1 if failing else 0
