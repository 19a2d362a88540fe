"""The sparse autoencoder of "Towards Monosemanticity" (Bricken et al. 2023).

    x_bar = x - b_dec                              [B, d_in]   the same b_dec is subtracted here...
    f     = ReLU(x_bar @ W_enc + b_enc)            [B, d_sae]  latents: non-negative, mostly zero
    x_hat = f @ W_dec + b_dec                      [B, d_in]   ...and added back here
    loss  = mean over B and d_in of (x - x_hat)^2 + l1_coefficient * mean over B of sum_j |f_j|

(The paper sums the squared error over d_in; averaging it instead makes l1_coefficient = lambda / d_in.)

Decoder rows are dictionary directions kept at unit norm (otherwise the L1 penalty could be dodged by
shrinking f and growing W_dec): before Adam, each row's gradient loses its component along the row;
after Adam, the rows are renormalised. Latents that stop firing are resampled during the early part of
training (`resample_dead`).

Each piece is a forward/backward pair in the style of layers.py, composed by `forward` and `backward`.
`cfg.architecture` names an entry of ARCHITECTURES, the one place where an SAE variant is chosen. The
paper's "relu" is an `Architecture`: its encoder, L1 penalty and their backwards (the hooks exercise 02.9
uses), which `forward` and `backward` compose with the shared decoder and reconstruction loss. The later
variants (topk, batchtopk, jumprelu, gated, anthropic2024) are whole `Variant`s, each with its own init,
forward, backward and training step built from the pieces here; sae_variants.py defines them and adds them
to ARCHITECTURES when this module is imported (the import at the end of this file), and `variant_of(cfg)`
tells the two kinds apart. Resampling belongs to the paper's SAE; the Adam update and SAETask's
bookkeeping serve every variant.

Training speed: `train_step_sparse` computes the same gradients with numba kernels that touch only the
active latents (kernels/sae.py); `SAETask` uses it when the measured active fraction is below
`cfg.sparse_below`, and the dense NumPy reference otherwise (early in training most latents fire).

Axis vocabulary: B batch, d_in input width, d_sae latents (dictionary size).

What this implementation chose where the paper is silent: an optional linear learning-rate decay at the
end of the run (`lr_decay_start`; off by default, as in the paper; short runs end sharper with it);
W_enc Kaiming-uniform (bound sqrt(6 / fan_in)) and W_dec's rows random directions (a Kaiming draw,
normalised); resampling samples inputs without replacement when it can (so two dead latents do not get
the same direction), normalises the raw input x (as the paper words it), and uses each input's
total loss (its reconstruction error, averaged over d_in, plus its L1 penalty); a batch source that
returns float64 for a float32 SAE is cast.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Callable, NamedTuple

import numpy as np

from tinymono import checkpoint as ckpt
from tinymono.kernels import sae as K
from tinymono.layers import relu_backward, relu_forward
from tinymono.optim import Adam, Schedule
from tinymono.validate import BOOL, REAL, check_array, check_config_ints, check_finite, check_rng

# ----------------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class SAEConfig:
    d_in: int
    d_sae: int
    architecture: str = "relu"  # a key of ARCHITECTURES
    l1_coefficient: float = 1e-3
    lr: float = 1e-3
    lr_decay_start: float = 1.0  # from this fraction of the run, lr decays linearly to 0 (1.0: constant lr)
    adam_betas: tuple = (0.9, 0.999)
    adam_eps: float = 1e-8
    batch_size: int = 1024
    steps: int = 10_000
    # resampling: at these fractions of the run (paper: 25k, 50k, 75k, 100k of 1M steps) the latents that
    # did not fire during the last `dead_window` of the run (paper: 12.5k steps) are resampled, using the
    # loss on `resample_batches` fresh batches (paper: 100 batches of 8192 = 819,200 inputs); () disables it
    resample_at: tuple = (0.025, 0.05, 0.075, 0.1)
    dead_window: float = 0.0125
    # 0: dead means silent for the whole window (the paper's rule). > 0: also the latents that fired on at most
    # this share of the window's inputs (a rare, weak latent that never learned anything escapes the paper's rule)
    dead_below: float = 0.0
    resample_batches: int = 100
    resample_encoder_scale: float = 0.2  # new encoder columns get 0.2 x the mean alive column norm
    init_sample: int = 4096  # rows drawn from the source for the geometric-median b_dec
    backend: str = "numba"  # "numba": sparse kernels when the active fraction < sparse_below; "numpy": dense
    sparse_below: float = 0.1  # bench scaling: sparsity stopped paying at 12% to over 20% active, by run
    dtype: str = "float32"
    seed: int = 0
    # the later variants' options, to skip on a first reading (sae_variants.py; each variant reads only its own)
    k: int = 32  # topk, batchtopk: active latents per input (batchtopk: on average over the batch)
    k_anneal: float = 0.0  # topk, batchtopk: k falls linearly from k_start to k over this fraction of the run
    k_start: int = 64  # topk, batchtopk: k at step 0 when k_anneal > 0
    aux_k: int = 64  # AuxK: dead latents asked to reconstruct the residual, per input
    aux_coefficient: float = 1 / 32  # AuxK: its weight in the loss
    threshold_decay: float = 0.999  # batchtopk: the running average of the inference threshold
    bandwidth: float = 1e-3  # jumprelu: width of the rectangle kernel of the pseudo-derivatives
    init_threshold: float = 1e-3  # jumprelu: every threshold's start
    l1_warmup: float = 0.0  # the penalty coefficient rises linearly from 0 over this fraction of the run

    def __post_init__(self):
        check_config_ints(self, ("d_in", "d_sae", "batch_size", "resample_batches", "init_sample"))
        check_config_ints(self, ("steps",), lo=0)
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {self.architecture!r}")
        if not self.l1_coefficient >= 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {self.l1_coefficient}")
        if not self.lr > 0 or not self.adam_eps > 0:
            raise ValueError(f"lr and adam_eps must be positive, got {self.lr}, {self.adam_eps}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if not all(0 < f < 1 for f in self.resample_at):
            raise ValueError(f"resample_at must hold fractions of the run in (0, 1), got {self.resample_at}")
        if not 0 < self.dead_window <= 1:
            raise ValueError(f"dead_window must be a fraction of the run in (0, 1], got {self.dead_window}")
        if not 0 <= self.dead_below < 1:
            raise ValueError(f"dead_below must be a share of inputs in [0, 1), got {self.dead_below}")
        if not 0 <= self.lr_decay_start <= 1:
            raise ValueError(f"lr_decay_start must be a fraction of the run in [0, 1], got {self.lr_decay_start}")
        if not self.resample_encoder_scale > 0:
            raise ValueError(f"resample_encoder_scale must be positive, got {self.resample_encoder_scale}")
        if self.backend not in ("numba", "numpy"):
            raise ValueError(f"backend must be 'numba' or 'numpy', got {self.backend!r}")
        if not 0 <= self.sparse_below <= 1:
            raise ValueError(f"sparse_below must be a fraction in [0, 1], got {self.sparse_below}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        self._check_options()

    def _check_options(self):
        """A variant's option (VARIANT_OPTIONS) set on an architecture that does not read it is a mistake, not
        a no-op. The shared fields are not checked so: TopK and BatchTopK ignore l1_coefficient, and every
        variant but the paper's ignores the resampling fields, so that one recipe can configure them all."""
        used = getattr(ARCHITECTURES[self.architecture], "options", ())
        for f in fields(self):
            if f.name in VARIANT_OPTIONS and f.name not in used and getattr(self, f.name) != f.default:
                raise ValueError(f"{f.name} is not an option of architecture {self.architecture!r} (its options: "
                                 f"{list(used) or 'none'})")
        for name, top, bound in (("k", self.d_sae if "k" in used else self.k, f"in [1, d_sae={self.d_sae}]"),
                                 ("aux_k", self.aux_k, ">= 1 (above d_sae: every dead latent)")):
            v = getattr(self, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 1 <= v <= top:
                raise ValueError(f"{name} must be an integer {bound}, got {v!r}")
            object.__setattr__(self, name, int(v))
        if not 0 <= self.k_anneal < 1 or (self.k_anneal > 0 and not (isinstance(self.k_start, (int, np.integer))
                                                                        and self.k <= self.k_start <= self.d_sae)):
            raise ValueError(f"need k_anneal in [0, 1) and, when it is on, an integer k_start in [k, d_sae]; got "
                             f"k_anneal={self.k_anneal}, k_start={self.k_start!r}, k={self.k}, d_sae={self.d_sae}")
        if not self.aux_coefficient >= 0 or not 0 <= self.threshold_decay < 1:
            raise ValueError(f"need aux_coefficient >= 0 and threshold_decay in [0, 1), got {self.aux_coefficient}, "
                             f"{self.threshold_decay}")
        if not self.bandwidth > 0 or not self.init_threshold > 0 or not 0 <= self.l1_warmup < 1:
            raise ValueError(f"need bandwidth > 0, init_threshold > 0 and l1_warmup in [0, 1), got {self.bandwidth}, "
                             f"{self.init_threshold}, {self.l1_warmup}")

    @property
    def resample_steps(self):
        """The steps (0-based) before which dead latents are resampled: none for the later variants. TopK and
        BatchTopK keep latents alive with AuxK, the 2024 recipe does without, and JumpReLU and Gated have
        no revival here (Gated's paper resampled; this implementation does not)."""
        if not self.steps or self.architecture != "relu":
            return []
        return sorted({max(1, round(f * self.steps)) for f in self.resample_at})

    def l1_at(self, step):
        """The penalty coefficient of `step`: rising linearly from 0 over the first l1_warmup of the run."""
        warm = self.l1_warmup * self.steps
        return self.l1_coefficient * min(1.0, (step + 1) / warm) if warm >= 1 else self.l1_coefficient

    def k_at(self, step):
        """TopK's k at `step`: falling linearly from k_start to k over the first k_anneal of the run, then k."""
        span = self.k_anneal * self.steps
        if span < 1:
            return self.k
        return int(round(self.k_start + (self.k - self.k_start) * min(1.0, step / span)))

    def lr_at(self, step):
        """The learning rate of `step`: constant, then (optionally) a linear decay to 0 at the end."""
        if self.lr_decay_start >= 1 or self.steps == 0:
            return self.lr
        return Schedule(self.lr, self.steps, decay="linear", decay_start=self.lr_decay_start)(step)

    @property
    def dead_window_steps(self):
        """A latent is dead when it has not fired for this many steps."""
        return max(1, round(self.dead_window * self.steps))


# ----------------------------------------------------------------------------------------------------
# init: Kaiming-uniform weights, unit decoder rows, b_dec at the geometric median of the data


def geometric_median(X, iters=1000, tol=1e-9, eps=1e-12):
    """The point minimising the sum of Euclidean distances to the rows of X [n, d], in float64.

    Weiszfeld's iteration: y <- sum_i w_i X_i / sum_i w_i with w_i = 1 / ||X_i - y||, a weighted mean that
    pulls less toward far points (so, unlike the mean, it ignores a few outliers). When the median is
    one of the data points the iteration only creeps toward it (the weight of that point blows up), so
    at the end the data point nearest y is also tried and kept if its sum of distances is smaller."""
    X = np.asarray(X)
    if X.ndim != 2 or len(X) == 0:
        raise ValueError(f"the geometric median needs a non-empty [n, d] array, got shape {X.shape}")
    X = check_array("X", X, kinds=REAL).astype(np.float64)
    y = X.mean(axis=0)  # [d]
    for _ in range(iters):
        dist = np.maximum(np.linalg.norm(X - y, axis=1), eps)  # [n], clamped: y may sit on a data point
        w = 1.0 / dist
        y_new = (w @ X) / w.sum()
        done = np.linalg.norm(y_new - y) <= tol * (1.0 + np.linalg.norm(y))
        y = y_new
        if done:
            break
    nearest = X[np.argmin(np.linalg.norm(X - y, axis=1))]
    total = lambda p: np.linalg.norm(X - p, axis=1).sum()  # noqa: E731
    return nearest.copy() if total(nearest) < total(y) else y


def kaiming_uniform(rng, shape, fan_in):
    """U(-b, b) with b = sqrt(6 / fan_in): weight variance 2 / fan_in, so a pre-activation's variance is about
    twice the input's mean square, and after the ReLU (which zeroes half of it) the mean square is about the
    input's again (He et al. 2015)."""
    bound = np.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape)


