"""Every sparse SAE kernel equals its dense NumPy twin, and the sparse training step equals forward/backward.

Each kernel is checked in both bindings, threaded and serial (`THREADED` forces one or the other).
Also run these under NUMBA_DISABLE_JIT=1 (plain Python, readable tracebacks); the sizes stay small for that."""
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymono import sae
from tinymono.kernels import sae as K

SETTINGS = settings(max_examples=20, deadline=None)
seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from([np.float64, np.float32])
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}


def sparse_problem(seed, B, d_in, d_sae, density, dtype):
    """pre-activations with about `density` of the entries positive, plus matching SAE arrays."""
    rng = np.random.default_rng(seed)
    pre = rng.standard_normal((B, d_sae)).astype(dtype)
    b_enc = (-np.quantile(pre, 1 - density, axis=0) if B else np.zeros(d_sae)).astype(dtype)
    W_dec = rng.standard_normal((d_sae, d_in)).astype(dtype)
    b_dec = rng.standard_normal(d_in).astype(dtype)
    x = rng.standard_normal((B, d_in)).astype(dtype)
    x_bar = (x - b_dec).astype(dtype)
    return rng, pre, b_enc, W_dec, b_dec, x, x_bar


THREADED = {"threaded": mock.patch.object(K, "PARALLEL_MIN_WORK", 0),
            "serial": mock.patch.object(K, "PARALLEL_MIN_WORK", 2**62)}
problems = st.tuples(seeds, st.integers(0, 6), st.integers(1, 9), st.integers(1, 20), st.floats(0.0, 1.0), dtypes)


@SETTINGS
@given(problems)
def test_relu_csr_matches_twin(problem):
    _, pre, b_enc, *_ = sparse_problem(*problem)
    want = K.relu_csr_numpy(pre, b_enc)
    for binding, patch in THREADED.items():
        with patch:
            got = K.relu_csr(pre, b_enc)
            counts = K.active_counts(pre, b_enc)
        np.testing.assert_array_equal(counts, np.diff(want[0]), err_msg=f"active_counts ({binding})")
        with patch:
            fires = K.fire_counts(pre, b_enc)
        np.testing.assert_array_equal(fires, K.fire_counts_numpy(pre, b_enc), err_msg=f"fire_counts ({binding})")
        for name, g, w in zip(("indptr", "idx", "val"), got, want):
            np.testing.assert_array_equal(g, w, err_msg=f"relu_csr ({binding}) {name} differs from the NumPy twin")
    np.testing.assert_array_equal(K.csr_to_dense(*got, pre.shape[1]), np.maximum(pre + b_enc, 0),
                                  err_msg="the CSR triples must describe exactly ReLU(pre + b_enc)")


@SETTINGS
@given(problems)
def test_decode_rows_matches_twin(problem):
    rng, pre, b_enc, W_dec, b_dec, x, _ = sparse_problem(*problem)
    dtype = problem[-1]
    indptr, idx, val = K.relu_csr_numpy(pre, b_enc)
    B, d_in = x.shape
    scale, l1_term = dtype(2.0 / max(x.size, 1)), dtype(0.01)
    outs = {}
    for name, fn in (("threaded", K.decode_rows), ("serial", K.decode_rows), ("twin", K.decode_rows_numpy)):
        bufs = [np.full((B, d_in), np.nan, dtype), np.full((B, d_in), np.nan, dtype),
                np.full(len(val), np.nan, dtype), np.full(B, np.nan)]
        with THREADED.get(name, mock.patch.object(K, "PARALLEL_MIN_WORK", K.PARALLEL_MIN_WORK)):
            fn(indptr, idx, val, W_dec, b_dec, x, scale, l1_term, *bufs)
        outs[name] = bufs
    for binding in ("threaded", "serial"):
        for what, g, w in zip(("x_hat", "dx_hat", "dval", "sq_err"), outs[binding], outs["twin"]):
            np.testing.assert_allclose(g, w, **TOL[dtype], err_msg=f"decode_rows ({binding}): {what} differs from the twin")


@SETTINGS
@given(problems)
def test_csr_to_csc_matches_twin(problem):
    _, pre, b_enc, *_ = sparse_problem(*problem)
    indptr, idx, val = K.relu_csr_numpy(pre, b_enc)
    got = K.csr_to_csc(indptr, idx, pre.shape[1])
    want = K.csr_to_csc_numpy(indptr, idx, pre.shape[1])
    for name, g, w in zip(("colptr", "rows", "perm"), got, want):
        np.testing.assert_array_equal(g, w, err_msg=f"csr_to_csc {name} differs from the twin (is the sort stable?)")
    colptr, rows, perm = got
    cols = np.repeat(np.arange(pre.shape[1]), np.diff(colptr))
    np.testing.assert_array_equal(np.maximum(pre + b_enc, 0)[rows, cols], val[perm])


