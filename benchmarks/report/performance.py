"""The performance section of REPORT.md, rendered from the benchmark JSONs (`results/bench/<cpu|cuda>.json`,
written by `./reproduce.sh bench`, see benchmarks.perf.bench); never from a live run."""
from __future__ import annotations

import glob
import json
import os


def _load(results_dir: str) -> tuple[list[tuple[str, dict]], list[tuple[str, str]]]:
    """(path, record) of every benchmark JSON under results_dir/bench (or results_dir itself), and unreadable ones."""
    # results/bench/*.json, and one level of subfolders (results/bench/cifar10/: a bench of one workload, issue 18)
    paths = sorted(glob.glob(os.path.join(results_dir, "bench", "*.json"))
                   + glob.glob(os.path.join(results_dir, "bench", "*", "*.json")))
    if not paths:
        paths = sorted(glob.glob(os.path.join(results_dir, "*.json")))
    good, bad = [], []
    for p in paths:
        try:
            with open(p) as f:
                rec = json.load(f)
        except (OSError, ValueError) as e:
            bad.append((p, f"unreadable: {e}"))
            continue
        if isinstance(rec, dict) and ("device_class" in rec and ("workloads" in rec or "cells" in rec)
                                      or rec.get("kind") == "cli-startup"):
            good.append((p, rec))
    return good, bad


def ratio_keys(path: str) -> list[str]:
    """The ratios shown on a path's row: engine vs the anchor, an engine variant (engine-*) vs the anchor and vs
    the engine, packed-K / jobs-N vs the engine."""
    if path == "engine":
        return ["engine/anchor"]
    if path.startswith("engine-"):
        return [f"{path}/anchor", f"{path}/engine"]
    if path.startswith(("packed-", "jobs-")):
        return [f"{path}/engine"]
    return []


def _fmt_ratio(r) -> str:
    return f"{r['value']:.2f}x (median {r['median']:.2f}x)" if isinstance(r, dict) else "not measured"


