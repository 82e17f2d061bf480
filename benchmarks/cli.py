"""Command line: `python -m benchmarks [TARGET|list|report] [options]` (what ./reproduce.sh calls)."""
from __future__ import annotations

import argparse
import os
import statistics
import sys

from benchmarks.common import ROOT, _int_at_least, _positive, _regex, _seeds, default_data_root, load_needed  # noqa: F401
from benchmarks.errors import UsageError
from benchmarks.run.launchers.jobs import INTERRUPTED, run_jobs, this_job
from benchmarks.targets.catalog import load_targets, present as dataset_present  # torch-free when cached (benchmarks/targets/catalog.py)
from benchmarks.targets.loader import BUDGETS, TARGET_DIR, resolve, snapshot_epochs

DEFAULT_TARGET = "blcl-table5"
DEFAULT_BUDGET = "reduced"  # with no target named: a real run short enough for a CPU (8.5 min on 2 cores)
DEFAULT_RESULTS = os.path.join(ROOT, "results")


def engine_options(args, device):
    """How the engine computes, from the flags (and the fault-injection variable the tests use)."""
    from engine.options import EngineOptions

    kill = os.environ.get("CLREPRO_FAULT_KILL_AT_EPOCH")
    return EngineOptions.for_device(device, args.fast, args.compile, checkpoint_every=args.checkpoint_every,
                                    kill_at_epoch=int(kill) if kill else None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reproduce.sh", description="clrepro: reproduce curriculum-learning papers.",
        epilog="other commands (each with its own --help): 'bench' (engine speed against the hand-written loop), "
               "'packcheck TARGET' (packed against unpacked runs), 'nightly SUITE' (a suite against its baseline), "
               "'test' (the test suite)")
    p.add_argument("target", nargs="?", default=None,
                   help=f"<paper>-<artifact> (e.g. blcl-table4; a bare table4 is BLCL's), a paper, all, "
                        f"'list' or 'report' (default: {DEFAULT_TARGET} at budget {DEFAULT_BUDGET})")
    p.add_argument("--budget", choices=BUDGETS, default=None,
                   help=f"full = the paper's settings (default when a target is named; {DEFAULT_BUDGET} when not)")
    p.add_argument("--seeds", type=_seeds, default=None, help="comma-separated seeds (default: the target's three)")
    p.add_argument("--filter", type=_regex, default=None, help="regex over run ids and spec fields (key=value)")
    p.add_argument("--dry-run", action="store_true", help="print the matrix and what is done; run nothing")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results folder (default: results/)")
    p.add_argument("--report", default=None, help="report path (default: REPORT.md beside results/)")
    p.add_argument("--data", default=None, help="dataset root (default: $CLREPRO_DATA, else ~/.cache/clrepro/data)")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    p.add_argument("--no-download", action="store_true", default=bool(os.environ.get("CLREPRO_NO_DOWNLOAD")),
                   help="never download a missing dataset (default when $CLREPRO_NO_DOWNLOAD is set)")
    p.add_argument("--pack", type=_int_at_least("--pack", 1, ("auto",)), default="auto",
                   help="K: train up to K seeds of one spec together in one packed network (1: never); auto: 4 on "
                        "CUDA, 1 on CPU. Methods with per-run state decline (README: Packed runs)")
    p.add_argument("--fast", choices=("auto", "on", "off"), default="auto",
                   help="GPU fast path: bf16 autocast, channels_last, torch.compile, fused optimizers "
                        "(auto: all on for CUDA; on the CPU channels_last and the fused optimizers); recorded in each JSON under "
                        "provenance.engine")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile (auto: on for CUDA; on on the CPU compiles without bf16, unless --fast off)")
    p.add_argument("--checkpoint-every", type=_int_at_least("--checkpoint-every", 0), default=0, metavar="EPOCHS",
                   help="save a resumable mid-run checkpoint every EPOCHS epochs (default 0: every 5 minutes)")
    p.add_argument("--checkpoints", default=None, metavar="DIR",
                   help="folder of the mid-run checkpoints (default: checkpoints/ beside the results); with "
                        "--launcher ray on several machines, a folder every node reaches (without one, a retried "
                        "task restarts its run)")
    p.add_argument("--launcher", choices=("local", "ray"), default="local",
                   help="local: train in this process (default); ray: one Ray task per run or packed group")
    p.add_argument("--address", default=None,
                   help="with --launcher ray: the cluster to join (auto, or HOST:PORT of the head); default: "
                        "start a local Ray instance")
    p.add_argument("--cpus-per-run", type=_positive, default=1.0, metavar="N",
                   help="with --launcher ray: CPUs each task asks for (default 1)")
    p.add_argument("--gpus-per-run", type=_positive, default=None, metavar="F",
                   help="with --launcher ray on GPUs: GPUs each run asks for (default: by model, e.g. 0.25 for "
                        "ResNet-20, 1 for WRN/DenseNet)")
    p.add_argument("--max-retries", type=_int_at_least("--max-retries", 0), default=2,
                   help="with --launcher ray: retries of a task whose worker or node dies (default 2); then the "
                        "run is recorded failed")
    p.add_argument("--jobs", type=_int_at_least("--jobs", 1), default=1, metavar="N",
                   help="local launcher: N drivers of this command at once on this machine, sharing the results "
                        "folder (per-run locks: each run trains once), cores/N torch threads each; 2 on a 2-core "
                        "CPU, about 3 on one GPU for small networks (default 1; README: Speed)")
    p.add_argument("--targets", default=TARGET_DIR, help="folder of target YAML files (default: benchmarks/targets)")
    p.add_argument("--plugin", action="append", default=None, metavar="PATH_OR_MODULE",
                   help="import a file or module that registers methods of your own (repeatable; also "
                        "$CLREPRO_PLUGINS, separated by the OS path separator; README: Benchmark your own method)")
    return p


