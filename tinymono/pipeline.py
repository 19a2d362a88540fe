"""The stages of the paper's pipeline that later lessons share, each built once and cached on disk:

    corpus  ->  transformer  ->  MLP activations (train and validation stores)  ->  sparse autoencoder

Every `get_*` function returns what is in the cache when it is there, and builds it otherwise (training
resumes from its last checkpoint if an earlier run was interrupted). The sizes for each scale live here,
in one table, so lessons 05-08 and `python -m tinymono reproduce` agree on them; `--set section.field=value`
changes one for a run (tinymono/settings.py), and each cached file's name then carries the key of the
settings it depends on.

At the end, lesson 03's world: known features in superposition (tinymono/groundtruth.py) and the recipe
of the SAEs lesson 03 trains on them, shared with `python -m tinymono sweep sae-gt`, so that a point of
the sweep with the main run's settings is the main run.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tinymono import activations, batches, interventions, metrics, sae, settings
from tinymono import transformer as tr
from tinymono.corpus import CorpusConfig
from tinymono.corpus_build import get_corpus
from tinymono.groundtruth import GroundTruth, GroundTruthConfig
from tinymono.store import ActivationStore
from tinymono.train import train

# The default world. Lesson 01's premise, that a model superposes when it has more useful, sparse features
# than dimensions, must hold in the transformer too, or no SAE can beat its neurons (lesson 07). So the
# corpus holds the five named generated contexts at 1-2% of the bytes each and a family of 48 synthetic
# languages at 0.42% each (corpus.DEFAULT_MIXTURE), 53 rare contexts with exact floors, and the MLP is
# narrower than the paper's: 128 neurons for Python, English and those 53. The SAE keeps the paper's
# ratio of latents to neurons (8x, its run A/1), and reads 8M activations (a rare context's features
# become specific only when the SAE has seen enough of it). Generated documents are short so that the scored
# held-out text holds many documents of every context; the validation split is 4 MB for the same reason.
# docs/experiments.md records the sweeps behind these numbers.
SHORT_DOCS = {"base64": (200, 2_000), "dna": (200, 1_500), "arabic": (200, 1_500), "hebrew": (200, 1_500)}

SIZES = {
    # corpus bytes; transformer; its training; activations harvested; the SAE
    "smoke": dict(
        corpus=dict(n_train_bytes=300_000, n_val_bytes=30_000),
        model=dict(d_model=32, d_mlp=128, n_heads=2, d_head=16, n_ctx=64),
        train=dict(steps=40, lr=3e-3, warmup=10, eval_every=20),
        harvest=dict(train=20_000, val=10_000),
        sae=dict(d_sae=512, steps=60, batch_size=512, l1_coefficient=8e-4)),
    "default": dict(
        corpus=dict(n_train_bytes=19_000_000, n_val_bytes=4_000_000, doc_bytes=SHORT_DOCS),
        model=dict(d_mlp=128),
        train=dict(steps=9000, lr=2e-3, warmup=300, eval_every=3000),
        harvest=dict(train=8_000_000, val=2_000_000),
        sae=dict(d_sae=1024, steps=8000, batch_size=4096, l1_coefficient=2.4e-3)),
    "full": dict(
        corpus=dict(n_train_bytes=95_000_000, n_val_bytes=5_000_000, doc_bytes=SHORT_DOCS),
        model=dict(d_mlp=128),
        train=dict(steps=60000, lr=2e-3, warmup=300, eval_every=10000),
        harvest=dict(train=20_000_000, val=2_000_000),
        sae=dict(d_sae=1024, steps=30000, batch_size=4096, l1_coefficient=2.4e-3)),
}


# Lesson 10's second transformer (another model seed, the same corpus) and its shuffled-weights baseline: the
# settings that differ from the first model's, for each scale. Both models are trained alike, as in the
# paper; only the per-label evaluations during and after training, which lesson 05 reads for model A and
# nobody for model B, are left out (eval_every 0: about 50 s of the main job at the default scale). A second
# model on a fifth of the tokens (2,000 steps, its SAE 3,000 steps on 2M activations) saved about 11 minutes
# of the main job, but its features matched model A's barely better than its neurons did
# (docs/experiments.md, "Lesson 10's model B"). Settings here name their own cache files.
SECOND = {scale: dict(train=dict(eval_every=0)) for scale in ("smoke", "default", "full")}


def _sizes(scale, second=False):
    """SIZES[scale] with the settings in force (settings.ACTIVE: `--set section.field=value`) on top, and for
    lesson 10's second models (`second`) SECOND[scale] on top of those."""
    if scale not in SIZES:
        raise ValueError(f"scale must be one of {sorted(SIZES)}, got {scale!r}")
    sizes = {section: _overlay(values, settings.ACTIVE.get(section, {})) for section, values in SIZES[scale].items()}
    if second:
        sizes = {section: {**values, **SECOND[scale].get(section, {})} for section, values in sizes.items()}
    return sizes


