# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 08: steering with features, and features that split
#
# **What the paper says.** Two more tests that the SAE's features are real. *Pinned sampling*: hold a
# feature at a high value while the model writes, and the text turns into the feature's context (pin the
# base64 feature and the model writes base64). *Feature splitting*: train dictionaries of several sizes
# on the same activations, and a feature of the small one reappears in the large one as a family of
# finer features (Bricken et al.'s base64 feature at 512 latents became three at 4,096: letters, digits,
# and base64-encoded ASCII text).
#
# **Here, with ground truth.** Text the model writes has no labels, so a *recogniser* scores it: runs of
# 16 or more base64 characters, 8 or more DNA bases or hex digits (chance runs that long are rare in
# Python and English; a base64 run must hold a capital, a small letter and a digit, + or /, which words and
# names lack, and a hex run a letter and a digit), and whole letters of the Arabic and Hebrew alphabets the
# corpus uses (a sibling language's words count too: they are written in the same letters). Splitting is
# scored with the labels and with the bytes themselves: which context, and which byte of it, each feature
# of a family fires on.

# %%
import tinymono  # noqa: F401, I001  (first: it tells OpenBLAS how long to spin before NumPy loads it)
import re

import numpy as np

from tinymono import corpus_generated, features, interventions, pipeline, plots, scores, text
from tinymono import transformer as tr
from tinymono.corpus_sources import CONTEXT_NAMES, NAMED_CONTEXTS
from tinymono.lesson import Lesson

lesson = Lesson("08_steering_and_splitting")
NAMED = list(NAMED_CONTEXTS)

(corpus, params, cfg, train_store, val_store,
 sae_params, sae_cfg) = pipeline.get_trained(lesson.scale, lesson.cache, seed=lesson.seed)
feature_source = features.FeatureSource(val_store, sae_params, sae_cfg)
report = scores.analyse_units(feature_source, families=("context",))
groups = scores.label_groups(feature_source, report, "context", labels=NAMED)

# %% [markdown]
# ## Pinned sampling
#
# `interventions.clamp_hook` sets features to values v_i at every position and leaves the rest of the MLP's
# activations alone: post + sum_i (v_i - f_i(post)) d_i, where d_i is feature i's decoder direction
# (v = 0 is lesson 07's ablation). `transformer.sample_many` applies the hook at every step (the prompts
# continue together, one forward of all of them per new byte, each drawing from its own generator). We
# pin each context's group from lesson 07 (its at most 3 features, each at least 90% specific; where a context has
# no such feature, its best feature by correlation instead, and the printout says which), each member at
# its largest activation on held-out text, and let the model continue prompts of plain Python and
# English. The same prompts continued with nothing pinned give the baseline (each prompt's random
# generator is seeded alike, though once the pin changes the probabilities the draws differ).

# %%
def continuations(hook, prompts, n_new):
    """[len(prompts), n_new]: each prompt continued with its own seeded generator, all prompts in one batch."""
    rngs = [np.random.default_rng(i) for i in range(len(prompts))]
    return tr.sample_many(params, cfg, prompts, n_new, rngs, hook_post=hook, fast=True)[:, prompts.shape[1]:]


windows, window_ctx, _ = corpus.sample_windows("val", 400, 48, np.random.default_rng(5))
plain_text = np.isin(window_ctx, [CONTEXT_NAMES.index("python"), CONTEXT_NAMES.index("english")]).all(axis=1)
prompts = windows[plain_text][:lesson.pick(smoke=2, default=8)].astype(np.int64)
n_new = lesson.pick(smoke=16, default=64)
baseline = continuations(None, prompts, n_new)
print(f"{len(prompts)} prompts of 48 bytes, e.g. {text.written_text(prompts[0])!r}\n"
      f"  continued: {text.written_text(baseline[0])!r}\n")
steering = {}
for label in NAMED:
    units = groups[label]["units"] or [int(np.argmax(report.score("context", label, "pearson")))]
    what = "group" if groups[label]["units"] else "best feature (no group)"
    pinned = continuations(interventions.clamp_hook(sae_params, sae_cfg, units, report.max[units]), prompts, n_new)
    steering[label] = {"units": units, "what": what, "texts": pinned,
                       "pinned": np.mean([text.written_share(t, label) for t in pinned]),
                       "plain": np.mean([text.written_share(t, label) for t in baseline])}
    print(f"{label:7s} pin {what} {units}: {steering[label]['pinned']:.0%} of the written bytes are {label} "
          f"(nothing pinned: {steering[label]['plain']:.0%})\n  {text.written_text(pinned[0])!r}")

