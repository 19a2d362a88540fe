"""Every layer's backward against central differences (float64, hypothesis-drawn shapes and values)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymono import layers as L
from tinymono.gradcheck import check_layer, format_table

BUDGET = 1e-6  # float64 central differences of a correct backward land near 1e-9; a wrong one near 1
SETTINGS = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**32 - 1)
dims = st.integers(1, 5)


def assert_grads_ok(errors, what):
    bad = {k: v for k, v in errors.items() if not v <= BUDGET}
    assert not bad, (f"{what}: backward disagrees with central differences. Check the transposes and which "
                     f"axes you sum over.\n{format_table(errors, BUDGET)}")


def away_from_zero(rng, shape, margin=0.05):
    """Values with |x| >= margin, so a finite difference (eps 1e-6) never crosses a kink at 0."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (margin + np.abs(x))


@SETTINGS
@given(seeds, dims, dims, dims, dims)
def test_linear(seed, b, t, i, o):
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal((b, t, i)), rng.standard_normal((i, o)), rng.standard_normal(o)]
    assert_grads_ok(check_layer(L.linear_forward, L.linear_backward, args, ["x", "W", "b"], rng=rng), "linear")


@SETTINGS
@given(seeds, dims, dims)
def test_relu(seed, n, d):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, (n, d))
    assert_grads_ok(check_layer(L.relu_forward, L.relu_backward, [x], ["x"], rng=rng), "relu")
    out, _ = L.relu_forward(x)
    np.testing.assert_array_equal(out, np.maximum(x, 0))


@SETTINGS
@given(seeds, dims, dims, st.sampled_from(["tanh", "none"]))
def test_gelu(seed, n, d, approximate):
    rng = np.random.default_rng(seed)
    x = 3 * rng.standard_normal((n, d))
    errs = check_layer(L.gelu_forward, L.gelu_backward, [x], ["x"], rng=rng, approximate=approximate)
    assert_grads_ok(errs, f"gelu ({approximate})")


def test_gelu_values():
    # GELU(x) = x Phi(x): Phi(1) = 0.8413447460685429; the tanh formula is within 1e-3 of it
    x = np.array([-1.0, 0.0, 1.0])
    exact, _ = L.gelu_forward(x, approximate="none")
    np.testing.assert_allclose(exact, [-0.15865525393145707, 0.0, 0.8413447460685429], rtol=1e-12)
    approx, _ = L.gelu_forward(x, approximate="tanh")
    np.testing.assert_allclose(approx, exact, atol=1e-3)
    with pytest.raises(ValueError, match="approximate"):
        L.gelu_forward(x, approximate="sigmoid")


@SETTINGS
@given(seeds, dims, st.integers(3, 8))  # with d=2 every row normalises to (-1, 1): dx is ~0, pure round-off
def test_layernorm(seed, n, d):
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal((n, 2, d)), rng.standard_normal(d), rng.standard_normal(d)]
    # Layer norm bends on the scale of each row's spread, so the difference step must be small beside the
    # narrowest row's standard deviation: a row of three normal draws can have std 0.02, where a step of 1e-3
    # leaves a truncation error near 1e-5 in a correct backward.
    eps = 1e-3 * min(1.0, float(args[0].std(-1).min()))
    assert_grads_ok(check_layer(L.layernorm_forward, L.layernorm_backward, args, ["x", "w", "b"], rng=rng, eps=eps),
                    "layernorm")


