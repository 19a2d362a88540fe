"""Ground-truth features in superposition: the data of Sharkey, Braun & Millidge (2022).

A sparse autoencoder on a real model's activations can only be judged indirectly. Here the answer is
known: `n_features` (G) unit-norm directions in a `d`-dimensional space (G > d, so they cannot all be
orthogonal: they are in superposition), and every sample is a sparse non-negative mix of them,

    codes[b, i] = U[0, 1]  if feature i fires in sample b, else 0      [B, G]
    x[b]        = codes[b] @ directions                                [B, d]

Feature i fires with probability p_i proportional to decay^i (a few common features, a long tail of rare
ones), scaled so that on average `mean_active` (k) features fire per sample. A sample in which nothing
fired gets one feature, chosen uniformly, at coefficient 1.0 (so no row is all zeros); this adds
P(nothing fired) = prod_i (1 - p_i) ~ exp(-k) to the mean active count (`expected_active`).

Correlated variant: per sample one draw z ~ N(0, M), with M a random positive-definite correlation
matrix, and feature i fires with probability 2 Phi(z_i) p_i. Since z_i ~ N(0, 1), E[Phi(z_i)] = 1/2, so
every feature keeps its mean firing rate p_i (and the mean active count stays k), but features whose z
are positively correlated now tend to fire together.

Axis vocabulary: B batch, d data dims, G ground-truth features.

What this implementation chose where the paper is silent: directions are fixed by `cfg.seed` (a dataset
is the pair config + seed); batches come from a Generator the caller passes, so a training run owns its
data stream and can checkpoint it. M is the correlation matrix of A A^T + I, with A a [G, rank]
standard-normal matrix (`correlation_rank`): a few shared factors give correlations of either sign
(median |rho| about 0.3 at the defaults), and the identity keeps M positive definite. Two features whose
z correlate with rho co-fire 1 + (2/pi) arcsin(rho/2) times as often as independent ones: at most 4/3.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.special import ndtr  # the standard normal CDF, Phi

from tinymono.kernels import sae as K
from tinymono.validate import check_int, check_number, check_rng


@dataclass(frozen=True)
class GroundTruthConfig:
    d: int = 256  # data dimensions
    n_features: int = 512  # G, the number of ground-truth directions
    mean_active: float = 5.0  # k, the expected number of features firing per sample
    decay: float = 0.99  # p_i proportional to decay^i
    correlated: bool = False
    correlation_rank: int = 4  # factors of the random correlation matrix M (correlated variant only)
    seed: int = 0  # fixes the directions and M (not the batches: those come from the caller's Generator)

    def __post_init__(self):
        for name in ("d", "n_features", "correlation_rank"):
            check_int(name, getattr(self, name), lo=1)
        check_int("seed", self.seed, lo=0)
        check_number("decay", self.decay, gt=0, hi=1)
        check_number("mean_active", self.mean_active, gt=0, hi=self.n_features)
        p_max = self.fire_probabilities().max() * (2 if self.correlated else 1)
        if p_max > 1:
            raise ValueError(
                f"mean_active={self.mean_active} with decay={self.decay} over {self.n_features} features needs a "
                f"firing probability of {p_max:.3g} > 1 for the most common feature"
                + (" (the correlated variant doubles it)" if self.correlated else "")
                + "; lower mean_active or raise decay")

    def fire_probabilities(self):
        """p [G]: p_i = k decay^i / sum_j decay^j, so that sum_i p_i = k."""
        profile = self.decay ** np.arange(self.n_features, dtype=np.float64)  # [G]
        return self.mean_active * profile / profile.sum()

    def expected_active(self):
        """The expected number of features active per sample, including the one forced into empty rows."""
        p = self.fire_probabilities()
        return float(p.sum() + np.prod(1.0 - p))


def random_directions(n, d, rng):
    """[n, d] Gaussian vectors normalised to unit length (float64)."""
    check_int("n", n, lo=0)
    check_int("d", d, lo=1)
    check_rng("rng", rng)
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def correlation_factors(n, rank, rng):
    """(F [n, rank], s [n]): z = F e + s * e' with e ~ N(0, I_rank) and e' ~ N(0, I_n) has the covariance
    F F^T + diag(s^2) = the correlation matrix of A A^T + I, for A a standard-normal [n, rank] matrix (drawn
    from rng). Sampling z this way costs n (rank + 1) per sample instead of a Cholesky factor's n^2."""
    check_int("n", n, lo=1)
    check_int("rank", rank, lo=0)
    check_rng("rng", rng)
    A = rng.standard_normal((n, rank))  # [n, rank] shared factors
    s = 1.0 / np.sqrt(np.sum(A ** 2, axis=1) + 1.0)  # 1 / sqrt(diag(A A^T + I))
    return A * s[:, None], s