@SETTINGS
@given(problems)
def test_latent_grads_matches_twin(problem):
    rng, pre, b_enc, W_dec, b_dec, x, x_bar = sparse_problem(*problem)
    dtype = problem[-1]
    d_sae, d_in = W_dec.shape
    indptr, idx, val = K.relu_csr_numpy(pre, b_enc)
    dval = rng.standard_normal(len(val)).astype(dtype)
    dx_hat = rng.standard_normal(x.shape).astype(dtype)
    colptr, rows, perm = K.csr_to_csc_numpy(indptr, idx, d_sae)
    outs = {}
    for name, fn in (("threaded", K.latent_grads), ("serial", K.latent_grads), ("twin", K.latent_grads_numpy)):
        bufs = [np.full((d_in, d_sae), np.nan, dtype), np.full(d_sae, np.nan, dtype), np.full((d_sae, d_in), np.nan, dtype)]
        with THREADED.get(name, mock.patch.object(K, "PARALLEL_MIN_WORK", K.PARALLEL_MIN_WORK)):
            fn(colptr, rows, perm, val, dval, x_bar, dx_hat, *bufs)
        outs[name] = bufs
    for binding in ("threaded", "serial"):
        for what, g, w in zip(("dW_enc", "db_enc", "dW_dec"), outs[binding], outs["twin"]):
            np.testing.assert_allclose(g, w, **TOL[dtype], err_msg=f"latent_grads ({binding}): {what} differs from "
                                       "the twin (every entry must be written, zeros included)")


@SETTINGS
@given(st.tuples(seeds, st.integers(0, 12), st.sampled_from([1, 5, 9, 40, 83]), st.integers(1, 20), st.floats(0.0, 1.0),
                 dtypes))
def test_four_terms_per_pass_round_as_one_term_per_pass(problem):
    """add_rows and latent_grads take four terms per pass in a chain of fused multiply-adds: bit for bit the
    numbers of one axpy per term, in the same order (a chain regrouped in the source, a term taken out of
    order, or multiply-adds left unfused change the last bits, which this equality sees). Widths past 32 run
    the compiled loops' vectorised bodies, not only their scalar tails."""
    rng, pre, b_enc, W_dec, b_dec, x, x_bar = sparse_problem(*problem)
    dtype = problem[-1]
    d_sae, d_in = W_dec.shape
    indptr, idx, val = K.relu_csr_numpy(pre, b_enc)
    for b in range(x.shape[0]):
        lo, hi = indptr[b], indptr[b + 1]
        got, want = b_dec.copy(), b_dec.copy()
        K.add_rows(idx[lo:hi], val[lo:hi], W_dec, got)
        for k in range(lo, hi):
            K.axpy(val[k], W_dec[idx[k]], want)
        np.testing.assert_array_equal(got, want, err_msg=f"add_rows, row {b} ({hi - lo} terms)")
    dval = rng.standard_normal(len(val)).astype(dtype)
    dx_hat = rng.standard_normal(x.shape).astype(dtype)
    colptr, rows, perm = K.csr_to_csc_numpy(indptr, idx, d_sae)
    dW_enc, db_enc, dW_dec = np.empty((d_in, d_sae), dtype), np.empty(d_sae, dtype), np.empty((d_sae, d_in), dtype)
    K.latent_grads(colptr, rows, perm, val, dval, x_bar, dx_hat, dW_enc, db_enc, dW_dec)
    for j in range(d_sae):
        want_dec, want_enc, want_b = np.zeros(d_in, dtype), np.zeros(d_in, dtype), dtype(0)
        for c in range(colptr[j], colptr[j + 1]):
            K.axpy(val[perm[c]], dx_hat[rows[c]], want_dec)
            K.axpy(dval[perm[c]], x_bar[rows[c]], want_enc)
            want_b = dtype(want_b + dval[perm[c]])
        np.testing.assert_array_equal(dW_dec[j], want_dec, err_msg=f"latent_grads: dW_dec row {j}")
        np.testing.assert_array_equal(dW_enc[:, j], want_enc, err_msg=f"latent_grads: dW_enc column {j}")
        assert db_enc[j] == want_b, f"latent_grads: db_enc[{j}] {db_enc[j]!r} != {want_b!r} summed in order"


