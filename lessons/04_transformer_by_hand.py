# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 04: a one-layer transformer, by hand
#
# *Exercise mode:* `python -m tinymono exercises 04` lets you write this lesson's functions yourself (README.md).
#
# **What the paper says.** "Towards Monosemanticity" does not open up a large model. It trains its own
# *one-layer* transformer (d_model 128, an MLP of 512 ReLU neurons, layer norm) and then studies the
# 512 MLP activations with a sparse autoencoder. One layer is enough to show polysemantic neurons, and
# small enough that every feature can be traced from the input bytes to the next-token logits.
#
# **What this implementation chose.** The paper does not give the number of heads, the context length or
# the tokeniser. tinymono uses 4 heads of 32 dimensions, a context of 128 tokens, and bytes as tokens
# (256 byte values plus one document separator), so that every token carries a ground-truth label in
# the corpus of lesson 05. It also departs from the paper on purpose in one size: the model lesson 05
# trains has an MLP of 128 neurons, not 512 (lesson 05 says why). The whole model, in `tinymono/transformer.py`, is:
#
#     resid      = W_E[tokens] + W_pos[:T]                     embed
#     resid_mid  = resid + attn(ln1(resid))                    causal multi-head attention
#     post       = relu(ln2(resid_mid) @ W_in + b_in)          <- hook point mlp.hook_post
#     resid_post = resid_mid + post @ W_out + b_out            MLP
#     logits     = lnf(resid_post) @ W_U + b_U                 unembed
#
# Every layer is a pair of functions in `tinymono/layers.py`: `forward(x, *params) -> (out, cache)` and
# `backward(dout, cache) -> (dx, *dparams)`. This lesson looks at each one, checks its backward against
# central differences, assembles the model, checks the whole backward the same way, and finally makes the
# model memorise one batch of text to show that all those gradients really point downhill.

# %%
import tinymono  # noqa: F401, I001  (first: it tells OpenBLAS how long to spin before NumPy loads it)
import math
import time

import numpy as np

from tinymono import layers as L
from tinymono import pipeline, plots, text
from tinymono import transformer as tr
from tinymono.gradcheck import check_gradients, check_layer, format_table
from tinymono.lesson import Lesson
from tinymono.optim import Adam, clip_grad_norm

lesson = Lesson("04_transformer_by_hand")
rng = np.random.default_rng(lesson.seeded(0))  # seed 0 keeps the lesson's own seeds (--seed N: lesson.py)
BUDGET = 1e-6  # float64 central differences of a correct backward land near 1e-9; a wrong one near 1
worst = {}  # the largest relative error of each check, for the summary at the end

# %% [markdown]
# ## Embedding: a lookup, and a scatter-add on the way back
#
# A token id selects a row of W_E [d_vocab, d_model]; a learned position vector W_pos[t] is added, so the
# same byte at different positions gets different vectors. The backward of a lookup is a *scatter-add*:
# every position holding token v adds its gradient into row v of dW_E. Repeated ids must add up
# (`np.add.at`), which is the classic bug: `dW_E[ids] += dout` silently keeps only one of them.

# %%
ids = rng.integers(0, 4, size=(2, 5))  # a vocabulary of 4: ids repeat
W_E = rng.standard_normal((4, 3))
errors = check_layer(L.embedding_forward, L.embedding_backward, [ids, W_E], ["ids", "W_E"], rng=rng)
print(format_table(errors, BUDGET, "embedding"))
worst["embedding"] = max(errors.values())

# %% [markdown]
# ## Attention: each position looks back, never forward
#
# Each head projects the residual stream to queries, keys and values (W_Q, W_K, W_V [n_heads, d_model,
# d_head]), scores every (query, key) pair by q . k / sqrt(d_head), and mixes the values with the softmax
# of those scores. A language model must not see the byte it is predicting, so a query at position t may
# only score keys at positions <= t: the scores above the diagonal are set to -inf before the softmax,
# which makes their weights exactly 0. The figure shows the mask, one head's raw scores, and the
# resulting pattern: each row sums to 1 over the past and the present.

# %%
T_demo = 8
x = rng.standard_normal((1, T_demo, 6))
attn_args = [x, *(a for _ in range(3) for a in (rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 3)))),
             rng.standard_normal((2, 3, 6)) / np.sqrt(3), rng.standard_normal(6)]
out, cache = L.attention_forward(*attn_args)
scores = cache.q[0, 0] @ cache.k[0, 0].T / math.sqrt(3)  # [T, T] head 0, before the mask

lesson.savefig(plots.attention_pieces(L.causal_mask(T_demo), scores, cache.pattern[0, 0]), "causal_attention.png",
               "Causal attention on random inputs: the mask (a query sees keys at its own position and "
               "before), one head's raw scores q.k/sqrt(d_head), and the pattern softmax(masked scores), "
               "exactly 0 above the diagonal, each row summing to 1.")
