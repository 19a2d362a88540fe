"""Features against ground truth: each score against hand-computed cases and brute force, the streaming
statistics against the in-memory definitions, groups of sibling features, the comparison table, readable
examples, logit weights against an independent computation, ablation and loss recovered."""
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymono import activations as act
from tinymono import features
from tinymono import interventions
from tinymono import metrics
from tinymono import sae
from tinymono import scores
from tinymono import text
from tinymono import transformer as tr
from test_activations import TINY, synthetic_corpus, tiny_model


class ArraySource:
    """A unit source over an activation matrix in memory, with labels: planted features, exactly known."""

    kind = "feature"

    def __init__(self, A, context, context_names, block_rows=7):
        self.A, self.block_rows = np.asarray(A, dtype=np.float32), block_rows
        self.n_rows, self.n_units = self.A.shape
        self.store = SimpleNamespace(context=np.asarray(context, np.uint8), context_names=tuple(context_names),
                                     tokens=np.zeros(self.n_rows, np.uint16))

    def activations(self, lo, hi, units=None):
        return self.A[lo:hi] if units is None else self.A[lo:hi][:, units]

    def blocks(self, units=None):
        for lo in range(0, self.n_rows, self.block_rows):
            yield lo, self.activations(lo, min(lo + self.block_rows, self.n_rows), units)


def streamed(A, labels, L, block=5, bins=16):
    stats = scores.LabelStats(np.asarray(A, np.float64).max(axis=0), {"c": L}, bins=bins)
    for lo in range(0, len(A), block):
        stats.update(A[lo:lo + block], {"c": labels[lo:lo + block]})
    return stats.scores("c")


def brute_auroc(a, y):
    pos, neg = a[y], a[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


# ----------------------------------------------------------------------------------------------------
# the three scores


def test_indicator_constant_and_silent_units():
    labels = np.array([0, 1, 1, 0, 2, 1, 0, 0, 2, 1, 0, 1])
    y = labels == 1
    noise = np.random.default_rng(0).uniform(0, 1, len(y))
    A = np.stack([y.astype(float), np.full(len(y), 2.0), np.zeros(len(y)), noise], axis=1)
    s = streamed(A, labels, 3)
    for name, got in (("in memory", (metrics.pearson(A, y), metrics.specificity(A, y), metrics.specificity(A, y, "half"),
                                     metrics.auroc(A, y))),
                      ("streamed", tuple(s[k][1] for k in ("pearson", "specificity", "specificity_high", "auroc")))):
        r, spec, spec_hi, auc = got
        assert all(np.all(np.isfinite(v)) for v in got), f"{name}: NaN or inf: a division by a zero variance or mass?"
        np.testing.assert_allclose([r[0], spec[0], spec_hi[0], auc[0]], 1.0, atol=1e-12,
                                   err_msg=f"{name}: a unit equal to the label indicator must score 1 on every score")
        assert r[1] == 0 and auc[1] == 0.5, f"{name}: a constant unit has r {r[1]}, AUROC {auc[1]}; want 0 and 0.5"
        assert spec[1] == pytest.approx(y.mean()), f"{name}: a constant unit's mass splits like the tokens"
        assert r[2] == 0 and spec[2] == 0 and spec_hi[2] == 0 and auc[2] == 0.5, f"{name}: a silent unit must score 0"
    with pytest.raises(ValueError, match="0/1 or booleans"):
        metrics.pearson(A, labels)  # label ids, not an indicator


def test_analysis_refuses_negative_or_nan_activations():
    A = np.ones((10, 2))
    for bad, word in ((-1.0, "go down to"), (np.nan, "NaN in rows 4..7")):
        A[7, 1] = bad
        with pytest.raises(ValueError, match=word):
            scores.analyse_units(ArraySource(A, np.zeros(10, np.uint8), ["text"], block_rows=4), families=("context",))


def test_specificity_above_half_max_by_hand():
    a = np.array([[0.0], [1.0], [4.0], [10.0], [6.0]])
    y = np.array([True, True, False, True, False])
    # overall: (0 + 1 + 10) / 21; above half max (5): 10 of 10 + 6
    assert metrics.specificity(a, y)[0] == pytest.approx(11 / 21)
    assert metrics.specificity(a, y, "half")[0] == pytest.approx(10 / 16), "only activations >= max / 2 count"
    s = streamed(a, y.astype(int), 2, block=2)
    assert s["specificity_high"][1, 0] == pytest.approx(10 / 16) and s["specificity"][1, 0] == pytest.approx(11 / 21)
    assert s["coverage"][1, 0] == pytest.approx(2 / 3), "the unit fires on 2 of the 3 labelled tokens"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=2, max_size=40))
def test_auroc_against_brute_force(pairs):
    a = np.array([p[0] for p in pairs], float)
    y = np.array([p[1] for p in pairs])
    exact = metrics.auroc(a, y)
    if y.all() or not y.any():
        assert exact == 0.5
        return
    assert exact == pytest.approx(brute_auroc(a, y), abs=1e-12), "ties must count one half"
    s = streamed(a[:, None], y.astype(int), 2, bins=4)
    assert abs(s["auroc"][1, 0] - exact) <= s["auroc_err"][1, 0] + 1e-12, (
        f"histogram AUROC {s['auroc'][1, 0]} is further than its bound {s['auroc_err'][1, 0]} from {exact}")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), U=st.integers(1, 6), block=st.integers(1, 25),
       density=st.floats(0.0, 1.0))
