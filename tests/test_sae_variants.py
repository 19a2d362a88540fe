"""The later SAE variants (sae_variants.py): each piece and each whole model against central differences in
float64 (JumpReLU's threshold against its pseudo-derivatives and an example worked by hand), the numba TopK
step against the dense one, and training, checkpoints and resume through the one loop."""
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymono import sae
from tinymono import sae_variants as V
from tinymono.gradcheck import check_gradients, check_layer, format_table, numerical_gradient, relative_error
from tinymono.groundtruth import GroundTruth, GroundTruthConfig
from tinymono.kernels import sae as K
from tinymono.train import train

BUDGET = 1e-7
SETTINGS = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**32 - 1)
MARGIN = 0.03  # kinks (0, thresholds, top-k ties) this far from every pre-activation; perturbations move
# a pre-activation by at most 2e-3 x |input| (< 0.015 here)
VARIANTS = ["topk", "batchtopk", "jumprelu", "gated", "anthropic2024"]


def assert_ok(errors, what):
    bad = {k: v for k, v in errors.items() if not v <= BUDGET}
    assert not bad, f"{what}: backward disagrees with central differences.\n{format_table(errors, BUDGET)}"


def separated(values, margin=MARGIN):
    """Every value at least `margin` from 0 and from every other value (of the same row when 2-d)."""
    v = np.sort(np.atleast_2d(values), axis=1)
    return np.abs(v).min() >= margin and (v.shape[1] < 2 or np.diff(v, axis=1).min() >= margin)


