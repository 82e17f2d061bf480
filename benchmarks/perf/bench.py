"""Engine vs hand-written loop: seconds per epoch and throughput on this machine (`./reproduce.sh bench`).

Split by what it measures: this module times the workloads (anchor against engine paths) and states the targets;
`roofline.py` what the machine can reach (one large matmul's FLOP rate, ResNet-20's FLOPs); `drivers.py` engine
processes side by side and the packing bound; `bench_data.py` the anchors' on-disk data; `cli_startup.py` the
command line's start-up (`./reproduce.sh bench cli`).

Three workloads, interleaved round by round (the machine may be shared with other jobs). The first two:
- MNIST-MLP, batch 20 (real MNIST; 784-500-10 ReLU MLP, SGD lr 0.01 momentum 0.9, no augmentation);
- CIFAR-shaped ResNet-20, batch 128 (random uint8 images of CIFAR's shape, 10 classes; SGD lr 0.1 momentum 0.9
  wd 1e-4, random crop + flip, per-channel normalisation);
and for each (a) the anchor, `../shared/bench/baseline_loop.py` (torchvision dataset + DataLoader + model + SGD,
run as a subprocess with this interpreter), (b) the engine, one run (`engine.trainer.train`), (c) the engine with
K runs of different seeds packed into one network (`engine.trainer.train_group`; throughput = K x images / s),
(d) N engine processes side by side, as `--jobs N` runs them (`jobs-N`; `jobs-NxK`: each packs K seeds; they
warm up, then all train together; throughput = N x K x images / the slowest one's epoch). Also the per-step cost of each method relative to ERM (`benchmarks.perf.overhead`). Writes
`<out>/<cpu|cuda>.json` with the device, torch version, date, the per-round seconds (min and median), the ratios
and issue 11's targets (threshold, measured value, pass/fail; "not measured" where a target was not measured at
its size). Both sides time the training batches of an epoch alone: the anchor's `epoch_s`, the engine's
`train_seconds` (its end-of-epoch evaluations excluded, with a device synchronisation before the clock stops).

The third (issue 18), `cifar10-resnet20`: ResNet-20 on real CIFAR-10 (`data.load_dataset("cifar10")`, the WebP
copy in ../shared/data/CIFAR10), batch 128, one epoch of all 50,000 images per path per round (tiny: 256). Its
anchor is `benchmarks/perf/anchors/cifar10_loop.py`, the loop a researcher writes: torchvision's CIFAR10 dataset (the
decoded arrays written once in torchvision's on-disk layout to the cache, MD5 check skipped: see the script),
RandomCrop + flip + ToTensor + Normalize per sample, DataLoader(2 workers, shuffle), fp32, SGD. Against it: the
engine with the bench's options (CPU default: channels_last + fused), `engine-eager-nchw` (`--fast off`) and
`engine-compiled` (torch.compile + channels_last + fused; its compile seconds are measured from a fresh compile and
counted in `whole_run`, a 160-epoch run's seconds per path). Also measured: the fp32 rate of one large matmul
(`matmul`, GFLOP/s) and ResNet-20's FLOPs (FlopCounterMode; training = 3 x forward), so each ResNet-20 path's
throughput is also stated as training GFLOP/s and its share of that matmul rate (`of_matmul_peak`).

    ./reproduce.sh bench [--device cpu|cuda] [--size tiny|full] [--rounds R] [--packs 2,4] [--jobs 2,3x3] [--out DIR]
                         [--workloads mnist-mlp,cifar-resnet20,cifar10-resnet20] [--cifar10-images N]
                         [--cifar10-compiled auto|on|off]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.perf.bench_data import (cifar10_torchvision_root, cifar_splits,  # noqa: F401
                                        write_tiny_mnist, write_torchvision_cifar10)
from benchmarks.perf.drivers import (engine_history, engine_train_seconds, jobs_child, jobs_epoch_seconds,  # noqa: F401
                                     jobs_shape, packing_bound)
from benchmarks.perf.roofline import matmul_rate, resnet20_flops  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(ROOT, "results", "bench")
SCHEMA = 1

MNIST_BATCH, CIFAR_BATCH = 20, 128
CIFAR_N = 50_000  # the anchor's CIFAR-shaped training set (fixed in baseline_loop.py)
CIFAR_CPU_SUBSET = 5_000  # CPU --size full: the engine's CIFAR-shaped epoch (a full ResNet-20 epoch takes minutes)
CIFAR_TEST = 256  # the CIFAR-shaped test split the engine evaluates after each epoch
CIFAR_NORM = [[0.49, 0.48, 0.45], [0.25, 0.24, 0.26]]  # as the anchor's
CIFAR10_TEST = 256  # real CIFAR-10: the test images both sides evaluate after training (not timed)
CIFAR10_NAME = "cifar10-resnet20"
WORKLOADS = ("mnist-mlp", "cifar-resnet20", CIFAR10_NAME)
WHOLE_RUN_EPOCHS = 160  # the "whole run" figure: a 160-epoch ResNet-20 training (compile time paid once)
TINY = {"mnist_train": 512, "mnist_test": 256, "cifar_train": 256, "cifar_test": 64, "cifar10_train": 256,
        "cifar10_test": 64}
PACKS = {("tiny", "cpu"): (2,), ("tiny", "cuda"): (2,), ("full", "cpu"): (2, 3), ("full", "cuda"): (2, 4, 8)}
# processes side by side (`--jobs N`; NxK: each packs K seeds): on the GPU, 3x3 is how device_session.sh trains
JOBS = {("tiny", "cpu"): ("2",), ("tiny", "cuda"): ("2",), ("full", "cpu"): ("2",), ("full", "cuda"): ("3", "3x3")}
OVERHEAD_METHODS_TINY = ["erm", "dataparams", "superloss", "blcl", "codistill"]


# ----------------------------------------------------------------------------------------------------- helpers
def shared_dir() -> str:
    return os.environ.get("CLREPRO_SHARED") or os.path.join(os.path.dirname(ROOT), "shared")


def anchor_script() -> str:
    return os.path.join(shared_dir(), "bench", "baseline_loop.py")


def data_root() -> str:
    return os.environ.get("CLREPRO_DATA") or os.path.join(os.path.dirname(ROOT), "shared", "data")


_EPOCH_S = re.compile(r"\bepoch_s=([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")


def parse_anchor_output(text: str) -> float:
    """Seconds per epoch from the anchor's output: `epoch_s=` on its last line that has one."""
    for line in reversed(text.strip().splitlines()):
        m = _EPOCH_S.search(line)
        if m:
            return float(m.group(1))
    raise ValueError(f"no 'epoch_s=' in the anchor's output: {text.strip()[-300:]!r}")


