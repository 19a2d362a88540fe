"""How good is a sparse autoencoder? Numbers against ground truth, and numbers available without it.

Against known features (Sharkey et al. 2022), with true directions T [G, d] and learned decoder rows
D [n, d]:
- `mmcs`: mean max cosine similarity, (1/G) sum_g max_j cos(T_g, D_j).
- `fraction_recovered`: the share of true features whose best cosine is >= a threshold (0.9).
- `one_to_one_score`: the mean cosine of an optimal one-to-one matching (the Hungarian method).

Signed, not absolute, cosine. SAE latents are non-negative, so decoder row j only ever adds +f_j D_j:
a row pointing at -T_g cannot express feature g (it would need a negative activation). A sign-flipped
direction is therefore not a recovery, and these metrics use cos, not |cos|.

Without ground truth, as the paper measured its transformer's dictionaries: L0, the firing density of
each latent (dead = never fires; "ultralow" = fires on fewer than 1e-6 of tokens; the log10-density
histogram), and reconstruction quality (MSE, explained variance).

Against the corpus labels (Bricken et al. 2023), for a unit's activations a over N tokens and a label
indicator y (1 on the bytes of, say, the `dna` context), the definitions on arrays in memory (the
streaming versions in scores.py must reproduce them):
- `pearson`: the correlation of a with y, the paper's sensitivity;
- `specificity`: of the activation mass, the share on labelled tokens (the paper's "above activation 5"
  needs its activation scale; `threshold="half"` uses half of each unit's maximum, which is scale-free);
- `auroc`: P(a on a labelled token > a on an unlabelled one), which does not depend on a's scale (the
  paper does not report it; this implementation does, beside the two).

And `loss_recovered`: (L_ablated - L_replaced) / (L_ablated - L_clean), how much of the loss that an
ablation costs a replacement (the SAE's reconstruction) wins back.

Axis vocabulary: G true features, n learned latents, d data dims, B samples; N tokens and U units for
the label scores.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

from tinymono.validate import REAL, check_array, check_int, check_number


def _unit_rows(A):
    A = np.asarray(A, dtype=np.float64)
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-30)


def cosine_matrix(true, learned):
    """[G, n]: the cosine between each true direction (rows of true [G, d]) and each learned one ([n, d])."""
    true = check_array("true", true, ("G", "d"), kinds=REAL)
    learned = check_array("learned", learned, ("n", true.shape[1]), kinds=REAL)
    return _unit_rows(true) @ _unit_rows(learned).T


def max_cosines(true, learned):
    """[G]: for each true feature, its best cosine with any learned direction."""
    return cosine_matrix(true, learned).max(axis=1)


def mmcs(true, learned):
    """Mean max cosine similarity: (1/G) sum_g max_j cos(true_g, learned_j), in [-1, 1].

    Several true features may pick the same learned direction, so a dictionary can score well while
    merging two features that sit close together; `one_to_one_score` does not allow that."""
    return float(max_cosines(true, learned).mean())


def fraction_recovered(true, learned, threshold=0.9):
    """The share of true features with some learned direction at cosine >= threshold."""
    check_number("threshold", threshold, -1, 1)
    return float(np.mean(max_cosines(true, learned) >= threshold))


def match_features(true, learned):
    """The one-to-one matching of true features to learned directions maximising the summed cosine
    (scipy's linear_sum_assignment). -> (true_index [m], learned_index [m], cosines [m]), m = min(G, n)."""
    cos = cosine_matrix(true, learned)
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return rows, cols, cos[rows, cols]


def one_to_one_score(true, learned):
    """The mean over all G true features of its cosine in the optimal one-to-one matching (a feature left
    unmatched because n < G counts 0).

    Unlike MMCS, each learned direction may serve only one true feature: a dictionary that represents two
    features by one direction between them scores well on MMCS (both pick it) but is penalised here."""
    _, _, cos = match_features(true, learned)
    return float(cos.sum() / len(np.asarray(true)))


def duplicate_pairs(true, W_dec, f, threshold=0.9):
    """True features that a dictionary gives two live latents: for each true feature g, the latents whose
    decoder row has cosine >= threshold with g and that fire in f [B, n] (W_dec [n, d], rows of any norm).
    -> (features [m] the g with two or more, co_fire [m], weaker [m]), for each such g's two most frequent
    latents a and b: co_fire = P(both fire | either fires) over the rows of f; weaker = the median, over the
    rows where both fire, of the smaller one's share of the pair's output along g, min(c_a, c_b) / (c_a +
    c_b) with c = f ||d|| (0.5: they split it evenly; NaN when they never fire together)."""
    cos = cosine_matrix(true, W_dec)  # [G, n]
    f = check_array("f", f, ("B", cos.shape[1]), kinds=REAL)
    check_number("threshold", threshold, -1, 1)
    fires = f > 0
    counts = fires.sum(axis=0)
    norms = np.linalg.norm(np.asarray(W_dec, dtype=np.float64), axis=1)
    features, co_fire, weaker = [], [], []
    for g in range(cos.shape[0]):
        live = np.flatnonzero((cos[g] >= threshold) & (counts > 0))
        if live.size < 2:
            continue
        a, b = live[np.argsort(-counts[live], kind="stable")[:2]]
        both, either = fires[:, a] & fires[:, b], fires[:, a] | fires[:, b]
        ca, cb = f[both, a] * norms[a], f[both, b] * norms[b]
        features.append(g)
        co_fire.append(both.sum() / either.sum())
        weaker.append(float(np.median(np.minimum(ca, cb) / (ca + cb))) if both.any() else np.nan)
    return np.array(features, dtype=np.int64), np.array(co_fire), np.array(weaker)


def l0(f):
    """Mean over samples of the number of nonzero latents; f [B, n]."""
    f = check_array("f", f, ("B", "n"), kinds=REAL)
    return float(np.count_nonzero(f) / f.shape[0])


def feature_density(f):
    """[n]: the fraction of samples (tokens) on which each latent is nonzero; f [B, n]."""
    f = check_array("f", f, ("B", "n"), kinds=REAL)
    return np.count_nonzero(f, axis=0) / f.shape[0]


def _check_density(density, nonempty=True):
    density = check_array("density", density, ("n",), kinds=REAL, nonempty=nonempty)
    if density.size and (density.min() < 0 or density.max() > 1):
        raise ValueError(f"density holds fractions of tokens, in [0, 1]; got values from {density.min()} to "
                         f"{density.max()}")
    return density


def dead_fraction(density):
    """The share of latents that never fired (density exactly 0)."""
    return float(np.mean(_check_density(density) == 0))


def ultralow_fraction(density, threshold=1e-6):
    """The share of latents that fired, but on fewer than `threshold` of the tokens (the paper's
    "ultralow density" cluster; dead latents are counted by dead_fraction, not here)."""
    density = _check_density(density)
    check_number("threshold", threshold, 0, 1)
    return float(np.mean((density > 0) & (density < threshold)))


def log_density_histogram(density, bins=40, lo=-8.0, hi=0.0):
    """Histogram data of log10(density) over the latents that fired: -> (counts [bins], edges [bins + 1],
    n_dead). Densities below 10^lo land in the first bin."""
    density = _check_density(density, nonempty=False).astype(np.float64)
    check_int("bins", bins, lo=1)
    if not check_number("lo", lo) < check_number("hi", hi):
        raise ValueError(f"need lo < hi, got lo={lo}, hi={hi}")
    alive = density[density > 0]
    counts, edges = np.histogram(np.clip(np.log10(alive), lo, hi), bins=bins, range=(lo, hi))
    return counts, edges, int(np.sum(density == 0))


def reconstruction_mse(x, x_hat):
    """Mean over samples and elements of (x - x_hat)^2 (the SAE loss's reconstruction term)."""
    x = check_array("x", x, kinds=REAL).astype(np.float64)
    x_hat = check_array("x_hat", x_hat, x.shape, kinds=REAL).astype(np.float64)  # same shape: no broadcasting
    return float(np.mean((x - x_hat) ** 2))


def explained_variance(x, x_hat):
    """1 - sum_b ||x_b - x_hat_b||^2 / sum_b ||x_b - mean(x)||^2, with mean(x) the mean over the batch [d].

    1 is perfect; 0 is no better than predicting the mean for every sample. (The denominator subtracts the
    batch mean of each dimension; dividing by sum ||x||^2 instead, or averaging per-sample ratios, are the
    slips this definition avoids.)"""
    x = check_array("x", x, ("B", "d"), kinds=REAL).astype(np.float64)
    x_hat = np.asarray(x_hat)
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have one shape, got {x.shape} and {x_hat.shape}")
    x_hat = check_array("x_hat", x_hat, kinds=REAL).astype(np.float64)
    residual = np.sum((x - x_hat) ** 2)
    total = np.sum((x - x.mean(axis=0)) ** 2)
    if total == 0:
        raise ValueError("x does not vary over the batch, so there is no variance to explain")
    return float(1.0 - residual / total)


# ----------------------------------------------------------------------------------------------------
# a unit against a label: the definitions, which the streaming versions (scores.py) must reproduce


def _activations(A, ndim=2):
    """A [N, U] (or [N] when ndim allows it): real, finite (a NaN would score 0, not fail), N >= 1."""
    return check_array("A", A, ndim=ndim, kinds=REAL).astype(np.float64)


def _indicator(y, n):
    y = check_array("y", y, kinds=REAL, finite=False, nonempty=False)
    if y.dtype != bool and not np.isin(y, (0, 1)).all():
        raise ValueError("a label indicator holds 0/1 or booleans (label ids would be read as 'id != 0')")
    y = y.astype(bool)
    if y.shape != (n,):
        raise ValueError(f"y (the label indicator) has shape {y.shape}, the activations have {n} rows")
    return y


def pearson(A, y):
    """A [N, U], y [N] bool -> [U]: the correlation of each column with y (0 where either is constant)."""
    A = _activations(A)
    y = _indicator(y, len(A)).astype(np.float64)
    a, yc = A - A.mean(axis=0), y - y.mean()
    den = np.sqrt((a * a).sum(axis=0) * (yc @ yc))
    return np.divide(yc @ a, den, out=np.zeros(A.shape[1]), where=den > 0)


def specificity(A, y, threshold=None):
    """A [N, U] >= 0, y [N] bool -> [U]: the share of each unit's activation mass on labelled tokens,
    counting only activations >= threshold (None: all; "half": half the unit's max; or a number / [U]).
    A unit with no mass there scores 0."""
    A = _activations(A)
    if A.min() < 0:
        raise ValueError(f"A must be >= 0 (activation mass), got values down to {A.min():.3g}")
    y = _indicator(y, len(A))
    if isinstance(threshold, str) and threshold != "half":
        raise ValueError(f"threshold must be None, 'half', a number or [U] numbers, got {threshold!r}")
    if threshold is not None:
        t = 0.5 * A.max(axis=0) if isinstance(threshold, str) else check_array("threshold", threshold, kinds=REAL)
        A = np.where(A >= t, A, 0.0)
    total = A.sum(axis=0)
    return np.divide(A[y].sum(axis=0), total, out=np.zeros(A.shape[1]), where=total > 0)


def auroc(A, y):
    """A [N, U] (or [N]), y [N] bool -> [U]: P(a on a labelled token > a on an unlabelled one), ties
    counted one half, exactly, from ranks (Mann-Whitney). 0.5 when y is all true or all false."""
    A = _activations(A, ndim=(1, 2))
    col = A.ndim == 1
    A = A[:, None] if col else A
    y = _indicator(y, len(A))
    P, Q = int(y.sum()), int((~y).sum())
    if P == 0 or Q == 0:
        out = np.full(A.shape[1], 0.5)
    else:
        ranks = rankdata(A, axis=0)  # ties get their average rank
        out = (ranks[y].sum(axis=0) - P * (P + 1) / 2) / (P * Q)
    return out[0] if col else out


# ----------------------------------------------------------------------------------------------------
# loss recovered


def loss_recovered(l_clean, l_replaced, l_ablated):
    """(L_ablated - L_replaced) / (L_ablated - L_clean): 1 when the replacement is as good as the real
    activations, 0 when it is no better than the ablation."""
    l_clean, l_replaced = check_number("l_clean", l_clean), check_number("l_replaced", l_replaced)
    l_ablated = check_number("l_ablated", l_ablated)
    if l_ablated == l_clean:
        raise ValueError(f"the ablation does not change the loss ({l_clean}), so nothing can be recovered: "
                         "does the model's MLP reach the logits?")
    if l_ablated < l_clean:
        warnings.warn(f"the ablation lowers the loss ({l_clean:.4g} -> {l_ablated:.4g}), so the MLP does not help "
                      "yet (an untrained model?) and the sign of loss recovered means nothing", RuntimeWarning,
                      stacklevel=2)
    return (l_ablated - l_replaced) / (l_ablated - l_clean)