@SETTINGS
@given(seeds, st.integers(1, 6), st.integers(1, 8), st.integers(1, 20), dtypes)
def test_sparse_step_matches_forward_backward(seed, B, d_in, d_sae, dtype):
    rng = np.random.default_rng(seed)
    cfg = sae.SAEConfig(d_in=d_in, d_sae=d_sae, batch_size=B, sparse_below=1.0, l1_coefficient=0.05,
                        dtype=np.dtype(dtype).name)
    params = sae.init(cfg, rng)
    params["b_enc"][:] = rng.standard_normal(d_sae) - 0.5
    x = rng.standard_normal((B, d_in)).astype(dtype)
    with THREADED["threaded" if seed % 2 else "serial"]:
        loss, mse, l1, l0, grads, fires = sae.train_step_sparse(params, x, cfg, sae.Buffers(cfg))
    out, cache = sae.forward(params, x, cfg)
    want = sae.backward(params, cache, cfg)
    tol = TOL[dtype]
    np.testing.assert_allclose([loss, mse, l1, l0], [out.loss, out.mse, out.l1, out.l0], **tol,
                               err_msg="sparse step: loss terms (loss, mse, l1, l0) differ from forward")
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], **tol, err_msg=f"sparse step: gradient of {k} differs from backward")
    np.testing.assert_array_equal(fires, np.count_nonzero(out.f > 0, axis=0), err_msg="sparse step: firings per latent")


@SETTINGS
@given(seeds, st.integers(0, 30), st.integers(1, 9), st.integers(1, 40))
def test_fire_counts_count_the_encoded_latents(seed, B, d_in, d_sae):
    """sae.fire_counts: the latents' firing counts of sae.encode, exactly (one numba pass, no ReLU array)."""
    rng = np.random.default_rng(seed)
    cfg = sae.SAEConfig(d_in=d_in, d_sae=d_sae)
    params = sae.init(cfg, rng)
    params["b_enc"] = rng.standard_normal(d_sae).astype(params["b_enc"].dtype)
    x = rng.standard_normal((B, d_in)).astype(params["W_enc"].dtype)
    np.testing.assert_array_equal(sae.fire_counts(params, x, cfg), np.count_nonzero(sae.encode(params, x, cfg), axis=0))


@pytest.mark.parametrize("arch", sorted(sae.ARCHITECTURES))
def test_the_frontiers_counts_are_the_blockwise_encodings(arch):
    """Lesson 09's frontier scores L0 and densities by pipeline.FrontierData.fire_counts: per latent, the
    nonzero entries of sae.encode over the held-out tokens, block by block, as it once concatenated them."""
    from tinymono.pipeline import FrontierData

    rng = np.random.default_rng(3)
    opts = {"topk": dict(k=3, aux_k=3), "batchtopk": dict(k=3, aux_k=3)}.get(arch, {})
    cfg = sae.SAEConfig(d_in=6, d_sae=10, architecture=arch, **opts)
    x = rng.standard_normal((30, 6)).astype(np.float32)
    params = sae.init(cfg, rng, x)
    for k in params:  # biases off zero (gated's are b_gate and b_mag), so latents fire or not on their own
        if k.startswith("b_") and params[k].shape == (cfg.d_sae,):
            params[k] = rng.standard_normal(cfg.d_sae).astype(params[k].dtype)
    data = FrontierData(*[None] * 3, x, *[None] * 3)
    want = np.count_nonzero(np.concatenate([sae.encode(params, x[i:i + 7], cfg) for i in range(0, 30, 7)]), axis=0)
    assert want.sum() > 0
    np.testing.assert_array_equal(data.fire_counts(params, cfg, block=7), want)


def test_fire_counts_leave_nan_silent():
    pre = np.array([[np.nan, 1.0, -1.0, np.inf], [2.0, np.nan, 0.0, -np.inf]], np.float32)
    b_enc = np.zeros(4, np.float32)
    for binding, patch in THREADED.items():
        with patch:
            np.testing.assert_array_equal(K.fire_counts(pre, b_enc), [1, 1, 0, 1], err_msg=binding)
    np.testing.assert_array_equal(K.fire_counts_numpy(pre, b_enc), [1, 1, 0, 1])


def test_sparse_step_declines_when_dense():
    cfg = sae.SAEConfig(d_in=4, d_sae=8, batch_size=16, sparse_below=0.1)
    params = sae.init(cfg, np.random.default_rng(0))
    params["b_enc"][:] = 10.0  # every latent fires
    x = np.random.default_rng(1).standard_normal((16, 4)).astype(np.float32)
    assert sae.train_step_sparse(params, x, cfg, sae.Buffers(cfg)) is None, \
        "with every latent active the sparse path must hand over to the dense one"