def report_path(args) -> str:
    return args.report or os.path.join(os.path.dirname(os.path.abspath(args.results)), "REPORT.md")


def cmd_list(targets, data_root: str, results: str = "results") -> None:
    from benchmarks.perf.cost import ASSUMPTION, CpuRates, plans_hours
    from benchmarks.targets.loader import teacher_plans

    rates = CpuRates.measure(results)

    def cpu_hours(plans) -> str:
        """CPU-hours of a set of runs and each distinct teacher run once; '?' when no CPU speed was measured."""
        every = list(plans) + list({t.run_id: t for p in plans for t in teacher_plans(p).values()}.values())
        hours = [rates.plan_hours(p) for p in every]
        return "?" if any(h is None for h in hours) else f"{sum(h[0] for h in hours):.1f}"

    print(f"{'target':<22} {'runs':>5} {'GPU-h':>7} {'CPU-h':>8}  datasets (present under {data_root})")
    sized = []
    for t in targets.values():
        plans = t.plans("full")
        ds = ", ".join(f"{d} [{'present' if dataset_present(d, data_root) else 'missing'}]" for d in t.datasets)
        print(f"{t.name:<22} {len(plans):>5} {plans_hours(plans):>7.1f} {cpu_hours(plans):>8}  {ds}")
        for row in t.raw["rows"]:  # rows sized for this CPU (YAML `reason`)
            if row.get("reason"):
                sized.append((t.name, f"row {row['id']}", [p for p in plans if p.row == row["id"]]))
        for budget in t.raw["budgets"]:
            if budget not in ("full", "smoke"):
                sized.append((t.name, f"budget {budget}", t.plans(budget)))
    print(f"runs, GPU-hours and CPU-hours at the full budget with the target's seeds (teacher runs counted once "
          f"each; runs shared by several targets are counted in each). GPU-hours: {ASSUMPTION}. CPU-hours: this "
          f"machine's 2 threads at the training speed measured in this suite's own CPU runs and bench, on this "
          f"CPU kind where it has any (benchmarks/perf/cost.py: CpuRates).")
    print()
    print("Rows and budgets sized for a CPU:")
    print(f"{'target':<22} {'what':<30} {'runs':>5} {'CPU-h':>8}  speed")
    for name, what, plans in sized:
        how = sorted({part for p in plans for part in (rates.plan_hours(p) or (0, "not measured"))[1].split("; ")},
                     key=lambda part: (" trains on " in part, part))  # the speed first, then curricula's shares
        print(f"{name:<22} {what:<30} {len(plans):>5} {cpu_hours(plans):>8}  {'; '.join(how)}")
    print(f"speeds measured {rates.where()}, this one being {rates.here}: " + "; ".join(
        f"{m} {statistics.median([r for r, _, _ in v]) / 1e9:.0f} GFLOP/s ({len(v)} measurement{'s' * (len(v) != 1)})"
        for m, v in sorted(rates.pool.items())))
    kinds = rates.by_kind()
    if len(kinds) > 1 or not rates.on_this_cpu:
        print("by CPU (all models): " + "; ".join(
            f"{k}{' (this one)' * (k == rates.here)}: {statistics.median(v) / 1e9:.0f} GFLOP/s median of {len(v)}"
            for k, v in sorted(kinds.items())))