def _overlay(values, overrides):
    """A section's sizes with the settings on top. doc_bytes is merged one level deep, as CorpusConfig merges
    it with DEFAULT_DOC_BYTES: `--set corpus.doc_bytes={"python": (1000, 4000)}` changes Python's documents
    and keeps the scale's short ones of the others."""
    out = {**values, **overrides}
    if isinstance(values.get("doc_bytes"), dict) and isinstance(overrides.get("doc_bytes"), dict):
        out["doc_bytes"] = {**values["doc_bytes"], **overrides["doc_bytes"]}
    return out


def second_tag(model, scale):
    """'' for the first model; '-<model>-<key>' for a second one (model: 'm<seed>' or 'shuffled'), the key
    naming SECOND[scale], so that changed sizes name new files."""
    if model is None:
        return ""
    key = settings.key(SECOND[scale])
    return f"-{model}" + (f"-{key}" if key else "")


def settings_tag(*sections):
    """'' for the plain run, else '-<key>' of the settings of the sections a cached file depends on: a
    changed setting names a new file, and a file no setting touches is shared with the plain run."""
    key = settings.key(settings.ACTIVE, sections)
    return f"-{key}" if key else ""


def recipe_tag(make):
    """'' when the SAE config that `make()` builds with the settings in force is the plain run's, else '-'
    and 8 hex digits of the fields that differ. An SAE's file is named by what it trains, not by the --set
    text: a setting that leaves an SAE as it was (lesson 08's dictionary keeps its 64 latents under --set
    sae.d_sae; the frontier sets its own L1 coefficients; a value equal to the default) reuses it, and one
    that changes it never does."""
    cfg = make()
    active, settings.ACTIVE = settings.ACTIVE, {}
    try:
        plain = make()
    finally:
        settings.ACTIVE = active
    diff = sorted((f.name, getattr(cfg, f.name)) for f in fields(cfg) if getattr(cfg, f.name) != getattr(plain, f.name))
    return "-" + hashlib.sha256(repr(diff).encode()).hexdigest()[:8] if diff else ""


def check_settings(scale):
    """Build every config of the pipeline with the settings in force, so that a bad value (sae.d_sae=0)
    stops the command before anything runs; ValueError says which setting and why."""
    try:
        corpus_config(scale)
        cfg, _ = transformer_configs(scale)
        sae_config(scale, cfg.d_mlp)
        harvest = _sizes(scale)["harvest"]
        for split in settings.HARVEST_FIELDS:  # tokens of each split to harvest (harvest checks the bound later)
            n = harvest[split]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"harvest.{split} must be a positive number of tokens, got {n!r}")
    except (ValueError, TypeError) as e:
        raise ValueError(f"--set {' '.join(settings.describe(settings.ACTIVE))}: {e}") from e


def corpus_config(scale, seed=0):
    return CorpusConfig(**{**_sizes(scale)["corpus"], "seed": seed})


