# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 07: interpreting features, against ground truth
#
# **What the paper says.** The SAE's features are far more interpretable than the MLP's neurons. For
# contexts such as Arabic script, DNA, base64 and Hebrew, Bricken et al. found single features whose
# activation correlates with the context (Arabic 0.74, DNA 0.80, base64 0.38, Hebrew 0.55) and which are
# *specific*: 81% of the Arabic feature's activation mass falls on Arabic text, 98% above activation 5.
# The best single neurons reached only 0.10-0.18. Features also *act* on the model: their logit weights
# (the decoder direction pushed through W_out and the unembedding) promote the bytes that come next in
# their context, and ablating a feature raises the loss where it fires.
#
# **Here, with labels.** The paper had to judge contexts by eye or with a classifier. Our corpus labels
# every byte with the context it came from, so each score below is computed against ground truth: for
# every context, which SAE feature and which MLP neuron track it best, and how well.

# %%
import matplotlib.pyplot as plt
import numpy as np

from tinymono import analysis, pipeline
from tinymono.browser import write_browser
from tinymono.lesson import Lesson

lesson = Lesson("07_interpreting_features")
GENERATED = ["base64", "dna", "hex", "arabic", "hebrew"]

# %% [markdown]
# ## The units, scored against the labels
#
# Everything comes from the cache of lessons 05-06 (or is built now). We score units on the validation
# store, text neither the transformer nor the SAE trained on. For a unit's activations a and a label's
# indicator y (1 on the label's bytes):
#
# - **correlation** (the paper's *sensitivity* measure): Pearson's r between a and y;
# - **specificity**: the share of the unit's activation mass on labelled bytes (overall, and above half
#   its maximum activation). Each token counts in proportion to its activation, so weak spill onto other
#   text counts for little; the paper read its figures off activation histograms, and its "above
#   activation 5" is our "above half the maximum" (the paper's activations have another scale);
# - **AUROC**: how well a ranks labelled bytes above the rest (scale-free, 0.5 = chance).

# %%
corpus, params, cfg, _, _ = pipeline.get_transformer(lesson.scale, lesson.cache, seed=lesson.seed)
train_store, val_store = pipeline.get_stores(lesson.scale, lesson.cache, corpus, params, cfg)
sae_params, sae_cfg, _, _ = pipeline.get_sae(lesson.scale, lesson.cache, train_store, seed=lesson.seed)
features = analysis.FeatureSource(val_store, sae_params, sae_cfg)
neurons = analysis.NeuronSource(val_store)
feat_report = analysis.analyse_units(features)
neuron_report = analysis.analyse_units(neurons)
print(f"scored {sae_cfg.d_sae} features and {cfg.d_mlp} neurons on {len(val_store):,} held-out tokens")

# %% [markdown]
# ## Features against neurons, context by context
#
# For each context: the best feature and the best neuron by correlation, and a small *group* of features:
# a context can be covered by sibling features, e.g. one for the UTF-8 lead byte of an Arabic letter and
# one for its continuation byte (the paper found features on 0xD8/0xD9 and 0xD7 lead bytes). The group is
# chosen greedily (at most 3 features, each at least 90% specific to the context), adding a feature while
# the correlation of the summed, max-normalised activations with the label rises. A label covers whole
# documents, spaces and line ends included, so even a feature firing on every Arabic or Hebrew letter and
# nothing else would correlate only about 0.95 with its label (on every DNA base: about 0.985). In the table every
# score is printed x 100 (r 71 is a correlation of 0.71); the paper's numbers are in brackets.

# %%
groups = analysis.label_groups(features, feat_report, "context", labels=GENERATED)
rows = analysis.comparison_table(feat_report, neuron_report, groups, "context")
print(analysis.format_comparison(rows))
by_label = {r["label"]: r for r in rows}
headroom = [1 - by_label[label]["neuron"]["pearson"] for label in GENERATED]
print(f"\nthe most a feature could lead the best neuron (a feature with r = 1): {np.mean(headroom):.3f} on "
      f"average, {min(headroom):.3f} in the context with the best neuron")

