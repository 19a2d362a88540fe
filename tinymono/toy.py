"""The toy models of superposition (Elhage et al. 2022): more features than dimensions.

The data: n features, each zero with probability S (the sparsity) and otherwise uniform in [0, 1].
The model squeezes them through m < n hidden dimensions and tries to get them back:

    h  = W x                 W [m, n]: column W_f is feature f's direction in the hidden space
    x' = ReLU(W^T h + b)     (the "linear model" drops the ReLU)
    loss = mean over the batch of  sum_f I_f (x_f - x'_f)^2,   I_f the importance of feature f

With dense features the best a linear map can do is keep the m most important features and drop the
rest. With sparse features, the ReLU can undo the interference of features that are rarely active at
the same time, and the model stores more features than it has dimensions: superposition.

Many small models train at once along an instance axis, each with its own sparsity and importance, so
one run sweeps a whole range of settings. Axis vocabulary: inst, batch, feats (n), hidden (m).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from tinymono import checkpoint as ckpt
from tinymono.kernels import toy as K
from tinymono.optim import Schedule, adam_update
from tinymono.validate import REAL, check_array, check_config_ints, check_int, check_rng

MODELS = ("relu", "linear")


def _per_instance_feature(value, n_inst, n_features, name, lo=None, hi=None):
    """A scalar, an [n_features] vector (shared by instances), an [n_inst] vector (one value per
    instance, when n_inst != n_features) or an [n_inst, n_features] array -> [n_inst, n_features]."""
    a = np.asarray(value, dtype=np.float64)
    if a.ndim == 0:
        a = np.full((n_inst, n_features), float(a))
    elif a.ndim == 1 and a.shape[0] == n_features:
        a = np.broadcast_to(a, (n_inst, n_features))
    elif a.ndim == 1 and a.shape[0] == n_inst:
        a = np.broadcast_to(a[:, None], (n_inst, n_features))
    elif a.shape != (n_inst, n_features):
        raise ValueError(f"{name} must be a number, or have shape [n_features={n_features}], [n_inst={n_inst}] "
                         f"or [n_inst, n_features]; got shape {a.shape}")
    if not np.all(np.isfinite(a)) or (lo is not None and a.min() < lo) or (hi is not None and a.max() > hi):
        where = f"lie in [{lo}, {hi}]" if hi is not None else f"be >= {lo}" if lo is not None else "be finite"
        raise ValueError(f"{name} must {where}; got values from {a.min()} to {a.max()}")
    return np.array(a)


@dataclass(frozen=True)
class ToyConfig:
    """One batch of toy models trained together.

    feature_probability (1 - sparsity) and importance: a number, a per-feature vector, a per-instance
    vector, or an [n_inst, n_features] array (stored as nested tuples, so the config is hashable and
    goes into a checkpoint as JSON). The first 2 * n_correlated_pairs features come in pairs that are
    present together; the next 2 * n_anticorrelated_pairs in pairs of which at most one is present.
    The two members of a pair must be given the same probability p, and each keeps it as its marginal
    (an anticorrelated pair fires with 2p, and picks one member)."""

    n_features: int
    d_hidden: int
    n_inst: int = 1
    feature_probability: object = 0.1
    importance: object = 1.0
    n_correlated_pairs: int = 0
    n_anticorrelated_pairs: int = 0
    model: str = "relu"
    batch_size: int = 1024
    steps: int = 5000
    lr: float = 1e-3
    lr_decay: str = "cosine"  # optim.Schedule decay over the whole run: "constant", "linear" or "cosine"
    betas: tuple = (0.9, 0.999)
    seed: int = 0

    def __post_init__(self):
        check_config_ints(self, ("n_features", "d_hidden", "n_inst", "batch_size", "steps"))
        check_config_ints(self, ("n_correlated_pairs", "n_anticorrelated_pairs"), lo=0)
        if 2 * (self.n_correlated_pairs + self.n_anticorrelated_pairs) > self.n_features:
            raise ValueError(f"{self.n_correlated_pairs} correlated + {self.n_anticorrelated_pairs} anticorrelated "
                             f"pairs need more than n_features={self.n_features} features")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        Schedule(self.lr, self.steps, decay=self.lr_decay)  # validates lr_decay
        prob = _per_instance_feature(self.feature_probability, self.n_inst, self.n_features,
                                     "feature_probability", 0.0, 1.0)
        kinds = self.kinds()
        first = np.flatnonzero((kinds == K.CORR_FIRST) | (kinds == K.ANTI_FIRST))
        if np.any(prob[:, first] != prob[:, first + 1]):
            raise ValueError("the two members of a correlated or anticorrelated pair need the same "
                             "feature_probability (a pair is drawn with one probability)")
        if np.any(prob[:, kinds == K.ANTI_FIRST] > 0.5):
            raise ValueError("anticorrelated pairs need feature_probability <= 0.5 (one of the two fires with 2p)")
        imp = _per_instance_feature(self.importance, self.n_inst, self.n_features, "importance", 0.0, None)
        object.__setattr__(self, "feature_probability", tuple(map(tuple, prob.tolist())))
        object.__setattr__(self, "importance", tuple(map(tuple, imp.tolist())))
        object.__setattr__(self, "betas", tuple(self.betas))

    def probabilities(self):
        """[inst, feats] float64."""
        return np.array(self.feature_probability)

    def importances(self):
        """[inst, feats] float64."""
        return np.array(self.importance)

    def kinds(self):
        """[feats] int8: how each feature's presence is drawn (kernels.toy INDEPENDENT, CORR_FIRST, ...)."""
        kind = np.full(self.n_features, K.INDEPENDENT, dtype=np.int8)
        c, a = self.n_correlated_pairs, self.n_anticorrelated_pairs
        kind[0:2 * c:2], kind[1:2 * c:2] = K.CORR_FIRST, K.CORR_SECOND
        kind[2 * c:2 * (c + a):2], kind[2 * c + 1:2 * (c + a):2] = K.ANTI_FIRST, K.ANTI_SECOND
        return kind

    def schedule(self):
        return Schedule(self.lr, self.steps, decay=self.lr_decay)

    def to_dict(self):
        return json.loads(json.dumps(self.__dict__))


