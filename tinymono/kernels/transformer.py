"""numba kernels for the transformer's training step, each beside its NumPy twin.

Profiling the plain NumPy step (`python -m tinymono bench transformer` prints the table) showed where
the time goes besides the matrix products, which OpenBLAS already runs near the machine's peak: the
attention core (scores, causal softmax, pattern @ v and their backward, which NumPy does as many small
batched matmuls and elementwise passes over the [B, H, T, T] scores), the layer norms, the bias and
ReLU passes over the [B*T, M] MLP activations, the loss's softmax and the embedding's scatter-add.
NumPy runs each elementwise pass on one core. The kernels below fuse those passes and split the rows
(or (batch, head) pairs) over the cores; the matrix products stay with BLAS. Three more things were
measured to matter: the softmaxes' exponentials (a polynomial that vectorises, `exp_nonpositive`, in
float32 for float32 arrays, instead of one C-library call per number), the attention loops' memory
traffic (keys and values transposed; several multiply-adds per load: two queries and four terms per
pass, four-by-four blocks of dot products), and page faults (`keep_freed_memory`).

Each kernel is written as a plain function `_name` and compiled as `name`; its NumPy twin computes the
same thing with layers.py's formulas (attention_heads_forward / _backward: attention_core_forward_numpy /
_backward_numpy; bias_relu_rows and relu_backward_chunks: bias_relu_numpy and relu_backward_numpy;
cross_entropy_rows: cross_entropy_rows_numpy; embed_backward_kernel: embed_backward_numpy; the layer-norm
kernels: layers.layernorm_forward / _backward themselves), and tests check that the two agree on
hypothesis-drawn inputs (also with NUMBA_DISABLE_JIT=1). The layer-shaped wrappers at the end
(`attention_forward`, `layernorm_forward`, ...) take and return what tinymono.layers' functions do, so
transformer.py can swap one set of layers for the other.

How the work is spread over cores. A kernel works on a range [start, stop) of rows (or (batch, head)
pairs, or chunks) and writes only the outputs of that range; `in_parallel` hands one contiguous range
to each of a few Python threads. The kernels release the GIL (`nogil=True`), so the threads run them
truly in parallel. Unlike numba's `prange` (kernels/__init__.py says why), every kernel loads from its
disk cache (`cache=True`) in milliseconds, so a new process starts in a fraction of a second instead of
compiling for several seconds. Since no output depends on how the ranges were
cut, results are bit-identical for any thread count, and a resumed training run stays identical.

Flags: `cache=True, nogil=True` everywhere. `fastmath=FAST` where a loop sums (reassociating lets LLVM
vectorise the dot products and row sums); it leaves out the no-NaN/no-inf flags, so a NaN in the input
still comes out as NaN for the training loop's non-finite guard. No globals are mutated.

Axis vocabulary: B batch, T position, D d_model, H heads, E d_head, M d_mlp, V vocabulary,
n = B*T rows.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
from typing import NamedTuple

import numpy as np
from numba import njit

from tinymono import layers as L
from tinymono.kernels import in_parallel

FAST = {"reassoc", "contract", "arcp"}  # no "nnan"/"ninf": NaN must still propagate
N_CHUNKS = 16  # rows are split into this many chunks for column sums; independent of the thread count


def keep_freed_memory(limit=1 << 30):
    """Ask the C library's malloc to keep freed blocks of up to `limit` bytes for reuse.

    One training step allocates ~40 MB of arrays (the attention pattern, the MLP activations, the logits
    and their gradients) and frees them when it ends. By default glibc returns such large blocks to the
    operating system, so the next step's arrays page-fault on first touch, each fault zero-filling a 4 KB
    page: ~10,000 faults per step without this call (the benchmark's profile prints the count). Raising
    malloc's mmap and trim thresholds keeps the blocks in the process, where the next step finds them.
    This is process-wide (the process keeps its peak memory); transformer.py calls it on the first use
    of the kernels. Returns False, and changes nothing, where the C library has no mallopt (not glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    return bool(mallopt(M_MMAP_THRESHOLD, limit)) and bool(mallopt(M_TRIM_THRESHOLD, limit))


# ----------------------------------------------------------------------------------------------------
# exp for the softmaxes: a polynomial that vectorises, where math.exp is a call per number

LOG2E = 1.4426950408889634
LN2_HI = 0.6931471803691238  # ln 2 rounded to 32 significant bits, so k * LN2_HI is exact for |k| < 2^21
LN2_LO = 1.9082149292705877e-10  # ln 2 - LN2_HI
F32 = np.float32
LN2_HI32 = F32(0.693359375)  # ln 2 to 9 significant bits: k * LN2_HI32 is exact in float32 for |k| < 2^15
LN2_LO32 = F32(-2.1219444005469057e-4)  # ln 2 - LN2_HI32, rounded to float32


def _exp_nonpositive(x):
    """exp(x) for x <= 0 (a softmax's x - max), computed in float64 to within ~2 ulp of float64.

    math.exp compiles to one call into the C library per number, which LLVM cannot vectorise: in the
    profile the softmaxes' exponentials cost more than their score products. Here exp(x) = 2^k exp(r)
    with k = round(x / ln 2) and |r| <= ln(2) / 2: exp(r) is a degree-12 Taylor polynomial (its error,
    r^13 / 13!, is below 2e-16), and 2^k is written straight into a float64's exponent bits. Every step
    is plain arithmetic with a vector instruction, so LLVM vectorises a loop of these. What kept it scalar,
    and is avoided: math.floor (a call per number: k comes from truncating x / ln 2 - 1/2 toward zero
    instead, which for x <= 0 is the nearest integer) and k as an int64 (x86 has no vector instruction to
    convert floats to 64-bit integers before AVX-512, which the AMD EPYC measured lacks; k fits an int32,
    whose conversion AVX2 has); an early return is avoided too (a NaN is handed on by the last line's
    select). Below -700 (exp < 1e-304) x is clamped: the result stays finite and tiny. A slightly positive
    x (a fused multiply-add's rounding) takes k = 0."""
    xc = float(x) if x > -700.0 else -700.0  # a NaN fails the test too: -700, so k below is an integer
    k = np.int32(xc * LOG2E - 0.5)  # round(x / ln 2): truncation toward zero of a number below 0
    r = (xc - k * LN2_HI) - k * LN2_LO  # x - k ln 2, in two parts so no digits of r are lost
    p = 1.0 + r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (
        1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (1 / 3628800 + r * (1 / 39916800 + r / 479001600)))))))))))
    y = p * np.int64(np.int64(k + 1023) << 52).view(np.float64)  # 2^k: exponent field k + 1023
    return y if x == x else float(x)  # NaN in, NaN out (for the training loop's non-finite guard)


