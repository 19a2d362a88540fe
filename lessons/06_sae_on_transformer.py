# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 06: a sparse autoencoder on the transformer's MLP
#
# *Exercise mode:* `python -m tinymono exercises 06` lets you write this lesson's functions yourself (README.md).
#
# **What the paper says.** Bricken et al. trained sparse autoencoders on the 512 post-ReLU MLP
# activations of a one-layer transformer. Their main run, A/1, has 4,096 latents; it keeps 79% of the
# loss the MLP is worth (loss recovered against zero-ablation), leaves 168 latents dead and 292 at
# "ultralow density" (firing on fewer than one token in a million), and fires on average on few enough
# latents per token (L0) that each token is explained by a handful of features.
#
# **Here.** The transformer of lesson 05 (trained on our labelled byte corpus) plays the paper's model.
# We collect its MLP activations into an on-disk store, train the SAE of lessons 02-03 on shuffled
# batches of them (8 latents per neuron, as A/1's 8 x 512 = 4,096; ours has 128 neurons, so 1,024
# latents: lesson 05 says why the MLP is narrower than the paper's), and measure what the paper
# measured, on text the SAE never saw.

# %%
import tinymono  # noqa: F401, I001  (first: it tells OpenBLAS how long to spin before NumPy loads it)
import dataclasses
import math

import numpy as np

from tinymono import interventions, metrics, pipeline, plots, sae
from tinymono.benchmarks import compare
from tinymono.lesson import Lesson
from tinymono.optim import Adam

lesson = Lesson("06_sae_on_transformer")

# %% [markdown]
# ## The model and its activations
#
# `pipeline.get_transformer` loads the transformer lesson 05 trained (or trains it, if you start here).
# `harvest` runs it over the corpus and stores, for every byte, the 128 MLP activations at the hook point
# `mlp.hook_post`, with the byte's token and its context labels beside it. Windows overlap by half so every
# stored token past the first 64 of a split has at least 64 bytes of context; the store is written in
# chunks, so memory stays flat however many tokens are harvested, and an interrupted harvest resumes.

# %%
corpus, params, cfg, _, _ = pipeline.get_transformer(lesson.scale, lesson.cache, seed=lesson.seed)
train_store, val_store = pipeline.get_stores(lesson.scale, lesson.cache, corpus, params, cfg)
x = val_store.read(0, min(len(val_store), 100_000)).astype(np.float32)
print(f"stores: {len(train_store):,} training and {len(val_store):,} validation tokens x {cfg.d_mlp} neurons (float16)")
print(f"a token's activations: {np.mean(x > 0):.1%} of neurons active, mean squared norm {np.mean((x**2).sum(1)):.1f}, "
      f"max {x.max():.2f}")

# %% [markdown]
# ## Training the SAE
#
# The paper's recipe, as in lessons 02-03: b_dec starts at the geometric median of a sample (the point with
# the least summed distance to the sample's points, `sae.geometric_median`: a centre that a few large
# activations pull less than they pull the mean), decoder rows
# stay at unit norm, Adam, L1 penalty on the latents, and dead latents are resampled from inputs the SAE
# reconstructs badly. Batches come from `ShuffledBatches`, which reads random blocks of the store into
# a buffer and shuffles rows there, so each batch mixes contexts and every row is used once per epoch.
# The L1 coefficient sets the trade-off between reconstruction and sparsity: the larger it is, the fewer
# latents fire per token (the mean L0 printed below). `tinymono/pipeline.py` holds the value chosen for
# each scale, and docs/experiments.md the runs that chose it.

# %%
sae_params, sae_cfg, task, result = pipeline.get_sae(lesson.scale, lesson.cache, train_store, seed=lesson.seed)
lesson.savefig(plots.sae_training(result.history, sae_cfg.resample_steps, task.resampled), "sae_training.png",
               "SAE training: reconstruction error, L0 and dead latents (silent through the window); red lines mark "
               "the resampling steps, and red triangles how many latents each took: the dead ones and those that "
               "fired on at most 1e-4 of the window's tokens (the rule is printed below), so a step can resample "
               "latents the line does not count.")