def test_streaming_matches_in_memory(seed, n, U, block, density):
    rng = np.random.default_rng(seed)
    A = np.where(rng.random((n, U)) < density, rng.exponential(1.0, (n, U)).round(1), 0.0)
    labels = rng.integers(0, 3, n)
    s = streamed(A, labels, 3, block=block, bins=8)
    for l in range(3):
        y = labels == l
        np.testing.assert_allclose(s["pearson"][l], metrics.pearson(A, y), atol=1e-10,
                                   err_msg="streamed r differs: is the co-moment merged with Chan's cross term?")
        np.testing.assert_allclose(s["specificity"][l], metrics.specificity(A, y), atol=1e-12)
        np.testing.assert_allclose(s["specificity_high"][l], metrics.specificity(A, y, "half"), atol=1e-12)
        assert np.all(np.abs(s["auroc"][l] - metrics.auroc(A, y)) <= s["auroc_err"][l] + 1e-12)
        assert s["count"][l] == y.sum()


def test_streamed_correlation_keeps_its_digits():
    """A large offset with a small signal: E[a^2] - E[a]^2 would cancel catastrophically."""
    rng = np.random.default_rng(1)
    y = rng.random(20000) < 0.3
    a = 1e6 + y + rng.standard_normal(20000)
    s = streamed(a[:, None], y.astype(int), 2, block=997)
    ref = metrics.pearson(a[:, None] - 1e6, y)[0]  # correlation ignores the offset
    assert abs(s["pearson"][1, 0] - ref) < 1e-9, f"streamed r {s['pearson'][1, 0]:.12f} vs {ref:.12f}"


# ----------------------------------------------------------------------------------------------------
# analysis of a store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return act.harvest(tiny_model(), TINY, synthetic_corpus(3000, run=150), tmp_path_factory.mktemp("a") / "s",
                       fast=False)


@pytest.fixture(scope="module")
def sparse_sae(store):
    cfg = sae.SAEConfig(d_in=TINY.d_mlp, d_sae=24)
    x = store.rows(np.arange(len(store)))
    params = sae.init(cfg, np.random.default_rng(0), x)
    pre = (x - params["b_dec"]) @ params["W_enc"]
    params["b_enc"] = -np.quantile(pre, 0.9, axis=0).astype(np.float32)  # each latent fires on ~10% of tokens
    params["b_enc"][5] = -1e6  # a dead latent
    return params, cfg


