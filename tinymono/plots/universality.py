"""Figures of lesson 10: features and neurons matched across two transformers, the real model's context
features against the shuffled-weights model's."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def best_match_histograms(feature_r, neuron_r, paper=(0.72, 0.46)):
    """The distribution of best-match correlations: each feature of model A against every feature of model
    B (feature_r [alive features of A]), each neuron of A against every neuron of B (neuron_r), as
    histograms normalised to the share of units (features filled, neurons as an outline, so that where they
    overlap both stay readable), with each median (solid) and the paper's (dashed)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = np.linspace(0, 1, 41)
    for r, name, colour, ref, style in ((feature_r, "SAE features", "tab:orange", paper[0],
                                         {"histtype": "stepfilled", "alpha": 0.55}),
                                        (neuron_r, "MLP neurons", "tab:blue", paper[1], {"histtype": "step", "lw": 2})):
        r = np.asarray(r, dtype=float)
        weights = np.full(len(r), 1 / max(len(r), 1))
        ax.hist(np.clip(r, 0, 1), bins=bins, weights=weights, color=colour,
                label=f"{name} ({len(r)}): median {np.median(r) if len(r) else np.nan:.2f}", **style)
        if len(r):
            ax.axvline(np.median(r), color=colour, lw=2)
        ax.axvline(ref, color=colour, lw=1.2, ls="--", label=f"the paper's median for {name.split()[1]} ({ref:.2f})")
    ax.set(xlabel="best correlation with any unit of the other model", ylabel="share of units",
           title="how universal are features and neurons? (model A against model B)")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # room for the legend above the tallest bins
    ax.legend(fontsize=8, loc="upper left")
    return fig


def real_vs_shuffled(labels, real_r, second_r, shuffled_r):
    """Three bars per context: the correlation with the context label of the best feature of the trained
    model (lesson 07's SAE), of the second trained model, and of the shuffled-weights model."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    xs = np.arange(len(labels))
    ax.bar(xs - 0.27, real_r, 0.27, label="model A (lesson 07)")
    ax.bar(xs, second_r, 0.27, label="model B (another seed)")
    ax.bar(xs + 0.27, shuffled_r, 0.27, color="0.55", label="model A, weights shuffled")
    ax.set(xticks=xs, xticklabels=labels, ylabel="best feature's correlation\nwith the context", ylim=(0, 1.25),
           title="which context features need a trained model?")
    ax.legend(fontsize=8, loc="upper right", ncol=3)
    return fig
