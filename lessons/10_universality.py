# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 10: universality, a shuffled-weights baseline, and feature chains
#
# **What the paper says.** Are the SAE's features properties of the model, or artefacts of the method?
# Bricken et al. give three more arguments that they belong to the model:
#
# - **Universality.** Two transformers trained from different random seeds, an SAE on each: for each
#   feature of one, the best Pearson correlation of its activations with any feature of the other, over
#   the same tokens. The median best match was 0.72 for features against 0.46 for neurons, and the
#   context features matched closely (Arabic 0.91, DNA 0.92, base64 0.85, Hebrew 0.92). Two models that
#   learned the same data learned the same features; they did not learn the same neurons.
# - **A baseline model.** The same SAE on a transformer whose weights were shuffled: every weight value
#   is kept, their arrangement is not. Its features are far less about the data's contexts, so the
#   context features come from what the model learned, not from the data or the SAE alone. (Below, that
#   holds for contexts that share their bytes with others; a context whose bytes are its own shows even
#   through a shuffled model, and the lesson measures both kinds.)
# - **Feature chains** (the paper's "finite state automata"): features that fire in turn, each one's
#   logit weights promoting the bytes on which the next one fires, such as the UTF-8 lead byte and
#   continuation byte of a letter of Arabic or Hebrew, or the base64 loop.
#
# **Here.** Model A is lesson 05's transformer with lesson 06's SAE. Model B is a second transformer on
# the same corpus, with another seed for its initial weights and the order of its batches, trained exactly
# as model A (the sizes are printed below; only lesson 05's per-label evaluations are skipped), with an SAE
# of lesson 06's recipe on its own activations. The shuffled model is model A with its weights permuted,
# its SAE trained with the same recipe.

# %%
import tinymono  # noqa: F401, I001  (first: it tells OpenBLAS how long to spin before NumPy loads it)
import time

import numpy as np

from tinymono import features, interventions, pipeline, plots, scores, text, universality
from tinymono.corpus_sources import NAMED_CONTEXTS
from tinymono.lesson import Lesson

lesson = Lesson("10_universality")
NAMED = list(NAMED_CONTEXTS)

# %% [markdown]
# ## Two transformers, one corpus
#
# `pipeline.get_transformer(..., model_seed=k)` trains (or loads) the second model, cached beside the
# first under a name that carries its seed and its sizes (`pipeline.SECOND`); its activation stores and
# its SAE come from the same functions as model A's, lesson 06's recipe. Both models' validation stores
# hold the same held-out bytes in the same order, so row i of one is row i of the other.

# %%
(corpus, params_a, cfg, train_a, val_a,
 sae_a, sae_cfg_a) = pipeline.get_trained(lesson.scale, lesson.cache, seed=lesson.seed)
model_seed = lesson.seeded(1)
_, params_b, _, task_b, _ = pipeline.get_transformer(lesson.scale, lesson.cache, seed=lesson.seed,
                                                     model_seed=model_seed)
train_b, val_b = pipeline.get_stores(lesson.scale, lesson.cache, corpus, params_b, cfg, model=f"m{model_seed}")
sae_b, sae_cfg_b, _, _ = pipeline.get_sae(lesson.scale, lesson.cache, train_b, seed=model_seed,
                                          model=f"m{model_seed}")
assert np.array_equal(val_a.tokens, val_b.tokens), "the two validation stores must hold the same bytes"
_, train_cfg_a = pipeline.transformer_configs(lesson.scale, lesson.seed)
sae_steps_a = sae_cfg_a.steps
windows = corpus.sample_windows("val", lesson.pick(smoke=8, default=128), cfg.n_ctx + 1, np.random.default_rng(3))[0]
bits = {name: interventions.mean_loss(p, cfg, windows) / np.log(2) for name, p in (("A", params_a), ("B", params_b))}
print(f"model A: seed {lesson.seed}, {train_cfg_a.steps:,} steps; its SAE {sae_cfg_a.d_sae} latents, {sae_steps_a:,} "
      f"steps on {len(train_a):,} activations; {bits['A']:.3f} bits/byte on held-out windows")
print(f"model B: seed {model_seed}, {task_b.train_cfg.steps:,} steps; its SAE {sae_cfg_b.d_sae} latents, "
      f"{sae_cfg_b.steps:,} steps on {len(train_b):,} activations; {bits['B']:.3f} bits/byte")