def init(cfg, rng, sample=None):
    """Parameters {W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]} in cfg.dtype.
    sample [n, d_in]: data for b_dec's geometric median (None: b_dec = 0). The paper starts b_dec there: the
    point with the least summed distance to the data, a centre that a few outlying activations cannot pull
    far (a mean can be), so from the first step the encoder reads each input relative to a typical one.
    A later variant's own init (sae_variants.py) may add parameters."""
    check_rng("rng", rng)
    if sample is not None and np.shape(sample)[1:] != (cfg.d_in,):
        raise ValueError(f"the sample for b_dec must be [n, d_in={cfg.d_in}], got shape {np.shape(sample)}")
    variant = variant_of(cfg)
    if variant is not None:
        return variant.init(cfg, rng, sample)
    W_enc = kaiming_uniform(rng, (cfg.d_in, cfg.d_sae), fan_in=cfg.d_in)
    W_dec = kaiming_uniform(rng, (cfg.d_sae, cfg.d_in), fan_in=cfg.d_sae)  # untied from W_enc
    normalise_decoder(W_dec)
    b_dec = np.zeros(cfg.d_in) if sample is None else geometric_median(sample)
    params = {"W_enc": W_enc, "b_enc": np.zeros(cfg.d_sae), "W_dec": W_dec, "b_dec": b_dec}
    return {k: np.ascontiguousarray(v, dtype=cfg.dtype) for k, v in params.items()}