def device_record(device) -> dict:
    import torch

    from benchmarks.run.launchers.jobs import usable_cores
    from benchmarks.run.host import cpu_kind, cpu_name

    rec = {"device_class": device.type, "cpu": cpu_name(), "cpu_kind": cpu_kind(), "cores": os.cpu_count(),
           "usable_cores": usable_cores(), "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        rec["device"] = torch.cuda.get_device_name(device)
        rec["cuda"] = torch.version.cuda
    else:
        rec["device"] = rec["cpu"]
    return rec


def _git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _summary(seconds: list[float], images: int) -> dict:
    """Per-round epoch seconds -> min, median and the throughputs (images / s) they give."""
    lo, med = min(seconds), statistics.median(seconds)
    return {"status": "ok", "rounds_s": [round(s, 4) for s in seconds], "epoch_s": lo, "epoch_s_median": med,
            "images": images, "images_per_s": images / lo, "images_per_s_median": images / med}


# ------------------------------------------------------------------------------------------------------- data
def cifar10_spec(train_subset: int | None, test_subset: int | None, epochs: int) -> dict:
    """ResNet-20 on real CIFAR-10 with the anchor's recipe (SGD lr 0.1 momentum 0.9 wd 1e-4, random crop + flip,
    the dataset's per-channel mean / std)."""
    return {"seed": 0, "method": {"name": "erm"}, "model": {"name": "resnet20"},
            "data": {"dataset": "cifar10", "noise": {"kind": "none", "rate": 0.0},
                     "train_subset": train_subset, "test_subset": test_subset},
            "recipe": {"epochs": epochs, "batch_size": CIFAR_BATCH,
                       "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
                       "schedule": {"name": "constant"}, "augment": "crop_flip", "normalize": "dataset"}}


def mnist_spec(train_subset: int | None, test_subset: int | None, epochs: int) -> dict:
    return {"seed": 0, "method": {"name": "erm"}, "model": {"name": "mlp500", "hidden": 500, "activation": "relu"},
            "data": {"dataset": "mnist", "noise": {"kind": "none", "rate": 0.0}, "train_subset": train_subset,
                     "test_subset": test_subset},
            "recipe": {"epochs": epochs, "batch_size": MNIST_BATCH,
                       "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}, "schedule": {"name": "constant"},
                       "augment": "none"}}


def cifar_spec(train_subset: int | None, epochs: int) -> dict:
    return {"seed": 0, "method": {"name": "erm"}, "model": {"name": "resnet20"},
            "data": {"dataset": "cifar-shaped", "noise": {"kind": "none", "rate": 0.0},
                     "train_subset": train_subset, "test_subset": None},
            "recipe": {"epochs": epochs, "batch_size": CIFAR_BATCH,
                       "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
                       "schedule": {"name": "constant"}, "augment": "crop_flip", "normalize": CIFAR_NORM}}


# ------------------------------------------------------------------------------------------------- measuring
_TEST_ACC = re.compile(r"\btest_acc=([0-9.]+|nan)")


def parse_anchor_accuracy(text: str) -> float | None:
    """The test accuracy (%) on the anchor's last line that has `test_acc=`; None when absent or nan."""
    for line in reversed(text.strip().splitlines()):
        m = _TEST_ACC.search(line)
        if m:
            return None if m.group(1) == "nan" else float(m.group(1))
    return None


def run_anchor(task: str, root: str, epochs: int, batch: int, workers: int, device: str,
               timeout: float = 7200, script: str | None = None,
               extra: tuple[str, ...] = ()) -> tuple[float, str, float | None]:
    """(seconds per epoch, the command, test accuracy or None) of one anchor run in a subprocess with this
    interpreter: `../shared/bench/baseline_loop.py TASK ROOT ...`, or `script ROOT ...` (an anchor of this repo,
    benchmarks/perf/anchors/) with `extra` arguments."""
    head = [anchor_script(), task] if script is None else [script]
    cmd = [sys.executable, *head, root, "--epochs", str(epochs), "--batch", str(batch), "--workers", str(workers),
           "--device", device, *extra]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    shown = " ".join(cmd[1:]).replace(ROOT + os.sep, "")
    if p.returncode != 0:
        raise RuntimeError(f"anchor exited {p.returncode}: {(p.stderr or p.stdout).strip()[-500:]}")
    return parse_anchor_output(p.stdout), shown, parse_anchor_accuracy(p.stdout)


class Workload:
    """One workload's paths and their per-round seconds: the anchor, the engine with the bench's options, engine
    variants with other options (`variants`: path name -> EngineOptions, or a skip reason), packed-K and jobs-N."""

    def __init__(self, name: str, batch: int, splits, spec: dict, n_engine: int, anchor: dict | None,
                 anchor_skip: str | None, packs: tuple[int, ...], notes: list[str], jobs: tuple[str, ...] = (),
                 child_data: dict | None = None, variants: dict | None = None, flops: dict | None = None,
                 whole_run: int | None = None):
        self.name, self.batch, self.splits, self.spec, self.n_engine = name, batch, splits, spec, n_engine
        self.anchor, self.anchor_skip, self.packs, self.notes = anchor, anchor_skip, packs, notes
        self.jobs, self.child_data = jobs, child_data
        self.variants = variants or {}
        self.flops, self.whole_run = flops, whole_run
        self.seconds: dict[str, list[float]] = {}
        self.errors: dict[str, str] = {}
        self.anchor_cmd: str | None = None
        self.test_acc: dict[str, float] = {}
        self.compile: dict[str, dict] = {}  # compiled variants: the first (compiling) round's epochs

    def paths(self) -> list[str]:
        return (["anchor", "engine"] + list(self.variants) + [f"packed-{k}" for k in self.packs]
                + [f"jobs-{j}" for j in self.jobs])

    def images(self, path: str) -> int:
        if path == "anchor":
            return self.anchor["images"]
        if path.startswith("jobs-"):
            n, k = jobs_shape(path)
            return self.n_engine * n * k
        if path.startswith("packed-"):
            return self.n_engine * int(path.split("-")[1])
        return self.n_engine

    def skip_reason(self, path: str) -> str | None:
        if path == "anchor":
            return self.anchor_skip
        v = self.variants.get(path)
        return v if isinstance(v, str) else None

    def _measure_engine(self, path: str, device, options) -> float:
        """One round of an engine path (one run, or K packed): its steady training seconds per epoch. A compiled
        variant's first round starts from a fresh compile (torch._dynamo.reset(), as a new process would) and
        trains one more epoch: its first epoch minus a steady one is the compile / warm-up time; later rounds
        reuse the compiled code, as the later epochs of a long run do."""
        import torch

        k = 1 if not path.startswith("packed-") else int(path.split("-")[1])
        specs = [dict(self.spec, seed=i) for i in range(k)]
        first_compile = options.compile and path in self.variants and path not in self.compile
        if first_compile:
            torch._dynamo.reset()
            epochs = self.spec["recipe"]["epochs"] + 1
            specs = [dict(sp, recipe=dict(sp["recipe"], epochs=epochs)) for sp in specs]
        if device.type == "cuda":
            torch.cuda.synchronize()
        hist = engine_history(specs, self.splits, device, options)
        if hist and "test_acc" in hist[-1]:
            self.test_acc[path] = hist[-1]["test_acc"]
        secs = [h.get("train_seconds", h["seconds"]) for h in hist]
        if len(secs) == 1:
            return secs[0]
        j = 1 + min(range(len(secs) - 1), key=lambda i: secs[1 + i])  # the fastest epoch after the first
        if first_compile:
            self.compile[path] = {
                "first_epoch_s": hist[0]["seconds"], "first_epoch_train_s": secs[0],
                "steady_epoch_s": hist[j]["seconds"], "steady_epoch_train_s": secs[j],
                "compile_s": max(0.0, hist[0]["seconds"] - hist[j]["seconds"]),
                "inductor_disk_cache": _inductor_disk_cache(),
                "what": "first epoch minus a steady one, each counted whole (training batches and the end-of-epoch "
                        "evaluation, which compiles its own graph), in the first round, from a fresh compile "
                        "(torch._dynamo.reset()) but with inductor's on-disk caches as found (a machine's first-ever "
                        "compile of this network takes longer); 0 when the load of other jobs hides it"}
        return secs[j]

    def measure(self, path: str, device, options) -> None:
        if path in self.errors or self.skip_reason(path):
            return
        try:
            if path == "anchor":
                a = self.anchor
                s, self.anchor_cmd, acc = run_anchor(a["task"], a["root"], a["epochs"], self.batch, a["workers"],
                                                     device.type, script=a.get("script"),
                                                     extra=tuple(a.get("extra", ())))
                if acc is not None:
                    self.test_acc[path] = acc
            elif path.startswith("jobs-"):
                s = jobs_epoch_seconds(*jobs_shape(path), self.spec, self.child_data, device, options)
            else:
                s = self._measure_engine(path, device, self.variants.get(path, options))
        except Exception as e:  # recorded, never a made-up number
            self.errors[path] = f"{type(e).__name__}: {e}"
            print(f"  {self.name} {path}: FAILED ({self.errors[path][:200]})", flush=True)
            return
        self.seconds.setdefault(path, []).append(s)
        print(f"  {self.name:<15} {path:<17} {s:9.3f} s/epoch  {self.images(path) / s:10.0f} images/s", flush=True)

    def record(self, matmul: dict | None = None, matmul_bf16: dict | None = None) -> dict:
        paths = {}
        for p in self.paths():
            why = self.skip_reason(p)
            if why:
                paths[p] = {"status": "skipped", "reason": why}
            elif p in self.errors:
                paths[p] = {"status": "failed", "reason": self.errors[p]}
            elif p not in self.seconds:  # a partial record, written before this path's first round
                paths[p] = {"status": "not run", "reason": "not measured yet"}
            else:
                paths[p] = _summary(self.seconds[p], self.images(p))
            if p == "anchor" and self.anchor:
                paths[p].update({"workers": self.anchor["workers"], "epochs": self.anchor["epochs"],
                                 "command": self.anchor_cmd})
            if p in self.variants and not isinstance(self.variants[p], str):
                paths[p]["options"] = self.variants[p].record()
            if p in self.test_acc:
                paths[p]["test_acc"] = self.test_acc[p]
            if p.startswith("packed-"):
                paths[p]["k"] = int(p.split("-")[1])
            if p.startswith("jobs-"):
                from benchmarks.run.launchers.jobs import child_threads

                n, k = jobs_shape(p)
                paths[p].update({"processes": n, "k": k, "threads_each": child_threads(n),
                                 "what": f"{n} processes side by side (--jobs {n}), each training "
                                         f"{'one run' if k == 1 else f'{k} packed seeds'}; the slowest one's epoch"})
            if p in self.compile:
                paths[p].update(self.compile[p])
            if self.flops and paths[p]["status"] == "ok":
                for key in ("images_per_s", "images_per_s_median"):
                    suffix = key[len("images_per_s"):]
                    gf = paths[p][key] * self.flops["train_per_image"] / 1e9
                    paths[p]["train_gflops_per_s" + suffix] = gf
                    # a bf16 path against the bf16 matmul rate: its own arithmetic's peak
                    bf16 = (paths[p].get("options") or {}).get("amp") == "bf16"
                    peak = matmul_bf16 if bf16 else matmul
                    if peak and peak.get("status") == "ok":
                        paths[p]["of_matmul_peak" + suffix] = gf / peak["gflops"]
        ratios = {}

        def ratio(num: str, den: str) -> None:
            a, b = paths.get(num, {}), paths.get(den, {})
            if a.get("status") == "ok" and b.get("status") == "ok":
                ratios[f"{num}/{den}"] = {"value": a["images_per_s"] / b["images_per_s"],
                                          "median": a["images_per_s_median"] / b["images_per_s_median"]}
            else:
                ratios[f"{num}/{den}"] = "not measured"

        ratio("engine", "anchor")
        for v in self.variants:
            ratio(v, "anchor")
            ratio(v, "engine")
        for k in self.packs:
            ratio(f"packed-{k}", "engine")
        for j in self.jobs:
            ratio(f"jobs-{j}", "engine")
        out = {"batch": self.batch, "engine_images_per_epoch": self.n_engine, "spec": self.spec,
               "notes": self.notes, "paths": paths, "ratios": ratios}
        if self.flops:
            out["flops"] = self.flops
        if self.whole_run:
            out["whole_run"] = whole_run(paths, self.whole_run, CIFAR_N)
        return out


def _inductor_disk_cache() -> bool | None:
    """Whether torch inductor's on-disk FX graph cache is on (a compile then reuses earlier processes' work)."""
    try:
        from torch._inductor import config

        return bool(config.fx_graph_cache)
    except Exception:
        return None


def whole_run(paths: dict, epochs: int, images: int) -> dict:
    """Seconds of a whole `epochs`-epoch run over `images` training images per path, from its throughput (min
    round) plus, for a compiled path, its compile / warm-up seconds (paid once per run): which path wins over a
    whole run, not per epoch."""
    secs = {}
    for name, p in paths.items():
        if p.get("status") == "ok":
            secs[name] = p.get("compile_s", 0.0) + epochs * images / p["images_per_s"]
        else:
            secs[name] = None
    ok = {k: v for k, v in secs.items() if v is not None}
    fp32 = {k: v for k, v in ok.items() if (paths[k].get("options") or {}).get("amp", "none") == "none"}
    return {"epochs": epochs, "images_per_epoch": images, "seconds": secs,
            "fastest": min(fp32, key=fp32.get) if fp32 else None,  # the default's arithmetic (float32)
            "fastest_any_arithmetic": min(ok, key=ok.get) if ok else None,
            "what": f"compile_s (compiled paths) + {epochs} x {images:,} / images_per_s (the min round)"}


# ---------------------------------------------------------------------------------------------------- targets
def _target(tid: str, text: str, op: str, threshold: float, value, why: str | None = None) -> dict:
    if isinstance(value, (int, float)):
        ok = value >= threshold if op == ">=" else value <= threshold
        return {"id": tid, "text": text, "op": op, "threshold": threshold, "measured": value, "pass": ok}
    return {"id": tid, "text": text, "op": op, "threshold": threshold, "measured": "not measured", "pass": None,
            "reason": why or "not measured"}


def targets(device_class: str, size: str, workloads: dict, overhead: dict) -> list[dict]:
    """Issue 11's targets for this device class. Measured only at --size full (the targets' own size)."""
    tiny = "--size tiny: the targets are defined at full size" if size != "full" else None

    def ratio(wl: str, key: str):
        r = workloads.get(wl, {}).get("ratios", {}).get(key, "not measured")
        return r["value"] if isinstance(r, dict) else None

    def why(wl: str, path: str) -> str:
        p = workloads.get(wl, {}).get("paths", {}).get(path)
        if p is None:
            return f"{wl} {path} not run"
        return f"{wl} {path}: {p.get('reason', p.get('status'))}"

    def why2(wl: str, a: str, b: str) -> str:
        pa = workloads.get(wl, {}).get("paths", {}).get(a, {})
        return why(wl, a if pa.get("status") != "ok" else b)

    out = []
    if device_class == "cpu":
        v = None if tiny else ratio("mnist-mlp", "engine/anchor")
        out.append(_target("cpu-engine-vs-anchor", "MNIST-MLP batch 20: engine throughput >= 2x the anchor's",
                           ">=", 2.0, v, tiny or why2("mnist-mlp", "anchor", "engine")))
        v = None if tiny else ratio("mnist-mlp", "packed-3/engine")
        out.append(_target("cpu-packed-3", "MNIST-MLP: 3 packed seeds >= 2x the throughput of one run", ">=", 2.0,
                           v, tiny or why("mnist-mlp", "packed-3")))
        bound = workloads.get("mnist-mlp", {}).get("bound", {})
        if not tiny and bound.get("status") == "ok" and bound.get("k") == 3:
            out[-1]["bound"] = bound["ratio"]
            out[-1]["bound_note"] = (
                f"the best packed step written by hand in plain torch reaches {bound['ratio']:.2f}x here"
                + (": no packing of this step can meet the threshold on this machine" if bound["ratio"] < 2.0
                   else ""))
    else:
        eng = workloads.get("cifar-resnet20", {}).get("paths", {}).get("engine", {})
        v = eng.get("epoch_s") if (not tiny and eng.get("status") == "ok"
                                   and eng.get("images") == CIFAR_N) else None
        out.append(_target("gpu-resnet20-epoch", "ResNet-20 (CIFAR-shaped, batch 128): <= 1.0 s per 50k-image "
                           "epoch, one run", "<=", 1.0, v, tiny or why("cifar-resnet20", "engine")))
        v = None if tiny else ratio("cifar-resnet20", "engine/anchor")
        out.append(_target("gpu-engine-vs-anchor", "ResNet-20: engine throughput >= 10x the anchor's (4 workers)",
                           ">=", 10.0, v, tiny or why2("cifar-resnet20", "anchor", "engine")))
        v = None if tiny else ratio("cifar-resnet20", "packed-4/engine")
        out.append(_target("gpu-packed-4", "ResNet-20: 4 packed seeds >= 2.5x the throughput of one run", ">=", 2.5,
                           v, tiny or why("cifar-resnet20", "packed-4")))
        steps = overhead.get("resnet20", {})
        for m, thr in (("dataparams", 1.10), ("superloss", 1.10), ("blcl", 2.1), ("codistill", 2.1)):
            v = None if tiny else steps.get("x_erm", {}).get(m)
            out.append(_target(f"gpu-step-{m}", f"ResNet-20 batch 128: {m} step time <= {thr:.2f}x ERM's", "<=", thr,
                               v, tiny or steps.get("reason", f"{m} not timed")))
    c10 = workloads.get(CIFAR10_NAME, {})
    eng = c10.get("paths", {}).get("engine", {})
    full_epoch = eng.get("status") != "ok" or eng.get("images") == CIFAR_N
    v = None if (tiny or not full_epoch) else ratio(CIFAR10_NAME, "engine/anchor")
    out.append(_target(f"{device_class}-cifar10-engine-vs-anchor",
                       "ResNet-20 on real CIFAR-10, batch 128: engine throughput >= 2x the anchor's (torchvision "
                       "CIFAR10 + DataLoader, 2 workers), over a 50,000-image epoch", ">=", 2.0, v,
                       tiny or (None if full_epoch else f"{CIFAR10_NAME}: the engine trained {eng.get('images')} "
                                f"images per epoch; the target is defined on the full 50,000")
                       or (c10.get("reason") if c10.get("status") == "skipped" else None)
                       or why2(CIFAR10_NAME, "anchor", "engine")))
    frac = c10.get("paths", {}).get("anchor", {}).get("of_matmul_peak")
    if v is not None and frac:  # a roofline for the ratio: the engine at the rate of one large matmul
        out[-1]["bound"] = 1.0 / frac
        out[-1]["bound_note"] = (
            f"the anchor already reaches {100 * frac:.0f}% of one large fp32 matmul's FLOP rate here, so an engine "
            f"running ResNet-20 at 100% of that rate would be {1.0 / frac:.2f}x the anchor"
            + (": no engine can meet the threshold on this machine" if 1.0 / frac < 2.0 else ""))
    return out


# ------------------------------------------------------------------------------------------------------- main
def _overhead(model: str, batch: int, device, steps: int, repeats: int, methods: list[str]) -> dict:
    from benchmarks.perf.overhead import time_methods

    try:
        res = time_methods(methods, model, batch, device, steps, repeats)
    except Exception as e:
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    base = res["erm"]
    return {"status": "ok", "batch": batch, "steps": steps, "repeats": repeats,
            "ms_per_step": {m: 1000 * t for m, t in res.items()}, "x_erm": {m: t / base for m, t in res.items()}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reproduce.sh bench", description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--size", choices=("tiny", "full"), default="full",
                   help="full: real epochs (60k MNIST, 50k CIFAR-shaped, 5k for the engine on CPU; 50k real CIFAR-10 "
                        "on every path); tiny: a few hundred samples, K=2 (the CI smoke)")
    p.add_argument("--out", default=DEFAULT_OUT, help="folder of the <device-class>.json (default results/bench)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, tiny 2)")
    p.add_argument("--packs", default=None, help="comma-separated K list (default: tiny 2; CPU 2,3; CUDA 2,4,8)")
    p.add_argument("--jobs", default=None,
                   help="processes side by side, as --jobs N runs them: comma-separated N or NxK (K packed seeds "
                        "each), or none (default: CPU 2; CUDA 3,3x3)")
    p.add_argument("--fast", choices=("auto", "on", "off"), default="auto", help="engine fast path")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="engine torch.compile")
    p.add_argument("--cifar-anchor", action="store_true",
                   help="also run the CIFAR anchor on CPU (a 50k ResNet-20 epoch there takes many minutes)")
    p.add_argument("--no-overhead", action="store_true", help="skip the per-method step-time ratios")
    p.add_argument("--data", default=None,
                   help="data root holding MNIST and CIFAR10 (default: $CLREPRO_DATA, else ../shared/data)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated workloads to run (default: all: {','.join(WORKLOADS)})")
    p.add_argument("--cifar10-images", type=int, default=None,
                   help=f"{CIFAR10_NAME}: training images per epoch on every path (default: tiny "
                        f"{TINY['cifar10_train']}, full all 50,000)")
    p.add_argument("--cifar10-compiled", choices=("auto", "on", "off"), default="auto",
                   help=f"{CIFAR10_NAME}: the engine-compiled path (torch.compile, compile time counted); auto: "
                        f"at --size full only")
    return p