# %% [markdown]
# ## Every feature of A against every feature of B
#
# For a unit a of model A and a unit b of model B, Pearson's r of their activations over the same held-out
# tokens; for each unit of A, its best match is the largest r with any unit of B. The naive way holds both
# models' activations in memory and calls `np.corrcoef`: at 2M tokens and 1,024 latents a side that is 16 GB
# in float64 for each model, 33 GB for the two. `universality.correlate` streams instead: per block of rows,
# each side's block mean and the co-moment of the centred blocks (one matmul), merged into running float64
# moments (Chan et al.'s rule for merging two blocks' means and co-moments exactly, which lesson 07's label
# scores use for their running sums too), so memory stays at one block and an A x B
# matrix. First the two against each other on the first tokens and (for a large dictionary) its first units,
# where the naive way fits:

# %%
n_small = min(len(val_a), lesson.pick(smoke=2_000, default=20_000))
src_a = features.FeatureSource(val_a, sae_a, sae_cfg_a)
src_b = features.FeatureSource(val_b, sae_b, sae_cfg_b)
small = universality.correlate(src_a, src_b, n_rows=n_small, block_rows=3_000)
k = min(1_024, sae_cfg_a.d_sae, sae_cfg_b.d_sae)  # the first k units a side: larger ones make np.corrcoef's matrix GBs
xa, xb = src_a.activations(0, n_small, np.arange(k)), src_b.activations(0, n_small, np.arange(k))
with np.errstate(invalid="ignore", divide="ignore"):  # a constant column gives NaN: the reason for `alive`
    naive = np.corrcoef(xa.T.astype(np.float64), xb.T.astype(np.float64))[:k, k:]
both = small.alive_a[:k, None] & small.alive_b[None, :k]
gap = float(np.max(np.abs(naive[both] - small.r[:k, :k][both]))) if both.any() else 0.0
dead_zero = bool(np.all(small.r[~(small.alive_a[:, None] & small.alive_b[None, :])] == 0))
print(f"first {n_small:,} tokens, {k} x {k} units: streamed against np.corrcoef, largest gap {gap:.1e}; "
      f"{(~small.alive_a).sum()} features of A and {(~small.alive_b).sum()} of B never vary there "
      f"(np.corrcoef: NaN; streamed: 0 {'everywhere' if dead_zero else 'NOT everywhere'})")

# %%
t0 = time.perf_counter()
feat = universality.correlate(src_a, src_b, progress=True, desc="features A x B")
neur = universality.correlate(features.NeuronSource(val_a), features.NeuronSource(val_b), progress=True,
                              desc="neurons A x B")
best_b, best_r = feat.best_match()
_, neuron_best_r = neur.best_match()
f_r, n_r = best_r[feat.alive_a], neuron_best_r[neur.alive_a]
print(f"{feat.n_rows:,} tokens: {sae_cfg_a.d_sae} x {sae_cfg_b.d_sae} features in {feat.seconds:.0f} s, "
      f"{cfg.d_mlp} x {cfg.d_mlp} neurons in {neur.seconds:.1f} s")
print(f"median best match: features {np.median(f_r):.2f} (paper 0.72), neurons {np.median(n_r):.2f} (paper 0.46); "
      f"left out as never firing on these tokens: {(~feat.alive_a).sum()} features, {(~neur.alive_a).sum()} neurons")
print(f"features with a match above 0.9: {np.mean(f_r > 0.9):.0%}; neurons: {np.mean(n_r > 0.9):.0%}")
lesson.savefig(plots.best_match_histograms(f_r, n_r), "best_match.png",
               "For each unit of model A, its best correlation with any unit of model B on the same held-out "
               "tokens: SAE features (orange) and MLP neurons (blue), medians as solid lines, the paper's as "
               "dashed lines.")