def param_shapes(cfg):
    variant = variant_of(cfg)
    if variant is not None:  # what its init builds, without data (outside the step: buffers, loading)
        return {k: v.shape for k, v in variant.init(cfg, np.random.default_rng(0)).items()}
    return {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}


# ----------------------------------------------------------------------------------------------------
# the pieces, as forward/backward pairs


class EncodeCache(NamedTuple):
    x_bar: np.ndarray  # [B, d_in] x - b_dec, for dW_enc
    relu: object  # ReluCache: where the pre-activation was positive
    W_enc: np.ndarray  # [d_in, d_sae], for b_dec's gradient through x_bar


def encode_relu_forward(x, W_enc, b_enc, b_dec):
    """x [B, d_in] -> f [B, d_sae] = ReLU((x - b_dec) @ W_enc + b_enc)."""
    x_bar = x - b_dec  # [B, d_in]
    pre = x_bar @ W_enc + b_enc  # [B, d_sae]
    f, relu_cache = relu_forward(pre)
    return f, EncodeCache(x_bar, relu_cache, W_enc)


def encode_relu_backward(df, cache):
    """df [B, d_sae] -> (None, dW_enc, db_enc, db_dec). x is data: its gradient is never needed (it would
    cost a full [B, d_sae] x [d_sae, d_in] matmul), so it is returned as None."""
    x_bar, relu_cache, W_enc = cache
    (dpre,) = relu_backward(df, relu_cache)  # [B, d_sae], inverts f = ReLU(pre)
    dW_enc = x_bar.T @ dpre  # [d_in, d_sae], inverts pre = x_bar @ W_enc + b_enc
    db_enc = dpre.sum(axis=0)  # [d_sae]
    # x_bar = x - b_dec: db_dec = -sum_b dx_bar[b] = -sum_b dpre[b] @ W_enc.T = -W_enc @ db_enc, a
    # matrix-vector product (summing over the batch first) instead of the matmul dpre @ W_enc.T
    db_dec = -(W_enc @ db_enc)  # [d_in]
    return None, dW_enc, db_enc, db_dec


