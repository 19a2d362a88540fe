"""numba kernels of the toy model of superposition: its random numbers, its data and its training loop.

The toy model is tiny (5 features in 2 dimensions), so a NumPy step spends nearly all its time in
per-call overhead and in generating the data; the work itself is a few hundred flops per sample. The
kernel here runs everything of a whole chunk of steps (sample a batch, forward, backward, Adam) inside
one compiled loop, one instance per thread.

Random numbers are *counter-based*: the 64 random bits for (seed, step, instance, sample, pair of
features) are a fixed hash of those integers, and their high and low halves are the uniform numbers of the
pair's two features (each on a grid of 2**-32). One number per (sample, feature) decides both whether the
feature is present and, if it is, its value: u < p fires with probability p, and given that it fired,
u / p is uniform in [0, 1). The draws once cost more than the rest of a sample's work: one number per
entry instead of two made the sampling 1.8x faster, one hash per two entries 1.6x faster again, and a
loop with no multiplications for the counters and no integer-to-float conversions (both below) 3x
faster again (docs/experiments.md). The same numbers are then available to the numba kernel, to its
vectorised NumPy twin, and to a resumed run, with no generator state to carry around or keep in step.
The hash is SplitMix64's output function, which passes the usual statistical test batteries.

Axis vocabulary: inst (instances, independent models), batch, feats (n_features), hidden (d_hidden).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from tinymono.kernels import in_parallel

# The uint64 constants are written inline as np.uint64(...) inside the kernels: numba freezes a global
# np.uint64 as a signed int64, and uint64 mixed with int64 silently becomes float64 or a signed shift.
_TO_UNIT = 1.0 / 4294967296.0  # 2**-32: either 32-bit half of the hash becomes a float in [0, 1)
BELOW_ONE = 1.0 - 2.0**-53  # the largest float below 1: u * (1 / p) for u < p can round up to 1
_GOLDEN = 0x9E3779B97F4A7C15  # the golden-ratio stride between the hash inputs of consecutive counters
_LOW32 = 0xFFFFFFFF
# A 32-bit integer k becomes a float with no conversion instruction: OR-ed into the bits of the float 2**52
# (exponent 52, an empty mantissa) it fills the mantissa's low bits, and that float is exactly 2**52 + k.
# x86 has no vector instruction that converts 64-bit integers to floats before AVX-512; with this trick
# instead of a conversion, the sampling loop vectorises (docs/experiments.md, "The toy model's draws without
# conversions").
_EXP52 = 0x4330000000000000
_TWO52 = 2.0**52

# feature kinds: how a feature's presence is drawn (pairs are stored as first/second member)
INDEPENDENT, CORR_FIRST, CORR_SECOND, ANTI_FIRST, ANTI_SECOND = 0, 1, 2, 3, 4


def _mix(z):
    """SplitMix64's finaliser: a bijection of uint64 that scrambles every input bit into every output bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


mix = njit(cache=True)(_mix)  # plain integer arithmetic: no fastmath needed


def _bits(seed_key, counter):
    """The 64 random bits with index `counter` of the stream `seed_key` (uint64 numbers or arrays, which
    wrap around). The high 32 bits, times 2**-32, are the uniform number of a pair's first feature, the low
    32 bits the second's."""
    return _mix(seed_key + (counter + np.uint64(1)) * np.uint64(_GOLDEN))


def _unit(a):
    """The uniform number in [0, 1) that the sampling loop left in `a` as the float 2**52 + k, k one 32-bit
    half of a hash: k times 2**-32 (both steps exact)."""
    return (a - _TWO52) * _TO_UNIT


unit = njit(cache=True, inline="always")(_unit)


def seed_key(seed):
    """The stream key of an integer seed (mixed, so seeds 0, 1, 2, ... give unrelated streams)."""
    with np.errstate(over="ignore"):
        return np.uint64(mix(np.uint64(seed % 2**64)))  # numba hands back a Python int: make it uint64 again


def uniforms_numpy(seed_key, counter, n_feats):
    """Vectorised twin of the draws: counter [..., n_pairs] uint64 (one per pair of features) -> the
    uniform numbers [..., n_feats] float64, pair q giving features 2q (high half) and 2q + 1 (low half)."""
    z = _bits(seed_key, counter)
    u = np.empty(counter.shape[:-1] + (2 * counter.shape[-1],))
    u[..., 0::2] = (z >> np.uint64(32)).astype(np.float64) * _TO_UNIT
    u[..., 1::2] = (z & np.uint64(_LOW32)).astype(np.float64) * _TO_UNIT
    return u[..., :n_feats]


def _counter(step, inst, n_inst, sample, batch, pair, n_pairs):
    """The stream index of the random bits of one (step, instance, sample, pair of features)."""
    return ((step * n_inst + inst) * batch + sample) * n_pairs + pair