fig = plots.pinned_sampling(NAMED, [steering[l]["plain"] for l in NAMED], [steering[l]["pinned"] for l in NAMED])
lesson.savefig(fig, "pinned_sampling.png", "Share of the bytes the model writes that the recogniser of each "
               "context accepts, with the context's features pinned at their largest held-out activation (orange) and "
               "without (grey; a bar of height 0 is not drawn).")

# %% [markdown]
# **What a pin can write.** A pinned feature changes the output only through its decoder direction, which
# W_out and the unembedding turn into logits (lesson 07's logit weights). So for each group, the *lift*:
# the logit weights of the context's bytes (each weighted by how often the context uses it) minus the
# median weight over the bytes the corpus holds, times each member's pinned value, summed over the members.

# %%
train_split = corpus.split("train")
train_tokens, train_context = np.asarray(train_split.tokens), np.asarray(train_split.context)
present = np.bincount(train_tokens, minlength=cfg.d_vocab) > 0
for label in NAMED:
    uses = np.bincount(train_tokens[train_context == CONTEXT_NAMES.index(label)], minlength=cfg.d_vocab)
    share = uses / max(uses.sum(), 1)
    lifts = []
    for u in steering[label]["units"]:
        w = features.logit_weights(params, cfg, sae_params["W_dec"][u])
        lifts.append(report.max[u] * (share @ w - np.median(w[present])))
    points = 100 * (steering[label]["pinned"] - steering[label]["plain"])
    print(f"{label:7s} pinned at {np.round(report.max[steering[label]['units']], 2)}: lift of its own bytes "
          f"{sum(lifts):+.2f} (its share of the written bytes {points:+.0f} points)")

# %% [markdown]
# **A two-byte cycle.** Arabic and Hebrew letters are two bytes each, a lead byte (0xD8/0xD9, or 0xD7) and a
# continuation byte, and the SAE has separate features for the two steps. The recogniser counts only the
# letters the corpus's generator writes (36 Arabic, 27 Hebrew); below, also any character of the script's
# Unicode block, and the share of lead bytes (whole letters would be exactly half). First the group pinned as
# above, then its first feature (its best correlated) alone (one line if the pin above was a single feature):

# %%
BLOCK = {"arabic": re.compile("[\u0600-\u06ff]+"), "hebrew": re.compile("[\u0590-\u05ff]+")}
for label, lead in (("arabic", [0xD8, 0xD9]), ("hebrew", [0xD7])):
    u = steering[label]["units"][0]
    alone = continuations(interventions.clamp_hook(sae_params, sae_cfg, u, report.max[u]), prompts, n_new)
    runs = [(f"{steering[label]['what']} {steering[label]['units']}", steering[label]["texts"])]
    if len(steering[label]["units"]) > 1:
        runs.append((f"feature {u} alone", alone))
    for name, texts in runs:
        block = np.mean([sum(len(m.group().encode()) for m in BLOCK[label].finditer(text.written_text(t))) / len(t)
                         for t in texts])
        print(f"{label} {name}: letters {np.mean([text.written_share(t, label) for t in texts]):.0%}, "
              f"any {label}-block character {block:.0%}, lead bytes {np.mean([np.isin(t, lead).mean() for t in texts]):.0%}")
    print(f"  feature {u} alone ends {bytes(int(t) for t in alone[0][-20:] if t < 256)!r}")

