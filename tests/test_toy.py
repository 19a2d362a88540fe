"""The toy model of superposition: its data, gradients, kernel-vs-twin agreement and geometry metrics."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinymono import toy
from tinymono.gradcheck import check_gradients, format_table
from tinymono.kernels import toy as K

SETTINGS = settings(max_examples=20, deadline=None)


# ----------------------------------------------------------------------------------------------------
# data


def test_fire_rates_and_values_match_the_config():
    probs = np.array([[0.5, 0.1, 0.02, 0.3]])
    cfg = toy.ToyConfig(4, 2, feature_probability=probs, batch_size=200_000)
    x = toy.generate_batch(cfg, step=3)[0]  # [batch, feats]
    rate = (x > 0).mean(axis=0)
    n = x.shape[0]
    tol = 5 * np.sqrt(probs[0] * (1 - probs[0]) / n)  # five binomial standard deviations
    assert np.all(np.abs(rate - probs[0]) < tol), f"fire rates {rate} should match {probs[0]} within {tol}"
    values = x[x > 0]
    assert values.max() < 1 and abs(values.mean() - 0.5) < 5 * np.sqrt(1 / 12 / values.size), \
        "present features must be uniform in [0, 1)"


def test_correlated_and_anticorrelated_pairs():
    cfg = toy.ToyConfig(6, 2, feature_probability=0.2, n_correlated_pairs=1, n_anticorrelated_pairs=1,
                        batch_size=100_000)
    x = toy.generate_batch(cfg, step=0)[0] > 0
    assert np.array_equal(x[:, 0], x[:, 1]), "a correlated pair must be present together"
    assert not np.any(x[:, 2] & x[:, 3]), "an anticorrelated pair must never be present together"
    tol = 5 * np.sqrt(0.2 * 0.8 / x.shape[0])
    assert np.all(np.abs(x.mean(axis=0) - 0.2) < tol), f"each feature keeps its marginal 0.2: {x.mean(axis=0)}"


def test_pair_members_values_are_uniform_and_independent():
    """One draw per (sample, feature) decides presence and value: every present value must still be
    uniform in [0, 1), and a correlated pair's two values independent of each other."""
    cfg = toy.ToyConfig(6, 2, feature_probability=0.2, n_correlated_pairs=1, n_anticorrelated_pairs=1,
                        batch_size=200_000)
    x = toy.generate_batch(cfg, step=1)[0]
    for f in range(6):
        v = x[x[:, f] > 0, f]
        se = np.sqrt(1 / 12 / v.size)  # the standard error of a uniform's mean
        assert v.max() < 1 and abs(v.mean() - 0.5) < 5 * se, f"feature {f}: values must be uniform in [0, 1)"
        assert abs(np.mean(v < 0.25) - 0.25) < 5 * np.sqrt(0.1875 / v.size), f"feature {f}: not uniform below 1/4"
    both = x[:, 0] > 0
    r = np.corrcoef(x[both, 0], x[both, 1])[0, 1]
    assert abs(r) < 5 / np.sqrt(both.sum()), f"a correlated pair shares presence, not values (r = {r:.3f})"


def test_same_seed_same_data_and_steps_differ():
    cfg = toy.ToyConfig(5, 2, n_inst=3, batch_size=64, seed=7)
    a, b = toy.generate_batch(cfg, 5), toy.generate_batch(cfg, 5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, toy.generate_batch(cfg, 6))
    assert not np.array_equal(a, toy.generate_batch(toy.ToyConfig(5, 2, n_inst=3, batch_size=64, seed=8), 5))


