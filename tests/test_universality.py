"""Lesson 10's measurements: the streamed correlation of two sets of units against np.corrcoef (constant
columns included), the shuffled weights, and the follow share of a feature chain on hand-made rows."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymono import pipeline, universality
from tinymono.kernels import moments


class Matrix:
    """A unit source over an activation matrix in memory (what features.NeuronSource gives from a store)."""

    def __init__(self, X):
        self.X = np.asarray(X, dtype=np.float32)
        self.n_rows, self.n_units = self.X.shape

    def activations(self, lo, hi, units=None):
        return self.X[lo:hi] if units is None else self.X[lo:hi][:, units]


def sparse_relu(rng, n, u, density, scale=1.0, offset=0.0):
    return (np.maximum(rng.normal(size=(n, u)), 0) * (rng.random((n, u)) < density) * scale + offset).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(3, 300), block=st.integers(1, 64),
       ua=st.integers(1, 6), ub=st.integers(1, 6), offset=st.sampled_from([0.0, 50.0]),
       density=st.sampled_from([0.02, 0.5]), sparse_below=st.sampled_from([0.0, 1.01]))
def test_streamed_correlation_equals_corrcoef(seed, n, block, ua, ub, offset, density, sparse_below):
    """Any block size, through the dense path (sparse_below 0) or the sparse one (1.01: every block), gives
    np.corrcoef's numbers; a large shared offset (a neuron that is always on) must not cost digits, which
    raw float32 sums of squares would lose."""
    rng = np.random.default_rng(seed)
    XA, XB = sparse_relu(rng, n, ua, density, offset=offset), sparse_relu(rng, n, ub, density, offset=offset)
    XB[:, 0] += XA[:, 0]  # one correlated pair
    got = universality.correlate(Matrix(XA), Matrix(XB), block_rows=block, sparse_below=sparse_below)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = np.corrcoef(XA.T.astype(np.float64), XB.T.astype(np.float64))[:ua, ua:]
    alive = got.alive_a[:, None] & got.alive_b[None, :]
    assert np.allclose(got.r[alive], want[alive], atol=2e-5), \
        f"streamed r differs from np.corrcoef by {np.max(np.abs(got.r[alive] - want[alive])):.2e}: check Chan's merge " \
        "(co-moment of the centred block plus outer(delta_a, delta_b) * n_seen * b / n_total)"
    assert got.n_rows == n and np.isfinite(got.r).all()


def test_constant_columns_correlate_zero_and_are_not_alive():
    """A latent that never fires (all zeros) or a unit stuck at one value has no correlation: 0, never NaN,
    and it is marked not alive so a distribution of best matches can leave it out."""
    rng = np.random.default_rng(0)
    XA = sparse_relu(rng, 500, 4, 0.3)
    XA[:, 1] = 0.0  # dead latent
    XA[:, 3] = 2.5  # constant
    XB = sparse_relu(rng, 500, 3, 0.3)
    XB[:, 2] = 0.0
    got = universality.correlate(Matrix(XA), Matrix(XB), block_rows=77)
    assert got.alive_a.tolist() == [True, False, True, False] and got.alive_b.tolist() == [True, True, False]
    assert np.isfinite(got.r).all(), "a constant column must give 0, not NaN"
    assert np.all(got.r[[1, 3]] == 0) and np.all(got.r[:, 2] == 0)
    best, r = got.best_match()
    assert r[1] == 0 and r[3] == 0 and np.isfinite(r).all()
    assert got.best_match()[0][0] in (0, 1), "a dead unit of B must never be anyone's best match over a live one"


def test_a_dead_unit_of_b_is_no_match_even_when_every_live_correlation_is_negative():
    """r is 0 where a unit of B never varies; a unit of A anticorrelated with every live unit of B must get its
    least negative live match, not the dead unit's 0."""
    rng = np.random.default_rng(2)
    a = rng.random(300).astype(np.float32)
    XB = np.stack([1.0 - a, np.zeros_like(a), 2.0 - 3.0 * a], axis=1)  # B's unit 1 is dead
    got = universality.correlate(Matrix(a[:, None]), Matrix(XB), block_rows=64)
    best, r = got.best_match()
    assert got.alive_b.tolist() == [True, False, True]
    assert best[0] in (0, 2) and r[0] == pytest.approx(-1.0, abs=1e-5), (best, r)
    none = universality.correlate(Matrix(a[:, None]), Matrix(np.zeros((300, 2), np.float32)), block_rows=64)
    assert none.best_match()[1].tolist() == [0.0], "with no live unit of B, every match is 0"


def test_best_match_finds_the_planted_copy_among_shuffled_units():
    rng = np.random.default_rng(1)
    XA = sparse_relu(rng, 4000, 8, 0.05)
    perm = rng.permutation(8)
    XB = XA[:, perm] * 3.0 + rng.normal(scale=0.01, size=XA.shape).astype(np.float32)  # rescaled, noisy copies
    best, r = universality.correlate(Matrix(XA), Matrix(XB), block_rows=1000).best_match()
    assert np.array_equal(perm[best], np.arange(8)), "unit a's best match must be B's column holding a copy of a"
    assert np.all(r > 0.99)