def _exp_nonpositive32(x):
    """The same for a float32 x, in float32 arithmetic, to within 1.5 ulp of float32 (measured: 0.93 with
    fused multiply-adds, 1.2 without): a degree-7 Taylor polynomial (its error, r^8 / 8!, is below 6e-9),
    2^k written into a float32's exponent bits, and twice the numbers per vector instruction of float64.
    Below -87 (exp < 2e-38, float32's smallest normal number is 1.2e-38) x is clamped, so no result is
    subnormal: a softmax's weights that small, and the twin's zeros, are the same to any tolerance."""
    xc = x if x > F32(-87.0) else F32(-87.0)
    k = np.int32(xc * F32(LOG2E) - F32(0.5))
    kf = F32(k)
    r = (xc - kf * LN2_HI32) - kf * LN2_LO32
    p = F32(1.0) + r * (F32(1.0) + r * (F32(1 / 2) + r * (F32(1 / 6) + r * (F32(1 / 24) + r * (
        F32(1 / 120) + r * (F32(1 / 720) + r * F32(1 / 5040)))))))
    y = p * np.int32((k + 127) << 23).view(np.float32)  # 2^k: exponent field k + 127
    return y if x == x else x


# inlined into the loops that call them, so LLVM sees one loop body to vectorise; fastmath: contracts the
# polynomial into fused multiply-adds (reassociation changes no result here: Horner's order is explicit)
exp_nonpositive = njit(cache=True, nogil=True, inline="always", fastmath=FAST)(_exp_nonpositive)
exp_nonpositive32 = njit(cache=True, nogil=True, inline="always", fastmath=FAST)(_exp_nonpositive32)


def _exp_sum(dst, src, n, scale, shift):
    """dst[j] = exp(scale * src[j] - shift) for j < n, shift the largest scale * src[j] (so every exponent
    is <= 0, up to a fraction of an ulp where a fused multiply-add rounds differently from the maximum's
    product); returns their sum. float32 arrays take exp_nonpositive32, float64 ones exp_nonpositive: one
    test of the item size per call, outside the loops."""
    total = dst.dtype.type(0.0)
    if dst.itemsize == 4:
        for j in range(n):
            v = exp_nonpositive32(src[j] * scale - shift)
            dst[j] = v
            total += v
    else:
        for j in range(n):
            v = exp_nonpositive(src[j] * scale - shift)
            dst[j] = v
            total += v
    return total


exp_sum = njit(cache=True, nogil=True, inline="always", fastmath=FAST)(_exp_sum)


# ----------------------------------------------------------------------------------------------------
# attention core, per (batch, head) pair: scores = q k^T * scale, causal softmax, z = pattern @ v


def _softmax_row(row, i, scale):
    """row[:i + 1] <- softmax(scale * row[:i + 1]) (query i sees keys 0..i); row[i + 1:] <- 0."""
    top = row[0] * scale
    for j in range(1, i + 1):
        top = max(top, row[j] * scale)
    inv = row.dtype.type(1.0) / exp_sum(row, row, i + 1, scale, top)  # the largest is 1 (to an ulp): sum >= 1
    for j in range(i + 1):
        row[j] *= inv
    for j in range(i + 1, row.shape[0]):
        row[j] = 0.0


softmax_row = njit(cache=True, nogil=True, inline="always", fastmath=FAST)(_softmax_row)


def _keys_values_transposed(qkv, b, h, kT, vT):
    """Copy head h's keys and values of sequence b into kT, vT [E, T] (position along the contiguous axis)."""
    for j in range(kT.shape[1]):
        for e in range(kT.shape[0]):
            kT[e, j] = qkv[b, j, 1, h, e]
            vT[e, j] = qkv[b, j, 2, h, e]