class DecodeCache(NamedTuple):
    f: np.ndarray  # [B, d_sae], for dW_dec
    W_dec: np.ndarray  # [d_sae, d_in], for df


def decode_forward(f, W_dec, b_dec):
    """f [B, d_sae] -> x_hat [B, d_in] = f @ W_dec + b_dec."""
    return f @ W_dec + b_dec, DecodeCache(f, W_dec)


def decode_backward(dx_hat, cache):
    """dx_hat [B, d_in] -> (df [B, d_sae], dW_dec [d_sae, d_in], db_dec [d_in])."""
    f, W_dec = cache
    return dx_hat @ W_dec.T, f.T @ dx_hat, dx_hat.sum(axis=0)


class MSECache(NamedTuple):
    err: np.ndarray  # [B, d_in] x_hat - x


def mse_forward(x_hat, x):
    """Mean over the batch AND over the d_in elements of (x_hat - x)^2 -> a float."""
    err = x_hat - x  # [B, d_in]
    return float(np.mean(err * err)), MSECache(err)


def mse_backward(dloss, cache):
    """dloss (scalar) -> (dx_hat [B, d_in], dx [B, d_in])."""
    dx_hat = (2.0 * dloss / cache.err.size) * cache.err
    return dx_hat, -dx_hat


class L1Cache(NamedTuple):
    f: np.ndarray  # [B, d_sae]
    l1_coefficient: float


def l1_forward(f, l1_coefficient):
    """l1_coefficient * mean over the batch of sum over latents of |f| -> a float."""
    return float(l1_coefficient * np.abs(f).sum() / f.shape[0]), L1Cache(f, l1_coefficient)


def l1_backward(dloss, cache):
    """dloss (scalar) -> (df [B, d_sae], None). The kink at f = 0 gets 0 (those latents are off anyway)."""
    f, c = cache
    return (dloss * c / f.shape[0]) * np.sign(f), None


class Architecture(NamedTuple):
    """What makes an SAE variant: its encoder and its sparsity penalty, each a forward/backward pair."""

    encode_forward: Callable
    encode_backward: Callable
    penalty_forward: Callable
    penalty_backward: Callable


ARCHITECTURES = {"relu": Architecture(encode_relu_forward, encode_relu_backward, l1_forward, l1_backward)}
VARIANT_OPTIONS = ("k", "k_anneal", "k_start", "aux_k", "aux_coefficient", "threshold_decay", "bandwidth",
                   "init_threshold", "l1_warmup")


def variant_of(cfg):
    """The later variant (sae_variants.Variant) cfg.architecture names, or None for the paper's SAE."""
    arch = ARCHITECTURES[cfg.architecture]
    return None if isinstance(arch, Architecture) else arch


# ----------------------------------------------------------------------------------------------------
# the whole model


class SAEOutput(NamedTuple):
    x_hat: np.ndarray  # [B, d_in] reconstruction
    f: np.ndarray  # [B, d_sae] latents
    loss: float  # mse + l1
    mse: float
    l1: float  # the penalty term, l1_coefficient included
    l0: float  # mean over the batch of the number of active latents


class SAECache(NamedTuple):
    enc: tuple
    dec: DecodeCache
    mse: MSECache
    penalty: tuple


def forward(params, x, cfg):
    """x [B, d_in] -> (SAEOutput, cache). x must be [B >= 1, d_in] floats: a [d_in] vector or a [B, T, d_in]
    array would broadcast into a wrong L0 or L1, so they are refused, not reshaped. NaN or inf in x or the
    parameters is refused too (in W_enc it would hide: ReLU(NaN) is 0 here). These checks cost a pass over
    x and the parameters, ~1/B of the matmuls; the training step skips them (_forward: its batches are
    checked once, in next_batch, and the loop's guard watches the loss)."""
    x = check_array("x", x, ("B", params["W_enc"].shape[0]))
    for k, p in params.items():
        check_finite(f"params[{k!r}]", p)
    return _forward(params, x, cfg)


def _forward(params, x, cfg):
    """forward without the checks, for the training step."""
    variant = variant_of(cfg)
    if variant is not None:
        return variant.forward(params, x, cfg)
    arch = ARCHITECTURES[cfg.architecture]
    f, enc_cache = arch.encode_forward(x, params["W_enc"], params["b_enc"], params["b_dec"])  # [B, d_sae]
    x_hat, dec_cache = decode_forward(f, params["W_dec"], params["b_dec"])  # [B, d_in]
    mse, mse_cache = mse_forward(x_hat, x)
    penalty, pen_cache = arch.penalty_forward(f, cfg.l1_coefficient)
    l0 = float(np.count_nonzero(f) / f.shape[0])
    return SAEOutput(x_hat, f, mse + penalty, mse, penalty, l0), SAECache(enc_cache, dec_cache, mse_cache, pen_cache)