# %% [markdown]
# **Reading the distributions.** The neurons of two models need not match. A model in superposition spreads
# each of its many features over several neurons, and which mixture each neuron ends up holding depends on the
# random start: a neuron of A is one mixture, and B's neurons are other mixtures of the same features, so the
# best any one of them does is a partial match. What two models of the same data must share is what the data
# asks for, and the features show it: their best matches sit above the neurons' (by how much, the medians
# printed above say; the paper's gap was 0.26). Two things pull a
# feature's match down, and the bands below show both. A latent that learned nothing matches nothing (lesson
# 06 resamples most of them; those left sit in the lowest density band). And the same feature can be split
# differently by two dictionaries (lesson 08): a fine feature of A, a byte inside one language of the family or
# one step of a script's two-byte cycle, may be two features of B, or half of one. How much the second model's
# training matters is measured in docs/experiments.md ("Lesson 10's model B"): trained on a fifth of the
# tokens, model B's features matched A's barely better than its neurons did. And how much of the gap is
# the method's own noise: a second SAE of the same recipe, another seed, on model A itself matched A's
# features far better than model B's SAE did, the named contexts' included (docs/experiments.md, "Lesson
# 10's mismatches"), so what two models fail to share here is mostly the models' doing, not the SAE's.

# %% [markdown]
# ## The named contexts, matched
#
# For each named context: model A's best feature for it (lesson 07's, by correlation with the label), its
# best match among model B's features, and model B's own best feature for the context. In the table every
# correlation is printed x 100; the paper's in brackets.

# %%
report_a = scores.analyse_units(src_a)
report_b = scores.analyse_units(src_b, families=("context",))
start = pipeline.sae_task(lesson.scale, train_a, seed=lesson.seed).params["W_dec"]
unmoved = np.sum(sae_a["W_dec"] * start, axis=1) > 0.9  # [d_sae] decoder row within cosine 0.9 of its start
def median_of(mask):
    return f"{np.median(best_r[mask]):.2f}" if mask.any() else "-"


print("model A's features by density on the held-out tokens: how many, median best match in B")
for lo, hi in ((0, 1e-4), (1e-4, 1e-3), (1e-3, 1.0)):
    band = feat.alive_a & (report_a.density > lo) & (report_a.density <= hi)
    print(f"  density in ({lo:g}, {hi:g}]: {band.sum():5d} features, median best match {median_of(band)}")
print(f"  never left their random start (lesson 06): {unmoved.sum()} features, median best match "
      f"{median_of(unmoved & feat.alive_a)}; the others {median_of(~unmoved & feat.alive_a)} (neurons {np.median(n_r):.2f})")

rows = {}
print(f"{'context':>8} {'tokens':>7} | {'A feature':>9} {'r label':>7} | {'match in B':>10} {'r':>4} {'[paper]':>7} | "
      f"{'B best':>6} {'r label':>7}")
for label in NAMED:
    ra, rb = report_a.score("context", label, "pearson"), report_b.score("context", label, "pearson")
    u, v = int(np.argmax(ra)), int(np.argmax(rb))
    n_tok = int(report_a.families["context"]["count"][report_a.names["context"].index(label)])
    rows[label] = {"unit": u, "label_r": float(ra[u]), "match": int(best_b[u]), "match_r": float(best_r[u]),
                   "b_unit": v, "b_label_r": float(rb[v]), "tokens": n_tok}
    paper = universality.PAPER["contexts"].get(label)
    print(f"{label:>8} {n_tok:>7} | {u:>9} {100 * ra[u]:7.0f} | {best_b[u]:>10} {100 * best_r[u]:4.0f} "
          f"{'[' + format(100 * paper, '.0f') + ']' if paper else '':>7} | {v:>6} {100 * rb[v]:7.0f}"
          + ("   (the same feature)" if v == best_b[u] else ""))

# %% [markdown]
# ## The shuffled-weights baseline
#
# `universality.shuffle_weights` permutes the entries of every parameter array of model A (each array on
# its own, a fixed seed): the embedding, attention, MLP, unembedding, biases and layer-norm gains all keep
# their values, so their sizes and spreads, and lose what training arranged. We harvest its MLP, train an
# SAE with lesson 06's recipe, and score its features against the labels exactly as lesson 07 scores model
# A's (`scores.analyse_units` over the same held-out bytes).

# %%
params_s = universality.shuffle_weights(params_a, seed=lesson.seeded(0))
bits["shuffled"] = interventions.mean_loss(params_s, cfg, windows) / np.log(2)
print(f"the shuffled model: {bits['shuffled']:.2f} bits/byte (model A {bits['A']:.2f}; a uniform guess "
      f"{np.log2(cfg.d_vocab):.2f})")