counter = njit(cache=True)(_counter)


def _sample_tile(key, step, inst, n_inst, first, count, batch, prob, kind, u, x):
    """Fill x[:, :count] with samples first .. first + count - 1 of instance `inst` (feature-major, so
    the loops below run along samples and vectorise): feature f is present with probability prob[f]
    (pairs: correlated = both present together; anticorrelated = exactly one of the two, each with its
    marginal probability), and a present feature's value is uniform in [0, 1): u / p, from the draw u < p
    that made it present (a correlated pair's second member, whose own draw decides nothing, takes its
    own draw as its value; an anticorrelated pair fires on u < 2 p and its second draw picks the member).
    u / p is computed as u times 1 / p (a division in the loop gave back most of what the saved hash won:
    docs/experiments.md), held below 1 where that product rounds up to it. u [feats, >= count] is scratch.
    Every loop runs along the samples of the tile, one feature at a time, so the kind of a feature is
    decided once per tile rather than once per sample (`python -m tinymono bench toy` measures the gain)."""
    n = x.shape[0]
    n_pairs = (n + 1) // 2
    key = np.uint64(key)  # a Python int would be typed int64, and int64 arithmetic shifts and wraps differently
    base = counter(np.uint64(step), np.uint64(inst), np.uint64(n_inst), np.uint64(first), np.uint64(batch),
                   np.uint64(0), np.uint64(n_pairs))  # the number of (sample j, pair q) is base + n_pairs j + q
    # _bits(key, c) mixes key + (c + 1) GOLDEN. Along the samples c grows by n_pairs, so the mixer's input grows
    # by n_pairs GOLDEN (wrapping, as uint64 does): one addition per draw instead of two multiplications.
    advance = np.uint64(n_pairs) * np.uint64(_GOLDEN)
    w = u.view(np.uint64)  # each draw's 32-bit integer k goes in as the float 2**52 + k; unit() reads it
    for q in range(n_pairs):  # every draw first, one hash per pair of features
        z_in = key + (base + np.uint64(q) + np.uint64(1)) * np.uint64(_GOLDEN)
        if 2 * q + 1 < n:
            for j in range(count):
                z = mix(z_in)
                z_in += advance
                w[2 * q, j] = (z >> np.uint64(32)) | np.uint64(_EXP52)
                w[2 * q + 1, j] = (z & np.uint64(_LOW32)) | np.uint64(_EXP52)
        else:  # an odd last feature takes the high half of its pair's bits
            for j in range(count):
                w[2 * q, j] = (mix(z_in) >> np.uint64(32)) | np.uint64(_EXP52)
                z_in += advance
    for f in range(n):
        k = kind[f]
        if k == INDEPENDENT or k == CORR_FIRST:
            p = prob[f]
            inv = 1.0 / p if p > 0 else 0.0
            for j in range(count):
                a = unit(u[f, j])
                x[f, j] = min(a * inv, BELOW_ONE) if a < p else 0.0
        elif k == CORR_SECOND:  # present with the first member; its own draw is its value
            p = prob[f - 1]
            for j in range(count):
                x[f, j] = unit(u[f, j]) if unit(u[f - 1, j]) < p else 0.0
        else:  # anticorrelated: one of the pair fires with probability 2 p; the second member's draw picks which
            g = f - (k == ANTI_SECOND)
            p2 = 2.0 * prob[g]
            inv = 1.0 / p2 if p2 > 0 else 0.0
            first_member = k == ANTI_FIRST
            for j in range(count):
                a = unit(u[g, j])
                on = a < p2 and (unit(u[g + 1, j]) < 0.5) == first_member
                x[f, j] = min(a * inv, BELOW_ONE) if on else 0.0


sample_tile = njit(cache=True)(_sample_tile)


def _reciprocal(p):
    """1 / p where p > 0, else 0 (never used: u < 0 never holds), as the kernel computes it."""
    return np.divide(1.0, p, out=np.zeros(np.shape(p)), where=p > 0)