fig, ax = plt.subplots(figsize=(9, 3.8))
labels = [r["label"] for r in rows]
xs = np.arange(len(labels))
ax.bar(xs - 0.27, [r["feature"]["pearson"] for r in rows], 0.27, label="best SAE feature")
ax.bar(xs, [r.get("group", {}).get("pearson", np.nan) for r in rows], 0.27, label="best group of <= 3 features")
ax.bar(xs + 0.27, [r["neuron"]["pearson"] for r in rows], 0.27, label="best single neuron")
ax.scatter([xs[i] - 0.27 for i, l in enumerate(labels) if l in analysis.PAPER["pearson"]],
           [analysis.PAPER["pearson"][l] for l in labels if l in analysis.PAPER["pearson"]],
           marker="_", s=300, color="k", zorder=3, label="paper's best feature")
ax.set(xticks=xs, xticklabels=labels, ylabel="correlation with the label", ylim=(0, 1.05),
       title="which units track each context?")
ax.legend(fontsize=8, loc="upper right", ncol=2)
lesson.savefig(fig, "features_vs_neurons.png", "Correlation with each context label: the best SAE feature, "
               "the best group of up to 3 features, and the best single MLP neuron (bars); the paper's "
               "best features (black ticks).")

# %% [markdown]
# **Reading the comparison.** The feature side should look like the paper: no single feature covers a
# whole context (the SAE's 4096 latents split DNA into features for single bases, Arabic into lead and
# continuation bytes), but a group of two or three highly specific features does. The neuron side may
# not. In our default runs the best neuron tracked DNA (r about 0.98) and hex (about 0.96) *better* than
# any single feature, and came close to it for base64 and Arabic; only Hebrew was clearly more
# polysemantic in the neurons (the neuron's `spec` column gives the share of its activation mass on the
# context). The line under the table bounds what any SAE could do against such neurons: a feature that
# matched its context exactly would lead by 1 minus the neuron's r. In our default runs that was 0.02 for
# DNA and 0.20 on average, so the checks below would need five perfect features. Lesson 01 says why
# neurons can be this clean: superposition is a response to having more useful, sparse features than
# dimensions. The paper's model read the Pile, where DNA is a vanishing share of
# the text, so a context like DNA had to share neurons. Ours reads a small corpus of Python, English and
# five synthetic contexts, each 2-3% of the bytes: DNA is dense and important enough to earn neurons of
# its own, and the model gives them. Rarer contexts move the neurons the paper's way. We measured, with
# each synthetic context's share of the corpus changed and everything else at default:
#
# | share of base64, DNA, hex, Arabic, Hebrew | steps | best neuron r (same order) | feature minus neuron: mean, min |
# |---|---|---|---|
# | 2-3% each (default)            | 6,000  | 0.74, 0.98, 0.96, 0.72, 0.59 | -0.08, -0.20 |
# | 1% each                        | 6,000  | 0.86, 0.99, 0.78, 0.72, 0.56 | +0.01 (min not recorded) [*] |
# | 0.5% each                      | 6,000  | 0.56, 0.84, 0.63, 0.54, 0.74 | +0.11, -0.06 [*] |
# | 0.6, 0.2, 0.5, 0.2, 0.2% (`rare`) | 12,000 | 0.89, 0.40, 0.87, 0.28, 0.41 | **+0.27**, -0.02 |
# | 1, 0.25, 0.5, 0.3, 0.3%        | 12,000 | 0.81, 0.67, 0.76, 0.29, 0.44 | +0.21, +0.04 [*] |
#
# (Shares as configured; the held-out text holds each context at about that share. [*]: the SAE was
# trained with an earlier batch order that read the store in a few long stretches at a time, so that a
# rare context reached the SAE in bursts; the neuron columns do not depend on it.)
#
# The fourth row is `--scale rare` (`RARE_CORPUS` in tinymono/pipeline.py). There the paper's contrast
# appears for DNA, Arabic and Hebrew: the best DNA neuron puts 13% of its activation mass on DNA and
# correlates 0.40 with it, while one feature correlates 0.98; for Arabic 0.28 against 0.72, for Hebrew
# 0.41 against 0.74 (the paper: 0.80, 0.74, 0.55 for the features, 0.1-0.18 for neurons), and the groups
# for all three pass. But base64 and hex do not follow, and we found no mixture that keeps every check:
#
# - *Entropy floors.* A rare context gives the model little to learn from. At 0.5% each and 6,000 steps
#   the model ends at 1.15 x the floor on random base64 (bar 1.10); `rare` trains twice as long and keeps
#   base64 and hex at 0.5-0.6%, which gives 1.087 (base64), 1.092 (hex) and 1.0996 (DNA, at 0.2%, by a
#   hair). What the model needs to reach a floor seems to be what makes it dedicate a neuron: at
#   `rare` the base64 and hex neurons stay dedicated (0.89 and 0.87), and the best hex feature (0.85)
#   falls just short of the hex neuron.
# - *Look-alikes.* A hex digest is written in a subset of base64's alphabet, and the real text holds
#   runs of digits (issue numbers in comments, long float literals) and alphabet strings
#   ('...xyzABCDEFG...', labelled `python` because that is where they are). At `rare` 18% of the best
#   base64 feature's activation mass falls outside its label, 10 points of it on hex digests and about 3
#   on Python strings and comments. It is not the doubt of a digest's first bytes: the feature is nearly
#   silent there and fires on 94% of the bytes past the 32nd, at about 30% of its strength on base64, as
#   if it stood for "deep in a long random string". Of the best hex feature's mass 11.5% falls outside
#   its label, most of it on digits in comments, prose and number literals. So no group of features at
#   least 90% specific reaches r 0.8 for either. At the default shares the look-alikes are a small part
#   of the mass and those groups pass.
# - *The SAE does not close it.* On the `rare` transformer and activations, with only the SAE changed:
#   at L1 coefficients 4e-4 (mean L0 44, over the bar of 30) and 1.6e-3 (L0 6.7) the best feature beats
#   the best neuron in every context (mean gap +0.28 for both, smallest +0.03 and +0.04), where at 8e-4
#   the hex feature trails by 0.02: the smallest gap sits near zero and moves from one SAE to the next.
#   The base64 feature's spill onto hex digests keeps its specificity at 0.79-0.85 in every one of these
#   SAEs, so the base64 group fails in all of them, and so does the hex group; at 1.6e-3 the broader
#   features lose the DNA and Arabic groups too. Decaying the learning rate over the last quarter of the
#   run (at 8e-4) left the gaps where they were (+0.27, smallest -0.005) and lost the Arabic group.
#   Twice the steps (8,000: 22 minutes of training, over the SAE's budget of 20) made the hex feature
#   more specific (0.92) but narrower (r 0.79, now 0.07 behind the neuron); its group reached 0.793 and
#   the Arabic group 0.796, both just short of 0.8, and no base64 feature became 90% specific.
#
# So at the default scale the last two checks below fail, and at `rare` the base64 and hex groups and
# the smallest gap fail instead. Closing both seems to need what the paper's model had: far more text
# (ours reads 25-50M bytes), so that contexts rare enough to share neurons are still learned to their
# floors, and contexts so rare in the real text that look-alikes do not matter. Try other shares: change
# the `mixture` of `RARE_CORPUS` and run `python -m tinymono reproduce --scale rare --out runs-mymix` (a
# fresh folder: the cache of an earlier `rare` run holds a transformer trained on the old mixture).

