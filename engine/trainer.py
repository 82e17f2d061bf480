"""One readable training loop with the data resident on the device (after airbench).

The training set lives on the device as one tensor; each epoch draws a seeded permutation and forms batches by
indexing it; augmentation runs on the whole batch on the device. Per-sample losses are written into a device
buffer indexed by sample, so the per-epoch statistics (BLCL Fig. 5/6 quartile shares) cost no extra pass and no
host round trip per step.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from data import Splits, corrupt_labels
from methods import Batch, build_method
from models import count_parameters, create_model

from .augment import AUGMENTS
from .optim import build_optimizer, build_schedule

EVAL_BATCH = 1000


@dataclass
class Prepared:
    """A dataset ready for one run, on the device in its stored dtype (uint8 images, int64 tokens), with the noisy
    training labels and the corruption mask. `inputs` turns a batch into network inputs."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    y_clean: torch.Tensor
    noisy_mask: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    kind: str
    normalize: tuple[torch.Tensor, torch.Tensor] | None

    def inputs(self, x: torch.Tensor, augment=None, g: torch.Generator | None = None) -> torch.Tensor:
        """Images: scale to [0, 1], augment (so crops pad with black, as the raw images), then normalise."""
        if self.kind == "text":
            return x
        x = x.float().div_(255.0)
        if augment is not None:
            x = augment(x, g)
        if self.normalize is not None:
            x = (x - self.normalize[0]) / self.normalize[1]
        return x


def _subset(n: int, k: int | None) -> torch.Tensor:
    """Fixed (seed-independent) subset of k indices, used by small budgets."""
    if not k or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:k].sort().values


