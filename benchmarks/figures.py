"""Figures drawn from result JSONs (seaborn over a pandas long table); each names its budget, seeds and device.

- `loss_curves`: train CE and test loss per epoch, mean over seeds with a +-1 sd band (BLCL Fig. 8 view).
- `quartile_shares`: share of the summed training objective carried by each difficulty quartile per epoch,
  stacked, mean over seeds (BLCL Fig. 5/6; the top band is Fig. 9's alpha).
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

QUARTILES = ["q1", "q2", "q3", "q4"]
QLABELS = ["easiest quarter", "second", "third", "hardest quarter"]


def _caption(t, budget: str, df, devices: list[str]) -> str:
    seeds = ",".join(str(s) for s in sorted(df["seed"].unique()))
    return f"{t.name} · budget {budget} · seeds {seeds} · {'; '.join(devices)}"


def loss_curves(t, budget, df, devices, path):
    rows = list(dict.fromkeys(df["row"]))
    fig, axes = plt.subplots(1, len(rows), figsize=(6 * len(rows), 4.2), squeeze=False)
    long = df.melt(id_vars=["row", "variant", "seed", "epoch"], value_vars=["train_ce", "test_loss"],
                   var_name="split", value_name="loss")
    long["split"] = long["split"].map({"train_ce": "train (CE)", "test_loss": "test"})
    for ax, row in zip(axes[0], rows):
        sns.lineplot(data=long[long["row"] == row], x="epoch", y="loss", hue="variant", style="split",
                     errorbar="sd", markers=True, markersize=4, ax=ax)
        ax.set_title(row)
    fig.suptitle(_caption(t, budget, df, devices), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quartile_shares(t, budget, df, devices, path):
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
            ax.set_title(f"{row}: {variant}\n(quartiles ranked by {ranking})", fontsize=8)
            ax.set_xlabel("epoch")
            ax.set_ylim(0, 1)
        axes[i][0].set_ylabel("share of summed training loss")
    axes[0][-1].legend(loc="lower right", fontsize=7, framealpha=0.9)
    fig.suptitle(_caption(t, budget, df, devices), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


DRAW = {"loss_curves": loss_curves, "quartile_shares": quartile_shares}


def draw(kind, t, budget, by_cell, labels, out_dir, devices) -> str | None:
    """Draw figure `kind` for one target and budget; returns its path, or None with no finished run."""
    from .report import history_frame

    df = history_frame(by_cell, labels)
    if df.empty:
        return None
    sns.set_theme(style="whitegrid", context="paper")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{budget}-{kind}.png")
    tmp = f"{path}.{os.getpid()}.tmp.png"
    DRAW[kind](t, budget, df, devices, tmp)
    os.replace(tmp, path)  # atomic: two workers finishing together never leave a torn PNG
    return path
