"""Sparse autoencoders after the paper: TopK, BatchTopK, JumpReLU, Gated and Anthropic's 2024 recipe.

The paper's SAE (sae.py) buys sparsity with an L1 penalty, which also shrinks every activation toward 0
and lets latents die; resampling brings some back. The variants here change the encoder or the penalty
(each with its paper):

    topk           f = TopK_k(ReLU((x - b_dec) W_enc + b_enc)): exactly k latents (at most) per input, no
                   penalty at all; AuxK: the k_aux dead latents that come closest to firing are asked to
                   reconstruct what the live ones missed, aux_coefficient (1/32) x that error (Gao et al.)
    batchtopk      the same, but the B k largest activations of the whole batch: an input may use more or
                   fewer than k; at inference a fixed threshold, an average of the smallest kept activation
    jumprelu       pi = x W_enc + b_enc, f = pi H(pi - theta), a learned threshold theta per latent, and an
                   L0 penalty lambda sum_j H(pi_j - theta_j): the step function H has no useful derivative,
                   so theta learns from straight-through pseudo-derivatives with a rectangle kernel of width
                   `bandwidth` (Rajamanoharan et al.)
    gated          which latents fire (a gate, trained by an L1 penalty and by reconstructing through a
                   frozen copy of the decoder) is decided apart from how strongly (a magnitude path sharing
                   the gate's matrix up to a per-latent scale exp(r_mag))
    anthropic2024  the paper's ReLU without b_dec subtracted first, L1 weighted by each decoder row's norm
                   instead of a unit-norm constraint, inputs scaled to mean squared norm d_in, no
                   resampling; trained as published, the L1 coefficient warmed up over the first 5% of
                   steps and the learning rate decayed to 0 over the last 20% (training settings, not part
                   of the variant: RECIPES["anthropic2024"], which pipeline.variant_options applies; a bare
                   SAEConfig gets neither). The recipe's clipping of the gradient norm at 1 is not
                   implemented here.

Each variant is a `Variant` in sae.ARCHITECTURES (this module registers them): init, forward, backward
and a training step. The pieces are forward/backward pairs as in layers.py and sae.py, verified by
central differences in float64 (tests/test_sae_variants.py); the decoder, the reconstruction loss and the
L1 penalty are sae.py's. With cfg.backend "numba" each step runs the encoder matmul in NumPy and
everything else over the active entries only (kernels/sae.py): TopK and BatchTopK are sparse by
construction; JumpReLU, Gated and the 2024 recipe fall back to the dense step while more than
cfg.sparse_below of their latents fire.

Params follow SAELens: W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]; JumpReLU adds
log_threshold [d_sae] (theta = exp(log_threshold) stays positive); Gated names its gate bias b_gate and
adds r_mag and b_mag [d_sae]. Two entries are not trained by gradient ("buffers"): BatchTopK's inference
`threshold` (0-d) and the 2024 recipe's `input_scale` (one number, shape [1] once recipe2024_init has cast it).

Axis vocabulary: B batch, d_in input width, d_sae latents.

What this implementation chose where the sources are silent: every reconstruction term is the house's
mean over B and d_in (sae.py), so AuxK is 1/32 of the mean squared error of the residual's
reconstruction; a latent is dead for AuxK as for resampling (no fire in the last dead_window of the run);
BatchTopK's threshold starts at the first batch's smallest kept activation (a debiased average); top-k
ties are broken toward the lower latent index (BatchTopK drops every value tied at its batch cutoff);
JumpReLU's threshold starts at init_threshold (1e-3) and its matrices as Gated's and TopK's do,
W_dec = W_enc^T with unit rows; the 2024 recipe's decoder rows
start at norm 0.1, W_enc = W_dec^T. Only the paper's SAE is resampled (sae.SAEConfig.resample_steps):
JumpReLU and Gated have nothing here that revives a dead latent (Gated's paper resampled).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from tinymono import sae as S
from tinymono.kernels import sae as K
from tinymono.layers import relu_backward, relu_forward

# ----------------------------------------------------------------------------------------------------
# pieces: forward/backward pairs


class AffineCache(NamedTuple):
    x_in: np.ndarray  # [B, d_in] what was multiplied by W_enc (x - b_dec, or x), for dW_enc
    W_enc: np.ndarray  # [d_in, d_sae], for b_dec's gradient through x - b_dec
    centred: bool  # was b_dec subtracted?


def affine_forward(x, W_enc, b_enc, b_dec=None):
    """x [B, d_in] -> pre [B, d_sae] = (x - b_dec) @ W_enc + b_enc (b_dec None: x @ W_enc + b_enc)."""
    x_in = x if b_dec is None else x - b_dec  # [B, d_in]
    return x_in @ W_enc + b_enc, AffineCache(x_in, W_enc, b_dec is not None)


def affine_backward(dpre, cache):
    """dpre [B, d_sae] -> (None, dW_enc, db_enc, db_dec or None). x is data: no gradient."""
    x_in, W_enc, centred = cache
    dW_enc = x_in.T @ dpre  # [d_in, d_sae]
    db_enc = dpre.sum(axis=0)  # [d_sae]
    return None, dW_enc, db_enc, (-(W_enc @ db_enc) if centred else None)  # x_in = x - b_dec: -sum_b dx_in


class MaskCache(NamedTuple):
    keep: np.ndarray  # [B, d_sae] bool: the entries that passed; the gradient flows through these only


def topk_forward(pre, k):
    """pre [B, d_sae] -> f [B, d_sae]: in each row the k largest entries, kept where positive (the ReLU),
    every other entry 0. Ties go to the lower latent index."""
    order = np.argsort(-pre, axis=1, kind="stable")[:, :k]  # [B, k]
    keep = np.zeros(pre.shape, dtype=bool)
    np.put_along_axis(keep, order, True, axis=1)
    keep &= pre > 0
    return np.where(keep, pre, 0), MaskCache(keep)


def mask_backward(df, cache):
    """df [B, d_sae] -> (dpre,): f = pre where kept, 0 elsewhere (the choice itself has no gradient)."""
    return (np.where(cache.keep, df, 0),)


def batch_cutoff(pre, n):
    """The smallest value c >= 0 such that at most n entries of pre exceed it: 0 when at most n are
    positive, else the (n + 1)-th largest entry (so exactly n exceed it unless values tie)."""
    flat = pre.reshape(-1)
    if n >= flat.size:
        return pre.dtype.type(0)
    return max(np.partition(flat, flat.size - n - 1)[flat.size - n - 1], pre.dtype.type(0))


def batchtopk_forward(pre, k):
    """pre [B, d_sae] -> f [B, d_sae]: the B k largest positive entries of the whole batch; all others 0."""
    keep = pre > batch_cutoff(pre, k * pre.shape[0])
    return np.where(keep, pre, 0), MaskCache(keep)


def threshold_forward(pre, threshold):
    """BatchTopK at inference: f = pre where pre > max(threshold, 0), else 0 [B, d_sae] (backward:
    mask_backward)."""
    keep = pre > max(threshold, 0)
    return np.where(keep, pre, 0), MaskCache(keep)


def rectangle(u):
    """The kernel K(u) = 1[|u| < 1/2] of JumpReLU's pseudo-derivatives."""
    return (np.abs(u) < 0.5).astype(np.float64)