def _normalizer(normalize, channels: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`normalize: [mean, std]` with scalars or one value per channel."""
    if not normalize:
        return None
    mean, std = (torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1) for v in normalize)
    shape = (1, channels, 1, 1)
    return mean.expand(channels).reshape(shape), std.expand(channels).reshape(shape)


def prepare(splits: Splits, data_spec: dict, recipe: dict, seed: int, device: torch.device) -> Prepared:
    tr = _subset(len(splits.y_train), data_spec.get("train_subset"))
    te = _subset(len(splits.y_test), data_spec.get("test_subset"))
    y_clean = splits.y_train[tr]
    noise = data_spec["noise"]
    y_noisy, mask = corrupt_labels(y_clean, splits.num_classes, noise["kind"], noise["rate"], seed, splits.name)
    norm = _normalizer(recipe.get("normalize"), splits.in_shape[0], device) if splits.kind == "image" else None
    return Prepared(
        x_train=splits.x_train[tr].to(device),
        y_train=y_noisy.to(device),
        y_clean=y_clean.to(device),
        noisy_mask=mask.to(device),
        x_test=splits.x_test[te].to(device),
        y_test=splits.y_test[te].to(device),
        kind=splits.kind,
        normalize=norm,
    )


class _Context:
    """The engine side of `methods.base.StepContext`."""

    def __init__(self, nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 device: torch.device):
        self.nets = nets
        self.optimizers = optimizers
        self.device = device
        self.epoch = 0
        self.progress = 0.0

    def update(self, role: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[role]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        constrain = getattr(self.nets[role], "apply_constraints", None)
        if constrain is not None:
            constrain()


@torch.no_grad()
def evaluate(net: nn.Module, data: Prepared) -> tuple[float, float]:
    """(mean CE loss, accuracy in %) over the test split, in eval mode."""
    x, y = data.x_test, data.y_test
    was = net.training
    net.eval()
    loss_sum = torch.zeros((), device=y.device)
    correct = torch.zeros((), device=y.device)
    for i in range(0, len(y), EVAL_BATCH):
        logits = net(data.inputs(x[i : i + EVAL_BATCH]))
        loss_sum += F.cross_entropy(logits, y[i : i + EVAL_BATCH], reduction="sum")
        correct += (logits.argmax(1) == y[i : i + EVAL_BATCH]).sum()
    net.train(was)
    return loss_sum.item() / len(y), 100.0 * correct.item() / len(y)


def quartile_shares(per_sample: torch.Tensor, difficulty: torch.Tensor | None = None) -> list[float]:
    """Share of the summed loss carried by each difficulty quartile, easiest first (BLCL Fig. 5/6; the last
    entry is Fig. 9's alpha). Samples are ranked by `difficulty` (default: the loss itself)."""
    order = (per_sample if difficulty is None else difficulty).float().argsort()
    s = per_sample.float()[order]
    total = s.sum()
    if total <= 0:
        return [0.25] * 4
    return [(chunk.sum() / total).item() for chunk in torch.tensor_split(s, 4)]


def train(spec: dict, splits: Splits, device: torch.device,
          on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train one run described by `spec` (see benchmarks.spec) and return its metrics and history."""
    seed, recipe = spec["seed"], spec["recipe"]
    torch.manual_seed(seed)
    data = prepare(splits, spec["data"], recipe, seed, device)
    n = len(data.y_train)
    mspec = dict(spec["method"])
    method = build_method(mspec.pop("name"), mspec, splits.num_classes, n)
    model_kw = {k: v for k, v in spec["model"].items() if k != "name"}
    nets = {role: create_model(spec["model"]["name"], splits.num_classes, splits.in_shape,
                               splits.meta.get("vocab_size"), **model_kw).to(device)
            for role in method.roles}
    epochs = recipe["epochs"]
    optimizers = {r: build_optimizer(recipe["optimizer"], nets[r].parameters()) for r in method.roles}
    schedules = {r: build_schedule(recipe["schedule"], optimizers[r], epochs) for r in method.roles}
    ctx = _Context(nets, optimizers, device)
    method.setup(ctx)
    augment = AUGMENTS[recipe.get("augment", "none")]
    g_order = torch.Generator().manual_seed(seed)
    g_aug = torch.Generator(device=device).manual_seed(seed)
    bs = recipe["batch_size"]
    loss_buf = torch.zeros(n, device=device)
    ce_buf = torch.zeros(n, device=device)
    history, status = [], "ok"
    for net in nets.values():
        net.train()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        ctx.epoch = epoch
        lr = optimizers[method.reported].param_groups[0]["lr"]
        chosen = method.epoch_indices(epoch, ctx)
        pool = torch.arange(n) if chosen is None else chosen.cpu()
        order = pool[torch.randperm(len(pool), generator=g_order)].to(device)
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=device)
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            ctx.progress = (epoch + i / len(order)) / epochs  # also right when a curriculum uses a subset
            batch = Batch(x=data.inputs(data.x_train[idx], augment, g_aug), y=data.y_train[idx], idx=idx)
            out = method.train_step(batch, ctx)
            loss_buf[idx] = out.loss
            ce_buf[idx] = F.cross_entropy(out.logits, batch.y, reduction="none")
            correct += (out.logits.argmax(1) == batch.y).sum()
            for k, v in out.logs.items():
                sums[k] = sums.get(k, 0) + v * len(idx)
        for s in schedules.values():
            s.step()
        seen = order
        train_loss = loss_buf[seen].mean().item()
        rec = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_ce": ce_buf[seen].mean().item(),
               "train_acc": 100.0 * correct.item() / len(seen)}
        rec.update({k: (v / len(seen)).item() for k, v in sums.items()})
        rec["test_loss"], rec["test_acc"] = evaluate(nets[method.reported], data)
        for role in method.roles:
            if role != method.reported:
                rec[f"{role}_test_loss"], rec[f"{role}_test_acc"] = evaluate(nets[role], data)
        rec["quartile_share"] = quartile_shares(loss_buf[seen])  # objective, ranked by itself
        rec["quartile_share_ce"] = quartile_shares(ce_buf[seen])  # CE, ranked by itself (Fig. 5 for ERM)
        rec["quartile_share_by_ce"] = quartile_shares(loss_buf[seen], ce_buf[seen])  # objective, CE-ranked (Fig. 6)
        extras = method.on_epoch_end(epoch, ctx, data.noisy_mask)
        if extras:
            rec["extras"] = extras
        rec["seconds"] = time.perf_counter() - t0
        history.append(rec)
        if on_epoch:
            on_epoch(rec)
        if not math.isfinite(train_loss):
            status = "diverged"
            break
    last = history[-1]
    best = max(history, key=lambda r: r["test_acc"])
    return {
        "status": status,
        "final_test_acc": last["test_acc"],
        "best_test_acc": best["test_acc"],
        "best_epoch": best["epoch"],
        "history": history,
        "extras": {
            "reported_role": method.reported,
            "roles": list(method.roles),
            "parameters_per_network": count_parameters(nets[method.reported]),
            "num_train": n,
            "num_test": len(data.y_test),
            "noisy_fraction": data.noisy_mask.float().mean().item(),
            **{f"{r}_final_test_acc": last[f"{r}_test_acc"] for r in method.roles if r != method.reported},
        },
    }
