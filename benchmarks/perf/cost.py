"""Run-time estimates for planning: GPU-hours (assumed) and CPU-hours (measured on this machine).

Work of one run: FLOPs per training step from torch's own FLOP counter (one forward of one example, times 3 for
forward + backward, times the batch), summed over a method's trainable networks (a frozen teacher counts its
forward only), times the steps of the run.

- GPU-hours divide it by an assumption, printed as such wherever an estimate is shown: ASSUMED_TFLOPS effective
  FP32/TF32 TFLOP/s on one H100 for these small CIFAR networks, with a floor of ASSUMED_MIN_STEP_MS per network
  step (small networks are bound by kernel launches, not FLOPs).
- CPU-hours divide it by a measured rate (`CpuRates`): the effective FLOP/s of this suite's own finished CPU runs
  (results/runs/*/*.json: the median over epochs of the epoch's training images x work per image / its seconds,
  evaluation included, unpacked runs only), per model, and of the engine path of `bench` (results/bench/*/cpu.json).
  A curriculum that trains on a subset (MEKD's stages, DCD's window: `extras.n_selected` per epoch) counts the
  images it trained on, both in the rate and in the estimate: a run whose finished runs of the same setting (any
  seed, any device) trained on a share of the sample passes is estimated at that measured share. Hosts differ (about 2x
  between an AVX2-only and an AVX-512 2-core host), so measurements made on this CPU kind (provenance `cpu`,
  benchmarks/run/host.py: cpu_kind) are used when there are any, and all of them, said so, when there are
  none. A model with no measurement of its own takes the rate of the measured model nearest in FLOPs, and says so.

Per-model FLOPs are cached in `$CLREPRO_CACHE/flops.json` (default ~/.cache/clrepro), keyed by the sha256 of the
models/ sources, the model spec and the dataset, so `list` does not build networks it has counted before.
"""
from __future__ import annotations

import functools
import glob
import json
import math
import os
import statistics

ASSUMED_TFLOPS = 25.0
ASSUMED_MIN_STEP_MS = 4.0
ASSUMPTION = (f"assumed {ASSUMED_TFLOPS:g} TFLOP/s effective on one H100 and at least {ASSUMED_MIN_STEP_MS:g} ms "
              f"per network step (not measured by this suite yet)")
TRAIN_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "mr": 9596, "cifar10": 50000, "cifar100": 50000,
               "svhn": 73257, "svhn_extra": 604388, "cinic10": 90000, "cinic10_trainval": 180000, "imagenet": 1281167, "webvision": 2400000}
SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "mr": (64,), "cifar10": (3, 32, 32),
          "cifar100": (3, 32, 32), "svhn": (3, 32, 32), "svhn_extra": (3, 32, 32), "cinic10": (3, 32, 32),
          "cinic10_trainval": (3, 32, 32)}
CLASSES = {"cifar100": 100, "mr": 2, "imagenet": 1000, "webvision": 1000}


from benchmarks.cache import DiskCache as _DiskCache, source_digest as _source_digest

_FLOPS_CACHE = _DiskCache("flops.json")


@functools.lru_cache(maxsize=None)
def forward_flops(model_json: str, dataset: str) -> float:
    """FLOPs of one forward pass of one example (torch.utils.flop_counter; convolutions and matmuls), cached on
    disk keyed by the models/ sources."""
    key = f"{_source_digest('models')}|{dataset}|{model_json}"
    return float(_FLOPS_CACHE.get(key, lambda: _count_flops(model_json, dataset)))


def _count_flops(model_json: str, dataset: str) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models import create_model

    m = json.loads(model_json)
    shape = SHAPES.get(dataset, (3, 32, 32))
    kw = {k: v for k, v in m.items() if k != "name"}
    with torch.device("meta"):
        net = create_model(m["name"], CLASSES.get(dataset, 10), shape, 20000 if len(shape) == 1 else None, **kw)
        x = (torch.zeros((1, *shape), dtype=torch.long) if len(shape) == 1 else torch.zeros((1, *shape)))
        net.eval()
        with FlopCounterMode(display=False) as fc:
            net(x)
    return float(fc.get_total_flops())


def train_images(spec: dict) -> int:
    data = spec["data"]
    n = data.get("train_subset") or TRAIN_SIZES.get(data["dataset"], 50000)
    n -= data.get("val_size") or 0
    if data["noise"].get("drop_corrupted"):  # the oracle trains on the samples the noise left clean (about 1 - rate)
        n = round(n * (1 - data["noise"]["rate"]))
    return n


