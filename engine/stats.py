"""Per-step training statistics of one epoch, kept on the device and read once when the epoch ends (issue 11).

A step writes into contiguous slices of buffers ordered by position in the epoch (a copy, not an indexed write);
`finish` scatters them to the per-sample buffers (BLCL Fig. 5/6 quartile shares, snapshots) once per epoch.
Where the epoch's logits fit (`LOGITS_KEPT_MAX` numbers) a step only copies its logits: the accuracy and every
CE the method did not compute itself (`StepOut.loss is None`: the objective is the CE, as for ERM; `StepOut.ce is
None`: the engine's CE statistics) come from one batched pass over the kept logits at the end of the epoch, the
same numbers as per step, without per-step kernels. Larger epochs (ImageNet-sized, 1000 classes) compute them per
step instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOGITS_KEPT_MAX = 1 << 26  # 256 MB of float32 logits per epoch at most


class EpochStats:
    def __init__(self, length: int, num_classes: int, device: torch.device):
        keep = length * num_classes <= LOGITS_KEPT_MAX
        self.logits = torch.empty(length, num_classes, device=device) if keep else None
        self.pred = None if keep else torch.empty(length, dtype=torch.long, device=device)
        self.loss = torch.empty(length, device=device)
        self.ce: torch.Tensor | None = None
        self.device = device
        self.loss_is_ce: bool | None = None  # StepOut.loss is None: the objective is the CE of the logits
        self.ce_from: str | None = None  # "objective" | "method" (StepOut.ce) | "logits" (the engine computes it)
        self.logs: dict[str, torch.Tensor] = {}
        self.sums: dict[str, torch.Tensor] = {}

    def _mode(self, out) -> None:
        loss_is_ce = out.loss is None
        ce_from = ("objective" if loss_is_ce or out.ce is out.loss else "method" if out.ce is not None else "logits")
        if self.loss_is_ce is None:
            self.loss_is_ce, self.ce_from = loss_is_ce, ce_from
            if ce_from != "objective":
                self.ce = torch.empty_like(self.loss)
        elif (loss_is_ce, ce_from) != (self.loss_is_ce, self.ce_from):
            raise ValueError("a method must return StepOut.loss and StepOut.ce alike on every step of an epoch "
                             "(both given, or None)")

    def record(self, lo: int, hi: int, out, y: torch.Tensor, packed: bool, method_name: str) -> None:
        """Statistics of the step that trained positions [lo, hi) of the epoch on labels `y`."""
        self._mode(out)
        if self.logits is not None:
            self.logits[lo:hi].copy_(out.logits)
        else:
            torch.argmax(out.logits, 1, out=self.pred[lo:hi])
            if self.loss_is_ce or self.ce_from == "logits":
                ce = F.cross_entropy(out.logits.float(), y, reduction="none")
                (self.loss if self.loss_is_ce else self.ce)[lo:hi].copy_(ce)
        if not self.loss_is_ce:
            self.loss[lo:hi].copy_(out.loss)
        if self.ce_from == "method":
            self.ce[lo:hi].copy_(out.ce)
        for key, v in out.logs.items():
            if v.dim():  # per-sample
                if key not in self.logs:
                    self.logs[key] = torch.empty_like(self.loss)
                self.logs[key][lo:hi].copy_(v)
            elif packed:
                raise ValueError(f"method {method_name!r} logs {key!r} as a batch scalar: packed runs need "
                                 f"per-sample logs")
            else:
                self.sums[key] = self.sums.get(key, 0) + v * (hi - lo)

    def finish(self, seq: torch.Tensor, y_seq: torch.Tensor, loss_buf: torch.Tensor, ce_buf: torch.Tensor,
               ok_buf: torch.Tensor, log_bufs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scatter the epoch's statistics to the per-sample buffers (sample `seq[p]` at position p); returns the
        sums of batch-scalar logs (times the batch size)."""
        if self.loss_is_ce is None:  # no step
            return self.sums
        if self.logits is not None:
            ok = self.logits.argmax(1) == y_seq
            if self.loss_is_ce or self.ce_from == "logits":
                ce = F.cross_entropy(self.logits, y_seq, reduction="none")
                if self.loss_is_ce:
                    self.loss = ce
                else:
                    self.ce = ce
        else:
            ok = self.pred == y_seq
        loss_buf[seq] = self.loss
        ce_buf[seq] = self.loss if self.ce_from == "objective" else self.ce
        ok_buf[seq] = ok
        for key, v in self.logs.items():
            log_bufs.setdefault(key, torch.zeros_like(loss_buf))[seq] = v
        return self.sums
