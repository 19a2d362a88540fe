"""The Sharkey ground-truth generator: rates, counts, directions, determinism, correlations, validation.

Tolerances come from the binomial standard deviation: over N samples feature i's empirical firing rate
has std sqrt(p_i (1 - p_i) / N), and the mean active count has std sqrt(var(count) / N). A correct
generator stays within 5 of those (a wrong scale or decay is off by tens)."""
import numpy as np
import pytest

from tinymono.groundtruth import GroundTruth, GroundTruthConfig

N = 20_000


def draw_codes(gt, n, seed=0, chunk=5000):
    rng = np.random.default_rng(seed)
    return np.concatenate([gt.sample_codes(rng, min(chunk, n - i)) for i in range(0, n, chunk)])


def forced_rows(codes):
    """Rows where nothing fired and one feature was set to 1.0 (U[0,1) draws never equal 1.0)."""
    nonzero = (codes != 0).sum(axis=1)
    return (nonzero == 1) & (codes.max(axis=1) == 1.0)


def test_fire_rates_and_mean_active_count():
    cfg = GroundTruthConfig()
    gt = GroundTruth(cfg)
    codes = draw_codes(gt, N)
    p = cfg.fire_probabilities()
    assert p.sum() == pytest.approx(cfg.mean_active) and p[1] / p[0] == pytest.approx(cfg.decay)
    p_empty = np.prod(1 - p)
    expected_rate = p + p_empty / cfg.n_features  # the forced feature is uniform over the G
    rate = (codes != 0).mean(axis=0)
    z = (rate - expected_rate) / np.sqrt(expected_rate * (1 - expected_rate) / N)
    assert np.abs(z).max() < 5, (f"firing rates are off by up to {np.abs(z).max():.1f} binomial stds (feature "
                                 f"{np.abs(z).argmax()}): is p_i proportional to decay^i and scaled to sum to k?")
    counts = (codes != 0).sum(axis=1)
    tol = 5 * counts.std() / np.sqrt(N)
    assert abs(counts.mean() - cfg.expected_active()) < tol, (
        f"mean active count {counts.mean():.4f}, expected {cfg.expected_active():.4f} +- {tol:.4f}")
    assert forced_rows(codes).mean() == pytest.approx(p_empty, abs=5 * np.sqrt(p_empty / N)), \
        "empty rows must get exactly one feature at 1.0"
    assert not np.any(counts == 0), "no row may be all zeros"
    active = codes[codes != 0]
    assert active.min() > 0 and active.max() <= 1 and abs(active.mean() - 0.5) < 0.01, "coefficients must be U[0,1]"


def test_directions_data_and_determinism():
    gt = GroundTruth(GroundTruthConfig(d=16, n_features=32, mean_active=3))
    np.testing.assert_allclose(np.linalg.norm(gt.directions, axis=1), 1.0, rtol=1e-6,
                               err_msg="ground-truth directions must have unit norm")
    assert gt.directions.dtype == np.float32
    x, codes = gt.sample(np.random.default_rng(5), 100, codes=True)
    assert x.dtype == np.float32 and x.shape == (100, 16) and codes.shape == (100, 32)
    np.testing.assert_allclose(x, codes.astype(np.float64) @ gt.directions, rtol=1e-5, atol=1e-6,
                               err_msg="x must be codes @ directions")
    x2 = GroundTruth(GroundTruthConfig(d=16, n_features=32, mean_active=3)).sample(np.random.default_rng(5), 100)
    np.testing.assert_array_equal(x, x2, err_msg="same config and seed must give the same data")
    x3 = gt.sample(np.random.default_rng(6), 100)
    assert not np.array_equal(x, x3), "a different Generator seed must give different data"
    other = GroundTruth(GroundTruthConfig(d=16, n_features=32, mean_active=3, seed=1))
    assert not np.array_equal(gt.directions, other.directions), "cfg.seed must fix the directions"