def backward(params, cache, cfg):
    """The gradient of the total loss: {W_enc, b_enc, W_dec, b_dec}, each shaped like its parameter."""
    if variant_of(cfg) is not None:  # a later variant's own backward, over its own parameters
        return variant_of(cfg).backward(params, cache, cfg)
    arch = ARCHITECTURES[cfg.architecture]
    (df_penalty, _) = arch.penalty_backward(1.0, cache.penalty)  # [B, d_sae]
    dx_hat, _ = mse_backward(1.0, cache.mse)  # [B, d_in]
    df, dW_dec, db_dec_out = decode_backward(dx_hat, cache.dec)
    df = df + df_penalty  # f feeds both the decoder and the penalty: its two gradients add
    _, dW_enc, db_enc, db_dec_in = arch.encode_backward(df, cache.enc)
    db_dec = db_dec_out + db_dec_in  # b_dec is used twice (subtracted before encoding, added after decoding)
    return {"W_enc": dW_enc, "b_enc": db_enc, "W_dec": dW_dec, "b_dec": db_dec}


def _checked(params, x, cfg):
    """x as encode takes it, after checking x's shape and the parameters encode reads."""
    x = check_array("x", x, ("B", params["W_enc"].shape[0]), nonempty=False)
    for k in ("W_enc", "b_enc", "b_dec") if variant_of(cfg) is None else params:
        check_finite(f"params[{k!r}]", params[k])
    return x


def encode(params, x, cfg):
    """x [B, d_in] -> latents f [B, d_sae]. (A NaN in x would come out as 0: ReLU(NaN) is 0 here.)"""
    x = _checked(params, x, cfg)
    variant = variant_of(cfg)
    if variant is not None:
        return variant.encode(params, x, cfg)
    # encode_relu_forward without what only training needs (x_bar, the mask of active entries): the ReLU in
    # place, 3-4x faster on lesson 07's and 10's millions of rows. fmax, not maximum: ReLU(NaN) is 0, as there.
    pre = (x - params["b_dec"]) @ params["W_enc"]
    pre += params["b_enc"]
    return np.fmax(pre, 0, out=pre)


def fire_counts(params, x, cfg):
    """[d_sae] int64: on how many rows of x [B, d_in] each latent fires, np.count_nonzero(encode(...), axis=0).
    For the paper's ReLU the count is one numba pass over the pre-activations (kernels/sae.py: fire_counts)
    instead of the ReLU's pass and count_nonzero's: lesson 06 counts over ten million rows."""
    if variant_of(cfg) is not None:
        return np.count_nonzero(encode(params, x, cfg), axis=0)
    x = _checked(params, x, cfg)
    return K.fire_counts((x - params["b_dec"]) @ params["W_enc"], params["b_enc"])


def encode_units(params, x, cfg, units):
    """x [B, d_in] -> latents f[:, units] [B, len(units)]. The paper's ReLU latent depends on its own encoder
    column alone, so only those columns are computed; a later variant's may not (TopK's latents compete for
    their k slots, and some variants name their parameters differently), so it encodes every latent and
    keeps the columns asked for."""
    if variant_of(cfg) is not None:
        return encode(params, x, cfg)[:, units]
    return encode({"W_enc": params["W_enc"][:, units], "b_enc": params["b_enc"][units], "b_dec": params["b_dec"]},
                  x, cfg)


def decode(params, f):
    """f [B, d_sae] -> x_hat [B, d_in]. (An SAE trained on scaled inputs, the 2024 recipe's, carries its
    `input_scale`: its reconstruction is scaled back.)"""
    f = check_array("f", f, ("B", params["W_dec"].shape[0]), nonempty=False)
    x_hat = decode_forward(f, params["W_dec"], params["b_dec"])[0]
    return x_hat / params["input_scale"] if "input_scale" in params else x_hat


# ----------------------------------------------------------------------------------------------------
# the decoder constraint


def project_decoder_grad(W_dec, dW_dec):
    """In place: remove from each row of dW_dec its component along the same row of W_dec (unit rows), so a
    plain gradient step would move each row along the unit sphere instead of lengthening it. Adam rescales
    each coordinate, so its step is not tangent to the sphere: normalise_decoder after the step is what
    enforces unit norm; the projection removes the radial part of the gradient, which the renormalisation
    would undo anyway, so it does not feed Adam's moments."""
    dW_dec -= np.sum(dW_dec * W_dec, axis=1, keepdims=True) * W_dec  # [d_sae, d_in]


def normalise_decoder(W_dec):
    """In place: rescale each row of W_dec to unit norm (Adam's step leaves the rows off unit norm)."""
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)