# %% [markdown]
# ## The sparse step: the same numbers, for less work
#
# Written plainly (`sae.forward`, then `sae.backward`), a training step makes five products the size of
# the encoder's, [B, d_in] x [d_in, d_sae]: the encoder, the decoder, and three in the backward. But on
# a given token only a few latents fire (the L0 printed below, about 1% of them), and every product
# after the encoder involves only those: decoding sums a few decoder rows, the decoder's gradient
# touches only their rows, the encoder's gradient only their columns. The encoder itself must be dense,
# since it is what says which latents fire. So `sae.train_step_sparse` does that one matmul with NumPy
# and the rest in numba kernels (`tinymono/kernels/sae.py`) over the active entries, kept as a sparse
# matrix: `relu_csr` picks them out row by row, `decode_rows` decodes each row and forms the loss's
# gradient there, `csr_to_csc` indexes the same entries by latent, and `latent_grads` accumulates each
# latent's gradients. Training uses it whenever few enough latents fire (`cfg.sparse_below`), the dense
# path otherwise. Here are both on one batch of held-out activations and the trained SAE: first the
# plain step, then the sparse one, checked equal, then timed.

# %%
step_cfg = dataclasses.replace(sae_cfg, batch_size=lesson.pick(smoke=256, default=4096), sparse_below=1.0)
x_step = val_store.read(0, min(len(val_store), step_cfg.batch_size)).astype(sae_cfg.dtype)
step_cfg = dataclasses.replace(step_cfg, batch_size=len(x_step))


def dense_step():
    out, cache = sae.forward(sae_params, x_step, step_cfg)
    return out.loss, sae.backward(sae_params, cache, step_cfg)


step_buffers = sae.Buffers(step_cfg)


def sparse_step():
    loss, _, _, l0, grads, _ = sae.train_step_sparse(sae_params, x_step, step_cfg, step_buffers)
    return loss, grads, l0


dense_loss, dense_grads = dense_step()
sparse_loss, sparse_grads, step_l0 = sparse_step()
step_gap = max(float(np.abs(sparse_grads[k] - dense_grads[k]).max() / np.abs(dense_grads[k]).max())
               for k in dense_grads)
print(f"{len(x_step)} activations, {step_l0:.1f} of {sae_cfg.d_sae} latents active per token "
      f"({step_l0 / sae_cfg.d_sae:.1%})")
print(f"loss: dense {float(dense_loss):.6f}, sparse {sparse_loss:.6f}; largest gradient difference "
      f"{step_gap:.1e} of each gradient's largest entry ({sae_cfg.dtype}: the sums run in another order)")

# timed as `python -m tinymono bench` times: a warm-up call, then rounds that alternate the two
timing = compare({"dense": dense_step, "sparse": sparse_step}, len(x_step), rounds=5, min_seconds=0.0)
t_dense, t_sparse = timing["dense"]["seconds_per_call"], timing["sparse"]["seconds_per_call"]
print(f"forward + backward: dense {1e3 * t_dense:.1f} ms, sparse {1e3 * t_sparse:.1f} ms ({t_dense / t_sparse:.1f}x); "
      "`python -m tinymono bench scaling` shows how the gap grows with d_sae and where sparsity stops paying")

# %% [markdown]
# The gradients then go to `sae.update`: project each decoder row's gradient onto the plane tangent to the
# unit sphere at that row, take an Adam step, rescale the decoder's rows. With the products sparse, Adam
# becomes a visible share of the step, and it is pure memory traffic: NumPy's `optim.adam_update` walks each
# of the SAE's arrays about ten times (the moments, the square, the square root, the division, each a pass of
# its own), where `kernels/optim.py` reads and writes each entry once, in the same arithmetic. The same check,
# then the same race:

# %%
adam_params = {name: {k: v.copy() for k, v in sae_params.items()} for name in ("numpy", "fused")}
adams = {name: Adam(p, lr=sae_cfg.lr, fused=name == "fused") for name, p in adam_params.items()}
for name in adams:
    adams[name].step(adam_params[name], dense_grads)
