"""How the engine computes a run, as opposed to what the run is (the spec): the GPU fast path and mid-run
checkpoints. None of these switches enters the spec or the run id; every one is recorded in the run's JSON
(`provenance.engine`), so a result always says how it was computed.

Fast path (issue 11), on by default on CUDA; on the CPU `auto` means channels_last and fused only (issue 18):
- `amp="bf16"`: forward passes and losses under `torch.autocast(bfloat16)`; weights, optimizer state and the
  per-sample statistics stay in float32;
- `channels_last`: networks and image batches in NHWC memory layout (tensor-core convolutions);
- `compile`: `torch.compile` of every network; the compiled code is cached per architecture and input shape,
  so later runs of one shape in the same process reuse it;
- `fused`: fused optimizer kernels (`SGD(fused=True)`, `Adam(fused=True)`) where the optimizer has them. Unlike
  the other three this one is on by default on the CPU too (`--fast off` turns it off): torch has the fused
  kernels for the CPU, they apply the same update rule in one pass over the parameters instead of a loop of
  element-wise ops per tensor, and differ from the loop only by float rounding (about 1e-8 on weights after 50
  SGD steps); measured on the 2-core bench machine: 5% less time per MNIST-MLP step.
CPU measurements (issue 18, ResNet-20 train step at batch 128, 2-core EPYC, median of 12 steps): NCHW fp32 336 ms,
channels_last 238 ms (1.41x), channels_last + bf16 autocast 230 ms (not worth its rounding), torch.compile 259 ms,
compile + channels_last 209 ms (1.61x; 14-40 s of compiling per process). So the CPU default is channels_last +
fused, plus torch.compile (without bf16) for image convnet runs of at least CPU_COMPILE_MIN_STEPS steps, where it
wins over the whole run (the real-CIFAR-10 bench, results/bench/cifar10/cpu.json: 650 vs 609 images/s);
`--compile on` compiles every run, `--compile off` none, `--fast off` is plain NCHW fp32 eager.
bf16 depends on the host: on a later 2-core EPYC with avx512_bf16 (2026-12-01) a 4096 matmul ran 793 GFLOP/s in
bf16 vs 188 in fp32, a ResNet-20 step at batch 128 1453 vs 699 images/s (2.1x), and a real CIFAR-10 epoch with its
10,000-image test pass 36.7 s (`--fast on --compile off`) vs about 86 s fp32. The CPU default stays fp32 (the
committed CPU rows are fp32, and Data Parameters' saturated-row count is a float32 question); `--fast on` is the
explicit choice, recorded in each JSON and shown beside the outside anchors.
The data is already resident on the device as uint8 and augmented there, and counters stay on the device until
the epoch ends (see `engine.trainer`).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch

AMP = ("none", "bf16")
# the 6% a compiled ResNet-20 step saves on the 2-core CPU repays 40 s of compiling after about 3,300 steps of
# 0.2 s; 5,000 leaves a margin (a 16-epoch CIFAR-10 run has 6,256 steps, a smoke test a handful)
CPU_COMPILE_MIN_STEPS = 5000


@dataclass(frozen=True)
class EngineOptions:
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    fused: bool = False
    compile_min_steps: int = 0  # > 0: also compile an image convnet run (channels_last) of at least this many steps
    checkpoint: str | None = None  # path of this run's (or packed group's) mid-run checkpoint; None: none
    checkpoint_every: int = 0  # save every N epochs; 0: every `checkpoint_seconds` of training
    checkpoint_seconds: float = 300.0
    kill_at_epoch: int | None = None  # fault injection for tests: SIGKILL this process after that epoch's save

    def __post_init__(self):
        if self.amp not in AMP:
            raise ValueError(f"amp={self.amp!r}; allowed: {list(AMP)}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every={self.checkpoint_every!r} must be >= 0")

    @classmethod
    def for_device(cls, device: torch.device, fast: str = "auto", compile: str = "auto", **kw) -> "EngineOptions":
        """`fast`: auto (on for CUDA; on the CPU channels_last and `fused`) | on | off; `compile`: auto (on for
        CUDA; on the CPU for image convnet runs of >= CPU_COMPILE_MIN_STEPS steps) | on | off."""
        for name, v in (("fast", fast), ("compile", compile)):
            if v not in ("auto", "on", "off"):
                raise ValueError(f"{name}={v!r}; allowed: auto, on, off")
        on = fast == "on" or (fast == "auto" and device.type == "cuda")
        comp = fast != "off" and (compile == "on" or (compile == "auto" and on))
        # CPU auto: compile where it wins over the whole run (issue 18 bench: a compiled ResNet-20 CIFAR-10 epoch
        # 77 s vs 82 s eager channels_last, for 15-40 s of compiling): image convnets of >= CPU_COMPILE_MIN_STEPS
        cpu_auto = fast != "off" and compile == "auto" and not on and device.type == "cpu"
        return cls(amp="bf16" if on else "none", channels_last=fast != "off", compile=comp, fused=fast != "off",
                   compile_min_steps=CPU_COMPILE_MIN_STEPS if cpu_auto else 0, **kw)

    def record(self) -> dict:
        """The switches that change how numbers are computed (not where checkpoints go)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name in ("amp", "channels_last", "compile", "fused")}

    def autocast(self, device: torch.device):
        if self.amp == "none":
            return contextlib.nullcontext()  # not even a disabled autocast in the hot loop
        return torch.autocast(device.type, dtype=torch.bfloat16)