def update(params, grads, opt, lr=None, unit_norm=True, fast=False):
    """What a training step does with the gradients, in place: project each decoder row's gradient onto
    the plane tangent to its unit sphere, one Adam step (`opt`), rescale the decoder's rows to unit norm
    (the first and last only with `unit_norm`). fast: the decoder constraint by numba kernels
    (kernels/sae.py, the same numbers up to rounding); Adam is fused when `opt` was made with fused=True."""
    project, normalise = (K.project_rows, K.normalise_rows) if fast else (project_decoder_grad, normalise_decoder)
    if unit_norm:
        project(params["W_dec"], grads["W_dec"])
    opt.step({k: params[k] for k in opt.m}, grads, lr=lr)
    if unit_norm:
        normalise(params["W_dec"])


# ----------------------------------------------------------------------------------------------------
# the sparse training step (numba kernels over the active latents; the same numbers as forward/backward)


# SAETask trains through train_step_sparse where it can; exercise mode turns this off, so that every step runs
# forward/backward, the learner's own (tinymono/exercises/switch.py)
SPARSE_STEP = True


class Buffers:
    """Preallocated [B, ...] work arrays for train_step_sparse (fresh 32 MB arrays every step page-fault)."""

    def __init__(self, cfg):
        dt, B = cfg.dtype, cfg.batch_size
        self.x_bar = np.empty((B, cfg.d_in), dt)
        self.pre = np.empty((B, cfg.d_sae), dt)
        self.x_hat = np.empty((B, cfg.d_in), dt)
        self.dx_hat = np.empty((B, cfg.d_in), dt)
        self.sq_err = np.empty(B, np.float64)
        self.grads = {k: np.empty(s, dt) for k, s in param_shapes(cfg).items()}


def train_step_sparse(params, x, cfg, buf):
    """The loss terms and gradients of forward/backward, computed over the active latents only.

    Returns (loss, mse, l1, l0, grads, fires [d_sae]: how many inputs each latent fired on), or None when
    more than cfg.sparse_below of the entries are active (then the dense path is faster). grads live in `buf`
    (overwritten next call)."""
    B = x.shape[0]
    np.subtract(x, params["b_dec"], out=buf.x_bar)  # [B, d_in]
    np.matmul(buf.x_bar, params["W_enc"], out=buf.pre)  # [B, d_sae]: the one dense matmul
    counts = K.active_counts(buf.pre, params["b_enc"])  # [B]
    nnz = int(counts.sum())
    if nnz > cfg.sparse_below * buf.pre.size:
        return None
    indptr, idx, val = K.relu_csr(buf.pre, params["b_enc"], counts)  # f at its nnz active entries
    dval = np.empty_like(val)  # df at the same entries
    scale = np.asarray(2.0 / x.size, dtype=x.dtype)  # d mse / d x_hat = scale * (x_hat - x)
    l1_term = np.asarray(cfg.l1_coefficient / B, dtype=x.dtype)  # d l1 / d f where f > 0
    K.decode_rows(indptr, idx, val, params["W_dec"], params["b_dec"], x, scale[()], l1_term[()],
                  buf.x_hat, buf.dx_hat, dval, buf.sq_err)
    colptr, rows, perm = K.csr_to_csc(indptr, idx, cfg.d_sae)
    g = buf.grads
    K.latent_grads(colptr, rows, perm, val, dval, buf.x_bar, buf.dx_hat, g["W_enc"], g["b_enc"], g["W_dec"])
    np.subtract(buf.dx_hat.sum(axis=0), params["W_enc"] @ g["b_enc"], out=g["b_dec"])  # both uses of b_dec
    mse = float(buf.sq_err.sum() / x.size)
    l1 = float(cfg.l1_coefficient * val.sum(dtype=np.float64) / B)  # l1_forward's penalty: |f| = f where f > 0
    return mse + l1, mse, l1, nnz / B, g, np.diff(colptr)


# ----------------------------------------------------------------------------------------------------
# dead-latent resampling


def per_input_loss(params, x, cfg):
    """[B]: each input's share of the training loss, mean_i (x_hat - x)_i^2 + l1_coefficient * sum_j |f_j| (the
    terms of mse_forward and l1_forward before their mean over the batch)."""
    out, _ = forward(params, x, cfg)
    return np.mean((out.x_hat - x) ** 2, axis=1) + cfg.l1_coefficient * np.abs(out.f).sum(axis=1)


