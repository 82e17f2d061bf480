"""`./reproduce.sh bench cli`: wall time of the command line's read-only commands (issue 20: each under 2 s on
this 2-core machine). Each command runs as a fresh process (`python -m benchmarks ...`, as reproduce.sh runs it,
without the shell wrapper's venv check): once cold (an empty $CLREPRO_CACHE: targets validated, FLOPs counted,
figures drawn) and then `--repeats` times warm; the warm median is the measurement. `report` reads a copy of
results/ so its figures go to a scratch folder. Writes results/bench/cli/<cpu>.json; REPORT.md shows it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
THRESHOLD_S = 2.0


def commands(scratch: str) -> dict[str, list[str]]:
    return {"help": ["--help"], "list": ["list"], "dry-run": ["blcl-table1", "--dry-run"],
            "report": ["report", "--results", os.path.join(scratch, "results"),
                       "--report", os.path.join(scratch, "REPORT.md")]}


def _time(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "benchmarks", *argv], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    dt_s = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr[-500:]}")
    return dt_s


def measure(repeats: int, results: str) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(results, os.path.join(scratch, "results"),
                        ignore=shutil.ignore_patterns("locks", "*.tmp"))
        env = {**os.environ, "CLREPRO_CACHE": os.path.join(scratch, "cache"), "OMP_NUM_THREADS": "1"}
        for name, argv in commands(scratch).items():
            cold = _time(argv, env)
            warm = [_time(argv, env) for _ in range(repeats)]
            out[name] = {"argv": argv[:1] if name == "report" else argv, "cold_s": round(cold, 3),
                         "warm_s": [round(w, 3) for w in warm], "warm_median_s": round(statistics.median(warm), 3),
                         "threshold_s": THRESHOLD_S, "pass": statistics.median(warm) < THRESHOLD_S}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="reproduce.sh bench cli", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="warm calls per command (default 5)")
    p.add_argument("--results", default=os.path.join(ROOT, "results"), help="results folder to read (copied)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench", "cli"), help="output folder")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: must be >= 1")
    load0 = os.getloadavg()
    measured = measure(args.repeats, args.results)
    rec = {"schema": 1, "kind": "cli-startup", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
           "python": platform.python_version(), "repeats": args.repeats,
           "load_average": {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in os.getloadavg()]},
           "commands": measured, "pass": all(c["pass"] for c in measured.values())}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "cpu.json")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    for name, c in measured.items():
        print(f"{name:<8} cold {c['cold_s']:6.2f} s   warm median {c['warm_median_s']:5.2f} s   "
              f"{'PASS' if c['pass'] else 'FAIL'} (< {THRESHOLD_S:g} s)")
    print(f"wrote {path}")
    return 0 if rec["pass"] else 1