def _device_section(path: str, rec: dict) -> list[str]:
    cores = rec.get("usable_cores") or rec.get("cores")
    la = rec.get("load_average")
    part = (f" — partial: the bench stopped after {rec.get('rounds')} round(s), before its end"
            if rec.get("complete") is False else "")
    out = [f"### {rec['device_class'].upper()}: {rec['device']}{part}", "",
           f"File `{os.path.basename(path)}`; {cores} cores, {rec.get('threads')} threads; torch {rec.get('torch')}; "
           f"date {rec.get('date')}; size `{rec.get('size')}`; {rec.get('rounds')} interleaved rounds (s/epoch: min, "
           f"median over rounds); engine options {rec.get('engine_options')}; git {str(rec.get('git_sha'))[:7]}"
           + (f"; load average (1/5/15 min) {la['start']} at start, {la['end']} at end" if la else "") + ".",
           "", "| Workload | Path | s/epoch (min) | s/epoch (median) | Images/s | Train GFLOP/s (of matmul) | Ratio |",
           "|---|---|---|---|---|---|---|"]
    for name, w in rec["workloads"].items():
        if w.get("status") == "skipped":
            out.append(f"| {name} | — | skipped: {w['reason']} | | | | |")
            continue
        for pname, p in w["paths"].items():
            keys = [k for k in ratio_keys(pname) if k in w.get("ratios", {})]
            ratio = "; ".join(f"{k}: {_fmt_ratio(w['ratios'][k])}" for k in keys) or "—"
            if p.get("status") != "ok":
                out.append(f"| {name} | {pname} | {p.get('status')}: {p.get('reason')} | | | | {ratio} |")
            else:
                gf = (f"{p['train_gflops_per_s']:.1f}" if "train_gflops_per_s" in p else "—") + (
                    f" ({100 * p['of_matmul_peak']:.1f}%)" if "of_matmul_peak" in p else "")
                comp = f" (+ {p['compile_s']:.1f} s compile)" if "compile_s" in p else ""
                out.append(f"| {name} | {pname}{comp} | {p['epoch_s']:.3f} | {p['epoch_s_median']:.3f} "
                           f"| {p['images_per_s']:.0f} | {gf} | {ratio} |")
    out.append("")
    mm = rec.get("matmul") or {}
    if mm.get("status") == "ok":
        out += [f"Matmul rate (this machine's fp32 peak as the bench counts it): {mm['n']} x {mm['n']} `torch.mm`, "
                f"median of {mm['reps']}, {mm['threads']} threads: {mm['gflops']:.1f} GFLOP/s"
                + (f"; in bf16 {bf['gflops']:.1f} GFLOP/s (the peak a bf16 path's share is of)"
                   if (bf := rec.get("matmul_bf16") or {}).get("status") == "ok" else "") + ".", ""]
    elif mm:
        out += [f"Matmul rate: {mm.get('status')} ({mm.get('reason')}).", ""]
    for name, w in rec["workloads"].items():
        f = w.get("flops")
        if f:
            out += [f"FLOPs ({name}): ResNet-20 forward {f['forward_per_image'] / 1e6:.1f} MFLOP per image "
                    f"({f['how']}); training {f['train_per_image'] / 1e6:.1f} MFLOP per image; Train GFLOP/s = "
                    f"images/s x that, and its share of the matmul rate.", ""]
        wr = w.get("whole_run")
        if wr:
            secs = ", ".join(f"{k} {v / 3600:.2f} h" if v is not None else f"{k} not measured"
                             for k, v in wr["seconds"].items())
            out += [f"Whole run ({name}, {wr['epochs']} epochs of {wr['images_per_epoch']:,} images; {wr['what']}): "
                    f"{secs}" + (f"; fastest over a whole run: {wr['fastest']}" if wr.get("fastest") else "")
                    + (f" (float32; in any arithmetic: {wr['fastest_any_arithmetic']})"
                       if wr.get("fastest_any_arithmetic") not in (None, wr.get("fastest")) else "") + ".", ""]
    for name, w in rec["workloads"].items():
        b = w.get("bound") or {}
        if b.get("status") == "ok":
            out += [f"Packing bound ({name}, K={b['k']}, batch {b['batch']}, min of {b['rounds']} x {b['steps']} "
                    f"steps): {b['what']}: {1000 * b['single_step_s']:.3f} ms vs {1000 * b['packed_step_s']:.3f} ms "
                    f"per step, {b['ratio']:.2f}x.", ""]
        elif b:
            out += [f"Packing bound ({name}): {b.get('status')} ({b.get('reason')}).", ""]
    notes = [n for w in rec["workloads"].values() for n in w.get("notes", [])]
    if notes:
        out += [f"- {n}" for n in notes] + [""]
    for model, o in rec.get("overhead", {}).items():
        if o.get("status") == "ok":
            out.append(f"Step time x ERM ({model}, batch {o['batch']}, median of {o['repeats']} x {o['steps']} steps): "
                       + ", ".join(f"{m} {v:.2f}" for m, v in o["x_erm"].items()) + ".")
        else:
            out.append(f"Step time x ERM ({model}): {o.get('status')} ({o.get('reason')}).")
        out.append("")
    out += ["| Target | Threshold | Measured | Result |", "|---|---|---|---|"]
    for t in rec.get("targets", []):
        m = t["measured"]
        if isinstance(m, (int, float)):
            note = f" ({t['bound_note']})" if t.get("bound_note") else ""
            out.append(f"| {t['text']} | {t['op']} {t['threshold']:g} | {m:.3f} | "
                       f"{'pass' if t['pass'] else 'FAIL'}{note} |")
        else:
            out.append(f"| {t['text']} | {t['op']} {t['threshold']:g} | not measured | {t.get('reason', '')} |")
    out.append("")
    return out