# ----------------------------------------------------------------------------------------------------
# data


def generate_batch(cfg: ToyConfig, step, batch_size=None, seed=None):
    """The batch the model sees at `step` (deterministic in the seed and the step): x [inst, batch, feats].
    A different `seed` gives fresh data, e.g. for evaluation."""
    step = check_int("step", step, lo=0)
    batch_size = cfg.batch_size if batch_size is None else check_int("batch_size", batch_size, lo=1)
    key = K.seed_key(cfg.seed if seed is None else check_int("seed", seed))
    return K.sample_batch_numpy(key, step, cfg.n_inst, batch_size, cfg.probabilities(), cfg.kinds())


# ----------------------------------------------------------------------------------------------------
# the model: init, forward, loss, backward


def init(cfg: ToyConfig, rng: np.random.Generator):
    """Xavier-normal W [inst, hidden, feats] (std sqrt(2 / (n + m))), b_final [inst, feats] = 0."""
    check_rng("rng", rng)
    std = np.sqrt(2.0 / (cfg.n_features + cfg.d_hidden))
    return {"W": rng.standard_normal((cfg.n_inst, cfg.d_hidden, cfg.n_features)) * std,
            "b_final": np.zeros((cfg.n_inst, cfg.n_features))}


def hidden(params, x):
    """h = W x: x [inst, batch, feats] -> [inst, batch, hidden]."""
    return np.einsum("ihf,ibf->ibh", params["W"], x)


def forward(params, x, cfg: ToyConfig):
    """x [inst, batch, feats] -> (out [inst, batch, feats], cache). The cache keeps x, h and the ReLU's
    active mask (everything the backward needs; the pre-activation itself is not needed)."""
    x = check_array("x", x, (cfg.n_inst, "batch", cfg.n_features))
    h = hidden(params, x)  # [inst, batch, hidden]
    pre = np.einsum("ihf,ibh->ibf", params["W"], h) + params["b_final"][:, None, :]  # [inst, batch, feats]
    active = pre > 0 if cfg.model == "relu" else np.ones(pre.shape, dtype=bool)
    out = np.where(active, pre, 0.0)
    return out, (x, h, active)


