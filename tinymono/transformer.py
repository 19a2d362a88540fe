"""The one-layer transformer of "Towards Monosemanticity", forward and backward written by hand.

One block, pre-layernorm, then a final layernorm and the unembedding (TransformerLens names):

    resid      = W_E[tokens] + W_pos[:T]                      embed
    resid_mid  = resid + attn(ln1(resid))                     causal multi-head attention
    post       = relu(ln2(resid_mid) @ W_in + b_in)           <- hook point mlp.hook_post
    resid_post = resid_mid + post @ W_out + b_out             MLP
    logits     = lnf(resid_post) @ W_U + b_U                  unembed

The sparse autoencoder of later lessons reads `post`, the MLP's activations after the ReLU, at the hook
point `mlp.hook_post`; to measure how much of the model's skill it keeps, the forward can also replace
them (with the SAE's reconstruction, with zeros, with their mean) and run the rest of the model on the
replacement.

Every layer comes from tinymono.layers (the NumPy reference), or, with `fast=True`, from
tinymono.kernels.transformer: the same layers, fused and compiled with numba, which the tests check
against the reference. The model code below is the same either way.

Axis vocabulary: B batch, T position, D d_model, H heads, E d_head, M d_mlp, V d_vocab.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import numpy as np

from tinymono import checkpoint as ckpt
from tinymono import layers as L
from tinymono.kernels import transformer as K
from tinymono.optim import Adam, Schedule, clip_grad_norm
from tinymono.validate import (REAL, InputTypeError, check_array, check_config_ints, check_ids, check_int, check_number,
                               check_rng)

HOOK_POST = "mlp.hook_post"  # the name TransformerLens gives the MLP's post-activation hook


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of the one-layer transformer. The defaults follow the paper where it gives them (d_model 128,
    d_mlp 512, ReLU, layer norm) and choose the rest (4 heads of 32, a context of 128 bytes, a vocabulary
    of the 256 bytes plus one document separator).

    layernorm=False drops all three layer norms (ln1, ln2, lnf): tests use it to check the rest of the
    model in isolation. init_range is the standard deviation of every initial weight (GPT-2's 0.02)."""

    d_vocab: int = 257
    d_model: int = 128
    d_mlp: int = 512
    n_heads: int = 4
    d_head: int = 32
    n_ctx: int = 128
    act_fn: str = "relu"  # "relu" (the paper) or "gelu": GPT-2's tanh approximation (TransformerLens's "gelu_new")
    layernorm: bool = True
    ln_eps: float = 1e-5
    init_range: float = 0.02

    def __post_init__(self):
        check_config_ints(self, ("d_vocab", "d_model", "d_mlp", "n_heads", "d_head", "n_ctx"))
        if self.d_model != self.n_heads * self.d_head:
            raise ValueError(f"d_model ({self.d_model}) must equal n_heads * d_head "
                             f"({self.n_heads} * {self.d_head} = {self.n_heads * self.d_head}): the heads' "
                             "outputs are concatenated back into the residual stream")
        if self.act_fn not in ("relu", "gelu"):
            raise ValueError(f"act_fn must be 'relu' or 'gelu', got {self.act_fn!r}")
        if not self.ln_eps > 0 or not self.init_range > 0:
            raise ValueError(f"ln_eps and init_range must be positive, got {self.ln_eps}, {self.init_range}")

    def to_dict(self):
        return asdict(self)

    def param_shapes(self):
        """name -> shape of every parameter (layer-norm gains and biases only when layernorm is on)."""
        D, H, E, M, V = self.d_model, self.n_heads, self.d_head, self.d_mlp, self.d_vocab
        shapes = {"W_E": (V, D), "W_pos": (self.n_ctx, D),
                  "W_Q": (H, D, E), "b_Q": (H, E), "W_K": (H, D, E), "b_K": (H, E),
                  "W_V": (H, D, E), "b_V": (H, E), "W_O": (H, E, D), "b_O": (D,),
                  "W_in": (D, M), "b_in": (M,), "W_out": (M, D), "b_out": (D,),
                  "W_U": (D, V), "b_U": (V,)}
        if self.layernorm:
            for ln in ("ln1", "ln2", "lnf"):
                shapes[f"{ln}_w"], shapes[f"{ln}_b"] = (D,), (D,)
        return shapes