class JumpCache(NamedTuple):
    pi: np.ndarray  # [B, d_sae] pre-activations
    theta: np.ndarray  # [d_sae] thresholds
    bandwidth: float


def jumprelu_forward(pi, theta, bandwidth):
    """pi [B, d_sae], theta [d_sae] -> f = pi H(pi - theta) [B, d_sae]."""
    return np.where(pi > theta, pi, 0), JumpCache(pi, theta, bandwidth)


def jumprelu_backward(df, cache):
    """df [B, d_sae] -> (dpi [B, d_sae], dtheta [d_sae], None).

    d f / d pi = H(pi - theta), exact away from the jump. f does not change with theta except by jumping,
    so its true derivative is 0 almost everywhere; the pseudo-derivative d f / d theta =
    -(theta / eps) K((pi - theta) / eps) counts the pre-activations within eps / 2 of the threshold, each
    worth the height theta of the jump it would make."""
    pi, theta, eps = cache
    near = rectangle((pi - theta) / eps)  # [B, d_sae]
    dpi = np.where(pi > theta, df, 0)
    dtheta = -(theta / eps) * np.sum(df * near, axis=0)  # [d_sae]
    return dpi, dtheta, None


def step_forward(pi, theta, bandwidth):
    """pi [B, d_sae], theta [d_sae] -> H(pi - theta) [B, d_sae] as 0/1 floats (JumpReLU's L0)."""
    return (pi > theta).astype(pi.dtype), JumpCache(pi, theta, bandwidth)


def step_backward(dH, cache):
    """dH [B, d_sae] -> (None, dtheta [d_sae], None): the step passes nothing to pi (its derivative is 0
    wherever it exists); d H / d theta = -(1 / eps) K((pi - theta) / eps), the pseudo-derivative."""
    pi, theta, eps = cache
    return None, -np.sum(dH * rectangle((pi - theta) / eps), axis=0) / eps, None


class WeightedL1Cache(NamedTuple):
    f: np.ndarray  # [B, d_sae]
    W_dec: np.ndarray  # [d_sae, d_in]
    norms: np.ndarray  # [d_sae] ||W_dec[j]||
    l1_coefficient: float


def weighted_l1_forward(f, W_dec, l1_coefficient):
    """l1_coefficient * mean over B of sum_j |f_j| ||W_dec[j]|| -> a float (the 2024 recipe's penalty:
    shrinking f while growing W_dec[j] no longer dodges it, so no unit-norm constraint is needed)."""
    norms = np.linalg.norm(W_dec, axis=1)  # [d_sae]
    loss = l1_coefficient * float(np.abs(f).sum(axis=0) @ norms) / f.shape[0]
    return loss, WeightedL1Cache(f, W_dec, norms, l1_coefficient)


def weighted_l1_backward(dloss, cache):
    """dloss (scalar) -> (df [B, d_sae], dW_dec [d_sae, d_in], None)."""
    f, W_dec, norms, c = cache
    scale = dloss * c / f.shape[0]
    df = scale * np.sign(f) * norms  # [B, d_sae]
    dW_dec = (scale * np.abs(f).sum(axis=0) / norms)[:, None] * W_dec  # d ||w|| / d w = w / ||w||
    return df, dW_dec, None


class AuxKCache(NamedTuple):
    topk: MaskCache  # which dead latents were kept
    z: np.ndarray  # [B, d_sae] their activations (0 elsewhere)
    W_dec: np.ndarray  # [d_sae, d_in]
    mse: S.MSECache
    coefficient: float


def auxk_forward(pre, dead, e, W_dec, k_aux, coefficient):
    """TopK's auxiliary loss: coefficient * mean over B and d_in of (e - z_aux @ W_dec)^2, where
    z_aux [B, d_sae] keeps in each row the k_aux largest pre-activations among the `dead` [d_sae] latents,
    where positive (the same ReLU as the main path: without it, measured in lesson 03's world, dead
    latents learned to reconstruct the residual with negative activations and TopK's MMCS fell from 0.97
    to 0.76), and e = x - x_hat [B, d_in] is the main reconstruction's residual, taken as data (no
    gradient). No b_dec is added to z_aux @ W_dec: x_hat already holds it, so e does not."""
    masked = np.where(dead, pre, -np.inf)  # [B, d_sae] only dead latents may be chosen
    z, topk_cache = topk_forward(masked, min(k_aux, pre.shape[1]))
    e_hat = z @ W_dec  # [B, d_in]
    loss, mse_cache = S.mse_forward(e_hat, e)
    return coefficient * loss, AuxKCache(topk_cache, z, W_dec, mse_cache, coefficient)


