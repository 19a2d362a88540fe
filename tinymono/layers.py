"""Differentiable building blocks, each a pair of pure functions.

Every layer here is written twice, once forwards and once backwards:

    out, cache = name_forward(x, *params)
    dx, *dparams = name_backward(dout, cache)

`dout` is the gradient of some scalar loss with respect to `out`; the backward returns the gradient with
respect to every array argument of the forward, in the same order (always a tuple, even of length one,
and `None` for integer inputs such as token ids). The cache is a NamedTuple holding exactly what the
backward needs; each docstring says what is stored and what is recomputed.

Axis vocabulary (shape comments use these letters):
    N  any number of leading axes (batch, position, ...)
    B  batch          T  sequence position      D  model width (d_model)
    H  heads          E  head width (d_head)    V  vocabulary
    I  input width    O  output width of a linear layer
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import erf

from tinymono.validate import check_floats, check_ids, check_int, check_number

# Every forward checks its arguments' dtypes and shapes (O(1): layers run at every training step, so
# their values are not scanned; a NaN in the transformer reaches the loss through the residual stream,
# which the training loop watches). One exception to "NaN in, NaN out": relu_forward maps NaN to 0
# (NaN > 0 is False), as the SAE's sparse kernels do on purpose (a NaN pre-activation stays inactive).


def _require(ok, message):
    """Turn a shape or range mistake into a ValueError that names it, instead of a broadcasting error
    three lines later."""
    if not ok:
        raise ValueError(message)



# ----------------------------------------------------------------------------------------------------
# linear: out = x @ W + b


class LinearCache(NamedTuple):
    x: np.ndarray  # [N..., I] the input, needed for dW
    W: np.ndarray  # [I, O] the weight, needed for dx


def check_linear_args(x, W, b):
    """linear_forward's argument checks (the fast layers of kernels/transformer.py run them too)."""
    check_floats(x=x, W=W, b=b)
    _require(W.ndim == 2 and x.shape[-1:] == W.shape[:1] and b.shape == W.shape[1:],
             f"linear expects x [..., I], W [I, O], b [O]; got x {x.shape}, W {W.shape}, b {b.shape}")


def linear_forward(x, W, b):
    """x [N..., I], W [I, O], b [O] -> out [N..., O]."""
    check_linear_args(x, W, b)
    x2 = x.reshape(-1, W.shape[0])  # [n, I]: one 2-d matmul (a batched 3-d one ran 1.3-1.9x slower in OpenBLAS here)
    out = (x2 @ W + b).reshape(*x.shape[:-1], W.shape[1])  # [N..., O]
    return out, LinearCache(x, W)


def linear_backward(dout, cache):
    """dout [N..., O] -> (dx [N..., I], dW [I, O], db [O])."""
    x, W = cache
    x2 = x.reshape(-1, x.shape[-1])  # [n, I]: fold the leading axes so one matmul sums over them
    dout2 = dout.reshape(-1, dout.shape[-1])  # [n, O]
    dx = (dout2 @ W.T).reshape(x.shape)  # [N..., I]
    dW = x2.T @ dout2  # [I, O]
    db = dout2.sum(axis=0)  # [O]
    return dx, dW, db


# ----------------------------------------------------------------------------------------------------
# relu: out = max(x, 0)


class ReluCache(NamedTuple):
    active: np.ndarray  # [N...] bool, where x > 0 (one byte per entry instead of a float copy of x)


def relu_forward(x):
    """x [N...] -> out [N...]: x where x > 0, else 0 (NaN included)."""
    check_floats(x=x)
    active = x > 0
    out = np.where(active, x, 0).astype(x.dtype, copy=False)
    return out, ReluCache(active)


def relu_backward(dout, cache):
    """dout [N...] -> (dx [N...],). The kink at 0 gets gradient 0."""
    dx = np.where(cache.active, dout, 0).astype(dout.dtype, copy=False)
    return (dx,)


# ----------------------------------------------------------------------------------------------------
# gelu: out = x * Phi(x), exactly (erf) or with the tanh approximation of GPT-2

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


class GeluCache(NamedTuple):
    x: np.ndarray  # [N...] the input; the derivative is recomputed from it (cheaper than storing two arrays)
    approximate: str


def gelu_forward(x, approximate="tanh"):
    """x [N...] -> out [N...]. approximate: "tanh" (GPT-2's formula) or "none" (exact, with erf).
    Integer x is refused, not cast: the output keeps x's dtype, and GELU of integers is not an integer."""
    check_floats(x=x)
    if approximate == "tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x**3))
        out = 0.5 * x * (1.0 + t)
    elif approximate == "none":
        out = 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    else:
        raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")
    return out.astype(x.dtype, copy=False), GeluCache(x, approximate)


