"""Engine processes side by side (`--jobs N`, `jobs-NxK`) and the packing bound (how much K packed seeds can
gain on this device)."""
from __future__ import annotations

import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks.perf.bench_data import cifar_splits

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def jobs_shape(path: str) -> tuple[int, int]:
    """'jobs-N' -> (N, 1); 'jobs-NxK' -> (N, K): N processes side by side, each training K packed seeds."""
    n, _, k = path.split("-", 1)[1].partition("x")
    return int(n), int(k or 1)


def child_splits(data: dict):
    """A workload's splits rebuilt in a child process: real MNIST from its root, or the CIFAR-shaped random set."""
    if data["kind"] == "mnist":
        from data import load_dataset

        return load_dataset("mnist", data["root"], download=False)
    return cifar_splits(data["n"], data["n_test"])


def jobs_child() -> None:
    """One process of a jobs-N path (`python -c ...`): reads its job (one JSON line) from stdin, trains one epoch
    untimed (start-up, compilation), prints `ready`, waits for a line on stdin, trains the timed run and prints
    `result ` and its per-epoch training seconds as JSON."""
    import json

    import torch

    from engine.options import EngineOptions

    job = json.loads(sys.stdin.readline())  # threads: $OMP_NUM_THREADS, set by jobs_epoch_seconds
    device, options = torch.device(job["device"]), EngineOptions(**job["options"])
    splits = child_splits(job["data"])
    specs = [dict(job["spec"], seed=s) for s in job["seeds"]]
    engine_train_seconds([dict(s, recipe=dict(s["recipe"], epochs=1)) for s in specs], splits, device, options)
    print("ready", flush=True)
    sys.stdin.readline()
    print("result " + json.dumps({"train_s": engine_train_seconds(specs, splits, device, options)}), flush=True)


def jobs_epoch_seconds(n: int, k: int, spec: dict, data: dict, device, options, timeout: float = 3600) -> float:
    """Seconds of one epoch of n processes side by side (what `--jobs n` runs), each training k packed seeds:
    the children warm up (one untimed epoch each, at the same time), then all start their timed run together; a
    child's epoch is its mean training seconds over the epochs after the first (or its only one), and the path's
    epoch the slowest child's. A child silent for `timeout` seconds fails the path."""
    import json

    from benchmarks.run.launchers.jobs import child_threads

    threads = child_threads(n)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": str(threads)}
    errs = [tempfile.TemporaryFile(mode="w+") for _ in range(n)]
    procs = [subprocess.Popen([sys.executable, "-c", "from benchmarks.perf.drivers import jobs_child; jobs_child()"],
                              cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=e)
             for e in errs]
    deadline = time.monotonic() + timeout
    lines = [queue.Queue() for _ in procs]  # a reader thread per child: a hung child cannot block the parent

    def read(i: int) -> None:
        for line in iter(procs[i].stdout.readline, ""):
            lines[i].put(line)
        lines[i].put(None)

    for i in range(n):
        threading.Thread(target=read, args=(i,), daemon=True).start()

    def line_from(i: int, prefix: str) -> str:
        while True:
            try:
                line = lines[i].get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"jobs child {i + 1}: no answer in {timeout:.0f} s") from None
            if line is None:
                procs[i].wait()
                errs[i].seek(0)
                raise RuntimeError(f"jobs child {i + 1} ended early: {errs[i].read().strip()[-400:]}")
            if line.startswith(prefix):
                return line[len(prefix):]

    try:
        for i, p in enumerate(procs):
            p.stdin.write(json.dumps({"device": device.type, "options": options.record(),
                                      "data": data, "spec": spec, "seeds": [i * k + j for j in range(k)]}) + "\n")
            p.stdin.flush()
        for i in range(n):
            line_from(i, "ready")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        secs = []
        for i in range(n):
            s = json.loads(line_from(i, "result "))["train_s"]
            secs.append(statistics.mean(s[1:]) if len(s) > 1 else s[0])
        return max(secs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for e in errs:
            e.close()


def packing_bound(k: int, batch: int, device, steps: int = 300, rounds: int = 3) -> dict:
    """An upper bound on what packing k MNIST-MLP runs can gain here, measured without the engine: the same
    784-500-10 ReLU MLP step (SGD momentum, fused where torch has it, gradients set to None, data resident, a
    contiguous slice per step) written by hand once for one network (`F.linear`) and once for k networks stacked
    into (k, in, out) weights (`torch.baddbmm`, the layout that needs no transposed copy). Returns seconds per
    step (min over interleaved rounds) and k x single / packed: the throughput ratio of the best packed step
    written in plain torch."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.rand(k, steps * batch, 784, generator=g).to(device)
    y = torch.randint(0, 10, (k, steps * batch), generator=g).to(device)
    fused = {"fused": True}

    def params(*shape_list):
        return [torch.nn.Parameter(torch.randn(*s, generator=g).mul_(0.03).to(device)) for s in shape_list]

    one = params((500, 784), (500,), (10, 500), (10,))
    many = params((k, 784, 500), (k, 1, 500), (k, 500, 10), (k, 1, 10))
    opt1 = torch.optim.SGD(one, lr=0.01, momentum=0.9, **fused)
    optk = torch.optim.SGD(many, lr=0.01, momentum=0.9, **fused)

    def single(i):
        xb, yb = x[0, i * batch:(i + 1) * batch], y[0, i * batch:(i + 1) * batch]
        loss = F.cross_entropy(F.linear(F.linear(xb, one[0], one[1]).relu(), one[2], one[3]), yb)
        for p in one:
            p.grad = None
        loss.backward()
        opt1.step()

    def packed(i):
        xb, yb = x[:, i * batch:(i + 1) * batch], y[:, i * batch:(i + 1) * batch]
        h = torch.baddbmm(many[1], xb, many[0]).relu()
        loss = F.cross_entropy(torch.baddbmm(many[3], h, many[2]).flatten(0, 1), yb.flatten()) * k
        for p in many:
            p.grad = None
        loss.backward()
        optk.step()

    def timed(step) -> float:
        for i in range(min(20, steps)):
            step(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / steps

    t1, tk = [], []
    for _ in range(rounds):
        t1.append(timed(single))
        tk.append(timed(packed))
    return {"status": "ok", "k": k, "batch": batch, "steps": steps, "rounds": rounds, "single_step_s": min(t1),
            "packed_step_s": min(tk), "ratio": k * min(t1) / min(tk),
            "what": f"hand-written MLP step, one network (F.linear) vs {k} stacked (torch.baddbmm), fused SGD; "
                    f"k x single / packed"}


def engine_history(specs: list[dict], splits, device, options) -> list[dict]:
    """The per-epoch history of len(specs) engine runs (packed when > 1); the first run's."""
    from engine.trainer import train, train_group

    if len(specs) == 1:
        return train(specs[0], splits, device, options=options)["history"]
    outs = train_group(specs, splits, device, options=options)
    if len(outs) != len(specs):
        raise RuntimeError(f"train_group returned {len(outs)} results for {len(specs)} runs")
    return outs[0]["history"]


def engine_train_seconds(specs: list[dict], splits, device, options) -> list[float]:
    """Per epoch, the seconds the engine spent on the training batches of len(specs) runs (packed when > 1)."""
    hist = engine_history(specs, splits, device, options)
    return [h.get("train_seconds", h["seconds"]) for h in hist]  # the batches alone, as the anchor times
