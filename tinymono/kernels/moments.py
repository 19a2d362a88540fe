"""Sparse blocks of activations: their nonzero entries (lessons 07-10's label scores) and the co-moment of
two of them (lesson 10's streamed correlation).

universality.correlate needs, per block of b rows, sum_rows a[:, i] b[:, j] for every pair of units
(A x B of them). SAE latents are sparse (a few dozen of a thousand fire on a token), so most of the dense
matmul's products are zeros. Here each block is first packed row by row into compressed sparse rows
(`sparse_rows`: the nonzero entries' columns and values, and where each row's run starts), and then every
row adds the products of its nonzero entries only (`sparse_comoment`): b * nnz_a * nnz_b multiply-adds
instead of b * A * B. The twin, `sparse_comoment_numpy`, is SciPy's sparse product of the same blocks.
The scores of lesson 07 need the nonzero entries of every block, and the entries above each unit's running
k-th largest value (`entries_above`); np.nonzero finds either at a few times the cost of one scan here.

Sums are float64 (the running moments are float64; a float32 sum over thousands of rows would lose
digits). No fastmath: the order of the additions is the twin's up to reassociation, which the tests'
tolerance covers.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from scipy import sparse


def _sparse_rows(x, limit, indptr, idx, val):
    """x [b, n] -> the number of nonzero entries, with indptr [b + 1], idx and val [>= limit] filled as
    compressed sparse rows (row r's entries are idx/val[indptr[r]:indptr[r + 1]]); -1 (and the arrays
    partly filled) as soon as there are more than `limit`, so a dense block costs one partial scan."""
    nnz = 0
    indptr[0] = 0
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[r, j]
            if v != 0:
                if nnz == limit:
                    return -1
                idx[nnz] = j
                val[nnz] = v
                nnz += 1
        indptr[r + 1] = nnz
    return nnz


sparse_rows = njit(cache=True, nogil=True)(_sparse_rows)


def _entries_above(x, floor, rows, cols):
    """x [b, n], floor [n] -> how many entries have x[r, j] > floor[j], their rows and columns written to
    rows, cols [>= b * n] in row-major order (np.nonzero(x > floor)'s order)."""
    m = 0
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            if x[r, j] > floor[j]:
                rows[m] = r
                cols[m] = j
                m += 1
    return m


entries_above = njit(cache=True, nogil=True)(_entries_above)


def entries_above_numpy(x, floor):
    """The twin: (rows, cols) of the entries of x [b, n] above floor [n]."""
    return np.nonzero(x > floor)


class SparseBlocks:
    """Buffers, reused from block to block, for the entries of blocks that are wanted. pack(x) -> (indptr, idx,
    val) of x's nonzero entries, or None when x has share * x.size of them or more; above(x, floor) -> (rows,
    cols) of the entries above floor. The results are views into the buffers, valid until the next call."""

    def __init__(self, share):
        self.share = share
        self.indptr, self.idx, self.val = np.empty(1, np.int64), np.empty(0, np.int32), np.empty(0, np.float32)
        self.rows, self.cols = np.empty(0, np.int32), np.empty(0, np.int32)

    def pack(self, x):
        limit = min(int(np.ceil(self.share * x.size)) - 1, x.size)  # nnz < share * size
        if limit < 0:
            return None
        if len(self.idx) < limit or self.val.dtype != x.dtype:
            self.idx, self.val = np.empty(limit, np.int32), np.empty(limit, x.dtype)
        if len(self.indptr) < len(x) + 1:
            self.indptr = np.empty(len(x) + 1, np.int64)
        nnz = sparse_rows(x, limit, self.indptr, self.idx, self.val)
        return None if nnz < 0 else (self.indptr[:len(x) + 1], self.idx[:nnz], self.val[:nnz])

    def above(self, x, floor):
        if len(self.rows) < x.size:
            self.rows, self.cols = np.empty(x.size, np.int32), np.empty(x.size, np.int32)
        m = entries_above(x, floor, self.rows, self.cols)
        return self.rows[:m], self.cols[:m]


def nonzero_entries(x, packer):
    """(rows, cols, values) of the nonzero entries of x [b, n] in row-major order, as np.nonzero gives them,
    through packer (a SparseBlocks whose share exceeds 1, so it takes every block)."""
    return entries(*packer.pack(x))


def entries(indptr, idx, val):
    """(rows, cols, values) of compressed sparse rows (indptr [b + 1], idx, val [nnz])."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)), idx, val


def column_moments(cols, vals, b, n):
    """The mean [n] and the sum of squared deviations from it [n] of each column of a block of b rows and n
    columns, from its nonzero entries (cols, vals) alone, in float64: the (b - nonzeros) zeros of a column
    each add mean^2. Every deviation is taken before it is squared, so nothing is lost to cancellation (a
    sum of squares minus b mean^2 would lose the digits a large mean shares with them)."""
    vals = vals.astype(np.float64, copy=False)
    mean = np.bincount(cols, vals, minlength=n) / b
    zeros = b - np.bincount(cols, minlength=n)
    return mean, np.bincount(cols, (vals - mean[cols]) ** 2, minlength=n) + zeros * mean**2


def _sparse_comoment(pa, ia, va, pb, ib, vb, co):
    """co [A, B] += sum over rows r of the outer product of row r of a and row r of b, both as compressed
    sparse rows (sparse_rows' indptr, idx, val; the same number of rows), in float64."""
    for r in range(pa.shape[0] - 1):
        for p in range(pa[r], pa[r + 1]):
            i, a = ia[p], np.float64(va[p])
            for q in range(pb[r], pb[r + 1]):
                co[i, ib[q]] += a * vb[q]


sparse_comoment = njit(cache=True, nogil=True)(_sparse_comoment)


def sparse_comoment_numpy(xa, xb):
    """The twin: xa [b, A], xb [b, B] -> sum_rows xa[:, i] xb[:, j] [A, B], float64, by SciPy's sparse product."""
    sa, sb = sparse.csr_matrix(xa, dtype=np.float64), sparse.csr_matrix(xb, dtype=np.float64)
    return (sa.T @ sb).toarray()