def gelu_backward(dout, cache):
    """dout [N...] -> (dx [N...],)."""
    x = cache.x
    if cache.approximate == "tanh":
        u = _SQRT_2_OVER_PI * (x + _GELU_C * x**3)
        t = np.tanh(u)
        du_dx = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * x**2)
        dgelu = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * du_dx  # product rule on 0.5 x (1 + tanh u)
    else:
        cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi)
        dgelu = cdf + x * pdf  # d/dx [x Phi(x)]
    return ((dout * dgelu).astype(dout.dtype, copy=False),)


# ----------------------------------------------------------------------------------------------------
# layernorm over the last axis: out = (x - mean) / sqrt(var + eps) * w + b


class LayerNormCache(NamedTuple):
    xhat: np.ndarray  # [N..., D] the normalised input
    inv_std: np.ndarray  # [N..., 1] 1 / sqrt(var + eps)
    w: np.ndarray  # [D]


def check_layernorm_args(x, w, b, eps):
    """layernorm_forward's argument checks (the fast layers run them too)."""
    check_floats(x=x, w=w, b=b)
    check_number("eps", eps, gt=0)
    _require(w.shape == b.shape == x.shape[-1:],
             f"layernorm expects x [..., D], w [D], b [D]; got x {x.shape}, w {w.shape}, b {b.shape}")


def layernorm_forward(x, w, b, eps=1e-5):
    """x [N..., D], w [D], b [D] -> out [N..., D]. A constant row has var 0 and normalises to 0 (eps keeps
    the division finite)."""
    check_layernorm_args(x, w, b, eps)
    mean = x.mean(axis=-1, keepdims=True)  # [N..., 1]
    xc = x - mean  # [N..., D]
    var = (xc * xc).mean(axis=-1, keepdims=True)  # [N..., 1]
    inv_std = 1.0 / np.sqrt(var + eps)  # [N..., 1]
    xhat = xc * inv_std  # [N..., D]
    out = xhat * w + b
    return out, LayerNormCache(xhat, inv_std, w)


def layernorm_backward(dout, cache):
    """dout [N..., D] -> (dx [N..., D], dw [D], db [D]).

    With s = inv_std, xhat = (x - mean) s and g = dout * w (the gradient w.r.t. xhat): x_i moves xhat_j
    through x - mean (s (delta_ij - 1/D)) and through s (ds/dx_i = -s^3 (x_i - mean) / D = -s^2 xhat_i / D,
    which moves xhat_j by -s xhat_i xhat_j / D). Summing g_j times both over j:
        dx = s * (g - mean(g) - xhat * mean(g * xhat)),   exactly, for any eps,
    the two means removing the components of g along the directions that subtracting the mean (all ones)
    and dividing by the std (xhat itself) take away."""
    xhat, inv_std, w = cache
    D = xhat.shape[-1]
    db = dout.reshape(-1, D).sum(axis=0)  # [D]
    dw = (dout * xhat).reshape(-1, D).sum(axis=0)  # [D]
    g = dout * w  # [N..., D] gradient w.r.t. xhat
    dx = inv_std * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dw, db


# ----------------------------------------------------------------------------------------------------
# embedding: out = W_E[ids]


class EmbeddingCache(NamedTuple):
    ids: np.ndarray  # [N...] integer ids, to scatter the gradient back
    vocab_shape: tuple  # W_E.shape


def check_embedding_args(ids, W_E):
    """embedding_forward's argument checks (the fast layers run them too) -> ids as an integer array."""
    check_floats(W_E=W_E)
    _require(W_E.ndim == 2, f"embedding expects W_E [V, D], got shape {W_E.shape}")
    return check_ids("ids", ids, W_E.shape[0])


def embedding_forward(ids, W_E):
    """ids [N...] ints in [0, V), W_E [V, D] -> out [N..., D] (a gather)."""
    ids = check_embedding_args(ids, W_E)
    return W_E[ids], EmbeddingCache(ids, W_E.shape)


def embedding_backward(dout, cache):
    """dout [N..., D] -> (None, dW_E [V, D]). Row v of dW_E sums dout over every position holding id v
    (a scatter-add: `np.add.at` adds repeated ids correctly, where `dW_E[ids] += dout` would not)."""
    dW_E = np.zeros(cache.vocab_shape, dtype=dout.dtype)  # [V, D]
    np.add.at(dW_E, cache.ids.reshape(-1), dout.reshape(-1, cache.vocab_shape[1]))
    return None, dW_E