def test_correlated_variant_keeps_rates_and_follows_M():
    # A small dataset with high rates, where co-firing is easy to measure: 8 features at p = 0.4 each.
    cfg = GroundTruthConfig(d=6, n_features=8, mean_active=3.2, decay=1.0, correlated=True, correlation_rank=2)
    gt = GroundTruth(cfg)
    M = gt.M
    assert np.allclose(M, M.T) and np.all(np.diag(M) == 1) and np.linalg.eigvalsh(M).min() > 0, \
        "M must be a symmetric positive-definite correlation matrix"
    n = 50_000
    codes = draw_codes(gt, n, seed=1)
    fired = (codes != 0) & ~forced_rows(codes)[:, None]  # natural firings only
    counts = fired.sum(axis=1)
    tol = 5 * counts.std() / np.sqrt(n)
    assert abs(counts.mean() - cfg.mean_active) < tol, (
        f"correlated firing must keep the mean active count at k={cfg.mean_active}: got {counts.mean():.4f} "
        f"+- {tol:.4f}; is the fire probability 2 Phi(z) p (E[Phi(z)] = 1/2)?")
    rate = fired.mean(axis=0)
    p = cfg.fire_probabilities()
    assert np.abs(rate - p).max() < 5 * np.sqrt(p[0] * (1 - p[0]) / n), f"rates {rate} should all be {p[0]}"
    # theory: Cov(F_i, F_j) = 4 p^2 Cov(Phi(z_i), Phi(z_j)) = 4 p^2 arcsin(rho/2) / (2 pi)
    emp = np.corrcoef(fired.T.astype(np.float64))
    theory = 4 * p[0] ** 2 * np.arcsin(M / 2) / (2 * np.pi) / (p[0] * (1 - p[0]))
    iu = np.triu_indices(cfg.n_features, 1)
    strong = np.abs(M[iu]) > 0.3
    assert strong.sum() >= 3, "the test needs some strongly correlated pairs"
    assert np.all(np.sign(emp[iu][strong]) == np.sign(M[iu][strong])), (
        f"features must co-fire where M is positive and avoid each other where it is negative:\n"
        f"M {np.round(M[iu][strong], 2)}\nempirical {np.round(emp[iu][strong], 3)}")
    # the forced rows and the 1/sqrt(n) noise (0.0045) blur the theory a little; 0.02 catches a missing factor
    assert np.abs(emp[iu] - theory[iu]).max() < 0.02, f"co-firing {emp[iu]} vs theory {theory[iu]}"
    uncorrelated = GroundTruth(GroundTruthConfig(d=6, n_features=8, mean_active=3.2, decay=1.0))
    emp0 = np.corrcoef((draw_codes(uncorrelated, n, seed=2) != 0).T.astype(np.float64))
    assert np.abs(emp0[iu]).max() < 0.05, "without correlation the features fire (nearly) independently"


@pytest.mark.parametrize("kwargs, word", [
    (dict(d=0), "d"), (dict(n_features=-3), "n_features"), (dict(mean_active=600), "mean_active"),
    (dict(mean_active=-1), "mean_active"), (dict(decay=1.5), "decay"), (dict(decay=0), "decay"),
    (dict(n_features=4, mean_active=3, decay=0.5), "probability"), (dict(correlation_rank=0), "correlation_rank"),
    (dict(n_features=8, mean_active=5, decay=1.0, correlated=True), "correlated"),
])
def test_config_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        GroundTruthConfig(**kwargs)


@pytest.mark.parametrize("kw", [dict(d=16, n_features=32, mean_active=3), dict(d=16, n_features=32, mean_active=0.3)])
def test_firings_are_the_dense_draws(kw):
    """The sampler collects the firings in one pass (kernels/sae.py: below_csr) and multiplies only them;
    its codes must be those of the plain dense recipe from the same Generator (a [B, G] uniform matrix
    compared with the rates, then one uniform per firing in row order, then a feature for each empty row),
    and the Generator must be left where that recipe leaves it. (The correlated variant draws z only where
    a feature can fire: test_correlated_variant_keeps_rates_and_follows_M checks its statistics.)"""
    gt = GroundTruth(GroundTruthConfig(**kw))
    rng, ref = np.random.default_rng(11), np.random.default_rng(11)
    x, codes = gt.sample(rng, 300, codes=True)
    fires = ref.random((300, 32), dtype=np.float32) < gt.p
    want = np.zeros((300, 32), dtype=np.float32)
    want[fires] = ref.random(int(fires.sum()), dtype=np.float32)
    empty = np.flatnonzero(~fires.any(axis=1))
    want[empty, ref.integers(0, 32, size=empty.size)] = 1.0
    if kw["mean_active"] < 1:
        assert empty.size > 100, "a case with many empty rows"
    np.testing.assert_array_equal(codes, want)
    assert rng.random() == ref.random(), "the Generator must end where the dense recipe leaves it"
    np.testing.assert_allclose(x, want.astype(np.float64) @ gt.directions, rtol=1e-5, atol=1e-6)


def test_expected_active_counts_the_feature_forced_into_an_empty_sample():
    """At a low mean the forced feature matters (about 0.6 here; at the lessons' 5, e^-5 is lost in the noise)."""
    cfg = GroundTruthConfig(d=4, n_features=8, mean_active=0.5, decay=0.9)
    p = cfg.fire_probabilities()
    assert cfg.expected_active() == pytest.approx(0.5 + np.prod(1 - p), rel=1e-12)
    codes = GroundTruth(cfg).sample_codes(np.random.default_rng(0), 200_000)
    assert (codes != 0).sum(axis=1).mean() == pytest.approx(cfg.expected_active(), abs=0.01)
