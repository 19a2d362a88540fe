"""Figures of lesson 09 (beyond the paper): the SAE variants on the known features and on the transformer."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


VARIANT_COLORS = {"relu": "0.25", "topk": "tab:blue", "batchtopk": "tab:cyan", "jumprelu": "tab:orange",
                  "gated": "tab:green", "anthropic2024": "tab:red"}


def variants_scores(rows, metrics, bars=None, zoom=()):
    """Lesson 09's ground-truth table as bars: one panel per metric, one group of bars per dictionary size,
    one bar per architecture. rows: dicts with "architecture", "size" (a label) and each metric; bars:
    metric -> a dashed line to draw (a check's bar), over every group, or (value, [sizes]) over those only;
    zoom: metrics whose axis starts just below their smallest value or bar instead of at 0, where every
    value sits near 1 and the differences the checks read would not show (the title says so).
    An architecture not run at a size leaves its slot empty; the legend takes the last slot of the grid."""
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    archs = list(dict.fromkeys(r["architecture"] for r in rows))
    ncols = 3
    nrows = -(-(len(metrics) + 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), layout="constrained", squeeze=False)
    axes = axes.ravel()
    width = 0.8 / len(archs)
    for ax, (key, title) in zip(axes, metrics.items()):
        for i, arch in enumerate(archs):
            got = {r["size"]: r[key] for r in rows if r["architecture"] == arch}
            xs = [s for s in range(len(sizes)) if sizes[s] in got]
            ax.bar([x + (i - (len(archs) - 1) / 2) * width for x in xs], [got[sizes[x]] for x in xs], width,
                   color=VARIANT_COLORS.get(arch), label=arch)
        lines = []
        if bars and key in bars:
            value, where = bars[key] if isinstance(bars[key], tuple) else (bars[key], sizes)
            lines = [value]
            for s in (s for s in range(len(sizes)) if sizes[s] in where):
                ax.hlines(value, s - 0.45, s + 0.45, color="k", ls="--", lw=1.2, zorder=3)
        if key in zoom:
            values = [r[key] for r in rows if np.isfinite(r[key])] + lines
            lo, hi = min(values), max(values)
            pad = max(0.15 * (hi - lo), 0.002)
            ax.set_ylim(lo - pad, hi + pad)
            title += " (axis zoomed)"
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_title(title, fontsize=10)
    for ax in axes[len(metrics):]:
        ax.axis("off")
    axes[-1].legend(*axes[0].get_legend_handles_labels(), loc="center", fontsize=9, title="architecture")
    return fig


def variants_frontier(points, reference=None):
    """Lesson 09's frontier: L0 (log) against loss recovered, one line per architecture through its sparsity
    settings, and beside it each point's share of latents firing on fewer than 1e-4 of held-out tokens.
    points: dicts with "architecture", "l0", "recovered", "rare"; reference: (l0, recovered, label[, rare]),
    a marker for the paper's recipe trained at full length (lesson 06), on the second panel too when its
    share of rare latents is given."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for arch in dict.fromkeys(p["architecture"] for p in points):
        mine = sorted((p for p in points if p["architecture"] == arch), key=lambda p: p["l0"])
        style = dict(color=VARIANT_COLORS.get(arch), marker="o", lw=2.5 if arch == "relu" else 1.2,
                     ls="--" if arch == "relu" else "-")
        ax.plot([p["l0"] for p in mine], [p["recovered"] for p in mine], label=arch, **style)
        ax2.plot([p["l0"] for p in mine], [100 * p["rare"] for p in mine], label=arch, **style)
    if reference is not None:
        ax.plot(reference[0], reference[1], "k*", ms=12, label=reference[2])
        if len(reference) > 3:
            ax2.plot(reference[0], 100 * reference[3], "k*", ms=12, label=reference[2])
    ax.set(xscale="log", xlabel="L0 (active latents per token, held out)", ylabel="loss recovered (vs zero-ablation)",
           title="sparsity vs loss recovered")
    ax2.set(xscale="log", xlabel="L0", ylabel="% of latents", title="latents with held-out density < 1e-4")
    ax.legend(fontsize=7)
    return fig