def resample_dead(params, opt, dead, inputs, cfg, rng):
    """Resample the latents where `dead` [d_sae] is True, in place (the paper's recipe):

    1. each input of `inputs` [n, d_in] is weighted by the square of its loss;
    2. one input is drawn per dead latent with probability proportional to that weight;
    3. its decoder row becomes the input normalised to unit length; its encoder column the same unit vector
       times resample_encoder_scale x the mean encoder-column norm of the alive latents; its b_enc 0;
    4. Adam forgets both moments of every entry written (W_dec rows, W_enc columns, b_enc entries).
    Returns the indices of the resampled latents."""
    d_sae, d_in = params["W_dec"].shape
    dead = check_array("dead", dead, (d_sae,), kinds=BOOL, nonempty=False)
    inputs = check_array("inputs", inputs, ("n", d_in))
    dead_idx = np.flatnonzero(dead)
    if dead_idx.size == 0:
        return dead_idx
    losses = np.concatenate([per_input_loss(params, inputs[i:i + cfg.batch_size], cfg)
                             for i in range(0, len(inputs), cfg.batch_size)]).astype(np.float64)
    weight = losses**2
    usable = np.linalg.norm(inputs, axis=1) > 0  # an all-zero input has no direction to give a latent
    if not np.any(usable):
        raise ValueError("every input offered for resampling is all zeros: no direction to resample toward")
    weight[~usable] = 0
    if weight.sum() == 0:  # a perfect reconstruction everywhere: draw uniformly among the usable inputs
        weight = usable.astype(np.float64)
    chosen = rng.choice(len(inputs), size=dead_idx.size, replace=dead_idx.size > np.count_nonzero(weight),
                        p=weight / weight.sum())
    v = inputs[chosen].astype(np.float64)  # [n_dead, d_in]
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    enc_norms = np.linalg.norm(params["W_enc"], axis=0)  # [d_sae]
    alive_norm = enc_norms[~dead].mean() if np.any(~dead) else 1.0
    params["W_dec"][dead_idx] = v
    params["W_enc"][:, dead_idx] = (cfg.resample_encoder_scale * alive_norm * v).T
    params["b_enc"][dead_idx] = 0
    opt.reset("W_dec", dead_idx, axis=0)
    opt.reset("W_enc", dead_idx, axis=1)
    opt.reset("b_enc", dead_idx, axis=0)
    return dead_idx


# ----------------------------------------------------------------------------------------------------
# training task for tinymono.train.train


