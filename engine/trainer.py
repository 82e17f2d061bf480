"""One readable training loop with the data resident on the device (after airbench).

The training set lives on the device as one tensor; each epoch draws a seeded permutation and forms batches by
indexing it; augmentation runs on the whole batch on the device. Per-sample losses are written into a device
buffer indexed by sample, so the per-epoch statistics (BLCL Fig. 5/6 quartile shares) cost no extra pass and no
host round trip per step.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
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
from .checkpoint import load as load_checkpoint
from .checkpoint import rng_state, save as save_checkpoint, set_rng_state
from .optim import build_optimizer, build_schedule
from .options import EngineOptions
from .packing import PackedNet, unpackable_reason
from .stats import EpochStats

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
    x_train_ready: torch.Tensor | None = None  # CPU, no augmentation: network inputs computed once (`ready`)

    def ready(self) -> None:
        """On the CPU without augmentation, convert the training set to network inputs once instead of per batch
        (element-wise the same numbers). On a GPU the set stays uint8: memory and bandwidth matter more there."""
        if self.x_train.device.type == "cpu" and self.kind == "image":
            self.x_train_ready = self.inputs(self.x_train)

    def train_batch(self, idx: torch.Tensor, augment, g: torch.Generator | None) -> torch.Tensor:
        if self.x_train_ready is not None:
            return self.x_train_ready[idx]
        return self.inputs(self.x_train[idx], augment, g)

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
                 data: Prepared, num_classes: int, device: torch.device, modules: dict[str, nn.Module] | None = None,
                 packed: int = 1):
        self.nets = nets  # what methods call (compiled where the fast path compiles)
        self.modules = modules or nets  # the modules themselves (constraints, state)
        self.packed = packed  # K > 1: K runs' batches concatenated slot-major; losses are means over all K
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
        for group in opt.param_groups:  # = opt.zero_grad(set_to_none=True), without its profiler scope per step
            for p in group["params"]:
                p.grad = None
        for s in self.steppers[role]:
            s.zero_grad(set_to_none=True)
        # a packed batch's mean is 1/K of the sum of the K runs' means: scale so each slot gets its own gradient
        (loss * self.packed if self.packed > 1 else loss).backward()
        opt.step()
        for s in self.steppers[role]:
            s.step()
        constrain = getattr(self.modules[role], "apply_constraints", None)
        if constrain is not None:
            constrain()

    def _single(self, what: str) -> None:
        if self.packed > 1:
            raise ValueError(f"{what} is not available to packed runs: the method must decline packing")

    def evaluate(self, role: str, split: str = "val") -> tuple[float, float]:
        self._single("ctx.evaluate")
        if split == "val":
            if not self.has_val:
                raise ValueError("this run holds out no validation split: set data.val_size in the target")
            return evaluate(self.nets[role], self.data, self.data.x_val, self.data.y_val)
        if split == "train":
            return evaluate(self.nets[role], self.data, self.data.x_train, self.data.y_train)
        raise ValueError(f"split {split!r}; allowed: val, train (the test split selects nothing)")

    @torch.no_grad()
    def score_train(self, role: str, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._single("ctx.score_train")
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


def group_key(spec: dict) -> str:
    """Specs equal apart from their seeds (the run's, and those of the runs its roles are restored from) share a
    key: only such runs are packed together."""
    def strip(d: dict) -> dict:
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if k != "seed"}

    top = {k: v for k, v in spec.items() if k != "seed"}
    if "roles" in top:
        top["roles"] = strip(top["roles"])
    return json.dumps(top, sort_keys=True, separators=(",", ":"))


def epoch_sequence(orders: list[torch.Tensor], bs: int, n: int) -> torch.Tensor:
    """The epoch's training samples in the order the steps see them: one run's order, or for K packed runs each
    step's K batches slot-major (slot k's sample i at k * n + i), step after step. Step s trains positions
    [K * s * bs, K * min((s + 1) * bs, L)) of it."""
    if len(orders) == 1:
        return orders[0]
    k = len(orders)
    stacked = torch.stack(orders) + torch.arange(k, device=orders[0].device).view(-1, 1) * n
    return torch.cat([chunk.flatten() for chunk in stacked.split(bs, dim=1)])


def spec_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def pack_decline_reason(spec: dict, splits: Splits) -> str | None:
    """Why runs of `spec` cannot be packed with other seeds (None: they can)."""
    mspec = dict(spec["method"])
    method = build_method(mspec.pop("name"), mspec, splits.num_classes, 1)
    if not method.packable:
        return f"method {method.name!r} declines packing (per-run state or a per-seed sample schedule)"
    if spec["data"]["noise"].get("drop_corrupted"):
        return "noise.drop_corrupted: each seed keeps a different number of samples"
    for role in method.roles:
        m = role_model(spec, role)
        kw = {k: v for k, v in m.items() if k != "name"}
        with torch.random.fork_rng(devices=[]):
            why = unpackable_reason(create_model(m["name"], splits.num_classes, splits.in_shape,
                                                 splits.meta.get("vocab_size"), **kw))
        if why:
            return why
    return None


@torch.no_grad()
def _evaluate_slots(net, datas: list[Prepared], split: str, opts: EngineOptions) -> list[tuple[float, float]]:
    """(mean CE, accuracy %) per slot on `split` ("test" or "val"); one batched pass for a packed network."""
    with opts.autocast(datas[0].y_train.device):
        if len(datas) == 1:
            d = datas[0]
            return [evaluate(net, d, getattr(d, f"x_{split}"), getattr(d, f"y_{split}"))]
        k = len(datas)
        ys = [getattr(d, f"y_{split}") for d in datas]
        loss = torch.zeros(k, device=ys[0].device)
        correct = torch.zeros(k, device=ys[0].device)
        was = net.training
        net.eval()
        for i in range(0, len(ys[0]), EVAL_BATCH):
            x = torch.cat([d.inputs(getattr(d, f"x_{split}")[i : i + EVAL_BATCH]) for d in datas])
            y = torch.stack([yk[i : i + EVAL_BATCH] for yk in ys])
            logits = net(x).float().unflatten(0, (k, -1))
            loss += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).sum(1)
            correct += (logits.argmax(2) == y).sum(1)
        net.train(was)
        n = len(ys[0])
        return [(loss[j].item() / n, 100.0 * correct[j].item() / n) for j in range(k)]


def train(spec: dict, splits: Splits, device: torch.device, on_epoch: Callable[[dict], None] | None = None,
          role_states: dict[str, dict] | None = None, keep_state: bool = False,
          snapshot_epochs: set[int] | None = None, options: EngineOptions | None = None) -> dict:
    """Train one run described by `spec` (see benchmarks.spec) and return its metrics and history.
    `role_states` restores frozen roles (e.g. a KD teacher); `keep_state` returns the trained networks' and the
    method's final state under "state" (the runner saves it as the run's checkpoint)."""
    return train_group([spec], splits, device, None if on_epoch is None else (lambda recs: on_epoch(recs[0])),
                       [role_states], keep_state, [snapshot_epochs], options)[0]


def train_group(specs: list[dict], splits: Splits, device: torch.device,
                on_epoch: Callable[[list[dict | None]], None] | None = None,
                role_states: list[dict | None] | None = None, keep_state: bool | list[bool] = False,
                snapshot_epochs: list[set[int] | None] | None = None,
                options: EngineOptions | None = None) -> list[dict]:
    """Train K runs that differ only in their seeds, packed into one network per role when K > 1 (see
    `engine.packing`); returns one result per spec, each as `train` would. Each slot draws its initial weights,
    noisy labels, batch order and augmentation from its own seed exactly as an unpacked run does.
    `on_epoch` gets the K epoch records (None for a slot that has stopped)."""
    k_slots = len(specs)
    if len({group_key(s) for s in specs}) != 1:
        raise ValueError("packed runs must have one spec apart from their seeds")
    opts = options or EngineOptions()
    role_states = role_states or [None] * k_slots
    keep = list(keep_state) if isinstance(keep_state, (list, tuple)) else [keep_state] * k_slots
    snap_at = snapshot_epochs or [None] * k_slots
    recipe = specs[0]["recipe"]
    epochs = recipe["epochs"]
    datas, slot_nets, method = [], [], None
    for k, spec in enumerate(specs):  # per slot, in the order an unpacked run draws from its seed
        torch.manual_seed(spec["seed"])
        datas.append(prepare(splits, spec["data"], recipe, spec["seed"], device))
        mspec = dict(spec["method"])
        m = build_method(mspec.pop("name"), mspec, splits.num_classes, len(datas[-1].y_train))
        method = method or m
        slot_nets.append(build_nets(m, spec, splits, device, role_states[k]))
    d0 = datas[0]
    n = len(d0.y_train)
    if k_slots == 1:
        modules = slot_nets[0]
    else:
        if not method.packable:
            raise ValueError(f"method {method.name!r} cannot be packed")
        if any(len(d.y_train) != n for d in datas):
            raise ValueError("packed runs must train on the same number of samples")
        modules = {r: PackedNet([sn[r] for sn in slot_nets]).to(device) for r in method.roles}
        for r in method.frozen:
            modules[r].requires_grad_(False).eval()
    trainable = [r for r in method.roles if r not in method.frozen]
    channels_last = opts.channels_last and k_slots == 1 and splits.kind == "image" and len(splits.in_shape) == 3
    if channels_last:
        for m in modules.values():
            m.to(memory_format=torch.channels_last)
    steps = epochs * -(-n // recipe["batch_size"])
    convnet = any(isinstance(x, torch.nn.Conv2d) for m in modules.values() for x in m.modules())
    compiled = opts.compile or (channels_last and convnet and 0 < opts.compile_min_steps <= steps)
    calls = {r: torch.compile(m) if compiled else m for r, m in modules.items()}
    optimizers = {r: build_optimizer(recipe["optimizer"], modules[r].parameters(), fused=opts.fused)
                  for r in trainable}
    schedules = {r: build_schedule(recipe["schedule"], optimizers[r], epochs) for r in trainable}
    ctx = _Context(calls, optimizers, datas[0], splits.num_classes, device, modules=modules, packed=k_slots)
    ctx.num_epochs = epochs
    stacked_labels = d0.y_train if k_slots == 1 else torch.cat([d.y_train for d in datas])
    ctx.train_labels = stacked_labels  # packed: indexed by batch.idx = slot * n + sample
    for r in trainable:
        modules[r].train()
    method.setup(ctx)
    augment = AUGMENTS[recipe.get("augment", "none")]
    if recipe.get("augment", "none") == "none":
        for d in datas:
            d.ready()
    g_order = [torch.Generator().manual_seed(s["seed"]) for s in specs]
    g_aug = [torch.Generator(device=device).manual_seed(s["seed"]) for s in specs]
    gens = {"order": g_order, "aug": g_aug}
    bs = recipe["batch_size"]
    loss_buf = torch.zeros(k_slots * n, device=device)  # per-sample statistics, slot k at [k*n, (k+1)*n)
    ce_buf = torch.zeros(k_slots * n, device=device)
    ok_buf = torch.zeros(k_slots * n, dtype=torch.bool, device=device)
    log_bufs: dict[str, torch.Tensor] = {}
    histories: list[list[dict]] = [[] for _ in specs]
    status, active = ["ok"] * k_slots, [True] * k_slots
    snapshots: list[dict[str, torch.Tensor]] = [{} for _ in specs]
    keys, start, resumed = [spec_key(s) for s in specs], 0, None
    saved = load_checkpoint(opts.checkpoint, keys)
    if saved is not None:
        for r in trainable:
            modules[r].load_state_dict(saved["nets"][r])
            optimizers[r].load_state_dict(saved["optimizers"][r])
            schedules[r].load_state_dict(saved["schedules"][r])
        method.load_state_dict(saved["method"])
        histories, status, active, snapshots = saved["histories"], saved["status"], saved["active"], saved["snapshots"]
        start = resumed = saved["epoch"]
        set_rng_state(saved["rng"], gens)
    last_save = time.perf_counter()
    for epoch in range(start, epochs):
        if not any(active):
            break
        t0 = time.perf_counter()
        ctx.epoch = epoch
        lr = optimizers[method.reported].param_groups[0]["lr"]
        chosen = method.epoch_indices(epoch, ctx)
        pool = torch.arange(n) if chosen is None else chosen.cpu()
        orders = [pool[torch.randperm(len(pool), generator=g)].to(device) for g in g_order]
        seq = epoch_sequence(orders, bs, n)  # the epoch's samples in training order (slot-major within a step)
        y_seq = stacked_labels[seq]
        stats = EpochStats(len(seq), splits.num_classes, device)  # per step by position; scattered at the end
        for i in range(0, len(pool), bs):
            ctx.progress = (epoch + i / len(pool)) / epochs  # also right when a curriculum uses a subset
            lo, hi = k_slots * i, k_slots * min(i + bs, len(pool))
            idx, y = seq[lo:hi], y_seq[lo:hi]
            if k_slots == 1:
                x = d0.train_batch(idx, augment, g_aug[0])
            else:
                x = torch.cat([d.train_batch(o[i : i + bs], augment, g) for d, o, g in zip(datas, orders, g_aug)])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with opts.autocast(device):
                out = method.train_step(Batch(x=x, y=y, idx=idx), ctx)
            stats.record(lo, hi, out, y, k_slots > 1, method.name)
        sums = stats.finish(seq, y_seq, loss_buf, ce_buf, ok_buf, log_bufs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # once per epoch, so that train_seconds is the training time
        train_seconds = time.perf_counter() - t0
        for s in schedules.values():
            s.step()
        reported = calls[method.reported]
        test = _evaluate_slots(reported, datas, "test", opts)
        val = _evaluate_slots(reported, datas, "val", opts) if d0.y_val is not None else None
        others = {r: _evaluate_slots(calls[r], datas, "test", opts) for r in trainable if r != method.reported}
        recs: list[dict | None] = [None] * k_slots
        for k in range(k_slots):
            if not active[k]:
                continue
            seen = orders[k] + k * n
            train_loss = loss_buf[seen].mean().item()
            rec = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_ce": ce_buf[seen].mean().item(),
                   "train_acc": 100.0 * ok_buf[seen].sum().item() / len(seen)}
            rec.update({key: (v / len(seen)).item() for key, v in sums.items()})
            rec.update({key: b[seen].mean().item() for key, b in log_bufs.items()})
            rec["test_loss"], rec["test_acc"] = test[k]
            if val is not None:  # the held-out validation split (DCD Table I reports "validation accuracy")
                rec["val_loss"], rec["val_acc"] = val[k]
            for role, res in others.items():
                rec[f"{role}_test_loss"], rec[f"{role}_test_acc"] = res[k]
            rec["quartile_share"] = quartile_shares(loss_buf[seen])  # objective, ranked by itself
            rec["quartile_share_ce"] = quartile_shares(ce_buf[seen])  # CE, ranked by itself (Fig. 5 for ERM)
            rec["quartile_share_by_ce"] = quartile_shares(loss_buf[seen], ce_buf[seen])  # objective, CE-ranked
            if snap_at[k] and epoch + 1 in snap_at[k]:
                snapshots[k][f"ce_{epoch + 1}"] = ce_buf[k * n : (k + 1) * n].detach().cpu().clone()
                snapshots[k][f"loss_{epoch + 1}"] = loss_buf[k * n : (k + 1) * n].detach().cpu().clone()
            recs[k] = rec
        noisy = d0.noisy_mask if k_slots == 1 else torch.cat([d.noisy_mask for d in datas])
        extras = method.on_epoch_end(epoch, ctx, noisy)
        if extras and k_slots > 1:
            raise ValueError(f"method {method.name!r} returns per-epoch extras: it cannot be packed")
        seconds = time.perf_counter() - t0
        for k, rec in enumerate(recs):
            if rec is None:
                continue
            if extras:
                rec["extras"] = extras
            rec["seconds"] = seconds
            rec["train_seconds"] = train_seconds  # the batches alone, without the evaluations
            histories[k].append(rec)
            if not math.isfinite(rec["train_loss"]):
                status[k], active[k] = "diverged", False
        if on_epoch:
            on_epoch(recs)
        every = opts.checkpoint_every
        due = (epoch + 1) % every == 0 if every else time.perf_counter() - last_save >= opts.checkpoint_seconds
        if opts.checkpoint and due and epoch + 1 < epochs and any(active):
            save_checkpoint(opts.checkpoint, {
                "keys": keys, "epoch": epoch + 1, "histories": histories, "status": status, "active": active,
                "snapshots": snapshots, "method": method.state_dict(), "rng": rng_state(gens),
                "nets": {r: modules[r].state_dict() for r in trainable},
                "optimizers": {r: o.state_dict() for r, o in optimizers.items()},
                "schedules": {r: s.state_dict() for r, s in schedules.items()}})
            last_save = time.perf_counter()
        if opts.kill_at_epoch == epoch + 1:  # fault injection (tests): die as `kill -9` would
            os.kill(os.getpid(), signal.SIGKILL)
    frozen = {r: _evaluate_slots(calls[r], datas, "test", opts) for r in method.frozen}
    engine = {**opts.record(), "channels_last": channels_last, "compile": compiled, "pack": k_slots,
              "resumed_from_epoch": resumed}
    outs = []
    for k in range(k_slots):
        hist, d = histories[k], datas[k]
        last = hist[-1]
        best = max(hist, key=lambda r: r["test_acc"])
        out = {
            "status": status[k],
            "final_test_acc": last["test_acc"],
            "best_test_acc": best["test_acc"],
            "best_epoch": best["epoch"],
            "history": hist,
            "engine": engine,
            "extras": {
                "reported_role": method.reported,
                "roles": list(method.roles),
                "parameters_per_network": count_parameters(slot_nets[k][method.reported]),
                "num_train": n,
                "num_test": len(d.y_test),
                "noisy_fraction": d.noisy_mask.float().mean().item(),
                **{f"{r}_final_test_acc": last[f"{r}_test_acc"] for r in trainable if r != method.reported},
                **{f"{r}_final_test_acc": res[k][1] for r, res in frozen.items()},
            },
        }
        if d.y_val is not None:
            out["extras"]["num_val"] = len(d.y_val)
        if snapshots[k]:
            snapshots[k]["noisy"] = d.noisy_mask.detach().cpu().float()  # which samples' labels were corrupted
            out["snapshots"] = snapshots[k]
        if keep[k]:
            nets = {r: ({n_: v.detach().cpu() for n_, v in modules[r].state_dict().items()} if k_slots == 1
                        else modules[r].slot_state_dict(k)) for r in trainable}
            out["state"] = {"nets": nets, "reported": method.reported, "method": method.state_dict()}
        outs.append(out)
    return outs
