"""Figures of the language model (lessons 04-08): the transformer, its SAE, features against neurons and
labels, steering and splitting."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from tinymono.plots.panel import empty_panel


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
    named_seen = 0
    for x, y, label in zip(neuron_r, feature_r, labels):
        if label in highlight:
            ax.scatter([x], [y], s=40, zorder=3)
            # labels alternately below right and above left of their dots, so that two close dots keep both
            above = named_seen % 2 == 1
            ax.annotate(label, (x, y), xytext=(-5, 6) if above else (5, -11), textcoords="offset points", fontsize=8,
                        ha="right" if above else "left")
            named_seen += 1
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), aspect="equal", xlabel="best single MLP neuron: correlation",
           ylabel="best single SAE feature: correlation", title="every generated context")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def attention_pieces(mask, scores, pattern):
    """Causal attention as three [T, T] pictures (query rows, key columns): the mask, one head's raw scores
    and its pattern, softmax of the masked scores."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), layout="constrained")
    reach = float(np.abs(scores).max()) or 1.0  # white at a score of 0: red positive, blue negative
    panels = [(mask, "causal mask (key <= query)", "Greys", {}),
              (scores, "head 0 scores q.k/sqrt(d_head)", "RdBu_r", {"vmin": -reach, "vmax": reach}),
              (pattern, "pattern = softmax(masked scores)", "viridis", {})]
    for ax, (img, title, cmap, limits) in zip(axes, panels):
        im = ax.imshow(img, cmap=cmap, **limits)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def memorising(bits, pattern):
    """Bits per byte per step (log scale) while a model memorises one batch, and its attention pattern
    [T, T] (mean over heads) on one window."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax1.semilogy(bits)
    ax1.set_xlabel("step")
    ax1.set_ylabel("bits per byte")
    ax1.set_title("memorising one batch")
    im = ax2.imshow(pattern, cmap="viridis", vmin=0)
    fig.colorbar(im, ax=ax2, shrink=0.85, label="attention weight")
    ax2.set_title("the trained model's attention (mean of heads), one window", fontsize=9)
    ax2.set_xlabel("key position")
    ax2.set_ylabel("query position")
    return fig


def transformer_loss_curve(history, unigram, bigram):
    """Training and validation bits per byte against the step (the training loop's history), with the
    unigram and bigram models' bits per byte as lines."""
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = history["step"]
    ax.plot(steps, history["bpb"], label="training batches", marker="o", ms=2)
    ax.plot(steps, history["val_bpb"], label="16 validation windows", marker="o", ms=2)
    ax.axhline(unigram, color="grey", ls=":", label=f"unigram ({unigram:.2f})")
    ax.axhline(bigram, color="grey", ls="--", label=f"bigram ({bigram:.2f})")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per byte")
    ax.set_ylim(0, 9)
    ax.legend()
    ax.set_title("training the one-layer transformer")
    return fig


def bits_per_label(labels, unigram, bigram, model, floors):
    """Four bars per label: the unigram, bigram and transformer's validation bits per byte, and the entropy
    floor where there is one (each a {label: bits} dict; a missing label is left blank)."""
    xs = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(xs - 0.3, [unigram.get(k, np.nan) for k in labels], 0.2, label="unigram", color="#cccccc")
    ax.bar(xs - 0.1, [bigram.get(k, np.nan) for k in labels], 0.2, label="bigram", color="#888888")
    ax.bar(xs + 0.1, [model[k] for k in labels], 0.2, label="transformer", color="C0")
    ax.bar(xs + 0.3, [floors.get(k, np.nan) for k in labels], 0.2, label="entropy floor", color="C2")
    ax.set_xticks(xs, labels)
    ax.set_ylabel("validation bits per byte")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # room for the legend above the tallest bars
    ax.legend(ncols=4, fontsize=8)
    return fig


def over_floor(model_ratio, bigram_ratio, bar):
    """Histograms over the languages of the family: bits per byte over the entropy floor, for the transformer
    and the bigram model, with the check's bar on the median."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    both = np.concatenate([np.asarray(model_ratio, float), np.asarray(bigram_ratio, float)])
    bins = np.linspace(min(1.0, both.min(initial=1.0)), max(1.6, both.max(initial=1.6)), 40)  # every language drawn
    ax.hist(bigram_ratio, bins, color="#888888", alpha=0.6, label="bigram")
    ax.hist(model_ratio, bins, color="C0", alpha=0.6, label="transformer")
    ax.axvline(bar, color="k", ls=":", label=f"the check: median <= {bar:g}")
    if len(model_ratio):
        median = np.median(model_ratio)
        ax.axvline(median, color="C0", lw=1.5, label=f"transformer's median {median:.3f}")
    ax.set(xlabel="validation bits per byte / entropy floor", ylabel="languages",
           title=f"the family's {len(model_ratio)} languages")
    ax.legend(fontsize=8)
    return fig


def sae_training(history, resample_steps=(), resampled=()):
    """The SAE on the transformer in training: reconstruction MSE, L0 (log scales) and dead latents against
    the step, the resampling steps in red; `resampled` ((step, number of latents) per resampling) adds, on
    the third panel, how many latents each resampling took, which counts the rare latents as well."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), layout="constrained")
    panels = (("mse", "reconstruction MSE", "squared error per element", "log"),
              ("l0", "L0 (latents per token)", "active latents", "log"),
              ("dead", "dead latents (silent for the last 2% of steps)", "latents", "linear"))
    for ax, (key, title, ylabel, scale) in zip(axes, panels):
        ax.plot(history["step"], history[key], label="dead at the step" if key == "dead" else None)
        ax.set(xlabel="step", title=title, ylabel=ylabel, yscale=scale)
    for ax in axes:
        for s in resample_steps:
            ax.axvline(s, color="tab:red", lw=0.5, alpha=0.4)
    if len(resampled):
        steps, counts = np.asarray(resampled).reshape(-1, 2).T
        axes[2].plot(steps, counts, "v", color="tab:red", ms=6, label="resampled at the red line")
        axes[2].set_ylim(bottom=0)
        axes[2].legend(fontsize=8, loc="upper left")
    return fig


def features_vs_neurons_bars(labels, feature_r, group_r, neuron_r, paper_r):
    """Three bars per label: the correlation of the best SAE feature, the best group of features (NaN: none)
    and the best single neuron with it; black ticks at the paper's best feature ({label: r}, where it
    gives one)."""
    fig, ax = plt.subplots(figsize=(9, 3.8))
    xs = np.arange(len(labels))
    ax.bar(xs - 0.27, feature_r, 0.27, label="best SAE feature")
    ax.bar(xs, group_r, 0.27, label="best group of <= 3 features")
    ax.bar(xs + 0.27, neuron_r, 0.27, label="best single neuron")
    ax.scatter([xs[i] - 0.27 for i, l in enumerate(labels) if l in paper_r],
               [paper_r[l] for l in labels if l in paper_r], marker="_", s=300, color="k", zorder=3,
               label="paper's best feature")
    ax.set(xticks=xs, xticklabels=labels, ylabel="correlation with the label", ylim=(0, 1.3),
           title="which units track each context?")
    for i in np.flatnonzero(np.isnan(np.asarray(group_r, dtype=float))):
        ax.text(xs[i], 0.02, "no group", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    return fig


def context_feature_histograms(panels):
    """One panel per context ({label: (unit, edges [K + 1], inside [K], outside [K]), or None when the context
    has no held-out bytes}): the feature's nonzero activations on the context's own bytes (orange) and on all
    other bytes (grey), two outlines on one log axis, not stacked (a stack on a log axis draws neither count
    at its size)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), sharey=True, layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, (label, panel) in zip(axes, panels.items()):
        if panel is None:  # possible at smoke scale: too little held-out text
            empty_panel(ax, f"no {label} bytes in the\nheld-out text at this scale:\nno feature to show")
            continue
        u, edges, inside, outside = panel
        ax.stairs(inside, edges, fill=True, color="tab:orange", alpha=0.45, label=label)
        ax.stairs(inside, edges, color="tab:orange", lw=1.5)
        ax.stairs(outside, edges, color="0.25", lw=1.5, label="other contexts")
        ax.set(yscale="log", title=f"{label}: feature {u}")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("tokens (nonzero activations)")
    fig.supxlabel("activation", fontsize=10)
    return fig


def pinned_sampling(labels, plain, pinned):
    """Two bars per context: the share of the bytes the model writes that its recogniser accepts, with
    nothing pinned and with the context's features pinned (each [len(labels)])."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    xs = np.arange(len(labels))
    for dx, shares, color, name in ((-0.2, plain, "0.6", "nothing pinned"),
                                    (0.2, pinned, "tab:orange", "context's features pinned")):
        bars = ax.bar(xs + dx, shares, 0.4, color=color, label=name)
        ax.bar_label(bars, fmt="{:.0%}", fontsize=7)
    ax.set(xticks=xs, xticklabels=labels, ylim=(0, 1), ylabel="share of written bytes in the context",
           title="pinned sampling from Python and English prompts")
    ax.legend(fontsize=8)
    if not (np.any(plain) or np.any(pinned)):
        empty_panel(ax, "the model wrote no byte any recogniser accepts:\nit has not learned these contexts "
                    "(expected at smoke scale)", clear=False)
    return fig


def feature_split_by_base(share, children, d_sae, small_d_sae, r_parent, cos=None, on_dna=None):
    """The DNA feature of the small dictionary split in the large one: for each of its nearest features
    (children, rows) the share of its activation mass on each base read (share [children, 4], A C G T). Each
    row is labelled with its decoder cosine to the parent and its share of mass on DNA's bytes (cos, on_dna
    [children], when given), so that a neighbour that is no DNA feature reads as one. A parent correlating
    below 0.3 with DNA is no DNA feature, and the panel says so."""
    fig, ax = plt.subplots(figsize=(5.6, 3.4), layout="constrained")
    im = ax.imshow(share, cmap="Oranges", vmin=0, vmax=1)
    notes = [", ".join(([f"cos {cos[i]:.2f}"] if cos is not None else [])
                       + ([f"{on_dna[i]:.0%} DNA"] if on_dna is not None else [])) for i in range(len(children))]
    ax.set(xticks=range(4), xticklabels=list("ACGT"), yticks=range(len(children)),
           yticklabels=[f"{c} ({note})" if note else str(c) for c, note in zip(children, notes)],
           xlabel="byte read", ylabel=f"feature of {d_sae}",
           title=f"DNA's feature of {small_d_sae}: its nearest {d_sae}" if r_parent >= 0.3
           else f"no DNA feature of {small_d_sae}: its best's neighbours")
    fig.colorbar(im, ax=ax, label="share of activation mass")
    if r_parent < 0.3:
        empty_panel(ax, f"no DNA feature among the {small_d_sae}\n(best r {r_parent:.2f}): these rows "
                    "are\nits nearest, not its family", clear=False)
    return fig