keys_values_transposed = njit(cache=True, nogil=True, inline="always")(_keys_values_transposed)


# The products below are small (a head's 128 x 128 scores from 32-number queries and keys): batched BLAS
# calls, with their copies, were no faster (docs/experiments.md). Written as plain loops along positions,
# each loop would load and store its output row once per multiply-add and be bound by those loads and
# stores, not by arithmetic. So every product here does several multiply-adds per load: two output rows
# and four terms per pass (pair_rows), four rows by four outputs per pass (lower_rows), or a four-by-four
# block of dot products kept in registers (block_dots).
# Where a size is not a multiple of the block, indices past the end are clamped to the last one: the
# duplicate computes the same number again and writes it to the same place, so nothing else changes
# (lower_rows adds into its outputs, so its duplicates go to spare rows instead).


def _pair_rows(out0, out1, c0, c1, src, n):
    """out0[:n] = sum_e c0[e] src[e, :n] and out1[:n] = sum_e c1[e] src[e, :n]: two rows at once (each
    number of src loaded serves both), four terms e per pass. out0 and out1 must be different rows."""
    E = c0.shape[0]
    fours = E - E % 4
    last = min(fours, E - 1)  # the first pass also takes the one term past the last multiple of 4, if any
    w0 = c0[last] if fours < E else 0.0
    w1 = c1[last] if fours < E else 0.0
    for j in range(n):
        out0[j] = w0 * src[last, j]
        out1[j] = w1 * src[last, j]
    for e in range(0, fours, 4):
        a0, a1, a2, a3 = c0[e], c0[e + 1], c0[e + 2], c0[e + 3]
        b0, b1, b2, b3 = c1[e], c1[e + 1], c1[e + 2], c1[e + 3]
        for j in range(n):
            s0, s1, s2, s3 = src[e, j], src[e + 1, j], src[e + 2, j], src[e + 3, j]
            out0[j] += (a0 * s0 + a1 * s1) + (a2 * s2 + a3 * s3)
            out1[j] += (b0 * s0 + b1 * s1) + (b2 * s2 + b3 * s3)
    for e in range(fours + 1, E):
        a0, b0 = c0[e], c1[e]
        for j in range(n):
            out0[j] += a0 * src[e, j]
            out1[j] += b0 * src[e, j]


pair_rows = njit(cache=True, nogil=True, inline="always", fastmath=FAST)(_pair_rows)


def _block_dots(rows, i, src, out):
    """out[i + r, e] = rows[i + r, :n] . src[e, :n] for r, e < 4 (n = i + 4: rows is lower-triangular, zero
    past its diagonal), for every block of four e: sixteen sums in registers, eight loads per sixteen
    multiply-adds. rows [T, T], src [E, T], out [T, E]."""
    T, E = rows.shape[0], src.shape[0]
    i0, i1, i2, i3 = i, min(i + 1, T - 1), min(i + 2, T - 1), min(i + 3, T - 1)
    n = i3 + 1
    for e in range(0, E, 4):
        e1, e2, e3 = min(e + 1, E - 1), min(e + 2, E - 1), min(e + 3, E - 1)
        a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = rows.dtype.type(0.0)
        a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = rows.dtype.type(0.0)
        for j in range(n):
            s0, s1, s2, s3 = src[e, j], src[e1, j], src[e2, j], src[e3, j]
            r = rows[i0, j]
            a00 += r * s0
            a01 += r * s1
            a02 += r * s2
            a03 += r * s3
            r = rows[i1, j]
            a10 += r * s0
            a11 += r * s1
            a12 += r * s2
            a13 += r * s3
            r = rows[i2, j]
            a20 += r * s0
            a21 += r * s1
            a22 += r * s2
            a23 += r * s3
            r = rows[i3, j]
            a30 += r * s0
            a31 += r * s1
            a32 += r * s2
            a33 += r * s3
        out[i0, e], out[i0, e1], out[i0, e2], out[i0, e3] = a00, a01, a02, a03
        out[i1, e], out[i1, e1], out[i1, e2], out[i1, e3] = a10, a11, a12, a13
        out[i2, e], out[i2, e1], out[i2, e2], out[i2, e3] = a20, a21, a22, a23
        out[i3, e], out[i3, e1], out[i3, e2], out[i3, e3] = a30, a31, a32, a33


block_dots = njit(cache=True, nogil=True, inline="always", fastmath=FAST)(_block_dots)