def loss(out, x, cfg: ToyConfig):
    """Per-instance loss [inst] = mean over batch of sum_f I_f (x - out)^2, and d(sum of it)/d out."""
    x = check_array("x", x, (cfg.n_inst, "batch", cfg.n_features))
    out = check_array("out", out, x.shape)
    imp = cfg.importances()[:, None, :]  # [inst, 1, feats]
    err = out - x
    per_inst = (imp * err**2).sum(axis=2).mean(axis=1)  # [inst]
    dout = 2.0 * imp * err / x.shape[1]  # [inst, batch, feats]
    return per_inst, dout


def backward(params, cache, cfg: ToyConfig, dout):
    """dout [inst, batch, feats] -> grads {"W", "b_final"}. W is used twice (h = W x, then W^T h): its
    gradient is the sum of the decoder term and the encoder term, added on one line."""
    x, h, active = cache
    dpre = np.where(active, dout, 0.0)  # inverts out = ReLU(pre)
    db = dpre.sum(axis=1)  # [inst, feats]
    dW_dec = np.einsum("ibh,ibf->ihf", h, dpre)  # from pre = W^T h + b
    dh = np.einsum("ihf,ibf->ibh", params["W"], dpre)  # [inst, batch, hidden]
    dW_enc = np.einsum("ibh,ibf->ihf", dh, x)  # from h = W x
    return {"W": dW_dec + dW_enc, "b_final": db}


def train_chunk_numpy(params, m, v, cfg: ToyConfig, start_step, lrs):
    """NumPy twin of kernels.toy.train_chunk: len(lrs) steps of every instance, in place. m, v: Adam
    moments (dicts like params). Returns each instance's loss at the last step [inst]."""
    b1, b2 = cfg.betas
    for s, lr in enumerate(lrs):
        x = generate_batch(cfg, start_step + s)
        out, cache = forward(params, x, cfg)
        per_inst, dout = loss(out, x, cfg)
        grads = backward(params, cache, cfg, dout)
        for k in params:
            adam_update(params[k], grads[k], m[k], v[k], start_step + s + 1, lr, b1, b2, 1e-8)
    return per_inst


# ----------------------------------------------------------------------------------------------------
# training through the shared loop


