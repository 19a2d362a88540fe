"""Adam over parameter dicts, gradient clipping and learning-rate schedules.

Adam keeps two running averages per parameter entry: m, of the gradient, and v, of its square. The
update is  p -= lr * m_hat / (sqrt(v_hat) + eps)  with the bias-corrected  m_hat = m / (1 - beta1^t),
v_hat = v / (1 - beta2^t). AdamW adds decoupled weight decay:  p -= lr * weight_decay * p.

The state is plain arrays you can print (`opt.m["W_dec"]`) and reset along any axis: the sparse
autoencoder's dead-latent resampling rewrites a few latents (columns of W_enc, entries of b_enc, rows of
W_dec) and must forget their moments (`opt.reset(name, index, axis)`), or Adam would keep pushing the new
latents with the old ones' history.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinymono.validate import check_int, check_number


class Adam:
    """Adam (weight_decay=0) or AdamW (weight_decay>0, decoupled), updating a dict of arrays in place.

    params: name -> array. weight decay applies to the names in `decay` (default: every array with 2 or
    more dimensions, decided by shape, not by name: in the transformer that is the weight matrices, the
    embeddings W_E and W_pos, and also the per-head attention biases b_Q/b_K/b_V [n_heads, d_head]; the
    1-d arrays, i.e. the other biases and the layer-norm gains and biases, are not decayed).

    fused: update each array in one numba pass (kernels/optim.py, the same numbers as adam_update below,
    several times faster on large arrays) wherever its arrays allow it; adam_update otherwise."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decay=None, fused=False):
        if not (lr > 0 and len(betas) == 2 and 0 <= betas[0] < 1 and 0 <= betas[1] < 1 and eps > 0
                and weight_decay >= 0) or not all(map(np.isfinite, (lr, eps, weight_decay))):  # NaN fails every test
            raise ValueError(f"bad Adam settings: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        self.lr, self.beta1, self.beta2, self.eps, self.weight_decay = lr, betas[0], betas[1], eps, weight_decay
        self.decay = set(decay) if decay is not None else {k for k, p in params.items() if p.ndim >= 2}
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}
        self.t = 0  # number of steps taken; the bias correction uses it
        self.kernels = None  # the fused update's numba kernels, when asked for
        if fused:
            from tinymono.kernels import optim as fused_kernels  # numba: imported only when asked for
            self.kernels = fused_kernels

    def step(self, params, grads, lr=None):
        """One update of every array in `params` (those this Adam was made for, or some of them), in place.
        grads holds a gradient of the same shape for each."""
        for k, p in params.items():  # a wrong shape would broadcast into every row without a word
            if k not in self.m or k not in grads or np.shape(grads[k]) != p.shape or self.m[k].shape != p.shape:
                raise ValueError(f"Adam.step: parameter {k!r} {p.shape} needs a gradient of the same shape and "
                                 f"Adam state for it; got gradient {np.shape(grads[k]) if k in grads else 'none'}"
                                 f" (did the backward forget to sum over the batch?)")
        lr = self.lr if lr is None else lr
        self.t += 1
        for k, p in params.items():
            if self.weight_decay and k in self.decay:
                p *= 1.0 - lr * self.weight_decay
            fused = self.kernels is not None and self.kernels.fusable(p, grads[k], self.m[k], self.v[k])
            update = self.kernels.adam_update if fused else adam_update
            update(p, grads[k], self.m[k], self.v[k], self.t, lr, self.beta1, self.beta2, self.eps)

    def reset(self, name, index, axis=0):
        """Zero both moments of parameter `name` at `index` (ints, slice or bool mask) along `axis`."""
        sel = (slice(None),) * axis + (index,)
        self.m[name][sel] = 0
        self.v[name][sel] = 0

    def state_arrays(self, prefix="adam"):
        """Everything needed to resume: {prefix.m.name, prefix.v.name, prefix.t} -> arrays."""
        out = {f"{prefix}.t": np.array(self.t, dtype=np.int64)}
        for k in self.m:
            out[f"{prefix}.m.{k}"] = self.m[k]
            out[f"{prefix}.v.{k}"] = self.v[k]
        return out

    def load_state_arrays(self, arrays, prefix="adam"):
        """Restore from `state_arrays` output (copies, so the loaded file is not aliased)."""
        self.t = int(arrays[f"{prefix}.t"])
        for k in self.m:
            for name, store in (("m", self.m), ("v", self.v)):
                a = arrays[f"{prefix}.{name}.{k}"]
                if a.shape != store[k].shape:
                    raise ValueError(f"Adam state {prefix}.{name}.{k} has shape {a.shape}, expected {store[k].shape}")
                store[k] = np.array(a, dtype=store[k].dtype)


def adam_update(p, g, m, v, t, lr, beta1, beta2, eps):
    """One Adam step of array p with gradient g, updating p, m and v in place; t counts steps from 1."""
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    # p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps), with one temporary array
    update = np.sqrt(v / (1.0 - beta2**t))
    update += eps
    np.divide(m, update, out=update)
    update *= lr / (1.0 - beta1**t)
    p -= update


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their joint L2 norm is at most max_norm. Returns the norm before (NaN
    when a gradient holds NaN: the training loop's non-finite guard reports it)."""
    check_number("max_norm", max_norm, gt=0)
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if norm > max_norm:
        for g in grads.values():
            g *= max_norm / (norm + 1e-12)
    return norm


@dataclass(frozen=True)
class Schedule:
    """Learning rate as a function of the step: a linear warm-up, step s < warmup getting
    base_lr * (s + 1) / warmup (step 0 already moves; step warmup - 1 reaches base_lr), then constant
    until `decay_start` (a fraction of total_steps), then "linear" or "cosine" decay to
    `final_ratio * base_lr` at total_steps ("constant": no decay)."""

    base_lr: float
    total_steps: int
    warmup: int = 0
    decay: str = "constant"
    decay_start: float = 0.0
    final_ratio: float = 0.0

    def __post_init__(self):
        check_number("base_lr", self.base_lr, gt=0)
        check_int("total_steps", self.total_steps, lo=1)
        check_int("warmup", self.warmup, lo=0)
        if not 0 <= self.warmup <= self.total_steps:
            raise ValueError(f"warmup must be in [0, total_steps={self.total_steps}], got {self.warmup}")
        if self.decay not in ("constant", "linear", "cosine"):
            raise ValueError(f"decay must be 'constant', 'linear' or 'cosine', got {self.decay!r}")
        if not 0 <= self.decay_start < 1 or not 0 <= self.final_ratio <= 1:
            raise ValueError(f"decay_start must be in [0, 1) and final_ratio in [0, 1], got "
                             f"{self.decay_start}, {self.final_ratio}")

    def __call__(self, step):
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        start = max(self.warmup, int(self.decay_start * self.total_steps))
        if self.decay == "constant" or step < start:
            return self.base_lr
        frac = min(1.0, (step - start) / max(1, self.total_steps - start))  # 0 -> 1 over the decay
        shape = 1.0 - frac if self.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))
        return self.base_lr * (self.final_ratio + (1.0 - self.final_ratio) * shape)
