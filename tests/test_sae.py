"""The SAE: loss definition, hand-written backward vs central differences, decoder constraint, init,
geometric median and config validation. Resampling and training through the loop: test_sae_training.py."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq, minimize

from tinymono import sae
from tinymono.gradcheck import check_gradients, check_layer, format_table

BUDGET = 1e-7  # float64 four-point differences of a correct backward land near 1e-9
SETTINGS = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**32 - 1)
MARGIN = 0.05  # |pre-activation| >= this: a perturbation of 2e-3 never flips a ReLU


def params_away_from_kinks(rng, cfg, B):
    """Float64 params and a batch whose pre-activations all stay MARGIN away from the ReLU kink."""
    for _ in range(200):
        params = sae.init(cfg, rng)
        params["b_enc"] = rng.standard_normal(cfg.d_sae) * 0.5
        params["b_dec"] = rng.standard_normal(cfg.d_in) * 0.5
        x = rng.standard_normal((B, cfg.d_in))
        pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
        if np.abs(pre).min() > MARGIN:
            return params, x
    pytest.skip("could not draw pre-activations away from 0")  # never seen at these sizes


def assert_grads_ok(errors, what):
    bad = {k: v for k, v in errors.items() if not v <= BUDGET}
    assert not bad, f"{what}: backward disagrees with central differences.\n{format_table(errors, BUDGET)}"


@SETTINGS
@given(seeds, st.integers(1, 5), st.integers(1, 6), st.integers(1, 8), st.sampled_from([0.0, 0.3]))
def test_backward_matches_central_differences(seed, B, d_in, d_sae, l1):
    rng = np.random.default_rng(seed)
    cfg = sae.SAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=l1, dtype="float64")
    params, x = params_away_from_kinks(rng, cfg, B)
    _, cache = sae.forward(params, x, cfg)
    grads = sae.backward(params, cache, cfg)
    errors = check_gradients(lambda: sae.forward(params, x, cfg)[0].loss, params, grads, 1.0, rng=rng)
    assert_grads_ok(errors, f"SAE (l1={l1}); b_dec is used twice: are both of its gradients summed?")


@SETTINGS
@given(seeds, st.integers(1, 4), st.integers(1, 5), st.integers(1, 6))
def test_each_piece_matches_central_differences(seed, B, d_in, d_sae):
    rng = np.random.default_rng(seed)
    cfg = sae.SAEConfig(d_in=d_in, d_sae=d_sae, dtype="float64")
    params, x = params_away_from_kinks(rng, cfg, B)
    errs = check_layer(sae.encode_relu_forward, sae.encode_relu_backward,
                       [x, params["W_enc"], params["b_enc"], params["b_dec"]], ["x", "W_enc", "b_enc", "b_dec"], rng=rng)
    assert_grads_ok(errs, "encode (db_dec = -W_enc @ db_enc)")
    f = sae.encode(params, x, cfg)
    errs = check_layer(sae.decode_forward, sae.decode_backward, [f.copy(), params["W_dec"], params["b_dec"]],
                       ["f", "W_dec", "b_dec"], rng=rng)
    assert_grads_ok(errs, "decode")
    errs = check_layer(sae.mse_forward, sae.mse_backward, [rng.standard_normal((B, d_in)), x], ["x_hat", "x"], rng=rng)
    assert_grads_ok(errs, "mse")
    f_pos = np.abs(rng.standard_normal((B, d_sae))) + MARGIN
    errs = check_layer(sae.l1_forward, sae.l1_backward, [f_pos, 0.7], ["f", "l1_coefficient"], rng=rng)
    assert_grads_ok(errs, "l1 penalty")


def test_loss_is_the_papers_definition():
    """A hand-computed case: d_in 2, d_sae 1, batch 2."""
    cfg = sae.SAEConfig(d_in=2, d_sae=1, l1_coefficient=0.5, dtype="float64")
    params = {"W_enc": np.array([[1.0], [0.0]]), "b_enc": np.array([0.0]),
              "W_dec": np.array([[0.6, 0.8]]), "b_dec": np.array([0.0, 1.0])}
    x = np.array([[2.0, 1.0], [-1.0, 3.0]])
    out, _ = sae.forward(params, x, cfg)
    # row 0: x_bar = (2, 0), f = 2, x_hat = (1.2, 2.6), err^2 = (0.64, 2.56)
    # row 1: x_bar = (-1, 2), f = 0, x_hat = (0, 1), err^2 = (1, 4)
    np.testing.assert_allclose(out.f, [[2.0], [0.0]])
    np.testing.assert_allclose(out.x_hat, [[1.2, 2.6], [0.0, 1.0]])
    assert out.mse == pytest.approx((0.64 + 2.56 + 1 + 4) / 4), \
        "mse is the mean over the batch AND the d_in elements (not the sum over elements)"
    assert out.l1 == pytest.approx(0.5 * (2 + 0) / 2), "l1 is coefficient x mean over the batch of sum over latents"
    assert out.loss == pytest.approx(out.mse + out.l1) and out.l0 == 0.5


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float64", 1e-12)])
def test_decoder_rows_stay_unit_norm_after_a_step(dtype, tol):
    cfg = sae.SAEConfig(d_in=16, d_sae=48, batch_size=64, lr=0.05, dtype=dtype, backend="numpy")
    task = sae.SAETask(cfg, lambda r, n: r.standard_normal((n, 16)).astype(dtype))
    W0 = task.params["W_dec"].copy()
    for s in range(3):
        task.step(s)
    norms = np.linalg.norm(task.params["W_dec"].astype(np.float64), axis=1)
    assert np.abs(norms - 1).max() < tol, (f"decoder rows must have unit norm (max |norm - 1| = "
                                           f"{np.abs(norms - 1).max():.2e}): did you renormalise after the Adam step?")
    assert not np.allclose(task.params["W_dec"], W0), "the decoder must have moved"


def test_gradient_projection_removes_the_parallel_component():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((10, 7))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    dW = rng.standard_normal((10, 7))
    dW0 = dW.copy()
    sae.project_decoder_grad(W, dW)
    np.testing.assert_allclose((dW * W).sum(1), 0, atol=1e-14,
                               err_msg="after the projection each gradient row must be orthogonal to its decoder row")
    np.testing.assert_allclose(dW, dW0 - (dW0 * W).sum(1, keepdims=True) * W, rtol=1e-13,
                               err_msg="only the parallel component may be removed")


def test_init_shapes_and_scales():
    cfg = sae.SAEConfig(d_in=32, d_sae=128)
    sample = np.random.default_rng(2).standard_normal((500, 32)) + 3.0
    p = sae.init(cfg, np.random.default_rng(0), sample)
    assert {k: v.shape for k, v in p.items()} == sae.param_shapes(cfg), "SAELens shapes: W_enc [d_in, d_sae] etc."
    assert all(v.dtype == np.float32 for v in p.values())
    np.testing.assert_allclose(np.linalg.norm(p["W_dec"], axis=1), 1, rtol=1e-6, err_msg="decoder rows start unit norm")
    bound = np.sqrt(6 / 32)
    assert np.abs(p["W_enc"]).max() <= bound and np.abs(p["W_enc"]).max() > 0.9 * bound, "Kaiming-uniform bound"
    assert np.all(p["b_enc"] == 0)
    np.testing.assert_allclose(p["b_dec"], sae.geometric_median(sample), rtol=1e-6,
                               err_msg="b_dec starts at the geometric median of the sample")
    assert not np.allclose(p["W_enc"].T, p["W_dec"]), "encoder and decoder are untied"


def sum_dist(y, X):
    return np.linalg.norm(X - y, axis=1).sum()


@settings(max_examples=15, deadline=None)
@given(seeds, st.integers(3, 40), st.integers(1, 5))
def test_geometric_median_vs_brute_force(seed, n, d):
    X = np.random.default_rng(seed).standard_normal((n, d)) * np.random.default_rng(seed + 1).uniform(0.1, 5, d)
    y = sae.geometric_median(X)
    ours = sum_dist(y, X)
    best = min(minimize(sum_dist, x0, args=(X,), method="Nelder-Mead",
                        options=dict(xatol=1e-10, fatol=1e-12, maxiter=20_000)).fun for x0 in (X.mean(0), *X[:3]))
    # Weiszfeld converges linearly, slowly for a few nearly collinear points (hypothesis finds such
    # cases): 1e-5 of the objective still catches any wrong update rule, which lands percents away.
    assert ours <= best * (1 + 1e-5), f"Weiszfeld found sum of distances {ours}, brute-force search {best}"
    assert ours < sum_dist(X.mean(0), X) + 1e-12 or np.allclose(y, X.mean(0))


def test_geometric_median_hand_cases():
    np.testing.assert_allclose(sae.geometric_median([[0.0], [1.0], [10.0]]), [1.0], atol=1e-8,
                               err_msg="in 1-D the geometric median is the median")
    X = np.array([[0.0, 0.0]] * 10 + [[100.0, 100.0]])  # most points at the origin: the median stays there
    np.testing.assert_allclose(sae.geometric_median(X), [0, 0], atol=1e-6)
    sq = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0], [50.0, 0.0]])
    y = sae.geometric_median(sq)
    # by symmetry y = (t, 0), where the unit vectors toward the five points cancel:
    # 2 (1 - t) / sqrt((1 - t)^2 + 1) - 2 (1 + t) / sqrt((1 + t)^2 + 1) + 1 = 0
    t = brentq(lambda t: 2 * (1 - t) / np.hypot(1 - t, 1) - 2 * (1 + t) / np.hypot(1 + t, 1) + 1, 0, 1)
    np.testing.assert_allclose(y, [t, 0], atol=1e-7, err_msg=f"an outlier at distance 50 moves the median to "
                               f"t={t:.4f} only (the mean moves to 10)")
    with pytest.raises(ValueError, match="non-empty"):
        sae.geometric_median(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="d_in=4"):
        sae.init(sae.SAEConfig(d_in=4, d_sae=8), np.random.default_rng(0), np.zeros((5, 3)))


@pytest.mark.parametrize("kwargs, word", [
    (dict(d_in=0), "d_in"), (dict(d_sae=-1), "d_sae"), (dict(architecture="sparse"), "architecture"),
    (dict(l1_coefficient=-1.0), "l1_coefficient"), (dict(lr=0.0), "lr"), (dict(adam_betas=(0.9, 1.0)), "adam_betas"),
    (dict(resample_at=(0.0,)), "resample_at"), (dict(dead_window=2.0), "dead_window"), (dict(backend="cuda"), "backend"),
    (dict(dtype="float16"), "dtype"), (dict(batch_size=0), "batch_size"), (dict(steps=-5), "steps"),
    (dict(sparse_below=1.5), "sparse_below"), (dict(resample_batches=0), "resample_batches"),
    (dict(lr_decay_start=-0.1), "lr_decay_start"), (dict(resample_at=(1.0,)), "resample_at"),
])
def test_config_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        sae.SAEConfig(**{"d_in": 4, "d_sae": 8, **kwargs})


def test_resample_schedule_scales_with_run_length():
    cfg = sae.SAEConfig(d_in=4, d_sae=8, steps=1_000_000)
    assert cfg.resample_steps == [25_000, 50_000, 75_000, 100_000] and cfg.dead_window_steps == 12_500, \
        "the paper's schedule at 1M steps"
    small = sae.SAEConfig(d_in=4, d_sae=8, steps=4000)
    assert small.resample_steps == [100, 200, 300, 400] and small.dead_window_steps == 50


def test_learning_rate_schedule():
    assert sae.SAEConfig(d_in=4, d_sae=8, steps=100, lr=2.0).lr_at(99) == 2.0, "the default learning rate is constant"
    cfg = sae.SAEConfig(d_in=4, d_sae=8, steps=100, lr=2.0, lr_decay_start=0.8)
    lrs = [cfg.lr_at(s) for s in (0, 80, 90, 99)]
    assert lrs == pytest.approx([2.0, 2.0, 1.0, 0.1]), f"linear decay to 0 over the last 20%: {lrs}"


def test_encode_is_forwards_latents():
    """sae.encode (the lessons' fast path: no training caches) gives forward's f, b_dec and b_enc included."""
    rng = np.random.default_rng(0)
    cfg = sae.SAEConfig(d_in=5, d_sae=9, dtype="float64")
    x = rng.standard_normal((30, 5))
    params = sae.init(cfg, rng, x)
    params["b_dec"] = rng.standard_normal(5)
    params["b_enc"] = 0.3 * rng.standard_normal(9)
    np.testing.assert_allclose(sae.encode(params, x, cfg), sae.forward(params, x, cfg)[0].f, rtol=1e-12, atol=1e-12)


def test_geometric_median_that_is_a_data_point():
    """The origin is the median (the four unit pulls cancel and the outlier's pull, 1, is no more than the
    origin's own weight); Weiszfeld's iteration alone creeps toward it, and the nearest data point must win."""
    X = np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1], [3, 3.0]])
    np.testing.assert_allclose(sae.geometric_median(X), [0, 0], atol=1e-9)