def auxk_backward(dloss, cache):
    """dloss (scalar) -> (dpre [B, d_sae], None, None, dW_dec [d_sae, d_in], None, None)."""
    topk_cache, z, W_dec, mse_cache, c = cache
    de_hat, _ = S.mse_backward(dloss * c, mse_cache)  # [B, d_in]; e's gradient is dropped (stop-gradient)
    dz = de_hat @ W_dec.T  # [B, d_sae], inverts e_hat = z @ W_dec
    dW_dec = z.T @ de_hat  # [d_sae, d_in]
    (dpre,) = mask_backward(dz, topk_cache)
    return dpre, None, None, dW_dec, None, None


# ----------------------------------------------------------------------------------------------------
# the models: init, forward (inference when `train` is None) and backward, one trio per variant


class Train(NamedTuple):
    """What a training step knows beyond the batch: the penalty coefficient of this step (warm-up), the
    latents dead so far ([d_sae] bool, for AuxK) and TopK's k of this step (None: cfg.k; see k_anneal)."""

    l1_coefficient: float
    dead: np.ndarray
    k: int | None = None


def _output(x_hat, f, mse, penalty):
    return S.SAEOutput(x_hat, f, mse + penalty, mse, penalty, float(np.count_nonzero(f) / f.shape[0]))


def _tied_init(cfg, rng, sample, decoder_norm=1.0):
    """W_dec rows random directions of length `decoder_norm`, W_enc = W_dec^T, b_enc 0, b_dec at the
    geometric median of `sample` (0 when None)."""
    W_dec = S.kaiming_uniform(rng, (cfg.d_sae, cfg.d_in), fan_in=cfg.d_in)
    W_dec *= decoder_norm / np.linalg.norm(W_dec, axis=1, keepdims=True)
    b_dec = np.zeros(cfg.d_in) if sample is None else S.geometric_median(sample)
    return {"W_enc": W_dec.T.copy(), "b_enc": np.zeros(cfg.d_sae), "W_dec": W_dec, "b_dec": b_dec}


def _cast(params, cfg):
    return {k: np.ascontiguousarray(v, dtype=cfg.dtype) for k, v in params.items()}


# TopK and BatchTopK ---------------------------------------------------------------------------------


class TopKCache(NamedTuple):
    enc: AffineCache
    sel: MaskCache
    dec: S.DecodeCache
    mse: S.MSECache
    aux: AuxKCache | None


def topk_init(cfg, rng, sample=None):
    return _cast(_tied_init(cfg, rng, sample), cfg)


def batchtopk_init(cfg, rng, sample=None):
    return {**topk_init(cfg, rng, sample), "threshold": np.zeros((), dtype=cfg.dtype)}


def _topk_model_forward(params, x, cfg, train, select):
    pre, enc_cache = affine_forward(x, params["W_enc"], params["b_enc"], params["b_dec"])  # [B, d_sae]
    f, sel_cache = select(pre)
    x_hat, dec_cache = S.decode_forward(f, params["W_dec"], params["b_dec"])  # [B, d_in]
    mse, mse_cache = S.mse_forward(x_hat, x)
    aux, aux_cache = 0.0, None
    if train is not None and np.any(train.dead):
        aux, aux_cache = auxk_forward(pre, train.dead, x - x_hat, params["W_dec"], cfg.aux_k, cfg.aux_coefficient)
    return _output(x_hat, f, mse, aux), TopKCache(enc_cache, sel_cache, dec_cache, mse_cache, aux_cache)


def _k(cfg, train):
    return cfg.k if train is None or train.k is None else train.k


def topk_forward_model(params, x, cfg, train=None):
    """x [B, d_in] -> (SAEOutput, cache). The penalty term is AuxK's (training, with dead latents) or 0."""
    return _topk_model_forward(params, x, cfg, train, lambda pre: topk_forward(pre, _k(cfg, train)))


def topk_encode(params, x, cfg):
    """TopK's latents alone, f [B, d_sae], with the numba selection (kernels/sae.py: topk_csr, the same
    choice as topk_forward, ties included) instead of a sort of every row."""
    pre = (x - params["b_dec"]) @ params["W_enc"]  # [B, d_sae], bias added by the kernel
    indptr, idx, val = K.topk_csr(pre, params["b_enc"], cfg.k, np.ones(cfg.d_sae, dtype=bool))
    return K.csr_to_dense(indptr, idx, val, cfg.d_sae)


def batchtopk_forward_model(params, x, cfg, train=None):
    """Training: the batch's B k largest activations; inference (train None): the learned threshold."""
    if train is None:
        select = lambda pre: threshold_forward(pre, params["threshold"])  # noqa: E731
    else:
        select = lambda pre: batchtopk_forward(pre, _k(cfg, train))  # noqa: E731
    return _topk_model_forward(params, x, cfg, train, select)


def topk_backward_model(params, cache, cfg):
    """The gradients of MSE (+ AuxK): {W_enc, b_enc, W_dec, b_dec}."""
    dx_hat, _ = S.mse_backward(1.0, cache.mse)  # [B, d_in]
    df, dW_dec, db_dec_out = S.decode_backward(dx_hat, cache.dec)
    (dpre,) = mask_backward(df, cache.sel)  # [B, d_sae]
    if cache.aux is not None:  # pre and W_dec feed AuxK too: their gradients add
        dpre_aux, _, _, dW_dec_aux, _, _ = auxk_backward(1.0, cache.aux)
        dpre = dpre + dpre_aux
        dW_dec = dW_dec + dW_dec_aux
    _, dW_enc, db_enc, db_dec_in = affine_backward(dpre, cache.enc)
    return {"W_enc": dW_enc, "b_enc": db_enc, "W_dec": dW_dec, "b_dec": db_dec_out + db_dec_in}


