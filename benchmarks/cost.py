"""GPU-hour estimates for planning a night of runs (issue 9): FLOPs per training step from torch's own FLOP counter
(one forward of one example, times 3 for forward + backward, times the batch), summed over a method's trainable
networks (a frozen teacher counts its forward only), times the steps of the run, divided by a throughput.

No throughput has been measured by this suite yet, so the one used is an assumption, printed as such wherever an
estimate is shown: ASSUMED_TFLOPS effective FP32/TF32 TFLOP/s on one H100 for these small CIFAR networks, with a
floor of ASSUMED_MIN_STEP_MS per network step (small networks are bound by kernel launches, not FLOPs).
"""
from __future__ import annotations

import functools
import math

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


@functools.lru_cache(maxsize=None)
def forward_flops(model_json: str, dataset: str) -> float:
    """FLOPs of one forward pass of one example (torch.utils.flop_counter; convolutions and matmuls)."""
    import json

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


def run_hours(spec: dict, trainable: int = 1) -> float:
    """Estimated GPU-hours of one run."""
    import json

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


def plan_hours(plan) -> float:
    """Estimated GPU-hours of one run, its own networks only (a teacher run is counted by `plans_hours`)."""
    from methods import method_class

    cls = method_class(plan.spec["method"]["name"])
    return run_hours(plan.spec, len(cls.roles) - len(cls.frozen))


def plans_hours(plans) -> float:
    """GPU-hours of a set of runs plus each distinct teacher run they restore from (trained once)."""
    from .runner import teacher_plans

    teachers = {t.run_id: t for p in plans for t in teacher_plans(p).values()}
    return sum(map(plan_hours, plans)) + sum(map(plan_hours, teachers.values()))