def parse_jobs(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """--jobs: 'none', or a comma-separated list of N or NxK (N >= 2 processes, K >= 1 packed seeds each)."""
    if text is None:
        return default
    if text == "none":
        return ()
    out = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))  # each path once
    if not out or not all(re.fullmatch(r"[0-9]+(x[0-9]+)?", t) and jobs_shape(f"jobs-{t}")[0] >= 2
                          and jobs_shape(f"jobs-{t}")[1] >= 1 for t in out):
        raise ValueError(text)
    return out


def _fail(p: argparse.ArgumentParser, msg: str) -> int:
    p.print_usage(sys.stderr)
    print(f"{p.prog}: error: {msg}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["cli"]:  # the command line's start-up time: benchmarks/perf/cli_startup.py
        from benchmarks.perf.cli_startup import main as cli_main

        return cli_main(argv[1:])
    p = build_parser()
    args = p.parse_args(argv)  # exits 2 on a bad choice, naming the option
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        return _fail(p, "--device cuda: no CUDA device available")
    if args.rounds is not None and args.rounds < 1:
        return _fail(p, f"--rounds {args.rounds}: must be >= 1")
    try:
        packs = (tuple(int(k) for k in args.packs.split(",")) if args.packs
                 else PACKS[(args.size, args.device)])
        if any(k < 2 for k in packs):
            raise ValueError
    except ValueError:
        return _fail(p, f"--packs {args.packs!r}: a comma-separated list of integers >= 2")
    try:
        jobs = parse_jobs(args.jobs, JOBS[(args.size, args.device)])
    except ValueError:
        return _fail(p, f"--jobs {args.jobs!r}: none, or a comma-separated list of N or NxK with N >= 2, K >= 1 "
                        f"(e.g. 2,3x3)")
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not names or any(w not in WORKLOADS for w in names):
        return _fail(p, f"--workloads {args.workloads!r}: a comma-separated list of {', '.join(WORKLOADS)}")
    if args.cifar10_images is not None and args.cifar10_images < 1:
        return _fail(p, f"--cifar10-images {args.cifar10_images}: must be >= 1")
    from engine.options import EngineOptions

    device = torch.device(args.device)
    try:
        options = EngineOptions.for_device(device, fast=args.fast, compile=args.compile)
    except ValueError as e:
        return _fail(p, str(e))
    tiny = args.size == "tiny"
    rounds = args.rounds or (2 if tiny else 3)
    cuda = device.type == "cuda"
    root = args.data or data_root()
    have_anchor = os.path.isfile(anchor_script())
    no_anchor = None if have_anchor else f"anchor script not found: {anchor_script()} (set CLREPRO_SHARED)"
    tmp = tempfile.TemporaryDirectory(prefix="clrepro-bench-")
    workloads: list[Workload] = []
    skipped: dict[str, dict] = {}

    # MNIST-MLP
    from data import dataset_present, load_dataset

    if "mnist-mlp" not in names:
        pass
    elif not dataset_present("mnist", root):
        skipped["mnist-mlp"] = {"status": "skipped", "reason": f"MNIST not found under {root} (set CLREPRO_DATA)"}
    else:
        splits = load_dataset("mnist", root, download=False)
        n_tr = TINY["mnist_train"] if tiny else len(splits.y_train)
        notes = ["real MNIST; both sides time the training batches alone (engine: history train_seconds)"]
        anchor_root = root
        if tiny and have_anchor:
            anchor_root = os.path.join(tmp.name, "mnist")
            write_tiny_mnist(root, anchor_root, TINY["mnist_train"], TINY["mnist_test"])
            notes.append(f"tiny: the anchor reads the first {n_tr} MNIST training images (an IDX copy); the engine "
                         f"a fixed subset of {n_tr}")
        anchor = {"task": "mnist-mlp", "root": anchor_root, "epochs": 2 if cuda and not tiny else 1,
                  "workers": 0, "images": n_tr}
        workloads.append(Workload(
            "mnist-mlp", MNIST_BATCH, splits,
            mnist_spec(n_tr if tiny else None, TINY["mnist_test"] if tiny else None, 2 if (tiny or cuda) else 1),
            n_tr, anchor, no_anchor, packs, notes, jobs, {"kind": "mnist", "root": root}))

    # CIFAR-shaped ResNet-20
    flops = resnet20_flops(1)
    if "cifar-resnet20" in names:
        if tiny:
            n_c, c_skip = TINY["cifar_train"], ("--size tiny: the anchor's CIFAR-shaped set is fixed at 50,000 images "
                                               "(a full epoch), too slow for a smoke run")
        elif cuda:
            n_c, c_skip = CIFAR_N, None
        else:
            n_c = CIFAR_CPU_SUBSET
            c_skip = (None if args.cifar_anchor else "CPU: a 50,000-image ResNet-20 epoch of the anchor takes many "
                      "minutes; pass --cifar-anchor to run it (compared per image)")
        c_notes = [f"random uint8 CIFAR-shaped images; the engine trains {n_c} per epoch (training batches timed "
                   f"alone); throughput compared per image"]
        workloads.append(Workload(
            "cifar-resnet20", CIFAR_BATCH, cifar_splits(n_c, TINY["cifar_test"] if tiny else CIFAR_TEST),
            cifar_spec(None, 2 if (tiny or cuda) else 1), n_c,
            {"task": "cifar-resnet20", "root": "-", "epochs": 2 if cuda else 1, "workers": 4 if cuda else 2,
             "images": CIFAR_N}, c_skip or no_anchor, packs, c_notes, jobs,
            {"kind": "cifar", "n": n_c, "n_test": TINY["cifar_test"] if tiny else CIFAR_TEST}, flops=flops))

    # ResNet-20 on real CIFAR-10 (issue 18): the anchor a researcher writes (torchvision CIFAR10 + DataLoader) vs
    # the engine as the CPU default, as `--fast off` (NCHW fp32 eager) and compiled (compile time counted)
    if CIFAR10_NAME not in names:
        pass
    elif not dataset_present("cifar10", root):
        skipped[CIFAR10_NAME] = {"status": "skipped", "reason": f"CIFAR-10 not found under {root} (neither "
                                 f"CIFAR10/meta.json nor cifar-10-batches-py; set CLREPRO_DATA or --data)"}
    else:
        c10 = load_dataset("cifar10", root, download=False)
        n_full = len(c10.y_train)
        n10 = min(args.cifar10_images or (TINY["cifar10_train"] if tiny else n_full), n_full)
        t10 = min(TINY["cifar10_test"] if tiny else CIFAR10_TEST, len(c10.y_test))
        tv_root = cifar10_torchvision_root(c10)
        src = (c10.meta or {}).get("source") or {}
        compiled = args.cifar10_compiled == "on" or (args.cifar10_compiled == "auto" and not tiny)
        variants = {"engine-eager-nchw": EngineOptions.for_device(device, fast="off"),
                    "engine-compiled": (dataclasses.replace(options, compile=True, channels_last=True, fused=True)
                                        if compiled else "--cifar10-compiled off" if args.cifar10_compiled == "off"
                                        else "--size tiny: torch.compile of ResNet-20 takes 15-60 s on a CPU, too "
                                        "slow for a smoke run (--cifar10-compiled on runs it)")}
        if not cuda:  # on CUDA the default already is bf16; on a CPU with native bf16 it may pay (engine/options.py)
            variants["engine-bf16"] = dataclasses.replace(options, amp="bf16", channels_last=True, fused=True,
                                                          compile=False, compile_min_steps=0)
        c10_notes = [
            f"{CIFAR10_NAME}: real CIFAR-10 ({src.get('copy', 'torchvision archive')} under {root}, decoded and "
            f"sha256-checked by data.load_dataset); {n10} training images per epoch on every path"
            + ("" if n10 == n_full else " (anchor: the first ones, torch.utils.data.Subset; engine: a fixed subset, "
               "data.train_subset)") + f"; both sides evaluate {t10} test images after training, not timed",
            f"{CIFAR10_NAME} anchor: benchmarks/perf/anchors/cifar10_loop.py, torchvision's CIFAR10 dataset (per-sample PIL "
            f"image, RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize), DataLoader(2 workers, "
            f"shuffle), fp32, this repo's ResNet-20, SGD; its files are the same decoded arrays written once in "
            f"torchvision's on-disk layout (cifar-10-batches-py) to the cache: the published MD5s cannot match this "
            f"copy" + (" (decoded from the WebP mosaics: 103 JPEG stand-ins, another test order)"
                       if src.get("copy") == "webp-mosaics" else "")
            + ", so its CIFAR10 subclass skips torchvision's MD5 check (the arrays' sha256 was checked instead)",
            f"{CIFAR10_NAME} engine paths: engine = the bench's options ({options.record()}); engine-eager-nchw = "
            f"--fast off (NCHW fp32 eager); engine-compiled = torch.compile + channels_last + fused, its compile_s "
            f"(first epoch minus a steady one, first round, fresh compile) counted in whole_run "
            f"({WHOLE_RUN_EPOCHS} epochs of 50,000 images)" + ("" if cuda else "; engine-bf16 = the engine under bf16 "
            "autocast (weights and optimizer float32): another arithmetic, so the CPU default stays float32 whatever "
            "its speed, and `--fast on` is the explicit choice"),
            f"{CIFAR10_NAME} FLOPs: ResNet-20 forward {flops['forward_per_image'] / 1e6:.1f} MFLOP per image "
            f"(FlopCounterMode), training = 3 x forward; of_matmul_peak = training GFLOP/s / the fp32 matmul rate"]
        workloads.append(Workload(
            CIFAR10_NAME, CIFAR_BATCH, c10,
            cifar10_spec(n10 if n10 < n_full else None, t10, 2 if (tiny or cuda) else 1), n10,
            {"task": CIFAR10_NAME, "root": tv_root, "epochs": 2 if cuda and not tiny else 1, "workers": 2,
             "images": n10, "script": os.path.join(ROOT, "benchmarks", "perf", "anchors", "cifar10_loop.py"),
             "extra": ([] if n10 == n_full else ["--subset", str(n10)]) + ["--test", str(t10)]},
            None, (), c10_notes, (), None, variants=variants, flops=flops, whole_run=WHOLE_RUN_EPOCHS))

    info = device_record(device)
    print(f"bench: {info['device']} ({info['usable_cores']} cores, {info['threads']} threads), torch {info['torch']}, "
          f"size {args.size}, {rounds} rounds, engine options {options.record()}", flush=True)
    mm = (1024, 3) if tiny else (4096, 5)
    try:
        matmul = matmul_rate(device, *mm)
        print(f"matmul: {mm[0]}x{mm[0]} fp32 torch.mm, {matmul['gflops']:.1f} GFLOP/s (median of {mm[1]})", flush=True)
    except Exception as e:
        matmul = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    try:  # what bf16 autocast can gain here (native bf16 on some CPUs, emulated on others)
        matmul_bf16 = matmul_rate(device, *mm, dtype="bfloat16")
        print(f"matmul: {mm[0]}x{mm[0]} bf16 torch.mm, {matmul_bf16['gflops']:.1f} GFLOP/s", flush=True)
    except Exception as e:
        matmul_bf16 = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}

    t_start = time.perf_counter()
    load_start = os.getloadavg()  # a shared machine: other jobs' load, read with the per-round spread
    from benchmarks.run.store import write_atomic

    path, partial = (os.path.join(args.out, f"{device.type}{tag}.json") for tag in ("", ".partial"))

    def result(rounds_done: int, overhead: dict, bounds: dict) -> dict:
        wl = {w.name: w.record(matmul, matmul_bf16) for w in workloads}
        for name, b in bounds.items():
            wl[name]["bound"] = b
        wl.update(skipped)
        return {"schema": SCHEMA, **info, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "size": args.size, "rounds": rounds_done, "complete": rounds_done == rounds and bool(overhead),
                "packs": list(packs), "jobs": list(jobs), "git_sha": _git_sha(),
                "engine_options": options.record(), "wall_seconds": round(time.perf_counter() - t_start, 1),
                "load_average": {"start": [round(v, 2) for v in load_start],
                                 "end": [round(v, 2) for v in os.getloadavg()]},
                "matmul": matmul, "matmul_bf16": matmul_bf16, "workloads": wl, "overhead": overhead,
                "targets": targets(device.type, args.size, wl, overhead)}

    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", flush=True)
        for w in workloads:
            for p_ in w.paths():
                w.measure(p_, device, options)
        # what is measured so far, should the bench be stopped (a time limit): <device>.partial.json, "complete":
        # false; the finished bench replaces it with <device>.json
        write_atomic(partial, result(r + 1, {}, {}))

    overhead: dict[str, dict] = {}
    if args.no_overhead:
        overhead = {m: {"status": "skipped", "reason": "--no-overhead"} for m in ("mlp500", "resnet20")}
    else:
        from methods import list_methods

        print("per-step overhead vs ERM (benchmarks.perf.overhead)", flush=True)
        if tiny:
            overhead["mlp500"] = _overhead("mlp500", MNIST_BATCH, device, 3, 2, OVERHEAD_METHODS_TINY)
            overhead["resnet20"] = {"status": "skipped", "reason": "--size tiny: ResNet-20 steps too slow for a "
                                    "smoke run on CPU"}
        else:
            overhead["mlp500"] = _overhead("mlp500", MNIST_BATCH, device, 20 if cuda else 10, 5, list_methods())
            overhead["resnet20"] = _overhead("resnet20", CIFAR_BATCH, device, 10 if cuda else 3, 5 if cuda else 3,
                                             list_methods())
    tmp.cleanup()

    bounds = {}
    if any(w.name == "mnist-mlp" for w in workloads):  # how much any packing of this step could gain here
        k_bound = 3 if device.type == "cpu" else 4
        try:
            b = packing_bound(k_bound, MNIST_BATCH, device, steps=20 if tiny else 200,
                              rounds=1 if tiny else 10)  # short, interleaved rounds
        except Exception as e:
            b = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
        bounds["mnist-mlp"] = b
        if b["status"] == "ok":
            print(f"packing bound (mnist-mlp, K={b['k']}): {b['ratio']:.2f}x one network's throughput "
                  f"({1000 * b['single_step_s']:.3f} vs {1000 * b['packed_step_s']:.3f} ms per step)", flush=True)
    res = result(rounds, overhead, bounds)
    write_atomic(path, res)
    if os.path.exists(partial):
        os.remove(partial)
    print()
    print(render_table(res))
    print(f"\nwrote {path}")
    return 0


