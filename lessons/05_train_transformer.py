# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 05: training the transformer on a labelled corpus
#
# **What the paper says.** The one-layer transformer of "Towards Monosemanticity" was trained with Adam
# on 100 billion tokens of the Pile. Its sparse-autoencoder features were then named by what they fire
# on: Arabic script, DNA, base64, Hebrew, hex. To find such features at all, the model must first have
# *learned* those kinds of text, so that its MLP has something to represent.
#
# **What this implementation chose.** Bytes as tokens, and a corpus (tinymono/corpus.py) in which every
# byte carries a label: which source it comes from (its *context*: python, english, base64, dna, hex,
# arabic, hebrew, or one of 48 synthetic languages) and finer details (a base64 blob of random bytes, a
# digit of a DNA header, ...). Python and English are real text from the Python standard library. DNA,
# hex digests, random base64, Arabic, Hebrew and the languages are *generated*, so for each of their
# bytes we know exactly how unpredictable it is: the mean entropy over a label's bytes is a floor that no
# model can beat. That gives a ground truth to
# train against. For real text there is no floor, so we compare with the count-based unigram and bigram
# models instead (bits per byte with no context, and with one byte of context).
#
# Why 48 languages? The paper's model read the Pile, where thousands of kinds of text share 512 neurons,
# each kind rare. A corpus with a handful of common contexts lets a model give each a neuron of its own, and
# then there is no superposition for an SAE to undo (lesson 07 shows what that looks like). So every
# generated context here is rare (1-2% of the bytes for each named one, 0.42% for each language), there are
# 53 of them, and the MLP has 128 neurons, not the paper's 512. 53 is fewer than 128, but a context is not
# one feature: to predict a language's next letter the model must know the language *and* the letter it just
# read (8 letters each, so 48 x 8 such states in the languages alone), a script's letter is two bytes, each
# a state of its own, and Python and English need far more. Those features outnumber 128 neurons many times
# over, and rarity keeps most of them from earning a neuron of its own (lesson 07 measures the neurons, and
# names the few that get one in a run). A language writes lowercase words over its own 8 of the 26 letters;
# the alphabets overlap, so no single letter gives a language away, and each next letter depends on the
# language and the letter before it (an order-1 Markov chain: `corpus_generated.languages`). Four languages
# write the same kind of words in the letters of the scripts, two in Arabic letters and two in Hebrew ones,
# as Persian is written in Arabic letters and Yiddish in Hebrew ones (`corpus_generated.sibling_script`).
# Without them, the lead byte of a letter would settle which bytes can follow it, in every context that uses
# it; with them, only the context does (lesson 08 shows why that matters).
#
# This lesson builds the corpus, trains the model of lesson 04 through the shared training loop
# (tinymono/train.py: progress bar, checkpoints, resume), and measures, per label, how close the model
# comes to the floors. The trained model is cached for lessons 06-08, and a second run of this
# lesson reuses it.

# %%
import tinymono  # noqa: F401, I001  (first: it tells OpenBLAS how long to spin before NumPy loads it)
import time

import numpy as np

from tinymono import pipeline, plots
from tinymono import transformer as tr
from tinymono.corpus import decode, ngram_bits_per_byte
from tinymono.corpus_build import get_corpus
from tinymono.corpus_sources import LANGUAGES, NAMED_CONTEXTS
from tinymono.lesson import Lesson

lesson = Lesson("05_train_transformer")

# %% [markdown]
# ## The corpus
#
# Built once (seconds at the default size) and memory-mapped afterwards. Validation text comes from other
# standard-library files than the training text, so the model cannot pass by memorising. The sizes of
# each scale (corpus, model, training) live in one table, `tinymono/pipeline.py`, which lessons 06 and
# 07 read too: they reuse the corpus and the model trained here.

# %%
t0 = time.perf_counter()
corpus = get_corpus(pipeline.corpus_config(lesson.scale, lesson.seed), lesson.cache)
print(f"corpus in {corpus.path} ({time.perf_counter() - t0:.1f} s): {corpus.meta['sizes']['train']:,} training "
      f"and {corpus.meta['sizes']['val']:,} validation bytes")