def transformer_configs(scale, seed=0, model_seed=None):
    """(TransformerConfig, TrainConfig) for a scale. model_seed: lesson 10's second transformer, whose
    initial weights and batches come from model_seed instead of seed, trained at SECOND's sizes."""
    sizes = _sizes(scale, second=model_seed is not None)
    seed = seed if model_seed is None else model_seed
    return tr.TransformerConfig(**sizes["model"]), tr.TrainConfig(**{"batch": 32, **sizes["train"], "seed": seed})


def sae_config(scale, d_in, d_sae=None, seed=0, second=False):
    """The SAE of the paper's recipe on the MLP activations (d_sae = 8 d_mlp at default scale, as A/1; another
    d_sae keeps everything else, as the paper's A/0..A/5 share their L1 coefficient).
    Resampling, scaled to a run of a few thousand steps (the paper's 25k..100k of 1M would resample too
    rarely): every 5% of the run through three quarters of it, for the latents that fired on at most 1e-4
    of the inputs of the last 2% (the paper's rule is "not once"). A latent that learns nothing fades
    slowly, its density halving about every 1,500 steps here: in the paper's million steps it reaches the
    ultralow mode, in our 8,000 it is still fading when the run ends, and the paper's rule never catches it
    (a quarter of the dictionary; docs/experiments.md, "Lesson 06's unused latents").
    second: lesson 10's SAE of a second model (the same recipe, SECOND's number of steps)."""
    recipe = dict(lr=1e-3, resample_at=tuple(round(0.05 * i, 2) for i in range(1, 16)), dead_window=0.02,
                  dead_below=1e-4, resample_batches=25)
    sizes = {**recipe, **_sizes(scale, second)["sae"], **({} if d_sae is None else {"d_sae": d_sae})}
    return sae.SAEConfig(**sizes, d_in=d_in, seed=seed)


def get_transformer(scale, cache, progress=None, seed=0, model_seed=None):
    """(corpus, params, cfg, task, result): the corpus and the trained transformer, cached in `cache`
    (one cache folder per scale and seed: see tinymono.lesson.run_folder). model_seed: lesson 10's second
    transformer on the same corpus (transformer_configs), cached beside the first as
    transformer-m<model_seed>-<key>.npz."""
    cache = Path(cache)
    corpus = get_corpus(corpus_config(scale, seed), cache, progress=progress is not False)
    cfg, train_cfg = transformer_configs(scale, seed, model_seed)
    task = tr.TransformerTask(cfg, train_cfg, corpus)
    model = None if model_seed is None else f"m{model_seed}"
    name = f"transformer{second_tag(model, scale)}{settings_tag('corpus', 'model', 'train')}.npz"
    result = train(task, train_cfg.steps, chunk_steps=100, checkpoint=cache / name,
                   progress=progress, desc="transformer" if model is None else f"transformer {model}")
    return corpus, task.params, cfg, task, result


def get_stores(scale, cache, corpus, params, cfg, progress=None, model=None):
    """(train_store, val_store): the MLP activations over the first tokens of each split (float16). model:
    a second model of lesson 10 ('m<seed>', 'shuffled'): its stores, at SECOND's sizes."""
    sizes = _sizes(scale, second=model is not None)["harvest"]
    stores = []
    for split in ("train", "val"):
        n = min(sizes[split], len(corpus.split(split).tokens))
        name = f"acts_{split}{second_tag(model, scale)}{settings_tag('corpus', 'model', 'train', 'harvest')}"
        stores.append(activations.harvest(params, cfg, corpus, Path(cache) / name, split=split,
                                          n_tokens=n, dtype="float16", progress=progress))
    return tuple(stores)