def test_correlate_refuses_more_rows_than_the_sources_hold():
    X = np.ones((5, 2), np.float32)
    with pytest.raises(ValueError, match="more than the sources hold"):
        universality.correlate(Matrix(X), Matrix(X[:3]), n_rows=4)


def test_shuffle_keeps_each_arrays_values_and_destroys_their_arrangement():
    rng = np.random.default_rng(2)
    rows = np.arange(64, dtype=np.float32)[:, None]  # planted structure: row i holds values near i
    params = {"W_in": rows + rng.normal(size=(64, 256)).astype(np.float32),
              "b_in": rng.normal(size=4096).astype(np.float32), "W_U": rng.normal(size=(32, 257)).astype(np.float32)}
    shuffled = universality.shuffle_weights(params, seed=0)
    for name, w in params.items():
        s = shuffled[name]
        assert s.shape == w.shape and s.dtype == w.dtype
        assert np.array_equal(np.sort(s, axis=None), np.sort(w, axis=None)), f"{name}: not the same multiset of values"
        assert np.mean(s == w) < 0.1, f"{name}: most entries stayed where they were"
        assert abs(np.corrcoef(s.ravel(), w.ravel())[0, 1]) < 0.1, f"{name}: the arrangement survived"
    spread = lambda w: w.mean(axis=1).std()  # noqa: E731  the rows' means: 18.5 planted, ~0.06 x 18.5 shuffled
    assert spread(shuffled["W_in"]) < 0.1 * spread(params["W_in"]), "the planted row structure survived the shuffle"
    again = universality.shuffle_weights(params, seed=0)
    assert all(np.array_equal(again[k], shuffled[k]) for k in params), "a fixed seed must give the same shuffle"
    assert not np.array_equal(universality.shuffle_weights(params, seed=1)["W_in"], shuffled["W_in"])
    assert params["W_in"] is not shuffled["W_in"] and not np.shares_memory(params["W_in"], shuffled["W_in"])


def test_follow_share_on_a_hand_made_chain():
    # rows:   0  1  2  3  4  5  6  7  8  9
    p = np.array([1, 0, 0, 2, 0, 1, 0, 0, 0, 1], np.float32)
    q = np.array([0, 3, 0, 0, 1, 0, 0, 2, 0, 0], np.float32)
    share, onward, n_q = universality.follow_share(p, q)
    # q fires at rows 1, 4, 7; p fired on the row before at 0 and 3, not at 6: 2 of 3
    # p fires at rows 0, 3, 5 (row 9 has no row after): followed by q after 0 and 3: 2 of 3
    assert n_q == 3 and share == pytest.approx(2 / 3) and onward == pytest.approx(2 / 3)
    assert universality.follow_share(p, np.zeros(10, np.float32)) == (0.0, 0.0, 0)
    assert universality.follow_share(q, p)[0] == pytest.approx(1 / 3), "q at 4 precedes p at 5; q at 7 nothing"


def test_follow_counts_agree_with_follow_share():
    rng = np.random.default_rng(3)
    A = sparse_relu(rng, 1000, 5, 0.3)
    after, total = universality.follow_counts(A > 0, A[:, 2] > 0)
    for k in range(5):
        share, _, n = universality.follow_share(A[:, 2], A[:, k])
        assert total[k] == n and after[k] / max(total[k], 1) == pytest.approx(share)


def test_promoted_percentile_ranks_among_present_bytes():
    weights = np.array([5.0, 1.0, 2.0, 3.0, 100.0])
    present = np.array([True, True, True, True, False])  # byte 4 never occurs: left out
    reads = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    assert universality.promoted_percentile(weights, reads, present) == pytest.approx(2 / 3)
    reads = np.array([0.5, 0.5, 0.0, 0.0, 0.0])  # the top byte and the bottom one
    assert universality.promoted_percentile(weights, reads, present) == pytest.approx(0.5)
    assert universality.promoted_percentile(weights, np.eye(5)[4], present) == 0.0, "only present bytes count"


def test_second_model_keeps_the_first_models_names_and_configs(monkeypatch):
    """Model A's cache files keep today's names (old caches still load); model B is trained as model A, with
    its own seed and without the per-label evaluations, in files named by both; sizes set in SECOND change
    model B's configs alone and name new files."""
    import dataclasses

    from tinymono import settings

    for scale in ("default", "full"):
        cfg_a, train_a = pipeline.transformer_configs(scale, seed=0)
        cfg_b, train_b = pipeline.transformer_configs(scale, seed=0, model_seed=1)
        assert cfg_a == cfg_b and train_b == dataclasses.replace(train_a, seed=1, eval_every=0)
        assert train_a.eval_every > 0, "lesson 05 reads model A's evaluations"
        assert pipeline.sae_config(scale, 128, seed=1, second=True) == pipeline.sae_config(scale, 128, seed=1)
        key = settings.key(pipeline.SECOND[scale])
        assert pipeline.second_tag(None, scale) == "" and pipeline.second_tag("m1", scale) == f"-m1-{key}"
    smaller = {"train": {"steps": 2000}, "sae": {"steps": 3000}}
    monkeypatch.setitem(pipeline.SECOND, "default", smaller)
    _, train_a = pipeline.transformer_configs("default", seed=0)
    assert pipeline.transformer_configs("default", model_seed=1)[1] == dataclasses.replace(train_a, seed=1, steps=2000)
    assert pipeline.sae_config("default", 128, seed=1, second=True).steps == 3000
    assert pipeline.sae_config("default", 128, seed=1).steps != 3000, "model A's SAE keeps its sizes"
    assert pipeline.second_tag("m1", "default") == f"-m1-{settings.key(smaller)}"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 200), ua=st.integers(1, 40), ub=st.integers(1, 40),
       density=st.sampled_from([0.0, 0.03, 0.3, 1.0]))
