"""`--jobs N` (local launcher): N drivers of the same command at once on this machine, sharing one results folder.

Each child is `python -m benchmarks <the same arguments, --jobs left out>` with `$CLREPRO_JOB=i/N` in its
environment. It runs the local launcher as usual: it walks the same matrix and trains every group that no other
driver holds, since the runner takes a per-run flock before it trains (`runner.acquire`). So each run is trained by
exactly one child, a KD student waits for the child training its teacher (the runner's blocking teacher lock), and
a child killed mid-run leaves its mid-run checkpoint for the next invocation. A child uses cores // N torch threads
(`child_threads`, passed as $OMP_NUM_THREADS, which torch reads at start), draws no progress bar and writes no report; the parent prefixes each child's lines with
`[job i]`, waits for all of them, and the caller writes the report once.

When it pays: where one run leaves the hardware idle. On the 2-core CPU an MNIST-MLP step (batch 20) is too small
to use two threads well, so two one-thread processes train about as much as two runs; on a GPU, runs bound by
kernel-launch latency share it (README: Speed).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

ENV = "CLREPRO_JOB"  # "i/N" in a child's environment


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def child_threads(n_jobs: int, cores: int | None = None) -> int:
    """Torch threads for each of `n_jobs` children: the machine's cores split evenly, at least one."""
    return max(1, (cores or usable_cores()) // n_jobs)


def this_job() -> tuple[int, int] | None:
    """(i, N) when this process is child i of N (from $CLREPRO_JOB), else None; UsageError when it is malformed."""
    from benchmarks.errors import UsageError

    text = os.environ.get(ENV)
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"${ENV}={text!r}: expected i/N, e.g. 1/2") from None
    if not 1 <= i <= n:
        raise UsageError(f"${ENV}={text!r}: expected 1 <= i <= N")
    return i, n


def without_jobs(argv: list[str]) -> list[str]:
    """`argv` with every `--jobs N` / `--jobs=N` removed, argparse's abbreviations (`--jo 2`) too: the children run
    the same command, once each."""
    def is_jobs(a: str) -> bool:
        name = a.split("=", 1)[0]
        return len(name) >= 3 and "--jobs".startswith(name)

    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif is_jobs(a):
            skip = "=" not in a
        else:
            out.append(a)
    return out


INTERRUPTED = 130  # run_jobs' code when the parent was stopped by a signal (forwarded to the children)


def run_jobs(argv: list[str], n_jobs: int, out=None, stop_on_failure: bool = False) -> int:
    """Run `python -m benchmarks argv` as `n_jobs` children at once (in this process's working folder); return
    INTERRUPTED if SIGINT/SIGTERM stopped the parent (each child got it, forwarded), 2 if a child exited 2 (bad
    input), 1 if any other child failed (a failed run, a crash), else 0. The children run in their own process
    group, so a terminal's Ctrl-C reaches them once, through the parent. `stop_on_failure` (--fail-fast): the first
    child to exit non-zero stops its siblings (SIGTERM)."""
    out = out or sys.stdout
    argv = without_jobs(argv)
    threads = child_threads(n_jobs)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    write = threading.Lock()
    procs: list[subprocess.Popen] = []
    stopped: list[int] = []
    sink = {"broken": False}

    def emit(text: str) -> None:
        with write:
            if sink["broken"]:
                return
            try:
                out.write(text)
                out.flush()
            except (OSError, ValueError):  # a closed pipe (`... | head`): keep draining the children, drop output
                sink["broken"] = True

    def pump(i: int, stream) -> None:
        for line in iter(stream.readline, ""):
            emit(f"[job {i}] {line}" if line.endswith("\n") else f"[job {i}] {line}\n")

    def forward(signum, _frame) -> None:
        stopped.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    pumps = []
    path = os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH")) if x)
    try:
        emit(f"--jobs {n_jobs}: {n_jobs} drivers share the results folder, {threads} torch thread(s) each; "
             f"per-run locks keep them apart\n")
        for i in range(1, n_jobs + 1):
            if stopped:
                break
            env = {**os.environ, ENV: f"{i}/{n_jobs}", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1",
                   "OMP_NUM_THREADS": str(threads), "PYTHONPATH": path}
            p = subprocess.Popen([sys.executable, "-m", "benchmarks", *argv], env=env, text=True, encoding="utf-8",
                                 errors="replace", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 process_group=0)
            procs.append(p)
            t = threading.Thread(target=pump, args=(i, p.stdout), daemon=True)
            t.start()
            pumps.append(t)
        while any(p.poll() is None for p in procs):
            if stop_on_failure and any(p.poll() not in (None, 0) for p in procs):
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
            time.sleep(0.2)
        codes = [p.wait() for p in procs]
        for t in pumps:
            t.join(timeout=10)  # a grandchild holding the pipe open must not hang the parent
    finally:
        for p in procs:  # the parent stopping early (an exception) leaves no child behind
            if p.poll() is None:
                p.terminate()
        for s, h in old.items():
            signal.signal(s, h)
    for i, c in enumerate(codes, 1):
        if c != 0:
            emit(f"--jobs: job {i} exited {c}\n")
    if stopped:
        return INTERRUPTED
    if 2 in codes:
        return 2
    return 1 if any(codes) else 0
