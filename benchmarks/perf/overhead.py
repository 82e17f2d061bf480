"""Per-step cost of every method relative to ERM on the same model and batch (issue 8's overhead benchmark).

The papers claim no extra cost for Data Parameters and SuperLoss (target <= 1.10x ERM) and twice the compute for
BLCL and co-distillation (<= 2.1x). Each method's `train_step` (forward, loss, backward, optimizer step) is timed
on synthetic inputs of the model's shape (a timing, never an accuracy), after warm-up, as the median of
`repeats` blocks of `steps` steps; on CUDA with events and a synchronise per block. Per-epoch work (DCD/MEKD
re-ranking the training set) is not a step and is left out: it is reported by the runs' epoch seconds.
Frozen roles get random weights (their values do not change the cost).

    python -m benchmarks.perf.overhead [--model resnet20] [--batch 128] [--device cpu|cuda] [--steps 20]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from data import Splits
from engine.optim import build_optimizer
from engine.trainer import Prepared, _Context, build_nets
from methods import Batch, build_method, list_methods, method_class

SHAPES = {"resnet20": (3, 32, 32), "mlp500": (1, 28, 28)}


def _splits(shape, n: int, num_classes: int) -> Splits:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return Splits("synthetic", x, y, x[:256], y[:256], num_classes, "image")


def make_step(name: str, model: str, batch: int, device: torch.device, num_classes: int = 10):
    """A closure running one training step of method `name` (set up, warmed up) on a fixed synthetic batch."""
    splits = _splits(SHAPES[model], max(4 * batch, 1024), num_classes)
    n = len(splits.y_train)
    method = build_method(name, {}, num_classes, n)
    spec = {"seed": 0, "model": {"name": model}}
    frozen = {r: None for r in method_class(name).frozen}
    if frozen:  # random stand-in weights for frozen roles
        torch.manual_seed(1)
        probe = build_nets(build_method("erm", {}, num_classes, n), spec, splits, torch.device("cpu"))["model"]
        frozen = {r: probe.state_dict() for r in frozen}
    torch.manual_seed(0)
    nets = build_nets(method, spec, splits, device, frozen)
    trainable = [r for r in method.roles if r not in method.frozen]
    opts = {r: build_optimizer({"name": "sgd", "lr": 0.01, "momentum": 0.9}, nets[r].parameters()) for r in trainable}
    x = splits.x_train.to(device)
    y = splits.y_train.to(device)
    data = Prepared(x, y, y, torch.zeros_like(y, dtype=torch.bool), x[:256], y[:256], "image", None,
                    x_val=x[:256], y_val=y[:256])
    ctx = _Context(nets, opts, data, num_classes, device)
    ctx.num_epochs = 10
    for r in trainable:
        nets[r].train()
    method.setup(ctx)
    method.epoch_indices(0, ctx)
    idx = torch.arange(batch, device=device)
    b = Batch(x=data.inputs(x[idx]), y=y[idx], idx=idx)

    def step(progress: float = 0.5) -> None:
        ctx.progress = progress
        method.train_step(b, ctx)

    for _ in range(3):
        step()
    return step


def time_methods(names: list[str], model: str, batch: int, device: torch.device, steps: int,
                 repeats: int) -> dict[str, float]:
    """Median seconds per step of each method; the methods take turns block by block, so a machine whose speed
    drifts (other jobs, clocks) affects them alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fns = {n: make_step(n, model, batch, device) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for n, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            for i in range(steps):
                fn(i / steps)
            sync()
            times[n].append((time.perf_counter() - t0) / steps)
    return {n: statistics.median(v) for n, v in times.items()}


TARGETS = {"dataparams": 1.10, "superloss": 1.10, "blcl": 2.1, "codistill": 2.1}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.perf.overhead", description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(SHAPES), default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    from benchmarks.run.provenance import device_name

    print(f"model {args.model}, batch {args.batch}, device {device_name(device)}, torch {torch.__version__}; "
          f"median of {args.repeats} x {args.steps} steps")
    res = time_methods(list_methods(), args.model, args.batch, device, args.steps, args.repeats)
    base = res["erm"]
    print(f"{'method':<12} {'ms/step':>9} {'x ERM':>7}  paper's claim")
    for name, t in res.items():
        claim = f"<= {TARGETS[name]:.2f}x" if name in TARGETS else ""
        verdict = ("" if not claim else ("  ok" if t / base <= TARGETS[name] else "  ABOVE"))
        print(f"{name:<12} {1000 * t:>9.2f} {t / base:>7.2f}  {claim}{verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