adam_gap = max(float(np.abs(adam_params["fused"][k] - adam_params["numpy"][k]).max()) for k in sae_params)
adam_timing = compare({name: lambda name=name: adams[name].step(adam_params[name], dense_grads) for name in adams},
                      1, rounds=5, min_seconds=0.0)
t_plain, t_fused = (adam_timing[name]["seconds_per_call"] for name in ("numpy", "fused"))
print(f"one Adam step over {sum(v.size for v in sae_params.values()):,} parameters: NumPy {1e3 * t_plain:.1f} ms, "
      f"fused {1e3 * t_fused:.1f} ms ({t_plain / t_fused:.1f}x); largest difference after one step {adam_gap:.1e}")

# %% [markdown]
# ## Evaluation on held-out text
#
# On the validation store (text from files the transformer and the SAE never trained on): the
# reconstruction error, the explained variance 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 and L0.
# Then each latent's density, the fraction of tokens it fires on. With N tokens the smallest density we
# can see is 1/N, and the paper's "ultralow" threshold of 1e-6 needs more than a million tokens, so
# densities are counted over the training store's tokens as well as the held-out ones (10M in all at
# default; a density describes the dictionary, not how well it generalises).

# %%
fires = np.zeros(sae_cfg.d_sae)
sq_err = sq_norm = total_var = l0_sum = 0.0
mean_x = val_store.mean()
for lo, xb in val_store.blocks(50_000):
    f = sae.encode(sae_params, xb, sae_cfg)  # the forward pass without what only training needs
    x_hat = sae.decode(sae_params, f)
    fires += np.count_nonzero(f, axis=0)
    sq_err += float(((xb - x_hat) ** 2).sum())
    sq_norm += float((xb ** 2).sum())
    total_var += float(((xb - mean_x) ** 2).sum())
    l0_sum += np.count_nonzero(f)
n = len(val_store)
for lo, xb in train_store.blocks(50_000):
    fires += sae.fire_counts(sae_params, xb, sae_cfg)  # count_nonzero(sae.encode(...), axis=0), in one pass
n_density = n + len(train_store)
density = fires / n_density
ev = 1 - sq_err / total_var
mse, mean_l0 = sq_err / (n * sae_cfg.d_in), l0_sum / n
dead, ultralow = metrics.dead_fraction(density), metrics.ultralow_fraction(density)
rare = (density > 0) & (density < 1e-4)
print(f"MSE {mse:.5f} (of a zero reconstruction: {sq_norm / (n * sae_cfg.d_in):.5f}), "
      f"explained variance {ev:.3f}, mean L0 {mean_l0:.1f}")
print(f"densities over {n_density:,} tokens: dead {dead:.1%} (never fired), ultralow (< 1e-6) {ultralow:.1%}, "
      f"rare (< 1e-4) {np.mean(rare):.1%}")
counts, edges, n_dead = metrics.log_density_histogram(density)
lesson.savefig(plots.density_histogram(counts, edges, n_dead, 1 / n_density), "density_histogram.png",
               "log10 feature density over the harvested tokens: most latents fire on a small share of tokens.")

# %% [markdown]
# **Latents that learn nothing, and when to resample them.** The paper's density histograms are bimodal:
# the main mode, and an "ultralow" mode near 1e-7 that it sets apart. What lands there is a latent that
# learned nothing: its random encoder direction fires on inputs its random decoder direction does not
# help, so the L1 penalty shrinks it, and it fires ever more rarely and weakly without ever turning to
# face the data. Its density falls slowly and steadily. The paper's run has a
# million steps, time for such a latent to sink to 1e-7; its rule, "resample a latent that did not fire
# once in the window", is met by the ones that die outright. Our run has 8,000 steps: a fading latent is
# still firing a few dozen times per window when the run ends, so the paper's rule never catches it, and
# with that rule a large share of our dictionary ended the run near its random start (docs/experiments.md,
# "Lesson 06's unused latents", tracks the fade over a run). So `pipeline.sae_config` scales the rule to the run:
# a latent is resampled when it fired on at most a share `dead_below` of the window's tokens (1e-4; the
# paper's rule is 0), and resampling goes on through three quarters of the run, so that the latents that
# fade late are caught too. The cell prints the rule, how many latents each resampling took, and what is
# left: the rare latents, and the decoder rows that never left their random start (the SAE's initial
# parameters are a deterministic function of its seed and data, so we can rebuild them; a resampled
# latent starts again from an input, so it counts as moved).
# (Try it: `python lessons/06_sae_on_transformer.py --set sae.dead_below=0` trains with the paper's rule
# and prints what it leaves; it reuses lesson 05's transformer and stores and trains one SAE, about 4-11
# minutes at the default scale on 2 cores.)