def test_layernorm_constant_rows():
    x = np.full((3, 8), 7.0)
    w, b = np.ones(8), np.arange(8.0)
    out, cache = L.layernorm_forward(x, w, b)
    np.testing.assert_allclose(out, np.broadcast_to(b, x.shape), err_msg="a constant row normalises to 0, leaving b")
    g = np.random.default_rng(0).standard_normal(x.shape)
    w = np.random.default_rng(1).standard_normal(8)
    out, cache = L.layernorm_forward(x, w, b)
    dx, dw, db = L.layernorm_backward(g, cache)
    # x_hat = 0 on a constant row, so dx = (g w - mean(g w)) / sqrt(0 + eps), dw = sum g x_hat = 0, db = sum g
    np.testing.assert_allclose(dx, (g * w - (g * w).mean(-1, keepdims=True)) / np.sqrt(1e-5), rtol=1e-9)
    np.testing.assert_allclose(dw, 0, atol=1e-12)
    np.testing.assert_allclose(db, g.sum(0), rtol=1e-12)


@SETTINGS
@given(seeds, dims, dims, st.integers(1, 6), dims)
def test_embedding(seed, b, t, v, d):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, v, size=(b, t))  # small vocab: repeated ids are common, which add.at must sum
    W_E = rng.standard_normal((v, d))
    assert_grads_ok(check_layer(L.embedding_forward, L.embedding_backward, [ids, W_E], ["ids", "W_E"], rng=rng),
                    "embedding")


@SETTINGS
@given(seeds, dims, dims, st.integers(2, 7))
def test_cross_entropy(seed, b, t, v):
    rng = np.random.default_rng(seed)
    logits = 2 * rng.standard_normal((b, t, v))
    targets = rng.integers(0, v, size=(b, t))
    errs = check_layer(L.cross_entropy_forward, L.cross_entropy_backward, [logits, targets], ["logits", "targets"],
                       rng=rng)
    assert_grads_ok(errs, "cross-entropy")
    # independent computation of the loss: -mean log(softmax) at the targets
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = -np.mean(np.log(np.take_along_axis(p, targets[..., None], -1)))
    loss, cache = L.cross_entropy_forward(logits, targets)
    assert loss == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(L.per_token_loss(cache).mean(), expected, rtol=1e-12)


def test_cross_entropy_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4]])
    loss, dlogits = L.softmax_cross_entropy(logits, np.array([0, 1]))
    # token 0: the target has all the mass (loss 0); token 1: log-prob of the middle logit is -1e4
    assert np.isfinite(loss) and loss == pytest.approx(1e4 / 2), f"loss {loss} should be (0 + 1e4) / 2"
    np.testing.assert_allclose(dlogits, [[0, 0, 0], [0.5, -0.5, 0]], atol=1e-12)
    _, cache = L.cross_entropy_forward(logits, np.array([1, 2]))
    np.testing.assert_array_equal(L.per_token_loss(cache), [1e4, 2e4],
                                  err_msg="per-token losses must be finite where the target's probability underflows")


def attention_args(rng, b, t, d, h, e):
    return [rng.standard_normal((b, t, d)),
            *(a for _ in range(3) for a in (rng.standard_normal((h, d, e)) / np.sqrt(d), rng.standard_normal((h, e)))),
            rng.standard_normal((h, e, d)) / np.sqrt(e), rng.standard_normal(d)]


ATTN_NAMES = ["x", "W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O"]


@SETTINGS
@given(seeds, st.integers(1, 2), st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4))
def test_attention(seed, b, t, d, h, e):
    rng = np.random.default_rng(seed)
    args = attention_args(rng, b, t, d, h, e)
    errors = check_layer(L.attention_forward, L.attention_backward, args, ATTN_NAMES, rng=rng)
    # The key bias's gradient is zero in theory (adding one vector to every key shifts all of a query's
    # scores by the same amount, which the softmax ignores), so a relative error would only compare
    # round-off with round-off; check that it is zero instead.
    del errors["b_K"]
    assert_grads_ok(errors, "attention")
    _, cache = L.attention_forward(*args)
    db_K = L.attention_backward(rng.standard_normal((b, t, d)), cache)[4]
    assert np.abs(db_K).max() < 1e-10, f"d b_K must vanish (softmax is shift-invariant), got {np.abs(db_K).max():.2e}"