train_s, val_s = pipeline.get_stores(lesson.scale, lesson.cache, corpus, params_s, cfg, model="shuffled")
sae_s, sae_cfg_s, _, _ = pipeline.get_sae(lesson.scale, lesson.cache, train_s, seed=lesson.seed, model="shuffled")
src_s = features.FeatureSource(val_s, sae_s, sae_cfg_s)
report_s = scores.analyse_units(src_s, families=("context",))
tokens = np.asarray(val_a.tokens[:])
print(f"{'context':>8} | {'A':>4} {'B':>4} {'shuffled':>8} | the shuffled model's best feature reads "
      "(share of its firings on each byte)")
for label in NAMED:
    rs = report_s.score("context", label, "pearson")
    w = int(np.argmax(rs))
    rows[label].update(shuffled_unit=w, shuffled_r=float(rs[w]))
    reads = universality.read_bytes(tokens, src_s.activations(0, len(val_s), [w])[:, 0], cfg.d_vocab)
    top = np.argsort(-reads, kind="stable")[:4]
    print(f"{label:>8} | {100 * rows[label]['label_r']:4.0f} {100 * rows[label]['b_label_r']:4.0f} "
          f"{100 * rs[w]:8.0f} | " + ", ".join(f"{text.token_text(t)} {reads[t]:.0%}" for t in top if reads[t] > 0))
lesson.savefig(plots.real_vs_shuffled(NAMED, [rows[l]["label_r"] for l in NAMED], [rows[l]["b_label_r"] for l in NAMED],
                                      [rows[l]["shuffled_r"] for l in NAMED]), "real_vs_shuffled.png",
               "The best feature's correlation with each named context: model A (lesson 07's SAE), model B, "
               "and model A with its weights shuffled (an SAE with the same recipe).")

# %% [markdown]
# **What stays true.** The shuffled model predicts nothing (its loss, printed above, is worse than a uniform
# guess), yet its MLP still sees the bytes of the window, mixed by an attention layer that now attends at
# random. A context whose windows look like no other's (a FASTA record: a window of four capital letters and
# nothing else; the scripts: lead and continuation bytes that no other context writes) is then visible even to
# this random mixture, and an SAE finds features for it: the data alone carries those contexts. Such a feature
# fires weakly on much else (its "reads", counted per firing, can be mostly other letters) and strongly on its
# context, which is what its correlation with the label sees. Where contexts share their bytes (base64 and hex
# are both made of letters and digits, and so is much of Python), only a trained model tells them apart, and
# only its SAE has features for them. The comparison is fair to the shuffled model: its SAE had the same
# recipe and budget as model A's and model B's.

# %% [markdown]
# ## A feature chain: the two bytes of a letter
#
# Every Arabic and Hebrew letter is two bytes in UTF-8: a lead byte (0xD8 or 0xD9 for Arabic, 0xD7 for
# Hebrew) and a continuation byte (0x80-0xBF). The corpus's detail labels mark the two, so for each
# script we take model A's best feature for the lead bytes and its best for the continuation bytes (by
# correlation with the detail label, as lesson 07 picks features) and ask two things of each link
# previous -> next:
#
# - **follow share**: of the next feature's firings, the share that come right after a firing of the
#   previous one (the byte before, in the text);
# - **logit-weight evidence**: does the previous feature's decoder direction, through W_out and the
#   unembedding (lesson 07's logit weights), promote the bytes the next one reads? We rank the bytes by
#   the previous feature's logit weights and report where the next feature's bytes fall (1: the top).
#
# A feature's *reads* here are the share of its firings on each byte (counted, where lesson 08 weighs
# each firing by its activation).
#
# Bytes the corpus never holds are left out of the ranking: the unembedding of a byte never seen was only
# ever pushed down, as a whole, so its logit weights along any one direction say nothing about what the
# model predicts (they often top the raw list, printed first).

