"""Lesson 10: are the features properties of the model, or of the method? Three tests from Bricken et al.

- Universality: two transformers trained from different seeds, an SAE on each. For every unit of the
  first, the best Pearson correlation of its activations with any unit of the second over the same
  held-out tokens (`correlate`, `best_match`); for features and, as the baseline, for neurons.
- A shuffled-weights baseline: the first model with the entries of each parameter array permuted
  (`shuffle_weights`), so that every weight's value is kept and their arrangement, what training
  learned, is not.
- Feature chains (the paper's "finite state automata"): features that fire in turn, each one's
  logit weights promoting the bytes the next one reads (`follow_counts`, `follow_share`).

What this implementation chose where the paper is silent:
- A unit that never varies on the scored tokens (a latent that never fires there, so its activations
  are constant) has no correlation with anything: its correlations are 0, not NaN, and it is marked
  not alive, so that a distribution of best matches can leave it out and say how many it left.
- The correlation streams over row blocks: per block, each side's block mean and the co-moment of the
  centred block (one float32 matmul; for sparse blocks, as SAE latents are, a float64 sparse product
  instead, far less work), merged into float64 running moments with Chan's pairwise update (as
  scores.LabelStats does for labels), so that millions of tokens lose no digits to cancellation.
- "Fires" means an activation above 0 (a ReLU latent's own threshold); "follows" means the row just
  before, which in a store is the byte just before in the text (stores keep corpus order).

Axis vocabulary: N tokens (store rows), A units of the first source, B units of the second, b rows of a block.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tinymono.kernels import moments
from tinymono.progress import bar as progress_bar
from tinymono.validate import REAL, check_array, check_int


PAPER = {"median": {"features": 0.72, "neurons": 0.46},  # Bricken et al. 2023: best-match correlations
         "contexts": {"arabic": 0.91, "dna": 0.92, "base64": 0.85, "hebrew": 0.92}}


# ----------------------------------------------------------------------------------------------------
# the shuffled-weights baseline


def shuffle_weights(params, seed=0):
    """A copy of `params` with the entries of every array permuted at random (each array on its own, in
    sorted order of names, from one generator seeded with `seed`): every array keeps its multiset of
    values, so its mean, spread and norm, and loses which entry holds which value."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(params):
        w = np.asarray(params[name])
        out[name] = rng.permutation(w.reshape(-1)).reshape(w.shape).astype(w.dtype, copy=False)
    return out


# ----------------------------------------------------------------------------------------------------
# universality: every unit of one source against every unit of another


@dataclass
class Correlation:
    """What `correlate` found over n_rows tokens: r [A, B] (0 where either unit is constant), alive_a [A]
    and alive_b [B] (the unit varies on these tokens), and how long the pass took."""

    r: np.ndarray
    alive_a: np.ndarray
    alive_b: np.ndarray
    n_rows: int
    seconds: float

    def best_match(self):
        """(unit of B [A], its correlation [A]): for each unit of A, the alive unit of B it correlates with
        most (a unit of A that is not alive, or a B with no alive unit, gets correlation 0 with unit 0). A
        unit of B that never varies is no match, even for a unit of A whose every correlation is negative."""
        if not self.alive_b.any():
            return np.zeros(len(self.r), np.int64), np.zeros(len(self.r))
        best = np.argmax(np.where(self.alive_b, self.r, -np.inf), axis=1)
        r = np.where(self.alive_a, self.r[np.arange(len(best)), best], 0.0)
        return np.where(self.alive_a, best, 0), r


def _block_moments(xa, xb, packers, co_buf):
    """The means [A], [B], co-moment [A, B] and sums of squared deviations [A], [B] of one block (xa [b, A],
    xb [b, B]), in float64. Dense blocks: the centred blocks' float32 matmul. Sparse blocks (both below
    `packers`' share of entries nonzero, as SAE latents are): from the nonzero entries only (kernels.moments),
    the co-moment as sum a b - b ma mb (exact in float64, and hundreds of times less work than the matmul;
    the subtraction loses nothing that matters at these means). co_buf [A, B]: where it goes."""
    b = len(xa)
    pa = packers[0].pack(xa)
    pb = None if pa is None else packers[1].pack(xb)
    if pb is not None:
        (ma, m2a), (mb, m2b) = (moments.column_moments(p[1], p[2], b, x.shape[1]) for p, x in ((pa, xa), (pb, xb)))
        co_buf[:] = 0.0
        moments.sparse_comoment(*pa, *pb, co_buf)
        co_buf -= b * np.outer(ma, mb)
        return ma, mb, co_buf, m2a, m2b
    ma, mb = xa.mean(axis=0, dtype=np.float64), xb.mean(axis=0, dtype=np.float64)
    ca, cb = xa - ma.astype(np.float32), xb - mb.astype(np.float32)  # [b, A], [b, B] centred, float32
    return (ma, mb, (ca.T @ cb).astype(np.float64), np.einsum("ij,ij->j", ca, ca, dtype=np.float64),
            np.einsum("ij,ij->j", cb, cb, dtype=np.float64))