# %% [markdown]
# ## One feature per generated context, up close
#
# For the best feature of each generated context: its strongest activations in held-out text (the
# activating byte in ⟦ ⟧; for a character of several bytes, which byte it was: ⟦ب·d8⟧ is the lead byte
# 0xD8 of ب), how its activations split by context, which next bytes it promotes (logit
# weights), and what ablating it does to the model's loss where it fires and elsewhere.

# %%
windows = corpus.sample_windows("val", lesson.pick(smoke=8, default=128, full=256), cfg.n_ctx + 1,
                                np.random.default_rng(2))[0]
fig, axes = plt.subplots(1, len(GENERATED), figsize=(3.2 * len(GENERATED), 3.2), sharey=True)
names = feat_report.names["context"]
for ax, label in zip(axes, GENERATED):
    u = by_label[label]["feature"]["unit"]
    if by_label[label]["tokens"] == 0:  # possible at smoke scale: too little held-out text
        print(f"\n=== {label}: no {label} bytes in the held-out text at this scale, so no feature to show")
        ax.set_axis_off()
        continue
    print(f"\n=== {label}: feature {u} (r = {by_label[label]['feature']['pearson']:.2f}, "
          f"density {feat_report.density[u]:.2%})")
    for ex in analysis.top_examples(features, feat_report, u, k=3, before=24, after=4):
        print(f"  {ex['activation']:6.2f}  {analysis.format_example(ex['tokens'], ex['center'])!r}")
    promoted, suppressed = analysis.top_logits(analysis.logit_weights(params, cfg, sae_params["W_dec"][u]), 6)
    print("  promotes:", " ".join(t for t, _ in promoted), "   suppresses:", " ".join(t for t, _ in suppressed))
    effect = analysis.ablation_effect(params, cfg, sae_params, sae_cfg, u, windows)
    print(f"  ablation: loss {effect['mean_on']:+.3f} nats where it fires ({effect['n_on']} tokens), "
          f"{effect['mean_off']:+.4f} elsewhere")
    edges, counts, _ = analysis.activation_histogram(feat_report, "context", u)
    centers = (edges[:-1] + edges[1:]) / 2
    inside, outside = counts[names.index(label)], counts.sum(axis=0) - counts[names.index(label)]
    ax.bar(centers, outside, width=np.diff(edges), color="0.6", label="other contexts")
    ax.bar(centers, inside, width=np.diff(edges), bottom=outside, color="tab:orange", label=label)
    ax.set(yscale="log", title=f"{label}: feature {u}", xlabel="activation")
    ax.legend(fontsize=7)