def init(cfg: TransformerConfig, rng: np.random.Generator, dtype=np.float32):
    """Weights ~ N(0, init_range^2) (GPT-2's recipe), biases 0, layer-norm gains 1. Returns name -> array."""
    check_rng("rng", rng)
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise InputTypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    params = {}
    for name, shape in cfg.param_shapes().items():
        if name.startswith("W_"):
            params[name] = (cfg.init_range * rng.standard_normal(shape)).astype(dtype)
        elif name.endswith("_w"):
            params[name] = np.ones(shape, dtype=dtype)
        else:
            params[name] = np.zeros(shape, dtype=dtype)
    return params


def n_params(cfg: TransformerConfig):
    return sum(math.prod(s) for s in cfg.param_shapes().values())


# ----------------------------------------------------------------------------------------------------
# input checks: a wrong token id would otherwise index W_E silently (negative ids wrap around)


def check_tokens(tokens, cfg: TransformerConfig, max_len=None):
    """Raise ValueError unless tokens is an integer array [B, T] with B >= 1, 1 <= T <= max_len (default n_ctx)
    and every id in [0, d_vocab) (InputTypeError, also a ValueError, for a wrong type or dtype)."""
    max_len = cfg.n_ctx if max_len is None else max_len
    if not isinstance(tokens, np.ndarray):
        raise InputTypeError(f"tokens must be a NumPy integer array [B, T], got {type(tokens).__name__}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise InputTypeError(f"tokens must have an integer dtype, got {tokens.dtype} (token ids are integers in "
                             f"0..{cfg.d_vocab - 1})")
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [B, T], got shape {tokens.shape} (for one sequence use tokens[None])")
    if tokens.shape[0] == 0:
        raise ValueError(f"tokens holds no sequence (shape {tokens.shape}): a batch needs B >= 1")
    if not 1 <= tokens.shape[1] <= max_len:
        raise ValueError(f"tokens has sequence length {tokens.shape[1]}, outside 1..{max_len}: the model has "
                         f"n_ctx={cfg.n_ctx} positions")
    lo, hi = tokens.min(), tokens.max()
    if lo < 0 or hi >= cfg.d_vocab:
        raise ValueError(f"tokens must be in [0, {cfg.d_vocab}) (token ids), got min {lo}, max {hi}")


def check_params(params, cfg: TransformerConfig):
    """Raise ValueError unless params holds exactly the config's parameters, with its shapes and one
    floating dtype (float32 to train, float64 to check gradients)."""
    shapes = cfg.param_shapes()
    if set(params) != set(shapes):
        raise ValueError(f"params do not match the config: missing {sorted(set(shapes) - set(params))}, "
                         f"unexpected {sorted(set(params) - set(shapes))}")
    for k, shape in shapes.items():
        if params[k].shape != shape:
            raise ValueError(f"param {k} has shape {params[k].shape}, the config says {shape}")
    dtypes = {np.dtype(p.dtype) for p in params.values()}
    if len(dtypes) != 1 or dtypes.pop() not in (np.float32, np.float64):
        found = sorted({str(p.dtype) for p in params.values()})
        raise ValueError(f"params must all be float32 or all float64, got {found}")


# ----------------------------------------------------------------------------------------------------
# two interchangeable sets of layers: the NumPy reference and the numba kernels


class Layers(NamedTuple):
    """The layer functions the model is built from; each pair has tinymono.layers' contract, forward ->
    (out, cache) and backward(dout, cache) -> gradients, except that the embedding's backward returns only
    its two weights' gradients (the token ids have none)."""
    embed_forward: Callable  # (tokens, W_E, W_pos) -> (resid, cache)
    embed_backward: Callable  # (dresid, cache) -> (dW_E, dW_pos)
    layernorm_forward: Callable
    layernorm_backward: Callable
    attention_forward: Callable
    attention_backward: Callable
    mlp_in_forward: Callable  # (x, W_in, b_in, act_fn) -> (post, cache): post = act(x @ W_in + b_in)
    mlp_in_backward: Callable  # (dpost, cache) -> (dx, dW_in, db_in)
    linear_forward: Callable
    linear_backward: Callable
    softmax_cross_entropy: Callable  # (logits, targets) -> (mean loss, dlogits)


class EmbedCache(NamedTuple):
    gather: L.EmbeddingCache  # the token ids, for the scatter-add of dW_E
    T: int  # sequence length: W_pos rows T.. get gradient 0
    n_ctx: int


def _embed_forward(tokens, W_E, W_pos):
    """tokens [B, T] -> resid [B, T, D] = W_E[tokens] + W_pos[:T] (token identity plus position)."""
    tok, cache = L.embedding_forward(tokens, W_E)  # [B, T, D]
    return tok + W_pos[: tokens.shape[1]], EmbedCache(cache, tokens.shape[1], W_pos.shape[0])


def _embed_backward(dresid, cache):
    """dresid [B, T, D] -> (dW_E [V, D], dW_pos [n_ctx, D])."""
    _, dW_E = L.embedding_backward(dresid, cache.gather)
    dW_pos = np.zeros((cache.n_ctx, dresid.shape[-1]), dtype=dresid.dtype)
    dW_pos[: cache.T] = dresid.sum(axis=0)  # every sequence in the batch used the same position rows
    return dW_E, dW_pos


class MlpInCache(NamedTuple):
    linear: L.LinearCache  # x and W_in, for dW_in and dx
    act: object  # L.ReluCache or L.GeluCache, for dpre


def _mlp_in_forward(x, W_in, b_in, act_fn):
    """x [B, T, D] -> post [B, T, M] = act(x @ W_in + b_in)."""
    pre, lin_cache = L.linear_forward(x, W_in, b_in)  # [B, T, M]
    post, act_cache = L.relu_forward(pre) if act_fn == "relu" else L.gelu_forward(pre)
    return post, MlpInCache(lin_cache, act_cache)


def _mlp_in_backward(dpost, cache):
    act_backward = L.relu_backward if isinstance(cache.act, L.ReluCache) else L.gelu_backward
    (dpre,) = act_backward(dpost, cache.act)
    return L.linear_backward(dpre, cache.linear)


REFERENCE = Layers(_embed_forward, _embed_backward, L.layernorm_forward, L.layernorm_backward,
                   L.attention_forward, L.attention_backward, _mlp_in_forward, _mlp_in_backward,
                   L.linear_forward, L.linear_backward, L.softmax_cross_entropy)


def _fast_layers():
    """The numba-compiled set, built on first use (so that a process which only reads the model never changes
    how its memory is freed)."""
    K.keep_freed_memory()  # reuse each step's ~40 MB of freed arrays instead of page-faulting them in again

    def mlp_in_forward(x, W_in, b_in, act_fn):
        if act_fn == "relu":
            return K.linear_relu_forward(x, W_in, b_in)
        return _mlp_in_forward(x, W_in, b_in, act_fn)  # gelu: the reference

    def mlp_in_backward(dpost, cache):
        if isinstance(cache, K.LinearReluCache):
            return K.linear_relu_backward(dpost, cache)
        return _mlp_in_backward(dpost, cache)

    return Layers(K.embed_forward, K.embed_backward, K.layernorm_forward, K.layernorm_backward,
                  K.attention_forward, K.attention_backward, mlp_in_forward, mlp_in_backward,
                  K.linear_forward, K.linear_backward, K.softmax_cross_entropy)


_FAST = []


def layers_for(fast) -> Layers:
    """fast: False (the reference), True (the kernels), or a Layers set of your own (the benchmark passes
    one that times every call)."""
    if isinstance(fast, Layers):
        return fast
    if not fast:
        return REFERENCE
    if not _FAST:
        _FAST.append(_fast_layers())
    return _FAST[0]


# ----------------------------------------------------------------------------------------------------
# forward, with the hook point mlp.hook_post


class Cache(NamedTuple):
    """Everything the backward needs, plus the activations a learner may want to look at. Each layer's own
    cache holds what its backward reads (tinymono.layers says what and why), so the backward recomputes
    nothing; the residual-stream arrays and hook_post are the very arrays the forward used, not copies."""
    layers: Layers  # which layer set ran the forward (the backward must use the same one)
    embed: object
    ln1: object  # None when cfg.layernorm is False
    attn: object
    ln2: object
    mlp_in: object
    mlp_out: object
    lnf: object
    unembed: object
    resid_pre: np.ndarray  # [B, T, D] hook_resid_pre: the embedding
    resid_mid: np.ndarray  # [B, T, D] after attention
    resid_post: np.ndarray  # [B, T, D] after the MLP
    hook_post: np.ndarray  # [B, T, M] the MLP activations as the model computed them (before any replacement)
    replaced: bool  # True when hook_post was replaced for the rest of the forward
    pattern: np.ndarray  # [B, H, T, T] attention pattern (query rows, key columns)


def _ln_forward(layers, x, params, name, cfg):
    if not cfg.layernorm:
        return x, None
    return layers.layernorm_forward(x, params[f"{name}_w"], params[f"{name}_b"], cfg.ln_eps)


def _ln_backward(layers, dout, cache, grads, name):
    if cache is None:
        return dout
    dx, grads[f"{name}_w"], grads[f"{name}_b"] = layers.layernorm_backward(dout, cache)
    return dx


def _replacement(post, hook_post):
    """What the rest of the model sees at mlp.hook_post: (array [B, T, M], replaced?)."""
    if hook_post is None:
        return post, False
    if callable(hook_post):
        view = post.view()  # read-only: the cache keeps post (the fast layers' backward reads the ReLU's mask from it)
        view.flags.writeable = False
        try:
            new = hook_post(view)
        except ValueError as e:
            if "read-only" not in str(e):
                raise
            raise ValueError(f"a {HOOK_POST} hook must return its edit (new = post.copy(); new[..., j] = 5.0; "
                             "return new), not write into post") from e
    else:
        new = hook_post
    if new is None:  # a function that only read the activations
        return post, False
    new = check_array(f"the replacement for {HOOK_POST}", new, kinds=REAL).astype(post.dtype, copy=False)
    try:
        return np.broadcast_to(new, post.shape), True
    except ValueError:
        raise ValueError(f"the replacement for {HOOK_POST} has shape {new.shape}, which does not broadcast to "
                         f"the activations' shape {post.shape} [B, T, d_mlp]") from None


def forward(params, tokens, cfg: TransformerConfig, *, hook_post=None, fast=False):
    """tokens [B, T] ints in [0, d_vocab), T <= n_ctx -> (logits [B, T, V], cache).

    hook_post, the hook point mlp.hook_post (the MLP activations after the activation function, [B, T, M]):
        None               run the model as it is (the activations are in cache.hook_post either way);
        an array           use it instead of the activations for the rest of the forward: [B, T, M],
                           or anything that broadcasts to it (0.0 for zero-ablation, a [M] mean);
        a function f(post) called with the activations (a read-only view: an edit is returned, not
                           written into post); if it returns an array, that replaces them (an SAE's
                           reconstruction), if it returns None nothing changes (a reader).
    A replacement is a constant to the backward, like PyTorch's `.detach()`: the gradient stops there,
    so W_in, b_in and ln2 get gradient 0 and the residual stream gets none through the MLP.
    fast: use the numba kernels (tinymono.kernels.transformer) instead of the NumPy reference layers
    (or pass a Layers set, see layers_for)."""
    check_tokens(tokens, cfg)
    check_params(params, cfg)
    layers = layers_for(fast)
    resid, c_embed = layers.embed_forward(tokens, params["W_E"], params["W_pos"])  # [B, T, D]
    x, c_ln1 = _ln_forward(layers, resid, params, "ln1", cfg)  # [B, T, D]
    attn_out, c_attn = layers.attention_forward(x, params["W_Q"], params["b_Q"], params["W_K"], params["b_K"],
                                                params["W_V"], params["b_V"], params["W_O"], params["b_O"])  # [B, T, D]
    resid_mid = resid + attn_out  # [B, T, D]
    x, c_ln2 = _ln_forward(layers, resid_mid, params, "ln2", cfg)
    post, c_mlp_in = layers.mlp_in_forward(x, params["W_in"], params["b_in"], cfg.act_fn)  # [B, T, M]  mlp.hook_post
    used, replaced = _replacement(post, hook_post)  # [B, T, M]
    mlp_out, c_mlp_out = layers.linear_forward(used, params["W_out"], params["b_out"])  # [B, T, D]
    resid_post = resid_mid + mlp_out  # [B, T, D]
    x, c_lnf = _ln_forward(layers, resid_post, params, "lnf", cfg)
    logits, c_unembed = layers.linear_forward(x, params["W_U"], params["b_U"])  # [B, T, V]
    cache = Cache(layers, c_embed, c_ln1, c_attn, c_ln2, c_mlp_in, c_mlp_out, c_lnf, c_unembed,
                  resid, resid_mid, resid_post, post, replaced, c_attn.pattern)
    return logits, cache


def backward(params, cache: Cache, cfg: TransformerConfig, dlogits):
    """dlogits [B, T, V] (the gradient of a scalar loss w.r.t. the logits) -> grads, fresh arrays with the
    keys of params. The forward's lines in reverse; the residual stream, which each block reads and adds
    to, collects its gradient as a visible sum at each `resid = resid + block(resid)`."""
    layers, grads = cache.layers, {}
    dlogits = check_array("dlogits", dlogits, (*cache.resid_post.shape[:-1], cfg.d_vocab), finite=False)
    dx, grads["W_U"], grads["b_U"] = layers.linear_backward(dlogits, cache.unembed)  # [B, T, D]
    dresid_post = _ln_backward(layers, dx, cache.lnf, grads, "lnf")  # [B, T, D]
    # resid_post = resid_mid + mlp_out
    dused, grads["W_out"], grads["b_out"] = layers.linear_backward(dresid_post, cache.mlp_out)  # [B, T, M]
    if cache.replaced:  # the replacement is a constant: the MLP's input side gets no gradient
        grads["W_in"], grads["b_in"] = np.zeros_like(params["W_in"]), np.zeros_like(params["b_in"])
        if cfg.layernorm:
            grads["ln2_w"], grads["ln2_b"] = np.zeros_like(params["ln2_w"]), np.zeros_like(params["ln2_b"])
        dresid_mid = dresid_post
    else:
        dx, grads["W_in"], grads["b_in"] = layers.mlp_in_backward(dused, cache.mlp_in)  # [B, T, D]
        dresid_mid = dresid_post + _ln_backward(layers, dx, cache.ln2, grads, "ln2")  # both uses of resid_mid
    # resid_mid = resid + attn_out
    (dx, grads["W_Q"], grads["b_Q"], grads["W_K"], grads["b_K"], grads["W_V"], grads["b_V"], grads["W_O"],
     grads["b_O"]) = layers.attention_backward(dresid_mid, cache.attn)  # [B, T, D]
    dresid = dresid_mid + _ln_backward(layers, dx, cache.ln1, grads, "ln1")  # [B, T, D]
    grads["W_E"], grads["W_pos"] = layers.embed_backward(dresid, cache.embed)
    return {k: grads[k] for k in params}


# ----------------------------------------------------------------------------------------------------
# losses: each row of `tokens` is a window [B, T+1]; position t predicts token t+1


def _split(tokens, cfg):
    check_tokens(tokens, cfg, max_len=cfg.n_ctx + 1)
    if tokens.shape[1] < 2:
        raise ValueError(f"a loss needs windows of at least 2 tokens (inputs and next-token targets), got "
                         f"shape {tokens.shape}")
    return tokens[:, :-1], tokens[:, 1:]


def loss_and_grads(params, tokens, cfg: TransformerConfig, *, hook_post=None, fast=False):
    """tokens [B, T+1] -> (mean next-token cross-entropy in nats, grads)."""
    inputs, targets = _split(tokens, cfg)
    logits, cache = forward(params, inputs, cfg, hook_post=hook_post, fast=fast)
    loss, dlogits = cache.layers.softmax_cross_entropy(logits, targets)
    return loss, backward(params, cache, cfg, dlogits)


def per_token_loss(params, tokens, cfg: TransformerConfig, *, hook_post=None, fast=False):
    """tokens [B, T+1] -> [B, T] nats: -log p(tokens[:, t+1] | tokens[:, :t+1]). Divide by ln 2 for bits
    (one token is one byte, so bits per token are bits per byte)."""
    inputs, targets = _split(tokens, cfg)
    logits, _ = forward(params, inputs, cfg, hook_post=hook_post, fast=fast)  # [B, T, V]
    logp = L.log_softmax(logits.astype(np.float64))  # float64: the loss is summed over many tokens
    return -np.take_along_axis(logp, targets[..., None].astype(np.intp), axis=-1)[..., 0]


def loss(params, tokens, cfg: TransformerConfig, *, hook_post=None, fast=False):
    """tokens [B, T+1] -> mean next-token cross-entropy (nats) as a float."""
    return float(per_token_loss(params, tokens, cfg, hook_post=hook_post, fast=fast).mean())


# ----------------------------------------------------------------------------------------------------
# sampling


def _prompt_tokens(prompt):
    if isinstance(prompt, str):
        prompt = prompt.encode("utf-8")
    if isinstance(prompt, (bytes, bytearray)):
        return np.frombuffer(bytes(prompt), dtype=np.uint8).astype(np.int64)
    arr = np.asarray(prompt)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"prompt must be a str, bytes or a 1-D sequence of token ids, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)


def sample(params, cfg: TransformerConfig, prompt, n_new, rng: np.random.Generator, *, temperature=1.0,
           top_k=None, hook_post=None, fast=False):
    """Continue `prompt` (str, encoded as UTF-8; bytes; or token ids) by n_new tokens, one at a time.

    Each new token is drawn from softmax(logits / temperature) of the last position (temperature 0:
    the most likely token), restricted to the top_k most likely when given. Beyond n_ctx tokens the
    model sees only the last n_ctx (the window slides). hook_post is applied at every step as in
    `forward` (a feature pinned on steers what the model writes). Returns all token ids
    [len(prompt) + n_new]."""
    tokens = _prompt_tokens(prompt)
    if tokens.size == 0:
        raise ValueError("the prompt needs at least one token (e.g. the byte corpus's separator, corpus.DOC_SEP)")
    return sample_many(params, cfg, tokens[None], n_new, [rng], temperature=temperature, top_k=top_k,
                       hook_post=hook_post, fast=fast)[0]


def sample_many(params, cfg: TransformerConfig, prompts, n_new, rngs, *, temperature=1.0, top_k=None,
                hook_post=None, fast=False):
    """`sample` for several prompts of one length at once: prompts [B, T] token ids, rngs B generators (row
    b draws its tokens from rngs[b]) -> [B, T + n_new]. Each step is one forward of all B windows, not B
    forwards of one: every row is computed as it would be alone (the model mixes positions, never rows), up
    to the rounding of the matrix products, which may sum in another order for another batch size."""
    n_new = check_int("n_new", n_new, lo=0)
    temperature = check_number("temperature", temperature, lo=0)
    if top_k is not None:
        top_k = check_int("top_k", top_k, 1, cfg.d_vocab)
    prompts = np.asarray(prompts)
    check_tokens(prompts, cfg, max_len=prompts.shape[-1] if prompts.ndim == 2 else None)  # a long prompt slides
    if len(rngs) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts need as many generators, got {len(rngs)}")
    B, T = prompts.shape
    out = np.empty((B, T + n_new), dtype=np.int64)
    out[:, :T] = prompts
    for t in range(T, T + n_new):
        window = np.ascontiguousarray(out[:, max(0, t - cfg.n_ctx):t])  # [B, <= n_ctx]: the window slides
        logits, _ = forward(params, window, cfg, hook_post=hook_post, fast=fast)
        for b, rng in enumerate(rngs):
            last = logits[b, -1].astype(np.float64)  # [V]
            if temperature == 0:
                out[b, t] = np.argmax(last)
                continue
            last = last / temperature
            if top_k is not None:
                last[last < np.sort(last)[-top_k]] = -np.inf  # ties at the k-th value are all kept
            probs = np.exp(last - last.max())
            out[b, t] = rng.choice(cfg.d_vocab, p=probs / probs.sum())
    return out


# ----------------------------------------------------------------------------------------------------
# evaluation over a long stream of bytes


def window_plan(n_tokens, n_ctx, stride=None):
    """Windows over a stream of n_tokens tokens -> (starts [n_windows], keep_from [n_windows], W, stride).

    Window k covers tokens starts[k] .. starts[k] + W - 1 (W = min(n_ctx, n_tokens)) and keeps its
    positions keep_from[k] .. W - 1. Windows slide by `stride` (default W // 2); one last window sits
    flush with the end of the stream. Every token is kept exactly once, from the earliest window that
    holds it with at least W - stride + 1 tokens of context (the first window keeps all its positions:
    nothing before it can give them more)."""
    if n_tokens < 1:
        raise ValueError(f"need at least one token, got n_tokens={n_tokens}")
    W = min(n_ctx, n_tokens)
    stride = max(1, W // 2) if stride is None else check_int("stride", stride)
    if not 1 <= stride <= n_ctx:
        raise ValueError(f"stride must be in 1..{n_ctx} (n_ctx), got {stride}")
    stride = min(stride, W)  # a stream shorter than n_ctx is one window, whatever the stride
    starts = list(range(0, n_tokens - W + 1, stride))
    if starts[-1] + W < n_tokens:
        starts.append(n_tokens - W)  # flush with the end
    starts = np.array(starts, dtype=np.int64)
    ends = starts + W  # [n_windows] one past the last token each window holds
    covered = np.concatenate([[0], ends[:-1]])  # tokens before this are kept by earlier windows
    return starts, covered - starts, W, stride


def stream_bits(params, cfg: TransformerConfig, tokens, *, stride=None, batch=32, fast=True):
    """tokens [N] -> bits [N-1]: bits[i] = -log2 p(tokens[i+1] | the up to n_ctx tokens ending at i).

    The N - 1 predictions are scored in the windows of `window_plan` (n_ctx + 1 tokens each, sliding by
    `stride`, default n_ctx // 2), each in the earliest window that gives it enough context: a window's
    first positions see almost nothing, and scoring them would charge the model for text it was never
    shown."""
    tokens = check_ids("tokens", tokens, cfg.d_vocab)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one stream [N], got shape {tokens.shape}")
    batch = check_int("batch", batch, lo=1)
    N = len(tokens)
    if N < 2:
        raise ValueError(f"need at least 2 tokens, got {N}")
    starts, keep_from, W, _ = window_plan(N - 1, cfg.n_ctx, stride)
    bits = np.empty(N - 1, dtype=np.float64)
    for b0 in range(0, len(starts), batch):
        chunk = starts[b0:b0 + batch]
        windows = np.stack([tokens[s:s + W + 1] for s in chunk]).astype(np.int64)  # [b, W+1]
        nats = per_token_loss(params, windows, cfg, fast=fast)  # [b, W]: row r scores bits[s : s + W]
        for s, k, row in zip(chunk, keep_from[b0:b0 + batch], nats):
            bits[s + k:s + W] = row[k:] / math.log(2)
    return bits


def label_means(bits, labels, names):
    """Mean of bits per label: labels [n] ints indexing names -> {name: mean} (labels with no bytes left out)."""
    labels = check_ids("labels", labels, len(names)).astype(np.intp)
    bits = check_array("bits", bits, labels.shape, kinds=REAL, nonempty=False)
    sums = np.bincount(labels, weights=bits, minlength=len(names))
    counts = np.bincount(labels, minlength=len(names))
    return {name: float(sums[i] / counts[i]) for i, name in enumerate(names) if counts[i]}


def evaluate(params, cfg: TransformerConfig, corpus, *, split="val", max_tokens=None, fast=True):
    """Bits per byte on a corpus split, per context label and per detail label of the predicted byte.
    Returns {"overall": x, "context": {label: x}, "detail": {label: x}}."""
    data = corpus.split(split)
    n = len(data.tokens) if max_tokens is None else min(check_int("max_tokens", max_tokens, lo=2), len(data.tokens))
    bits = stream_bits(params, cfg, np.asarray(data.tokens[:n]), fast=fast)
    return {"overall": float(bits.mean()),
            "context": label_means(bits, data.context[1:n], corpus.context_names),
            "detail": label_means(bits, data.detail[1:n], corpus.detail_names)}


def causality_leaks(params, cfg: TransformerConfig, tokens, *, fast=False):
    """tokens [B, T] -> how many positions t, when their token is changed (to the next id), change a logit at
    some earlier position: 0 for a causal model (lessons 04 and 05 check it)."""
    base, _ = forward(params, tokens, cfg, fast=fast)
    leaks = 0
    for t in range(tokens.shape[1]):
        changed = tokens.copy()
        changed[:, t] = (changed[:, t] + 1) % cfg.d_vocab
        leaks += int(np.any(forward(params, changed, cfg, fast=fast)[0][:, :t] != base[:, :t]))
    return leaks


# ----------------------------------------------------------------------------------------------------
# training: a task for tinymono.train.train


@dataclass(frozen=True)
class TrainConfig:
    """How the transformer is trained: AdamW, linear warm-up then cosine decay to final_ratio * lr,
    gradient clipping at `clip` (joint L2 norm). eval_every > 0 adds a per-label evaluation on the
    first eval_tokens validation bytes every that many steps, and one on the whole validation split after
    the last step (at the default scale about 50 s); 0 evaluates nothing but the small validation loss of
    the progress line (lesson 10's model B, whose evaluations nobody reads)."""

    steps: int = 6000
    batch: int = 32
    lr: float = 2e-3  # measured on the default corpus, see lesson 05
    warmup: int = 300
    final_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.99)
    clip: float = 1.0
    seed: int = 0
    eval_every: int = 0
    eval_tokens: int = 200_000
    val_windows: int = 16  # windows of the validation split scored after every chunk (the val_bpb metric)

    def __post_init__(self):
        check_config_ints(self, ("steps", "batch", "val_windows"))
        check_config_ints(self, ("warmup", "eval_every"), lo=0)
        check_config_ints(self, ("eval_tokens",), lo=2)
        if self.warmup > self.steps:
            raise ValueError(f"need warmup <= steps; got warmup {self.warmup}, steps {self.steps}")
        if not (self.lr > 0 and self.clip > 0 and self.weight_decay >= 0 and 0 <= self.final_ratio <= 1):
            raise ValueError(f"need lr > 0, clip > 0, weight_decay >= 0, final_ratio in [0, 1]; got {self.lr}, "
                             f"{self.clip}, {self.weight_decay}, {self.final_ratio}")
        if len(self.betas) != 2 or not all(0 <= float(b) < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))


