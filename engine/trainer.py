"""One readable training loop with the data resident on the device (after airbench).

The training set lives on the device as one tensor; each epoch draws a seeded permutation and forms batches by
indexing it; augmentation runs on the whole batch on the device. Per-sample losses are written into a device
buffer indexed by sample, so the per-epoch statistics (BLCL Fig. 5/6 quartile shares) cost no extra pass and no
host round trip per step.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from data import Splits, add_pixel_noise, corrupt_labels
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
    x_val: torch.Tensor | None = None  # held out of the training set (spec data.val_size), clean labels
    y_val: torch.Tensor | None = None

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


def _normalizer(normalize, channels: int, device, meta: dict | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`normalize: [mean, std]` with scalars or one value per channel, or "dataset": the dataset entry's own."""
    if not normalize:
        return None
    if normalize == "dataset":
        if not meta or "mean" not in meta:
            raise ValueError("recipe normalize: dataset, but the dataset entry gives no mean/std")
        normalize = [meta["mean"], meta["std"]]
    mean, std = (torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1) for v in normalize)
    shape = (1, channels, 1, 1)
    return mean.expand(channels).reshape(shape), std.expand(channels).reshape(shape)


def split_validation(n: int, size: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(train positions, validation positions or None): `size` samples held out of the training set by a
    permutation seeded with the data spec's `val_seed` (not the run seed), stratification-free."""
    if not size:
        return torch.arange(n), None
    if size >= n:
        raise ValueError(f"data.val_size={size} must be smaller than the training set ({n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[size:].sort().values, perm[:size].sort().values


def train_positions(splits: Splits, data_spec: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Positions in the dataset's training split of (the run's training samples, its validation samples)."""
    tr = _subset(len(splits.y_train), data_spec.get("train_subset"))
    keep, val = split_validation(len(tr), data_spec.get("val_size"), data_spec.get("val_seed", 0))
    return tr[keep], (None if val is None else tr[val])


@torch.no_grad()
def embed_2d(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A fixed 2-D embedding of a training set (BLCL Figs. 3/4/10/11 view): the first two principal components of
    the raw pixels, from a seeded randomised PCA (torch.pca_lowrank)."""
    x = images.flatten(1).float() / 255.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(x, q=2, center=True, niter=4)
    return (x - x.mean(0)) @ v[:, :2]


def prepare(splits: Splits, data_spec: dict, recipe: dict, seed: int, device: torch.device) -> Prepared:
    tr, va = train_positions(splits, data_spec)
    te = _subset(len(splits.y_test), data_spec.get("test_subset"))
    y_clean = splits.y_train[tr]
    noise = data_spec["noise"]
    y_noisy, mask = corrupt_labels(y_clean, splits.num_classes, noise["kind"], noise["rate"], seed, splits.name)
    if noise.get("drop_corrupted"):  # the oracle (Data Parameters Table 2): train on the samples left clean only
        tr, y_clean, y_noisy, mask = tr[~mask], y_clean[~mask], y_noisy[~mask], mask[~mask]
    norm = (_normalizer(recipe.get("normalize"), splits.in_shape[0], device, splits.meta)
            if splits.kind == "image" else None)
    alpha = data_spec.get("pixel_noise", 0)  # present only when set, so other runs' ids never change

    def images(x: torch.Tensor, split: str) -> torch.Tensor:
        return add_pixel_noise(x, alpha, seed, splits.name, split).to(device)

    return Prepared(
        x_train=images(splits.x_train[tr], "train"),
        y_train=y_noisy.to(device),
        y_clean=y_clean.to(device),
        noisy_mask=mask.to(device),
        x_test=images(splits.x_test[te], "test"),
        y_test=splits.y_test[te].to(device),
        kind=splits.kind,
        normalize=norm,
        x_val=None if va is None else images(splits.x_train[va], "val"),
        y_val=None if va is None else splits.y_train[va].to(device),
    )


class _Context:
    """The engine side of `methods.base.StepContext`."""

    def __init__(self, nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 data: Prepared, num_classes: int, device: torch.device):
        self.nets = nets
        self.optimizers = optimizers
        self.steppers: dict[str, list] = {r: [] for r in nets}
        self.data = data
        self.device = device
        self.num_classes = num_classes
        self.num_train = len(data.y_train)
        self.train_labels = data.y_train
        self.has_val = data.y_val is not None
        self.epoch = 0
        self.num_epochs = 0
        self.progress = 0.0

    def attach(self, role: str, stepper) -> None:
        if role not in self.optimizers:
            raise ValueError(f"cannot attach to role {role!r}: trainable roles are {sorted(self.optimizers)}")
        self.steppers[role].append(stepper)

    def update(self, role: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[role]
        opt.zero_grad(set_to_none=True)
        for s in self.steppers[role]:
            s.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for s in self.steppers[role]:
            s.step()
        constrain = getattr(self.nets[role], "apply_constraints", None)
        if constrain is not None:
            constrain()

    def evaluate(self, role: str, split: str = "val") -> tuple[float, float]:
        if split == "val":
            if not self.has_val:
                raise ValueError("this run holds out no validation split: set data.val_size in the target")
            return evaluate(self.nets[role], self.data, self.data.x_val, self.data.y_val)
        if split == "train":
            return evaluate(self.nets[role], self.data, self.data.x_train, self.data.y_train)
        raise ValueError(f"split {split!r}; allowed: val, train (the test split selects nothing)")

    @torch.no_grad()
    def score_train(self, role: str, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.nets[role]
        idx = torch.arange(self.num_train, device=self.device) if indices is None else indices.to(self.device)
        was = net.training
        net.eval()
        logits = torch.cat([net(self.data.inputs(self.data.x_train[idx[i : i + EVAL_BATCH]]))
                            for i in range(0, len(idx), EVAL_BATCH)])
        net.train(was)
        return F.cross_entropy(logits.float(), self.data.y_train[idx], reduction="none"), logits


@torch.no_grad()
def evaluate(net: nn.Module, data: Prepared, x: torch.Tensor | None = None,
             y: torch.Tensor | None = None) -> tuple[float, float]:
    """(mean CE loss, accuracy in %) of `net` in eval mode over (x, y), by default the test split."""
    if x is None:
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


def stream_seed(seed: int, stream: str) -> int:
    """Seed of a non-`main` initialisation stream: a hash of (run seed, stream name)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|init|{stream}".encode()).digest()[:8], "little")


def role_model(spec: dict, role: str) -> dict:
    """The model spec of `role`: its own (spec `roles.<role>.model`, e.g. KD's ResNet-110 teacher) or the run's."""
    return spec.get("roles", {}).get(role, {}).get("model") or spec["model"]


def build_nets(method, spec: dict, splits: Splits, device: torch.device,
               role_states: dict[str, dict] | None = None) -> dict[str, nn.Module]:
    """One network per role. `main`-stream roles are drawn in order from the global generator (seeded with the
    run seed by the caller); other streams from their own (seed, stream) generator, leaving the global one
    untouched. Frozen roles are restored from `role_states` (another run's checkpoint) and put in eval mode."""
    role_states = role_states or {}
    nets = {}
    for role in method.roles:
        m = role_model(spec, role)
        kw = {k: v for k, v in m.items() if k != "name"}

        def make(m=m, kw=kw):
            return create_model(m["name"], splits.num_classes, splits.in_shape, splits.meta.get("vocab_size"), **kw)

        stream = method.init_stream(role)
        if stream == "main":
            net = make()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stream_seed(spec["seed"], stream))
                net = make()
        if role in method.frozen:
            if role not in role_states:
                raise ValueError(f"role {role!r} of method {method.name!r} is frozen: it needs a checkpoint "
                                 f"(spec roles.{role}.from_run)")
            net.load_state_dict(role_states[role])
            net.requires_grad_(False)
            net.eval()
        nets[role] = net.to(device)
    return nets


def train(spec: dict, splits: Splits, device: torch.device, on_epoch: Callable[[dict], None] | None = None,
          role_states: dict[str, dict] | None = None, keep_state: bool = False,
          snapshot_epochs: set[int] | None = None) -> dict:
    """Train one run described by `spec` (see benchmarks.spec) and return its metrics and history.
    `role_states` restores frozen roles (e.g. a KD teacher); `keep_state` returns the trained networks' and the
    method's final state under "state" (the runner saves it as the run's checkpoint)."""
    seed, recipe = spec["seed"], spec["recipe"]
    torch.manual_seed(seed)
    data = prepare(splits, spec["data"], recipe, seed, device)
    n = len(data.y_train)
    mspec = dict(spec["method"])
    method = build_method(mspec.pop("name"), mspec, splits.num_classes, n)
    nets = build_nets(method, spec, splits, device, role_states)
    trainable = [r for r in method.roles if r not in method.frozen]
    epochs = recipe["epochs"]
    optimizers = {r: build_optimizer(recipe["optimizer"], nets[r].parameters()) for r in trainable}
    schedules = {r: build_schedule(recipe["schedule"], optimizers[r], epochs) for r in trainable}
    ctx = _Context(nets, optimizers, data, splits.num_classes, device)
    ctx.num_epochs = epochs
    for r in trainable:
        nets[r].train()
    method.setup(ctx)
    augment = AUGMENTS[recipe.get("augment", "none")]
    g_order = torch.Generator().manual_seed(seed)
    g_aug = torch.Generator(device=device).manual_seed(seed)
    bs = recipe["batch_size"]
    loss_buf = torch.zeros(n, device=device)
    ce_buf = torch.zeros(n, device=device)
    history, status = [], "ok"
    snapshots: dict[str, torch.Tensor] = {}
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
        if data.y_val is not None:  # the held-out validation split (DCD Table I reports "validation accuracy")
            rec["val_loss"], rec["val_acc"] = evaluate(nets[method.reported], data, data.x_val, data.y_val)
        for role in trainable:
            if role != method.reported:
                rec[f"{role}_test_loss"], rec[f"{role}_test_acc"] = evaluate(nets[role], data)
        rec["quartile_share"] = quartile_shares(loss_buf[seen])  # objective, ranked by itself
        rec["quartile_share_ce"] = quartile_shares(ce_buf[seen])  # CE, ranked by itself (Fig. 5 for ERM)
        rec["quartile_share_by_ce"] = quartile_shares(loss_buf[seen], ce_buf[seen])  # objective, CE-ranked (Fig. 6)
        if snapshot_epochs and epoch + 1 in snapshot_epochs:
            snapshots[f"ce_{epoch + 1}"] = ce_buf.detach().cpu().clone()
            snapshots[f"loss_{epoch + 1}"] = loss_buf.detach().cpu().clone()
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
    frozen_acc = {f"{r}_final_test_acc": evaluate(nets[r], data)[1] for r in method.frozen}
    out = {
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
            **{f"{r}_final_test_acc": last[f"{r}_test_acc"] for r in trainable if r != method.reported},
            **frozen_acc,
        },
    }
    if data.y_val is not None:
        out["extras"]["num_val"] = len(data.y_val)
    if snapshots:
        snapshots["noisy"] = data.noisy_mask.detach().cpu().float()  # which samples' labels were corrupted
        out["snapshots"] = snapshots
    if keep_state:
        out["state"] = {"nets": {r: {k: v.detach().cpu() for k, v in nets[r].state_dict().items()}
                                 for r in trainable},
                        "reported": method.reported, "method": method.state_dict()}
    return out