def epoch_images(rec: dict) -> list[tuple[int, float | None]]:
    """(training images, seconds) of each epoch of a run record: the curriculum's own count where the method
    records one (`extras.n_selected`: MEKD, DCD), else the whole training set."""
    n = train_images(rec["spec"])
    out = []
    for h in rec.get("history", []):
        sel = (h.get("extras") or {}).get("n_selected")
        out.append((int(sel) if isinstance(sel, (int, float)) and sel > 0 else n, h.get("seconds")))
    return out


def setting_key(spec: dict) -> str:
    """A run's setting less its seed (and the seed-dependent validation split and teacher run): runs of one row
    share it, so a curriculum's measured share of sample passes carries over to the row's other seeds."""
    data = {k: v for k, v in spec["data"].items() if k != "val_seed"}
    return json.dumps([spec["method"], spec["model"], data, spec["recipe"]], sort_keys=True)


def image_work(spec: dict, trainable: int = 1) -> float:
    """Training FLOPs per training image: 3 x forward per trainable network + the forward of each frozen role."""
    f = forward_flops(json.dumps(spec["model"], sort_keys=True), spec["data"]["dataset"])
    frozen = sum(forward_flops(json.dumps(b["model"], sort_keys=True), spec["data"]["dataset"])
                 for b in spec.get("roles", {}).values())
    return 3 * f * trainable + frozen


def run_hours(spec: dict, trainable: int = 1) -> float:
    """Estimated GPU-hours of one run."""
    data, recipe = spec["data"], spec["recipe"]
    n = data.get("train_subset") or TRAIN_SIZES.get(data["dataset"], 50000)
    n -= data.get("val_size") or 0
    steps = math.ceil(n / recipe["batch_size"]) * recipe["epochs"]
    f = forward_flops(json.dumps(spec["model"], sort_keys=True), data["dataset"])
    t_flops = 0.0
    for role, block in spec.get("roles", {}).items():
        t_flops += forward_flops(json.dumps(block["model"], sort_keys=True), data["dataset"])
    per_step = max(3 * f * recipe["batch_size"] * trainable / (ASSUMED_TFLOPS * 1e12), trainable * ASSUMED_MIN_STEP_MS / 1e3)
    per_step += t_flops * recipe["batch_size"] / (ASSUMED_TFLOPS * 1e12)
    return steps * per_step / 3600.0


_ROLES_CACHE = _DiskCache("method_roles.json")


def trainable_networks(method: str) -> int:
    """How many networks a method trains (its roles less the frozen ones), cached keyed by the methods/ sources."""
    def count() -> int:
        from methods import method_class

        cls = method_class(method)
        return len(cls.roles) - len(cls.frozen)

    from benchmarks.plugins import LOADED  # a plugin's method: keyed by the plugin files too

    plugins = ",".join(sorted(str(v.get("sha256")) for v in LOADED.values()))
    return int(_ROLES_CACHE.get(f"{_source_digest('methods')}|{plugins}|{method}", count))


def plan_hours(plan) -> float:
    """Estimated GPU-hours of one run, its own networks only (a teacher run is counted by `plans_hours`)."""
    return run_hours(plan.spec, trainable_networks(plan.spec["method"]["name"]))


def plans_hours(plans) -> float:
    """GPU-hours of a set of runs plus each distinct teacher run they restore from (trained once)."""
    from benchmarks.targets.loader import teacher_plans

    teachers = {t.run_id: t for p in plans for t in teacher_plans(p).values()}
    return sum(map(plan_hours, plans)) + sum(map(plan_hours, teachers.values()))