# ----------------------------------------------------------------------------------------------------
# softmax cross-entropy: loss = mean over tokens of -log softmax(logits)[target]


class CrossEntropyCache(NamedTuple):
    probs: np.ndarray  # [n, V] softmax of the logits (the gradient is probs - onehot)
    targets: np.ndarray  # [n] target ids
    logits_shape: tuple
    token_logp: np.ndarray  # [n] log-probability of each target (its exp may underflow to 0 in probs)


def log_softmax(logits):
    """logits [N..., V] -> log-probabilities [N..., V]; subtracting the row max first keeps exp finite
    for logits of any magnitude."""
    check_floats(logits=logits)
    _require(logits.ndim >= 1 and logits.shape[-1] >= 1, f"logits must be [..., V] with V >= 1, got {logits.shape}")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def check_cross_entropy_args(logits, targets):
    """cross_entropy_forward's argument checks (the fast layers run them too) -> targets as an integer array."""
    check_floats(logits=logits)
    _require(logits.ndim >= 1 and np.shape(targets) == logits.shape[:-1],
             f"cross-entropy expects logits [..., V] and targets [...]; got logits {logits.shape}, "
             f"targets {np.shape(targets)}")
    _require(np.size(targets) > 0, f"targets is empty (shape {np.shape(targets)}): the mean loss over no tokens "
             "is undefined")
    return check_ids("targets", targets, logits.shape[-1])


def cross_entropy_forward(logits, targets):
    """logits [N..., V], targets [N...] ints -> (loss: float, mean over tokens; cache).

    The cache also makes the per-token losses available: `per_token_loss(cache)`."""
    targets = check_cross_entropy_args(logits, targets)
    V = logits.shape[-1]
    logp = log_softmax(logits).reshape(-1, V)  # [n, V]
    t = targets.reshape(-1)  # [n]
    token_logp = logp[np.arange(t.size), t]  # [n]
    loss = float(-token_logp.mean())
    return loss, CrossEntropyCache(np.exp(logp), t, logits.shape, token_logp)


def per_token_loss(cache):
    """The negative log-likelihood of each target, [N...], in nats."""
    return -cache.token_logp.reshape(cache.logits_shape[:-1])


def cross_entropy_backward(dloss, cache):
    """dloss (scalar) -> (dlogits [N..., V], None). d loss / d logits = (softmax - onehot) / n."""
    probs, t, shape, _ = cache
    dlogits = probs.copy()  # [n, V]
    dlogits[np.arange(t.size), t] -= 1.0
    dlogits *= dloss / t.size
    return dlogits.reshape(shape), None


def softmax_cross_entropy(logits, targets):
    """Loss and its gradient in one call: (loss, dlogits [N..., V])."""
    loss, cache = cross_entropy_forward(logits, targets)
    return loss, cross_entropy_backward(1.0, cache)[0]


# ----------------------------------------------------------------------------------------------------
# causal multi-head self-attention (TransformerLens weight shapes)


class AttentionCache(NamedTuple):
    x: np.ndarray  # [B, T, D] input, for the weight gradients of Q, K, V
    q: np.ndarray  # [B, H, T, E]
    k: np.ndarray  # [B, H, T, E]
    v: np.ndarray  # [B, H, T, E]
    pattern: np.ndarray  # [B, H, T, T] softmax of the masked scores (0 above the diagonal)
    z: np.ndarray  # [B, H, T, E] pattern @ v, for dW_O
    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray
    W_O: np.ndarray


def _project_heads(x, W, b):
    """x [B, T, D], W [H, D, E], b [H, E] -> [B, H, T, E]: one projection per head."""
    return np.einsum("btd,hde->bhte", x, W, optimize=True) + b[None, :, None, :]


def causal_mask(T):
    """[T, T] bool, True where a query position (row) may attend to a key position (column): key <= query."""
    check_int("T", T, lo=0)
    return np.tril(np.ones((T, T), dtype=bool))


def causal_softmax(scores):
    """scores [..., T, T] (query rows, key columns) -> pattern [..., T, T]: each row's softmax over the keys
    up to its query; the future gets probability exactly 0. A helper of attention, outside the layers'
    forward/backward contract above: its backward takes the pattern itself, not a cache."""
    scores = np.where(causal_mask(scores.shape[-1]), scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)  # the diagonal is never masked, so max is finite
    pattern = np.exp(scores)
    pattern /= pattern.sum(axis=-1, keepdims=True)
    return pattern