def grid_values(rng, shape, shift):
    """Distinct odd multiples of MARGIN (so ties and 0 are 2 MARGIN and MARGIN away), shuffled; `shift`
    whole steps up or down sets how many are positive (the sparsity)."""
    n = int(np.prod(shape))
    v = (2 * (np.arange(n) - n // 2 + shift) + 1) * MARGIN
    return rng.permutation(v).reshape(shape)


def decoder_rows(rng, d_sae, d_in):
    """Random decoder rows with norms in [0.5, 2]. The weighted L1's ||w|| bends sharply near w = 0:
    a row of norm 0.06 puts the central differences' own error (eps = 1e-3) above the budget."""
    W = rng.standard_normal((d_sae, d_in))
    return W / np.linalg.norm(W, axis=1, keepdims=True) * rng.uniform(0.5, 2, (d_sae, 1))


# ----------------------------------------------------------------------------------------------------
# the pieces


@SETTINGS
@given(seeds, st.integers(1, 5), st.integers(1, 8), st.integers(1, 8), st.integers(-6, 6))
def test_selection_pieces_match_central_differences(seed, B, d_sae, k, shift):
    rng = np.random.default_rng(seed)
    k = min(k, d_sae)
    pre = grid_values(rng, (B, d_sae), shift)
    assert_ok(check_layer(V.topk_forward, V.mask_backward, [pre], ["pre"], rng=rng, k=k), "topk")
    assert_ok(check_layer(V.batchtopk_forward, V.mask_backward, [pre], ["pre"], rng=rng, k=k), "batchtopk")
    f, _ = V.topk_forward(pre, k)
    for row, frow in zip(pre, f):  # the k largest, where positive, and nothing else
        top = np.sort(row)[::-1][:k]
        assert np.allclose(np.sort(frow[frow != 0])[::-1], top[top > 0]), "topk must keep the k largest positive"
    fb, _ = V.batchtopk_forward(pre, k)
    top = np.sort(pre.ravel())[::-1][:B * k]
    assert np.count_nonzero(fb) == np.count_nonzero(top > 0), "batchtopk keeps the B k largest positive entries"


@SETTINGS
@given(seeds, st.integers(1, 4), st.integers(1, 5), st.integers(2, 8), st.integers(1, 4))
def test_auxk_and_weighted_l1_match_central_differences(seed, B, d_in, d_sae, k_aux):
    rng = np.random.default_rng(seed)
    pre = grid_values(rng, (B, d_sae), 1)
    dead = rng.random(d_sae) < 0.6
    e, W_dec = rng.standard_normal((B, d_in)), decoder_rows(rng, d_sae, d_in)
    errs = check_layer(V.auxk_forward, V.auxk_backward, [pre, dead, e, W_dec, min(k_aux, d_sae), 1 / 32],
                       ["pre", "dead", "e", "W_dec", "k_aux", "coef"], rng=rng)
    assert_ok(errs, "AuxK (e is detached: only pre and W_dec get gradients)")
    f = np.abs(grid_values(rng, (B, d_sae), 0))
    errs = check_layer(V.weighted_l1_forward, V.weighted_l1_backward, [f, W_dec, 0.3], ["f", "W_dec", "coef"], rng=rng)
    assert_ok(errs, "weighted L1 (d ||w|| / dw = w / ||w||)")


def test_auxk_adds_no_decoder_bias_and_only_dead_latents():
    """The residual e = x - x_hat already holds b_dec: AuxK reconstructs it from dead latents alone."""
    pre = np.array([[3.0, 2.0, 1.0, 0.5]])
    dead = np.array([False, True, True, False])
    W_dec = np.eye(4)[:, :2] * 1.0
    e = np.array([[1.0, 1.0]])
    loss, cache = V.auxk_forward(pre, dead, e, W_dec, k_aux=1, coefficient=1.0)
    np.testing.assert_array_equal(cache.z, [[0.0, 2.0, 0.0, 0.0]])  # latent 0 is larger but alive
    _, cache = V.auxk_forward(-pre, dead, e, W_dec, k_aux=1, coefficient=1.0)
    np.testing.assert_array_equal(cache.z, np.zeros((1, 4)), err_msg="AuxK keeps the ReLU of the main path")
    assert loss == pytest.approx(((1 - 0) ** 2 + (1 - 2) ** 2) / 2), "no b_dec in AuxK's reconstruction"


def test_jumprelu_matches_the_papers_check_values():
    """Worked by hand (lesson 09): pi = [1.0, 1.4, 1.6, 2.0], theta = 1.5, eps = 0.5; the rectangle kernel is 1
    only at 1.4 and 1.6, where df/dtheta = -theta / eps = -3 and dH/dtheta = -1 / eps = -2."""
    pi = np.array([[1.0], [1.4], [1.6], [2.0]])  # four inputs of one latent: dtheta sums over them
    theta = np.array([1.5])
    f, cache = V.jumprelu_forward(pi, theta, 0.5)
    np.testing.assert_array_equal(f.ravel(), [0, 0, 1.6, 2.0])
    per_f = [V.jumprelu_backward(np.eye(4)[:, [b]], cache)[1][0] for b in range(4)]  # upstream 1 at one element
    _, step_cache = V.step_forward(pi, theta, 0.5)
    per_H = [V.step_backward(np.eye(4)[:, [b]], step_cache)[1][0] for b in range(4)]
    np.testing.assert_allclose(per_f, [0, -3, -3, 0], err_msg="d f / d theta = -(theta / eps) K((pi - theta) / eps)")
    np.testing.assert_allclose(per_H, [0, -2, -2, 0], err_msg="d H / d theta = -(1 / eps) K((pi - theta) / eps)")
    dpi, _, _ = V.jumprelu_backward(np.ones_like(pi), cache)
    np.testing.assert_array_equal(dpi.ravel(), [0, 0, 1, 1])
    assert V.step_backward(np.ones_like(pi), step_cache)[0] is None, "the L0 term passes nothing to pi"


# ----------------------------------------------------------------------------------------------------
# the whole models


def model_case(rng, arch, B, d_in, d_sae, shift, k=None):
    """A float64 config, params and batch whose pre-activations keep clear of every kink of `arch`."""
    opts = {"topk": dict(k=k, aux_k=k), "batchtopk": dict(k=k, aux_k=k)}.get(arch, {})
    if arch == "jumprelu":
        opts = dict(bandwidth=0.4)
    cfg = sae.SAEConfig(d_in=d_in, d_sae=d_sae, architecture=arch, l1_coefficient=0.3, dtype="float64", **opts)
    for _ in range(500):
        x = rng.standard_normal((B, d_in))
        params = sae.init(cfg, rng, x)
        for name in params:
            if name not in ("input_scale", "threshold", "log_threshold"):
                params[name] = rng.standard_normal(params[name].shape) * (0.5 if params[name].ndim == 1 else 1)
        params["W_dec"] = decoder_rows(rng, d_sae, d_in)
        if arch == "gated":
            params["r_mag"] *= 0.3
        x_in = x * params["input_scale"] if arch == "anthropic2024" else x
        base = x_in if arch in ("jumprelu", "anthropic2024") else x_in - params["b_dec"]
        u = base @ params["W_enc"]
        bias = "b_gate" if arch == "gated" else "b_enc"
        params[bias] = params[bias] + shift
        pre = u + params[bias]
        if arch == "jumprelu":  # thresholds between the pre-activations, some within the kernel's window
            params["log_threshold"] = np.log(np.abs(rng.standard_normal(d_sae)) * 0.5 + 0.1)
            near = np.abs(pre - np.exp(params["log_threshold"]))
            ok = near.min() >= MARGIN and np.abs(near - cfg.bandwidth / 2).min() >= MARGIN
        elif arch == "gated":
            pi_mag = u * np.exp(params["r_mag"]) + params["b_mag"]
            ok = np.abs(pre).min() >= MARGIN and np.abs(pi_mag).min() >= MARGIN
        elif arch == "batchtopk":
            ok = separated(pre.ravel())
        else:
            ok = separated(pre)
        if ok:
            return cfg, params, x
    pytest.skip("no draw kept clear of the kinks")


@SETTINGS
@given(seeds, st.sampled_from(["topk", "batchtopk", "gated", "anthropic2024"]), st.integers(1, 3), st.integers(1, 5),
       st.integers(2, 6), st.integers(1, 6), st.floats(-0.5, 0.5), st.booleans())
def test_models_match_central_differences(seed, arch, B, d_in, d_sae, k, shift, with_dead):
    rng = np.random.default_rng(seed)
    cfg, params, x = model_case(rng, arch, B, d_in, d_sae, shift, min(k, d_sae))
    variant = sae.variant_of(cfg)
    train_ = V.Train(cfg.l1_coefficient, rng.random(d_sae) < (0.5 if with_dead else 0)) if arch != "gated" else None
    _, cache = variant.forward(params, x, cfg, train_)
    grads = variant.backward(params, cache, cfg)
    trained = {k: v for k, v in params.items() if k not in variant.buffers}
    assert set(grads) == set(trained), f"{arch}: one gradient per trained parameter"
    errors = check_gradients(stopped_loss(arch, params, x, cfg, train_), trained, grads, 1.0, rng=rng)
    assert_ok(errors, f"{arch} (a parameter used twice gets the sum of its gradients)")


def stopped_loss(arch, params, x, cfg, train_):
    """The loss as a function of the params, with what the variant takes as data held at its value now:
    AuxK's residual e, and the Gated auxiliary term's decoder copy (stop-gradients are invisible to
    central differences of the plain loss)."""
    variant = sae.variant_of(cfg)
    if arch == "gated":
        W0, b0 = params["W_dec"].copy(), params["b_dec"].copy()

        def loss():
            out, cache = variant.forward(params, x, cfg)
            gate = np.maximum(cache.pi_gate, 0)
            aux = np.mean((gate @ W0 + b0 - x) ** 2)  # through the frozen copy
            return out.mse + cfg.l1_coefficient * gate.sum() / len(x) + aux
        return loss
    if arch in ("topk", "batchtopk") and np.any(train_.dead):
        e0 = x - variant.forward(params, x, cfg, train_)[0].x_hat
        no_dead = V.Train(train_.l1_coefficient, np.zeros_like(train_.dead))

        def loss():
            pre, _ = V.affine_forward(x, params["W_enc"], params["b_enc"], params["b_dec"])
            aux, _ = V.auxk_forward(pre, train_.dead, e0, params["W_dec"], cfg.aux_k, cfg.aux_coefficient)
            return variant.forward(params, x, cfg, no_dead)[0].loss + aux
        return loss
    return lambda: variant.forward(params, x, cfg, train_)[0].loss


@SETTINGS
@given(seeds, st.integers(1, 4), st.integers(1, 5), st.integers(1, 6), st.floats(-0.3, 0.3))
def test_jumprelu_model_weights_exact_and_threshold_pseudo_derivative(seed, B, d_in, d_sae, shift):
    rng = np.random.default_rng(seed)
    cfg, params, x = model_case(rng, "jumprelu", B, d_in, d_sae, shift)
    out, cache = sae.forward(params, x, cfg)
    grads = sae.backward(params, cache, cfg)
    weights = {k: params[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    errors = check_gradients(lambda: sae.forward(params, x, cfg)[0].loss, weights, grads, 1.0, rng=rng)
    assert_ok(errors, "JumpReLU weights (away from the jump, f = pi there: exact)")
    # the threshold: dL/df by central differences of the loss as a function of f, then the pseudo-derivatives
    f = out.f.copy()
    recon = lambda: sae.mse_forward(sae.decode_forward(f, params["W_dec"], params["b_dec"])[0], x)[0]  # noqa: E731
    dL_df = numerical_gradient(recon, f, np.arange(f.size)).reshape(f.shape)
    theta = np.exp(params["log_threshold"])
    near = (np.abs(cache.jump.pi - theta) < cfg.bandwidth / 2).astype(float)
    expected = theta * (-(theta / cfg.bandwidth) * np.sum(dL_df * near, axis=0)
                        - cfg.l1_coefficient / B / cfg.bandwidth * near.sum(axis=0))
    err = relative_error(grads["log_threshold"], expected)
    assert err <= BUDGET, f"log_threshold: {err:.2e} off the pseudo-derivatives (chain rule through theta = exp)"


SPARSE_CASES = [("topk", 0.0), ("topk", 0.3), ("batchtopk", 0.0), ("batchtopk", 0.3), ("jumprelu", 0.0),
                ("gated", 0.0), ("anthropic2024", 0.0)]
OPTIONS = {"topk": dict(k=4, aux_k=5), "batchtopk": dict(k=4, aux_k=5), "jumprelu": dict(bandwidth=0.3, init_threshold=0.2)}


@pytest.mark.parametrize("arch,dead_share", SPARSE_CASES)
def test_sparse_step_equals_dense_step(arch, dead_share):
    """The numba step (encoder matmul + kernels over the kept or active entries) gives the dense step's
    numbers. sparse_below=1: the sparse path runs however many entries are active."""
    rng = np.random.default_rng(3)
    cfg = sae.SAEConfig(d_in=12, d_sae=40, architecture=arch, batch_size=16, dtype="float64", sparse_below=1.0,
                        **OPTIONS.get(arch, {}))
    x = rng.standard_normal((16, 12))
    variant = sae.variant_of(cfg)
    train_ = V.Train(0.0 if "topk" in arch else 0.01, rng.random(40) < dead_share)
    results = []
    shifts = {"b_gate" if arch == "gated" else "b_enc": rng.standard_normal(40) * 0.1 - 0.3 * (arch != "topk"),
              "r_mag": rng.standard_normal(40) * 0.2, "b_mag": rng.standard_normal(40) * 0.1}  # some latents off
    for buf in (None, variant.sparse_buffers(cfg)):
        params = sae.init(cfg, np.random.default_rng(0), x)
        for k, v in shifts.items():
            if k in params:
                params[k] += v
        terms, grads, fired = variant.step(variant, params, x, cfg, train_, buf, 0)
        results.append((terms, {k: v.copy() for k, v in grads.items()}, fired, params.get("threshold")))
    (t0, g0, f0, th0), (t1, g1, f1, th1) = results
    assert 0 < t0[3] < 0.5 * 40, f"the case should have a minority of entries active (L0 {t0[3]})"
    np.testing.assert_allclose(t1, t0, rtol=1e-12, err_msg="loss terms of the sparse step")
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-10, atol=1e-13, err_msg=f"{k} of the sparse step")
    np.testing.assert_array_equal(f1, f0)
    if arch == "batchtopk":
        assert th1 == pytest.approx(th0, rel=1e-12) and th0 > 0, "the first step sets the threshold"
    if arch == "jumprelu":
        assert np.count_nonzero(g0["log_threshold"]) > 0, "the case should have pre-activations near theta"


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(1, 6), st.integers(1, 30), st.integers(1, 8), st.floats(0, 1), st.floats(-1, 1))
def test_topk_kernel_equals_its_numpy_twin(seed, B, d_sae, k, allowed_share, shift):
    rng = np.random.default_rng(seed)
    k = min(k, d_sae)
    pre = rng.standard_normal((B, d_sae)).astype(np.float32)
    pre[:, ::3] = pre[:, :1]  # ties, which both must break toward the lower latent
    b_enc = (rng.standard_normal(d_sae) * 0.1 + shift).astype(np.float32)
    b_enc[::3] = b_enc[0]  # (ties of pre + b_enc, the numbers the selection ranks)
    allowed = rng.random(d_sae) < allowed_share
    for threads in (0, 2**62):  # PARALLEL_MIN_WORK: rows spread over threads, or all in one call
        with mock.patch.object(K, "PARALLEL_MIN_WORK", threads):
            got = K.topk_csr(pre, b_enc, k, allowed)
        for a, b in zip(got, K.topk_csr_numpy(pre, b_enc, k, allowed)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)  # the same selection, the same float32 sums
    with pytest.raises(ValueError, match="k must be"):  # the kernel would read an empty list's last slot
        K.topk_csr(pre, b_enc, 0, allowed)
    tied = K.topk_csr(np.array([[1, 2, 1, 1]], np.float32), np.zeros(4, np.float32), 2, np.ones(4, bool))
    np.testing.assert_array_equal(tied[1], [0, 1])  # 2, then the lowest of the three tied 1s


@pytest.mark.parametrize("k", [1, 3, 20])
def test_batch_selection_over_candidates_is_exact(k):
    """batch_csr looks at each row's 8k largest first; a row holding many of the batch's largest forces the
    full search, and both must keep exactly the batch's B k largest."""
    rng = np.random.default_rng(k)
    cfg = sae.SAEConfig(d_in=4, d_sae=64, architecture="batchtopk", k=k, batch_size=8)
    pre = rng.standard_normal((8, 64)).astype(np.float32)
    pre[2] += 5  # row 2 holds most of the batch's largest entries
    b_enc = np.zeros(64, np.float32)
    indptr, idx, val, _ = V.batch_csr(pre, b_enc, k, V.TopKBuffers(cfg))
    dense, _ = V.batchtopk_forward(pre + b_enc, k)
    np.testing.assert_array_equal(K.csr_to_dense(indptr, idx, val, 64), dense)


# ----------------------------------------------------------------------------------------------------
# training through the one loop


def tiny_world():
    return GroundTruth(GroundTruthConfig(d=16, n_features=24, mean_active=2.0, seed=0))


def tiny_cfg(arch, steps=60, **kw):
    opts = {"topk": dict(k=3), "batchtopk": dict(k=3), "jumprelu": dict(bandwidth=0.05), "anthropic2024": dict(l1_warmup=0.05)}
    return sae.SAEConfig(**{**dict(d_in=16, d_sae=32, architecture=arch, steps=steps, batch_size=64, lr=3e-3,
                                   l1_coefficient=1e-3, dead_window=0.1), **opts.get(arch, {}), **kw})


@pytest.mark.parametrize("arch", VARIANTS)
def test_training_resumes_bit_identical(arch, tmp_path):
    data = tiny_world()
    straight = sae.SAETask(tiny_cfg(arch), data)
    result = train(straight, 60, chunk_steps=20)
    assert result.history["mse"][-1] < result.history["mse"][0], f"{arch}: the reconstruction must improve"
    first = sae.SAETask(tiny_cfg(arch), data)
    train(first, 40, chunk_steps=20, checkpoint=tmp_path / "ck")  # a run stopped at step 40 of 60...
    resumed = sae.SAETask(tiny_cfg(arch), data)
    again = train(resumed, 60, chunk_steps=20, checkpoint=tmp_path / "ck")  # ...and continued
    assert again.resumed_from == 40
    for k, v in straight.params.items():
        np.testing.assert_array_equal(resumed.params[k], v, err_msg=f"{arch}: {k} after resume")


def test_decoder_norm_constraint_is_the_variants_own():
    data = tiny_world()
    for arch, unit in (("topk", True), ("gated", True), ("anthropic2024", False)):
        task = sae.SAETask(tiny_cfg(arch, steps=30), data)
        train(task, 30)
        norms = np.linalg.norm(task.params["W_dec"], axis=1)
        assert np.allclose(norms, 1, atol=1e-5) == unit, f"{arch}: decoder row norms {norms[:4]}"


def test_jumprelu_threshold_keeps_moving_under_adam():
    """Straight-through pseudo-derivatives must reach the threshold: with them it moves every step for
    many latents (a frozen threshold, zero gradient, stays at its start under Adam)."""
    task = sae.SAETask(tiny_cfg("jumprelu", steps=200, l1_coefficient=3e-3), tiny_world())
    start = task.params["log_threshold"].copy()
    train(task, 150)
    before = task.params["log_threshold"].copy()
    train(task, 200)
    moved_late = np.mean(task.params["log_threshold"] != before)
    assert moved_late > 0.5, f"only {moved_late:.0%} of thresholds moved in the last 50 steps"
    assert np.median(np.abs(task.params["log_threshold"] - start)) > 0.1, "thresholds barely left their start"


def test_batchtopk_inference_threshold_tracks_training_sparsity():
    task = sae.SAETask(tiny_cfg("batchtopk", steps=200), tiny_world())
    train(task, 200)
    x = tiny_world()(np.random.default_rng(9), 4096)
    out, _ = sae.forward(task.params, x, task.cfg)
    assert 0.7 * 3 <= out.l0 <= 1.3 * 3, f"inference L0 {out.l0:.2f} should be near k = 3 with the threshold"


def test_warmup_and_options_are_validated():
    cfg = tiny_cfg("anthropic2024", steps=100)
    assert cfg.l1_at(0) == pytest.approx(cfg.l1_coefficient / 5) and cfg.l1_at(10) == cfg.l1_coefficient
    with pytest.raises(ValueError, match="k is not an option of architecture 'relu'"):
        sae.SAEConfig(d_in=4, d_sae=8, k=2)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, d_sae=8\]"):
        sae.SAEConfig(d_in=4, d_sae=8, architecture="topk", k=9)
    with pytest.raises(ValueError, match=r"aux_k must be an integer >= 1"):
        sae.SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2, aux_k=0)
    relu = sae.SAETask(sae.SAEConfig(d_in=4, d_sae=8), lambda rng, n: rng.standard_normal((n, 4)))
    assert not set(sae.VARIANT_OPTIONS) & set(relu.config_dict()), "the paper's checkpoints must read as before"
    assert sae.SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2).resample_steps == [], "variants do not resample"


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_k_annealing_sets_each_steps_k(arch):
    """k falls linearly from k_start to k over the first k_anneal of the run, and a step keeps the k it is
    given (dense and numba paths alike): L0 = that k while enough pre-activations are positive."""
    cfg = sae.SAEConfig(d_in=12, d_sae=40, architecture=arch, k=4, k_anneal=0.5, k_start=20, steps=100, batch_size=16,
                        dtype="float64")
    assert [cfg.k_at(s) for s in (0, 25, 50, 99)] == [20, 12, 4, 4], "the schedule: 20 at step 0, k from half-way"
    x = np.random.default_rng(1).standard_normal((16, 12))
    variant = sae.variant_of(cfg)
    for buf in (None, variant.sparse_buffers(cfg)):
        params = sae.init(cfg, np.random.default_rng(0), x)
        params["b_enc"] += 5.0  # every pre-activation positive: the selection alone sets L0
        terms, _, _ = variant.step(variant, params, x, cfg, V.Train(0.0, np.zeros(40, bool), 12), buf, 25)
        assert terms[3] == pytest.approx(12), f"{arch} ({'numba' if buf else 'dense'}): L0 {terms[3]} with k = 12"
    with pytest.raises(ValueError, match="k_start"):
        sae.SAEConfig(d_in=4, d_sae=8, architecture=arch, k=4, k_anneal=0.5, k_start=2)