@SETTINGS
@given(seeds, st.integers(2, 8), st.integers(1, 3), st.data())
def test_attention_is_causal(seed, t, h, data):
    rng = np.random.default_rng(seed)
    args = attention_args(rng, 2, t, 6, h, 3)
    out, cache = L.attention_forward(*args)
    pos = data.draw(st.integers(0, t - 1))
    x2 = args[0].copy()
    x2[:, pos] += 10 * rng.standard_normal(x2[:, pos].shape)
    out2, _ = L.attention_forward(x2, *args[1:])
    np.testing.assert_array_equal(out2[:, :pos], out[:, :pos],
                                  err_msg=f"changing position {pos} changed earlier outputs: the mask leaks the future")
    assert np.all(np.triu(cache.pattern, k=1) == 0), "the attention pattern must be exactly 0 above the diagonal"
    np.testing.assert_allclose(cache.pattern.sum(-1), 1.0, rtol=1e-12)


def test_attention_matches_a_loop():
    """An independent, deliberately naive computation, one head and one query at a time."""
    rng = np.random.default_rng(1)
    x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O = attention_args(rng, 2, 5, 6, 3, 4)
    out, _ = L.attention_forward(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O)
    expected = np.tile(b_O, (2, 5, 1))
    for bi in range(2):
        for hi in range(3):
            q = x[bi] @ W_Q[hi] + b_Q[hi]
            k = x[bi] @ W_K[hi] + b_K[hi]
            v = x[bi] @ W_V[hi] + b_V[hi]
            for ti in range(5):
                s = k[: ti + 1] @ q[ti] / 2.0  # sqrt(d_head=4)
                p = np.exp(s - s.max())
                p /= p.sum()
                expected[bi, ti] += (p @ v[: ti + 1]) @ W_O[hi]
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: L.linear_forward(np.zeros((2, 3)), np.zeros((4, 5)), np.zeros(5)), r"linear expects .* x \(2, 3\), W \(4, 5\)"),
    (lambda: L.linear_forward(np.zeros((2, 4)), np.zeros((4, 5)), np.zeros(4)), r"b \(4,\)"),
    (lambda: L.layernorm_forward(np.zeros((2, 4)), np.ones(3), np.zeros(3)), r"layernorm expects .* w \(3,\)"),
    (lambda: L.embedding_forward(np.array([0, 7]), np.zeros((5, 2))), r"ids must lie in \[0, 5\)"),
    (lambda: L.embedding_forward(np.array([0.5]), np.zeros((5, 2))), "ids must be integers"),
    (lambda: L.cross_entropy_forward(np.zeros((2, 3, 4)), np.zeros((2, 4), int)), "targets"),
    (lambda: L.cross_entropy_forward(np.zeros((2, 4)), np.array([1, -1])), r"targets must lie in \[0, 4\)"),
    (lambda: L.attention_forward(*attention_args(np.random.default_rng(0), 1, 3, 4, 2, 3)[:7],
                                 np.zeros((2, 4, 4)), np.zeros(4)), r"W_O should have shape \(2, 3, 4\)"),
    (lambda: L.attention_forward(np.zeros((3, 4)), *attention_args(np.random.default_rng(0), 1, 3, 4, 2, 3)[1:]),
     r"attention expects x \[B, T, D\]"),
])
def test_bad_input_names_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_gelu_tanh_values():
    out, _ = L.gelu_forward(np.array([-1.0, 1.0, 2.0]), approximate="tanh")
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), evaluated independently with math.tanh
    np.testing.assert_allclose(out, [-0.15880800939172324, 0.8411919906082768, 1.954597694087775], rtol=1e-13)


def test_causal_softmax_of_huge_scores_stays_finite():
    """Scores of a thousand overflow exp unless each row's maximum is subtracted first (inf / inf = NaN)."""
    scores = 1e3 * np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    pattern = L.causal_softmax(scores)
    assert np.isfinite(pattern).all()
    np.testing.assert_allclose(pattern.sum(axis=-1), 1.0, rtol=1e-12)