def sample_batch_numpy(key, step, n_inst, batch, prob, kind):
    """Twin of the kernel's sampling: the batch of `step` for every instance, x [inst, batch, feats].
    prob [inst, feats] float64; kind [feats] int (INDEPENDENT, CORR_FIRST, ...)."""
    n = prob.shape[1]
    n_pairs = (n + 1) // 2
    i = np.arange(n_inst, dtype=np.uint64)[:, None, None]
    b = np.arange(batch, dtype=np.uint64)[None, :, None]
    q = np.arange(n_pairs, dtype=np.uint64)[None, None, :]
    s, ni, bt, nq = np.uint64(step), np.uint64(n_inst), np.uint64(batch), np.uint64(n_pairs)
    with np.errstate(over="ignore"):
        u = uniforms_numpy(key, _counter(s, i, ni, b, bt, q, nq), n)  # [inst, batch, feats]
    p = prob[:, None, :]
    present = u < p  # independent features, and the shared draw of correlated pairs
    value = np.minimum(u * _reciprocal(p), BELOW_ONE)  # uniform in [0, 1) where present
    first_corr = np.flatnonzero(kind == CORR_FIRST)  # the second member copies the first's presence
    present[..., first_corr + 1] = present[..., first_corr]
    value[..., first_corr + 1] = u[..., first_corr + 1]  # and takes its own draw as its value
    first_anti = np.flatnonzero(kind == ANTI_FIRST)
    p2 = 2.0 * p[..., first_anti]
    fires = u[..., first_anti] < p2
    pick_first = u[..., first_anti + 1] < 0.5
    present[..., first_anti] = fires & pick_first
    present[..., first_anti + 1] = fires & ~pick_first
    value[..., first_anti] = value[..., first_anti + 1] = np.minimum(u[..., first_anti] * _reciprocal(p2), BELOW_ONE)
    return np.where(present, value, 0.0)


TILE = 64  # samples per tile: a tile's arrays (feats x TILE doubles) stay in the L1 cache


def _combine(out, coef, src, bias, nt):
    """out[:nt] = bias + sum_c coef[c] src[c, :nt]: one row of a tiny matrix product, along the samples.

    Each pass over the row loads and stores it once; with one product per pass the loop is bound by those
    loads and stores, not by arithmetic. So the terms come four per pass, and the first pass, which sets
    the row, takes the first term past the last multiple of four (any others come one per pass at the end),
    or the first four when the number of terms is a multiple of four (`python -m tinymono bench toy`: the
    toy step 1.3x faster than one term per pass)."""
    n = coef.shape[0]
    fours = n - n % 4
    first = 0
    if fours == n:  # nothing left over: the first four terms set the row
        w0, w1, w2, w3 = coef[0], coef[1], coef[2], coef[3]
        for j in range(nt):
            out[j] = bias + ((w0 * src[0, j] + w1 * src[1, j]) + (w2 * src[2, j] + w3 * src[3, j]))
        first = 4
    else:
        w = coef[fours]
        for j in range(nt):
            out[j] = bias + w * src[fours, j]
    for c in range(first, fours, 4):
        w0, w1, w2, w3 = coef[c], coef[c + 1], coef[c + 2], coef[c + 3]
        for j in range(nt):
            out[j] += (w0 * src[c, j] + w1 * src[c + 1, j]) + (w2 * src[c + 2, j] + w3 * src[c + 3, j])
    for c in range(fours + 1, n):
        w = coef[c]
        for j in range(nt):
            out[j] += w * src[c, j]


# inline="always": numba pastes it into instance_steps, where LLVM sees the rows' arrays (as a call of
# its own, the step ran at 60% of the speed); fastmath as instance_steps' (below).
combine = njit(cache=True, inline="always", fastmath={"reassoc", "contract", "nsz", "arcp"})(_combine)