class ToyTask:
    """The toy model as a task for the shared loop: `train(ToyTask(cfg), cfg.steps)` trains it, and
    `task.params` holds the result. impl: "numba" (the fused kernel) or "numpy" (its twin); both give
    the same numbers."""

    items_name = "inst-step"

    def __init__(self, cfg: ToyConfig, impl="numba", params=None):
        if impl not in ("numba", "numpy"):
            raise ValueError(f"impl must be 'numba' or 'numpy', got {impl!r}")
        self.cfg, self.impl = cfg, impl
        self.params = params if params is not None else init(cfg, np.random.default_rng(cfg.seed))
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.items_per_step = cfg.n_inst
        # chunks of ~0.2 G sample-features: long enough to amortise the call, short enough for Ctrl-C
        self.chunk_steps = max(1, min(cfg.steps, 200_000_000 // (cfg.n_inst * cfg.batch_size * cfg.n_features)))
        self.last_losses = np.full(cfg.n_inst, np.nan)
        self._schedule = cfg.schedule()
        self._args = (cfg.probabilities(), cfg.importances(), cfg.kinds(), K.seed_key(cfg.seed))

    def config_dict(self):
        return self.cfg.to_dict()

    def run_chunk(self, start_step, n_steps):
        lrs = np.array([self._schedule(s) for s in range(start_step, start_step + n_steps)])
        if self.impl == "numpy":
            self.last_losses = train_chunk_numpy(self.params, self.m, self.v, self.cfg, start_step, lrs)
        else:
            prob, imp, kind, key = self._args
            b1, b2 = self.cfg.betas
            p, m, v = self.params, self.m, self.v
            with np.errstate(over="ignore"):  # uint64 hashing wraps by design (matters with NUMBA_DISABLE_JIT=1)
                K.train_chunk(p["W"], p["b_final"], m["W"], v["W"], m["b_final"], v["b_final"], prob, imp, kind,
                              key, start_step, lrs, self.cfg.batch_size, b1, b2, 1e-8, self.cfg.model == "relu",
                              self.last_losses)
        # ||W||_F^2 (~ the number of features learned) also exposes a NaN weight, which the ReLU would hide
        return {"loss": float(np.mean(self.last_losses)), "W_F2": float(np.mean(frobenius_sq(self.params["W"]))),
                "lr": float(lrs[-1])}

    def state_arrays(self):
        out = dict(self.params)
        for k in self.params:
            out[f"adam.m.{k}"], out[f"adam.v.{k}"] = self.m[k], self.v[k]
        out["last_losses"] = self.last_losses
        return out

    def load_state_arrays(self, arrays):
        c = self.cfg
        shapes = {"W": (c.n_inst, c.d_hidden, c.n_features), "b_final": (c.n_inst, c.n_features)}
        expected = {**shapes, **{f"adam.{mv}.{k}": s for k, s in shapes.items() for mv in "mv"},
                    "last_losses": (c.n_inst,)}
        ckpt.validate_shapes(arrays, expected, "toy checkpoint")
        for k in shapes:
            self.params[k] = np.array(arrays[k], dtype=np.float64)
            self.m[k] = np.array(arrays[f"adam.m.{k}"], dtype=np.float64)
            self.v[k] = np.array(arrays[f"adam.v.{k}"], dtype=np.float64)
        self.last_losses = np.array(arrays["last_losses"], dtype=np.float64)


def evaluate(cfg: ToyConfig, params, batch_size=10_000):
    """Each instance's loss [inst] on a fresh batch (a seed the training never used)."""
    check_int("batch_size", batch_size, lo=1)
    x = generate_batch(cfg, 0, batch_size, seed=cfg.seed + 7919 * 2**32)
    out, _ = forward(params, x, cfg)
    return loss(out, x, cfg)[0]


# ----------------------------------------------------------------------------------------------------
# what the model learned


def _check_W(W):
    """W [..., hidden, feats] with hidden, feats >= 1 and real. NaN is let through: it shows as NaN (the
    training loop's non-finite guard reads frobenius_sq to catch a diverged model)."""
    W = check_array("W", W, kinds=REAL, finite=False)
    if W.ndim < 2 or 0 in W.shape[-2:]:
        raise ValueError(f"W must be [inst, hidden, feats] (or [hidden, feats]) with hidden, feats >= 1, got shape "
                         f"{W.shape}")
    return W


def feature_norms(W):
    """||W_f|| for each feature: [inst, feats]. Near 1: represented; near 0: dropped."""
    return np.linalg.norm(_check_W(W), axis=-2)


def superposition(W):
    """sum_{g != f} (W_f_hat . W_g)^2: how much other features interfere with feature f. [inst, feats]"""
    W = _check_W(W)
    norms = feature_norms(W)
    W_hat = W / np.maximum(norms[..., None, :], 1e-12)
    overlap = np.einsum("...hf,...hg->...fg", W_hat, W) ** 2  # [inst, feats, feats]
    return overlap.sum(axis=-1) - np.diagonal(overlap, axis1=-2, axis2=-1)


def frobenius_sq(W):
    """||W||_F^2, roughly the number of features learned: [inst]."""
    W = _check_W(W)
    return (W**2).sum(axis=(-2, -1))


def dims_per_feature(W):
    """D* = m / ||W||_F^2: hidden dimensions spent per learned feature. [inst]"""
    return _check_W(W).shape[-2] / frobenius_sq(W)


def feature_dimensionality(W):
    """D_f = ||W_f||^2 / sum_g (W_f_hat . W_g)^2 (g over all features, f included): the fraction of a
    dimension feature f gets. 1: a dedicated dimension; 1/2: an antipodal pair; 0: not learned. [inst, feats]"""
    W = _check_W(W)
    norms = feature_norms(W)
    W_hat = W / np.maximum(norms[..., None, :], 1e-12)
    denom = (np.einsum("...hf,...hg->...fg", W_hat, W) ** 2).sum(axis=-1)
    return norms**2 / np.maximum(denom, 1e-12)
