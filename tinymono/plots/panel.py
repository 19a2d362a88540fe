"""What every figure may need: a panel that says why it is empty."""
from __future__ import annotations


def empty_panel(ax, why, clear=True):
    """Say on a panel why it is empty or nearly so (at smoke scale a context may have no bytes held out, or
    no feature), instead of leaving a blank a reader takes for a bug. clear: hide the panel's own ticks too
    (only its own: a y axis it shares keeps its ticks on the other panels)."""
    if clear:
        ax.tick_params(bottom=False, labelbottom=False, left=False, labelleft=False)
    ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.3",
            bbox=dict(boxstyle="round", facecolor="white", edgecolor="0.7"))
