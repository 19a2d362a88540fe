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


def test_lesson_09s_bars_near_1_are_zoomed_around_their_values_and_bars():
    import numpy as np
    rows = [{"architecture": a, "size": "1.1x", "mmcs": m, "dead": d} for a, m, d in
            (("relu", 0.9935, 0.03), ("topk", 0.9990, 0.0), ("gated", 0.9863, 0.01))]
    fig = plots.variants_scores(rows, {"mmcs": "MMCS", "dead": "dead"}, bars={"mmcs": 0.99}, zoom=("mmcs",))
    mmcs_ax, dead_ax = fig.axes[:2]
    lo, hi = mmcs_ax.get_ylim()
    assert 0.97 < lo < 0.9863 and 0.9990 < hi < 1.01, (lo, hi)  # every value and the bar in view, 0 not
    assert dead_ax.get_ylim()[0] == 0 and "zoomed" in mmcs_ax.get_title() and "zoomed" not in dead_ax.get_title()
    assert [t.get_text() for t in fig.axes[-1].get_legend().get_texts()] == ["relu", "topk", "gated"]
    assert np.isclose(mmcs_ax.collections[0].get_segments()[0][0][1], 0.99)  # the check's dashed line
    plt.close(fig)


def test_attention_scores_are_coloured_around_0():
    import numpy as np
    scores = np.array([[-13.0, 0.0], [2.0, 8.5]])
    fig = plots.attention_pieces(np.tril(np.ones((2, 2))), scores, np.eye(2))
    image = fig.axes[1].get_images()[0]
    assert image.get_clim() == (-13.0, 13.0)  # white (the map's middle) at a score of 0
    plt.close(fig)


def test_a_features_histogram_draws_each_side_at_its_own_count_not_stacked():
    import numpy as np
    edges = np.array([0.0, 1.0, 2.0])
    inside, outside = np.array([1000.0, 10.0]), np.array([20.0, 5.0])
    fig = plots.context_feature_histograms({"hebrew": (7, edges, inside, outside)})
    heights = [tuple(p.get_data().values) for p in fig.axes[0].patches]
    assert (1000.0, 10.0) in heights and (20.0, 5.0) in heights, heights  # stacked would draw 1020, 15
    plt.close(fig)


def test_the_dna_family_labels_each_row_with_its_cosine_and_its_share_on_dna():
    import numpy as np
    share = np.array([[0.9, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    fig = plots.feature_split_by_base(share, [398, 485], 1024, 64, 0.77, cos=[0.81, 0.69], on_dna=[0.97, 0.0])
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["398 (cos 0.81, 97% DNA)", "485 (cos 0.69, 0% DNA)"]
    plt.close(fig)


def test_best_cosines_are_drawn_as_their_distance_from_1_on_a_log_axis():
    import numpy as np
    best = np.r_[np.full(510, 0.999), 0.95, 0.13]
    fig = plots.best_cosines(best, best, 0.99, 0.998)
    ax = fig.axes[1]
    assert ax.get_xscale() == "log"
    counts = [p.get_height() for p in ax.patches if p.get_height() > 0]
    assert sorted(counts)[-1] == 510 and len(counts) >= 3  # 0.999, 0.95 and 0.13 land in separate bins
    plt.close(fig)


def test_sweep_heatmap_numbers_are_dark_on_bright_cells():
    import numpy as np
    fig = plots.sweep_heatmaps(np.array([[0.2, 0.99]]), np.array([[0.0, 0.5]]), np.array([[0.95, np.nan]]),
                               [1, 2], [3e-4])
    colours = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert colours["0.99"] == "k" and colours["0.20"] == "w"
    plt.close(fig)
