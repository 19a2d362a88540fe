"""matplotlib figures for the lessons and the report. Each function takes plain arrays and returns a Figure;
saving is the caller's business (lesson.savefig). Nothing here computes anything a test relies on."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt  # with no screen, matplotlib picks the file-only Agg backend by itself
import numpy as np

FRACTIONS = {"1": 1.0, "3/4": 0.75, "2/3": 2 / 3, "1/2": 0.5, "2/5": 0.4, "3/8": 0.375}


def empty_panel(ax, why, clear=True):
    """Say on a panel why it is empty or nearly so (at smoke scale a context may have no bytes held out, or
    no feature), instead of leaving a blank a reader takes for a bug. clear: hide the panel's own ticks too
    (only its own: a y axis it shares keeps its ticks on the other panels)."""
    if clear:
        ax.tick_params(bottom=False, labelbottom=False, left=False, labelleft=False)
    ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.3",
            bbox=dict(boxstyle="round", facecolor="white", edgecolor="0.7"))


def feature_directions(Ws, titles, importance=None, groups=None):
    """One panel per W [2, feats]: each feature's direction in the 2-d hidden space as an arrow from the
    origin, labelled with its index (the picture of Elhage et al.'s introduction). importance [feats], or
    [panels, feats] for one per panel: darker for more important features. groups [feats] ints: colour
    features by group instead (e.g. pairs of correlated features)."""
    fig, axes = plt.subplots(1, len(Ws), figsize=(3.2 * len(Ws), 3.4))
    axes = np.atleast_1d(axes)
    for j, (ax, W, title) in enumerate(zip(axes, Ws, titles)):
        n = W.shape[1]
        if groups is not None:
            colors = plt.cm.tab10(np.asarray(groups) % 10)
        else:
            shade = np.ones((1, n)) if importance is None else np.atleast_2d(importance)
            shade = shade[min(j, len(shade) - 1)]  # one row for every panel, or a row per panel
            colors = plt.cm.viridis(0.85 - 0.7 * (shade - shade.min()) / max(np.ptp(shade), 1e-9))
        for f in range(n):
            ax.plot([0, W[0, f]], [0, W[1, f]], color=colors[f], lw=2)
            ax.plot(W[0, f], W[1, f], "o", color=colors[f], ms=6)
            if n <= 10:
                ax.annotate(str(f), (W[0, f], W[1, f]), xytext=(4, 4), textcoords="offset points", fontsize=8)
        lim = max(1.3, 1.1 * np.abs(W).max())
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[], title=title)
        ax.axhline(0, color="0.85", lw=0.5, zorder=0)
        ax.axvline(0, color="0.85", lw=0.5, zorder=0)
    fig.suptitle("feature directions W_f in the hidden plane" +
                 (" (one colour per group)" if groups is not None else " (darker = more important)"))
    return fig


def gram_and_norms(Ws, titles, superposition, norms):
    """Top row: W^T W heatmaps (interference between features); bottom row: each feature's norm, coloured
    by how much it shares its dimension with others (Elhage et al.'s bar plots)."""
    k = len(Ws)
    fig, axes = plt.subplots(2, k, figsize=(3.2 * k, 6))
    axes = np.asarray(axes).reshape(2, k)
    for j, (W, title) in enumerate(zip(Ws, titles)):
        G = W.T @ W
        lim = max(1e-9, np.abs(G).max())
        axes[0, j].imshow(G, cmap="RdBu", vmin=-lim, vmax=lim)
        axes[0, j].set(title=f"W^T W, {title}", xticks=[], yticks=[])
        sup = np.clip(superposition[j], 0, 1)
        axes[1, j].barh(np.arange(len(norms[j])), norms[j], color=plt.cm.plasma(sup))
        axes[1, j].invert_yaxis()
        axes[1, j].set(xlim=(0, 1.3), xlabel="||W_f||", ylabel="feature (by importance)" if j == 0 else None)
    fig.colorbar(plt.cm.ScalarMappable(cmap="plasma"), ax=axes[1, :].tolist(), label="superposition (clipped at 1)")
    return fig


def phase_diagram(classes, importance, density, names):
    """classes [density, importance] ints indexing `names`; axes log-scaled like Elhage et al.'s figure."""
    cmap = matplotlib.colors.ListedColormap(["#bbbbbb", "#4c72b0", "#dd8452", "#c44e52"][: len(names)])
    fig, ax = plt.subplots(figsize=(6, 4.8))
    ax.pcolormesh(importance, density, classes, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, shading="nearest")
    ax.set(xscale="log", yscale="log", xlabel="relative importance of feature 2",
           ylabel="feature density 1 - S  (dense at the top)", title="n=2 features in m=1 dimension")
    handles = [matplotlib.patches.Patch(color=cmap(i), label=n) for i, n in enumerate(names)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


def dimensionality(inv_density, dims_per_feature, feature_dims, d_hidden, n_features):
    """Left: D* = m / ||W||_F^2 against 1 / (1 - S), with the sticky values 1 and 1/2 marked. Right: each
    feature's dimensionality D_f (a dot per feature, per model) with the fractions of Elhage et al."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
    a.plot(inv_density, dims_per_feature, "o-", color="k")
    for y in (1, 0.5):
        a.axhline(y, color="tab:red", ls=":", lw=1)
    a.set(xscale="log", xlabel="1 / (1 - S)", ylabel="dimensions per feature  m / ||W||_F^2",
          title=f"n={n_features} features, m={d_hidden} dims: dimensions per feature D*")
    xs = np.repeat(inv_density, feature_dims.shape[1])
    b.scatter(xs * np.exp(np.random.default_rng(0).uniform(-0.04, 0.04, xs.size)), feature_dims.ravel(),
              s=6, alpha=0.5, color="tab:blue")
    for label, y in FRACTIONS.items():
        b.axhline(y, color="0.6", ls=":", lw=0.8)
        b.text(inv_density[-1] * 1.08, y, label, va="center", fontsize=8)
    b.set(xscale="log", ylim=(-0.05, 1.15), xlabel="1 / (1 - S)", ylabel="feature dimensionality D_f",
          title="per-feature dimensionality D_f (dotted: simple fractions)")
    return fig


def density_histogram(counts, edges, n_dead, resolution=None):
    """Bars of log10 feature density (from metrics.log_density_histogram); dead latents noted in the
    title; `resolution` (1 / number of tokens) marked as the smallest density the data can show."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:blue", edgecolor="white")
    if resolution:
        ax.axvline(np.log10(resolution), color="tab:red", ls=":", label="1 / tokens evaluated")
        ax.legend()
    ax.set(xlabel="log10 feature density (fraction of tokens a latent fires on)", ylabel="latents",
           title=f"feature density ({n_dead} dead latents not shown)")
    return fig


def features_vs_neurons_scatter(neuron_r, feature_r, labels, highlight=()):
    """One dot per label: the best neuron's correlation with it (x) against the best feature's (y), with
    the diagonal; the labels in `highlight` are drawn in colour and named, the rest in grey."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    named = np.isin(labels, list(highlight))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", zorder=0, label="feature = neuron")
    ax.scatter(np.asarray(neuron_r)[~named], np.asarray(feature_r)[~named], s=18, color="0.55",
               label=f"{int((~named).sum())} languages of the family")
    for x, y, label in zip(neuron_r, feature_r, labels):
        if label in highlight:
            ax.scatter([x], [y], s=40, zorder=3)
            ax.annotate(label, (x, y), xytext=(4, -10), textcoords="offset points", fontsize=8)
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), aspect="equal", xlabel="best single MLP neuron: correlation",
           ylabel="best single SAE feature: correlation", title="every generated context")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def sweep_tradeoff(rows, steps, n_features, bar=0.95):
    """The L1 x dictionary-size trade-off of lesson 03's sweep (tinymono/sweep.py), one line per dictionary
    size against the L1 coefficient: MMCS against the true features, dead latents, L0, and MMCS against
    the next larger dictionary at the same L1 (the signal available without ground truth). rows: dicts
    with l1_coefficient, ratio and, for a finished point, mmcs, dead, l0 and (optionally) vs_larger."""
    rows = [r for r in rows if r.get("mmcs") is not None]
    ratios = sorted({r["ratio"] for r in rows})
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6), layout="constrained")
    panels = (("mmcs", "MMCS vs the true features", 1), ("dead", "dead latents (%)", 100),
              ("l0", "L0 (active latents)", 1), ("vs_larger", "MMCS vs the next larger dictionary", 1))
    colors = plt.cm.viridis(np.linspace(0, 0.85, max(len(ratios), 1)))
    for ax, (key, title, scale) in zip(axes, panels):
        for ratio, color in zip(ratios, colors):
            pts = sorted((r["l1_coefficient"], scale * r[key]) for r in rows
                         if r["ratio"] == ratio and r.get(key) is not None)
            if pts:
                ax.plot(*zip(*pts), "o-", color=color, label=f"{ratio:g}x ({int(ratio * n_features)})")
        ax.set(xscale="log", xlabel="L1 coefficient", title=title)
        if key != "l0":
            ax.set_ylim(top=1.02 * scale)
        if key == "dead":
            ax.set_ylim(bottom=-2)
        if not ax.lines:
            empty_panel(ax, "needs two dictionary sizes\nat one L1", clear=False)
    axes[3].set_ylabel("each size's rows, found in the next size's")
    axes[0].axhline(bar, color="gray", ls="--", lw=1, label=f"bar {bar}")
    axes[0].legend(fontsize=7, title="dictionary (latents)", title_fontsize=7)
    fig.suptitle(f"L1 coefficient x dictionary size, every point trained {steps:,} steps", fontsize=10)
    return fig


VARIANT_COLORS = {"relu": "0.25", "topk": "tab:blue", "batchtopk": "tab:cyan", "jumprelu": "tab:orange",
                  "gated": "tab:green", "anthropic2024": "tab:red"}


def variants_scores(rows, metrics, bars=None):
    """Lesson 09's ground-truth table as bars: one panel per metric, one group of bars per dictionary size,
    one bar per architecture. rows: dicts with "architecture", "size" (a label) and each metric; bars:
    metric -> a dashed line to draw (a check's bar)."""
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
            ax.axhline(bars[key], color="k", ls="--", lw=0.8)
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_title(title, fontsize=9)
    np.atleast_1d(axes)[0].legend(fontsize=7)
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
