"""Each metric against a hand-computed case."""
import numpy as np
import pytest

from tinymono import metrics as M


def unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_mmcs_of_a_permuted_rescaled_copy_is_one():
    rng = np.random.default_rng(0)
    true = unit(rng.standard_normal((20, 8)))
    learned = true[rng.permutation(20)] * rng.uniform(0.5, 3, (20, 1))  # order and length do not matter
    assert M.mmcs(true, learned) == pytest.approx(1.0, abs=1e-12)
    assert M.fraction_recovered(true, learned) == 1.0
    assert M.one_to_one_score(true, learned) == pytest.approx(1.0, abs=1e-12)


def test_a_sign_flipped_direction_is_not_a_recovery():
    """Latents are non-negative, so -T_g cannot express feature g: MMCS uses cos, not |cos|."""
    true = np.eye(3)
    learned = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])  # feature 1 only flipped
    assert M.max_cosines(true, learned)[1] == pytest.approx(0.0), \
        "a flipped direction must not count as recovered: did you take |cos|?"
    assert M.mmcs(true, learned) == pytest.approx(2 / 3)
    assert M.fraction_recovered(true, learned) == pytest.approx(2 / 3)


def test_mmcs_hand_case():
    true = np.array([[1.0, 0.0], [0.0, 1.0]])
    learned = np.array([[1.0, 1.0], [3.0, 0.0]])  # cos with true: [[1/sqrt2, 1], [1/sqrt2, 0]]
    np.testing.assert_allclose(M.cosine_matrix(true, learned), [[2**-0.5, 1.0], [2**-0.5, 0.0]], atol=1e-15)
    assert M.mmcs(true, learned) == pytest.approx((1 + 2**-0.5) / 2)
    assert M.fraction_recovered(true, learned, threshold=0.9) == 0.5
    assert M.fraction_recovered(true, learned, threshold=0.7) == 1.0


def test_one_to_one_differs_from_mmcs_when_a_direction_is_shared():
    # two true features 20 degrees apart, one learned direction between them plus an unrelated one
    a, b = np.deg2rad([0.0, 20.0])
    true = np.array([[np.cos(a), np.sin(a), 0], [np.cos(b), np.sin(b), 0]])
    mid = np.deg2rad(10.0)
    learned = np.array([[np.cos(mid), np.sin(mid), 0], [0, 0, 1.0]])
    c = np.cos(np.deg2rad(10.0))
    assert M.mmcs(true, learned) == pytest.approx(c), "both true features pick the shared direction"
    assert M.one_to_one_score(true, learned) == pytest.approx(c / 2), \
        "one-to-one: the second feature gets the unrelated direction (cos 0)"
    rows, cols, cos = M.match_features(true, learned)
    assert sorted(cols) == [0, 1]
    assert M.one_to_one_score(true, learned[:1]) == pytest.approx(c / 2), "unmatched true features count 0"


def test_l0_density_dead_and_ultralow():
    f = np.array([[0.0, 1.0, 0.0, 2.0], [0.0, 0.5, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 1.0, 0.1, 0.0]])
    assert M.l0(f) == pytest.approx((2 + 1 + 1 + 2) / 4)
    np.testing.assert_allclose(M.feature_density(f), [0, 1, 0.25, 0.25])
    assert M.dead_fraction(M.feature_density(f)) == 0.25
    density = np.array([0.0, 1e-7, 5e-7, 1e-6, 1e-3, 0.0])
    assert M.ultralow_fraction(density) == pytest.approx(2 / 6), "ultralow: fired, but on < 1e-6 of tokens"
    assert M.ultralow_fraction(density, threshold=1e-2) == pytest.approx(4 / 6)
    assert M.dead_fraction(density) == pytest.approx(2 / 6)
    counts, edges, n_dead = M.log_density_histogram(density, bins=8, lo=-8, hi=0)
    assert n_dead == 2 and counts.sum() == 4
    assert counts[1] == 2 and counts[2] == 1 and counts[5] == 1, f"log10 densities -7, -6.3 | -6 | -3 -> {counts}"
    np.testing.assert_allclose(edges, np.arange(-8, 1))


def test_explained_variance_and_mse_hand_case():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])  # column means (3, 2)
    x_hat = np.array([[1.0, 2.0], [2.0, 4.0], [5.0, 1.0]])
    # residual: 0 + 1 + 1 = 2; total: (4 + 0 + 4) + (0 + 4 + 4) = 16
    assert M.explained_variance(x, x_hat) == pytest.approx(1 - 2 / 16), \
        "explained variance divides by the variance about the per-dimension batch mean"
    assert M.explained_variance(x, x) == 1.0
    assert M.explained_variance(x, np.tile(x.mean(0), (3, 1))) == pytest.approx(0.0), "predicting the mean gives 0"
    with pytest.raises(ValueError, match="one shape"):
        M.explained_variance(x, x[:1])  # would broadcast silently
    with pytest.raises(ValueError, match="does not vary"):
        M.explained_variance(np.ones((3, 2)), np.zeros((3, 2)))
    assert M.reconstruction_mse(x, x_hat) == pytest.approx(2 / 6), "mse is the mean over samples AND elements"


def test_duplicate_pairs_hand_case():
    """Feature 0 has two live latents (one at twice the decoder norm), feature 1 one live latent and one
    that never fires, feature 2 none near it: only feature 0 is a pair, with co-firing and shares by hand."""
    true = np.eye(3)
    W_dec = np.array([[1.0, 0.1, 0], [2.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0.02], [0.5, 0.5, 0.7]])
    n0 = np.sqrt(1.01)  # latent 0's decoder norm
    f = np.array([[1.0, 1.0, 1.0, 0, 0],    # both of feature 0: outputs n0 and 2 -> weaker n0 / (n0 + 2)
                  [3.0, 0.5, 0, 0, 1.0],    # both: outputs 3 n0 and 1 -> weaker 1 / (3 n0 + 1)
                  [0.0, 2.0, 0, 0, 0],      # only the second
                  [0.0, 0.0, 0, 0, 1.0]])   # neither (latent 4 is near no true feature at 0.9)
    features, co_fire, weaker = M.duplicate_pairs(true, W_dec, f)
    assert features.tolist() == [0], "latent 3 never fires, so feature 1 has one live latent"
    assert co_fire[0] == pytest.approx(2 / 3), "both fire on 2 of the 3 rows where either does"
    assert weaker[0] == pytest.approx(np.median([n0 / (n0 + 2), 1 / (3 * n0 + 1)]), rel=1e-12), \
        "shares along the row norms: f * ||d||"
    f[3, 3] = 0.2  # now latent 3 fires once, never with latent 2
    features, co_fire, weaker = M.duplicate_pairs(true, W_dec, f)
    assert features.tolist() == [0, 1] and co_fire[1] == pytest.approx(0.0) and np.isnan(weaker[1])
    assert M.duplicate_pairs(true, W_dec, f, threshold=0.999)[0].tolist() == [1], \
        "latent 0 is at cos 0.995 with feature 0 (latent 3 at 0.9998 with feature 1): at 0.999 feature 0 has one"
