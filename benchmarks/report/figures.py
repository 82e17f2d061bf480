"""Figures drawn from result JSONs (seaborn over a pandas long table); each names its budget, seeds and device.

- `loss_curves`: train CE and test loss per epoch, mean over seeds with a +-1 sd band (BLCL Fig. 8 view).
- `quartile_shares`: share of the summed training objective carried by each difficulty quartile per epoch,
  stacked, mean over seeds (BLCL Fig. 5/6; the top band is Fig. 9's alpha).
- `noise_curves`: test accuracy against the label-noise rate per method, final epoch (solid) and test-selected
  best epoch (dashed, optimistic), mean with the seeds' spread (SuperLoss Fig. 5 view).
- `sigma_clean_noisy`: Data Parameters' mean instance sigma over clean and over corrupted samples per epoch, one
  panel per noise rate, with the seeds' spread (Data Parameters Fig. 4 view).
- `loss_embedding`: every training example as a dot at a fixed 2-D embedding of the training set (the first two
  principal components of the raw pixels, `store.embedding_path`), shaded by its per-example CE at the epochs the
  figure asks for (BLCL Figs. 3/4/10/11); seed 0's run (the lowest seed run), one row per variant.
- `class_sigma`: Data Parameters' class sigma per epoch for four classes picked by a fixed seed, mean +- sd over
  seeds (Data Parameters Fig. 1, left).
- `loss_groups`: mean per-sample CE per epoch (from the loss snapshots of every epoch) of the corrupted samples
  and of the clean ones split at the median of their CE at `split_epoch` into easy and hard (SuperLoss Fig. 4
  view, as the announcement describes it: easy and hard are clean samples with small and high loss).
- `acc_curves`: train, validation (where the run holds one out) and test accuracy per epoch (DCD Fig. 3 view).
- `dcd_window`: DCD's difficulty window (lower and upper rank fraction) per epoch, per row (DCD Fig. 4).
- `lr_schedules`: the learning rate per epoch of the schedules the figure names, from the engine's own schedule
  registry, no training (DCD Fig. 5).
- `superloss_surface`: SuperLoss's confidence-aware loss (l - tau) sigma + lam (log sigma)^2 over (l, sigma), its
  minimiser sigma*(l) and the SuperLoss value SL(l), computed with `methods.superloss`, no training (SuperLoss
  Fig. 3 view).
- `r_sweep`: final test accuracy and alpha (the hardest quarter's share of the training loss, last epoch) against
  BLCL's r, one line per reading of Eq. (3), ERM as a reference line (BLCL Fig. 9).
"""
from __future__ import annotations

import os
import textwrap

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from benchmarks.report.stats import epoch_extras  # noqa: E402

QUARTILES = ["q1", "q2", "q3", "q4"]
QLABELS = ["easiest quarter", "second", "third", "hardest quarter"]