def test_the_two_halves_of_a_hash_are_independent():
    """Features 2q and 2q + 1 take the high and low 32 bits of one hash: always present (p = 1), their
    values are those uniforms themselves, and must be independent of each other and of the next pair's."""
    cfg = toy.ToyConfig(5, 2, feature_probability=1.0, batch_size=400_000, seed=3)
    u = toy.generate_batch(cfg, step=2)[0]  # [batch, feats], every value a raw uniform
    n = u.shape[0]
    for f, g in [(0, 1), (2, 3), (1, 2), (3, 4)]:
        r = np.corrcoef(u[:, f], u[:, g])[0, 1]
        assert abs(r) < 5 / np.sqrt(n), f"features {f} and {g}: correlation {r:.4f}"
        counts = np.histogram2d(u[:, f], u[:, g], bins=4, range=[[0, 1], [0, 1]])[0]  # 16 cells of n / 16
        chi2 = ((counts - n / 16) ** 2 / (n / 16)).sum()
        assert chi2 < 45, f"features {f} and {g}: joint cells not uniform (chi2 {chi2:.1f}, 15 dof)"
    assert u.min() >= 0 and u.max() < 1


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 9), st.integers(0, 2**40), st.integers(0, 10**6))
def test_kernel_sampling_twin(n_pairs_corr, n_inst, batch, seed, step):
    cfg = toy.ToyConfig(2 * n_pairs_corr + 3, 2, n_inst=n_inst, feature_probability=0.3, batch_size=batch,
                        n_correlated_pairs=n_pairs_corr // 2, n_anticorrelated_pairs=n_pairs_corr - n_pairs_corr // 2,
                        seed=seed)
    expected = toy.generate_batch(cfg, step)
    key = K.seed_key(seed)
    split = 1 + seed % batch  # the kernel draws a batch in tiles: any split must give the same samples
    for i in range(n_inst):
        for first, stop in [(0, split), (split, batch)]:
            x, u = np.empty((cfg.n_features, stop - first)), np.empty((cfg.n_features, stop - first))
            with np.errstate(over="ignore"):
                K.sample_tile(key, step, i, n_inst, first, stop - first, batch, cfg.probabilities()[i], cfg.kinds(), u, x)
            np.testing.assert_array_equal(x.T, expected[i, first:stop],
                                          err_msg="the kernel must draw exactly the twin's numbers")


# ----------------------------------------------------------------------------------------------------
# gradients


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 6), st.integers(1, 4), st.integers(1, 5),
       st.sampled_from(["relu", "linear"]))
def test_toy_backward(seed, n_inst, n, m, batch, model):
    rng = np.random.default_rng(seed)
    cfg = toy.ToyConfig(n, m, n_inst=n_inst, model=model, importance=rng.uniform(0.1, 1, (n_inst, n)))
    params = {"W": rng.standard_normal((n_inst, m, n)), "b_final": rng.standard_normal((n_inst, n))}
    x = rng.uniform(0, 1, (n_inst, batch, n)) * (rng.uniform(size=(n_inst, batch, n)) < 0.6)
    pre = np.einsum("ihf,ibh->ibf", params["W"], toy.hidden(params, x)) + params["b_final"][:, None]
    assume(np.abs(pre).min() > 0.01)  # keep the finite differences away from the ReLU's kink
    out, cache = toy.forward(params, x, cfg)
    dout = rng.standard_normal(out.shape)
    grads = toy.backward(params, cache, cfg, dout)
    errs = check_gradients(lambda: toy.forward(params, x, cfg)[0], params, grads, dout, rng=rng)
    assert max(errs.values()) < 1e-7, ("toy backward disagrees with central differences: W is used twice, "
                                       "did you add both terms?\n" + format_table(errs))
    # the loss's own gradient: d/d out of sum over instances of the per-instance loss
    per_inst, dloss = toy.loss(out, x, cfg)
    errs = check_gradients(lambda: toy.loss(out, x, cfg)[0].sum(), {"out": out}, {"out": dloss}, 1.0, rng=rng)
    assert errs["out"] < 1e-7, format_table(errs)


@SETTINGS
@given(st.integers(1, 10), st.integers(1, 6), st.integers(1, 4), st.integers(1, 12), st.integers(1, 4),
       st.sampled_from(["relu", "linear"]), st.integers(0, 1000))