print("pattern rows sum to", np.round(cache.pattern[0, 0].sum(-1), 12))
print("largest weight above the diagonal:", np.abs(np.triu(cache.pattern, k=1)).max())

# %% [markdown]
# The backward goes through the same steps in reverse: the output projection, pattern @ v (giving
# gradients for both), the softmax (dscores = pattern * (dpattern - rowsum(pattern * dpattern))), and the
# three projections, whose gradients w.r.t. the input x are *added*, since x fed all three.
#
# One entry of the table is special: the key bias b_K. Adding the same vector to every key shifts all of
# a query's scores by the same amount, which the softmax ignores, so its true gradient is exactly 0 and
# its "relative error" compares round-off with round-off. We check that it is ~0 instead.

# %%
names = ["x", "W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O"]
errors = check_layer(L.attention_forward, L.attention_backward, attn_args, names, rng=rng)
db_K = L.attention_backward(rng.standard_normal(out.shape), cache)[4]
print(format_table({k: v for k, v in errors.items() if k != "b_K"}, BUDGET, "causal attention"))
print(f"  b_K: gradient must be 0, largest entry {np.abs(db_K).max():.1e}")
worst["attention"] = max(v for k, v in errors.items() if k != "b_K")

# %% [markdown]
# ## The MLP, the layer norms, and the unembedding with its loss
#
# The MLP reads the residual stream, widens it to d_mlp neurons (512 in the paper, 128 in lesson 05's
# model), applies a ReLU and writes back.
# Its post-ReLU activations are what the sparse autoencoder of the later lessons will read: the hook
# point `mlp.hook_post`. ReLU has a kink at 0, where a difference quotient that straddles it is wrong by
# design, so the check draws inputs away from 0. Layer norm subtracts each vector's mean, divides by its
# standard deviation and applies a learned gain and bias. The unembedding maps back to one logit per
# token, and cross-entropy compares those logits with the byte that actually came next.

# %%
x = rng.standard_normal((2, 3, 4))
away = np.sign(x) * (0.1 + np.abs(x))  # |pre-activation| >= 0.1, far from the kink


def mlp_forward(x, W_in, b_in, W_out, b_out):
    pre, c1 = L.linear_forward(x, W_in, b_in)
    post, c2 = L.relu_forward(pre)
    out, c3 = L.linear_forward(post, W_out, b_out)
    return out, (c1, c2, c3)


def mlp_backward(dout, cache):
    c1, c2, c3 = cache
    dpost, dW_out, db_out = L.linear_backward(dout, c3)
    (dpre,) = L.relu_backward(dpost, c2)
    dx, dW_in, db_in = L.linear_backward(dpre, c1)
    return dx, dW_in, db_in, dW_out, db_out


# W_in = identity, b_in = 0 keeps every pre-activation equal to an input, so none sits near the kink
mlp_args = [away, np.eye(4), np.zeros(4), rng.standard_normal((4, 4)), rng.standard_normal(4)]
errors = check_layer(mlp_forward, mlp_backward, mlp_args, ["x", "W_in", "b_in", "W_out", "b_out"], rng=rng)
print(format_table(errors, BUDGET, "MLP (linear, ReLU, linear)"))
worst["mlp"] = max(errors.values())

ln_args = [rng.standard_normal((2, 3, 6)), rng.standard_normal(6), rng.standard_normal(6)]
errors = check_layer(L.layernorm_forward, L.layernorm_backward, ln_args, ["x", "w", "b"], rng=rng)
print(format_table(errors, BUDGET, "layer norm"))
worst["layernorm"] = max(errors.values())

logits = 2 * rng.standard_normal((2, 3, 7))
targets = rng.integers(0, 7, size=(2, 3))
errors = check_layer(L.cross_entropy_forward, L.cross_entropy_backward, [logits, targets], ["logits", "targets"],
                     rng=rng)
print(format_table(errors, BUDGET, "softmax cross-entropy"))
worst["cross-entropy"] = max(errors.values())

# %% [markdown]
# ## The whole model
#
# `tr.forward` chains the layers; `tr.backward` walks them in reverse. The residual stream is the one
# value read twice at each block (by the block, and by the skip connection around it), so its gradient
# is a visible sum: `dresid_mid = dresid_post + (gradient through the MLP)`. We check every parameter of
# a small model in float64 (GELU instead of ReLU here, so that no kink sits anywhere, and a step of 2e-4:
# three stacked layer norms curve the loss more than one layer does).