def _lower_rows(o0, o1, o2, o3, c0, c1, c2, c3, src):
    """o_k[:T] = sum_i c_k[i] src[i, :T] for k < 4, for a lower-triangular src [T, T] (src[i, j] = 0 for
    j > i): four rows i per pass, a block of rows i..i+3 touching only columns j <= i + 3, and four outputs
    per pass, so each number of src loaded serves four multiply-adds. The four outputs must be different
    rows (each is added into). Each output's sum is the same, in the same order, as with one output per call."""
    T = src.shape[0]
    fours = T - T % 4
    for j in range(T):
        o0[j] = o1[j] = o2[j] = o3[j] = 0.0
    for i in range(0, fours, 4):
        a0, a1, a2, a3 = c0[i], c0[i + 1], c0[i + 2], c0[i + 3]
        b0, b1, b2, b3 = c1[i], c1[i + 1], c1[i + 2], c1[i + 3]
        d0, d1, d2, d3 = c2[i], c2[i + 1], c2[i + 2], c2[i + 3]
        f0, f1, f2, f3 = c3[i], c3[i + 1], c3[i + 2], c3[i + 3]
        for j in range(i + 4):
            s0, s1, s2, s3 = src[i, j], src[i + 1, j], src[i + 2, j], src[i + 3, j]
            o0[j] += (a0 * s0 + a1 * s1) + (a2 * s2 + a3 * s3)
            o1[j] += (b0 * s0 + b1 * s1) + (b2 * s2 + b3 * s3)
            o2[j] += (d0 * s0 + d1 * s1) + (d2 * s2 + d3 * s3)
            o3[j] += (f0 * s0 + f1 * s1) + (f2 * s2 + f3 * s3)
    for i in range(fours, T):
        a0, b0, d0, f0 = c0[i], c1[i], c2[i], c3[i]
        for j in range(i + 1):
            o0[j] += a0 * src[i, j]
            o1[j] += b0 * src[i, j]
            o2[j] += d0 * src[i, j]
            o3[j] += f0 * src[i, j]


lower_rows = njit(cache=True, nogil=True, inline="always", fastmath=FAST)(_lower_rows)


def _attention_heads_forward(qkv, scale, pattern, z, start, stop):
    """qkv [B, T, 3, H, E] (queries, keys, values as one matmul produced them) -> fills pattern[b, h]
    [T, T] (0 above the diagonal) and z[b, :, h] [T, E] for the (batch, head) pairs bh = b * H + h in
    [start, stop). The causal mask is the loop bound: query i scores keys j <= i, never the future.

    Keys and values are copied transposed, [E, T], so the innermost loops run along key positions j over
    contiguous memory, which LLVM vectorises. The scores of queries i and i + 1 come together (pair_rows,
    straight into the pattern's rows, which the softmax then turns into weights); then z = pattern @ v,
    four queries by four numbers at a time (block_dots)."""
    T, H, E = qkv.shape[1], qkv.shape[3], qkv.shape[4]
    kT, vT = np.empty((E, T), qkv.dtype), np.empty((E, T), qkv.dtype)
    spare = np.empty(T, qkv.dtype)  # the second row of an odd T's last query, computed and dropped
    for bh in range(start, stop):
        b, h = bh // H, bh % H
        keys_values_transposed(qkv, b, h, kT, vT)
        P = pattern[b, h]
        for i in range(0, T, 2):
            i1 = min(i + 1, T - 1)  # the second query (== i for the last of an odd T)
            second = P[i1] if i1 > i else spare
            pair_rows(P[i], second, qkv[b, i, 0, h], qkv[b, i1, 0, h], kT, i1 + 1)  # row i's key i + 1: the softmax zeroes it
            softmax_row(P[i], i, scale)
            softmax_row(second, i1, scale)
        for i in range(0, T, 4):
            block_dots(P, i, vT, z[b, :, h])


attention_heads_forward = njit(cache=True, nogil=True, fastmath=FAST)(_attention_heads_forward)