# %%
window_tokens = sae_cfg.dead_window_steps * sae_cfg.batch_size
print(f"resampling window: {sae_cfg.dead_window:.0%} of the run, {window_tokens:,} tokens; a latent is resampled "
      f"when it fired on at most {math.floor(sae_cfg.dead_below * window_tokens)} of them "
      f"(dead_below {sae_cfg.dead_below:g})")
print("latents resampled, by step: " + ", ".join(f"{s:,}: {k}" for s, k in task.resampled)
      + f" ({sum(k for _, k in task.resampled)} in all)")
initial = pipeline.sae_task(lesson.scale, train_store, seed=lesson.seed).params
cos_to_start = np.sum(sae_params["W_dec"] * initial["W_dec"], axis=1)  # rows are unit norm: cosines
for name, sel in [("never fired", density == 0), ("0 < density < 1e-4", rare), ("density >= 1e-4", density >= 1e-4)]:
    if sel.any():
        print(f"{name:>18}: {sel.sum():5d} latents, median cosine of decoder row with its initial row "
              f"{np.median(cos_to_start[sel]):.2f}")
unmoved = np.mean(cos_to_start > 0.9)
print(f"{unmoved:.1%} of all latents still point within cosine 0.9 of their random start")

# %% [markdown]
# ## Loss recovered
#
# The decisive test: does the transformer still work when its MLP activations are replaced by the SAE's
# reconstruction? Through the hook `mlp.hook_post` we run the model four ways on held-out windows: as
# it is, with the reconstruction, with zeros (the paper's baseline, zero-ablation) and with the mean
# activation (mean-ablation). Mean-ablation is often the fairer baseline, since zeros can be far from
# any activation a model ever sees. But a ReLU neuron of this model is zero on most tokens (the share of
# active neurons is printed above), so its mean is small and the two baselines can come out close (the
# printout below gives both).

# %%
windows = corpus.sample_windows("val", lesson.pick(smoke=16, default=256, full=1024), cfg.n_ctx + 1,
                                np.random.default_rng(1))[0]
lr = interventions.loss_recovered_report(params, cfg, windows, sae_params, sae_cfg, mean_x)
print(f"loss (nats/byte): clean {lr['clean']:.3f}, SAE {lr['sae']:.3f}, zero-ablation {lr['zero']:.3f}, "
      f"mean-ablation {lr['mean']:.3f}")
print(f"loss recovered: {lr['recovered_zero']:.1%} against zero-ablation (paper A/1: 79%), "
      f"{lr['recovered_mean']:.1%} against mean-ablation")

# %% [markdown]
# ## Checks

# %%
lesson.check("loss recovered against zero-ablation", float(lr["recovered_zero"]), lr["recovered_zero"] >= 0.80,
             ">= 0.80 (paper A/1: 0.79)")
lesson.check("dead + ultralow-density latents (fraction)", float(dead + ultralow), dead + ultralow <= 0.10, "<= 0.10")
lesson.check("latents that never left their random start (fraction)", float(unmoved), unmoved <= 0.10,
             "<= 0.10 (the paper's resampling rule here: 0.25-0.30)")
lesson.check("mean L0 on held-out tokens", float(mean_l0), mean_l0 <= 30, "<= 30")
lesson.check("sparse step equals the dense one (largest gradient difference, relative)", step_gap, step_gap < 1e-4,
             "< 1e-4", scale_free=True)
lesson.check("fused Adam equals NumPy's (largest parameter difference after one step)", adam_gap, adam_gap <= 1e-6,
             "<= 1e-6 (float32 rounding is ~1e-7; a wrong term moves parameters by ~lr)", scale_free=True)
lesson.finish()