def render_table(res: dict) -> str:
    from benchmarks.report.performance import ratio_keys

    lines = [f"{'workload':<17} {'path':<17} {'s/epoch min':>11} {'median':>8} {'images/s':>10}  ratio"]
    mm = res.get("matmul") or {}
    if mm.get("status") == "ok":
        bf = res.get("matmul_bf16") or {}
        lines.insert(0, f"matmul ({mm['n']}x{mm['n']} fp32 torch.mm, median of {mm['reps']}): "
                        f"{mm['gflops']:.1f} GFLOP/s" + (f"; bf16 {bf['gflops']:.1f} GFLOP/s"
                                                         if bf.get("status") == "ok" else ""))
    for name, w in res["workloads"].items():
        if w.get("status") == "skipped":
            lines.append(f"{name:<17} skipped: {w['reason']}")
            continue
        for path, p in w["paths"].items():
            keys = [k for k in ratio_keys(path) if k in w["ratios"]]
            rs = "; ".join(f"{w['ratios'][k]['value']:.2f}x {k}" if isinstance(w["ratios"][k], dict)
                           else f"{k}: not measured" for k in keys)
            if p["status"] != "ok":
                lines.append(f"{name:<17} {path:<17} {p['status']}: {p['reason'][:90]}" + (f"  ({rs})" if rs else ""))
            else:
                extra = ""
                if "of_matmul_peak" in p:
                    extra += f"  [{p['train_gflops_per_s']:.1f} GFLOP/s, {100 * p['of_matmul_peak']:.1f}% of matmul]"
                if "compile_s" in p:
                    extra += f"  [compile {p['compile_s']:.1f} s]"
                lines.append(f"{name:<17} {path:<17} {p['epoch_s']:>11.3f} {p['epoch_s_median']:>8.3f} "
                             f"{p['images_per_s']:>10.0f}  {rs}{extra}")
        wr = w.get("whole_run")
        if wr:
            lines.append(f"{name:<17} whole {wr['epochs']}-epoch run (s): "
                         + ", ".join(f"{k} {v:.0f}" if v is not None else f"{k} -" for k, v in wr["seconds"].items())
                         + (f"; fastest: {wr['fastest']}" if wr["fastest"] else ""))
    for model, o in res.get("overhead", {}).items():
        if o.get("status") == "ok":
            lines.append(f"step x ERM ({model}, batch {o['batch']}): "
                         + ", ".join(f"{m} {v:.2f}" for m, v in o["x_erm"].items()))
        else:
            lines.append(f"step x ERM ({model}): {o.get('status')}: {o.get('reason')}")
    for t in res["targets"]:
        m = t["measured"]
        lines.append(f"target {t['id']}: {t['text']} -- "
                     + (f"measured {m:.3f}: {'PASS' if t['pass'] else 'FAIL'}" if isinstance(m, (int, float))
                        else f"not measured ({t.get('reason')})")
                     + (f" ({t['bound_note']})" if t.get("bound_note") else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    raise SystemExit(main())