def _instance_steps(W, b, mW, vW, mb, vb, prob, imp, kind, key, inst, n_inst, start_step, lrs, batch,
                    beta1, beta2, eps, relu):
    """Train one instance for len(lrs) steps in place; returns the mean loss of the last step.

    W [hidden, feats], b [feats]; mW, vW, mb, vb their Adam moments; prob, imp [feats]; lrs [steps].
    Per sample: h = W x; out = ReLU(W^T h + b); loss = sum_f imp_f (x_f - out_f)^2; averaged over the
    batch. The gradient of W has two terms because W is used twice (encoder and decoder).

    The batch goes through in tiles of TILE samples, every array feature-major ([feats, tile]): each
    innermost loop then runs along the samples of a tile, the same operation on contiguous numbers, which
    the compiler turns into SIMD instructions (a loop over 5 or 20 features per sample would not)."""
    H, F = W.shape
    x = np.empty((F, TILE))
    u = np.empty((F, TILE))
    h = np.empty((H, TILE))
    dpre = np.empty((F, TILE))  # first pre = W^T h + b, then overwritten by d loss / d pre
    dh = np.empty((H, TILE))
    dW = np.empty((H, F))
    db = np.empty(F)
    fours = F - F % 4
    loss = 0.0
    for s in range(lrs.shape[0]):
        step = start_step + s
        dW[:] = 0.0
        db[:] = 0.0
        loss = 0.0
        for first in range(0, batch, TILE):
            nt = min(TILE, batch - first)  # loops run to nt over whole (contiguous) rows: slices would not vectorise
            sample_tile(key, step, inst, n_inst, first, nt, batch, prob, kind, u, x)
            for k in range(H):  # h = W x
                combine(h[k], W[k], x, 0.0, nt)
            for f in range(F):  # pre = W^T h + b; out = act(pre); dpre = d (batch-mean loss) / d pre
                combine(dpre[f], W[:, f], h, b[f], nt)
                scale = 2.0 * imp[f] / batch
                lf = 0.0
                gf = 0.0
                # Two loops, neither testing the loop-invariant `relu`: with `on = pre > 0 or not relu` in one
                # loop the whole toy step took 1.12x as long (docs/experiments.md, "The toy kernel's loss loop
                # split in two")
                if relu:
                    for j in range(nt):
                        pre = dpre[f, j]
                        on = pre > 0.0
                        err = (pre if on else 0.0) - x[f, j]
                        lf += err * err
                        g = scale * err if on else 0.0
                        gf += g
                        dpre[f, j] = g
                else:
                    for j in range(nt):
                        err = dpre[f, j] - x[f, j]
                        lf += err * err
                        g = scale * err
                        gf += g
                        dpre[f, j] = g
                loss += imp[f] * lf
                db[f] += gf
            for k in range(H):  # dh = W dpre (through the decoder use of W)
                combine(dh[k], W[k], dpre, 0.0, nt)
            for k in range(H):  # both uses of W: dW += h dpre^T (decoder) + dh x^T (encoder), four features at once
                for f in range(0, fours, 4):
                    a0 = a1 = a2 = a3 = 0.0
                    for j in range(nt):
                        hk, gk = h[k, j], dh[k, j]
                        a0 += hk * dpre[f, j] + gk * x[f, j]
                        a1 += hk * dpre[f + 1, j] + gk * x[f + 1, j]
                        a2 += hk * dpre[f + 2, j] + gk * x[f + 2, j]
                        a3 += hk * dpre[f + 3, j] + gk * x[f + 3, j]
                    dW[k, f] += a0
                    dW[k, f + 1] += a1
                    dW[k, f + 2] += a2
                    dW[k, f + 3] += a3
                for f in range(fours, F):
                    acc = 0.0
                    for j in range(nt):
                        acc += h[k, j] * dpre[f, j] + dh[k, j] * x[f, j]
                    dW[k, f] += acc
        t = step + 1  # Adam's step count, shared by all instances
        c1 = 1.0 - beta1**t
        c2 = 1.0 - beta2**t
        lr = lrs[s]
        for k in range(H):
            for f in range(F):
                g = dW[k, f]
                mW[k, f] = beta1 * mW[k, f] + (1.0 - beta1) * g
                vW[k, f] = beta2 * vW[k, f] + (1.0 - beta2) * g * g
                W[k, f] -= lr / c1 * mW[k, f] / (math.sqrt(vW[k, f] / c2) + eps)
        for f in range(F):
            g = db[f]
            mb[f] = beta1 * mb[f] + (1.0 - beta1) * g
            vb[f] = beta2 * vb[f] + (1.0 - beta2) * g * g
            b[f] -= lr / c1 * mb[f] / (math.sqrt(vb[f] / c2) + eps)
        loss /= batch
    return loss


# cache=True: this kernel is not parallel, so numba can cache it on disk and later processes skip the
# compile. fastmath, restricted to reassociation (and fused multiply-add, no signed zeros, reciprocals):
# it lets the dot products over features vectorise. nnan/ninf are left out, so NaN and inf still
# propagate to the loss, where the training loop's non-finite guard looks for them.
instance_steps = njit(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})(_instance_steps)


def _train_range(W, b, mW, vW, mb, vb, prob, imp, kind, key, start_step, lrs, batch, beta1, beta2, eps,
                 relu, losses, start, stop):
    """Train instances [start, stop) for len(lrs) steps, in place; instances are independent, so each thread
    takes whole instances through the whole chunk. W [inst, hidden, feats]; losses [inst] receives each
    instance's loss at the last step."""
    n_inst = W.shape[0]
    for i in range(start, stop):
        losses[i] = instance_steps(W[i], b[i], mW[i], vW[i], mb[i], vb[i], prob[i], imp[i], kind, key, i,
                                   n_inst, start_step, lrs, batch, beta1, beta2, eps, relu)


# cache=True, nogil=True: run over ranges of instances by in_parallel's threads, so it is cached on disk
# like every serial kernel (a prange version, uncached, compiled for ~4 s in every new process).
train_range = njit(cache=True, nogil=True)(_train_range)


def train_chunk(W, b, mW, vW, mb, vb, prob, imp, kind, key, start_step, lrs, batch, beta1, beta2, eps, relu,
                losses):
    """Every instance through len(lrs) steps, in place: train_range over one range of instances per thread.
    An instance's numbers do not depend on which thread runs it (its random stream is keyed by its index)."""
    in_parallel(train_range, W.shape[0], W, b, mW, vW, mb, vb, prob, imp, kind, key, start_step, lrs, batch,
                beta1, beta2, eps, relu, losses)
