"""Sparse kernels for the SAE training step: work only on the latents that fired.

Once an SAE has trained a little, each input activates a few percent of its latents (L0 of tens out of
thousands). The dense step pays for every latent anyway: after the encoder matmul (which must look at
every latent to learn which fire), the decoder matmul, the decoder gradient, the latent gradient and the
encoder gradient are four more matmuls of the same size, mostly multiplying zeros. Here those four are
done over the active entries only:

    relu_csr         pre + b_enc -> ReLU -> the active (row, latent, value) triples, row by row (CSR)
    decode_rows      per row: x_hat = b_dec + sum_active f W_dec[j], the squared error, dx_hat, and
                     df at the active entries only (df = dx_hat . W_dec[j] + l1 / B)
    csr_to_csc       the same triples grouped by latent (a counting sort), for the weight gradients
    latent_grads     per latent: dW_dec[j] = sum_b f[b, j] dx_hat[b], dW_enc[:, j] = sum_b df[b, j] x_bar[b],
                     db_enc[j] = sum_b df[b, j]

Each is written as a plain function `_name` and bound with njit; each has a NumPy twin `name_numpy`
(dense, obviously right) that the tests check it against. Their helpers over rows (axpy, axpy4, add_rows,
dot, dot4) are checked through them, and axpy4 and add_rows also against axpy, bit for bit. Parallel
kernels split the work so that every output entry is written by exactly one thread in a fixed order: the
results do not depend on the thread count or timing, so a resumed run stays bit-identical.

The kernels that loop over rows (or blocks of latents) take a range [start, stop) and release the GIL;
`over_rows` runs one on all rows here, or, from PARALLEL_MIN_WORK on, hands one contiguous range to each
of a few threads (kernels.in_parallel): handing work to threads costs tens of microseconds on an idle
machine and milliseconds on a busy one, more than the whole kernel takes at the smaller sizes. Every
kernel is cached on disk, so a new process does not compile them again (these kernels used numba's own
parallel loops, `prange`, uncached, until `bench startup` measured their compile: 4-6 s in every process
that trained an SAE at lesson 06's size; kernels/__init__.py says why they did not become cached prange
loops).

Axis vocabulary: B batch, d_in input width, d_sae latents, nnz active entries.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from tinymono.kernels import in_parallel

# ----------------------------------------------------------------------------------------------------
# relu_csr: the active entries of ReLU(pre + b_enc), row by row


def _count_active(pre, b_enc, counts, start, stop):
    """counts[b] = number of j with pre[b, j] + b_enc[j] > 0 for rows b in [start, stop). pre [B, d_sae],
    b_enc [d_sae], counts [B]."""
    for b in range(start, stop):
        n = 0
        for j in range(pre.shape[1]):
            if pre[b, j] + b_enc[j] > 0:
                n += 1
        counts[b] = n


def _fill_active(pre, b_enc, indptr, idx, val, start, stop):
    """For rows b in [start, stop): row b's active latents (ascending) and their values into
    idx/val[indptr[b]:indptr[b + 1]]."""
    for b in range(start, stop):
        k = indptr[b]
        for j in range(pre.shape[1]):
            v = pre[b, j] + b_enc[j]
            if v > 0:
                idx[k] = j
                val[k] = v
                k += 1


def _count_fires(pre, b_enc, fires, start, stop):
    """fires[j] += the number of rows b with pre[b, j] + b_enc[j] > 0, for the latents j in [start, stop): how
    often each latent fires on the rows of pre [B, d_sae]. A range of latents per thread, so each entry of fires
    is written by one thread."""
    for b in range(pre.shape[0]):
        for j in range(start, stop):
            fires[j] += pre[b, j] + b_enc[j] > 0


PARALLEL_MIN_WORK = 1 << 22  # B * d_sae from which threads pay (4096 x 1024 and up)


def use_threads(B, d_sae):
    return B * d_sae >= PARALLEL_MIN_WORK


def over_rows(kernel, n, threads, *args):
    """kernel(*args, start, stop) over [0, n): here in one call, or over the cores when `threads`."""
    if threads:
        in_parallel(kernel, n, *args)
    else:
        kernel(*args, 0, n)


# each row writes only its own slice; cached; nogil (threads); no fastmath (a NaN pre-activation must stay
# inactive exactly as in NumPy's `> 0`)
count_active = njit(cache=True, nogil=True)(_count_active)
fill_active = njit(cache=True, nogil=True)(_fill_active)
count_fires = njit(cache=True, nogil=True)(_count_fires)


def active_counts(pre, b_enc):
    """[B] int64: the number of active latents in each row of ReLU(pre + b_enc)."""
    counts = np.empty(pre.shape[0], dtype=np.int64)
    over_rows(count_active, pre.shape[0], use_threads(*pre.shape), pre, b_enc, counts)
    return counts


def fire_counts(pre, b_enc):
    """[d_sae] int64: on how many rows of ReLU(pre + b_enc) each latent is active (np.count_nonzero(..., axis=0)
    in one pass, without the latents' array)."""
    fires = np.zeros(pre.shape[1], dtype=np.int64)
    over_rows(count_fires, pre.shape[1], use_threads(*pre.shape), pre, b_enc, fires)
    return fires


def fire_counts_numpy(pre, b_enc):
    return np.count_nonzero(pre + b_enc > 0, axis=0)  # a NaN fails the test: silent, as in encode's ReLU


def pointers(counts):
    """[n + 1] int64 offsets of a compressed layout from the number of entries of each of its n rows (or
    columns): row b's entries are [pointers[b], pointers[b + 1])."""
    ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr


def entry_rows(indptr):
    """[nnz] the row of each entry of a CSR layout (the inverse of pointers)."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def relu_csr(pre, b_enc, counts=None):
    """pre [B, d_sae] (x_bar @ W_enc, bias not yet added), b_enc [d_sae] ->
    (indptr [B + 1] int64, idx [nnz] int32, val [nnz]): row b's active latents are idx[indptr[b]:indptr[b+1]]
    with values f = pre + b_enc > 0. counts: active_counts(pre, b_enc) if already computed."""
    indptr = pointers(active_counts(pre, b_enc) if counts is None else counts)
    idx = np.empty(indptr[-1], dtype=np.int32)
    val = np.empty(indptr[-1], dtype=pre.dtype)
    over_rows(fill_active, pre.shape[0], use_threads(*pre.shape), pre, b_enc, indptr, idx, val)
    return indptr, idx, val


def relu_csr_numpy(pre, b_enc, counts=None):
    f = np.maximum(pre + b_enc, 0)  # [B, d_sae]
    rows, cols = np.nonzero(f > 0)  # row-major order: rows ascending, then latents ascending
    return pointers(np.bincount(rows, minlength=pre.shape[0])), cols.astype(np.int32), f[rows, cols]


def csr_to_dense(indptr, idx, val, n_cols):
    """The dense [B, n_cols] matrix the triples describe (for tests, the dense twins and TopK's inference)."""
    out = np.zeros((len(indptr) - 1, n_cols), dtype=val.dtype)
    out[entry_rows(indptr), idx] = val
    return out


# ----------------------------------------------------------------------------------------------------
# decode_rows: decoder forward, squared error, dx_hat and the latent gradient, one row at a time


def _dot(a, b):
    s = a.dtype.type(0)
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


# fastmath lets the reduction vectorise (reassociation); the batches are checked finite (SAETask.next_batch),
# and a non-finite weight shows in the loss, which the training loop's guard watches
dot = njit(fastmath=True, cache=True)(_dot)


def _axpy(alpha, x, y):
    for i in range(y.shape[0]):
        y[i] += alpha * x[i]


axpy = njit(fastmath=True, cache=True)(_axpy)  # fastmath: vectorise the multiply-add (no reduction: same result)


# Four terms per pass. The row loops below add many scaled rows into one output row (x_hat, a row of dW_dec or
# dW_enc); one term per pass loads and stores the whole output row for each multiply-add, and those loads and
# stores, not the arithmetic, set the speed. Four terms per pass load and store it once per four. The four are
# added in a chain, ((y + a0 x0) + a1 x1) + ..., each a fused multiply-add, which rounds exactly as four axpy
# calls in turn: the results are bit for bit those of one term per pass (tests/test_sae_kernels.py). With the
# four dot products of dot4 (below), lesson 06's SAE trained to the same bits as before the change
# (docs/experiments.md). Only fused multiply-adds are allowed ("contract"), not reassociation, which could turn
# the chain into a tree and round differently.


def _axpy4(a0, a1, a2, a3, x0, x1, x2, x3, y):
    for i in range(y.shape[0]):
        y[i] = (((y[i] + a0 * x0[i]) + a1 * x1[i]) + a2 * x2[i]) + a3 * x3[i]


# pasted by numba into its callers (inline="always"), where LLVM sees the rows and vectorises the loop; pasted
# code takes the caller's fastmath flags, so every caller allows fused multiply-adds only ("contract")
axpy4 = njit(fastmath={"contract"}, cache=True, inline="always")(_axpy4)


def _add_rows(idx, val, W, out):
    """out += sum_k val[k] W[idx[k]], the terms in order k = 0, 1, ... (four per pass, each rounded as by axpy)."""
    n = idx.shape[0]
    fours = n - n % 4
    for k in range(0, fours, 4):
        axpy4(val[k], val[k + 1], val[k + 2], val[k + 3], W[idx[k]], W[idx[k + 1]], W[idx[k + 2]], W[idx[k + 3]], out)
    for k in range(fours, n):
        axpy(val[k], W[idx[k]], out)


add_rows = njit(fastmath={"contract"}, cache=True)(_add_rows)  # as axpy4: fused multiply-adds only


def _dot4(x, w0, w1, w2, w3):
    """The four dot products x . w0, ..., x . w3, with x loaded once for all four. Each is a sum like `dot`'s;
    with reassociation allowed, the compiler may order four sums otherwise than one (on the machines measured
    it did not: the same bits), so the tests hold decode_rows to its twin within float tolerance."""
    s0 = s1 = s2 = s3 = x.dtype.type(0)
    for i in range(x.shape[0]):
        s0 += x[i] * w0[i]
        s1 += x[i] * w1[i]
        s2 += x[i] * w2[i]
        s3 += x[i] * w3[i]
    return s0, s1, s2, s3


dot4 = njit(fastmath=True, cache=True, inline="always")(_dot4)  # fastmath: as for dot


def _decode_one_row(idx, val, W_dec, b_dec, x, scale, l1_term, x_hat, dx_hat, dval):
    n = idx.shape[0]
    fours = n - n % 4
    x_hat[:] = b_dec
    add_rows(idx, val, W_dec, x_hat)  # x_hat = b_dec + sum over active j of f_j W_dec[j]
    sq = 0.0
    for i in range(x.shape[0]):
        e = x_hat[i] - x[i]
        sq += e * e
        dx_hat[i] = scale * e  # d mse / d x_hat = 2 (x_hat - x) / (B d_in)
    for k in range(0, fours, 4):  # df_j = dx_hat . W_dec[j] + l1 / B, only where f_j > 0
        d0, d1, d2, d3 = dot4(dx_hat, W_dec[idx[k]], W_dec[idx[k + 1]], W_dec[idx[k + 2]], W_dec[idx[k + 3]])
        dval[k], dval[k + 1], dval[k + 2], dval[k + 3] = d0 + l1_term, d1 + l1_term, d2 + l1_term, d3 + l1_term
    for k in range(fours, n):
        dval[k] = dot(dx_hat, W_dec[idx[k]]) + l1_term
    return sq


# fastmath: as for dot; compiled on its own and called from the row loop (when that loop was numba's prange,
# the same code pasted into its body ran several times slower)
decode_one_row = njit(fastmath=True, cache=True)(_decode_one_row)


def _decode_rows(indptr, idx, val, W_dec, b_dec, x, scale, l1_term, x_hat, dx_hat, dval, sq_err, start, stop):
    for b in range(start, stop):
        lo, hi = indptr[b], indptr[b + 1]
        sq_err[b] = decode_one_row(idx[lo:hi], val[lo:hi], W_dec, b_dec, x[b], scale, l1_term,
                                    x_hat[b], dx_hat[b], dval[lo:hi])


decode_rows_kernel = njit(cache=True, nogil=True)(_decode_rows)  # each row writes its own outputs; threads


def decode_rows(indptr, idx, val, W_dec, b_dec, x, scale, l1_term, x_hat, dx_hat, dval, sq_err):
    """Per row b, with the active entries of row b: x_hat[b] = b_dec + sum f W_dec[j]; sq_err[b] =
    ||x_hat[b] - x[b]||^2; dx_hat[b] = scale (x_hat[b] - x[b]); dval = dx_hat[b] . W_dec[j] + l1_term.
    Outputs are written into x_hat, dx_hat [B, d_in], dval [nnz] and sq_err [B] (float64)."""
    over_rows(decode_rows_kernel, x.shape[0], use_threads(x.shape[0], W_dec.shape[0]),
              indptr, idx, val, W_dec, b_dec, x, scale, l1_term, x_hat, dx_hat, dval, sq_err)


def decode_rows_numpy(indptr, idx, val, W_dec, b_dec, x, scale, l1_term, x_hat, dx_hat, dval, sq_err):
    f = csr_to_dense(indptr, idx, val, W_dec.shape[0])  # [B, d_sae]
    x_hat[:] = f @ W_dec + b_dec  # [B, d_in]
    err = x_hat - x
    sq_err[:] = (err.astype(np.float64) ** 2).sum(axis=1)
    dx_hat[:] = scale * err
    dval[:] = (dx_hat @ W_dec.T)[entry_rows(indptr), idx] + l1_term  # [B, d_sae] gathered at the active entries


# ----------------------------------------------------------------------------------------------------
# csr_to_csc: regroup the active entries by latent


def _csr_to_csc(indptr, idx, n_cols, colptr, rows, perm):
    """A counting sort by latent, stable (rows stay ascending within a latent). perm[c] is the CSR position
    of CSC entry c, so any per-entry array v is regrouped as v[perm]."""
    colptr[:] = 0
    for k in range(idx.shape[0]):
        colptr[idx[k] + 1] += 1
    for j in range(n_cols):
        colptr[j + 1] += colptr[j]
    fill = colptr[:-1].copy()
    for b in range(indptr.shape[0] - 1):
        for k in range(indptr[b], indptr[b + 1]):
            c = fill[idx[k]]
            rows[c] = b
            perm[c] = k
            fill[idx[k]] += 1


_csr_to_csc_jit = njit(cache=True)(_csr_to_csc)  # serial: O(nnz), a millisecond; cached


def csr_to_csc(indptr, idx, n_cols):
    """-> (colptr [n_cols + 1], rows [nnz], perm [nnz]): latent j's entries are rows[colptr[j]:colptr[j+1]],
    at CSR positions perm[...]."""
    colptr = np.empty(n_cols + 1, dtype=np.int64)
    rows = np.empty(idx.shape[0], dtype=np.int32)
    perm = np.empty(idx.shape[0], dtype=np.int64)
    _csr_to_csc_jit(indptr, idx, n_cols, colptr, rows, perm)
    return colptr, rows, perm


def csr_to_csc_numpy(indptr, idx, n_cols):
    perm = np.argsort(idx, kind="stable")  # stable: within a latent, CSR order = ascending rows
    rows = entry_rows(indptr)[perm].astype(np.int32)
    return pointers(np.bincount(idx, minlength=n_cols)), rows, perm


# ----------------------------------------------------------------------------------------------------
# latent_grads: weight gradients latent by latent

_BLOCK = 16  # latents per task: 16 float32 = one 64-byte cache line of a dW_enc row


def _latent_block(j0, j1, colptr, rows, perm, val, dval, x_bar, dx_hat, dW_encT, db_enc, dW_dec, dW_enc):
    for j in range(j0, j1):
        out, outT = dW_dec[j], dW_encT[j - j0]
        out[:] = 0
        outT[:] = 0
        s = dval.dtype.type(0)
        lo, hi = colptr[j], colptr[j + 1]
        fours = hi - (hi - lo) % 4
        for c in range(lo, fours, 4):  # four of the latent's rows per pass
            b0, b1, b2, b3 = rows[c], rows[c + 1], rows[c + 2], rows[c + 3]
            k0, k1, k2, k3 = perm[c], perm[c + 1], perm[c + 2], perm[c + 3]
            axpy4(val[k0], val[k1], val[k2], val[k3],  # dW_dec[j] += f[b, j] dx_hat[b]
                  dx_hat[b0], dx_hat[b1], dx_hat[b2], dx_hat[b3], out)
            axpy4(dval[k0], dval[k1], dval[k2], dval[k3],  # dW_enc[:, j] += df[b, j] x_bar[b]
                  x_bar[b0], x_bar[b1], x_bar[b2], x_bar[b3], outT)
            s = (((s + dval[k0]) + dval[k1]) + dval[k2]) + dval[k3]
        for c in range(fours, hi):
            b, k = rows[c], perm[c]
            axpy(val[k], dx_hat[b], out)
            axpy(dval[k], x_bar[b], outT)
            s += dval[k]
        db_enc[j] = s
    for i in range(dW_enc.shape[0]):  # write the block's columns of dW_enc: a contiguous run per row i
        for j in range(j0, j1):
            dW_enc[i, j] = dW_encT[j - j0, i]


# fused multiply-adds only, for the pasted axpy4 chains and db_enc's sum, which keep their order (axpy, compiled
# on its own, keeps its own flags)
latent_block = njit(fastmath={"contract"}, cache=True)(_latent_block)


def _latent_grads(colptr, rows, perm, val, dval, x_bar, dx_hat, dW_enc, db_enc, dW_dec, start, stop):
    """The blocks of _BLOCK latents numbered [start, stop)."""
    n_latents, d_in = dW_dec.shape
    scratch = np.empty((_BLOCK, d_in), dtype=dW_dec.dtype)  # a block's dW_enc columns, as rows
    for blk in range(start, stop):
        j0 = blk * _BLOCK
        latent_block(j0, min(j0 + _BLOCK, n_latents), colptr, rows, perm, val, dval, x_bar, dx_hat,
                      scratch, db_enc, dW_dec, dW_enc)


latent_grads_kernel = njit(cache=True, nogil=True)(_latent_grads)  # each block writes its own latents; threads


def latent_grads(colptr, rows, perm, val, dval, x_bar, dx_hat, dW_enc, db_enc, dW_dec):
    """Per latent j, over the rows where it fired: dW_dec[j] = sum f dx_hat[b], dW_enc[:, j] = sum df x_bar[b],
    db_enc[j] = sum df. Every entry of dW_enc [d_in, d_sae], db_enc [d_sae], dW_dec [d_sae, d_in] is written."""
    n_blocks = (dW_dec.shape[0] + _BLOCK - 1) // _BLOCK
    over_rows(latent_grads_kernel, n_blocks, use_threads(x_bar.shape[0], dW_dec.shape[0]),
              colptr, rows, perm, val, dval, x_bar, dx_hat, dW_enc, db_enc, dW_dec)


def latent_grads_numpy(colptr, rows, perm, val, dval, x_bar, dx_hat, dW_enc, db_enc, dW_dec):
    n_latents = dW_dec.shape[0]
    cols = entry_rows(colptr)  # a CSC layout's column of each entry
    f = np.zeros((x_bar.shape[0], n_latents), dtype=val.dtype)  # [B, d_sae]
    df = np.zeros_like(f)
    f[rows, cols] = val[perm]
    df[rows, cols] = dval[perm]
    dW_dec[:] = f.T @ dx_hat  # [d_sae, d_in]
    dW_enc[:] = x_bar.T @ df  # [d_in, d_sae]
    db_enc[:] = df.sum(axis=0)


# ----------------------------------------------------------------------------------------------------
# the decoder constraint, row by row: sae.project_decoder_grad and sae.normalise_decoder are the twins


def _project_rows(W, dW):
    """dW[j] -= (dW[j] . W[j]) W[j] for every row j, in place (W's rows of unit norm)."""
    for j in range(W.shape[0]):
        s = dot(dW[j], W[j])
        axpy(-s, W[j], dW[j])


project_rows = njit(cache=True)(_project_rows)  # dot's and axpy's fastmath: vectorised


def _normalise_rows(W):
    """W[j] /= ||W[j]|| for every row j, in place."""
    for j in range(W.shape[0]):
        n = np.sqrt(dot(W[j], W[j]))
        for i in range(W.shape[1]):
            W[j, i] /= n


# error_model="numpy": numba's default checks each division for a zero divisor (to raise
# ZeroDivisionError), and the check keeps the loop from vectorising; a zero row gives NaN, as in NumPy
normalise_rows = njit(cache=True, error_model="numpy")(_normalise_rows)


# ----------------------------------------------------------------------------------------------------
# topk_csr: the k largest positive entries of each row (TopK SAEs, and AuxK among the dead latents)


def _topk_rows(pre, b_enc, k, allowed, counts, idx, val, start, stop):
    """Per row b: the (at most) k largest v = pre[b, j] + b_enc[j] > 0 over the latents j with
    allowed[j], ties to the lower j, written ascending by j into idx[b, :counts[b]], val[b, :counts[b]].
    A running list sorted by value: most entries lose to its smallest and cost one comparison. Rows in
    [start, stop)."""
    for b in range(start, stop):
        top_v = np.empty(k, dtype=val.dtype)
        top_j = np.empty(k, dtype=np.int32)
        n = 0
        for j in range(pre.shape[1]):
            v = pre[b, j] + b_enc[j]
            if not v > 0 or not allowed[j] or (n == k and v <= top_v[k - 1]):  # `not >`: NaN stays out
                continue
            p = n if n < k else k - 1  # where v goes: a free slot, or over the current smallest
            while p > 0 and top_v[p - 1] < v:  # strict: an equal value met earlier (lower j) stays ahead
                top_v[p] = top_v[p - 1]
                top_j[p] = top_j[p - 1]
                p -= 1
            top_v[p] = v
            top_j[p] = j
            n = min(n + 1, k)
        for a in range(1, n):  # insertion sort of the kept ones by latent index
            v, j = top_v[a], top_j[a]
            p = a
            while p > 0 and top_j[p - 1] > j:
                top_v[p] = top_v[p - 1]
                top_j[p] = top_j[p - 1]
                p -= 1
            top_v[p] = v
            top_j[p] = j
        counts[b] = n
        for a in range(n):
            idx[b, a] = top_j[a]
            val[b, a] = top_v[a]


# each row writes its own row; cached; nogil (threads); no fastmath (NaN stays inactive)
topk_rows = njit(cache=True, nogil=True)(_topk_rows)


def topk_csr(pre, b_enc, k, allowed):
    """pre [B, d_sae] (bias not yet added), b_enc [d_sae], allowed [d_sae] bool -> (indptr, idx, val) as
    relu_csr: row b's (at most k) largest positive pre + b_enc among the allowed latents, ascending by
    latent."""
    if not (isinstance(k, (int, np.integer)) and k >= 1):  # the kernel reads its list's k-th slot unchecked
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    B = pre.shape[0]
    counts = np.empty(B, dtype=np.int64)
    idx2 = np.empty((B, k), dtype=np.int32)
    val2 = np.empty((B, k), dtype=pre.dtype)
    over_rows(topk_rows, B, use_threads(*pre.shape), pre, b_enc, k, allowed, counts, idx2, val2)
    return _rows_to_csr(counts, idx2, val2)


def _rows_to_csr(counts, idx2, val2):
    """[B, k] arrays whose first counts[b] entries of row b are used -> (indptr, idx, val)."""
    used = np.arange(idx2.shape[1]) < counts[:, None]  # [B, k]
    return pointers(counts), idx2[used], val2[used]


def topk_csr_numpy(pre, b_enc, k, allowed):
    v = np.where(allowed, pre + b_enc, -np.inf)  # [B, d_sae]
    order = np.argsort(-v, axis=1, kind="stable")[:, :k]  # [B, k] largest first, ties to the lower latent
    top = np.take_along_axis(v, order, axis=1)
    counts = np.count_nonzero(top > 0, axis=1)
    order = np.sort(np.where(top > 0, order, pre.shape[1]), axis=1)  # kept ones ascending, the rest last
    keep = np.arange(order.shape[1]) < counts[:, None]
    idx2 = np.where(keep, order, 0).astype(np.int32)
    val2 = np.take_along_axis(pre + b_enc, idx2, axis=1)
    return _rows_to_csr(counts, idx2, val2)


# ----------------------------------------------------------------------------------------------------
# below_csr: the firings of a batch of lesson 03's ground-truth data (tinymono/groundtruth.py)


def _below_rows(u, prob, counts, idx):
    """Row by row, the columns j with u[b, j] < prob[b, j] into idx (row b's after row b-1's), and
    counts[b] of them. u [B, G] float32, prob [B, G] (a broadcast row is fine), idx [B * G] int32."""
    n = 0
    for b in range(u.shape[0]):
        start = n
        for j in range(u.shape[1]):
            if u[b, j] < prob[b, j]:
                idx[n] = j
                n += 1
        counts[b] = n - start
    return n


below_rows = njit(cache=True)(_below_rows)  # one pass, serial: about 0.3 ms for a batch of 1024 x 512


def below_csr(u, prob):
    """(indptr [B + 1] int64, idx [nnz] int32): where u < prob, row by row (one pass instead of a boolean
    matrix and np.nonzero, which take six times as long at lesson 03's size)."""
    counts = np.empty(u.shape[0], dtype=np.int64)
    idx = np.empty(u.size, dtype=np.int32)
    n = below_rows(u, prob, counts, idx)
    return pointers(counts), idx[:n]


def below_csr_numpy(u, prob):
    rows, cols = np.nonzero(u < prob)  # row-major
    return pointers(np.bincount(rows, minlength=u.shape[0])), cols.astype(np.int32)


# ----------------------------------------------------------------------------------------------------
# the batch: rows of a float16 store, gathered and widened to float32


def _gather_half_rows(half, take, out):
    """out[i] = the float16 row half[take[i]], exactly, as float32. half [N, d] uint16: the bit patterns of
    float16 numbers (sign, 5 exponent bits, 10 mantissa bits); out [len(take), d] float32.

    numba has no float16 type, so the widening is done on the bits: a normal number keeps its sign and
    mantissa and moves its exponent from float16's bias (15) to float32's (127); infinities and NaNs keep
    the all-ones exponent and their mantissa; zeros and subnormals are their mantissa times 2**-24, an
    exact product in float32. All 65,536 patterns give NumPy's `astype(np.float32)` bit for bit (tests).
    Every branch is a few integer operations, and the loop along the row vectorises: 0.54 ms for lesson
    06's batch of 4096 rows of 128, against 1.26 ms for NumPy's gather and conversion (docs/experiments.md,
    "The SAE's batches from memory")."""
    for i in range(take.shape[0]):
        r = take[i]
        for j in range(half.shape[1]):
            h = np.uint32(half[r, j])
            sign = (h & np.uint32(0x8000)) << np.uint32(16)
            e = h & np.uint32(0x7C00)
            m = h & np.uint32(0x03FF)
            if e == np.uint32(0):
                v = np.float32(np.int32(m)) * np.float32(2.0**-24)
                out[i, j] = -v if sign else v
            elif e == np.uint32(0x7C00):
                out[i, j] = np.uint32(sign | np.uint32(0x7F800000) | (m << np.uint32(13))).view(np.float32)
            else:  # exponent e >> 10 - 15 + 127, i.e. (e >> 10) + 112
                bits = sign | (((e >> np.uint32(10)) + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13))
                out[i, j] = np.uint32(bits).view(np.float32)


gather_half_rows = njit(cache=True)(_gather_half_rows)


def gather_rows(raw, take, out):
    """out [len(take), d] float32 = raw[take], raw float16 (widened by gather_half_rows) or float32."""
    if raw.dtype == np.float16:
        gather_half_rows(raw.view(np.uint16), take, out)
    else:
        out[:] = raw[take]


def gather_rows_numpy(raw, take, out):
    out[:] = raw[take]