def _finish(fig, path: str, title: str, fontsize: int = 9) -> None:
    """Title, lay out, write and close a figure."""
    fig.suptitle(textwrap.fill(title, max(60, int(fig.get_figwidth() * 13))), fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(ax, text: str, fontsize: int = 9) -> None:
    """A panel title wrapped to the panel's width (the CPU rows' labels are long)."""
    ax.set_title(textwrap.fill(text, 62), fontsize=fontsize)


def _panel_label(labels: dict[str, str], row: str, rate) -> str:
    """One panel per row and noise rate: rows that share a rate (Data Parameters' uniform and shuffle noise)
    are never pooled."""
    return labels[row] + (f", noise {rate:g}" if rate else "")


def _caption(t, budget: str, df, devices: list[str]) -> str:
    seeds = ",".join(str(s) for s in sorted(df["seed"].unique()))
    return f"{t.name} · budget {budget} · seeds {seeds} · {'; '.join(devices)}"


def loss_curves(t, budget, by_cell, labels, devices, path, **_):
    df = history_frame(by_cell, labels)
    rows = list(dict.fromkeys(df["row"]))
    fig, axes = plt.subplots(1, len(rows), figsize=(6 * len(rows), 4.2), squeeze=False)
    long = df.melt(id_vars=["row", "variant", "seed", "epoch"], value_vars=["train_ce", "test_loss"],
                   var_name="split", value_name="loss")
    long["split"] = long["split"].map({"train_ce": "train (CE)", "test_loss": "test"})
    for ax, row in zip(axes[0], rows):
        sns.lineplot(data=long[long["row"] == row], x="epoch", y="loss", hue="variant", style="split",
                     errorbar="sd", markers=True, markersize=4, ax=ax)
        _title(ax, row)
    _finish(fig, path, _caption(t, budget, df, devices))


def quartile_shares(t, budget, by_cell, labels, devices, path, **_):
    df = history_frame(by_cell, labels)
    rows, variants = list(dict.fromkeys(df["row"])), list(dict.fromkeys(df["variant"]))
    fig, axes = plt.subplots(len(rows), len(variants), figsize=(4.2 * len(variants), 3.4 * len(rows)),
                             squeeze=False, sharey=True)
    colors = sns.color_palette("rocket_r", 4)
    for i, row in enumerate(rows):
        for j, variant in enumerate(variants):
            ax = axes[i][j]
            m = df[(df["row"] == row) & (df["variant"] == variant)].groupby("epoch")[QUARTILES].mean()
            bottom = 0
            for q, label, color in zip(QUARTILES, QLABELS, colors):
                ax.bar(m.index, m[q], bottom=bottom, width=0.9, label=label, color=color, linewidth=0)
                bottom = bottom + m[q]
            ranking = ", ".join(sorted(df[(df["row"] == row) & (df["variant"] == variant)]["q_ranking"].unique()))
            _title(ax, f"{row}: {variant} (quartiles ranked by {ranking})", fontsize=8)
            ax.set_xlabel("epoch")
            ax.set_ylim(0, 1)
        axes[i][0].set_ylabel("share of summed training loss")
    axes[0][-1].legend(loc="lower right", fontsize=7, framealpha=0.9)
    _finish(fig, path, _caption(t, budget, df, devices))


def history_frame(by_cell: dict[tuple, list[dict]], labels: dict[str, str]) -> pd.DataFrame:
    """Long table of per-epoch history over the ok runs: row, variant, seed, epoch and every scalar metric."""
    rows = []
    for (row, variant, _comp, rate), recs in by_cell.items():
        for r in recs:
            if r["status"] != "ok":
                continue
            for h in r["history"]:
                base = {"row": _panel_label(labels, row, rate), "variant": variant,
                        "seed": r["spec"]["seed"], "epoch": h["epoch"]}
                base.update({k: v for k, v in h.items() if isinstance(v, (int, float)) and k != "epoch"})
                # Fig. 5/6: the objective's share per CE-ranked quartile where recorded (runs before this field
                # existed rank the objective by itself; the two agree for ERM)
                shares = h.get("quartile_share_by_ce") or h.get("quartile_share", [])
                base["q_ranking"] = "CE" if "quartile_share_by_ce" in h else "own loss"
                for q, share in enumerate(shares):
                    base[f"q{q + 1}"] = share
                rows.append(base)
    return pd.DataFrame(rows)


def run_frame(by_cell: dict[tuple, list[dict]], labels: dict[str, str]) -> pd.DataFrame:
    """One line per ok run: row, variant, noise rate, seed, final and best test accuracy."""
    return pd.DataFrame([{"row": labels[row], "variant": variant, "rate": rate, "seed": r["spec"]["seed"],
                          "final": r["final_test_acc"], "best": r["best_test_acc"]}
                         for (row, variant, _c, rate), recs in by_cell.items() for r in recs if r["status"] == "ok"])


def noise_curves(t, budget, by_cell, labels, devices, path, **_):
    df = run_frame(by_cell, labels)
    long = df.melt(id_vars=["row", "variant", "rate", "seed"], value_vars=["final", "best"], var_name="epoch",
                   value_name="test accuracy (%)")
    long["epoch"] = long["epoch"].map({"final": "last epoch", "best": "best epoch (test-selected)"})
    rows = list(dict.fromkeys(df["row"]))
    fig, axes = plt.subplots(1, len(rows), figsize=(7 * len(rows), 4.6), squeeze=False)
    for ax, row in zip(axes[0], rows):
        sns.lineplot(data=long[long["row"] == row], x="rate", y="test accuracy (%)", hue="variant", style="epoch",
                     errorbar=("pi", 100), markers=True, markersize=5, ax=ax, err_kws={"alpha": 0.15})
        ax.set_xlabel("label-noise rate")
        _title(ax, f"{row}: band = min-max over seeds")
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    _finish(fig, path, _caption(t, budget, df, devices))


def sigma_frame(by_cell: dict[tuple, list[dict]], labels: dict[str, str]) -> pd.DataFrame:
    """Per epoch and run: mean instance sigma over clean and over corrupted samples (Data Parameters extras),
    with the panel (row and noise rate) it belongs to."""
    rows = []
    for row, variant, rate, r, h, ex in epoch_extras(by_cell):
        for group in ("clean", "noisy"):
            v = ex.get(f"inst_sigma_{group}_mean")
            if v is not None:
                rows.append({"panel": _panel_label(labels, row, rate), "variant": variant, "rate": rate,
                             "seed": r["spec"]["seed"], "epoch": h["epoch"],
                             "samples": "corrupted" if group == "noisy" else "clean", "sigma": v,
                             "share": ex.get("noisy_share_top40"),
                             "noisy_fraction": r["extras"].get("noisy_fraction")})
    return pd.DataFrame(rows)


def sigma_clean_noisy(t, budget, by_cell, labels, devices, path, **_):
    df = sigma_frame(by_cell, labels)
    if df.empty:
        return False
    panels = list(dict.fromkeys(df.sort_values("rate", kind="stable")["panel"]))
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 6.8), squeeze=False, sharey="row")
    for ax, share_ax, panel in zip(axes[0], axes[1], panels):
        part = df[df["panel"] == panel]
        sns.lineplot(data=part, x="epoch", y="sigma", hue="samples", errorbar=("pi", 100), ax=ax,
                     palette={"clean": "tab:green", "corrupted": "tab:red"}, legend=panel == panels[-1])
        _title(ax, panel, fontsize=8)
        shares = part[part["samples"] == "corrupted"].dropna(subset=["share"])
        if not shares.empty:
            sns.lineplot(data=shares, x="epoch", y="share", errorbar=("pi", 100), ax=share_ax, color="tab:red")
            share_ax.axhline(shares["noisy_fraction"].mean(), color="grey", ls="--", lw=1)
        share_ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("mean instance sigma")
    axes[1][0].set_ylabel("corrupted share of the 40% largest sigma\n(dashed: the corrupted fraction)")
    _finish(fig, path, _caption(t, budget, df, devices))