shares = corpus.meta["mixture_actual"]["val"]
print("share of validation bytes per context:", {k: f"{v:.3f}" for k, v in shares.items() if v})

# %% [markdown]
# ## What there is to learn: baselines and floors
#
# For each context label, the bits per byte of a unigram model (byte frequencies), of a bigram model
# (the previous byte as context) and, for generated text, the exact floor. A model that uses more context
# than one byte should beat the bigram on real text, and should come close to the floor on generated
# text: a hex digit is 4 bits, a random base64 character 6 bits, and a DNA base 1.60 bits, because its
# bases follow a chain (A is followed by C, C by G, G by T and T by A with probability 0.6, by each other
# base with 0.13). A bigram fitted on DNA alone would nearly reach that floor; on the mixed corpus the
# previous byte is not enough, and a model must know that it reads DNA *and* which base it just read.
#
# Both count-based models are fitted once on the whole training split, all contexts mixed, and then
# scored on the validation bytes of each label separately (`ngram_bits_per_byte` in tinymono/corpus.py):
# they are what a model pays that has not worked out which kind of text it is in. That explains two odd
# entries of the table. Arabic costs the unigram more than 8 bits per byte, worse than a uniform guess,
# because the bytes of Arabic letters in UTF-8 are rare in a corpus that is mostly Python and English. And
# on random base64 the bigram does worse than the unigram: its next-byte tables come mostly from Python
# and English, where the previous byte is a strong hint, and for random characters it is a wrong one
# (fitted on random base64 alone, the same bigram would pay about 6.05).
#
# The floors are means over every byte with that label, so they sit a little off the round numbers.
# DNA's also covers the FASTA header lines (">seq" and the newline count
# 0 bits, each of the six random digits log2(10) = 3.32 bits), a record's first base (2 bits) and the
# line ends (after a line's first base, each position ends the line with probability 1/60: 1.70 bits
# instead of 1.60).
# Random base64's includes the line breaks of stand-alone blobs (every 76 characters) and the
# '=' padding at a blob's end, which carry no information, and the last characters before the padding,
# which carry 4 or 2 bits.

# %%
unigram, bigram = ngram_bits_per_byte(corpus, 1), ngram_bits_per_byte(corpus, 2)
unigram["b64_random"] = ngram_bits_per_byte(corpus, 1, by="detail")["b64_random"]
bigram["b64_random"] = ngram_bits_per_byte(corpus, 2, by="detail")["b64_random"]
floors = {**{k: v for k, v in corpus.floors["context"].items() if v is not None},
          "b64_random": corpus.floors["detail"]["b64_random"]}
LABELS = ["python", "english", *NAMED_CONTEXTS]
print(f"{'label':<12}{'unigram':>9}{'bigram':>9}{'floor':>9}")
for label in LABELS + ["b64_random"]:
    floor = floors.get(label)
    print(f"{label:<12}{unigram.get(label, float('nan')):9.3f}{bigram.get(label, float('nan')):9.3f}"
          f"{'' if floor is None else f'{floor:9.3f}'}")
present = [l for l in LANGUAGES if l in bigram]  # at smoke scale a language may miss the validation split
FAMILY_BAR = 1.15  # the check at the end: the languages' median bits per byte over their floors
fam = {name: np.array([d[l] for l in present]) for name, d in (("unigram", unigram), ("bigram", bigram),
                                                                ("floor", floors))}
print(f"{'languages':<12}" + "".join(f"{np.median(fam[k]):9.3f}" for k in ("unigram", "bigram", "floor"))
      + f"   (medians over {len(present)}; floors {fam['floor'].min():.2f}-{fam['floor'].max():.2f})")