# %% [markdown]
# **What you should see.** Pinned, a context's features can pull the text into that context, from prompts
# that mostly continue as Python or English when nothing is pinned; whether they do, and how far, differs by
# context and by run (the shares above). How far depends on how cleanly the features stand for their context
# (a feature that also fires on plain letters pulls less) and on how much of the model's prediction of the
# context runs through them: the lift above. A context the model can predict without its MLP has features
# that only read. In a DNA record every byte of the window is a base, so attention's average over the window
# already says "DNA" and the direct path promotes the bases: DNA's features can be specific and still lift
# little, and then pinned they write little DNA. A hex digest is a few dozen digits inside a line of code or
# prose, where the window is mostly host text: the MLP must decide that the last bytes are a digest's, so
# its hex feature fires strongly and lifts the digits, and pinned it writes hex. The scripts are harder
# still: a letter is two bytes, and the SAE tends to give the two steps features of their own, each a state
# of the two-byte cycle (the paper saw such chains of features as small finite-state automata, each feature
# a state). After a lead byte the model needs to know the script, because the script's sibling languages
# (lesson 05) use the same lead bytes with other letters; after a letter's last byte it need not, since a
# sibling too writes a lead byte or a space there, yet the SAE may still give that state a feature of the
# script's own. A script feature of the lead-byte state promotes the continuation bytes, and pinned it can
# write whole letters, the model's own bookkeeping adding the lead bytes; but the continuation bytes
# (0x80-0xBF) are the same for both scripts, and from a prompt with no script in it the model may add the
# *other* script's lead bytes, so a pinned Hebrew feature can write Arabic letters (the recogniser counts
# only the pinned script's). A feature of the other state, "a lead byte comes next", pinned alone may write
# lead bytes without enough continuation bytes to make letters, write whole letters, or write nothing of the
# script (the "alone" lines above say which); without the siblings (`--set corpus.script_siblings=0`) the
# scripts have only features of that kind, and pinning fails. These are tendencies, not laws: the printout
# above says what each pin wrote in this run (lesson 07 prints the bytes each feature reads), and in some
# runs a feature of the lead-byte state writes no letters at all. Base64 can fail for DNA's reason: a blob
# is a long run of its alphabet, where the window says "base64" without the MLP, and where its features lift
# their bytes little (the lift above), a pin writes little base64. README ("Where the reproduction stands")
# says which pins held over the recorded seeds.
#
# **Try it.** Test the explanation of DNA on a world where it no longer holds: `python -m tinymono
# reproduce --only 05 06 07 08 --set corpus.dna_lowercase=True` writes the same DNA in a, c, g, t, common
# English letters, so the byte just read no longer says "DNA" and the MLP must combine it with the
# context. DNA's lift then rises, and pinned, its features write more DNA. The splitting below pays for
# it: lowercase bases share their bytes with hex digits and words, and the small dictionary's DNA feature
# merges with them. (A new corpus means a new transformer and SAEs: about 35 minutes at the default scale
# on 2 cores, a minute with `--scale smoke`, where the checks print SKIP.)

# %% [markdown]
# ## Feature splitting
#
# We train a small dictionary of 64 latents on the same activations with the same recipe, and compare
# it with lesson 06's. For each named context, the best feature of each: its correlation with the label,
# its specificity, and how many features correlate above 0.3 with the label.

# %%
small_params, small_cfg, _, _ = pipeline.get_sae(lesson.scale, lesson.cache, train_store, seed=lesson.seed,
                                                 d_sae=lesson.pick(smoke=16, default=64))
small = features.FeatureSource(val_store, small_params, small_cfg)
small_report = scores.analyse_units(small, families=("context",))
print(f"{'context':8s} {'best of ' + str(small_cfg.d_sae):>28s} {'best of ' + str(sae_cfg.d_sae):>28s}")
for label in NAMED:
    cells = []
    for rep in (small_report, report):
        r, spec = rep.score("context", label, "pearson"), rep.score("context", label, "specificity")
        u = int(np.argmax(r))
        cells.append(f"r {r[u]:.2f} spec {spec[u]:.2f} n(r>0.3) {int((r > 0.3).sum()):2d}")
    print(f"{label:8s} {cells[0]:>28s} {cells[1]:>28s}")

# %% [markdown]
# A small dictionary must spend its few latents on what explains the most variance, so a context it
# covers at all it covers with one broad feature; a larger one has room for finer features, each more
# specific. Where did a small dictionary's feature go? Its *family* in the large dictionary: the 6
# features whose decoder directions lie nearest to its own (`cos`: the cosine between the two
# directions), with the share of each one's activation mass on the context and on each byte it *reads*
# (the byte at the position where it fires).

# %%
tokens = np.asarray(val_store.tokens[:])
context = np.asarray(val_store.context[:])
PARENT_R = 0.3  # a small dictionary's best feature for a context that correlates less is not that context's
families = {}
for label in NAMED:
    y = context == CONTEXT_NAMES.index(label)
    parent = int(np.argmax(small_report.score("context", label, "pearson")))
    cos = sae_params["W_dec"] @ small_params["W_dec"][parent]
    children = np.argsort(-cos, kind="stable")[:6]
    a_parent = small.activations(0, len(val_store), [parent])[:, 0]
    a_children = feature_source.activations(0, len(val_store), children)
    summed = a_children.sum(axis=1)  # a constant side (no firing at all) would give NaN: 0 instead
    together = np.corrcoef(a_parent, summed)[0, 1] if np.ptp(a_parent) > 0 and np.ptp(summed) > 0 else 0.0
    families[label] = {"parent": parent, "children": children, "together": together, "bytes": [],
                       "cos": cos[children], "on_label": []}
    r_best = small_report.score("context", label, "pearson")[parent]
    print(f"\n{label}: feature {parent} of {small_cfg.d_sae} (r {r_best:.2f}); its family of {sae_cfg.d_sae}; "
          f"the family's summed activation correlates {together:.2f} with it")
    if r_best < PARENT_R:
        print(f"  (below r {PARENT_R}: no {label} feature among the {small_cfg.d_sae}; the rows below are the "
              f"neighbours of another latent, not a family of {label})")
    for j, c in enumerate(children):
        a = a_children[:, j]
        mass = np.bincount(tokens, weights=a, minlength=cfg.d_vocab) / max(a.sum(), 1e-12)
        top = np.argsort(-mass, kind="stable")[:3]
        families[label]["bytes"].append(mass)
        families[label]["on_label"].append(a[y].sum() / max(a.sum(), 1e-12))
        print(f"  {c:5d}  cos {cos[c]:.2f}  {families[label]['on_label'][-1]:4.0%} on {label}   reads "
              + ", ".join(f"{text.token_text(t)} {mass[t]:.0%}" for t in top))