@SETTINGS
@given(seeds, st.integers(1, 12), st.integers(1, 40), dtypes)
def test_decoder_constraint_kernels_match_twins(seed, d_sae, d_in, dtype):
    """project_rows and normalise_rows give sae.project_decoder_grad's and sae.normalise_decoder's numbers."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d_sae, d_in)).astype(dtype) * rng.uniform(0.1, 10, (d_sae, 1)).astype(dtype)
    W_unit = (W / np.linalg.norm(W, axis=1, keepdims=True)).astype(dtype)
    dW = rng.standard_normal((d_sae, d_in)).astype(dtype)
    got, want = dW.copy(), dW.copy()
    K.project_rows(W_unit, got)
    sae.project_decoder_grad(W_unit, want)
    scale = np.abs(dW).max()  # the projection's result is a difference of terms this large
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype]["rtol"] * scale)
    got, want = W.copy(), W.copy()
    K.normalise_rows(got)
    sae.normalise_decoder(want)
    np.testing.assert_allclose(got, want, **TOL[dtype])
    np.testing.assert_allclose(np.linalg.norm(got.astype(np.float64), axis=1), 1, rtol=TOL[dtype]["rtol"])


@SETTINGS
@given(seeds, st.integers(1, 300), st.integers(1, 50), dtypes)
def test_fused_adam_matches_adam_update(seed, n, t, dtype):
    """kernels.optim.adam_update (one pass) gives optim.adam_update's numbers, step after step."""
    from tinymono import optim
    from tinymono.kernels import optim as KO
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(dtype)
    fused, plain = [p.copy(), np.zeros_like(p), np.zeros_like(p)], [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    for step in range(1, t + 1):
        g = (rng.standard_normal(n) * rng.uniform(1e-3, 1e3)).astype(dtype)
        KO.adam_update(fused[0], g, fused[1], fused[2], step, 1e-2, 0.9, 0.999, 1e-8)
        optim.adam_update(plain[0], g, plain[1], plain[2], step, 1e-2, 0.9, 0.999, 1e-8)
    for a, b in zip(fused, plain):  # the same arithmetic in the same order: equal up to rounding
        np.testing.assert_allclose(a, b, **TOL[dtype])
    assert not np.allclose(fused[0], p), "the parameters must have moved"


def test_fused_adam_takes_only_arrays_it_can_update_in_place():
    """Adam(fused=True) falls back to NumPy for a non-contiguous parameter or a mixed dtype, and still updates it."""
    from tinymono.kernels import optim as KO
    from tinymono.optim import Adam
    a = np.ones((4, 6), np.float32)
    assert KO.fusable(a, a, a, a)
    assert not KO.fusable(a.T, a.T, a.T, a.T) and not KO.fusable(a, a.astype(np.float64), a, a)
    base = np.ones((6, 4), np.float32)
    params = {"W": base.T, "b": np.ones(3, np.float64)}  # W: a transposed view (not C-contiguous)
    opt = Adam(params, lr=0.1, fused=True)
    opt.step(params, {"W": np.ones((4, 6), np.float32), "b": np.ones(3)})
    np.testing.assert_allclose(base, 0.9, rtol=1e-6)  # the view's base moved: the update was not lost in a copy
    np.testing.assert_allclose(params["b"], 0.9, rtol=1e-7)  # lr g / (|g| + eps), eps 1e-8


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(0, 7), st.integers(1, 40), st.booleans())
def test_below_kernel_equals_its_numpy_twin(seed, B, G, per_row):
    """Lesson 03's firings: u < prob, row by row, with prob one broadcast row (independent features) or a
    row per sample (the correlated variant); values equal to prob do not fire."""
    rng = np.random.default_rng(seed)
    u = rng.random((B, G), dtype=np.float32)
    prob = rng.random((B, G)) * 0.6 if per_row else np.broadcast_to(rng.random(G) * 0.6, (B, G))
    if B and G:
        u[0, 0] = np.float32(0.25)
        prob = np.array(prob)
        prob[0, 0] = 0.25  # a tie: not below
    for a, b in zip(K.below_csr(u, prob), K.below_csr_numpy(u, prob)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_half_rows_widen_exactly_every_float16():
    """Every one of the 65,536 float16 bit patterns (zeros, subnormals, normals, infinities, NaNs with their
    payloads) widens to NumPy's float32, bit for bit, in rows gathered in any order."""
    half = np.arange(65536, dtype=np.uint16).view(np.float16).reshape(512, 128)
    take = np.random.default_rng(0).permutation(512)[:300]
    out = np.empty((300, 128), np.float32)
    K.gather_rows(half, take, out)
    expected = np.empty_like(out)
    K.gather_rows_numpy(half, take, expected)
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))
    K.gather_rows(half.astype(np.float32), take, out)  # a float32 store: a plain gather
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))