def _attention_heads_backward(qkv, pattern, dz, scale, dqkv, start, stop):
    """The backward of _attention_heads_forward: dz [B, T, H, E] -> fills dqkv[b, :, 0..2, h] (the
    gradients of q, k and v) for the pairs in [start, stop), the forward's lines in reverse:
        z[i] = sum_j pattern[i, j] v[j]  ->  dpattern[i, j] = dz[i] . v[j],  dv[j] = sum_i pattern[i, j] dz[i]
        softmax of row i                 ->  dscores[i, j] = pattern[i, j] (dpattern[i, j]
                                                                 - sum_j' pattern[i, j'] dpattern[i, j'])
        scores[i, j] = scale q[i] . k[j] ->  dq[i] = scale sum_j dscores[i, j] k[j],  dk[j] = scale sum_i dscores[i, j] q[i]
    Row by row (two queries at a time) come dpattern and dscores, kept whole in DS [T, T] (zero above the
    diagonal, like the pattern); then dq = DS k (block_dots, straight into dqkv), and dv and dk, each a sum
    over the query rows of a lower-triangular matrix, four rows and four numbers e per pass (lower_rows, its
    coefficients gathered into contiguous rows first). Keys, values and their gradients are kept
    transposed, [E, T], as in the forward; dk and dv are written into dqkv at the end."""
    T, H, E = qkv.shape[1], qkv.shape[3], qkv.shape[4]
    kT, vT = np.empty((E, T), qkv.dtype), np.empty((E, T), qkv.dtype)
    E4 = E + (-E) % 4  # dk and dv are computed four numbers e at a time: rows past E are spare
    dkT, dvT = np.empty((E4, T), qkv.dtype), np.empty((E4, T), qkv.dtype)
    dp = np.empty((2, T), qkv.dtype)  # two rows of dpattern
    DS = np.empty((T, T), qkv.dtype)  # dscores (the scale included)
    cols = np.empty((8, T), qkv.dtype)  # four numbers e of every position's dz, then of its query, contiguous
    for bh in range(start, stop):
        b, h = bh // H, bh % H
        keys_values_transposed(qkv, b, h, kT, vT)
        P = pattern[b, h]
        for i in range(0, T, 2):
            i1 = min(i + 1, T - 1)
            n = i1 + 1
            pair_rows(dp[0], dp[1], dz[b, i, h], dz[b, i1, h], vT, n)
            weighted0, weighted1 = P[i, 0] * dp[0, 0], P[i1, 0] * dp[1, 0]
            for j in range(1, n):
                weighted0 += P[i, j] * dp[0, j]
                weighted1 += P[i1, j] * dp[1, j]
            for j in range(n):
                DS[i, j] = P[i, j] * (dp[0, j] - weighted0) * scale
                DS[i1, j] = P[i1, j] * (dp[1, j] - weighted1) * scale
            for j in range(n, T):
                DS[i, j] = 0.0
                DS[i1, j] = 0.0
        for i in range(0, T, 4):
            block_dots(DS, i, kT, dqkv[b, :, 0, h])
        for e in range(0, E, 4):  # four numbers e of dv and dk at a time (past E: the last again, into a spare row)
            e1, e2, e3 = min(e + 1, E - 1), min(e + 2, E - 1), min(e + 3, E - 1)
            for i in range(T):
                cols[0, i], cols[1, i] = dz[b, i, h, e], dz[b, i, h, e1]
                cols[2, i], cols[3, i] = dz[b, i, h, e2], dz[b, i, h, e3]
                cols[4, i], cols[5, i] = qkv[b, i, 0, h, e], qkv[b, i, 0, h, e1]
                cols[6, i], cols[7, i] = qkv[b, i, 0, h, e2], qkv[b, i, 0, h, e3]
            lower_rows(dvT[e], dvT[e + 1], dvT[e + 2], dvT[e + 3], cols[0], cols[1], cols[2], cols[3], P)
            lower_rows(dkT[e], dkT[e + 1], dkT[e + 2], dkT[e + 3], cols[4], cols[5], cols[6], cols[7], DS)
        for j in range(T):
            for e in range(E):
                dqkv[b, j, 1, h, e] = dkT[e, j]
                dqkv[b, j, 2, h, e] = dvT[e, j]


attention_heads_backward = njit(cache=True, nogil=True, fastmath=FAST)(_attention_heads_backward)


def attention_core_forward_numpy(qkv, scale):
    """The twin: qkv [B, T, 3, H, E] -> (pattern [B, H, T, T], z [B, T, H, E]), as layers.py computes it."""
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # each [B, H, T, E]
    pattern = L.causal_softmax(q @ k.transpose(0, 1, 3, 2) * scale)  # [B, H, T, T]
    return pattern, (pattern @ v).transpose(0, 2, 1, 3)  # z [B, T, H, E]


def attention_core_backward_numpy(qkv, pattern, dz, scale):
    """The twin: dz [B, T, H, E] -> dqkv [B, T, 3, H, E]."""
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # each [B, H, T, E]
    dz = dz.transpose(0, 2, 1, 3)  # [B, H, T, E]
    dpattern = dz @ v.transpose(0, 1, 3, 2)  # [B, H, T, T]
    dv = pattern.transpose(0, 1, 3, 2) @ dz
    dscores = L.causal_softmax_backward(dpattern, pattern) * scale
    dq, dk = dscores @ k, dscores.transpose(0, 1, 3, 2) @ q
    return np.stack([dq, dk, dv], axis=2).transpose(0, 3, 2, 1, 4)  # [B, H, 3, T, E] -> [B, T, 3, H, E]


# ----------------------------------------------------------------------------------------------------
# layer norm over the last axis, row by row


def _layernorm_rows_forward(x, w, b, eps, out, xhat, inv_std, start, stop):
    """Rows [start, stop) of x [n, D] -> those rows of out and xhat [n, D] and of inv_std [n]
    (layers.layernorm_forward's formulas)."""
    D = x.shape[1]
    for r in range(start, stop):
        mean = x[r, 0]
        for d in range(1, D):
            mean += x[r, d]
        mean /= D
        var = (x[r, 0] - mean) * (x[r, 0] - mean)
        for d in range(1, D):
            var += (x[r, d] - mean) * (x[r, d] - mean)
        s = 1.0 / math.sqrt(var / D + eps)
        inv_std[r] = s
        for d in range(D):
            xhat[r, d] = (x[r, d] - mean) * s
            out[r, d] = xhat[r, d] * w[d] + b[d]


# cached; nogil; fastmath: the mean and variance sums vectorise
layernorm_rows_forward = njit(cache=True, nogil=True, fastmath=FAST)(_layernorm_rows_forward)