def sae_task(scale, train_store, d_sae=None, seed=0, second=False):
    """The SAE's training task on shuffled batches of the training store, at its (deterministic) start.
    second: lesson 10's SAEs of a second model (the same recipe at SECOND's number of steps). A run that
    goes over the store more than once takes its batches from a copy in memory when the store fits in a
    quarter of the memory available (batches.ShuffledBatches: the same batches either way)."""
    cfg = sae_config(scale, train_store.acts.shape[1], d_sae, seed, second)
    in_memory = (cfg.steps * cfg.batch_size > len(train_store)
                 and batches.fits_in_memory(train_store.acts.nbytes))
    return sae.SAETask(cfg, batches.ShuffledBatches(train_store, seed=cfg.seed, in_memory=in_memory))


def get_sae(scale, cache, train_store, progress=None, d_sae=None, seed=0, model=None):
    """(params, cfg, task, result): the SAE trained on shuffled batches of the training store. d_sae: a
    dictionary of another size on the same recipe and data (lesson 08), cached beside the main one.
    model: the SAE of a second model of lesson 10 (its stores: get_stores(..., model=model))."""
    task = sae_task(scale, train_store, d_sae, seed, second=model is not None)
    main = d_sae in (None, SIZES[scale]["sae"]["d_sae"])  # the plain size: under --set sae.d_sae=64, lesson 08's
    # 64 latents are still lesson 08's dictionary, not the main SAE's file
    tag = (second_tag(model, scale) + settings_tag("corpus", "model", "train", "harvest")  # its store's
           + recipe_tag(lambda: sae_config(scale, train_store.acts.shape[1], d_sae, seed, second=model is not None)))
    name = f"sae{tag}.npz" if main else f"sae_{d_sae}{tag}.npz"
    desc = ("sae" if main else f"sae {d_sae}") + ("" if model is None else f" {model}")
    result = train(task, task.cfg.steps, chunk_steps=25, checkpoint=Path(cache) / name, progress=progress, desc=desc)
    return task.params, task.cfg, task, result


def get_trained(scale, cache, seed=0):
    """(corpus, params, cfg, train_store, val_store, sae_params, sae_cfg): what lessons 07 and 08 start from,
    each stage from the cache or built now (get_transformer, get_stores, get_sae)."""
    corpus, params, cfg, _, _ = get_transformer(scale, cache, seed=seed)
    train_store, val_store = get_stores(scale, cache, corpus, params, cfg)
    sae_params, sae_cfg, _, _ = get_sae(scale, cache, train_store, seed=seed)
    return corpus, params, cfg, train_store, val_store, sae_params, sae_cfg


# ----------------------------------------------------------------------------------------------------
# Lesson 03: Sharkey et al.'s 512 features in 256 dimensions, the recipe of its SAEs (lr 3e-3, resampling
# every 5% of the run through its first half, a dead window of a fixed number of steps), and how it scores
# them. The main run (1.1x dictionary, l1 3e-4) trains `steps` steps on batches of `batch_size`.

GT = {
    "smoke": dict(data=dict(d=32, n_features=64, mean_active=3.0), steps=100, batch_size=256, dead_window_steps=5,
                  resample_batches=4, eval_rows=4096),
    "default": dict(data=dict(d=256, n_features=512), steps=6000, batch_size=1024, dead_window_steps=24,
                    resample_batches=20, eval_rows=32768),  # the rarest true feature fires ~9 times in 32768 rows
}
GT["full"] = GT["default"]
GT_MAIN = dict(ratio=1.1, l1_coefficient=3e-4)  # lesson 03's main run: dictionary size / true features, L1


def _gt(scale):
    if scale not in GT:
        raise ValueError(f"scale must be one of {sorted(GT)}, got {scale!r}")
    return GT[scale]


def gt_world(scale, correlated=False, seed=0):
    """The ground-truth features of lesson 03 at a scale (their directions fixed by `seed`)."""
    return GroundTruth(GroundTruthConfig(**_gt(scale)["data"], correlated=correlated, seed=seed))


