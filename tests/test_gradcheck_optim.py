"""The gradient checker catches wrong gradients; Adam, clipping and schedules match hand computations."""
import math

import numpy as np
import pytest

from tinymono import layers as L
from tinymono.gradcheck import check_gradients, check_layer, format_table, relative_error
from tinymono.optim import Adam, Schedule, clip_grad_norm


def test_gradcheck_catches_a_wrong_backward():
    def wrong_backward(dout, cache):  # dW off by 1%: a subtle slip, such as a wrong scale factor
        dx, dW, db = L.linear_backward(dout, cache)
        return dx, dW * 1.01, db

    rng = np.random.default_rng(0)
    args = [rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)]
    errs = check_layer(L.linear_forward, wrong_backward, args, ["x", "W", "b"], rng=rng)
    assert errs["x"] < 1e-8 and errs["b"] < 1e-8
    assert errs["W"] == pytest.approx(0.01 / 1.01, rel=1e-3), "a 1% error must show as ~1% relative error"
    assert "FAIL" in format_table(errs, 1e-6) and "W" in format_table(errs, 1e-6)


def test_gradcheck_samples_large_tensors():
    x = np.linspace(-1.0, 1.0, 1000)
    errs = check_gradients(lambda: x**3, {"x": x}, {"x": 3 * x**2}, np.ones(1000), max_entries=10)
    assert errs["x"] < 1e-8
    with pytest.raises(TypeError, match="float64"):
        check_gradients(lambda: x, {"x": x.astype(np.float32)}, {"x": x}, 1.0)


def test_relative_error_floor():
    assert relative_error([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert relative_error([1e-12], [-1e-12]) < 1e-4, "a gradient that is zero in theory must not fail on round-off"
    assert relative_error([1.0, 1e-12], [1.0, 0.0]) < 1e-8  # tiny entries judged against the tensor's scale
    assert relative_error([1.0], [2.0]) == pytest.approx(0.5)


def test_adam_matches_hand_computation():
    p = {"w": np.array([1.0, -2.0])}
    g = {"w": np.array([0.5, -1.0])}
    opt = Adam(p, lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    opt.step(p, g)
    # step 1: m_hat = g, v_hat = g^2, so the update is lr * sign(g) (up to eps)
    np.testing.assert_allclose(p["w"], [0.9, -1.9], rtol=1e-7)
    p1 = p["w"].copy()
    opt.step(p, g)
    m = 0.9 * 0.1 * g["w"] + 0.1 * g["w"]
    v = 0.99 * 0.01 * g["w"] ** 2 + 0.01 * g["w"] ** 2
    expected = p1 - 0.1 * (m / (1 - 0.81)) / (np.sqrt(v / (1 - 0.99**2)) + 1e-8)
    np.testing.assert_allclose(p["w"], expected, rtol=1e-12)


def test_adamw_decays_only_matrices():
    p = {"W": np.ones((2, 2)), "b": np.ones(2)}
    opt = Adam(p, lr=0.1, weight_decay=0.5)
    opt.step(p, {"W": np.zeros((2, 2)), "b": np.zeros(2)})
    np.testing.assert_allclose(p["W"], 0.95)  # 1 * (1 - 0.1 * 0.5), no gradient step
    np.testing.assert_allclose(p["b"], 1.0)


def test_adam_reset_rows_and_state_roundtrip():
    rng = np.random.default_rng(0)
    p = {"W": rng.standard_normal((4, 3))}
    opt = Adam(p)
    opt.step(p, {"W": rng.standard_normal((4, 3))})
    opt.reset("W", [1, 3], axis=0)
    assert np.all(opt.m["W"][[1, 3]] == 0) and np.all(opt.v["W"][[1, 3]] == 0)
    assert np.all(opt.m["W"][[0, 2]] != 0), "reset must leave the other rows alone"
    opt.reset("W", np.array([True, False, False]), axis=1)
    assert np.all(opt.m["W"][:, 0] == 0) and np.all(opt.m["W"][[0, 2], 1:] != 0)
    opt2 = Adam(p)
    opt2.load_state_arrays(opt.state_arrays())
    assert opt2.t == 1 and np.array_equal(opt2.v["W"], opt.v["W"])


def test_adam_rejects_bad_settings():
    with pytest.raises(ValueError, match="lr"):
        Adam({"w": np.zeros(1)}, lr=-1)


@pytest.mark.parametrize("fused", [False, True])
def test_adam_rejects_a_gradient_of_the_wrong_shape(fused):
    """A gradient [8] for W [4, 8] (a backward that forgot to keep a batch axis, or summed the wrong one)
    would broadcast into every row; Adam refuses it before touching anything."""
    W = np.ones((4, 8))
    opt = Adam({"W": W}, fused=fused)
    for grads in ({"W": np.full(8, 0.5)}, {"V": np.ones((4, 8))}):
        with pytest.raises(ValueError, match="needs a gradient of the same shape"):
            opt.step({"W": W}, grads)
    assert np.all(W == 1.0) and opt.t == 0, "a refused step must change nothing"


def test_clip_grad_norm():
    g = {"a": np.array([3.0]), "b": np.array([4.0])}
    assert clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    assert math.hypot(g["a"][0], g["b"][0]) == pytest.approx(1.0)
    g = {"a": np.array([0.3])}
    clip_grad_norm(g, 1.0)
    assert g["a"][0] == 0.3, "gradients already under the limit must not change"


def test_schedules():
    s = Schedule(1.0, 100, warmup=10, decay="linear", decay_start=0.5)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(49) == 1.0 and s(75) == pytest.approx(0.5) and s(100) == pytest.approx(0.0)
    c = Schedule(2.0, 100, decay="cosine", final_ratio=0.1)
    assert c(0) == pytest.approx(2.0) and c(50) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5)) and c(100) == pytest.approx(0.2)
    assert Schedule(1.0, 10)(7) == 1.0
    w = Schedule(1.0, 100, warmup=10, decay="cosine", final_ratio=0.1)  # the transformer's schedule
    assert w(9) == pytest.approx(1.0) and w(10) == pytest.approx(1.0), "decay must start after the warm-up"
    assert w(55) == pytest.approx(0.1 + 0.9 * 0.5), "cosine decay runs over the steps after the warm-up"
    for bad in (dict(warmup=20), dict(decay="step"), dict(decay_start=1.5)):
        with pytest.raises(ValueError):
            Schedule(1.0, 10, **bad)


def test_adamw_decays_before_the_adam_step():
    p = {"W": np.array([[1.0, -2.0]])}
    g = {"W": np.array([[0.5, -1.0]])}
    opt = Adam(p, lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5)
    opt.step(p, g)
    # decoupled AdamW (Loshchilov & Hutter; torch.optim.AdamW): p <- p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps);
    # step 1: m_hat = g, v_hat = g^2
    w0 = np.array([[1.0, -2.0]])
    want = w0 * (1 - 0.1 * 0.5) - 0.1 * g["W"] / (np.abs(g["W"]) + 1e-8)
    np.testing.assert_allclose(p["W"], want, rtol=1e-12)


def test_adamw_decays_by_the_learning_rate_of_the_step():
    """Decoupled weight decay shrinks W by lr * weight_decay with the step's learning rate (the schedule's), not
    the rate Adam was built with; with zero gradients that shrink is all that happens."""
    W = np.full((2, 3), 2.0)
    opt = Adam({"W": W}, lr=0.1, weight_decay=0.5)
    opt.step({"W": W}, {"W": np.zeros_like(W)}, lr=0.01)
    np.testing.assert_allclose(W, 2.0 * (1 - 0.01 * 0.5), rtol=1e-15)