def _layernorm_chunks_backward(dout, xhat, inv_std, w, dx, dw_parts, db_parts, start, stop):
    """Chunks [start, stop) of the rows (dw_parts.shape[0] chunks in all): fills their rows of dx and each
    chunk's column sums dw_parts[c] (of dout * xhat) and db_parts[c] (of dout); the caller adds the
    chunks. With g = dout * w:  dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))."""
    n, D = dout.shape
    n_chunks = dw_parts.shape[0]
    for c in range(start, stop):
        dw_parts[c] = 0.0
        db_parts[c] = 0.0
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            g_mean = dout[r, 0] * w[0]
            gx_mean = g_mean * xhat[r, 0]
            for d in range(1, D):
                g = dout[r, d] * w[d]
                g_mean += g
                gx_mean += g * xhat[r, d]
            g_mean /= D
            gx_mean /= D
            for d in range(D):
                dx[r, d] = inv_std[r] * (dout[r, d] * w[d] - g_mean - xhat[r, d] * gx_mean)
                dw_parts[c, d] += dout[r, d] * xhat[r, d]
                db_parts[c, d] += dout[r, d]


# cached; nogil; fastmath: the row means vectorise
layernorm_chunks_backward = njit(cache=True, nogil=True, fastmath=FAST)(_layernorm_chunks_backward)


class LayerNormCache(NamedTuple):
    xhat: np.ndarray  # [n, D] the normalised rows
    inv_std: np.ndarray  # [n]
    w: np.ndarray  # [D]


def layernorm_forward(x, w, b, eps=1e-5):
    """As layers.layernorm_forward: x [N..., D], w, b [D] -> (out [N..., D], cache)."""
    L.check_layernorm_args(x, w, b, eps)
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))  # [n, D]
    out, xhat = np.empty_like(x2), np.empty_like(x2)
    inv_std = np.empty(x2.shape[0], dtype=x.dtype)
    in_parallel(layernorm_rows_forward, x2.shape[0], x2, w, b, x.dtype.type(eps), out, xhat, inv_std)
    return out.reshape(x.shape), LayerNormCache(xhat, inv_std, w)


def layernorm_backward(dout, cache):
    """As layers.layernorm_backward: dout [N..., D] -> (dx [N..., D], dw [D], db [D])."""
    D = dout.shape[-1]
    dout2 = np.ascontiguousarray(dout.reshape(-1, D))
    dx = np.empty_like(dout2)
    dw_parts, db_parts = np.empty((N_CHUNKS, D), dout.dtype), np.empty((N_CHUNKS, D), dout.dtype)
    in_parallel(layernorm_chunks_backward, N_CHUNKS, dout2, cache.xhat, cache.inv_std, cache.w, dx, dw_parts, db_parts)
    return dx.reshape(dout.shape), dw_parts.sum(axis=0), db_parts.sum(axis=0)


# ----------------------------------------------------------------------------------------------------
# the MLP's bias + ReLU, in place on the matmul's output


def _bias_relu_rows(h, b, start, stop):
    """Rows [start, stop) of h [n, M] <- max(h + b, 0): one pass instead of NumPy's add, compare, select."""
    for r in range(start, stop):
        for m in range(h.shape[1]):
            h[r, m] = max(h[r, m] + b[m], 0.0)


# cached; nogil; no fastmath. A NaN stays NaN here (layers.relu_forward's np.where makes it 0; the loss is
# NaN either way, through the residual stream)
bias_relu_rows = njit(cache=True, nogil=True)(_bias_relu_rows)


def _relu_backward_chunks(dpost, post, dpre, db_parts, start, stop):
    """Chunks [start, stop) of the rows (db_parts.shape[0] chunks in all): dpre = dpost where post > 0, else 0,
    and each chunk's column sums of dpre in db_parts[c] (the caller adds them: the bias gradient), in one
    pass. The mask is read from the ReLU's output (post > 0 exactly where pre > 0), so none is stored."""
    n, M = dpost.shape
    n_chunks = db_parts.shape[0]
    for c in range(start, stop):
        db_parts[c] = 0.0
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            for m in range(M):
                dpre[r, m] = dpost[r, m] if post[r, m] > 0.0 else 0.0
                db_parts[c, m] += dpre[r, m]


# cached; nogil; no fastmath: the column sums run in row order, like NumPy's
relu_backward_chunks = njit(cache=True, nogil=True)(_relu_backward_chunks)


def bias_relu_numpy(h, b):
    """The twin of bias_relu_rows (out of place)."""
    return L.relu_forward(h + b)[0]


def relu_backward_numpy(dpost, post):
    """The twin of relu_backward_chunks: (dpre, its column sums)."""
    dpre = np.where(post > 0, dpost, 0).astype(dpost.dtype)
    return dpre, dpre.sum(axis=0)


# ----------------------------------------------------------------------------------------------------
# softmax cross-entropy, row (token) by row


def _cross_entropy_rows(logits, targets, losses, dlogits, start, stop):
    """Rows [start, stop) of logits [n, V] -> losses[r] (nats) and dlogits[r] = (softmax - onehot) / n, the
    gradient of the mean loss over all n rows (layers.cross_entropy_forward and _backward in one pass)."""
    n, V = logits.shape
    for r in range(start, stop):
        top = logits[r, 0]
        for c in range(1, V):
            top = max(top, logits[r, c])
        total = exp_sum(dlogits[r], logits[r], V, logits.dtype.type(1.0), top)  # unnormalised softmax, in (0, 1]
        losses[r] = math.log(total) + top - logits[r, targets[r]]  # -log softmax at the target
        inv = dlogits.dtype.type(1.0) / (total * n)
        for c in range(V):
            dlogits[r, c] *= inv
        dlogits[r, targets[r]] -= 1.0 / n