# JumpReLU ----------------------------------------------------------------------------------------------


class JumpReLUCache(NamedTuple):
    enc: AffineCache
    jump: JumpCache
    step: JumpCache
    theta: np.ndarray  # [d_sae] exp(log_threshold)
    dec: S.DecodeCache
    mse: S.MSECache
    l0_coefficient: float


def jumprelu_init(cfg, rng, sample=None):
    params = _tied_init(cfg, rng, sample)
    params["log_threshold"] = np.full(cfg.d_sae, np.log(cfg.init_threshold))
    return _cast(params, cfg)


def jumprelu_forward_model(params, x, cfg, train=None):
    """x [B, d_in] -> (SAEOutput, cache); the penalty is lambda * mean over B of the number of active
    latents (lambda = cfg.l1_coefficient, or the step's warmed-up value)."""
    lam = cfg.l1_coefficient if train is None else train.l1_coefficient
    pi, enc_cache = affine_forward(x, params["W_enc"], params["b_enc"])  # [B, d_sae]: no b_dec subtracted
    theta = np.exp(params["log_threshold"])  # [d_sae]
    f, jump_cache = jumprelu_forward(pi, theta, cfg.bandwidth)
    H, step_cache = step_forward(pi, theta, cfg.bandwidth)
    x_hat, dec_cache = S.decode_forward(f, params["W_dec"], params["b_dec"])
    mse, mse_cache = S.mse_forward(x_hat, x)
    l0_term = lam * float(H.sum()) / x.shape[0]
    return _output(x_hat, f, mse, l0_term), JumpReLUCache(enc_cache, jump_cache, step_cache, theta, dec_cache,
                                                         mse_cache, lam)


def jumprelu_backward_model(params, cache, cfg):
    """{W_enc, b_enc, W_dec, b_dec, log_threshold}: exact gradients for the weights, pseudo-derivatives
    for the threshold (the only parameter the L0 term reaches)."""
    dx_hat, _ = S.mse_backward(1.0, cache.mse)
    df, dW_dec, db_dec = S.decode_backward(dx_hat, cache.dec)
    dpi, dtheta_f, _ = jumprelu_backward(df, cache.jump)
    dH = np.full(cache.step.pi.shape, cache.l0_coefficient / dpi.shape[0])  # d (lam mean_B sum H) / d H
    _, dtheta_H, _ = step_backward(dH, cache.step)
    dlog_threshold = (dtheta_f + dtheta_H) * cache.theta  # theta = exp(log_threshold)
    _, dW_enc, db_enc, _ = affine_backward(dpi, cache.enc)
    return {"W_enc": dW_enc, "b_enc": db_enc, "W_dec": dW_dec, "b_dec": db_dec, "log_threshold": dlog_threshold}


# Gated -------------------------------------------------------------------------------------------------


class GatedCache(NamedTuple):
    enc: AffineCache  # u = (x - b_dec) @ W_enc, shared by both paths
    u: np.ndarray  # [B, d_sae]
    scale: np.ndarray  # [d_sae] exp(r_mag)
    pi_gate: np.ndarray  # [B, d_sae]
    mag: object  # ReluCache of ReLU(pi_mag)
    f: np.ndarray  # [B, d_sae]
    dec: S.DecodeCache
    mse: S.MSECache
    gate: object  # ReluCache of ReLU(pi_gate)
    l1: S.L1Cache
    aux_dec: S.DecodeCache  # the frozen decoder's cache: its gradient goes to the gate only
    aux_mse: S.MSECache


def gated_init(cfg, rng, sample=None):
    p = _tied_init(cfg, rng, sample)
    zeros = np.zeros(cfg.d_sae)
    return _cast({"W_enc": p["W_enc"], "b_gate": zeros, "r_mag": zeros, "b_mag": zeros, "W_dec": p["W_dec"],
                  "b_dec": p["b_dec"]}, cfg)


def _gated_latents(params, x):
    """f [B, d_sae] and what the backward needs of its making: (affine cache, u, exp(r_mag), pi_gate, the
    magnitude's ReLU cache)."""
    u, enc_cache = affine_forward(x, params["W_enc"], 0.0, params["b_dec"])  # [B, d_sae]
    scale = np.exp(params["r_mag"])  # [d_sae]: W_mag = W_enc * exp(r_mag), column by column
    pi_gate = u + params["b_gate"]
    mag, mag_cache = relu_forward(u * scale + params["b_mag"])  # ReLU(pi_mag)
    f = np.where(pi_gate > 0, mag, 0)  # the gate decides which latents fire, the magnitude how strongly
    return f, (enc_cache, u, scale, pi_gate, mag_cache)


def gated_forward_model(params, x, cfg, train=None):
    """x [B, d_in] -> (SAEOutput, cache). Penalty: lambda ||ReLU(pi_gate)||_1 (mean over B) plus the
    reconstruction of x from ReLU(pi_gate) through a frozen copy of W_dec and b_dec."""
    lam = cfg.l1_coefficient if train is None else train.l1_coefficient
    f, (enc_cache, u, scale, pi_gate, mag_cache) = _gated_latents(params, x)
    x_hat, dec_cache = S.decode_forward(f, params["W_dec"], params["b_dec"])
    mse, mse_cache = S.mse_forward(x_hat, x)
    gate, gate_cache = relu_forward(pi_gate)
    l1, l1_cache = S.l1_forward(gate, lam)
    x_aux, aux_dec = S.decode_forward(gate, params["W_dec"], params["b_dec"])  # frozen: see backward
    aux, aux_mse = S.mse_forward(x_aux, x)
    return _output(x_hat, f, mse, l1 + aux), GatedCache(enc_cache, u, scale, pi_gate, mag_cache, f, dec_cache,
                                                        mse_cache, gate_cache, l1_cache, aux_dec, aux_mse)