class SAETask:
    """Trains an SAE on batches from `source(rng, batch_size) -> [batch_size, d_in]` (float32 for a float32
    SAE), through the shared loop:  `train(SAETask(cfg, source), cfg.steps, checkpoint=...)`.

    The task owns the Generator the source draws from (seeded by cfg.seed), so the data stream is part of
    the checkpoint and a resumed run is bit-identical. Live metrics per chunk: loss, mse, l1, l0 and dead
    (latents silent for the last dead_window of the run)."""

    items_name = "act"

    def __init__(self, cfg: SAEConfig, source, params=None):
        self.cfg, self.source = cfg, source
        self.rng = np.random.default_rng([cfg.seed, 1])  # the data stream (and resampling draws)
        # b_dec starts at the geometric median of cfg.init_sample rows of the data (init says why)
        self.params = params if params is not None else init(cfg, np.random.default_rng(cfg.seed),
                                                             self.next_batch(cfg.init_sample))
        self.variant = variant_of(cfg)
        self.opt = self._adam()
        self.since_fired = np.zeros(cfg.d_sae, dtype=np.int64)  # steps since each latent last fired
        self.window_fires = np.zeros(cfg.d_sae, dtype=np.int64)  # firings since the current dead window began
        self.window_starts = {r - cfg.dead_window_steps for r in cfg.resample_steps}
        self.items_per_step = cfg.batch_size
        self.buffers = None
        if cfg.backend == "numba":  # the sparse step's work arrays (a dense-only variant has none)
            self.buffers = Buffers(cfg) if self.variant is None else self.variant.sparse_buffers(cfg)
        self.resampled = []  # (step, number of latents) for each resampling of the run (kept in checkpoints)

    def _adam(self):
        """Adam over the trained parameters (a variant's buffers, such as BatchTopK's threshold, are not)."""
        buffers = self.variant.buffers if self.variant is not None else ()
        return Adam({k: v for k, v in self.params.items() if k not in buffers}, lr=self.cfg.lr,
                    betas=tuple(self.cfg.adam_betas), eps=self.cfg.adam_eps, fused=self.cfg.backend == "numba")

    def config_dict(self):
        """The config as checkpoints record it: a variant's options only where the architecture reads them
        (so a checkpoint of the paper's SAE reads the same as before the variants existed)."""
        used = self.variant.options if self.variant is not None else ()
        return {k: v for k, v in asdict(self.cfg).items() if (k not in VARIANT_OPTIONS or k in used)
                and not (k == "dead_below" and v == 0)}

    def next_batch(self, n=None):
        """Draw [n, d_in] from the source, checked: right shape, finite, cast to cfg.dtype."""
        n = self.cfg.batch_size if n is None else n
        x = np.asarray(self.source(self.rng, n))
        if x.shape != (n, self.cfg.d_in):
            raise ValueError(f"the batch source returned shape {x.shape}, expected ({n}, d_in={self.cfg.d_in})")
        if not np.all(np.isfinite(x)):
            bad = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"the batch source returned NaN or inf (first at row {bad[0]}, column {bad[1]})")
        return np.ascontiguousarray(x, dtype=self.cfg.dtype)

    def dead(self):
        """[d_sae] bool: latents that have not fired for dead_window_steps steps."""
        return self.since_fired >= self.cfg.dead_window_steps

    def window_steps(self, step):
        """How many steps the firing counts cover when the resampling of `step` reads them: since the last
        dead window began. That is dead_window_steps, unless the run's first window would begin before step
        0 or two resamplings are closer together than a window (then the later window's start, which zeroes
        the counts, falls inside the earlier window)."""
        return step - max((s for s in self.window_starts if 0 <= s < step), default=0)

    def to_resample(self, step):
        """[d_sae] bool: the dead latents, and with dead_below > 0 those that fired on at most that share of
        the inputs of the dead window that ends before `step`."""
        dead = self.dead()
        if self.cfg.dead_below > 0:
            dead |= self.window_fires <= self.cfg.dead_below * self.window_steps(step) * self.cfg.batch_size
        return dead

    def resample(self, step):
        """Resample the latents to_resample() names, from fresh batches; each starts a new dead window.
        -> their indices."""
        inputs = np.concatenate([self.next_batch() for _ in range(self.cfg.resample_batches)])
        idx = resample_dead(self.params, self.opt, self.to_resample(step), inputs, self.cfg, self.rng)
        self.since_fired[idx] = 0
        self.resampled.append((step, int(idx.size)))
        return idx

    def step(self, step):
        """One training step (resampling first when `step` is scheduled). Returns (loss, mse, l1, l0)."""
        cfg, params = self.cfg, self.params
        if self.variant is not None:
            return self.variant_step(step)
        if step in cfg.resample_steps:
            self.resample(step)
        if step in self.window_starts:
            self.window_fires[:] = 0
        x = self.next_batch()
        result = train_step_sparse(params, x, cfg, self.buffers) if cfg.backend == "numba" and SPARSE_STEP else None
        if result is None:  # the dense reference (also when too many latents are active for sparsity to pay)
            out, cache = _forward(params, x, cfg)
            grads = backward(params, cache, cfg)
            terms, fires = (out.loss, out.mse, out.l1, out.l0), np.count_nonzero(out.f > 0, axis=0)
        else:
            *terms, grads, fires = result
        update(params, grads, self.opt, cfg.lr_at(step), fast=cfg.backend == "numba")
        self.since_fired += 1
        self.since_fired[fires > 0] = 0
        self.window_fires += fires
        return terms

    def variant_step(self, step):
        """One step of a later variant (sae_variants.py): its own step math, the shared Adam and bookkeeping;
        the decoder constraint only where the variant keeps it. Returns (loss, mse, penalty, l0)."""
        v, cfg, params = self.variant, self.cfg, self.params
        train = sae_variants.Train(cfg.l1_at(step), self.dead(), cfg.k_at(step))
        terms, grads, fired = v.step(v, params, self.next_batch(), cfg, train, self.buffers, step)
        update(params, grads, self.opt, cfg.lr_at(step), v.unit_norm, fast=cfg.backend == "numba")
        self.since_fired += 1
        self.since_fired[fired] = 0
        return terms

    def run_chunk(self, start_step, n_steps):
        sums = np.zeros(4)
        for s in range(start_step, start_step + n_steps):
            sums += self.step(s)
        loss, mse, l1, l0 = sums / n_steps
        return {"loss": loss, "mse": mse, "l1": l1, "l0": l0, "dead": int(self.dead().sum())}

    def state_arrays(self):
        """Everything a resumed run needs, including the batch source's own state when it has one (a
        shuffled activation store remembers where it is in its epoch)."""
        rng_state = np.array(json.dumps(self.rng.bit_generator.state))  # 128-bit ints: JSON keeps them exact
        source = self.source.state_arrays() if hasattr(self.source, "state_arrays") else {}
        return {**{f"params.{k}": v for k, v in self.params.items()}, **self.opt.state_arrays(),
                "since_fired": self.since_fired, "window_fires": self.window_fires, "rng": rng_state,
                "resampled": np.array(self.resampled, dtype=np.int64).reshape(-1, 2), **source}

    def load_state_arrays(self, arrays):
        shapes = param_shapes(self.cfg)
        expected = {**{f"params.{k}": s for k, s in shapes.items()},
                    **{f"adam.{m}.{k}": s for k, s in shapes.items() for m in ("m", "v") if k in self.opt.m},
                    "adam.t": (), "since_fired": (self.cfg.d_sae,), "rng": ()}
        ckpt.validate_shapes(arrays, expected, where="SAE checkpoint", counters=("since_fired", "adam.t"))
        try:
            rng_state = json.loads(str(arrays["rng"]))
            self.rng.bit_generator.state = rng_state
        except (ValueError, TypeError, KeyError) as e:
            raise ckpt.CheckpointError(f"SAE checkpoint: unreadable random-number state ({e})") from e
        for k in shapes:
            self.params[k] = np.array(arrays[f"params.{k}"], dtype=self.cfg.dtype)
        self.opt = self._adam()
        self.opt.load_state_arrays(arrays)
        self.since_fired = np.array(arrays["since_fired"], dtype=np.int64)
        if "window_fires" in arrays:  # (absent from checkpoints written before dead_below existed)
            self.window_fires = np.array(arrays["window_fires"], dtype=np.int64)
        # the resampling record (absent from checkpoints written before it was kept)
        self.resampled = [(int(s), int(n)) for s, n in np.asarray(arrays.get("resampled", np.zeros((0, 2))))]
        if hasattr(self.source, "load_state_arrays"):
            self.source.load_state_arrays(arrays)


# ----------------------------------------------------------------------------------------------------
# the later variants: sae_variants.py imports the pieces above and adds its Variants to ARCHITECTURES. It
# is imported here, at the end, so that `from tinymono import sae` alone knows every architecture.

from tinymono import sae_variants  # noqa: E402,F401