def causal_softmax_backward(dpattern, pattern):
    """dpattern [..., T, T] -> dscores [..., T, T]. Row by row, d pattern_j / d scores_k = pattern_j (delta_jk -
    pattern_k), so dscores_k = pattern_k (dpattern_k - sum_j pattern_j dpattern_j); masked entries have
    pattern 0, so they get gradient 0."""
    return pattern * (dpattern - (dpattern * pattern).sum(axis=-1, keepdims=True))


def check_attention_args(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O):
    """attention_forward's argument checks (the fast layers run them too)."""
    check_floats(x=x, W_Q=W_Q, b_Q=b_Q, W_K=W_K, b_K=b_K, W_V=W_V, b_V=b_V, W_O=W_O, b_O=b_O)
    _require(x.ndim == 3 and W_Q.ndim == 3 and W_Q.shape[1] == x.shape[2],
             f"attention expects x [B, T, D] and W_Q [H, D, E]; got x {x.shape}, W_Q {W_Q.shape}")
    H, D, E = W_Q.shape
    for name, a, shape in (("W_K", W_K, (H, D, E)), ("W_V", W_V, (H, D, E)), ("W_O", W_O, (H, E, D)),
                           ("b_Q", b_Q, (H, E)), ("b_K", b_K, (H, E)), ("b_V", b_V, (H, E)), ("b_O", b_O, (D,))):
        _require(a.shape == shape, f"attention: {name} should have shape {shape} (H={H}, D={D}, E={E}), got {a.shape}")
    _require(x.shape[1] >= 1, f"attention needs at least one position: x has shape {x.shape}")


def attention_forward(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O):
    """Causal multi-head self-attention.

    x [B, T, D]; W_Q, W_K, W_V [H, D, E]; b_Q, b_K, b_V [H, E]; W_O [H, E, D]; b_O [D] -> out [B, T, D].
    Position t attends only to positions <= t; scores are scaled by 1 / sqrt(E).
    Cached: the input, q, k, v, the attention pattern and z (all needed by the backward; recomputing
    the pattern would cost a second softmax)."""
    check_attention_args(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O)
    H, D, E = W_Q.shape
    q = _project_heads(x, W_Q, b_Q)  # [B, H, T, E]
    k = _project_heads(x, W_K, b_K)  # [B, H, T, E]
    v = _project_heads(x, W_V, b_V)  # [B, H, T, E]
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(E)  # [B, H, T, T] query rows, key columns
    pattern = causal_softmax(scores)  # [B, H, T, T]
    z = pattern @ v  # [B, H, T, E]
    out = np.einsum("bhte,hed->btd", z, W_O, optimize=True) + b_O  # [B, T, D]
    return out, AttentionCache(x, q, k, v, pattern, z, W_Q, W_K, W_V, W_O)


def attention_backward(dout, cache):
    """dout [B, T, D] -> (dx, dW_Q, db_Q, dW_K, db_K, dW_V, db_V, dW_O, db_O), shapes as the forward's."""
    x, q, k, v, pattern, z, W_Q, W_K, W_V, W_O = cache
    E = q.shape[-1]
    # out = z W_O + b_O
    db_O = dout.sum(axis=(0, 1))  # [D]
    dW_O = np.einsum("bhte,btd->hed", z, dout, optimize=True)  # [H, E, D]
    dz = np.einsum("btd,hed->bhte", dout, W_O, optimize=True)  # [B, H, T, E]
    # z = pattern @ v
    dpattern = dz @ v.transpose(0, 1, 3, 2)  # [B, H, T, T]
    dv = pattern.transpose(0, 1, 3, 2) @ dz  # [B, H, T, E]
    # pattern = causal_softmax(scores)
    dscores = causal_softmax_backward(dpattern, pattern)  # [B, H, T, T]
    dscores /= math.sqrt(E)
    # scores = q @ k^T (the 1/sqrt(E) is already folded into dscores)
    dq = dscores @ k  # [B, H, T, E]
    dk = dscores.transpose(0, 1, 3, 2) @ q  # [B, H, T, E]
    # q, k, v = x W + b, per head; x feeds all three, so its gradient is their sum
    grads = []
    dx = np.zeros_like(x)
    for d_proj, W in ((dq, W_Q), (dk, W_K), (dv, W_V)):
        grads.append(np.einsum("btd,bhte->hde", x, d_proj, optimize=True))  # dW [H, D, E]
        grads.append(d_proj.sum(axis=(0, 2)))  # db [H, E]
        dx += np.einsum("bhte,hde->btd", d_proj, W, optimize=True)  # [B, T, D]
    dW_Q, db_Q, dW_K, db_K, dW_V, db_V = grads
    return dx, dW_Q, db_Q, dW_K, db_K, dW_V, db_V, dW_O, db_O