def gated_backward_model(params, cache, cfg):
    """{W_enc, b_gate, r_mag, b_mag, W_dec, b_dec}. The gate 1[pi_gate > 0] passes no gradient, so the
    magnitude path learns from the reconstruction and the gate path from the L1 and auxiliary terms."""
    dx_hat, _ = S.mse_backward(1.0, cache.mse)
    df, dW_dec, db_dec_out = S.decode_backward(dx_hat, cache.dec)
    (dmag,) = relu_backward(np.where(cache.pi_gate > 0, df, 0), cache.mag)  # d pi_mag [B, d_sae]
    dx_aux, _ = S.mse_backward(1.0, cache.aux_mse)
    dgate_aux, _, _ = S.decode_backward(dx_aux, cache.aux_dec)  # its dW_dec, db_dec dropped: frozen copy
    dgate_l1, _ = S.l1_backward(1.0, cache.l1)
    (dpi_gate,) = relu_backward(dgate_aux + dgate_l1, cache.gate)  # [B, d_sae]
    du = dpi_gate + dmag * cache.scale  # u feeds both paths: pi_gate = u + b_gate, pi_mag = u exp(r) + b_mag
    dr_mag = np.sum(dmag * cache.u, axis=0) * cache.scale  # d exp(r) / d r = exp(r)
    _, dW_enc, _, db_dec_in = affine_backward(du, cache.enc)
    return {"W_enc": dW_enc, "b_gate": dpi_gate.sum(axis=0), "r_mag": dr_mag, "b_mag": dmag.sum(axis=0),
            "W_dec": dW_dec, "b_dec": db_dec_out + db_dec_in}


# Anthropic's 2024 recipe -------------------------------------------------------------------------------


class RecipeCache(NamedTuple):
    enc: AffineCache
    relu: object
    dec: S.DecodeCache
    mse: S.MSECache
    l1: WeightedL1Cache


def recipe2024_init(cfg, rng, sample=None):
    """Decoder rows random directions of norm 0.1, W_enc = W_dec^T, biases 0, and the input scale that
    brings the sample's mean squared norm to d_in (1 without a sample)."""
    params = _tied_init(cfg, rng, None, decoder_norm=0.1)
    ms = 0.0 if sample is None else float(np.mean(np.sum(np.asarray(sample, np.float64) ** 2, axis=1)))
    params["input_scale"] = np.array(np.sqrt(cfg.d_in / ms) if ms > 0 else 1.0)
    return _cast(params, cfg)


def recipe2024_forward_model(params, x, cfg, train=None):
    """x [B, d_in] -> (SAEOutput, cache). The loss is computed on the scaled input s x (its mse field is
    in those units); the returned x_hat is back in x's units."""
    lam = cfg.l1_coefficient if train is None else train.l1_coefficient
    s = params["input_scale"]
    xs = x * s  # [B, d_in]
    pre, enc_cache = affine_forward(xs, params["W_enc"], params["b_enc"])
    f, relu_cache = relu_forward(pre)
    xs_hat, dec_cache = S.decode_forward(f, params["W_dec"], params["b_dec"])
    mse, mse_cache = S.mse_forward(xs_hat, xs)
    l1, l1_cache = weighted_l1_forward(f, params["W_dec"], lam)
    return _output(xs_hat / s, f, mse, l1), RecipeCache(enc_cache, relu_cache, dec_cache, mse_cache, l1_cache)


def recipe2024_backward_model(params, cache, cfg):
    """{W_enc, b_enc, W_dec, b_dec} (input_scale is fixed: no gradient)."""
    dxs_hat, _ = S.mse_backward(1.0, cache.mse)
    df, dW_dec, db_dec = S.decode_backward(dxs_hat, cache.dec)
    df_l1, dW_dec_l1, _ = weighted_l1_backward(1.0, cache.l1)
    (dpre,) = relu_backward(df + df_l1, cache.relu)  # f feeds the decoder and the penalty
    _, dW_enc, db_enc, _ = affine_backward(dpre, cache.enc)
    return {"W_enc": dW_enc, "b_enc": db_enc, "W_dec": dW_dec + dW_dec_l1, "b_dec": db_dec}  # W_dec: both uses


# ----------------------------------------------------------------------------------------------------
# training steps: -> ((loss, mse, penalty, l0), grads, fired [d_sae] bool)


def dense_step(variant, params, x, cfg, train, buf, step):
    """The reference step of any variant: its forward and backward over every latent."""
    out, cache = variant.forward(params, x, cfg, train)
    return (out.loss, out.mse, out.l1, out.l0), variant.backward(params, cache, cfg), np.any(out.f != 0, axis=0)


class TopKBuffers(S.Buffers):
    """sae.Buffers plus AuxK's: its residual, reconstruction, gradients and the weight gradients."""

    def __init__(self, cfg):
        super().__init__(cfg)
        dt, B = cfg.dtype, cfg.batch_size
        self.e, self.e_hat, self.de_hat = (np.empty((B, cfg.d_in), dt) for _ in range(3))
        self.sq_err_aux = np.empty(B, np.float64)
        self.aux_grads = {k: np.empty(s, dt) for k, s in S.param_shapes(cfg).items() if k != "threshold"}
        self.all_latents = np.ones(cfg.d_sae, dtype=bool)
        self.zeros_d_in = np.zeros(cfg.d_in, dt)