axes[0].set_ylabel("tokens (nonzero activations)")
lesson.savefig(fig, "feature_histograms.png", "Activation histograms of the best feature for each generated "
               "context, split into the context's own bytes (orange) and all others (grey).")

# %% [markdown]
# **What you should see.** Each feature fires inside its context, often on one kind of byte: in our
# default run the DNA feature on one base (the SAE gives single bases features of their own), the hex
# feature on the characters of digests, the Arabic and Hebrew features on letters. Its logit weights promote
# what comes next there: the four bases and the line end for DNA, digits for hex, the scripts' UTF-8
# lead bytes (0xD8 and 0xD9 for Arabic, 0xD7 for Hebrew) and the space for the two scripts. Ablating a
# feature costs most where nothing else makes its prediction: in that run the Hebrew feature's ablation
# raised the loss by about 1.3 nats on the tokens where it fires (it carries "a Hebrew letter comes
# next"), Arabic's by about 0.4, DNA's by only 0.01 (the next base is random, and the rest of the model
# knows it is in DNA). The loss "elsewhere" is exactly 0 by construction, not a finding: in a one-layer
# model the MLP's output at a position reaches only that position's logits, and the ablation changes
# only the positions where the feature fires.

# %% [markdown]
# ## A feature the labels do not cover
#
# Most features are not about a whole context. Here is a frequently firing feature that correlates
# with no context label (all |r| < 0.3): read its examples and its logit weights, and name it yourself.
# Often it is a byte-level pattern (a particular character, the inside of an identifier, the space
# after a comma...), a finer structure than our labels describe.

