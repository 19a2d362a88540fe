"""Every transformer kernel equals its NumPy twin (and the layer-shaped wrappers equal tinymono.layers).

Sizes stay small so these also pass, with readable tracebacks, under NUMBA_DISABLE_JIT=1. float64 runs
are compared at 1e-12 (the same formulas in a different order); float32 at float32 round-off.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymono import layers as L
from tinymono.kernels import transformer as K

SETTINGS = settings(max_examples=20, deadline=None)
seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from([np.float64, np.float32])
TOL = {np.float64: dict(rtol=1e-11, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}


def close(actual, expected, dtype, what):
    np.testing.assert_allclose(actual, expected, **TOL[dtype], err_msg=what)


@SETTINGS
@given(seeds, st.integers(1, 3), st.integers(1, 9), st.integers(1, 3), st.integers(1, 5), dtypes)
def test_attention_core_forward(seed, b, t, h, e, dtype):
    rng = np.random.default_rng(seed)
    qkv = (2 * rng.standard_normal((b, t, 3, h, e))).astype(dtype)
    scale = dtype(1 / math.sqrt(e))
    pattern, z = np.full((b, h, t, t), np.nan, dtype), np.full((b, t, h, e), np.nan, dtype)
    K.in_parallel(K.attention_heads_forward, b * h, qkv, scale, pattern, z)
    pattern_np, z_np = K.attention_core_forward_numpy(qkv, scale)
    close(pattern, pattern_np, dtype, "attention pattern: check the causal loop bound j <= i and the softmax")
    assert np.all(np.triu(pattern, k=1) == 0), "the pattern must be exactly 0 above the diagonal (the future)"
    close(z, z_np, dtype, "z = pattern @ v per head")


@SETTINGS
@given(seeds, st.integers(1, 3), st.integers(1, 9), st.integers(1, 3), st.integers(1, 5), dtypes)
def test_attention_core_backward(seed, b, t, h, e, dtype):
    rng = np.random.default_rng(seed)
    qkv = (2 * rng.standard_normal((b, t, 3, h, e))).astype(dtype)
    scale = dtype(1 / math.sqrt(e))
    pattern, _ = K.attention_core_forward_numpy(qkv, scale)
    dz = rng.standard_normal((b, t, h, e)).astype(dtype)
    dqkv = np.full_like(qkv, np.nan)
    K.in_parallel(K.attention_heads_backward, b * h, qkv, pattern.astype(dtype), dz, scale, dqkv)
    expected = K.attention_core_backward_numpy(qkv, pattern, dz, scale)
    for i, name in enumerate("qkv"):
        close(dqkv[:, :, i], expected[:, :, i], dtype, f"d{name}: compare with the softmax backward "
              "dscores = pattern * (dpattern - rowsum(pattern * dpattern))")


@SETTINGS
@given(seeds, st.integers(1, 2), st.integers(1, 6), st.integers(1, 3), st.integers(1, 3), dtypes)
def test_attention_wrapper_matches_layers(seed, b, t, h, e, dtype):
    rng = np.random.default_rng(seed)
    d = h * e + 1  # d_model need not equal H * E for the layer itself
    args = [rng.standard_normal((b, t, d)),
            *(a for _ in range(3) for a in (rng.standard_normal((h, d, e)) / np.sqrt(d), rng.standard_normal((h, e)))),
            rng.standard_normal((h, e, d)) / np.sqrt(e), rng.standard_normal(d)]
    args = [a.astype(dtype) for a in args]
    out, cache = K.attention_forward(*args)
    out_ref, cache_ref = L.attention_forward(*args)
    close(out, out_ref, dtype, "attention output")
    close(cache.pattern, cache_ref.pattern, dtype, "attention pattern")
    dout = rng.standard_normal(out.shape).astype(dtype)
    names = ["x", "W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O"]
    for name, g, g_ref in zip(names, K.attention_backward(dout, cache), L.attention_backward(dout, cache_ref)):
        assert g.shape == g_ref.shape, f"d{name}: shape {g.shape}, layers.py gives {g_ref.shape}"
        atol = 1e-10 if name == "b_K" else 0  # zero in theory: compare round-off with round-off absolutely
        np.testing.assert_allclose(g, g_ref, rtol=TOL[dtype]["rtol"], atol=max(atol, 10 * TOL[dtype]["atol"]),
                                   err_msg=f"d{name}: the fused W_qkv's columns must be (3, H, E) ordered")


@SETTINGS
@given(seeds, st.integers(1, 7), st.integers(2, 9), dtypes)
def test_layernorm(seed, n, d, dtype):
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((n, 2, d)) + rng.standard_normal()).astype(dtype)
    w, b = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    out, cache = K.layernorm_forward(x, w, b)
    out_ref, cache_ref = L.layernorm_forward(x, w, b)
    close(out, out_ref, dtype, "layernorm forward")
    dout = rng.standard_normal(x.shape).astype(dtype)
    for name, g, g_ref in zip(["dx", "dw", "db"], K.layernorm_backward(dout, cache),
                              L.layernorm_backward(dout, cache_ref)):
        close(g, g_ref, dtype, f"layernorm {name}: the chunked column sums must cover every row once")


def test_layernorm_column_sums_do_not_depend_on_row_count():
    """More rows than chunks, fewer rows than chunks, and exactly as many."""
    rng = np.random.default_rng(0)
    for n in (1, K.N_CHUNKS - 1, K.N_CHUNKS, 3 * K.N_CHUNKS + 5):
        x, dout = rng.standard_normal((n, 4)), rng.standard_normal((n, 4))
        _, cache = K.layernorm_forward(x, np.ones(4), np.zeros(4))
        _, dw, db = K.layernorm_backward(dout, cache)
        np.testing.assert_allclose(db, dout.sum(axis=0), rtol=1e-12, err_msg=f"db with {n} rows")
        np.testing.assert_allclose(dw, (dout * cache.xhat).sum(axis=0), rtol=1e-12, err_msg=f"dw with {n} rows")


@SETTINGS
@given(seeds, st.integers(1, 9), st.integers(1, 9), dtypes)
def test_bias_relu_and_its_backward(seed, n, m, dtype):
    rng = np.random.default_rng(seed)
    h, b = rng.standard_normal((n, m)).astype(dtype), rng.standard_normal(m).astype(dtype)
    expected = K.bias_relu_numpy(h, b)
    K.in_parallel(K.bias_relu_rows, n, h, b)  # in place
    np.testing.assert_array_equal(h, expected, err_msg="bias + ReLU")
    dpost = rng.standard_normal((n, m)).astype(dtype)
    dpre, db_parts = np.full_like(dpost, np.nan), np.full((K.N_CHUNKS, m), np.nan, dtype)
    K.in_parallel(K.relu_backward_chunks, K.N_CHUNKS, dpost, h, dpre, db_parts)
    expected, expected_db = K.relu_backward_numpy(dpost, h)
    np.testing.assert_array_equal(dpre, expected, err_msg="the ReLU passes gradient only where its output > 0")
    close(db_parts.sum(axis=0), expected_db, dtype, "bias gradient: the chunks' column sums must cover every row once")


@SETTINGS
@given(seeds, st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 6), dtypes)
def test_linear_relu_matches_layers(seed, b, t, i, o, dtype):
    rng = np.random.default_rng(seed)
    x, W, bias = (rng.standard_normal(s).astype(dtype) for s in ((b, t, i), (i, o), (o,)))
    post, cache = K.linear_relu_forward(x, W, bias)
    pre, lin_cache = L.linear_forward(x, W, bias)
    post_ref, relu_cache = L.relu_forward(pre)
    close(post, post_ref, dtype, "relu(x @ W + b)")
    dout = rng.standard_normal(post.shape).astype(dtype)
    expected = L.linear_backward(L.relu_backward(dout, relu_cache)[0], lin_cache)
    for name, g, g_ref in zip(["dx", "dW", "db"], K.linear_relu_backward(dout, cache), expected):
        close(g, g_ref, dtype, f"linear+relu {name}")
    assert np.isfinite(dout).all(), "the backward must not modify the caller's dout"


@SETTINGS
@given(seeds, st.integers(1, 9), st.integers(2, 12), dtypes)
def test_cross_entropy(seed, n, v, dtype):
    rng = np.random.default_rng(seed)
    logits = (4 * rng.standard_normal((n, v))).astype(dtype)
    targets = rng.integers(0, v, size=n)
    losses, dlogits = np.empty(n, dtype), np.empty_like(logits)
    K.in_parallel(K.cross_entropy_rows, n, logits, targets, losses, dlogits)
    losses_ref, dlogits_ref = K.cross_entropy_rows_numpy(logits, targets)
    close(losses, losses_ref, dtype, "per-token loss = log(sum exp) + max - logit[target]")
    close(dlogits, dlogits_ref, dtype, "dlogits = (softmax - onehot) / n")
    loss, _ = K.softmax_cross_entropy(logits, targets)
    assert abs(loss - losses_ref.mean()) <= 1e-5 * abs(losses_ref.mean()) + 1e-6


def test_cross_entropy_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4]])
    loss, dlogits = K.softmax_cross_entropy(logits, np.array([0, 1]))
    assert np.isfinite(loss) and abs(loss - 1e4 / 2) < 1e-9, \
        f"loss {loss} should be (0 + 1e4) / 2: subtract the row max before exponentiating"
    np.testing.assert_allclose(dlogits, [[0, 0, 0], [0.5, -0.5, 0]], atol=1e-12)
    with pytest.raises(ValueError, match="targets must lie in"):
        K.softmax_cross_entropy(logits, np.array([3, 0]))  # the kernel would read past the row


@SETTINGS
@given(seeds, st.integers(1, 3), st.integers(1, 6), st.integers(1, 5), st.integers(1, 4), dtypes)
def test_embedding(seed, b, t, v, d, dtype):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, v, size=(b, t)).astype(np.uint16)  # a small vocabulary repeats ids
    W_E, W_pos = rng.standard_normal((v, d)).astype(dtype), rng.standard_normal((t + 2, d)).astype(dtype)
    resid, cache = K.embed_forward(tokens, W_E, W_pos)
    np.testing.assert_array_equal(resid, W_E[tokens] + W_pos[:t])
    dresid = rng.standard_normal((b, t, d)).astype(dtype)
    dW_E, dW_pos = K.embed_backward(dresid, cache)
    dW_E_ref, dW_pos_ref = K.embed_backward_numpy(tokens, dresid, v, t + 2)
    close(dW_E, dW_E_ref, dtype, "dW_E: repeated ids must add up (a scatter-add)")
    close(dW_pos, dW_pos_ref, dtype, "dW_pos: summed over the batch; rows past T stay 0")


@SETTINGS
@given(seeds, st.integers(1, 4), st.integers(1, 6), st.data())
def test_results_do_not_depend_on_how_the_work_is_cut(seed, b, t, data):
    """Each kernel writes only the outputs of its own range, so any cut gives bit-identical results (and a
    resumed training run stays identical on a machine with another number of cores)."""
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((b, t, 3, 2, 3)).astype(np.float32)
    scale = np.float32(1 / math.sqrt(3))
    n = b * 2
    cut = data.draw(st.integers(0, n), label="cut")
    whole = np.zeros((b, 2, t, t), np.float32), np.zeros((b, t, 2, 3), np.float32)
    parts = np.zeros((b, 2, t, t), np.float32), np.zeros((b, t, 2, 3), np.float32)
    K.attention_heads_forward(qkv, scale, *whole, 0, n)
    K.attention_heads_forward(qkv, scale, *parts, 0, cut)
    K.attention_heads_forward(qkv, scale, *parts, cut, n)
    for w, p in zip(whole, parts):
        np.testing.assert_array_equal(w, p, err_msg=f"attention cut at pair {cut} of {n}")
    dz = rng.standard_normal((b, t, 2, 3)).astype(np.float32)
    d_whole, d_parts = np.zeros_like(qkv), np.zeros_like(qkv)
    K.attention_heads_backward(qkv, whole[0], dz, scale, d_whole, 0, n)
    K.attention_heads_backward(qkv, whole[0], dz, scale, d_parts, 0, cut)
    K.attention_heads_backward(qkv, whole[0], dz, scale, d_parts, cut, n)
    np.testing.assert_array_equal(d_whole, d_parts)
    x = rng.standard_normal((5 * b * t, 4)).astype(np.float32)
    _, cache = K.layernorm_forward(x, np.ones(4, np.float32), np.zeros(4, np.float32))
    outs = []
    for cut in (0, data.draw(st.integers(0, K.N_CHUNKS), label="chunk cut")):
        dx, dw, db = np.empty_like(x), np.empty((K.N_CHUNKS, 4), np.float32), np.empty((K.N_CHUNKS, 4), np.float32)
        K.layernorm_chunks_backward(x, cache.xhat, cache.inv_std, cache.w, dx, dw, db, 0, cut)
        K.layernorm_chunks_backward(x, cache.xhat, cache.inv_std, cache.w, dx, dw, db, cut, K.N_CHUNKS)
        outs.append((dx, dw.sum(0), db.sum(0)))
    for a, c in zip(*outs):
        np.testing.assert_array_equal(a, c, err_msg="layer-norm column sums must not depend on the thread split")


@SETTINGS
@given(st.lists(st.floats(-800.0, 0.0), min_size=1, max_size=50))
def test_exp_nonpositive_matches_numpy(xs):
    x = np.array(xs + [0.0, -1e-300, -np.log(2) / 2, -745.0])
    got = np.array([K.exp_nonpositive(v) for v in x])
    ref = np.exp(np.maximum(x, -700.0))
    err = np.abs(got - ref) / ref
    assert err.max() <= 4e-16, f"exp polynomial off by {err.max():.1e} relative at x = {x[np.argmax(err)]!r}: " \
                               "check the Taylor coefficients and the two-part ln 2 reduction"
    assert np.isnan(K.exp_nonpositive(np.nan)), "a NaN must stay NaN for the non-finite guard"


@SETTINGS
@given(st.lists(st.floats(-100.0, 0.0, width=32), min_size=1, max_size=50))
def test_exp_nonpositive32_matches_numpy(xs):
    x = np.array(xs + [0.0, -1e-30, -np.log(2) / 2, -86.9], np.float32)
    got = np.array([K.exp_nonpositive32(v) for v in x], np.float64)  # numba hands a float32 back as a float
    assert np.all(got.astype(np.float32) == got), "float32 in, float32 out (float64 arithmetic would halve " \
                                                  "the vector width)"
    ref = np.exp(np.maximum(x.astype(np.float64), -87.0))
    ulps = np.abs(got - ref) / np.spacing(ref.astype(np.float32))  # in units of float32's spacing at the result
    assert ulps.max() <= 1.5, f"float32 exp polynomial off by {ulps.max():.2f} ulp at x = {x[np.argmax(ulps)]!r} " \
                              "(measured: 0.93 with fused multiply-adds, 1.2 without): check the Taylor " \
                              "coefficients (degree 7) and the two-part ln 2"
    assert K.exp_nonpositive32(np.float32(0.0)) == 1.0, "exp(0) must be exactly 1 (the softmax's largest weight)"
    assert np.isnan(K.exp_nonpositive32(np.float32(np.nan))), "a NaN must stay NaN for the non-finite guard"


def _bad_calls(rng):
    """(what, the fast layer's call, the reference layer's call), each given arguments the reference rejects."""
    x, w = rng.standard_normal((2, 7)), np.ones(3)
    q = rng.standard_normal((2, 4, 3))  # W_Q [H, D, E] for x [B, T, 3]: D = 4 does not match
    attn = (rng.standard_normal((1, 2, 3)), q, np.zeros((2, 3)), q, np.zeros((2, 3)), q, np.zeros((2, 3)),
            rng.standard_normal((2, 3, 4)), np.zeros(4))
    logits, targets = rng.standard_normal((4, 5, 7)), np.zeros((4, 3), dtype=np.int64)
    W_E = rng.standard_normal((5, 3))
    return [
        ("layernorm", lambda: K.layernorm_forward(x, w, w), lambda: L.layernorm_forward(x, w, w)),
        ("linear", lambda: K.linear_forward(x, w[:, None], w[:1]), lambda: L.linear_forward(x, w[:, None], w[:1])),
        ("linear+relu", lambda: K.linear_relu_forward(x, w[:, None], w[:1]),
         lambda: L.linear_forward(x, w[:, None], w[:1])),
        ("cross-entropy", lambda: K.softmax_cross_entropy(logits, targets),
         lambda: L.softmax_cross_entropy(logits, targets)),
        ("cross-entropy ids", lambda: K.softmax_cross_entropy(logits, targets[:, :1] + 9 + np.zeros((4, 5), int)),
         lambda: L.softmax_cross_entropy(logits, targets[:, :1] + 9 + np.zeros((4, 5), int))),
        ("embedding", lambda: K.embed_forward(np.array([[0, -1]]), W_E, W_E),
         lambda: L.embedding_forward(np.array([[0, -1]]), W_E)),
        ("attention", lambda: K.attention_forward(*attn), lambda: L.attention_forward(*attn)),
    ]


@pytest.mark.parametrize("case", range(7))
def test_fast_layers_reject_what_the_reference_rejects(case):
    """The kernels index arrays without bounds checks (a target past a row crashed the process): the fast
    layers run the reference layers' argument checks, and fail with the same message."""
    what, fast, reference = _bad_calls(np.random.default_rng(case))[case]
    with pytest.raises(ValueError) as ref_error:
        reference()
    with pytest.raises(ValueError) as fast_error:
        fast()
    assert str(fast_error.value) == str(ref_error.value), f"{what}: the fast layer must say what the reference says"


def test_attention_kernel_with_scores_past_float32s_exp_range():
    """In float32, exp overflows past 88: scores near a thousand must still give the reference's pattern."""
    qkv = (30 * np.random.default_rng(0).standard_normal((1, 6, 3, 2, 4))).astype(np.float32)
    scale = np.float32(0.5)
    pattern, z = np.empty((1, 2, 6, 6), np.float32), np.empty((1, 6, 2, 4), np.float32)
    K.in_parallel(K.attention_heads_forward, 2, qkv, scale, pattern, z)
    want, _ = K.attention_core_forward_numpy(qkv, scale)
    assert np.isfinite(pattern).all() and np.isfinite(z).all()
    np.testing.assert_allclose(pattern, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_layernorm_kernel_takes_its_eps(eps):
    rng = np.random.default_rng(0)
    x, w, b = 0.1 * rng.standard_normal((4, 6)), rng.standard_normal(6), rng.standard_normal(6)
    np.testing.assert_allclose(K.layernorm_forward(x, w, b, eps)[0], L.layernorm_forward(x, w, b, eps)[0], rtol=1e-11)