def _latent_pass(indptr, idx, val, x, b_dec, scale, W_dec, x_hat, dx_hat, sq_err, x_bar, grads):
    """Decode the CSR latents, the squared error against x and the weight gradients, over active entries
    only (kernels/sae.py). No L1 term: TopK's selection replaces it."""
    dval = np.empty_like(val)
    K.decode_rows(indptr, idx, val, W_dec, b_dec, x, scale, val.dtype.type(0), x_hat, dx_hat, dval, sq_err)
    colptr, rows, perm = K.csr_to_csc(indptr, idx, W_dec.shape[0])
    K.latent_grads(colptr, rows, perm, val, dval, x_bar, dx_hat, grads["W_enc"], grads["b_enc"], grads["W_dec"])
    return colptr


def batch_csr(pre, b_enc, k, buf):
    """BatchTopK's kept entries as CSR, from candidates: each row's 8k largest (topk_csr) hold the batch's
    B k largest, unless some row has all its 8k candidates above the cutoff (it may have more); then the
    kept entries are found over the whole dense batch. -> (indptr, idx, val, cutoff)."""
    B, d_sae = pre.shape
    m = min(d_sae, 8 * k)
    indptr, idx, val = K.topk_csr(pre, b_enc, m, buf.all_latents)
    cutoff = batch_cutoff(val, B * k)
    full = np.flatnonzero(np.diff(indptr) == m)  # rows with m candidates (when m < d_sae, maybe more)
    if m < d_sae and full.size and val[indptr[full][:, None] + np.arange(m)].min(axis=1).max() > cutoff:
        v = pre + b_enc  # [B, d_sae]
        cutoff = batch_cutoff(v, B * k)
        rows, cols = np.nonzero(v > cutoff)
        idx, val = cols.astype(np.int32), v[rows, cols]
    else:
        keep = val > cutoff
        rows, idx, val = K.entry_rows(indptr)[keep], idx[keep], val[keep]
    return K.pointers(np.bincount(rows, minlength=B)), idx, val, cutoff