# %%
ctx_r = np.abs(feat_report.families["context"]["pearson"]).max(axis=0)
candidates = np.flatnonzero((ctx_r < 0.3) & (feat_report.density > 1e-3))
uncovered = int(candidates[np.argmax(feat_report.max[candidates])]) if candidates.size else int(np.argmin(ctx_r))
print(f"feature {uncovered}: density {feat_report.density[uncovered]:.2%}, best |r| with any context {ctx_r[uncovered]:.2f}")
for ex in analysis.top_examples(features, feat_report, uncovered, k=6, before=24, after=4):
    print(f"  {ex['activation']:6.2f}  {analysis.format_example(ex['tokens'], ex['center'])!r}")
centers_bytes = [int(ex["tokens"][ex["center"]]) for ex in analysis.top_examples(features, feat_report, uncovered, k=16)]
common = max(set(centers_bytes), key=centers_bytes.count) if centers_bytes else None
if common is not None:
    print(f"the activating byte is {analysis.token_text(common)!r} in {centers_bytes.count(common)} of its top "
          f"{len(centers_bytes)} examples")
promoted, _ = analysis.top_logits(analysis.logit_weights(params, cfg, sae_params["W_dec"][uncovered]), 8)
print("it promotes:", " ".join(t for t, _ in promoted))

# %% [markdown]
# ## The feature browser
#
# A static page (no server, no network) with every feature shown above and more: the best feature for
# every context and detail label, the groups of the five generated contexts, the uncovered feature, and
# a random sample. Open
# `feature_browser.html` from this lesson's folder in any browser.

# %%
best_detail = analysis.best_units(feat_report, "detail")
units = sorted({u for g in groups.values() for u in g["units"]} | {r["feature"]["unit"] for r in rows}
               | {b["pearson"][0] for b in best_detail.values()} | {uncovered}
               | set(np.random.default_rng(0).choice(sae_cfg.d_sae, lesson.pick(smoke=4, default=40), replace=False).tolist()))
cards = analysis.feature_cards(features, feat_report, params, cfg, units)
page = write_browser(lesson.out / "feature_browser.html", cards, title="tinymono: SAE features of the one-layer transformer",
                     summary={"features": sae_cfg.d_sae, "held-out tokens scored": len(val_store),
                              "features shown": len(cards)})
print(f"browser: {page} ({page.stat().st_size / 1e6:.1f} MB, {len(cards)} features)")

# %% [markdown]
# ## Checks against the labels

# %%
gaps = []
for label in GENERATED:
    g, best_f, best_n = by_label[label].get("group", {"units": [], "pearson": 0.0}), by_label[label]["feature"], \
        by_label[label]["neuron"]
    spec = [feat_report.score("context", label, "specificity")[u] for u in g["units"]]
    ok = g["pearson"] >= 0.8 and len(g["units"]) <= 3 and all(s >= 0.9 for s in spec)
    lesson.check(f"{label}: group of {len(g['units'])} features, correlation (min specificity "
                 f"{min(spec, default=0):.2f})", float(g["pearson"]), ok, ">= 0.8, from features >= 0.9 specific")
    print(f"      {label}: best single feature r = {best_f['pearson']:.3f}, best neuron r = {best_n['pearson']:.3f}")
    gaps.append(best_f["pearson"] - best_n["pearson"])
lesson.check("best feature beats best neuron in every generated context (min gap)", float(min(gaps)),
             min(gaps) > 0, "> 0")
lesson.check("best feature minus best neuron correlation, mean over contexts", float(np.mean(gaps)),
             np.mean(gaps) >= 0.2, ">= 0.2")
lesson.finish()