# cached; nogil; fastmath: the row max and sum of exponentials vectorise
cross_entropy_rows = njit(cache=True, nogil=True, fastmath=FAST)(_cross_entropy_rows)


def cross_entropy_rows_numpy(logits, targets):
    """The twin: (losses [n], dlogits [n, V]) from layers.py's cross-entropy."""
    _, cache = L.cross_entropy_forward(logits, targets)
    return L.per_token_loss(cache), L.cross_entropy_backward(1.0, cache)[0]


def softmax_cross_entropy(logits, targets):
    """As layers.softmax_cross_entropy: logits [N..., V], targets [N...] -> (mean loss, dlogits)."""
    V = logits.shape[-1]
    targets = L.check_cross_entropy_args(logits, targets)  # the kernel would index outside the arrays
    logits2 = np.ascontiguousarray(logits.reshape(-1, V))
    losses, dlogits = np.empty(logits2.shape[0], logits.dtype), np.empty_like(logits2)
    targets2 = targets.reshape(-1).astype(np.int64)
    in_parallel(cross_entropy_rows, logits2.shape[0], logits2, targets2, losses, dlogits)
    return float(losses.astype(np.float64).mean()), dlogits.reshape(logits.shape)


# ----------------------------------------------------------------------------------------------------
# embedding: resid = W_E[tokens] + W_pos[:T], and its gradient, a scatter-add


def _embed_backward(tokens, dresid, dW_E, dW_pos):
    """tokens [B, T], dresid [B, T, D] -> fills dW_E [V, D] and dW_pos[:T] (zeroed first). One thread:
    two positions holding the same token add into the same row, which parallel threads would race on
    (and at 4096 tokens x 128 numbers the loop takes well under a millisecond)."""
    B, T, D = dresid.shape
    dW_E[:] = 0.0
    dW_pos[:] = 0.0
    for b in range(B):
        for t in range(T):
            row = tokens[b, t]
            for d in range(D):
                dW_E[row, d] += dresid[b, t, d]
                dW_pos[t, d] += dresid[b, t, d]


# cached; one thread (see above); no fastmath
embed_backward_kernel = njit(cache=True, nogil=True)(_embed_backward)


def embed_backward_numpy(tokens, dresid, n_vocab, n_ctx):
    """The twin: (dW_E, dW_pos) with layers.embedding_backward's np.add.at and a sum over the batch."""
    _, dW_E = L.embedding_backward(dresid, L.EmbeddingCache(tokens, (n_vocab, dresid.shape[-1])))
    dW_pos = np.zeros((n_ctx, dresid.shape[-1]), dresid.dtype)
    dW_pos[: tokens.shape[1]] = dresid.sum(axis=0)
    return dW_E, dW_pos


# ----------------------------------------------------------------------------------------------------
# layer-shaped wrappers: the same arguments and results as tinymono.layers, built from the kernels above


class AttentionCache(NamedTuple):
    x: np.ndarray  # [n, D] input rows, for dW_Q, dW_K, dW_V
    qkv: np.ndarray  # [B, T, 3, H, E] queries, keys, values
    pattern: np.ndarray  # [B, H, T, T]
    z: np.ndarray  # [n, H*E] the heads' outputs side by side, for dW_O
    W_qkv: np.ndarray  # [D, 3*H*E] W_Q, W_K, W_V side by side, for dx
    W_O: np.ndarray  # [H*E, D]


def attention_forward(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O):
    """As layers.attention_forward. The three projections run as one matmul with W_Q, W_K, W_V side by
    side, the core per (batch, head) in numba, the output projection as one matmul over all heads.
    x [B, T, D] -> (out [B, T, D], cache); the pattern is in cache.pattern as in layers.py."""
    L.check_attention_args(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O)
    B, T, D = x.shape
    H, _, E = W_Q.shape
    x2 = np.ascontiguousarray(x.reshape(B * T, D))  # [n, D]
    W_qkv = np.stack([W_Q, W_K, W_V], axis=1).transpose(2, 1, 0, 3).reshape(D, 3 * H * E)  # [D, 3HE], (3, H, E) order
    qkv = x2 @ W_qkv  # [n, 3HE]
    qkv += np.stack([b_Q, b_K, b_V]).reshape(-1)
    qkv = qkv.reshape(B, T, 3, H, E)
    pattern, z = np.empty((B, H, T, T), x.dtype), np.empty((B, T, H, E), x.dtype)
    in_parallel(attention_heads_forward, B * H, qkv, x.dtype.type(1.0 / math.sqrt(E)), pattern, z)
    z2, W_O2 = z.reshape(B * T, H * E), W_O.reshape(H * E, D)
    out = z2 @ W_O2  # [n, D]
    out += b_O
    return out.reshape(B, T, D), AttentionCache(x2, qkv, pattern, z2, W_qkv, W_O2)


