"""A panel left empty says why (at smoke scale a context may have no held-out bytes, or no feature)."""
import matplotlib.pyplot as plt

from tinymono import plots


def test_an_empty_panel_says_why_and_keeps_the_shared_axis_of_the_others():
    fig, axes = plt.subplots(1, 2, sharey=True)
    axes[0].bar([0, 1], [3, 5])
    plots.empty_panel(axes[1], "no dna bytes in the held-out text at this scale")
    fig.canvas.draw()
    assert [t.get_text() for t in axes[1].texts] == ["no dna bytes in the held-out text at this scale"]
    assert len(axes[0].get_yticks()) > 1 and axes[0].yaxis.get_tick_params()["labelleft"], \
        "hiding the empty panel's ticks must not hide those of the panel it shares an axis with"
    plt.close(fig)