def gt_sae_config(scale, d_sae, l1_coefficient, steps=None, seed=0, **overrides):
    """Lesson 03's SAE recipe with d_sae latents and this L1 coefficient, for `steps` steps (default: the
    main run's). The dead window stays a fixed number of steps whatever the run's length."""
    recipe = _gt(scale)
    steps = recipe["steps"] if steps is None else steps
    cfg = dict(d_in=recipe["data"]["d"], d_sae=d_sae, l1_coefficient=l1_coefficient, lr=3e-3, steps=steps,
               batch_size=recipe["batch_size"], resample_at=tuple(0.05 * i for i in range(1, 11)),
               dead_window=min(1.0, recipe["dead_window_steps"] / max(steps, 1)),
               resample_batches=recipe["resample_batches"], seed=seed)
    return sae.SAEConfig(**{**cfg, **overrides})


def train_gt_sae(cfg, data, checkpoint=None, desc=None, progress=None, save_every=60.0):
    """(task, TrainResult): an SAE of config `cfg` trained on batches of `data` (a GroundTruth), resuming
    from `checkpoint` when one is there."""
    task = sae.SAETask(cfg, data)
    result = train(task, cfg.steps, chunk_steps=100, checkpoint=checkpoint, progress=progress, save_every=save_every,
                   desc=desc or f"sae {cfg.d_sae} l1={cfg.l1_coefficient:g}")
    return task, result


def gt_evaluate(params, cfg, data, scale, seed=123):
    """Scores of a trained SAE against the true directions of `data`, on `eval_rows` fresh samples drawn with
    `seed`: mmcs, recovered (at cos >= 0.9), one_to_one, dead, l0, explained_variance (floats), and density
    [d_sae] (each latent's firing rate)."""
    true_dirs = data.directions
    x = data(np.random.default_rng(seed), _gt(scale)["eval_rows"])
    out, _ = sae.forward(params, x, cfg)
    density = metrics.feature_density(out.f)
    return {"mmcs": metrics.mmcs(true_dirs, params["W_dec"]),
            "recovered": metrics.fraction_recovered(true_dirs, params["W_dec"], 0.9),
            "one_to_one": metrics.one_to_one_score(true_dirs, params["W_dec"]),
            "dead": metrics.dead_fraction(density), "l0": metrics.l0(out.f),
            "explained_variance": metrics.explained_variance(x, out.x_hat), "density": density}


def gt_sweep_stage(job):
    """One cell of lesson 03's short sweep, in a worker of a process pool (or here): an SAE of lesson 03's
    recipe with job's d_sae, l1_coefficient, steps and batch_size (seed: the world's and the SAE's), trained
    without a progress bar or checkpoint and scored with gt_evaluate (eval_seed). -> (W_dec, the scores)."""
    scale = job["scale"]
    data = gt_world(scale, seed=job["seed"])
    cfg = gt_sae_config(scale, job["d_sae"], job["l1_coefficient"], job["steps"], seed=job["seed"],
                        batch_size=job["batch_size"])
    task, _ = train_gt_sae(cfg, data, progress=False)
    return task.params["W_dec"], gt_evaluate(task.params, cfg, data, scale, seed=job["eval_seed"])


# ----------------------------------------------------------------------------------------------------
# Lesson 09: the later SAE variants (tinymono/sae_variants.py) in lesson 03's world and on the MLP of the
# transformer, each with the sparsity setting (or settings) and options chosen for it there. The paper's
# recipe ("relu") is the reference everywhere.

