"""What this machine can reach: one large matmul's FLOP rate, and ResNet-20's FLOPs per image (so a
throughput is also a fraction of that rate)."""
from __future__ import annotations

import statistics
import time


def matmul_rate(device, n: int = 4096, reps: int = 5, dtype: str = "float32") -> dict:
    """The FLOP rate one large matmul (`torch.mm`, n x n by n x n, fp32 unless `dtype`) reaches here: one warm-up,
    then `reps` timed products; GFLOP/s = 2 n^3 / the median seconds. The fp32 rate is what the bench calls this
    machine's matmul peak; the bf16 one says what bf16 autocast can gain."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device=device, dtype=getattr(torch, dtype)) for _ in range(2))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.mm(a, b)
    sync()
    secs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        secs.append(time.perf_counter() - t0)
    med = statistics.median(secs)
    rec = {"status": "ok", "op": "torch.mm", "dtype": dtype, "n": n, "reps": reps,
           "seconds": [round(s, 5) for s in secs], "seconds_median": med, "gflops": 2 * n ** 3 / med / 1e9,
           "threads": torch.get_num_threads()}
    if device.type == "cuda":
        rec["allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return rec


def resnet20_flops(batch: int = 1) -> dict:
    """Forward FLOPs of this repo's ResNet-20 (CIFAR, 10 classes) per image, counted by
    torch.utils.flop_counter.FlopCounterMode on one forward pass (train mode) of a `batch`-image batch (convolutions
    and matmuls, a multiply-add = 2 FLOPs; batch norm, ReLU and pooling are not counted); training = 3 x forward
    (the backward pass costs about two forwards)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models import create_model

    model = create_model("resnet20", 10, (3, 32, 32), None)
    with FlopCounterMode(display=False) as fc:
        model(torch.zeros(batch, 3, 32, 32))
    fwd = fc.get_total_flops() / batch
    return {"forward_per_image": fwd, "train_per_image": 3 * fwd, "counted_batch": batch,
            "how": "torch.utils.flop_counter.FlopCounterMode, one forward pass; training = 3 x forward"}