def attention_backward(dout, cache):
    """As layers.attention_backward: dout [B, T, D] -> (dx, dW_Q, db_Q, dW_K, db_K, dW_V, db_V, dW_O, db_O)."""
    x2, qkv, pattern, z2, W_qkv, W_O2 = cache
    B, T, _, H, E = qkv.shape
    D = x2.shape[1]
    dout2 = np.ascontiguousarray(dout.reshape(B * T, D))
    db_O = dout2.sum(axis=0)  # [D]
    dW_O = (z2.T @ dout2).reshape(H, E, D)
    dz = (dout2 @ W_O2.T).reshape(B, T, H, E)
    dqkv = np.empty_like(qkv)
    in_parallel(attention_heads_backward, B * H, qkv, pattern, dz, qkv.dtype.type(1.0 / math.sqrt(E)), dqkv)
    dqkv2 = dqkv.reshape(B * T, 3 * H * E)
    dW_qkv = (x2.T @ dqkv2).reshape(D, 3, H, E).transpose(1, 2, 0, 3)  # [3, H, D, E]
    db_qkv = dqkv2.sum(axis=0).reshape(3, H, E)
    dx = (dqkv2 @ W_qkv.T).reshape(B, T, D)  # x fed q, k and v: the matmul sums the three gradients
    return (dx, np.ascontiguousarray(dW_qkv[0]), db_qkv[0], np.ascontiguousarray(dW_qkv[1]), db_qkv[1],
            np.ascontiguousarray(dW_qkv[2]), db_qkv[2], dW_O, db_O)


class LinearCache(NamedTuple):
    x: np.ndarray  # [n, I] input rows
    W: np.ndarray  # [I, O]


def linear_forward(x, W, b):
    """As layers.linear_forward, with the leading axes folded into one matmul: x [N..., I] -> out [N..., O]."""
    L.check_linear_args(x, W, b)
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))  # [n, I]
    out = x2 @ W  # [n, O]
    out += b
    return out.reshape(*x.shape[:-1], W.shape[1]), LinearCache(x2, W)


def linear_backward(dout, cache):
    """As layers.linear_backward: dout [N..., O] -> (dx [N..., I], dW [I, O], db [O])."""
    x2, W = cache
    dout2 = np.ascontiguousarray(dout.reshape(-1, W.shape[1]))
    return (dout2 @ W.T).reshape(*dout.shape[:-1], W.shape[0]), x2.T @ dout2, dout2.sum(axis=0)


class LinearReluCache(NamedTuple):
    x: np.ndarray  # [n, I] input rows, for dW
    W: np.ndarray  # [I, O], for dx
    post: np.ndarray  # [n, O] the output, whose zeros are the ReLU's mask


def linear_relu_forward(x, W, b):
    """relu(x @ W + b), the matmul in BLAS and the bias and ReLU in one fused pass over its result.
    x [N..., I] -> (out [N..., O], cache)."""
    L.check_linear_args(x, W, b)
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))  # [n, I]
    post = x2 @ W  # [n, O]
    in_parallel(bias_relu_rows, post.shape[0], post, b)
    return post.reshape(*x.shape[:-1], W.shape[1]), LinearReluCache(x2, W, post)


def linear_relu_backward(dout, cache):
    """dout [N..., O] -> (dx [N..., I], dW [I, O], db [O])."""
    x2, W, post = cache
    dpre, db_parts = np.empty_like(post), np.empty((N_CHUNKS, post.shape[1]), post.dtype)
    in_parallel(relu_backward_chunks, N_CHUNKS, np.ascontiguousarray(dout.reshape(post.shape)), post, dpre, db_parts)
    return (dpre @ W.T).reshape(*dout.shape[:-1], W.shape[0]), x2.T @ dpre, db_parts.sum(axis=0)


class EmbedCache(NamedTuple):
    tokens: np.ndarray  # [B, T]
    n_vocab: int
    n_ctx: int


def embed_forward(tokens, W_E, W_pos):
    """tokens [B, T] -> resid [B, T, D] = W_E[tokens] + W_pos[:T]."""
    tokens = L.check_embedding_args(tokens, W_E)  # the backward's scatter-add would write outside dW_E
    if tokens.ndim != 2 or W_pos.ndim != 2 or W_pos.shape[1] != W_E.shape[1] or tokens.shape[1] > W_pos.shape[0]:
        raise ValueError(f"embed expects tokens [B, T], W_E [V, D], W_pos [n_ctx, D] with T <= n_ctx; got tokens "
                         f"{tokens.shape}, W_E {W_E.shape}, W_pos {W_pos.shape}")
    resid = W_E[tokens]  # [B, T, D]
    resid += W_pos[: tokens.shape[1]]
    return resid, EmbedCache(tokens.astype(np.int64, copy=False), W_E.shape[0], W_pos.shape[0])


def embed_backward(dresid, cache):
    """dresid [B, T, D] -> (dW_E [V, D], dW_pos [n_ctx, D])."""
    D = dresid.shape[-1]
    dW_E, dW_pos = np.empty((cache.n_vocab, D), dresid.dtype), np.zeros((cache.n_ctx, D), dresid.dtype)
    embed_backward_kernel(cache.tokens, np.ascontiguousarray(dresid), dW_E, dW_pos[: cache.tokens.shape[1]])
    return dW_E, dW_pos
