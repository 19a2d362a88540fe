"""Figures of the toy world (lessons 01-03): superposition in the toy model, the SAE on its activations,
and the SAE against Sharkey et al.'s known features, the sweep included."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt  # with no screen, matplotlib picks the file-only Agg backend by itself
import numpy as np

from tinymono.plots.panel import empty_panel

FRACTIONS = {"1": 1.0, "3/4": 0.75, "2/3": 2 / 3, "1/2": 0.5, "2/5": 0.4, "3/8": 0.375}


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
        small = [f for f in range(n) if np.linalg.norm(W[:, f]) < 0.3]  # near the origin: one label for them all
        for f in range(n):
            ax.plot([0, W[0, f]], [0, W[1, f]], color=colors[f], lw=2)
            ax.plot(W[0, f], W[1, f], "o", color=colors[f], ms=6)
            if n <= 10 and f not in small:
                ax.annotate(str(f), (W[0, f], W[1, f]), xytext=(4, 4), textcoords="offset points", fontsize=8)
        if n <= 10 and small:
            ax.text(0.03, 0.03, f"{', '.join(map(str, small))}: norm < 0.3", transform=ax.transAxes, fontsize=8)
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
    lim = max(1e-9, max(np.abs(W.T @ W).max() for W in Ws))  # one colour scale for the row
    for j, (W, title) in enumerate(zip(Ws, titles)):
        G = W.T @ W
        im = axes[0, j].imshow(G, cmap="RdBu", vmin=-lim, vmax=lim)
        ticks = range(0, G.shape[0], max(1, G.shape[0] // 5))
        axes[0, j].set(xticks=ticks, yticks=ticks, xlabel="feature")
        axes[0, j].set_title(f"W^T W, {title}", fontsize=9)
        sup = np.clip(superposition[j], 0, 1)
        axes[1, j].barh(np.arange(len(norms[j])), norms[j], color=plt.cm.plasma(sup))
        axes[1, j].invert_yaxis()
        axes[1, j].set(xlim=(0, 1.3), xlabel="||W_f||", ylabel="feature (by importance)" if j == 0 else None)
    fig.colorbar(im, ax=axes[0, :].tolist(), label="W_i . W_j (red: opposite directions)")
    fig.colorbar(plt.cm.ScalarMappable(cmap="plasma"), ax=axes[1, :].tolist(), label="superposition (clipped at 1)")
    return fig


def _log_edges(centres):
    """Cell edges for points on a logarithmic grid: geometric midpoints, and half a step beyond each end (so
    that every cell is as wide as its neighbours on log axes)."""
    logs = np.log(np.asarray(centres, dtype=float))
    step = np.diff(logs) if len(logs) > 1 else np.array([1.0])
    return np.exp(np.r_[logs[0] - step[0] / 2, (logs[:-1] + logs[1:]) / 2, logs[-1] + step[-1] / 2])


def phase_diagram(classes, importance, density, names):
    """classes [density, importance] ints indexing `names`; axes log-scaled like Elhage et al.'s figure."""
    cmap = matplotlib.colors.ListedColormap(["#bbbbbb", "#4c72b0", "#dd8452", "#c44e52"][: len(names)])
    fig, ax = plt.subplots(figsize=(6, 4.8))
    ax.pcolormesh(_log_edges(importance), _log_edges(density), classes, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5,
                  shading="flat")
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
    nudge = {"2/5": 0.015, "3/8": -0.015}  # close together: their labels apart (the lines stay where they are)
    for label, y in FRACTIONS.items():
        b.axhline(y, color="0.6", ls=":", lw=0.8)
        b.text(1.01, y + nudge.get(label, 0), label, va="center", fontsize=8, transform=b.get_yaxis_transform())
    b.set(xscale="log", ylim=(-0.05, 1.15), xlabel="1 / (1 - S)", ylabel="feature dimensionality D_f",
          title="per-feature dimensionality D_f (dotted: simple fractions)")
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