def correlate(source_a, source_b, n_rows=None, block_rows=8192, progress=False, desc="correlate", sparse_below=0.1):
    """The Pearson correlation of every unit of source_a with every unit of source_b over their first
    n_rows rows (default: all rows both have), streamed over row blocks in flat memory: one block of each
    (b x A and b x B float32) and the running moments (means [A], [B], sums of squares, co-moment [A, B],
    float64). Sources: features.NeuronSource / FeatureSource, or anything with `n_units`, `n_rows` and
    `activations(lo, hi)` -> [hi - lo, units]; row i of one must be the token of row i of the other.
    sparse_below: blocks sparser than this go through a sparse product (_block_moments; 0: never)."""
    n = min(source_a.n_rows, source_b.n_rows) if n_rows is None else check_int("n_rows", n_rows, lo=1)
    if n > min(source_a.n_rows, source_b.n_rows):
        raise ValueError(f"n_rows {n} is more than the sources hold ({source_a.n_rows}, {source_b.n_rows})")
    block_rows = check_int("block_rows", block_rows, lo=1)
    A, B = source_a.n_units, source_b.n_units
    mean_a, mean_b, m2_a, m2_b, co = np.zeros(A), np.zeros(B), np.zeros(A), np.zeros(B), np.zeros((A, B))
    packers, co_buf = (moments.SparseBlocks(sparse_below), moments.SparseBlocks(sparse_below)), np.empty((A, B))
    seen, t0 = 0, time.perf_counter()
    bar = progress_bar(total=n, unit="tok", unit_scale=True, desc=desc, disable=not progress)
    for lo in range(0, n, block_rows):
        hi = min(lo + block_rows, n)
        xa = check_array("activations of source_a", source_a.activations(lo, hi), (hi - lo, A), kinds=REAL)
        xb = check_array("activations of source_b", source_b.activations(lo, hi), (hi - lo, B), kinds=REAL)
        xa, xb = xa.astype(np.float32, copy=False), xb.astype(np.float32, copy=False)
        b = hi - lo
        ma, mb, co_b, m2a_b, m2b_b = _block_moments(xa, xb, packers, co_buf)  # [A], [B] block means, ...
        total = seen + b
        w = seen * b / total  # Chan et al.: the weight of the cross term when two sets' moments merge
        da, db = ma - mean_a, mb - mean_b
        co += co_b + np.outer(da, db) * w  # [A, B]
        m2_a += m2a_b + da**2 * w
        m2_b += m2b_b + db**2 * w
        mean_a += da * b / total
        mean_b += db * b / total
        seen = total
        bar.update(b)
    bar.close()
    # a constant unit: its m2 is round-off of zero; it is not alive, and correlates 0 with everything
    alive_a, alive_b = m2_a > 1e-12 * max(seen, 1), m2_b > 1e-12 * max(seen, 1)
    den = np.sqrt(np.outer(np.where(alive_a, m2_a, 0.0), np.where(alive_b, m2_b, 0.0)))
    r = np.divide(co, den, out=np.zeros_like(co), where=den > 0)
    return Correlation(np.clip(r, -1.0, 1.0), alive_a, alive_b, seen, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------------
# feature chains


def follow_counts(fires, prev):
    """fires [N, U] bool (which units fire at each row), prev [N] bool (the unit a chain comes from fires
    there) -> (after [U]: rows where the unit fires and `prev` fired on the row before, total [U]: rows
    where the unit fires, row 0 left out as it has no row before). Sum these over consecutive blocks
    (passing each block's first row's predecessor yourself) to count over a whole store."""
    fires = check_array("fires", fires, ("N", "U"), kinds="b", nonempty=False)
    prev = check_array("prev", prev, (len(fires),), kinds="b", nonempty=False)
    after = fires[1:][prev[:-1]].sum(axis=0)
    return after.astype(np.int64), fires[1:].sum(axis=0).astype(np.int64)


def follow_share(a_prev, a_next):
    """The link prev -> next of a chain over consecutive rows: (share of next's firings right after a
    firing of prev, share of prev's firings followed right away by one of next, how many times next fired).
    a_prev, a_next [N]: the two units' activations; firing = above 0. A unit that never fires gives 0. Only
    firings that can be in a link count: next's on rows 1.. (row 0 has no row before it), prev's on rows
    ..N-2 (the last row has none after it)."""
    a_prev = check_array("a_prev", a_prev, ("N",), kinds=REAL)
    a_next = check_array("a_next", a_next, (len(a_prev),), kinds=REAL)
    p, q = a_prev[:-1] > 0, a_next[1:] > 0
    both = int(np.count_nonzero(p & q))
    n_q, n_p = int(np.count_nonzero(q)), int(np.count_nonzero(p))
    return both / n_q if n_q else 0.0, both / n_p if n_p else 0.0, n_q


def read_bytes(tokens, a, d_vocab):
    """[d_vocab]: the share of a unit's firings (a > 0) on each byte it reads (the token at its row)."""
    tokens = check_array("tokens", tokens, ("N",), kinds="iu")
    a = check_array("a", a, (len(tokens),), kinds=REAL)
    counts = np.bincount(tokens[a > 0], minlength=d_vocab).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def promoted_percentile(weights, reads, present):
    """How strongly logit weights [V] promote the bytes a next feature reads (reads [V], shares summing to
    1): the reads-weighted mean, over those bytes, of each byte's percentile among the logit weights of the
    `present` bytes [V] bool (those the corpus holds). 0.5: no preference; 1: the bytes it promotes most."""
    weights = check_array("weights", weights, ("V",), kinds=REAL)
    reads = check_array("reads", reads, (len(weights),), kinds=REAL)
    present = check_array("present", present, (len(weights),), kinds="b")
    pool = np.sort(weights[present])  # [P]
    below = np.searchsorted(pool, weights, side="left")  # [V] present bytes strictly below each weight
    ties = np.searchsorted(pool, weights, side="right") - below
    pct = (below + 0.5 * np.maximum(ties - 1, 0)) / max(len(pool) - 1, 1)  # a byte's own entry is not counted
    return float(reads[present] @ pct[present] / max(reads[present].sum(), 1e-12))
