"""The figure of `python -m tinymono bench scaling`: how the SAE step and the transformer's step grow."""
from __future__ import annotations

import matplotlib.pyplot as plt


def _series(rows, name):
    pts = sorted((r for r in rows.values() if r["series"] == name), key=lambda r: r["x"])
    return [r["x"] for r in pts], pts


def scaling(rows):
    """rows: the scaling benchmark's results (each with series, x, seconds_per_call or per_second, and its
    ideal). Three panels: SAE step time against d_sae, against the active share (sparse and dense), and
    transformer tokens/s against batch and n_ctx; measured as dots, ideal (FLOPs-proportional) dashed."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    ax = axes[0]
    xs, pts = _series(rows, "sae_d_sae")
    ax.loglog(xs, [1e3 * r["seconds_per_call"] for r in pts], "o-", label="sparse step (numba)")
    ax.loglog(xs, [1e3 * r["ideal_seconds_per_call"] for r in pts], "k--", lw=0.8, label="ideal: ~ FLOPs")
    ax.set(xlabel="d_sae (latents)", ylabel="ms per step", title="SAE step against the dictionary's size")
    ax.legend(fontsize=8)
    ax = axes[1]
    for kind, style in (("sparse", "o-"), ("dense", "s-")):
        xs, pts = _series(rows, f"sae_active_{kind}")
        line, = ax.loglog([100 * x for x in xs], [1e3 * r["seconds_per_call"] for r in pts], style,
                          label=f"{kind} step" + (" (numba)" if kind == "sparse" else " (NumPy twin)"))
        ax.loglog([100 * x for x in xs], [1e3 * r["ideal_seconds_per_call"] for r in pts], "--", lw=0.8,
                  color=line.get_color())
    ax.set(xlabel="active latents (% of d_sae)", ylabel="ms per step",
           title="SAE step against sparsity (dashed: ~ FLOPs)")
    ax.legend(fontsize=8)
    ax = axes[2]
    for name, label, style in (("transformer_batch", "against batch (n_ctx 128)", "o-"),
                               ("transformer_n_ctx", "against n_ctx", "s-")):
        xs, pts = _series(rows, name)
        line, = ax.semilogx(xs, [r["per_second"] / 1e3 for r in pts], style, label=label)
        ax.semilogx(xs, [r["ideal_per_second"] / 1e3 for r in pts], "--", lw=0.8, color=line.get_color())
    ax.set(xlabel="batch (windows) or n_ctx (bytes)", ylabel="thousand tokens/s", ylim=(0, None),
           title="transformer step (dashed: ~ 1/FLOPs a token)")
    ax.legend(fontsize=8)
    return fig