# %%
present = np.bincount(np.asarray(corpus.split("train").tokens), minlength=cfg.d_vocab) > 0
det = report_a.families["detail"]["pearson"]
chains = {}
for script in ("arabic", "hebrew"):
    lead, cont = (int(np.argmax(det[report_a.names["detail"].index(f"{script}_{part}")])) for part in ("lead", "cont"))
    acts = src_a.activations(0, len(val_a), [lead, cont])  # [N, 2]
    print(f"\n{script}: lead-byte feature {lead}, continuation-byte feature {cont}")
    links = []
    for (p, ip), (q, iq) in (((lead, 0), (cont, 1)), ((cont, 1), (lead, 0))):
        share, onward, n_q = universality.follow_share(acts[:, ip], acts[:, iq])
        w = features.logit_weights(params_a, cfg, sae_a["W_dec"][p])
        reads = universality.read_bytes(tokens, acts[:, iq], cfg.d_vocab)
        pct = universality.promoted_percentile(w, reads, present)
        raw = [shown for shown, _ in features.top_logits(w, 5)[0]]
        kept = np.flatnonzero(present)[np.argsort(-w[present], kind="stable")[:8]]
        reads_top = [t for t in np.argsort(-reads, kind="stable")[:5] if reads[t] > 0]
        print(f"  {p} -> {q}: {share:.0%} of feature {q}'s {n_q:,} firings follow one of feature {p}'s "
              f"({onward:.0%} of {p}'s firings are followed by {q})")
        print(f"    {q} reads: " + ", ".join(f"{text.token_text(t)} {reads[t]:.0%}" for t in reads_top))
        print(f"    {p} promotes (all bytes): {' '.join(raw)};  (bytes in the corpus): "
              f"{' '.join(text.token_text(t) for t in kept)}")
        print(f"    the bytes {q} reads sit at percentile {pct:.2f} of {p}'s logit weights")
        links.append({"from": p, "to": q, "share": share, "percentile": pct})
    if lead == cont or rows[script]["tokens"] == 0:  # possible at smoke scale
        print(f"  (one feature, or no {script} bytes held out at this scale: not a chain)")
        links = []
    chains[script] = links

# %% [markdown]
# **What you should see.** The continuation-byte feature promotes the lead bytes and the space: after a
# letter comes another letter or the end of a word, and its logit weights say so. The lead-byte feature
# fires on the lead byte and its successor reads the continuation byte, but its logit weights are often
# weaker evidence: the model already knows from the lead byte's own embedding (the direct path, embedding to
# unembedding, a bigram) that a continuation byte comes next, so the MLP's feature need not say it. The
# follow share of continuation -> lead is below 1, partly because the first letter of a word follows a
# space, not a letter, and partly because a broad lead-byte feature fires off the chain (below). Two
# features, each a state of a two-state machine: the paper's "finite state automaton" in its smallest form.
# Read each feature's "reads" line before trusting a link: the feature that correlates best with the
# lead-byte or the continuation-byte label can be a broad one, firing on many other bytes too (Latin
# letters, or the other script's bytes), and then few of its firings are in the chain, and a link fails.
# Whether the SAE has a narrow feature for each state of a script is the run's call, as in lesson 07.

# %% [markdown]
# ## Checks

# %%
lesson.check("streamed correlation against np.corrcoef (largest gap)", gap, gap <= 1e-4 and dead_zero,
             "<= 1e-4, and 0 where a unit never varies", scale_free=True)
lead = float(np.median(f_r) - np.median(n_r))
lesson.check(f"median best match, features minus neurons ({np.median(f_r):.2f} - {np.median(n_r):.2f})", lead,
             lead >= 0.15, ">= 0.15 (paper 0.72 - 0.46)")
for label in NAMED:
    r = rows[label]["match_r"]
    lesson.check(f"{label}: model A's best feature, its best match in model B", r, r >= 0.8, ">= 0.8")
drop = np.mean([rows[l]["label_r"] - rows[l]["shuffled_r"] for l in NAMED])
lesson.check("named contexts: best feature r, model A minus shuffled weights (mean)", float(drop), drop >= 0.3,
             ">= 0.3")
good = [s for s, links in chains.items() if links and min(l["share"] for l in links) >= 0.5]
worst = {s: min((l["share"] for l in links), default=0.0) for s, links in chains.items()}
lesson.check(f"chains of 2 features, every link's follow share >= 0.5 ({', '.join(f'{s} {v:.2f}' for s, v in worst.items())})",
             len(good), len(good) >= 1, ">= 1")
lesson.finish()