def _num(v, fmt: str = ".2f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "—"


def _packcheck_section(path: str, rec: dict) -> list[str]:
    """`./reproduce.sh packcheck` (benchmarks/perf/packcheck.py): packed vs unpacked final accuracies per seed."""
    out = [f"### Packed vs unpacked runs ({rec['device_class'].upper()}: {rec['device']})", "",
           f"File `{os.path.basename(path)}`; target `{rec['target']}` at budget `{rec['budget']}`"
           + (f", filter `{rec['filter']}`" if rec.get("filter") else "")
           + f"; K = {rec['pack']}; torch {rec.get('torch')}; date {rec.get('date')}; engine options "
             f"{rec.get('engine_options')}; {rec.get('wall_seconds')} s in all. Final test accuracy (%) of each run "
             f"trained alone and packed with the other seeds. A packed run starts as its unpacked twin but float "
             f"rounding parts their trajectories, so each pair is two draws of one seed's training; a cell agrees "
             f"when the paired 95% t interval of packed − unpacked contains 0 (no systematic shift).", "",
           "| Row | Method | Seed | Unpacked | Packed | Packed − unpacked | Unpacked s | Packed s (group) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rec["runs"]:
        out.append(f"| {r['row']} | {r['variant']} | {r['seed']} | {_num(r['unpacked'])} | {_num(r['packed'])} "
                   f"| {_num(r['difference'], '+.2f')} | {_num(r['unpacked_seconds'], '.0f')} "
                   f"| {_num(r['packed_seconds'], '.0f')} |")
    out += ["", "| Row | Method | Seeds | Packed − unpacked [95% interval] | Max abs difference | Seed std | Verdict |",
            "|---|---|---|---|---|---|---|"]
    pooled = [dict(rec["pooled"], row="all", variant="pooled", seed_std=None)] if rec.get("pooled") else []
    for c in [*rec["cells"], *pooled]:
        iv = c.get("interval")
        mean = f"{c['mean_difference']:+.2f} [{iv[0]:+.2f}, {iv[1]:+.2f}]" if iv else "—"
        out.append(f"| {c['row']} | {c['variant']} | {', '.join(map(str, c['seeds']))} | {mean} "
                   f"| {_num(c['max_abs_difference'])} | {_num(c['seed_std'])} | {c['verdict']} |")
    return out + [""]


def _cli_section(path: str, rec: dict) -> list[str]:
    """The command line's start-up (`./reproduce.sh bench cli`, benchmarks/perf/cli_startup.py)."""
    out = [f"### Command-line start-up: {rec['device']}, Python {rec['python']}, {rec['date']}", "",
           f"Each command a fresh process; cold = empty cache, warm = median of {rec['repeats']} calls; load "
           f"average {rec['load_average']['start'][0]:.2f} at the start. Target: under "
           f"{next(iter(rec['commands'].values()))['threshold_s']:g} s warm.", "",
           "| Command | Cold (s) | Warm median (s) | Result |", "|---|---|---|---|"]
    for name, c in rec["commands"].items():
        out.append(f"| `{' '.join(c['argv'])}` | {c['cold_s']:.2f} | {c['warm_median_s']:.2f} | "
                   f"{'pass' if c['pass'] else 'FAIL'} |")
    return out + [""]


def performance_section(results_dir: str) -> str:
    """Markdown for REPORT.md: one block per benchmark JSON (device, torch, date, size; the s/epoch, images/s and
    ratios of every workload and path; the speed targets with measured value and pass/fail)."""
    good, bad = _load(results_dir)
    out = ["## Performance", "",
           "From `./reproduce.sh bench` (benchmarks/perf/bench.py): the engine vs the hand-written loop "
           "`../shared/bench/baseline_loop.py` (the anchor; for `cifar10-resnet20`, the real-CIFAR-10 loop "
           "`benchmarks/perf/anchors/cifar10_loop.py`) on the same machine, interleaved round by round; packed-K "
           "trains K seeds in one network (throughput counts all K). Ratios are of throughputs (images/s).", ""]
    if not good:
        out += ["No benchmark run yet (`./reproduce.sh bench` writes `results/bench/<cpu|cuda>.json`).", ""]
    for path, rec in good:
        if rec.get("kind") == "cli-startup":
            out += _cli_section(path, rec)
        else:
            out += _device_section(path, rec) if "workloads" in rec else _packcheck_section(path, rec)
    for path, why in bad:
        out += [f"- `{os.path.basename(path)}` skipped: {why}", ""]
    return "\n".join(out).rstrip() + "\n"


__all__ = ["performance_section", "ratio_keys"]
