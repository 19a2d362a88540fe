"""Figures of lesson 09 (beyond the paper): the SAE variants on the known features and on the transformer."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


VARIANT_COLORS = {"relu": "0.25", "topk": "tab:blue", "batchtopk": "tab:cyan", "jumprelu": "tab:orange",
                  "gated": "tab:green", "anthropic2024": "tab:red"}


def variants_scores(rows, metrics, bars=None):
    """Lesson 09's ground-truth table as bars: one panel per metric, one group of bars per dictionary size,
    one bar per architecture. rows: dicts with "architecture", "size" (a label) and each metric; bars:
    metric -> a dashed line to draw (a check's bar), over every group, or (value, [sizes]) over those only.
    An architecture not run at a size leaves its slot empty; the legend sits below the panels."""
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    archs = list(dict.fromkeys(r["architecture"] for r in rows))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.4), layout="constrained")
    width = 0.8 / len(archs)
    for ax, (key, title) in zip(np.atleast_1d(axes), metrics.items()):
        for i, arch in enumerate(archs):
            got = {r["size"]: r[key] for r in rows if r["architecture"] == arch}
            xs = [s for s in range(len(sizes)) if sizes[s] in got]
            ax.bar([x + (i - (len(archs) - 1) / 2) * width for x in xs], [got[sizes[x]] for x in xs], width,
                   color=VARIANT_COLORS.get(arch), label=arch)
        if bars and key in bars:
            value, where = bars[key] if isinstance(bars[key], tuple) else (bars[key], sizes)
            for s in (s for s in range(len(sizes)) if sizes[s] in where):
                ax.hlines(value, s - 0.45, s + 0.45, color="k", ls="--", lw=0.8)
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_title(title, fontsize=9)
    fig.legend(*np.atleast_1d(axes)[0].get_legend_handles_labels(), loc="outside lower center", ncols=len(archs),
               fontsize=8)
    return fig


def variants_frontier(points, reference=None):
    """Lesson 09's frontier: L0 (log) against loss recovered, one line per architecture through its sparsity
    settings, and beside it each point's share of latents firing on fewer than 1e-4 of held-out tokens.
    points: dicts with "architecture", "l0", "recovered", "rare"; reference: (l0, recovered, label), a
    marker for the paper's recipe trained at full length (lesson 06)."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for arch in dict.fromkeys(p["architecture"] for p in points):
        mine = sorted((p for p in points if p["architecture"] == arch), key=lambda p: p["l0"])
        style = dict(color=VARIANT_COLORS.get(arch), marker="o", lw=2.5 if arch == "relu" else 1.2,
                     ls="--" if arch == "relu" else "-")
        ax.plot([p["l0"] for p in mine], [p["recovered"] for p in mine], label=arch, **style)
        ax2.plot([p["l0"] for p in mine], [100 * p["rare"] for p in mine], label=arch, **style)
    if reference is not None:
        ax.plot(reference[0], reference[1], "k*", ms=12, label=reference[2])
    ax.set(xscale="log", xlabel="L0 (active latents per token, held out)", ylabel="loss recovered (vs zero-ablation)",
           title="sparsity vs loss recovered")
    ax2.set(xscale="log", xlabel="L0", ylabel="% of latents", title="latents with held-out density < 1e-4")
    ax.legend(fontsize=7)
    return fig
