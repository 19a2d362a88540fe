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
    for x, y, label in zip(neuron_r, feature_r, labels):
        if label in highlight:
            ax.scatter([x], [y], s=40, zorder=3)
            ax.annotate(label, (x, y), xytext=(4, -10), textcoords="offset points", fontsize=8)
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), aspect="equal", xlabel="best single MLP neuron: correlation",
           ylabel="best single SAE feature: correlation", title="every generated context")
    ax.legend(fontsize=8, loc="lower right")
    return fig