# %%
small = tr.TransformerConfig(d_vocab=11, d_model=8, d_mlp=12, n_heads=2, d_head=4, n_ctx=6, act_fn="gelu",
                             init_range=0.5)
params64 = tr.init(small, rng, dtype=np.float64)
for k in params64:
    if not k.startswith("W_"):  # non-zero biases and gains, so every path carries signal
        params64[k] = params64[k] + 0.3 * rng.standard_normal(params64[k].shape)
tokens = rng.integers(0, small.d_vocab, size=(2, small.n_ctx))
logits, cache = tr.forward(params64, tokens, small)
dlogits = rng.standard_normal(logits.shape)
grads = tr.backward(params64, cache, small, dlogits)
errors = check_gradients(lambda: tr.forward(params64, tokens, small)[0], params64, grads, dlogits, eps=2e-4,
                         rng=rng)
print(format_table({k: v for k, v in errors.items() if k != "b_K"}, BUDGET, "whole transformer"))
print(f"  b_K: gradient must be 0, largest entry {np.abs(grads['b_K']).max():.1e}")
worst["whole model"] = max(v for k, v in errors.items() if k != "b_K")

# %% [markdown]
# ## The hook point: reading and replacing the MLP's activations
#
# Later lessons splice a sparse autoencoder into the model: they replace the activations at
# `mlp.hook_post` by the autoencoder's reconstruction and see how much of the model's skill survives.
# `forward` takes `hook_post=`: a function that reads the activations (returns None), or an array (or a
# function returning one) that replaces them. Zero-ablation is `hook_post=0.0`. For gradients, a
# replacement is a constant, like PyTorch's `.detach()`: W_in and b_in get exactly zero gradient.

# %%
seen = []
tr.forward(params64, tokens, small, hook_post=lambda post: seen.append(post.shape))
zeroed_logits, zeroed = tr.forward(params64, tokens, small, hook_post=0.0)
g_zero = tr.backward(params64, zeroed, small, dlogits)
print("the hook saw activations of shape", seen[0], "[B, T, d_mlp]")
print("zero-ablation changes the logits by up to", float(np.abs(zeroed_logits - logits).max()))
print("gradient of W_in with the activations replaced:", float(np.abs(g_zero["W_in"]).max()))

# %% [markdown]
# ## From naive to fast
#
# The reference layers above are the specification. Training the real model in lesson 05 takes 9,000 steps
# at the default scale (60,000 at `--scale full`), and profiling the NumPy step (`python -m tinymono bench
# transformer`) showed where its time goes besides the matrix products: the attention core (scores, causal
# softmax, the product with v, and their backward as many small matrix products and elementwise passes),
# the layer norms, the bias and ReLU passes over the [B*T, d_mlp] activations, the loss's softmax and the
# embedding's scatter-add. NumPy runs each elementwise pass on a single core.
# `tinymono/kernels/transformer.py` fuses those passes into numba kernels that split rows (or (batch,
# head) pairs) over the cores; the matrix products stay with BLAS. Its docstrings tell what else the
# profile pointed at: the exponentials (a polynomial that the compiler can vectorise beats a library call
# per number, but only if every step of it has a vector instruction: a `math.floor`, a library call, and a
# conversion to 64-bit integers kept it to one number at a time until a benchmark of the exponentials
# alone showed it), memory traffic in the attention loops, and page faults. `fast=True` swaps in those
# kernels; the model code is the same. First we check that both agree, then we time one forward and
# backward of lesson 05's model at batch 32 x 128 tokens.

# %%
fast_logits, _ = tr.forward(params64, tokens, small, fast=True)
fast_gap = float(np.abs(fast_logits - logits).max())
loss_ref, g_ref = tr.loss_and_grads(params64, np.concatenate([tokens, tokens[:, :1]], 1), small)
loss_fast, g_fast = tr.loss_and_grads(params64, np.concatenate([tokens, tokens[:, :1]], 1), small, fast=True)
grad_gap = max(float(np.abs(g_fast[k] - g_ref[k]).max() / (np.abs(g_ref[k]).max() + 1e-12))
               for k in g_ref if k != "b_K")
print(f"kernels vs reference (float64): logits differ by {fast_gap:.1e}, gradients by {grad_gap:.1e} (relative)")

full_cfg = pipeline.transformer_configs("default")[0]  # lesson 05's model at the default scale
full_params = tr.init(full_cfg, rng)
batch = rng.integers(0, full_cfg.d_vocab, size=(lesson.pick(smoke=4, default=32), full_cfg.n_ctx + 1))
seconds = {}
for fast in (False, True, False, True):  # alternate, and keep the faster of two runs of each
    t0 = time.perf_counter()
    tr.loss_and_grads(full_params, batch, full_cfg, fast=fast)
    seconds[fast] = min(seconds.get(fast, np.inf), time.perf_counter() - t0)