VARIANT_NAMES = ("relu", "topk", "batchtopk", "jumprelu", "gated", "anthropic2024")
# How the coefficients were set (no sweep, except Gated's in lesson 03's world): a latent of activation a
# removes ~a^2 / d_in of mean squared error; the paper's L1 charges l1 a for it. JumpReLU charges a flat
# lambda per active latent, so lambda ~ (a_min)^2 / d_in for the smallest activation worth keeping (0.09
# here, 0.25-0.5 on the MLP). The 2024
# recipe scales inputs by s = sqrt(d_in / mean ||x||^2) (12 here, 3.1 on the MLP): both terms grow, the
# squared error by s^2 and the penalty by s, so lambda = s x the paper's l1 keeps the same trade-off.
# Gated's penalty reads the gate's pre-activations, whose scale this rule does not know: the paper's l1
# (3e-4) left its MMCS at 0.81 in lesson 03's world; a sweep over 1e-4-4e-3 peaked at 1e-3 on two seeds
# (docs/experiments.md, lesson 09's section).
#
# The schedule. Without resampling, a latent that loses the early competition for inputs dies, and the
# rarest true features (a few hundred firings in a run) are left without one: at full sparsity from the
# first step, TopK, JumpReLU and Gated each missed 5-16 of the 512 with 50-60 latents dead. So every variant
# here eases its sparsity in, as the 2024 recipe does with its penalty: over the first 30% of the run the
# penalty rises from 0 (JumpReLU, Gated) or k falls from 48 (TopK, BatchTopK), and the learning rate decays
# to 0 over the last 20%. BatchTopK's k is 5, the true L0: at k = 6 its rarer features' directions came
# out bent (recovered at 0.9: 93-97%; docs/experiments.md, "easing sparsity in").
EASED = dict(lr_decay_start=0.8)
GT_VARIANTS = {  # architecture -> its settings in lesson 03's world (l1_coefficient: its sparsity coefficient)
    "relu": dict(l1_coefficient=GT_MAIN["l1_coefficient"]),
    "topk": dict(k=6, aux_coefficient=1 / 32, k_anneal=0.3, k_start=48, **EASED),
    "batchtopk": dict(k=5, aux_coefficient=1 / 32, k_anneal=0.3, k_start=48, **EASED),
    "jumprelu": dict(l1_coefficient=3e-5, bandwidth=2e-3, init_threshold=0.05, l1_warmup=0.3, **EASED),
    "gated": dict(l1_coefficient=1e-3, l1_warmup=0.3, **EASED),
    "anthropic2024": dict(l1_coefficient=4e-3),
}


def variant_options(architecture, settings_table):
    """The options of `architecture` from a table like GT_VARIANTS, with its published recipe
    (sae_variants.RECIPES: the 2024 recipe's warm-up and learning-rate decay) beneath them."""
    return {**sae.sae_variants.RECIPES.get(architecture, {}), **settings_table[architecture]}


def gt_variant_config(scale, architecture, d_sae, steps=None, seed=0, **overrides):
    """Lesson 03's recipe (gt_sae_config) for another architecture; the paper's SAE keeps its resampling,
    the others ignore it (SAEConfig.resample_steps). AuxK calls a latent dead after the same window."""
    opts = {**variant_options(architecture, GT_VARIANTS), **overrides}
    l1 = opts.pop("l1_coefficient", GT_MAIN["l1_coefficient"])
    return gt_sae_config(scale, d_sae, l1, steps, seed=seed, architecture=architecture, **opts)


# Lesson 09's runs in lesson 03's world, {dictionary size / true features: steps}. At 1.1x each variant trains
# as long as the paper's recipe (lesson 03's 6,000 steps); at 2x, where the question is how many latents
# stay dead, half as long, so that the eight runs fit beside the lesson's frontier on one core.
GT_VARIANT_STEPS = {"smoke": {1.1: 100, 2: 100}, "default": {1.1: 6000, 2: 3000}, "full": {1.1: 6000, 2: 6000}}


def gt_variant_stage(job):
    """One of lesson 09's SAEs in lesson 03's world, in a worker of a process pool (or here): trained, or
    resumed, with its checkpoint at job["checkpoint"] (no progress bar), and scored with gt_evaluate.
    job: scale, architecture, ratio (dictionary size / true features), steps (None: lesson 03's main run's),
    seed (the world's and the SAE's), eval_seed, checkpoint. "relu" is lesson 03's recipe itself, so its run
    with the main run's steps and checkpoint is lesson 03's main run. -> the scores, plus steps and seconds."""
    t0 = time.perf_counter()
    scale = job["scale"]
    data = gt_world(scale, seed=job["seed"])
    d_sae = int(job["ratio"] * data.cfg.n_features)
    cfg = gt_variant_config(scale, job["architecture"], d_sae, job["steps"], seed=job["seed"])
    task, result = train_gt_sae(cfg, data, checkpoint=job["checkpoint"], progress=False)
    scores = gt_evaluate(task.params, task.cfg, data, scale, seed=job["eval_seed"])
    return {**scores, "steps": cfg.steps, "seconds": time.perf_counter() - t0,
            "reused": result.resumed_from == cfg.steps}  # finished by an earlier run: its seconds are scoring only