def toy_activations(h, W):
    """Lesson 02's data: the hidden activations h [n, 2] of the toy model as dots, and its feature directions
    (the columns of W [2, feats]) as numbered arrows."""
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter(*h.T, s=3, alpha=0.3)
    for i, v in enumerate(W.T):
        ax.annotate("", v, (0, 0), arrowprops=dict(arrowstyle="->", color="k"))
        ax.text(*(1.1 * v), str(i))
    ax.set_aspect("equal")
    ax.set_title("toy hidden activations h = W x and the feature directions")
    return fig


def gradcheck_errors(errors, budget):
    """One bar per checked gradient ({name: max relative error against central differences}), log scale,
    with the budget as a red line."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(list(errors), [max(v, 1e-17) for v in errors.values()])
    ax.axvline(budget, color="red", label="budget")
    ax.set_xscale("log")
    ax.set_xlabel("max relative error vs central differences")
    ax.legend()
    return fig


def training_runs(histories, resample_steps=()):
    """Loss (log scale) and dead latents against the step, one line per run ({name: the training loop's
    history}); red lines at the resampling steps."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for name, history in histories.items():
        axes[0].semilogy(history["step"], history["loss"], label=name)
        axes[1].plot(history["step"], history["dead"], label=name)
    for s in resample_steps:
        axes[1].axvline(s, color="red", alpha=0.15)
    axes[0].set_title("loss")
    axes[1].set_title("dead latents (red: resampling)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
    return fig


def decoder_rows_vs_true(true_dirs, decoders, dead):
    """One 2-d panel per SAE: the true feature directions (grey, true_dirs [feats, 2]) and the SAE's decoder
    rows ({name: W_dec [latents, 2]}), the (nearly) dead latents ({name: [latents] bool}) red and dashed."""
    fig, axes = plt.subplots(1, len(decoders), figsize=(4.5 * len(decoders), 4.4))
    for ax, (name, W_dec) in zip(np.atleast_1d(axes), decoders.items()):
        for i, v in enumerate(true_dirs):
            ax.annotate("", v, (0, 0), arrowprops=dict(arrowstyle="->", color="0.6", lw=3))
            ax.text(*(1.12 * v), f"f{i}", color="0.4")
        for j, v in enumerate(W_dec):
            off = dead[name][j]
            ax.annotate("", v, (0, 0), arrowprops=dict(arrowstyle="->", color="red" if off else "C0",
                                                       ls="--" if off else "-"))
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
        ax.set_aspect("equal")
        ax.set_title(name)
    fig.suptitle("grey: true features; blue: decoder rows; red dashed: (nearly) dead latents")
    return fig


def latent_responses(responses):
    """One heat map per SAE ({name: [latents, feats]}): each latent's activation when one true feature is
    present alone."""
    fig, axes = plt.subplots(1, len(responses), figsize=(3.4 * len(responses), 3.4), layout="constrained")
    for ax, (name, response) in zip(np.atleast_1d(axes), responses.items()):
        im = ax.imshow(response, cmap="viridis")
        ax.set_xlabel("true feature")
        ax.set_ylabel("latent")
        ax.set_title(name, fontsize=10)
        fig.colorbar(im, ax=ax)
    fig.suptitle("each latent's response to each true feature alone", fontsize=11)
    return fig


def gt_training(history, expected_active, resample_steps=()):
    """Lesson 03's main SAE in training: the loss terms (log scale), L0 against the true number of features
    per sample, and dead latents with the resampling steps in red."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    axes[0].semilogy(history["step"], history["mse"], label="mse")
    axes[0].semilogy(history["step"], history["l1"], label="l1 term")
    axes[0].set_title("loss terms")
    axes[0].legend()
    axes[1].plot(history["step"], history["l0"])
    axes[1].axhline(expected_active, color="gray", ls="--", label="true features per sample")
    axes[1].set_title("L0 (active latents per sample)")
    axes[1].legend()
    axes[2].plot(history["step"], history["dead"])
    for s in resample_steps:
        axes[2].axvline(s, color="red", alpha=0.2)
    axes[2].set_title("dead latents (red: resampling)")
    for ax in axes:
        ax.set_xlabel("step")
    return fig


def best_cosines(best, matched, mmcs, recovered):
    """Each true feature's best cosine with a decoder row (best [G], by frequency rank) with the 0.9 line, and
    the histograms of best (MMCS) and of the one-to-one matching's cosines (matched), as 1 - cosine on a log
    axis: nearly all of them sit above 0.99, where linear bins would put them in one or two bars."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    axes[0].plot(best, ".", ms=3)
    axes[0].axhline(0.9, color="gray", ls="--")
    axes[0].set_xlabel("true feature (0 = most frequent)")
    axes[0].set_ylabel("best cosine with a decoder row")
    axes[0].set_title(f"MMCS {mmcs:.3f}, {recovered:.1%} at cos >= 0.9")
    floor = 1e-5  # a cosine of exactly 1 (up to rounding) is drawn in the first bin
    gaps = [np.clip(1 - np.asarray(c, float), floor, 2) for c in (best, matched)]
    top = max(1.0, max(g.max() for g in gaps))
    axes[1].hist(gaps, bins=np.geomspace(floor, top, 41), label=["max (MMCS)", "one-to-one"])
    axes[1].axvline(0.1, color="gray", ls="--", label="cos 0.9")
    axes[1].set(xscale="log", yscale="log", title="best (MMCS) and one-to-one matched cosines",
                xlabel="1 - cosine with a decoder row (log; left: closer)", ylabel="true features (log scale)")
    axes[1].legend(fontsize=8)
    return fig


def density_vs_true(counts, edges, n_dead, true_p):
    """The latents' log10 firing densities (counts, edges from metrics.log_density_histogram) against the
    true features' firing probabilities true_p [G], on the same bins."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.stairs(counts, edges, fill=True, alpha=0.6, label="SAE latents")
    true_counts, _ = np.histogram(np.log10(true_p), bins=edges)
    ax.stairs(true_counts, edges, color="k", label="true features")
    ax.set_xlabel("log10 firing density")
    ax.set_ylabel("latents / true features")
    ax.set_title(f"feature density ({n_dead} latents never fired)")
    ax.legend()
    return fig


def sweep_heatmaps(mmcs, dead, vs_larger, ratios, l1s):
    """Lesson 03's short sweep as three heat maps over L1 (rows) x dictionary size (columns), each [L1, sizes]:
    MMCS against the true features, dead latents (fraction, shown in %) and MMCS against the next larger
    dictionary (NaN where there is none)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6), layout="constrained")
    for ax, data, title, lims in ((axes[0], mmcs, "MMCS vs ground truth", (0, 1)),
                                  (axes[1], 100 * dead, "dead latents (%)", (0, 100)),
                                  (axes[2], vs_larger, "MMCS vs the next larger dictionary", (0, 1))):
        im = ax.imshow(data, cmap="viridis", aspect="auto", vmin=lims[0], vmax=lims[1])
        ax.set_xticks(range(len(ratios)), [f"{r}x" for r in ratios])
        ax.set_yticks(range(len(l1s)), [f"{l1:g}" for l1 in l1s])
        ax.set_xlabel("dictionary size / true features")
        ax.set_title(title)
        if ax is axes[0]:
            ax.set_ylabel("l1 coefficient")
        for (i, j), v in np.ndenumerate(data):
            bright = np.isfinite(v) and (v - lims[0]) / (lims[1] - lims[0]) > 0.6  # viridis turns yellow
            ax.text(j, i, (f"{v:.2f}" if "MMCS" in title else f"{v:.0f}") if np.isfinite(v) else "n/a\n(largest)"
                    if ax is axes[2] else "n/a", ha="center", va="center",
                    color=("k" if bright else "w") if np.isfinite(v) else "0.3", fontsize=None if np.isfinite(v) else 8)
        fig.colorbar(im, ax=ax)
    return fig


def best_cosines_compared(runs):
    """Histograms (log counts) of the best cosine per true feature, one per run ({name: [G]})."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.hist(list(runs.values()), bins=40, label=list(runs))
    ax.set_yscale("log")
    ax.set_xlabel("best cosine per true feature")
    ax.set_ylabel("true features (log scale)")
    ax.legend()
    return fig
