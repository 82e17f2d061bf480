"""Packed against unpacked runs at a target's own budget: do the final accuracies agree within seed noise (issue 11)?

    ./reproduce.sh packcheck TARGET [--filter F] [--budget full] [--seeds 0,1,2] [--pack 3] [--device cpu|cuda]
                                    [--out results/bench]

The target's (filtered) runs are trained twice, each time into a scratch results folder: one run at a time
(pack 1), and K seeds packed into one network (pack K), with the engine options the runner uses on the device.
A packed run starts exactly as its unpacked twin (same weights, batches, labels; first-epoch losses equal within
float tolerance, tests/test_packing_resume.py), but the rounding of batched and single matrix products differs
and training amplifies it, so after many epochs the two are two draws of one seed's training: the question is
whether packing shifts the final accuracy systematically. Per cell (the runs equal but for their seeds) the
verdict is the paired 95% t interval of packed - unpacked over seeds (as the report's claims): it agrees when the
interval contains 0; the same over every run of the check is the pooled verdict.
`<out>/packcheck-<target>-<cpu|cuda>.json` gets, per run id, both final test accuracies and wall seconds, and per
cell and pooled the mean difference, its interval, the largest |packed - unpacked| and the unpacked runs' seed
std. The scratch folders are deleted; the suite's own results/ are never touched.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import tempfile
import time

from benchmarks.errors import UsageError
from benchmarks.run.store import cell_key, index_results, read_record, write_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(ROOT, "results", "bench")


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.common import _regex, _seeds

    p = argparse.ArgumentParser(prog="reproduce.sh packcheck", description=__doc__.splitlines()[0])
    p.add_argument("target", help="a target, e.g. blcl-table4")
    p.add_argument("--filter", type=_regex, default=None, help="regex over run ids and spec fields (key=value)")
    p.add_argument("--budget", choices=("full", "reduced", "smoke"), default="full")
    p.add_argument("--seeds", type=_seeds, default=None, help="comma-separated seeds (default: the target's three)")
    p.add_argument("--pack", type=int, default=3, help="K seeds per packed network (default 3)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--fast", choices=("auto", "on", "off"), default="auto", help="engine fast path (as the runner)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="engine torch.compile")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help="folder of packcheck-<target>-<device>.json (default results/bench)")
    p.add_argument("--data", default=None, help="dataset root (default: $CLREPRO_DATA)")
    return p


def compare(plans, single: dict[str, dict], packed: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """(per-run rows, per-cell verdicts) from the two sides' records, by run id."""
    runs, cells = [], {}
    for p in plans:
        a, b = single.get(p.run_id), packed.get(p.run_id)
        row = {"run_id": p.run_id, "row": p.row, "variant": p.variant, "seed": p.spec["seed"],
               "unpacked": a and a["final_test_acc"], "packed": b and b["final_test_acc"],
               "unpacked_status": a["status"] if a else "missing", "packed_status": b["status"] if b else "missing",
               "packed_with": (b or {}).get("provenance", {}).get("engine", {}).get("packed_with"),
               "unpacked_seconds": a and a["provenance"]["wall_seconds"],
               "packed_seconds": b and b["provenance"]["wall_seconds"]}
        ok = isinstance(row["unpacked"], (int, float)) and isinstance(row["packed"], (int, float))
        row["difference"] = row["packed"] - row["unpacked"] if ok else None
        runs.append(row)
        cells.setdefault(cell_key(p.spec), []).append(row)
    verdicts = [dict(_verdict(rows), row=rows[0]["row"], variant=rows[0]["variant"]) for rows in cells.values()]
    return runs, verdicts


def _verdict(rows: list[dict]) -> dict:
    """Paired 95% t interval of packed - unpacked over `rows` (each one seed's pair) and what it says."""
    from benchmarks.report.markdown import gain_interval

    pairs = {i: r for i, r in enumerate(rows) if r["difference"] is not None}
    accs = [r["unpacked"] for r in rows if isinstance(r["unpacked"], (int, float))]
    iv = gain_interval({i: r["packed"] for i, r in pairs.items()}, {i: r["unpacked"] for i, r in pairs.items()})
    out = {"seeds": [r["seed"] for r in rows], "n": len(pairs),
           "seed_std": statistics.stdev(accs) if len(accs) >= 2 else None,
           "max_abs_difference": max((abs(r["difference"]) for r in pairs.values()), default=None),
           "mean_difference": iv and iv[0], "interval": iv and [iv[1], iv[2]]}
    if iv is None or len(pairs) < len(rows):
        out["verdict"] = "not decided: every seed needs both runs, and two seeds at least"
    elif iv[1] <= 0 <= iv[2]:
        out["verdict"] = "agree: the paired 95% interval of packed - unpacked contains 0"
    else:
        out["verdict"] = "DIFFER: packed - unpacked is significantly non-zero"
    return out


def _records(results: str) -> dict[str, dict]:
    out = {}
    for run_id, path in index_results(results).items():
        rec, _ = read_record(path)
        if rec is not None:
            out[run_id] = rec
    return out


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)  # exits 2 on a bad choice, naming the option
    try:
        if args.pack < 2:
            raise UsageError(f"--pack {args.pack}: must be >= 2 (the packed side)")
        from benchmarks.perf.bench import device_record
        from benchmarks.common import default_data_root, load_needed
        from benchmarks.run.runner import resolve_device, run_plans
        from benchmarks.targets.loader import load_targets, resolve

        targets = load_targets()
        plans = [pl for t in resolve(args.target, targets) for pl in t.plans(args.budget, args.seeds)]
        if args.filter is not None:
            plans = [pl for pl in plans if pl.matches(args.filter)]
        if not plans:
            raise UsageError(f"no run of {args.target!r} at budget {args.budget!r} matches the filter")
        try:
            device = resolve_device(args.device)
        except RuntimeError as e:
            raise UsageError(str(e)) from None
        data_root = args.data or default_data_root()
        cache = load_needed(plans, data_root, False)
    except UsageError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    from engine.options import EngineOptions

    options = EngineOptions.for_device(device, fast=args.fast, compile=args.compile)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clrepro-packcheck-") as tmp:
        sides = {}
        for name, pack in (("unpacked", 1), ("packed", args.pack)):
            res = os.path.join(tmp, name)
            run_plans(plans, data_root, res, device, download=False, cache=cache, pack=pack, options=options,
                      checkpoints=os.path.join(tmp, f"{name}-checkpoints"))
            sides[name] = _records(res)
    runs, cells = compare(plans, sides["unpacked"], sides["packed"])
    pooled = dict(_verdict(runs), seed_std=None)  # across methods: no one seed std
    result = {**device_record(device), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "target": args.target, "budget": args.budget, "filter": args.filter and args.filter.pattern,
              "pack": args.pack, "engine_options": options.record(), "wall_seconds": round(time.perf_counter() - t0, 1),
              "runs": runs, "cells": cells, "pooled": pooled}
    path = os.path.join(args.out, f"packcheck-{args.target}-{device.type}.json")
    write_atomic(path, result)
    for c in [*cells, dict(pooled, row="all", variant="pooled")]:
        iv = c["interval"]
        print(f"{c['row']} {c['variant']} (n={c['n']}): packed - unpacked "
              + (f"{c['mean_difference']:+.2f} [{iv[0]:+.2f}, {iv[1]:+.2f}]" if iv else "—")
              + f": {c['verdict']}")
    print(f"wrote {path}")
    return 0 if all(not c["verdict"].startswith("DIFFER") for c in [*cells, pooled]) else 1