dna = families["dna"]
bases = list(corpus_generated.DNA_BASES[corpus.config.dna_lowercase])  # A, C, G, T (or a, c, g, t)
share = np.array([m[bases] for m in dna["bytes"]])  # [children, 4]
r_parent = small_report.score("context", "dna", "pearson")[dna["parent"]]
fig = plots.feature_split_by_base(share, dna["children"], sae_cfg.d_sae, small_cfg.d_sae, r_parent,
                                  cos=dna["cos"], on_dna=dna["on_label"])
lesson.savefig(fig, "dna_family.png", f"The {sae_cfg.d_sae}-latent features nearest the {small_cfg.d_sae}-latent "
               "SAE's best feature for DNA (a DNA feature only if it correlates 0.3 or more with DNA; the panel says "
               "when it does not), each labelled with its decoder cosine to it and its share of activation mass on "
               "DNA's bytes: the share of each one's mass on each base it reads (the rest, up to 1 in each row, is "
               "on other bytes: line ends, or another context's, for a neighbour that is no DNA feature).")

# %% [markdown]
# **What you should see.** When the small dictionary has a DNA feature, its family in the large one splits
# it by the byte read: features for single bases, and perhaps one that fires on every base; summed, the
# family tracks the parent. A small dictionary often has none: DNA is 1.5% of the bytes, and 64 latents go
# first to what explains the most variance. Then the "parent" is some other latent, the printout says so,
# and the checks on the family below fail, since there is nothing to split. And when there is a parent, its
# nearest features in the large dictionary need not be its children: a neighbour by decoder direction can
# belong to another context (its row above says how much of it is on DNA), and the large dictionary may give
# a base to a feature shared with the same letter elsewhere, so fewer than four bases get a child of their
# own. The split follows what the model needs: DNA's next base depends on the base just read (lesson 05's
# chain), so "DNA, and the last base was C" is worth a direction of its own. Were the bases uniform, the
# base read would not matter and the family would not split by it. Where the small dictionary has a feature
# for Arabic or Hebrew, its family may split the script's bytes (continuation bytes, the space between
# words), may be near-copies of one state of the two-byte cycle, or, when the parent is weak, may belong
# mostly to another context, even the other script (each row above says how much of it is on the script).
# This is why a single feature of a large dictionary can correlate less with a whole context than a group of
# its features: a larger dictionary spends its latents on finer distinctions, and a context is then a
# family, not a feature. Which size is "right" depends on the question; the paper's answer was to study
# several.
#
# **Try it.** The paper's third test, *universality*, needs a second transformer: lesson 10 trains one
# from another seed and matches each feature of one model to the feature of the other whose activations
# on the same held-out bytes correlate best (the paper: median 0.72 for features, 0.46 for neurons).

# %% [markdown]
# ## Checks against ground truth

# %%
for label in NAMED:
    s = steering[label]
    lesson.check(f"{label}: pinned features write {label} (share minus unpinned)", float(s["pinned"] - s["plain"]),
                 s["pinned"] - s["plain"] >= 0.5, ">= 0.5")
r_small = float(small_report.score("context", "dna", "pearson")[dna["parent"]])
lesson.check(f"one feature of {small_cfg.d_sae} covers DNA (correlation)", r_small, r_small >= 0.9, ">= 0.9")
majority = {b for m in share for b in range(4) if m[b] > 0.5}
has_parent = r_small >= PARENT_R  # else the "children" are another latent's neighbours (printed above)
lesson.check("bases that some child of the DNA feature is mostly about (> 50% of its mass)", len(majority),
             has_parent and len(majority) == 4, f"== 4 (A, C, G, T), the parent a DNA feature (r >= {PARENT_R})")
lesson.check("the children's summed activation against the DNA parent (correlation)", float(dna["together"]),
             has_parent and dna["together"] >= 0.9, f">= 0.9, the parent a DNA feature (r >= {PARENT_R})")
lesson.finish()