def figure_feeds(targets) -> dict[str, list[str]]:
    """run id -> the figure targets (and kinds) whose figures read that run."""
    from benchmarks.targets.loader import figure_kind

    out: dict[str, list[str]] = {}
    for t in targets.values():
        kinds = [figure_kind(f) for f in t.raw.get("figures", [])]
        if not kinds:
            continue
        for budget in t.raw["budgets"]:
            for p in t.plans(budget):
                out.setdefault(p.run_id, []).append(f"{t.name}:{'+'.join(kinds)}")
    return out


def cmd_dry_run(plans, results: str, targets, data_root: str) -> None:
    from benchmarks.perf.cost import ASSUMPTION, plan_hours
    from benchmarks.targets.loader import teacher_plans
    from benchmarks.run.store import index_results, is_finished

    done = index_results(results)
    feeds = figure_feeds(targets)
    hours: dict[str, float] = {}
    for tp in {t.run_id: t for p in plans for t in teacher_plans(p).values()}.values():  # a teacher: once each
        if not is_finished(done.get(tp.run_id)):
            hours[tp.target] = hours.get(tp.target, 0.0) + plan_hours(tp)
    n_done = 0
    for p in plans:
        path = done.get(p.run_id)
        state = "done" if is_finished(path) else ("failed" if path else "todo")
        n_done += state == "done"
        h = plan_hours(p)
        if state != "done":
            hours[p.target] = hours.get(p.target, 0.0) + h
        s = p.spec
        extra = ""
        teachers = teacher_plans(p)
        if teachers:
            extra += " teacher=" + ",".join(t.run_id for t in teachers.values())
        if p.run_id in feeds:
            extra += " feeds=" + ",".join(sorted(set(feeds[p.run_id])))
        print(f"{p.run_id}  {state:<6} {p.target:<20} {p.row:<18} {p.variant:<14} seed={s['seed']} "
              f"budget={s['budget']} epochs={s['recipe']['epochs']} noise={s['data']['noise']['kind']}:"
              f"{s['data']['noise']['rate']} ~{h:.2f} GPU-h{extra}")
    for name in dict.fromkeys(p.target for p in plans):
        t = targets[name]
        ds = ", ".join(f"{d} [{'present' if dataset_present(d, data_root) else 'missing'}]" for d in t.datasets)
        print(f"{name}: {sum(q.target == name for q in plans)} runs, ~{hours.get(name, 0.0):.1f} GPU-h to run "
              f"(with its teacher runs); "
              f"datasets: {ds}")
    print(f"{len(plans)} runs, {n_done} done, {len(plans) - n_done} to run (GPU-hours: {ASSUMPTION})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["nightly"]:  # suites checked against baselines: benchmarks/nightly/suite.py
        from benchmarks.nightly.suite import main as nightly_main

        return nightly_main(argv[1:])
    if argv[:1] == ["bench"]:  # engine speed against the hand-written anchor loop: benchmarks/perf/bench.py
        from benchmarks.perf.bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["packcheck"]:  # packed vs unpacked final accuracies: benchmarks/perf/packcheck.py
        from benchmarks.perf.packcheck import main as packcheck_main

        return packcheck_main(argv[1:])
    args = parser().parse_args(argv)
    if os.path.exists(args.results) and not os.path.isdir(args.results):
        print(f"error: --results {args.results!r} is an existing file; name a folder (it is created if missing)",
              file=sys.stderr)
        return 2
    args.budget = args.budget or ("full" if args.target else DEFAULT_BUDGET)
    args.target = args.target or DEFAULT_TARGET
    data_root = args.data or default_data_root()
    try:
        if args.plugin or os.environ.get("CLREPRO_PLUGINS"):
            from benchmarks.plugins import load_plugins

            load_plugins(args.plugin)
        targets = load_targets(args.targets)
        if args.target == "list":
            cmd_list(targets, data_root, args.results)
            return 0
        from benchmarks.report.markdown import write_report

        if args.target == "report":
            write_report(targets, args.results, report_path(args))
            return 0
        chosen = resolve(args.target, targets)
        if not chosen:
            raise UsageError(f"paper {args.target!r} has no targets yet; known: {', '.join(sorted(targets))}")
        plans = [p for t in chosen for p in t.plans(args.budget, args.seeds)]
        if args.filter is not None:
            plans = [p for p in plans if p.matches(args.filter)]
            if not plans:
                raise UsageError(f"--filter {args.filter.pattern!r} matches no run of {args.target!r} "
                                 f"(it searches run ids and key=value spec fields, e.g. row=mlp)")
        ray_only = [f"--{k.replace('_', '-')}" for k in ("address", "gpus_per_run")
                    if getattr(args, k) is not None]
        if args.launcher != "ray" and ray_only:
            raise UsageError(f"{', '.join(ray_only)} needs --launcher ray")
        if args.jobs > 1 and args.launcher == "ray":
            raise UsageError(f"--jobs {args.jobs} is for the local launcher; with --launcher ray, Ray runs tasks side "
                             f"by side (--cpus-per-run, --gpus-per-run)")
        if args.dry_run:
            cmd_dry_run(plans, args.results, targets, data_root)
            return 0
        from benchmarks.run.runner import resolve_device, run_plans, todo_plans

        if args.launcher == "ray":
            return _run_on_ray(args, plans, targets, data_root)
        try:
            device = resolve_device(args.device)
        except RuntimeError as e:
            raise UsageError(str(e)) from None
        job = this_job()
        cache = load_needed(todo_plans(plans, args.results), data_root, not args.no_download)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.jobs > 1 and job is None and todo_plans(plans, args.results):  # the parent: N children train
        del cache  # loaded only to check the data before any child starts; each child loads its own
        rc = run_jobs(argv, args.jobs, stop_on_failure=args.fail_fast)
        if rc == INTERRUPTED:
            print(f"--jobs {args.jobs}: stopped by a signal; rerun the same command to resume", file=sys.stderr)
            return rc
        left = len(todo_plans(plans, args.results))
        print(f"--jobs {args.jobs}: " + (f"{left} run(s) of the matrix not finished" if left else
                                         "every run of the matrix is finished"))
        write_report(targets, args.results, report_path(args))
        print(f"report: {report_path(args)}")
        return rc or (1 if left else 0)
    failed = run_plans(plans, data_root, args.results, device, args.fail_fast, download=not args.no_download,
                       cache=cache, snapshots=snapshot_epochs(targets, args.seeds), pack=args.pack,
                       options=engine_options(args, device), checkpoints=args.checkpoints)
    if job is None:  # a --jobs child leaves the report to its parent
        write_report(targets, args.results, report_path(args))
        print(f"report: {report_path(args)}")
    return 1 if failed else 0


def _run_on_ray(args, plans, targets, data_root: str) -> int:
    """--launcher ray: the same matrix as Ray tasks (benchmarks.run.launchers.ray_launcher), then the report."""
    from benchmarks.report.markdown import write_report
    from benchmarks.run.runner import todo_plans

    try:
        import ray  # noqa: F401  (only this launcher needs it)
    except ImportError:
        raise UsageError("--launcher ray needs Ray: pip install -r requirements.txt (it pins ray)") from None
    from benchmarks.run.launchers.ray_launcher import run_plans_ray

    # a local instance reads this machine's data: check it before anything is written; on a cluster the workers
    # read their own $CLREPRO_DATA and a missing dataset is recorded as failed runs
    cache = {} if args.address else load_needed(todo_plans(plans, args.results), data_root, not args.no_download)
    try:
        failed = run_plans_ray(plans, data_root, args.results, args.device, args.fail_fast,
                               download=not args.no_download, cache=cache,
                               snapshots=snapshot_epochs(targets, args.seeds), pack=args.pack,
                               options=lambda device: engine_options(args, device), address=args.address,
                               cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                               max_retries=args.max_retries, checkpoints=args.checkpoints)
    except ConnectionError as e:  # no cluster at --address, or its token is not ours
        raise UsageError(f"--launcher ray: {e}; with token authentication (Ray's default) this machine needs the "
                         f"cluster's token ($RAY_AUTH_TOKEN or ~/.ray/auth_token) and, with --address HOST:PORT, "
                         f"RAY_AUTH_MODE=token") from None
    except RuntimeError as e:  # a task no node can hold, --device cuda on a cluster without GPUs
        raise UsageError(f"--launcher ray: {e}") from None
    write_report(targets, args.results, report_path(args))
    print(f"report: {report_path(args)}")
    return 1 if failed else 0