def correlation_matrix(F, s):
    """The [n, n] correlation matrix F F^T + diag(s^2) of correlation_factors (unit diagonal, exactly)."""
    M = F @ F.T + np.diag(s ** 2)
    np.fill_diagonal(M, 1.0)  # exactly 1, not 1 +- round-off
    return M


class GroundTruth:
    """The fixed part of a dataset (directions, firing probabilities, M) plus a batch sampler.

    gt = GroundTruth(GroundTruthConfig())
    x = gt.sample(rng, 1024)                       # [1024, 256] float32
    x, codes = gt.sample(rng, 1024, codes=True)    # codes [1024, 512] float32
    gt.directions                                  # [512, 256] float32, unit rows
    """

    def __init__(self, cfg: GroundTruthConfig):
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        self.directions = random_directions(cfg.n_features, cfg.d, rng).astype(np.float32)  # [G, d]
        self.p = cfg.fire_probabilities()  # [G]
        self._factors = correlation_factors(cfg.n_features, cfg.correlation_rank, rng) if cfg.correlated else None
        self.M = None if self._factors is None else correlation_matrix(*self._factors)  # [G, G]

    def _fired(self, rng, u):
        """(indptr, features): where each row's features fire, given its uniforms u [B, G]. Independent:
        u < p. Correlated: u < 2 Phi(z) p with z ~ N(0, M) per row (E[2 Phi(z_i)] = 1, so the mean rate stays
        p_i); since Phi(z) < 1, only entries with u < 2p can fire, a few percent, and z and Phi are computed
        for those alone (z from correlation_factors: each row's shared factors, and its own noise)."""
        if self.M is None:
            return K.below_csr(u, np.broadcast_to(self.p, u.shape))
        ptr, cand = K.below_csr(u, np.broadcast_to(2 * self.p, u.shape))  # the candidates
        rows = K.entry_rows(ptr)
        F, s = self._factors
        shared = rng.standard_normal((u.shape[0], F.shape[1]))  # [B, rank]
        z = np.einsum("nr,nr->n", shared[rows], F[cand]) + s[cand] * rng.standard_normal(cand.size)
        fire = u[rows, cand] < 2 * self.p[cand] * ndtr(z)
        return K.pointers(np.bincount(rows[fire], minlength=u.shape[0])), cand[fire]

    def _draw(self, rng, batch_size):
        """The batch's firings as CSR: (indptr [B + 1], features [nnz], coefficients [nnz] float32); a row
        where nothing fired gets one feature at 1.0."""
        check_int("batch_size", batch_size, lo=0)
        check_rng("rng", rng)
        u = rng.random((batch_size, self.cfg.n_features), dtype=np.float32)  # float32 draws: faster
        indptr, cols = self._fired(rng, u)
        vals = rng.random(cols.size, dtype=np.float32)
        empty = np.flatnonzero(indptr[1:] == indptr[:-1])  # rows where nothing fired
        if empty.size:
            at = indptr[empty]  # where each empty row's one entry goes
            cols = np.insert(cols, at, rng.integers(0, self.cfg.n_features, size=empty.size).astype(np.int32))
            vals = np.insert(vals, at, np.float32(1.0))
            indptr = indptr + np.searchsorted(empty, np.arange(batch_size + 1), side="left")
        return indptr, cols, vals

    def sample_codes(self, rng, batch_size):
        """codes [B, G] float32: U[0, 1] where a feature fires, 0 elsewhere; empty rows get one 1.0."""
        indptr, cols, vals = self._draw(rng, batch_size)
        return csr_matrix((vals, cols, indptr), shape=(batch_size, self.cfg.n_features)).toarray()

    def sample(self, rng, batch_size, codes=False):
        """x [B, d] float32 (and codes [B, G] when codes=True), drawn from `rng`. x = codes @ directions,
        computed over the firings only (about k per row of G)."""
        indptr, cols, vals = self._draw(rng, batch_size)
        c = csr_matrix((vals, cols, indptr), shape=(batch_size, self.cfg.n_features))
        x = np.asarray(c @ self.directions, dtype=np.float32)  # [B, d]
        return (x, c.toarray()) if codes else x

    def __call__(self, rng, batch_size):
        """The batch-source protocol of tinymono.sae: source(rng, batch_size) -> x [B, d] float32."""
        return self.sample(rng, batch_size)