def test_train_kernel_twin(n, m, n_inst, batch, steps, model, seed):
    cfg = toy.ToyConfig(n, m, n_inst=n_inst, feature_probability=np.linspace(0.1, 1.0, n_inst), model=model,
                        importance=0.8 ** np.arange(n), batch_size=batch, steps=20, lr=0.01, seed=seed)
    fast, slow = toy.ToyTask(cfg, "numba"), toy.ToyTask(cfg, "numpy")
    for start in (0, steps):  # two chunks, so the step counter carries across calls
        a, b = fast.run_chunk(start, steps), slow.run_chunk(start, steps)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-9, abs=1e-12)
    for k in fast.params:
        np.testing.assert_allclose(fast.params[k], slow.params[k], rtol=1e-8, atol=1e-10,
                                   err_msg=f"{k}: the numba kernel and its NumPy twin disagree")


def test_kernels_run_with_numba_switched_off():
    """The kernel tests also pass with numba switched off (plain Python, readable tracebacks)."""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "twin and not switched_off", "--hypothesis-seed=0"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "4 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]  # the twins, two sizes each


# ----------------------------------------------------------------------------------------------------
# geometry metrics, on hand-built weight matrices


def test_metrics_on_known_geometries():
    dedicated = np.eye(2)[None]  # two features, each its own dimension
    np.testing.assert_allclose(toy.feature_dimensionality(dedicated), [[1, 1]])
    np.testing.assert_allclose(toy.superposition(dedicated), [[0, 0]])
    np.testing.assert_allclose(toy.dims_per_feature(dedicated), [1.0])
    antipodal = np.array([[[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]]])  # two antipodal pairs in 2 dims
    np.testing.assert_allclose(toy.feature_dimensionality(antipodal), [[0.5] * 4])
    np.testing.assert_allclose(toy.dims_per_feature(antipodal), [0.5])
    np.testing.assert_allclose(toy.superposition(antipodal), [[1, 1, 1, 1]])
    angles = 2 * np.pi * np.arange(5) / 5
    pentagon = np.stack([np.cos(angles), np.sin(angles)])[None]
    np.testing.assert_allclose(toy.feature_dimensionality(pentagon), [[0.4] * 5], rtol=1e-12)
    np.testing.assert_allclose(toy.feature_norms(pentagon), [[1] * 5])
    np.testing.assert_allclose(toy.frobenius_sq(pentagon), [5.0])
    dropped = np.array([[[1.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_allclose(toy.feature_dimensionality(dropped), [[1.0, 0.0]])
    for metric in (toy.feature_norms, toy.superposition, toy.feature_dimensionality):  # one model's W alone
        np.testing.assert_allclose(metric(pentagon[0]), metric(pentagon)[0], rtol=1e-12,
                                   err_msg=f"{metric.__name__} of W [hidden, feats]")


# ----------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_features=0), "n_features"),
    (dict(d_hidden=-1), "d_hidden"),
    (dict(feature_probability=1.5), "feature_probability"),
    (dict(feature_probability=[0.1, 0.2, 0.3]), r"shape \[n_features=5\]"),
    (dict(importance=-1.0), "importance"),
    (dict(model="tanh"), "model"),
    (dict(n_correlated_pairs=3), "pairs"),
    (dict(n_anticorrelated_pairs=1, feature_probability=0.6), "anticorrelated"),
    (dict(n_anticorrelated_pairs=1, feature_probability=[0.1, 0.4, 0.2, 0.2, 0.2]), "same feature_probability"),
    (dict(n_correlated_pairs=1, feature_probability=[0.1, 0.4, 0.2, 0.2, 0.2]), "same feature_probability"),
    (dict(lr_decay="exp"), "decay"),
    (dict(n_correlated_pairs=1.5), "non-negative integer"),
    (dict(betas=(0.9,)), "betas"),
    (dict(betas=(0.9, 1.0)), "betas"),
])
def test_bad_config(kwargs, match):
    args = dict(n_features=5, d_hidden=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        toy.ToyConfig(**args)


def test_numpy_integers_in_configs_go_into_json():
    """Sizes computed with NumPy (np.int64) are accepted and stored as ints: checkpoints write configs as JSON."""
    from tinymono import sae
    from tinymono import transformer as tr

    cfgs = [toy.ToyConfig(np.int64(5), np.int64(2), steps=np.int64(10)),
            sae.SAEConfig(d_in=np.int64(4), d_sae=np.int64(8), steps=np.int64(3)),
            tr.TransformerConfig(d_model=np.int64(8), d_mlp=np.int64(8), n_heads=np.int64(2), d_head=np.int64(4))]
    for cfg in cfgs:
        d = json.loads(json.dumps(dataclasses.asdict(cfg)))
        assert all(type(v) is int for k, v in d.items() if k in ("n_features", "d_hidden", "steps", "d_in", "d_sae", "d_mlp"))


# From a mutation review of toy.py and its kernel: each test kills a small bug the tests above let live.


def test_init_is_xavier_normal():
    cfg = toy.ToyConfig(20, 5, n_inst=50)
    W = toy.init(cfg, np.random.default_rng(0))["W"]  # 5000 draws: the std within 5% (se ~1%)
    assert abs(W.std() / np.sqrt(2 / (20 + 5)) - 1) < 0.05 and abs(W.mean()) < 0.02


def test_the_seed_reaches_the_initial_weights():
    a, b = (toy.ToyTask(toy.ToyConfig(5, 2, seed=s)).params["W"] for s in (1, 2))
    assert not np.array_equal(a, b), "two seeds must start from two different W"


def test_evaluate_draws_data_the_training_never_saw(monkeypatch):
    cfg = toy.ToyConfig(5, 2, n_inst=2, batch_size=64, seed=3)
    seen, real = [], toy.forward
    monkeypatch.setattr(toy, "forward", lambda p, x, c: (seen.append(x), real(p, x, c))[1])
    toy.evaluate(cfg, toy.init(cfg, np.random.default_rng(0)), batch_size=1000)
    evaluated = {r.tobytes() for r in seen[0].reshape(-1, 5) if r.any()}
    trained = {r.tobytes() for s in range(5) for r in toy.generate_batch(cfg, s).reshape(-1, 5) if r.any()}
    assert not evaluated & trained, f"{len(evaluated & trained)} evaluation rows are training rows"


def test_interference_metrics_with_unequal_norms():
    W = np.array([[[1.0, 0.5], [0.0, 0.5]]])  # f0 = (1, 0), f1 = (0.5, 0.5): overlaps are not symmetric
    np.testing.assert_allclose(toy.superposition(W), [[0.25, 0.5]])  # (f0^.f1)^2, (f1^.f0)^2
    np.testing.assert_allclose(toy.feature_dimensionality(W), [[1 / 1.25, 0.5 / 1.0]])


@pytest.mark.parametrize("batch", [K.TILE + 1, 2 * K.TILE + 37])
def test_train_kernel_twin_across_tiles(batch):
    """Batches of more than one tile: the loss and the gradient scale divide by the batch, not the tile."""
    cfg = toy.ToyConfig(6, 3, n_inst=2, feature_probability=0.4, importance=0.8 ** np.arange(6),
                        batch_size=batch, steps=20, lr=0.01, seed=4)
    fast, slow = toy.ToyTask(cfg, "numba"), toy.ToyTask(cfg, "numpy")
    for start in (0, 3):
        a, b = fast.run_chunk(start, 3), slow.run_chunk(start, 3)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-9)
    for k in fast.params:
        np.testing.assert_allclose(fast.params[k], slow.params[k], rtol=1e-8, atol=1e-10, err_msg=k)