def _sparse_topk_step(params, x, cfg, train, buf, select):
    """TopK or BatchTopK (selection by `select(pre) -> CSR`) with AuxK, over the kept entries only: the
    same loss terms and gradients as the dense forward/backward (tests/test_sae_variants.py)."""
    g, W_dec = buf.grads, params["W_dec"]
    np.subtract(x, params["b_dec"], out=buf.x_bar)  # [B, d_in]
    np.matmul(buf.x_bar, params["W_enc"], out=buf.pre)  # [B, d_sae]: the one dense matmul
    indptr, idx, val = select(buf.pre)
    scale = x.dtype.type(2.0 / x.size)  # d mse / d x_hat = scale (x_hat - x)
    colptr = _latent_pass(indptr, idx, val, x, params["b_dec"], scale, W_dec, buf.x_hat, buf.dx_hat, buf.sq_err,
                          buf.x_bar, g)
    mse, aux = float(buf.sq_err.sum() / x.size), 0.0
    if np.any(train.dead):
        np.subtract(x, buf.x_hat, out=buf.e)  # the residual, as data
        a_ptr, a_idx, a_val = K.topk_csr(buf.pre, params["b_enc"], min(cfg.aux_k, cfg.d_sae), train.dead)
        a_scale = x.dtype.type(2.0 * cfg.aux_coefficient / x.size)
        _latent_pass(a_ptr, a_idx, a_val, buf.e, buf.zeros_d_in, a_scale, W_dec, buf.e_hat, buf.de_hat,
                     buf.sq_err_aux, buf.x_bar, buf.aux_grads)  # zeros for b_dec: e already holds it
        for k in ("W_enc", "b_enc", "W_dec"):
            g[k] += buf.aux_grads[k]
        aux = cfg.aux_coefficient * float(buf.sq_err_aux.sum() / x.size)
    np.subtract(buf.dx_hat.sum(axis=0), params["W_enc"] @ g["b_enc"], out=g["b_dec"])  # both uses of b_dec
    grads = {k: g[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    return (mse + aux, mse, aux, len(val) / x.shape[0]), grads, np.diff(colptr) > 0


def topk_step(variant, params, x, cfg, train, buf, step):
    if buf is None:
        return dense_step(variant, params, x, cfg, train, buf, step)
    return _sparse_topk_step(params, x, cfg, train, buf,
                             lambda pre: K.topk_csr(pre, params["b_enc"], _k(cfg, train), buf.all_latents))


def batchtopk_step(variant, params, x, cfg, train, buf, step):
    """A BatchTopK step, then the inference threshold moves toward this batch's smallest kept activation:
    a running average with weight 1 - threshold_decay, debiased (the first step takes the value itself). A
    batch that kept nothing has no smallest kept activation, and leaves the threshold where it was."""
    if buf is None:
        out, cache = variant.forward(params, x, cfg, train)
        terms, grads, fired = (out.loss, out.mse, out.l1, out.l0), variant.backward(params, cache, cfg), out.f != 0
        smallest = out.f[fired].min() if fired.any() else None
        fired = fired.any(axis=0)
    else:
        kept = {}

        def select(pre):
            indptr, idx, val, _ = batch_csr(pre, params["b_enc"], _k(cfg, train), buf)
            kept["min"] = val.min() if len(val) else None
            return indptr, idx, val

        terms, grads, fired = _sparse_topk_step(params, x, cfg, train, buf, select)
        smallest = kept["min"]
    if smallest is not None:
        beta = cfg.threshold_decay
        w = (1 - beta) / (1 - beta ** (step + 1))
        params["threshold"] += w * (smallest - params["threshold"])
    return terms, grads, fired


def _per_latent(idx, weights, d_sae, out=None):
    """sum over the entries of each latent of `weights` [nnz] (None: count them) -> [d_sae]."""
    s = np.bincount(idx, weights=weights, minlength=d_sae)
    if out is None:
        return s
    out[...] = s
    return out


class PairBuffers(S.Buffers):
    """sae.Buffers plus a second reconstruction (Gated's auxiliary one) and a spare [d_sae]."""

    def __init__(self, cfg):
        super().__init__(cfg)
        dt, B = cfg.dtype, cfg.batch_size
        self.x_aux, self.dx_aux = (np.empty((B, cfg.d_in), dt) for _ in range(2))
        self.sq_err_aux = np.empty(B, np.float64)
        self.spare = np.empty(cfg.d_sae, dt)


def _too_dense(nnz, buf, cfg):
    return nnz > cfg.sparse_below * buf.pre.size


def recipe2024_step(variant, params, x, cfg, train, buf, step):
    """The 2024 recipe over the active latents only (kernels/sae.py, as the paper's sparse step), dense while
    more than cfg.sparse_below of the entries fire. The weighted L1 adds lambda ||W_dec[j]|| / B to each
    active entry's df and (lambda / B) sum_b f[b, j] W_dec[j] / ||W_dec[j]|| to dW_dec[j]."""
    if buf is None:
        return dense_step(variant, params, x, cfg, train, buf, step)
    W_dec, B, d_sae = params["W_dec"], x.shape[0], cfg.d_sae
    xs = np.multiply(x, params["input_scale"], out=buf.x_bar)  # [B, d_in] the scaled input (W_enc's input)
    np.matmul(xs, params["W_enc"], out=buf.pre)  # [B, d_sae]
    counts = K.active_counts(buf.pre, params["b_enc"])
    if _too_dense(counts.sum(), buf, cfg):
        return dense_step(variant, params, x, cfg, train, buf, step)
    indptr, idx, val = K.relu_csr(buf.pre, params["b_enc"], counts)
    lam, g = train.l1_coefficient, buf.grads
    norms = np.linalg.norm(W_dec, axis=1)  # [d_sae]
    dval = np.empty_like(val)
    scale = x.dtype.type(2.0 / x.size)
    K.decode_rows(indptr, idx, val, W_dec, params["b_dec"], xs, scale, x.dtype.type(0), buf.x_hat, buf.dx_hat, dval,
                  buf.sq_err)
    dval += (lam / B * norms).astype(val.dtype)[idx]  # the weighted L1's df where f > 0
    colptr, rows, perm = K.csr_to_csc(indptr, idx, d_sae)
    K.latent_grads(colptr, rows, perm, val, dval, xs, buf.dx_hat, g["W_enc"], g["b_enc"], g["W_dec"])
    f_sum = _per_latent(idx, val, d_sae)  # [d_sae] sum_b f[b, j]
    g["W_dec"] += (lam / B * f_sum / norms).astype(val.dtype)[:, None] * W_dec  # d ||w|| / d w = w / ||w||
    np.sum(buf.dx_hat, axis=0, out=g["b_dec"])  # b_dec is added after decoding only
    mse, l1 = float(buf.sq_err.sum() / x.size), float(lam * (f_sum @ norms) / B)
    grads = {k: g[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    return (mse + l1, mse, l1, len(val) / B), grads, np.diff(colptr) > 0


def gated_step(variant, params, x, cfg, train, buf, step):
    """Gated over the open gates only (pi_gate > 0: where f, the L1 term and the auxiliary reconstruction
    live), dense while more than cfg.sparse_below of the gates are open. The kernels decode twice: f through
    the decoder (df at every open gate), and ReLU(pi_gate) through the frozen copy (its df plus lambda / B)."""
    if buf is None:
        return dense_step(variant, params, x, cfg, train, buf, step)
    W_dec, b_dec, B, d_sae = params["W_dec"], params["b_dec"], x.shape[0], cfg.d_sae
    np.subtract(x, b_dec, out=buf.x_bar)
    u_all = np.matmul(buf.x_bar, params["W_enc"], out=buf.pre)  # [B, d_sae] u, shared by both paths
    counts = K.active_counts(u_all, params["b_gate"])
    if _too_dense(counts.sum(), buf, cfg):
        return dense_step(variant, params, x, cfg, train, buf, step)
    indptr, idx, gate = K.relu_csr(u_all, params["b_gate"], counts)  # ReLU(pi_gate) at the open gates
    u = u_all[K.entry_rows(indptr), idx]  # [nnz]
    scale = np.exp(params["r_mag"])  # [d_sae]
    f = np.maximum(u * scale[idx] + params["b_mag"][idx], 0)  # ReLU(pi_mag) where the gate is open
    lam, g, dt = train.l1_coefficient, buf.grads, x.dtype.type
    df, dgate = np.empty_like(f), np.empty_like(gate)
    K.decode_rows(indptr, idx, f, W_dec, b_dec, x, dt(2.0 / x.size), dt(0), buf.x_hat, buf.dx_hat, df, buf.sq_err)
    K.decode_rows(indptr, idx, gate, W_dec, b_dec, x, dt(2.0 / x.size), dt(lam / B), buf.x_aux, buf.dx_aux, dgate,
                  buf.sq_err_aux)  # the frozen copy: only dgate is used
    dmag = np.where(f > 0, df, 0)  # [nnz] d pi_mag
    du = dgate + dmag * scale[idx]
    colptr, rows, perm = K.csr_to_csc(indptr, idx, d_sae)
    K.latent_grads(colptr, rows, perm, f, du, buf.x_bar, buf.dx_hat, g["W_enc"], buf.spare, g["W_dec"])
    np.subtract(buf.dx_hat.sum(axis=0), params["W_enc"] @ buf.spare, out=g["b_dec"])  # buf.spare: sum_b du
    _per_latent(idx, dgate, d_sae, g["b_gate"])
    _per_latent(idx, dmag, d_sae, g["b_mag"])
    g["r_mag"][...] = _per_latent(idx, dmag * u, d_sae) * scale
    mse, aux = float(buf.sq_err.sum() / x.size), float(buf.sq_err_aux.sum() / x.size)
    penalty = lam * float(gate.sum(dtype=np.float64)) / B + aux
    fired = _per_latent(idx[f > 0], None, d_sae) > 0
    grads = {k: g[k] for k in ("W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec")}
    return (mse + penalty, mse, penalty, np.count_nonzero(f) / B), grads, fired


def jumprelu_step(variant, params, x, cfg, train, buf, step):
    """JumpReLU over the entries above theta - 3/4 bandwidth only (the active ones, pi > theta, and those
    within half a bandwidth below theta, which the threshold's pseudo-derivatives also read), dense while
    more than cfg.sparse_below of the entries are there. pi is recomputed at those entries exactly as the
    dense forward computes it, so the same entries pass the same tests."""
    if buf is None:
        return dense_step(variant, params, x, cfg, train, buf, step)
    W_dec, B, d_sae, eps = params["W_dec"], x.shape[0], cfg.d_sae, cfg.bandwidth
    np.matmul(x, params["W_enc"], out=buf.pre)  # [B, d_sae] pi - b_enc (no b_dec subtracted)
    theta = np.exp(params["log_threshold"])  # [d_sae]
    low = (params["b_enc"] - theta + 0.75 * eps).astype(x.dtype)  # a margin past the band's lower edge
    counts = K.active_counts(buf.pre, low)
    if _too_dense(counts.sum(), buf, cfg):
        return dense_step(variant, params, x, cfg, train, buf, step)
    cand_ptr, cidx, _ = K.relu_csr(buf.pre, low, counts)
    rows = K.entry_rows(cand_ptr)
    pi = buf.pre[rows, cidx] + params["b_enc"][cidx]  # [n_cand], as affine_forward computes it
    on = pi > theta[cidx]
    near = np.abs(pi - theta[cidx]) < eps / 2  # rectangle((pi - theta) / eps)
    indptr, idx, val = K.pointers(np.bincount(rows[on], minlength=B)), cidx[on], pi[on]
    lam, g = train.l1_coefficient, buf.grads
    dval = np.empty_like(val)
    K.decode_rows(indptr, idx, val, W_dec, params["b_dec"], x, x.dtype.type(2.0 / x.size), x.dtype.type(0),
                  buf.x_hat, buf.dx_hat, dval, buf.sq_err)
    colptr, crows, perm = K.csr_to_csc(indptr, idx, d_sae)
    K.latent_grads(colptr, crows, perm, val, dval, x, buf.dx_hat, g["W_enc"], g["b_enc"], g["W_dec"])
    np.sum(buf.dx_hat, axis=0, out=g["b_dec"])
    nb, nj = rows[near], cidx[near]
    df_near = np.einsum("ij,ij->i", buf.dx_hat[nb], W_dec[nj])  # df at the entries near theta, on or off
    dtheta = -(theta / eps) * _per_latent(nj, df_near, d_sae) - lam / B / eps * _per_latent(nj, None, d_sae)
    g["log_threshold"][...] = dtheta * theta  # theta = exp(log_threshold)
    mse, l0 = float(buf.sq_err.sum() / x.size), len(val) / B
    grads = {k: g[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "log_threshold")}
    return (mse + lam * l0, mse, lam * l0, l0), grads, np.diff(colptr) > 0


# ----------------------------------------------------------------------------------------------------
# the registry


class Variant(NamedTuple):
    """An SAE variant: how to build, run and train it. `options`: the SAEConfig fields it reads beyond the
    shared ones; `buffers`: params not trained by gradient; `unit_norm`: keep the decoder rows at unit norm
    (project the gradient, renormalise after the step); `sparse_buffers(cfg)`: the work arrays of its numba
    step, when it has one (the step then gets them as `buf`, else None and runs dense)."""

    init: Callable
    forward: Callable
    backward: Callable
    step: Callable = dense_step
    options: tuple = ()
    buffers: tuple = ()
    unit_norm: bool = True
    sparse_buffers: Callable = lambda cfg: None
    encoder: Callable | None = None  # (params, x, cfg) -> f, when cheaper than the whole forward

    def encode(self, params, x, cfg):
        return self.forward(params, x, cfg)[0].f if self.encoder is None else self.encoder(params, x, cfg)


VARIANTS = {
    "topk": Variant(topk_init, topk_forward_model, topk_backward_model, topk_step,
                    options=("k", "k_anneal", "k_start", "aux_k", "aux_coefficient"), sparse_buffers=TopKBuffers,
                    encoder=topk_encode),
    "batchtopk": Variant(batchtopk_init, batchtopk_forward_model, topk_backward_model, batchtopk_step,
                         options=("k", "k_anneal", "k_start", "aux_k", "aux_coefficient", "threshold_decay"),
                         buffers=("threshold",),
                         sparse_buffers=TopKBuffers),
    "jumprelu": Variant(jumprelu_init, jumprelu_forward_model, jumprelu_backward_model, jumprelu_step,
                        options=("bandwidth", "init_threshold", "l1_warmup"), sparse_buffers=S.Buffers),
    "gated": Variant(gated_init, gated_forward_model, gated_backward_model, gated_step, options=("l1_warmup",),
                     sparse_buffers=PairBuffers, encoder=lambda params, x, cfg: _gated_latents(params, x)[0]),
    "anthropic2024": Variant(recipe2024_init, recipe2024_forward_model, recipe2024_backward_model, recipe2024_step,
                             options=("l1_warmup",), buffers=("input_scale",), unit_norm=False,
                             sparse_buffers=S.Buffers),
}
# the recipe each variant was published with, beyond its definition (pipeline.variant_options applies it)
RECIPES = {"anthropic2024": dict(l1_warmup=0.05, lr_decay_start=0.8)}
S.ARCHITECTURES.update(VARIANTS)