class TransformerTask:
    """Trains the transformer on a labelled corpus (tinymono.corpus) through tinymono.train.train.

    Each step draws `batch` random windows of n_ctx + 1 bytes from the training split (position t predicts
    byte t + 1), takes one AdamW step on the mean cross-entropy, and reports bits per byte. The batch
    generator's state is part of the checkpoint, so a resumed run draws the same batches and ends
    bit-identical to one never stopped."""

    items_name = "tok"

    def __init__(self, cfg: TransformerConfig, train_cfg: TrainConfig, corpus, *, fast=True):
        self.cfg, self.train_cfg, self.corpus, self.fast = cfg, train_cfg, corpus, fast
        init_seed, batch_seed, val_seed = np.random.SeedSequence(train_cfg.seed).spawn(3)
        self.params = init(cfg, np.random.default_rng(init_seed))
        self.batch_rng = np.random.default_rng(batch_seed)
        # a fixed handful of validation windows, scored after every chunk: a cheap, comparable curve
        self.val_tokens = corpus.sample_windows("val", train_cfg.val_windows, cfg.n_ctx + 1,
                                                np.random.default_rng(val_seed))[0]
        self.opt = Adam(self.params, lr=train_cfg.lr, betas=train_cfg.betas, weight_decay=train_cfg.weight_decay)
        self.schedule = Schedule(train_cfg.lr, train_cfg.steps, train_cfg.warmup, decay="cosine",
                                 final_ratio=train_cfg.final_ratio)
        self.items_per_step = train_cfg.batch * cfg.n_ctx
        self.evals = []  # per-label evaluations: {"step", "tokens", "overall", "context", "detail"}

    def config_dict(self):
        tc = asdict(self.train_cfg)
        return {"model": self.cfg.to_dict(), "train": tc, "corpus": self.corpus.meta.get("fingerprint")}

    def _evaluate(self, step, max_tokens):
        result = evaluate(self.params, self.cfg, self.corpus, max_tokens=max_tokens, fast=self.fast)
        n = len(self.corpus.val.tokens) if max_tokens is None else min(max_tokens, len(self.corpus.val.tokens))
        self.evals.append({"step": step, "tokens": n, **result})

    def run_chunk(self, start_step, n_steps):
        tc, bits, norms = self.train_cfg, [], []
        for step in range(start_step, start_step + n_steps):
            tokens, _, _ = self.corpus.sample_windows("train", tc.batch, self.cfg.n_ctx + 1, self.batch_rng)
            loss_nats, grads = loss_and_grads(self.params, tokens, self.cfg, fast=self.fast)
            norms.append(clip_grad_norm(grads, tc.clip))
            self.opt.step(self.params, grads, lr=self.schedule(step))
            bits.append(loss_nats / math.log(2))
            if tc.eval_every and (step + 1) % tc.eval_every == 0 and step + 1 < tc.steps:
                self._evaluate(step + 1, tc.eval_tokens)
        if tc.eval_every and start_step + n_steps == tc.steps:
            self._evaluate(tc.steps, None)  # the whole validation split, once, at the end
        val = loss(self.params, self.val_tokens, self.cfg, fast=self.fast) / math.log(2)
        return {"bpb": float(np.mean(bits)), "val_bpb": val, "grad_norm": float(np.mean(norms)),
                "lr": self.schedule(start_step + n_steps - 1)}

    def state_arrays(self):
        return {**{f"params.{k}": v for k, v in self.params.items()}, **self.opt.state_arrays("adam"),
                "batch_rng": np.array(json.dumps(self.batch_rng.bit_generator.state)),
                "evals": np.array(json.dumps(self.evals))}

    def load_state_arrays(self, arrays):
        ckpt.validate_shapes({k[len("params."):]: v for k, v in arrays.items() if k.startswith("params.")},
                             self.cfg.param_shapes(), "transformer checkpoint")
        for k in self.params:
            self.params[k] = np.array(arrays[f"params.{k}"], dtype=self.params[k].dtype)
        self.opt.load_state_arrays(arrays, "adam")
        self.batch_rng.bit_generator.state = json.loads(str(arrays["batch_rng"]))
        self.evals = json.loads(str(arrays["evals"]))


def load_model(path):
    """A trained model from a TransformerTask checkpoint -> (params, cfg, meta); meta["config"] holds the
    model, training and corpus settings, meta["step"] the steps done."""
    arrays, meta = ckpt.load(path)
    cfg = TransformerConfig(**meta["config"]["model"])
    params = {k[len("params."):]: v for k, v in arrays.items() if k.startswith("params.")}
    ckpt.validate_shapes(params, cfg.param_shapes(), str(path))
    meta["evals"] = json.loads(str(arrays["evals"])) if "evals" in arrays else []
    return params, cfg, meta