# %% [markdown]
# ## Training
#
# Each step draws 32 random windows of 129 bytes from the training split (128 inputs, each predicting the
# byte after it) and takes one AdamW step: weight decay 0.1 on every parameter array with two or more
# dimensions (the weight matrices, the embeddings W_E and W_pos, and also the attention biases b_Q, b_K,
# b_V, which are [n_heads, d_head]; not the other biases or the layer norms), gradients clipped to norm
# 1, the learning rate warmed up linearly and then decayed along a cosine to a tenth. The peak rate, 2e-3,
# was chosen by measurement (docs/experiments.md, "Lesson 05: the transformer's peak learning rate": on an
# earlier corpus, 2e-3 and 4e-3 ended within 0.03 bits per byte of each other on every label, and 1e-3
# lagged). The numba kernels
# of lesson 04 (`fast=True`) do the work. The loop checkpoints every minute: interrupt it (Ctrl-C) and
# run the lesson again, and it resumes where it stopped, with the same batches it would have drawn.
# After the last step, the whole validation split is scored once, per label.

# %%
cfg, train_cfg = pipeline.transformer_configs(lesson.scale, lesson.seed)
print(cfg)
print(train_cfg)
print(f"{tr.n_params(cfg):,} parameters; {train_cfg.steps:,} steps of {train_cfg.batch * cfg.n_ctx:,} tokens "
      f"({train_cfg.steps * train_cfg.batch * cfg.n_ctx / 1e6:.3g}M tokens)")
# builds a TransformerTask and runs tinymono.train.train on it, checkpointing to lesson.cache/transformer.npz
corpus, params, cfg, task, result = pipeline.get_transformer(lesson.scale, lesson.cache, seed=lesson.seed)
if result.resumed_from == train_cfg.steps:
    print("the trained model was already in the cache: reused it")
else:
    run = train_cfg.steps - (result.resumed_from or 0)  # the steps this call ran (after a resume, fewer)
    print(f"trained {run:,} steps in {result.seconds / 60:.1f} min ({run * task.items_per_step / result.seconds:,.0f} "
          "tokens/s on average, evaluations included)")
final = task.evals[-1]

# %% [markdown]
# ## The loss curve
#
# Training bits per byte (averaged over each chunk of 100 steps) and the bits per byte on a fixed set of
# 16 validation windows, against the unigram and bigram models over all validation bytes.

# %%
lesson.savefig(plots.transformer_loss_curve(result.history, unigram["overall"], bigram["overall"]), "loss_curve.png",
               "Bits per byte while training: the training batches (mean over each chunk of 100 steps) and "
               "16 fixed validation windows, against the unigram and bigram models over all validation bytes.")

# %% [markdown]
# ## Bits per byte, label by label
#
# The whole validation split, each byte past the first 64 scored with at least 65 bytes of context
# before it. Generated labels should sit just above their floors; real text well below the bigram
# model. The last lines show the per-label numbers of the evaluations during training (every
# `eval_every` steps), which score only the first `eval_tokens` validation bytes (200,000); a context with
# no bytes there is left out of those lines.

# %%
model_bits = {**final["context"], "b64_random": final["detail"]["b64_random"]}
shown = LABELS + ["b64_random"]
lesson.savefig(plots.bits_per_label(shown, unigram, bigram, model_bits, floors), "bits_per_label.png",
               "Validation bits per byte for each label: unigram, bigram, the trained transformer and, for "
               "generated text, the entropy floor.")
print(f"{'label':<12}{'model':>8}{'bigram':>9}{'floor':>9}")
for k in shown:
    print(f"{k:<12}{model_bits[k]:8.3f}{bigram.get(k, float('nan')):9.3f}"
          f"{'' if floors.get(k) is None else f'{floors[k]:9.3f}'}")
# %% [markdown]
# The 48 languages, as a distribution: for each, the model's bits per byte over its floor, beside what the
# bigram model pays over the same floor. A language the model has identified costs it little more than
# its floor; the bigram, which cannot tell the languages apart, pays for the mix of all of them.