print(f"one forward+backward on {batch.shape[0]} x {full_cfg.n_ctx} tokens: reference {1e3 * seconds[False]:.0f} ms, "
      f"kernels {1e3 * seconds[True]:.0f} ms ({seconds[False] / seconds[True]:.1f}x, the faster of two runs each; "
      "`python -m tinymono bench transformer` times whole training steps, against PyTorch too)")

# %% [markdown]
# ## Does it learn? Memorise one batch
#
# The decisive test of a hand-written backward is that following it downhill works. We give a small model
# the same few windows of text over and over; with enough steps it should predict every next byte of
# them almost perfectly (a loss near 0), since it can memorise them. This says nothing about
# generalisation; lesson 05 trains on a real corpus.

# %%
sentence = ("Using a sparse autoencoder, we extract a large number of interpretable features from a one-layer "
            "transformer. Each feature responds to one kind of text: Arabic script, DNA, base64, Hebrew. ")
data = np.frombuffer(sentence.encode(), dtype=np.uint8).astype(np.int64)
mem_cfg = tr.TransformerConfig(d_model=64, d_mlp=256, n_heads=4, d_head=16, n_ctx=32)
window = mem_cfg.n_ctx + 1
one_batch = np.stack([data[s:s + window] for s in range(0, len(data) - window, 12)])  # [B, 33]
mem_params = tr.init(mem_cfg, np.random.default_rng(lesson.seeded(1)))
opt = Adam(mem_params, lr=3e-3, betas=(0.9, 0.99))
n_steps = lesson.pick(smoke=20, default=400)
curve = []
for step in range(n_steps):
    loss, grads = tr.loss_and_grads(mem_params, one_batch, mem_cfg, fast=True)
    clip_grad_norm(grads, 1.0)
    opt.step(mem_params, grads)
    curve.append(loss)
final_loss = tr.loss(mem_params, one_batch, mem_cfg)
print(f"{one_batch.shape[0]} windows of {window} bytes; loss after {n_steps} steps: {final_loss:.4f} nats "
      f"(a uniform guess over 257 tokens: {math.log(257):.2f})")

_, mem_cache = tr.forward(mem_params, one_batch[:1, :-1], mem_cfg)
lesson.savefig(plots.memorising(np.array(curve) / math.log(2), mem_cache.pattern[0].mean(0)), "memorise_one_batch.png",
               "Left: bits per byte while a small model (d_model 64, context 32) memorises 13 windows of "
               "33 bytes cut from one sentence. Right: its attention pattern, averaged over the 4 heads, on "
               "the first window.")

greedy = tr.sample(mem_params, mem_cfg, sentence[:8], 60, np.random.default_rng(lesson.seeded(0)), temperature=0)
continuation = text.written_text(greedy)
print("greedy continuation of", repr(sentence[:8]), "->", repr(continuation))

# %% [markdown]
# The greedy continuation (the most likely byte each time) reproduces the sentence only while it fits in
# the model's context: compare it with the sentence, it comes out right for about the first window's
# bytes and then falls apart (docs/experiments.md keeps one run's output). The training windows were
# cut at bytes 0, 12, 24, ... of the sentence (`range(0, len(data) - window, 12)`), so the first 32 bytes
# are exactly the input of the first window. Past n_ctx = 32 bytes, `tr.sample` feeds the model only the
# last 32, and the window slides to start at byte 1, 2, 3, ..., eleven offsets no training window had.
# With learned positions (W_pos) the same byte at another position is a different input, so the model
# now sees its sentence at positions it never saw it at, and what it memorised stops applying; by offset
# 12, where a training window did start, the text it reads is already its own, not the sentence. Memorising a
# batch tests the gradients; it teaches the model nothing beyond those windows.

# %% [markdown]
# ## Checks
#
# Every hand-written backward agrees with central differences within 1e-6 (relative, float64), the fast
# kernels agree with the reference, the trained model is causal (changing a byte changes no earlier
# prediction), and one batch is memorised.

# %%
for name, err in worst.items():
    lesson.check(f"gradient check: {name} (max relative error)", err, err <= BUDGET, f"<= {BUDGET:.0e}",
                 scale_free=True)
lesson.check("kernels vs reference: max relative gradient gap (float64)", grad_gap, grad_gap <= 1e-9, "<= 1e-9",
             scale_free=True)
leaks = tr.causality_leaks(mem_params, mem_cfg, one_batch[:2, :-1].copy())
lesson.check("causality: positions whose change altered an earlier logit", leaks, leaks == 0, "== 0", scale_free=True)
lesson.check("memorised one batch: final loss (nats)", final_loss, final_loss <= 0.05, "<= 0.05")
lesson.finish()