def test_sparse_comoment_kernel_equals_its_twin(seed, n, ua, ub, density):
    """kernels.moments: packing both blocks and adding the products of their nonzero entries gives SciPy's
    sparse product (and, through it, the dense one), empty rows and all-zero blocks included; with the
    buffers of one SparseBlocks reused across blocks of different shapes."""
    rng = np.random.default_rng(seed)
    packers = moments.SparseBlocks(1.01), moments.SparseBlocks(1.01)
    for rows in (n, max(1, n // 3)):  # a second, smaller block through the same buffers
        xa, xb = sparse_relu(rng, rows, ua, density), sparse_relu(rng, rows, ub, density)
        pa, pb = packers[0].pack(xa), packers[1].pack(xb)
        assert pa[0][-1] == np.count_nonzero(xa) and pb[0][-1] == np.count_nonzero(xb)
        co = np.zeros((ua, ub))
        moments.sparse_comoment(*pa, *pb, co)
        want = moments.sparse_comoment_numpy(xa, xb)
        np.testing.assert_allclose(co, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(co, xa.T.astype(np.float64) @ xb.astype(np.float64), rtol=1e-10, atol=1e-10)


def test_sparse_blocks_refuse_blocks_at_or_above_their_share():
    """pack takes a block with fewer than share * size nonzero entries and refuses one with that many or
    more (the dense path then runs); share 0 refuses every block, an empty one too."""
    x = np.zeros((10, 10), np.float32)
    x.flat[:9] = 1.0  # 9 of 100 entries
    assert moments.SparseBlocks(0.1).pack(x) is not None
    x.flat[9] = 1.0  # 10 of 100: not below 0.1
    assert moments.SparseBlocks(0.1).pack(x) is None
    assert moments.SparseBlocks(0.0).pack(np.zeros((4, 4), np.float32)) is None
    indptr, idx, val = moments.SparseBlocks(0.5).pack(np.array([[0, 2, 0], [0, 0, 0], [3, 0, 4]], np.float32))
    assert indptr.tolist() == [0, 1, 1, 3] and idx.tolist() == [1, 0, 2] and val.tolist() == [2, 3, 4]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 60), u=st.integers(1, 30),
       density=st.sampled_from([0.0, 0.1, 1.0]), dtype=st.sampled_from([np.float32, np.float64]))
def test_entry_finders_equal_np_nonzero(seed, n, u, density, dtype):
    """The nonzero entries, and the entries above a per-column floor (lesson 07's top-k candidates), in
    np.nonzero's order, through buffers reused by a second, larger block."""
    rng = np.random.default_rng(seed)
    scratch = moments.SparseBlocks(2.0)
    for rows in (n, 2 * n):
        x = sparse_relu(rng, rows, u, density).astype(dtype)
        floor = rng.choice([0.0, 0.5, -np.inf], size=u)
        got, want = scratch.above(x, floor), moments.entries_above_numpy(x, floor)
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
        r, c, v = moments.nonzero_entries(x, scratch)
        wr, wc = np.nonzero(x)
        assert np.array_equal(r, wr) and np.array_equal(c, wc) and np.array_equal(v, x[wr, wc])


def test_promoted_percentile_splits_ties_in_half():
    """A byte tied with others counts each of them as half below it; with every weight equal there is no
    preference (0.5)."""
    present = np.ones(5, bool)
    weights = np.array([1.0, 2.0, 2.0, 2.0, 3.0])  # byte 1: one byte below, two tied -> (1 + 2 * 0.5) / 4
    assert universality.promoted_percentile(weights, np.eye(5)[1], present) == pytest.approx(0.5)
    assert universality.promoted_percentile(np.ones(5), np.eye(5)[0], present) == pytest.approx(0.5)


def test_shuffle_weights_does_not_depend_on_the_order_of_the_dict():
    rng = np.random.default_rng(0)
    params = {"b": rng.normal(size=50), "a": rng.normal(size=(5, 10)), "W": rng.normal(size=30)}
    reordered = {k: params[k] for k in ("W", "a", "b")}
    one, two = universality.shuffle_weights(params, seed=3), universality.shuffle_weights(reordered, seed=3)
    assert all(np.array_equal(one[k], two[k]) for k in params), "the same seed must shuffle the same model alike"