# On the MLP activations (lesson 06's stores): each architecture's sparsity settings for the frontier, and
# the budget of every frontier run (l1_coefficient: the settings; any other entry: a fixed option). TopK's
# and BatchTopK's k are not listed: the lesson sets them to the L0 the paper's recipe reaches at each of
# its settings, so that the two meet at matched L0.
FRONTIER = {
    "relu": dict(l1_coefficient=(1.2e-3, 2.4e-3, 4.8e-3)),
    "topk": dict(),
    "batchtopk": dict(),
    "jumprelu": dict(l1_coefficient=(5e-4, 1e-3, 2e-3), bandwidth=0.05, init_threshold=0.2),
    "gated": dict(l1_coefficient=(1.2e-3, 2.4e-3, 4.8e-3)),
    "anthropic2024": dict(l1_coefficient=(3.8e-3, 7.5e-3, 1.5e-2)),
}
FRONTIER_RUN = {"smoke": dict(steps=40, batch_size=256), "default": dict(steps=600, batch_size=1024),
                "full": dict(steps=4000, batch_size=4096)}
# what every frontier SAE is scored on: held-out MLP activations (tokens) and windows of held-out text
FRONTIER_EVAL = {"smoke": dict(tokens=10_000, windows=8), "default": dict(tokens=200_000, windows=64),
                 "full": dict(tokens=200_000, windows=256)}


def frontier_checkpoint(cache, scale, d_in, seed, architecture, sparsity):
    """Where the frontier's SAE of `architecture` at `sparsity` ({"l1_coefficient": c} or {"k": k}) is kept:
    named by the settings its store depends on and by its own config (recipe_tag), as get_sae names lesson
    06's."""
    key = "-".join(f"{v:g}" for v in sparsity.values())
    tag = settings_tag("corpus", "model", "train", "harvest") + recipe_tag(
        lambda: frontier_config(scale, d_in, architecture, seed=seed, **sparsity))
    return str(Path(cache) / f"09_frontier_{architecture}_{key}{tag}.npz")


def frontier_config(scale, d_in, architecture, seed=0, **sparsity):
    """The frontier's SAE of `architecture` on the MLP activations: lesson 06's recipe (sae_config) with the
    frontier's budget and the architecture's options, and `sparsity` (its l1_coefficient or k) on top."""
    opts = {k: v for k, v in FRONTIER[architecture].items() if k != "l1_coefficient"}
    opts = {**sae.sae_variants.RECIPES.get(architecture, {}), **opts, **FRONTIER_RUN[scale], **sparsity}
    base = sae_config(scale, d_in, seed=seed)  # with the settings in force (--set sae.*): every field it does not set
    inherited = {f.name: getattr(base, f.name) for f in fields(sae.SAEConfig)}
    if architecture != "relu":  # only the paper's SAE resamples
        plain = sae.SAEConfig(d_in=d_in, d_sae=base.d_sae)
        inherited.update({f: getattr(plain, f) for f in ("resample_at", "dead_below", "resample_batches")})
    return sae.SAEConfig(**{**inherited, "architecture": architecture, **opts})