def loss_embedding(t, budget, by_cell, labels, devices, path, spec=None, results=None, **_):
    from benchmarks.run.store import read_snapshots

    panels = []  # (variant, epoch, coordinates, losses, seed)
    for (_row, variant, _c, _rate), recs in by_cell.items():
        ok = [r for r in recs if r["status"] == "ok" and r["extras"].get("snapshots")]
        if not ok:
            continue
        snaps, coords = read_snapshots(results, ok[0])
        if snaps is None:
            continue
        last = ok[0]["spec"]["recipe"]["epochs"]
        for e in sorted({min(e, last) for e in spec.get("epochs", [])}):  # a short budget: its last epoch instead
            if f"ce_{e}" in snaps:
                panels.append((variant, e, coords, snaps[f"ce_{e}"].astype(np.float32), ok[0]["spec"]["seed"]))
    if not panels:
        return False
    variants = list(dict.fromkeys(p[0] for p in panels))
    cols = max(sum(p[0] == v for p in panels) for v in variants) + 1
    fig, axes = plt.subplots(len(variants), cols, figsize=(3.6 * cols, 3.4 * len(variants)), squeeze=False)
    for i, v in enumerate(variants):
        mine = [p for p in panels if p[0] == v]
        xy = mine[0][2]
        axes[i][0].scatter(xy[:, 0], xy[:, 1], s=0.3, c="k", linewidths=0)
        axes[i][0].set_title(f"{v}: all examples", fontsize=8)
        for j, (_v, e, xy, loss, _seed) in enumerate(mine, start=1):
            shade = np.clip(loss / max(np.quantile(loss, 0.99), 1e-8), 0, 1)  # darker = higher loss
            axes[i][j].scatter(xy[:, 0], xy[:, 1], s=0.3, c=shade, cmap="Greys", vmin=0, vmax=1, linewidths=0)
            axes[i][j].set_title(f"{v}: epoch {e} (mean CE {loss.mean():.3f})", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    seeds = ",".join(str(x) for x in sorted({p[4] for p in panels}))
    _finish(fig, path, f"{t.name} · budget {budget} · seed {seeds} (each variant's lowest finished seed) · "
                 f"{'; '.join(devices)} · "
                 f"2-D embedding: first two principal components of the raw training images", 8)


def r_sweep(t, budget, by_cell, labels, devices, path, **_):
    rows = []
    for (_row, variant, _c, _rate), recs in by_cell.items():
        for r in recs:
            if r["status"] != "ok":
                continue
            m = r["spec"]["method"]
            last = r["history"][-1]
            shares = last.get("quartile_share_by_ce") or last["quartile_share"]
            rows.append({"seed": r["spec"]["seed"], "method": m["name"], "r": m.get("r"),
                         "reading": m.get("reading", "erm"), "test accuracy (%)": r["final_test_acc"],
                         "alpha": shares[-1]})
    df = pd.DataFrame(rows)
    sweep = df[df["method"] == "blcl"]
    if sweep.empty:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, y in zip(axes, ["test accuracy (%)", "alpha"]):
        sns.lineplot(data=sweep, x="r", y=y, hue="reading", errorbar=("pi", 100), markers=True, style="reading",
                     ax=ax)
        base = df[df["method"] == "erm"][y]
        if len(base):
            ax.axhline(base.mean(), color="grey", ls="--", lw=1, label="ERM (mean)")
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    axes[1].set_ylabel("alpha: hardest quarter's share of the loss (last epoch)")
    _finish(fig, path, _caption(t, budget, df, devices))


def loss_groups(t, budget, by_cell, labels, devices, path, spec=None, results=None, **_):
    from benchmarks.run.store import read_snapshots

    rows = []
    for (row, variant, _c, rate), recs in by_cell.items():
        for r in recs:
            if r["status"] != "ok" or not r["extras"].get("snapshots"):
                continue
            snaps, _ = read_snapshots(results, r)
            if snaps is None or "noisy" not in snaps:
                continue
            noisy = snaps["noisy"].astype(bool)
            epochs = sorted(int(k.split("_")[1]) for k in snaps if k.startswith("ce_"))
            split = min(spec.get("split_epoch", 10), epochs[-1])
            ref = snaps[f"ce_{split}"].astype(np.float32)
            med = np.median(ref[~noisy]) if (~noisy).any() else 0.0
            groups = {"noisy": noisy, "clean, easy": ~noisy & (ref <= med), "clean, hard": ~noisy & (ref > med)}
            for e in epochs:
                ce = snaps[f"ce_{e}"].astype(np.float32)
                rows += [{"row": _panel_label(labels, row, rate), "variant": variant,
                          "seed": r["spec"]["seed"], "epoch": e, "samples": g, "loss": float(ce[m].mean())}
                         for g, m in groups.items() if m.any()]
    df = pd.DataFrame(rows)
    if df.empty:
        return False
    panels = list(dict.fromkeys(zip(df["row"], df["variant"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False, sharey=True)
    for ax, (row, variant) in zip(axes[0], panels):
        sns.lineplot(data=df[(df["row"] == row) & (df["variant"] == variant)], x="epoch", y="loss", hue="samples",
                     errorbar=("pi", 100), ax=ax, palette={"noisy": "tab:red", "clean, easy": "tab:green",
                                                          "clean, hard": "tab:blue"})
        _title(ax, f"{row}: {variant}")
    axes[0][0].set_ylabel("mean per-sample CE (training pass)")
    _finish(fig, path, _caption(t, budget, df, devices) + f" · easy/hard split at the median clean CE of epoch "
                 f"{spec.get('split_epoch', 10)}")


def class_sigma(t, budget, by_cell, labels, devices, path, **_):
    rows = []
    for _row, variant, _rate, r, h, ex in epoch_extras(by_cell):
        sig = ex.get("class_sigma")
        if sig:
            picked = np.random.default_rng(0).permutation(len(sig))[:4]  # the same four in every run
            rows += [{"variant": variant, "seed": r["spec"]["seed"], "epoch": h["epoch"],
                      "class": f"class {int(c)}", "sigma": sig[int(c)]} for c in picked]
    df = pd.DataFrame(rows)
    if df.empty:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sns.lineplot(data=df, x="epoch", y="sigma", hue="class", style="variant", errorbar="sd", ax=ax)
    ax.set_ylabel("class parameter sigma")
    _finish(fig, path, _caption(t, budget, df, devices) + " · band: +-1 sd over seeds")


def acc_curves(t, budget, by_cell, labels, devices, path, **_):
    df = history_frame(by_cell, labels)
    splits = [c for c in ("train_acc", "val_acc", "test_acc") if c in df]
    long = df.melt(id_vars=["row", "variant", "seed", "epoch"], value_vars=splits, var_name="split",
                   value_name="accuracy (%)")
    long["split"] = long["split"].str.replace("_acc", "")
    rows = list(dict.fromkeys(df["row"]))
    fig, axes = plt.subplots(1, len(rows), figsize=(6 * len(rows), 4.2), squeeze=False)
    for ax, row in zip(axes[0], rows):
        sns.lineplot(data=long[long["row"] == row], x="epoch", y="accuracy (%)", hue="variant", style="split",
                     errorbar="sd", ax=ax)
        _title(ax, row)
    _finish(fig, path, _caption(t, budget, df, devices))


def dcd_window(t, budget, by_cell, labels, devices, path, **_):
    rows = []
    for row, variant, _rate, r, h, ex in epoch_extras(by_cell):
        w = ex.get("window")
        if w:
            rows.append({"row": labels[row], "variant": variant, "seed": r["spec"]["seed"],
                         "epoch": h["epoch"], "lower": w[0], "upper": w[1]})
    df = pd.DataFrame(rows)
    if df.empty:
        return False
    panels = list(dict.fromkeys(df["row"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False, sharey=True)
    for ax, row in zip(axes[0], panels):
        m = df[df["row"] == row].groupby("epoch")[["lower", "upper"]].mean()
        ax.fill_between(m.index, m["lower"], m["upper"], step="post", alpha=0.35, label="window (mean over seeds)")
        ax.step(m.index, m["upper"], where="post")
        _title(ax, row)
        ax.set_xlabel("epoch (curriculum step)")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("difficulty rank fraction (0 = easiest)")
    _finish(fig, path, _caption(t, budget, df, devices))


def lr_schedules(t, budget, by_cell, labels, devices, path, spec=None, **_):
    from engine.optim import lr_curve

    epochs, lr = spec.get("epochs", [100])[0], spec.get("lr", 0.1)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, cfg in spec["schedules"].items():
        ys = lr_curve(cfg, epochs, lr)
        ax.plot(range(1, epochs + 1), ys, label=f"{name}: {cfg}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=7)
    _finish(fig, path, f"{t.name} · the schedules as the engine computes them (no training)")


def superloss_surface(t, budget, by_cell, labels, devices, path, spec=None, **_):
    import torch

    from methods.superloss import sigma_star, superloss

    tau, lam = spec.get("tau", 0.0), spec.get("lam", 1.0)
    loss = torch.linspace(-2.0, 6.0, 401, dtype=torch.float64)  # l - tau from -2 to 6 (tau = 0)
    sig = torch.logspace(-2, 1, 301, dtype=torch.float64)
    L, S = torch.meshgrid(loss, sig, indexing="ij")
    conf = (L - tau) * S + lam * torch.log(S) ** 2
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    im = axes[0].pcolormesh(L.numpy(), S.numpy(), conf.clamp(max=8).numpy(), shading="auto", cmap="viridis")
    axes[0].plot(loss.numpy(), sigma_star(loss, tau, lam).numpy(), "w-", lw=2, label="sigma*(l)")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("input loss l (tau = 0)")
    axes[0].set_ylabel("confidence sigma")
    axes[0].legend(loc="upper right")
    fig.colorbar(im, ax=axes[0], label="(l - tau) sigma + lam log^2 sigma (clipped at 8)")
    axes[1].plot(loss.numpy(), superloss(loss, tau, lam).numpy(), label="SuperLoss SL(l)")
    axes[1].plot(loss.numpy(), (loss - tau).numpy(), "--", label="l - tau (the input loss)")
    axes[1].set_xlabel("input loss l (tau = 0)")
    axes[1].legend()
    _finish(fig, path, f"{t.name} · lam = {lam:g}, tau = {tau:g} · analytic (methods.superloss, no training)")


DRAW = {"loss_curves": loss_curves, "acc_curves": acc_curves, "class_sigma": class_sigma, "loss_groups": loss_groups, "dcd_window": dcd_window,
        "lr_schedules": lr_schedules, "superloss_surface": superloss_surface, "quartile_shares": quartile_shares, "noise_curves": noise_curves,
        "sigma_clean_noisy": sigma_clean_noisy, "loss_embedding": loss_embedding, "r_sweep": r_sweep}


def draw(kind, t, budget, by_cell, labels, out_dir, devices, spec=None, results=None) -> str | None:
    """Draw figure `kind` for one target and budget; returns its path, or None with no finished run."""
    from benchmarks.targets.loader import ANALYTIC_FIGURES

    if kind not in ANALYTIC_FIGURES and not any(r["status"] == "ok" for recs in by_cell.values() for r in recs):
        return None
    sns.set_theme(style="whitegrid", context="paper")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{budget}-{kind}.png")
    tmp = f"{path}.{os.getpid()}.tmp.png"
    if DRAW[kind](t, budget, by_cell, labels, devices, tmp, spec=spec or {}, results=results) is False:
        return None
    os.replace(tmp, path)  # atomic: two workers finishing together never leave a torn PNG
    return path