# %%
ratio = np.array([model_bits[l] / floors[l] for l in present])
bigram_ratio = np.array([bigram[l] / floors[l] for l in present])
lesson.savefig(plots.over_floor(ratio, bigram_ratio, FAMILY_BAR), "family_over_floor.png",
               "For each language of the family: validation bits per byte over its entropy floor, for the "
               "transformer (blue) and the bigram model (grey).")
if present:
    print(f"languages: model / floor median {np.median(ratio):.3f} (range {ratio.min():.3f}-{ratio.max():.3f}); "
          f"bigram / floor median {np.median(bigram_ratio):.3f}")
if len(task.evals) > 1:
    print("per-label bits per byte during training (first", task.evals[0]["tokens"], "validation bytes):")
    for e in task.evals[:-1]:
        print(f"  step {e['step']:>6}: " + ", ".join(f"{k} {e['context'][k]:.2f}" for k in LABELS if k in e["context"]))

# %% [markdown]
# ## What the model writes
#
# For each context, a prompt cut from the validation split (the 16 bytes before a stretch of that context
# and its first 24 bytes), continued by sampling 100 bytes at temperature 0.8. One layer and 128 bytes of
# context make for locally plausible text, not sense; and a sample may wander off into another context,
# as the corpus itself does. In the printed text, ␞ is the document separator (token 256, which has a
# context label of its own, "separator"), and � a byte that is not whole UTF-8 on its own: a letter of
# Arabic or Hebrew cut at the window's edge, or a byte the model wrote where no letter can start.

# %%
val_tokens, val_context = np.asarray(corpus.val.tokens), np.asarray(corpus.val.context)
rng = np.random.default_rng(0)
for label in LABELS + [LANGUAGES[0]]:
    idx = corpus.context_names.index(label)
    inside = val_context == idx
    starts = np.flatnonzero(inside[1:] & ~inside[:-1]) + 1  # where a stretch of this context begins
    starts = [s for s in starts if s >= 16 and inside[s:s + 32].all()]
    if not starts:
        continue
    s = starts[len(starts) // 2]
    prompt = val_tokens[s - 16:s + 24].astype(np.int64)
    out = tr.sample(params, cfg, prompt, lesson.pick(smoke=30, default=100), rng, temperature=0.8, fast=True)
    print(f"--- {label}\n  prompt: {decode(prompt, errors='replace')!r}\n  sample: "
          f"{decode(out[len(prompt):], errors='replace')!r}")

# %% [markdown]
# ## Checks
#
# Within 10% above the floor on DNA, hex digests and random base64 (the model has learned what can be
# learned there, and is not fooled into predicting the unpredictable); the 48 languages within 15% of
# their floors at the median (the checks' bar, printed with it); at least 0.3 bits per byte below
# the bigram model on Python and English (it uses more than one byte of context); and the trained model is
# still causal: changing the byte at position t changes no prediction before t.

# %%
for label, floor in (("dna", floors["dna"]), ("hex", floors["hex"]), ("b64_random", floors["b64_random"])):
    lesson.check(f"{label}: validation bits/byte over the floor (ratio)", model_bits[label] / floor,
                 model_bits[label] <= 1.1 * floor, f"<= 1.10 (floor {floor:.3f})")
family_median = float(np.median(ratio)) if present else float("nan")
lesson.check(f"the {len(present)} languages: validation bits/byte over the floor (median ratio)", family_median,
             family_median <= FAMILY_BAR, f"<= {FAMILY_BAR:.2f}")
for label in ("python", "english"):
    gain = bigram[label] - model_bits[label]
    lesson.check(f"{label}: bits/byte below the bigram model", gain, gain >= 0.3,
                 f">= 0.3 (bigram {bigram[label]:.3f})")
probe = corpus.sample_windows("val", 2, cfg.n_ctx, np.random.default_rng(1))[0].astype(np.int64)
leaks = tr.causality_leaks(params, cfg, probe, fast=True)
lesson.check("causality: positions whose change altered an earlier logit", leaks, leaks == 0, "== 0", scale_free=True)
lesson.finish()