@pytest.mark.parametrize("arch", VARIANTS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_encode_gives_the_forwards_latents(arch, dtype):
    """sae.encode takes shortcuts (TopK: the numba selection; Gated: no decoder): the same latents as the
    inference forward, on a case with tied pre-activations too (ties go to the lower latent index)."""
    rng = np.random.default_rng(3)
    opts = {"topk": dict(k=3), "batchtopk": dict(k=3)}.get(arch, {})
    cfg = sae.SAEConfig(d_in=6, d_sae=12, architecture=arch, dtype=dtype, **opts)
    x = rng.standard_normal((40, 6)).astype(dtype)
    params = sae.init(cfg, rng, x)
    for name in ("b_enc", "b_gate", "b_mag", "r_mag", "b_dec"):
        if name in params:
            params[name] = (rng.standard_normal(params[name].shape) * 0.3).astype(dtype)
    if arch == "batchtopk":
        params["threshold"] = np.asarray(0.2, dtype=dtype)
    if arch == "topk":  # latent 5 a copy of latent 2: equal pre-activations everywhere
        params["W_enc"][:, 5] = params["W_enc"][:, 2]
        params["b_enc"][5] = params["b_enc"][2]
    want = sae.variant_of(cfg).forward(params, x, cfg)[0].f
    got = sae.encode(params, x, cfg)
    assert np.count_nonzero(want) > 40, "a case where latents fire"
    assert got.dtype == want.dtype and np.array_equal(got != 0, want != 0), f"{arch}: another set of latents fired"
    assert np.allclose(got, want, rtol=1e-6 if dtype == "float32" else 1e-12, atol=0)


def test_batchtopk_threshold_is_the_debiased_running_average():
    cfg = sae.SAEConfig(d_in=6, d_sae=12, architecture="batchtopk", k=2, threshold_decay=0.5, batch_size=8,
                        dtype="float64")
    rng = np.random.default_rng(0)
    params = sae.init(cfg, rng, rng.standard_normal((8, 6)))
    variant = sae.variant_of(cfg)
    train = V.Train(0.0, np.zeros(12, bool))
    smallest = []
    for step in range(4):
        x = rng.standard_normal((8, 6))
        f = variant.forward(params, x, cfg, train)[0].f
        smallest.append(f[f != 0].min())
        V.batchtopk_step(variant, params, x, cfg, train, None, step)
    b, s = 0.5, np.array(smallest)
    want = sum((1 - b) * b ** (3 - i) * s[i] for i in range(4)) / (1 - b ** 4)  # debiased EMA
    assert float(params["threshold"]) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("fast", [False, True])
def test_a_batchtopk_batch_that_keeps_nothing_leaves_the_threshold(fast):
    """The threshold averages the smallest KEPT activation; a batch with none (every pre-activation negative)
    has nothing to average, and must not pull the threshold toward 0."""
    cfg = sae.SAEConfig(d_in=6, d_sae=12, architecture="batchtopk", k=2, threshold_decay=0.999, batch_size=8,
                        dtype="float64")
    rng = np.random.default_rng(0)
    params = sae.init(cfg, rng, rng.standard_normal((8, 6)))
    params["threshold"][...] = 0.5
    params["b_enc"][:] = -100.0
    variant = sae.variant_of(cfg)
    buf = sae.SAETask(cfg, lambda r, n: rng.standard_normal((n, 6))).buffers if fast else None
    V.batchtopk_step(variant, params, rng.standard_normal((8, 6)), cfg, V.Train(0.0, np.zeros(12, bool)), buf, 10)
    assert float(params["threshold"]) == 0.5


def test_recipe2024_input_scale_brings_mean_squared_norm_to_d_in():
    cfg = sae.SAEConfig(d_in=7, d_sae=16, architecture="anthropic2024", dtype="float64")
    x = 3.0 * np.random.default_rng(0).standard_normal((500, 7)) + 1.0
    s = sae.init(cfg, np.random.default_rng(1), x)["input_scale"].item()
    assert np.mean(np.sum((s * x) ** 2, axis=1)) == pytest.approx(7.0, rel=1e-9)