class FrontierData(NamedTuple):
    tparams: dict
    tcfg: tr.TransformerConfig
    train_store: ActivationStore
    held_out: np.ndarray  # [tokens, d_mlp] float32: the validation store's first tokens
    windows: np.ndarray  # [n, n_ctx + 1] held-out text
    clean: float  # the model's mean loss on the windows
    zero: float  # ... with the MLP's output zeroed

    def fire_counts(self, params, cfg, block=50_000):
        """[d_sae] int64: on how many held-out tokens each of an SAE's latents fires, `block` tokens at a time
        (sae.fire_counts). L0 and the densities need no more, and the latents' array would be 800 MB."""
        return sum(sae.fire_counts(params, self.held_out[i:i + block], cfg)
                   for i in range(0, len(self.held_out), block))


_frontier_data = {}  # per process, the FrontierData of the last run asked for


def frontier_data(scale, cache, seed, windows_seed, progress=False):
    """The transformer of `cache` (lessons 05-06, run seed `seed`, the settings in force) and what the
    frontier scores its SAEs on (FRONTIER_EVAL), built once per process (and the transformer and its stores
    built first if the cache lacks them: call it once in the driver before the workers do)."""
    key = (scale, str(cache), seed, windows_seed, settings.canonical(settings.ACTIVE))
    if key not in _frontier_data:
        _frontier_data.clear()
        corpus, tparams, tcfg, _, _ = get_transformer(scale, cache, progress=progress, seed=seed)
        train_store, val_store = get_stores(scale, cache, corpus, tparams, tcfg, progress=progress)
        n = FRONTIER_EVAL[scale]
        held_out = val_store.read(0, min(len(val_store), n["tokens"])).astype(np.float32)
        windows = corpus.sample_windows("val", n["windows"], tcfg.n_ctx + 1, np.random.default_rng(windows_seed))[0]
        _frontier_data[key] = FrontierData(tparams, tcfg, train_store, held_out, windows,
                                           interventions.mean_loss(tparams, tcfg, windows),
                                           interventions.mean_loss(tparams, tcfg, windows, 0.0))
    return _frontier_data[key]


def frontier_stage(job):
    """One SAE of lesson 09's frontier, in a worker of a process pool (or here): trained on the MLP
    activations of lesson 06's store (or resumed from job["checkpoint"]) and scored on held-out tokens.
    job: scale, cache, seed (the run's), windows_seed, architecture, sparsity ({"l1_coefficient": c} or
    {"k": k}), checkpoint, settings (the driver's settings.ACTIVE: a spawned worker starts with none).
    -> architecture, setting, l0, recovered (loss recovered against zero-ablation), rare (share of latents
    firing on < 1e-4 of held-out tokens), unmoved (share whose decoder direction stayed within cosine 0.9
    of its start), seconds."""
    t0 = time.perf_counter()
    settings.ACTIVE = job.get("settings", {})
    d = frontier_data(job["scale"], job["cache"], job["seed"], job["windows_seed"])
    cfg = frontier_config(job["scale"], d.tcfg.d_mlp, job["architecture"], seed=job["seed"], **job["sparsity"])
    task = sae.SAETask(cfg, batches.ShuffledBatches(d.train_store, seed=cfg.seed))
    start = task.params["W_dec"].copy()
    train(task, cfg.steps, chunk_steps=50, checkpoint=job["checkpoint"], progress=False)
    fires = d.fire_counts(task.params, cfg)
    density = fires / len(d.held_out)
    loss = interventions.mean_loss(d.tparams, d.tcfg, d.windows, interventions.sae_hook(task.params, cfg))
    unit = lambda W: W / np.linalg.norm(W, axis=1, keepdims=True)  # noqa: E731  (the 2024 recipe's rows are not unit)
    return {"architecture": job["architecture"], "setting": "-".join(f"{v:g}" for v in job["sparsity"].values()),
            "l0": float(fires.sum() / len(d.held_out)), "recovered": metrics.loss_recovered(d.clean, loss, d.zero),
            "rare": float(np.mean(density < 1e-4)),
            "unmoved": float(np.mean(np.sum(unit(task.params["W_dec"]) * unit(start), axis=1) > 0.9)),
            "seconds": time.perf_counter() - t0}