def test_analyse_units_matches_the_whole_matrix(store, sparse_sae):
    src = features.FeatureSource(store, *sparse_sae, block_rows=333)
    report = scores.analyse_units(src, bins=16, top_k=5)
    F = np.concatenate([A for _, A in src.blocks()])  # the same blocks: the same float32 bits
    np.testing.assert_allclose(F, sae.encode(sparse_sae[0], store.rows(np.arange(len(store))), sparse_sae[1]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(report.density, (F > 0).mean(axis=0))
    np.testing.assert_allclose(report.max, F.max(axis=0))
    assert report.density[5] == 0 and not report.families["context"]["pearson"][:, 5].any()
    np.testing.assert_array_equal(report.top_values, -np.sort(-F, axis=0)[:5],
                               err_msg="streamed top-k differs from sorting the whole column")
    fired = report.top_values > 0
    assert np.all(report.top_rows[~fired] == -1) and np.array_equal(
        np.take_along_axis(F, np.maximum(report.top_rows, 0), 0)[fired], report.top_values[fired])
    for family in ("context", "detail"):
        labels = np.asarray(getattr(store, family))
        for l, name in enumerate(report.names[family]):
            y = labels == l
            np.testing.assert_allclose(report.score(family, name, "pearson"), metrics.pearson(F, y), atol=1e-9)
            np.testing.assert_allclose(report.score(family, name, "specificity_high"), metrics.specificity(F, y, "half"),
                                       atol=1e-9)
    neurons = scores.analyse_units(features.NeuronSource(store, block_rows=500))
    X = store.rows(np.arange(len(store)))
    y = np.asarray(store.context) == 3
    np.testing.assert_allclose(neurons.score("context", "base64", "pearson"), metrics.pearson(X, y), atol=1e-9)


class CountingSource(ArraySource):
    """An ArraySource that counts how many times its blocks are read (an SAE's would be encoded each time)."""

    reads = 0

    def blocks(self, units=None):
        self.reads += 1
        yield from super().blocks(units)


@pytest.mark.parametrize("keep_bytes, reads", [(1 << 30, 1), (0, 2), (2000, 2)])
def test_analyse_units_reads_once_when_the_entries_fit_and_reports_the_same_either_way(keep_bytes, reads):
    rng = np.random.default_rng(3)
    A = rng.exponential(1.0, (500, 12)) * (rng.random((500, 12)) < 0.3)  # ~1,800 entries: 14 kB of kept rows
    A[:, 4] = 0.0  # a silent unit
    context = rng.integers(0, 3, 500)
    src = CountingSource(A, context, ("english", "arabic", "python"), block_rows=37)
    report = scores.analyse_units(src, families=("context",), bins=8, top_k=4, keep_bytes=keep_bytes)
    assert src.reads == reads  # 2000 bytes: dropped after a few blocks, then read again
    scratch = scores.LabelStats(A.max(axis=0), {"context": 3}, bins=8)  # the plain second pass, block by block
    for lo in range(0, 500, 37):
        scratch.update(A[lo:lo + 37].astype(np.float32), {"context": context[lo:lo + 37]})
    want = scratch.scores("context")
    for key, value in report.families["context"].items():
        np.testing.assert_array_equal(value, want[key], err_msg=key)  # the same additions in the same order
    np.testing.assert_array_equal(report.m2, scratch.m2)


def planted():
    """Arabic split between a lead-byte feature (0) and a continuation-byte feature (1); feature 2 fires on
    Arabic and on much English (unspecific); 3 is noise."""
    rng = np.random.default_rng(0)
    n = 4000
    context = rng.integers(0, 3, n)  # 0 english, 1 arabic, 2 python
    lead = (context == 1) & (rng.random(n) < 0.5)
    cont = (context == 1) & ~lead
    A = np.stack([2.0 * lead, 5.0 * cont, 1.0 * ((context == 1) | ((context == 0) & (rng.random(n) < 0.5))),
                  rng.exponential(1.0, n) * (rng.random(n) < 0.2)], axis=1)
    return ArraySource(A, context, ("english", "arabic", "python"), block_rows=301), context


def test_groups_join_sibling_features():
    src, context = planted()
    report = scores.analyse_units(src, families=("context",))
    groups = scores.label_groups(src, report, "context", k=3)
    g = groups["arabic"]
    assert sorted(g["units"]) == [0, 1], (f"arabic's group is {g}: lead and continuation features together cover "
                                          "it exactly; the unspecific feature 2 must not join")
    assert g["pearson"] == pytest.approx(1.0, abs=1e-9) and max(g["singles"]) < 0.8
    y = context == 1
    summed = (src.A[:, g["units"]] / src.A[:, g["units"]].max(axis=0)).sum(axis=1)
    assert g["pearson"] == pytest.approx(metrics.pearson(summed[:, None], y)[0], abs=1e-9)
    assert report.score("context", "arabic", "specificity")[2] == pytest.approx(2 / 3, abs=0.03)
    loose = scores.label_groups(src, report, "context", k=3, min_specificity=0.5)
    assert loose["arabic"]["units"][0] == 2, (
        "feature 2 alone correlates best with Arabic (r ~0.71); only the specificity bar kept it out")


def test_groups_find_a_sibling_behind_many_near_copies():
    """Nine near-copies of a lead-byte feature correlate better on their own than the continuation-byte
    sibling; the sibling (100% specific, single r ~0.3) must still be found to complete the group."""
    rng = np.random.default_rng(0)
    n = 20000
    context = rng.integers(0, 2, n)
    lead = (context == 1) & (rng.random(n) < 0.85)
    cont = (context == 1) & ~lead
    copies = [lead * (rng.random(n) < 0.97) for _ in range(9)]
    src = ArraySource(np.stack([*copies, cont], axis=1).astype(float), context, ("other", "arabic"), block_rows=4096)
    report = scores.analyse_units(src, families=("context",))
    assert report.score("context", "arabic", "pearson")[9] < 0.35
    g = scores.label_groups(src, report, "context", k=3)["arabic"]
    assert 9 in g["units"] and g["eligible"] == 10, g
    summed = src.A[:, g["units"]].sum(axis=1)  # every column's max is 1
    assert g["pearson"] == pytest.approx(metrics.pearson(summed[:, None], context == 1)[0], abs=1e-9)
    assert g["pearson"] > max(g["singles"]) + 0.1, g


def test_a_context_with_no_specific_feature_has_no_group_to_draw():
    """python's only feature (2) fires on Arabic too: no unit is 90% python's, the group is empty, and the
    figure must get NaN ("no group"), not the bar of height 0 that label_groups' 0.0 would draw."""
    src, _ = planted()
    report = scores.analyse_units(src, families=("context",))
    groups = scores.label_groups(src, report, "context", k=3)
    rows = {r["label"]: r for r in scores.comparison_table(report, report, groups)}
    assert groups["python"]["units"] == [] and groups["python"]["pearson"] == 0.0, groups["python"]
    assert np.isnan(scores.group_pearson(rows["python"]))
    assert scores.group_pearson(rows["arabic"]) == pytest.approx(groups["arabic"]["pearson"])
    assert np.isnan(scores.group_pearson({"label": "x"})), "a row without a group (none asked for) draws none"


def test_best_units_need_coverage_for_specificity():
    src, context = planted()
    A = np.concatenate([src.A, np.zeros((len(src.A), 1), np.float32)], axis=1)
    A[np.flatnonzero(context == 1)[0], 4] = 9.0  # fires once, on Arabic: 100% specific, useless
    src = ArraySource(A, context, src.store.context_names)
    report = scores.analyse_units(src, families=("context",))
    best = scores.best_units(report, "context")["arabic"]
    assert best["specificity"][0] != 4, "a unit firing once must not win specificity (min_coverage)"
    assert best["pearson"][0] in (0, 1, 2) and best["auroc"][0] in (0, 1, 2)


def test_comparison_table_carries_the_papers_numbers():
    src, _ = planted()
    src.store.context_names = ("english", "arabic", "dna")
    report = scores.analyse_units(src, families=("context",))
    rows = scores.comparison_table(report, report, scores.label_groups(src, report, "context"))
    arabic = next(r for r in rows if r["label"] == "arabic")
    assert arabic["paper"] == {"pearson": 0.74, "specificity": 0.81, "specificity_high": 0.98}
    assert next(r for r in rows if r["label"] == "dna")["paper"]["pearson"] == 0.8
    table = scores.format_comparison(rows)
    assert "arabic" in table and " 74" in table and "10-18" in table, table
    neuron_part = next(line for line in table.splitlines() if line.startswith("arabic")).split("|")[2].split()
    n = arabic["neuron"]
    assert neuron_part == [str(n["unit"])] + [f"{100 * n[s]:.0f}" for s in ("pearson", "specificity", "auroc")]
    err = max(r[who]["auroc_err"] for r in rows for who in ("feature", "neuron"))
    assert f"within {err:.4f} of the exact AUROC" in table, "the table must say how far its AUROCs may be off"


# ----------------------------------------------------------------------------------------------------
# examples


def test_byte_pieces_are_readable_and_complete():
    data = "a\n\\ب".encode() + bytes([0xD8, 0x41, 0x00, 0x7F]) + "ש".encode()
    tokens = list(data) + [256, 0xE2, 0x80, 0xAE]  # DOC_SEP, then a right-to-left override (not printable)
    pieces = text.byte_pieces(tokens)
    assert [p[0] for p in pieces] == ["a", "\\n", "\\\\", "ب", "\\xd8", "A", "\\x00", "\\x7f", "ש", "\u241e",
                                      "\\xe2", "\\x80", "\\xae"]
    assert [(a, b) for _, a, b in pieces][:5] == [(0, 1), (1, 2), (2, 3), (3, 5), (5, 6)], "pieces must tile the bytes"
    assert text.format_example(tokens, 4) == "a\\n\\\\\u27e6ب·a8\u27e7\\xd8A\\x00\\x7fש\u241e\\xe2\\x80\\xae", (
        "the mark goes round the whole character and names the byte (ب is d8 a8)")
    assert "\u27e6ب·d8\u27e7" in text.format_example(tokens, 3) and "\u27e6A\u27e7" in text.format_example(tokens, 6)


def _top_k_merge_every_column(vals, rows, A, lo, scratch):
    """The merge as first written: every column's k entries sorted again with the block's candidates."""
    k, U = vals.shape
    r, c = scratch.above(A, np.maximum(vals[-1], 0))
    if len(r) == 0:
        return vals, rows
    cand_v = np.concatenate([vals.ravel(), A[r, c]])
    cand_c = np.concatenate([np.tile(np.arange(U), k), c])
    cand_r = np.concatenate([rows.ravel(), lo + r])
    order = np.lexsort((-cand_v, cand_c))
    rank = np.arange(len(order)) - np.searchsorted(cand_c[order], cand_c[order])
    keep = order[rank < k]
    new_v, new_r = np.empty_like(vals), np.empty_like(rows)
    new_v[rank[rank < k], cand_c[keep]] = cand_v[keep]
    new_r[rank[rank < k], cand_c[keep]] = cand_r[keep]
    return new_v, new_r


@pytest.mark.parametrize("seed", range(4))
def test_top_k_merge_sorts_only_the_columns_with_candidates_and_keeps_ties_in_order(seed):
    """The streamed top-k re-sorts only the columns a block has candidates in; the result, rows of tied
    values included, is the one of sorting every column again."""
    from tinymono.kernels.moments import SparseBlocks

    rng = np.random.default_rng(seed)
    k, U = 4, 9
    state = {name: (np.full((k, U), -np.inf), np.zeros((k, U), np.int64)) for name in ("restricted", "every")}
    merges = {"restricted": scores._top_k_merge, "every": _top_k_merge_every_column}
    lo = 0
    for _ in range(12):
        b = int(rng.integers(1, 30))
        A = rng.integers(0, 4, (b, U)).astype(np.float32) * (rng.random((b, U)) < 0.3)  # many ties, many zeros
        A[:, 0] = 0  # a column that never fires
        for name, merge in merges.items():
            state[name] = merge(*state[name], A, lo, SparseBlocks(share=2.0))
        np.testing.assert_array_equal(state["restricted"][0], state["every"][0])
        np.testing.assert_array_equal(state["restricted"][1], state["every"][1], err_msg="tied values' rows")
        lo += b
    assert np.isinf(state["restricted"][0][:, 0]).all() and np.isfinite(state["restricted"][0][0, 1:]).any()


def test_top_examples_are_apart_and_centred(store, sparse_sae):
    src = features.FeatureSource(store, *sparse_sae)
    report = scores.analyse_units(src, top_k=20)
    u = int(np.argmax(report.density))
    ex = features.top_examples(src, report, u, k=4, before=10, after=3)
    rows = [e["row"] for e in ex]
    assert all(abs(a - b) > 10 for i, a in enumerate(rows) for b in rows[:i]), f"examples overlap: {rows}"
    for e in ex:
        assert e["acts"][e["centre"]] == e["activation"] > 0
        r = e["row"]
        assert e["centre"] == min(r, 10) and len(e["tokens"]) == len(e["acts"]) == min(len(store), r + 4) - max(0, r - 10), \
            "an example runs from `before` bytes before the activating byte to `after` bytes after it"
        np.testing.assert_array_equal(e["tokens"], store.tokens[e["row"] - e["centre"]:e["row"] - e["centre"] +
                                                                len(e["tokens"])])
    assert ex[0]["row"] == report.top_rows[0, u], "the first example is at the row of the unit's strongest activation"
    # The example's activation is recomputed over its own window (another matmul shape: its last float32
    # bits depend on the BLAS kernel). Here round-off is ~1e-7 of it; the runner-up activation is 1% below
    # and the bytes beside it are 0, so reading the wrong row, byte or unit misses by far more than 1e-5.
    assert ex[0]["activation"] == pytest.approx(report.max[u], rel=1e-5), \
        "the first example is the unit's strongest activation"
    assert features.top_examples(src, report, 5) == [], "a dead latent has no examples"


def test_top_examples_look_past_one_crowded_stretch():
    """The report keeps only its top_k rows; when they all sit in one stretch, the rest of the column is read."""
    a = np.zeros((400, 1))
    a[100:140, 0] = 5.0 + np.arange(40) / 40  # one long stretch holds the 40 strongest activations
    scattered = [10, 200, 250, 330, 390]
    a[scattered, 0] = [1.0, 2.0, 3.0, 4.0, 0.5]
    src = ArraySource(a, np.zeros(400, np.uint8), ["text"])
    report = scores.analyse_units(src, families=("context",), top_k=8)
    rows = [e["row"] for e in features.top_examples(src, report, 0, k=8, before=10, after=2)]
    assert rows == [139, 128, 117, 106, 330, 250, 200, 10], rows


# ----------------------------------------------------------------------------------------------------
# logit weights, ablation, loss recovered


def test_logit_weights_match_the_direct_effect_on_the_logits():
    """Without layer norms (so nothing is approximated), adding alpha * d to the MLP activations moves the
    logits by exactly alpha * logit_weights(d)."""
    cfg = tr.TransformerConfig(d_vocab=11, d_model=6, d_mlp=5, n_heads=2, d_head=3, n_ctx=4, layernorm=False)
    rng = np.random.default_rng(0)
    params = tr.init(cfg, rng, dtype=np.float64)
    params["W_out"] = rng.standard_normal((5, 6)) + 1.0  # rows far from zero mean
    d = rng.standard_normal(5)
    tokens = rng.integers(0, 11, (2, 4))
    clean, _ = tr.forward(params, tokens, cfg)
    moved, _ = tr.forward(params, tokens, cfg, hook_post=lambda post: post + 0.5 * d)
    np.testing.assert_allclose(moved - clean, np.broadcast_to(0.5 * features.logit_weights(params, cfg, d), clean.shape),
                               atol=1e-12, err_msg="logit weights are not the direct effect d @ W_out @ W_U")


def test_logit_weights_remove_the_mean_and_apply_the_gain():
    cfg = tr.TransformerConfig(d_vocab=7, d_model=4, d_mlp=3, n_heads=1, d_head=4, n_ctx=2)
    rng = np.random.default_rng(1)
    params = {k: rng.standard_normal(v.shape) for k, v in tr.init(cfg, rng, dtype=np.float64).items()}
    d = rng.standard_normal(3)
    expected = np.zeros(7)
    resid = [sum(d[m] * params["W_out"][m, j] for m in range(3)) for j in range(4)]
    mean = sum(resid) / 4
    for v in range(7):
        expected[v] = sum((resid[j] - mean) * params["lnf_w"][j] * params["W_U"][j, v] for j in range(4))
    np.testing.assert_allclose(features.logit_weights(params, cfg, d), expected, rtol=1e-12)
    promoted, suppressed = features.top_logits(expected, 2)
    assert promoted[0][1] == expected.max() and suppressed[0][1] == expected.min()


@pytest.fixture(scope="module")
def lm():
    cfg = tr.TransformerConfig(d_model=8, d_mlp=16, n_heads=2, d_head=4, n_ctx=12)
    params = tr.init(cfg, np.random.default_rng(3), dtype=np.float32)
    params["W_out"] *= 30  # a random model's MLP barely moves the logits otherwise
    windows = synthetic_corpus(2000).sample_windows("val", 20, cfg.n_ctx + 1, np.random.default_rng(0))[0]
    sae_cfg = sae.SAEConfig(d_in=16, d_sae=32)
    return params, cfg, windows, sae.init(sae_cfg, np.random.default_rng(1)), sae_cfg


def test_ablating_a_silent_feature_changes_nothing(lm):
    params, cfg, windows, sae_params, sae_cfg = lm
    sae_params = {k: v.copy() for k, v in sae_params.items()}
    sae_params["b_enc"][7] = -1e9
    out = interventions.ablation_effect(params, cfg, sae_params, sae_cfg, 7, windows, batch=8, fast=False)
    assert out["n_on"] == 0 and np.all(out["delta"] == 0), (
        f"a feature that never fires changed the loss by up to {np.abs(out['delta']).max():.3g} nats: does the "
        "ablation subtract from the true activations (not from the SAE's reconstruction)?")
    live = int(np.argmax(sae_params["b_enc"]))
    out = interventions.ablation_effect(params, cfg, sae_params, sae_cfg, live, windows, batch=8, fast=False)
    assert out["n_on"] > 0 and np.any(out["delta"][out["fires"]] != 0) and np.all(out["delta"][~out["fires"]] == 0), \
        "ablating a feature must change the loss where it fires (and, at the same position, nowhere else)"


def test_ablation_hook_subtracts_exactly_the_features_share(lm):
    params, cfg, windows, sae_params, sae_cfg = lm
    post = np.abs(np.random.default_rng(0).standard_normal((2, 3, 16))).astype(np.float32)
    rec = []
    out = interventions.ablation_hook(sae_params, sae_cfg, 4, rec)(post)
    f = sae.encode(sae_params, post.reshape(6, 16), sae_cfg)[:, 4]
    np.testing.assert_allclose(out, post - (f[:, None] * sae_params["W_dec"][4]).reshape(post.shape), rtol=1e-6)
    np.testing.assert_allclose(rec[0], f.reshape(2, 3))


def test_clamp_hook_sets_the_feature_and_keeps_the_rest(lm):
    """Pinning feature i at v replaces its share f_i d_i by v d_i and leaves the SAE's error term and every
    other feature's share untouched; v = 0 is the ablation."""
    params, cfg, windows, sae_params, sae_cfg = lm
    post = np.abs(np.random.default_rng(1).standard_normal((2, 3, 16))).astype(np.float32)
    f = sae.encode(sae_params, post.reshape(6, 16), sae_cfg)[:, 9]
    d = sae_params["W_dec"][9]
    out = interventions.clamp_hook(sae_params, sae_cfg, 9, 5.0)(post)
    np.testing.assert_allclose(out.reshape(6, 16), post.reshape(6, 16) + (5.0 - f)[:, None] * d, rtol=1e-5, atol=1e-6)
    f_all = sae.encode(sae_params, post.reshape(6, 16), sae_cfg)
    rec = []
    two = interventions.clamp_hook(sae_params, sae_cfg, [9, 4], [5.0, 0.0], rec)(post)  # both read from the incoming post
    want = post.reshape(6, 16) + (5.0 - f_all[:, [9]]) * d - f_all[:, [4]] * sae_params["W_dec"][4]
    np.testing.assert_allclose(two.reshape(6, 16), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec[0], f_all[:, [9, 4]].reshape(2, 3, 2), rtol=1e-6)


def test_written_share_accepts_what_each_generator_writes_and_not_plain_text():
    """The recognisers of pinned sampling against the corpus's own generators (ground truth: their labels)."""
    from tinymono import corpus_generated as gen
    from tinymono import corpus_sources as cs

    rng = np.random.default_rng(0)
    for script in ("arabic", "hebrew"):  # exactly the bytes of letters, not the spaces and line ends
        doc = gen.script_document(script, 3000, rng)
        letters = np.isin(doc.detail, [cs.DET[script + "_lead"], cs.DET[script + "_cont"]]).mean()
        assert text.written_share(np.frombuffer(doc.data, np.uint8), script) == pytest.approx(letters)
        broken = np.frombuffer(doc.data, np.uint8)[doc.detail == cs.DET[script + "_lead"]]  # lead bytes alone
        assert text.written_share(broken, script) == 0
    dna = gen.dna_document(5000, rng)
    bases = (np.asarray(dna.detail) == cs.DET["dna_base"]).mean()
    assert bases - 0.02 <= text.written_share(np.frombuffer(dna.data, np.uint8), "dna") <= bases  # lines < 8 bases: rare
    assert text.written_share(np.frombuffer(gen.hex_digest(40, rng).data, np.uint8), "hex") == 1.0
    blob = np.frombuffer(gen.b64_random(600, rng, width=76).data, np.uint8)
    assert text.written_share(blob, "base64") == pytest.approx((~np.isin(blob, list(b"\n="))).mean())
    code = np.frombuffer(cs.python_unit("py/json/encoder.py").seg.data, np.uint8)
    for label in text.RECOGNISERS:
        assert text.written_share(code, label) < 0.02, label
    assert text.written_share(np.array([ord("A"), 256, ord("C")] * 8), "dna") == 0  # the separator breaks runs
    assert text.written_share(np.array(list(b"ACGTACGT") + [256]), "dna") == pytest.approx(8 / 9)  # and is a byte
    digest, line = gen.hex_digest(32, rng).data, b"ACGTTGCA" * 3
    for look_alike in (digest, line, line.lower()):
        assert text.written_share(list(look_alike), "base64") == 0
    lower = np.frombuffer(gen.dna_document(5000, rng, lowercase=True).data, np.uint8)
    assert bases - 0.02 <= text.written_share(lower, "dna") <= bases + 0.02  # soft-masked DNA counts as DNA
    assert text.written_share(list(b"ACGTacgtACGTacgt"), "dna") == 0  # but a run keeps its case
    assert text.written_share(list(b"x = 12345678901"), "hex") == 0  # a number, not a digest
    assert text.written_share(list(b"acgtacgtacgtacgt"), "hex") == 0  # soft-masked DNA, not a digest
    assert text.written_share(list(b"raise NotImplementedError"), "base64") == 0  # a name, not a blob
    for k in range(len(gen.languages())):  # the family's words: runs of small letters, no blob
        doc = gen.language_document(k, 2000, rng)
        assert text.written_share(np.frombuffer(doc.data, np.uint8), "base64") == 0, k
    with pytest.raises(ValueError, match="1-D"):
        text.written_share(np.zeros((2, 8), int), "dna")
    with pytest.raises(ValueError, match="no recogniser"):
        text.written_share([65], "python")


# the `lm` fixture model is untrained: its MLP does not help yet, and loss_recovered says so
UNTRAINED = pytest.mark.filterwarnings("ignore:the ablation lowers the loss")


@UNTRAINED
def test_loss_recovered_ends(lm):
    params, cfg, windows, _, _ = lm
    kw = dict(batch=8, fast=False)
    clean = interventions.mean_loss(params, cfg, windows, **kw)
    zero = interventions.mean_loss(params, cfg, windows, 0.0, **kw)
    itself = interventions.mean_loss(params, cfg, windows, lambda post: post, **kw)
    assert zero != clean, "zero-ablation must change the loss for this test to mean anything"
    assert metrics.loss_recovered(clean, itself, zero) == pytest.approx(1.0, abs=1e-9), \
        "replacing the activations by themselves must recover 1"
    assert metrics.loss_recovered(clean, zero, zero) == 0.0
    with pytest.raises(ValueError, match="does not change the loss"):
        metrics.loss_recovered(clean, zero, clean)
    with pytest.warns(RuntimeWarning, match="lowers the loss"):  # an ablation that helps: the sign means nothing
        assert metrics.loss_recovered(2.0, 2.5, 1.5) == 2.0


@UNTRAINED
def test_an_identity_sae_recovers_everything(lm, tmp_path):
    params, cfg, windows, _, _ = lm
    store = act.harvest(params, cfg, synthetic_corpus(500), tmp_path / "s", fast=False)
    sae_cfg = sae.SAEConfig(d_in=16, d_sae=16)
    identity = {"W_enc": np.eye(16, dtype=np.float32), "b_enc": np.zeros(16, np.float32),
                "W_dec": np.eye(16, dtype=np.float32), "b_dec": np.zeros(16, np.float32)}
    out = interventions.loss_recovered_report(params, cfg, windows, identity, sae_cfg, store.mean(), batch=8, fast=False)
    # an identity SAE: x @ I is exact in IEEE arithmetic, but the test need not rely on it
    assert out["sae"] == pytest.approx(out["clean"], rel=1e-12), out
    assert out["recovered_zero"] == pytest.approx(1.0, abs=1e-9)
    assert out["recovered_mean"] == pytest.approx(1.0, abs=1e-9)
    half = {**identity, "W_dec": 0.5 * identity["W_dec"]}  # reconstructs half of every activation
    out = interventions.loss_recovered_report(params, cfg, windows, half, sae_cfg, store.mean(), batch=8, fast=False)
    assert out["sae"] == pytest.approx(interventions.mean_loss(params, cfg, windows, lambda post: 0.5 * post, batch=8,
                                                               fast=False), rel=1e-12)
    for base in ("zero", "mean"):
        want = (out[base] - out["sae"]) / (out[base] - out["clean"])
        assert out[f"recovered_{base}"] == pytest.approx(want, rel=1e-12) and 0 < want < 1, (base, out)
    assert out["recovered_zero"] != out["recovered_mean"]
    mean = store.mean().astype(np.float32)
    assert out["mean"] == interventions.mean_loss(params, cfg, windows, lambda post: np.broadcast_to(mean, post.shape), batch=8,
                                       fast=False) != out["zero"], "mean-ablation must put the mean at every position"


def test_feature_cards(store, sparse_sae):
    src = features.FeatureSource(store, *sparse_sae)
    report = scores.analyse_units(src)
    cards = features.feature_cards(src, report, tiny_model(), TINY, [0, 5], n_examples=3)
    live, dead = cards
    assert len(live["examples"]) == 3 and dead["examples"] == [] and dead["density"] == 0
    assert dead["best"]["label"] == "-", "a unit that never fires matches no label"
    ex = live["examples"][0]
    assert sum(c for _, _, c in ex["pieces"]) == 1, "exactly one piece holds the activating byte"
    centre_act = next(a for _, a, c in ex["pieces"] if c)
    assert centre_act >= ex["activation"] > 0, "the activating piece must carry (at least) the example's activation"
    h = live["histogram"]
    assert np.sum(h["counts"]) + np.sum(h["zeros"]) == len(store), "the histogram must account for every token"
    weights = features.logit_weights(tiny_model(), TINY, sparse_sae[0]["W_dec"][0])
    assert [w for _, w in live["logits"]["promoted"]] == pytest.approx(np.sort(weights)[::-1][:8].tolist())
    assert [w for _, w in live["logits"]["suppressed"]] == pytest.approx(np.sort(weights)[:8].tolist())


@pytest.mark.parametrize("arch", sorted(sae.ARCHITECTURES))
def test_a_few_latents_of_any_architecture_are_the_whole_encodings_columns(store, arch):
    """FeatureSource and clamp_hook encode only the latents asked for where that is exact (the paper's ReLU);
    for a later variant (TopK's latents compete for slots) they must still give the SAE's own latents."""
    opts = {"topk": dict(k=3, aux_k=3), "batchtopk": dict(k=3, aux_k=3)}.get(arch, {})
    cfg = sae.SAEConfig(d_in=TINY.d_mlp, d_sae=16, architecture=arch, **opts)
    x = store.rows(np.arange(len(store)))
    params = sae.init(cfg, np.random.default_rng(0), x)
    units = [3, 11, 0]
    whole = sae.encode(params, x[:40], cfg)
    got = features.FeatureSource(store, params, cfg).activations(0, 40, units)
    np.testing.assert_allclose(got, whole[:, units], rtol=1e-6, atol=1e-7)
    post = x[:6].reshape(2, 3, -1)
    rec = []
    out = interventions.clamp_hook(params, cfg, units, [2.0, 0.0, 1.0], rec)(post)
    pinned = whole[:6].copy()
    pinned[:, units] = [2.0, 0.0, 1.0]
    want = sae.decode(params, pinned) + (x[:6] - sae.decode(params, whole[:6]))  # pinned reconstruction + the SAE's error
    if arch == "anthropic2024":
        assert abs(params["input_scale"].item() - 1.0) > 0.1, "an input_scale near 1 would not test the scaling back"
    np.testing.assert_allclose(out.reshape(6, -1), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rec[0].reshape(6, 3), whole[:6, units], rtol=1e-6, atol=1e-7)


def test_script_recognisers_take_the_generators_letters_and_no_other_character_of_the_block():
    from tinymono import corpus_generated as gen

    for script, block in (("arabic", range(0x0600, 0x0700)), ("hebrew", range(0x0590, 0x0600))):
        written = set(gen.SCRIPT_LETTERS[script].tolist())
        taken = {c for c in block if text.written_share(list(chr(c).encode()), script) == 1.0}
        assert taken == written, (script, sorted(map(hex, taken ^ written)))


def test_quantile_bands_of_a_unit_that_fired_less_often_than_there_are_bands(store):
    cfg = sae.SAEConfig(d_in=TINY.d_mlp, d_sae=4)
    x = store.rows(np.arange(len(store)))
    params = sae.init(cfg, np.random.default_rng(0), x)
    pre = (x - params["b_dec"]) @ params["W_enc"]
    top = np.sort(pre, axis=0)
    params["b_enc"] = (-(top[-2] + top[-3]) / 2).astype(np.float32)  # each latent fires on its two largest rows
    src = features.FeatureSource(store, params, cfg)
    bands = features.quantile_examples(src, [1], n_bands=4, per_band=1)[1]
    top2 = np.sort(pre[:, 1] + params["b_enc"][1])[-2:]
    assert [b["band"] for b in bands] == ["0-50%", "50-100%"]
    np.testing.assert_allclose([b["hi"] for b in bands], top2, rtol=1e-5, atol=1e-6)  # pre is O(1): float32 rounding


def test_histogram_auroc_error_bound_is_tight():
    a = np.array([[1.0], [2.0]])  # both in the one nonzero bin: the histogram cannot order them
    stats = scores.LabelStats(a.max(axis=0), {"c": 2}, bins=1)
    stats.update(a, {"c": np.array([0, 1])})
    s = stats.scores("c")
    assert s["auroc"][1, 0] == 0.5 and s["auroc_err"][1, 0] == 0.5  # exact AUROC is 1.0: the bound is attained


def test_ablation_effects_summary_means_are_over_the_right_positions(lm):
    params, cfg, windows, sae_params, sae_cfg = lm
    unit = int(np.argmax(sae_params["b_enc"]))
    out = interventions.ablation_effect(params, cfg, sae_params, sae_cfg, unit, windows, batch=8, fast=False)
    assert out["n_on"] > 0
    assert out["mean_on"] == pytest.approx(out["delta"][out["fires"]].mean())
    assert out["mean_off"] == pytest.approx(out["delta"][~out["fires"]].mean() if out["n_off"] else 0.0)


def test_mean_loss_is_per_token(lm):
    """Loss recovered is a ratio, blind to a loss scaled by the window length; mean_loss itself must be nats
    per token."""
    params, cfg, windows, *_ = lm
    want = tr.per_token_loss(params, windows.astype(np.int64), cfg, fast=False).mean()
    assert interventions.mean_loss(params, cfg, windows, batch=7, fast=False) == pytest.approx(want, rel=1e-6)