class CpuRates:
    """Effective training FLOP/s measured on this suite's CPU runs, per model and CPU kind (module docstring)."""

    def __init__(self, samples: dict[str, list[tuple[float, str, str | None]]], flops: dict[str, float],
                 here: str | None = None, shares: dict[str, list[float]] | None = None):
        # model name -> [(FLOP/s, source, CPU kind or None where the record predates it)], model -> forward FLOPs,
        # setting_key -> the share of full-data sample passes each finished run of that setting trained on
        self.samples, self.flops, self.shares = samples, flops, shares or {}
        if here is None:
            from benchmarks.run.host import cpu_kind

            here = cpu_kind()
        self.here = here
        same = {m: [s for s in v if s[2] == here] for m, v in samples.items()}
        self.on_this_cpu = any(same.values())
        # the measurements an estimate is made from: this CPU kind's when it has any, else every one
        self.pool = {m: v for m, v in same.items() if v} if self.on_this_cpu else samples

    @classmethod
    def measure(cls, results: str, here: str | None = None) -> "CpuRates":
        samples: dict[str, list[tuple[float, str, str | None]]] = {}
        flops: dict[str, float] = {}
        shares: dict[str, list[float]] = {}
        for path in sorted(glob.glob(os.path.join(results, "runs", "*", "*.json"))):
            try:
                with open(path) as f:
                    rec = json.load(f)
                prov, spec = rec.get("provenance") or {}, rec["spec"]
                if rec.get("status") != "ok":
                    continue
                epochs = epoch_images(rec)
                if epochs and len(epochs) == spec["recipe"]["epochs"]:
                    shares.setdefault(setting_key(spec), []).append(
                        sum(n for n, _ in epochs) / (train_images(spec) * len(epochs)))
                engine = prov.get("engine") or {}
                # the estimate is for the engine's CPU defaults: one network, float32 (a bf16-autocast run, such
                # as blcl-table1's outside anchor, is about 2x faster on a host with native bf16)
                if prov.get("device_type") != "cpu" or engine.get("pack", 1) != 1 \
                        or engine.get("amp", "none") != "none":
                    continue
                per_image = image_work(spec, trainable_networks(spec["method"]["name"]))
                rates = [per_image * n / s for n, s in epochs if s]
                if not rates:
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                continue
            name = spec["model"]["name"]
            flops[name] = forward_flops(json.dumps(spec["model"], sort_keys=True), spec["data"]["dataset"])
            samples.setdefault(name, []).append((statistics.median(rates), "runs", prov.get("cpu")))
        for path in sorted(glob.glob(os.path.join(results, "bench", "*", "cpu.json"))):
            try:
                with open(path) as f:
                    rec = json.load(f)
                kind = rec.get("cpu_kind")
                for w in rec.get("workloads", {}).values():
                    eng, fl = (w.get("paths") or {}).get("engine") or {}, w.get("flops") or {}
                    name = ((w.get("spec") or {}).get("model") or {}).get("name")
                    if eng.get("status") == "ok" and fl.get("train_per_image") and name:
                        flops.setdefault(name, fl["forward_per_image"])
                        samples.setdefault(name, []).append(
                            (fl["train_per_image"] * eng["images_per_s_median"], "bench", kind))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
        return cls(samples, flops, here, shares)

    def by_kind(self) -> dict[str, list[float]]:
        """Every measurement's FLOP/s per CPU kind (all models), for the spread between hosts."""
        out: dict[str, list[float]] = {}
        for v in self.samples.values():
            for r, _, kind in v:
                out.setdefault(kind or "CPU not recorded", []).append(r)
        return out

    def where(self) -> str:
        return "on this CPU" if self.on_this_cpu else "on other CPUs (none on this one)"

    def rate(self, model: str, forward: float) -> tuple[float, str] | None:
        """(FLOP/s, how it was measured) for a model of `forward` FLOPs per example; None when nothing was."""
        if model in self.pool:
            rates = [r for r, _, _ in self.pool[model]]
            n = len(rates)
            return statistics.median(rates), f"measured: {model}, {n} CPU measurement{'s' * (n != 1)} {self.where()}"
        if not self.pool:
            return None
        near = min(self.pool, key=lambda m: abs(math.log(max(self.flops[m], 1.0) / max(forward, 1.0))))
        r, _ = self.rate(near, self.flops[near])
        return r, f"no CPU run of {model}: the rate of {near}, nearest in FLOPs, {self.where()}"

    def run_hours(self, spec: dict, trainable: int) -> tuple[float, str] | None:
        f = forward_flops(json.dumps(spec["model"], sort_keys=True), spec["data"]["dataset"])
        got = self.rate(spec["model"]["name"], f)
        if got is None:
            return None
        work = image_work(spec, trainable) * train_images(spec) * spec["recipe"]["epochs"]
        shares = self.shares.get(setting_key(spec), [])
        share = statistics.mean(shares) if shares else 1.0
        if share < 1.0 - 1e-9:
            n = len(shares)
            return work * share / got[0] / 3600.0, (
                f"{got[1]}; {spec['method']['name']} trains on {100 * share:.0f}% of the full-data sample passes "
                f"(measured on {n} finished run{'s' * (n != 1)} of its setting)")
        return work / got[0] / 3600.0, got[1]

    def plan_hours(self, plan) -> tuple[float, str] | None:
        """CPU-hours of one run on this machine (2 threads, the engine's CPU defaults), its own networks only."""
        return self.run_hours(plan.spec, trainable_networks(plan.spec["method"]["name"]))
