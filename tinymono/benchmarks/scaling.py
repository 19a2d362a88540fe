"""How cost grows: the SAE step against the dictionary's size and against the share of active latents,
and the transformer's training throughput against the batch and the context length, each beside its
ideal line (cost proportional to the FLOPs, through the reference point, the default shape).

    sae d_sae=N        the sparse (numba) step at d_in 512, batch 1024, 1.5% active, d_sae 1k .. 32k
    sae active=P       the sparse step and the dense NumPy twin at d_sae 4096, 0.5% .. 20% active:
                       where the sparse step stops paying is where its time reaches the dense one's
    transformer B=..   tokens/s of a training step (the numba layers) against batch and n_ctx, for the
                       transformer lessons 05-10 train (d_model 128, d_mlp 128)

A point below its ideal line (time) or above it (tokens/s) is cheaper than its FLOPs predict: fixed costs
spread over more work. In the d_sae series one bend is the threads: at batch 1024 the sparse kernels run
on one thread below d_sae 4096 and on all cores from there (kernels/sae.py: PARALLEL_MIN_WORK). The figure
is written beside the table (`figure` in the result, --figure PATH).
Sizes above what a machine holds are not guarded: 32k latents need about 0.8 GB.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tinymono import pipeline, sae
from tinymono import transformer as tr
from tinymono.benchmarks import compare
from tinymono.benchmarks.sae import make_state, numba_step, numpy_step
from tinymono.benchmarks.transformer import _numpy_step
from tinymono.optim import Adam

D_IN, SAE_BATCH, ACTIVE = 512, 1024, 0.015
D_SAES = (1024, 2048, 4096, 8192, 16384, 32768)
SHARES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
BATCHES = (8, 16, 32, 64)
CONTEXTS = (32, 64, 128, 256)
REFERENCE = {"d_sae": 4096, "active": ACTIVE, "batch": 32, "n_ctx": 128}


def sae_step_flops(batch, d_in, d_sae, active, sparse=True):
    """Multiply-adds x 2 of one training step: the sparse step does the encoder matmul densely and four
    products over the active entries (decode, the decoder gradient, the gradient with respect to the
    latents, the encoder gradient); the dense twin does five full products. Adam and the decoder's renormalisation
    are elementwise, O(d_in d_sae): not counted (they show as the distance from the ideal line)."""
    mm = 2.0 * batch * d_in * d_sae
    return mm + 4 * 2.0 * active * batch * d_sae * d_in if sparse else 5 * mm


def transformer_flops_per_token(cfg, causal=True):
    """FLOPs of one training step per token: 3 x the forward (the backward costs twice the forward).
    Forward per token: 2 x each weight matrix's size (attention's four, the MLP's two, the unembedding),
    plus the attention scores and the weighted sum, 2 x 2 x (keys per query) x (n_heads d_head): with
    `causal`, as the numba layers compute them, query i reads keys 0..i, (n_ctx + 1) / 2 on average; else
    the full T x T square, which the NumPy reference layers compute before the mask."""
    attn_w = 4 * cfg.d_model * cfg.n_heads * cfg.d_head
    weights = attn_w + 2 * cfg.d_model * cfg.d_mlp + cfg.d_model * cfg.d_vocab
    keys = (cfg.n_ctx + 1) / 2 if causal else cfg.n_ctx
    return 3 * (2.0 * weights + 4.0 * keys * cfg.n_heads * cfg.d_head)


def _sae_state(d_in, d_sae, batch, active, seed=0):
    cfg = sae.SAEConfig(d_in=d_in, d_sae=d_sae, batch_size=batch, lr=1e-6, l1_coefficient=4e-3, sparse_below=1.0)
    params, x = make_state(cfg, np.random.default_rng(seed), active)
    return cfg, params, x


def _sae_points(quick, rounds, min_seconds, progress):
    d_in, batch = (64, 256) if quick else (D_IN, SAE_BATCH)
    d_saes = D_SAES[:3] if quick else D_SAES
    shares = SHARES[::2] if quick else SHARES
    ref_d = d_saes[min(2, len(d_saes) - 1)]
    rows = {}
    for d_sae in d_saes:
        progress(f"sae d_sae={d_sae}")
        cfg, params, x = _sae_state(d_in, d_sae, batch, ACTIVE)
        buf, opt = sae.Buffers(cfg), Adam(params, lr=cfg.lr, fused=True)
        r = compare({"s": lambda: numba_step(params, opt, x, cfg, buf)}, batch, rounds, min_seconds)["s"]
        rows[f"sae d_sae={d_sae}"] = {**r, "series": "sae_d_sae", "x": d_sae,
                                      "flops": sae_step_flops(batch, d_in, d_sae, ACTIVE)}
    for share in shares:
        progress(f"sae active={share:.1%}")
        cfg, params, x = _sae_state(d_in, ref_d, batch, share)
        dense = {k: v.copy() for k, v in params.items()}
        buf, opt, opt_dense = sae.Buffers(cfg), Adam(params, lr=cfg.lr, fused=True), Adam(dense, lr=cfg.lr)
        res = compare({"sparse": lambda: numba_step(params, opt, x, cfg, buf),
                       "dense": lambda: numpy_step(dense, opt_dense, x, cfg)}, batch, rounds, min_seconds)
        for kind, sparse in (("sparse", True), ("dense", False)):
            rows[f"sae active={share:.1%} {kind}"] = {**res[kind], "series": f"sae_active_{kind}", "x": share,
                                                     "flops": sae_step_flops(batch, d_in, ref_d, share, sparse)}
    return rows, {"sae_d_in": d_in, "sae_batch": batch, "sae_active": ACTIVE, "sae_d_sae_for_shares": ref_d}


def _transformer_points(quick, rounds, min_seconds, progress):
    base = pipeline.transformer_configs("default")[0]  # the transformer of lessons 05-10 (and bench transformer)
    batches = BATCHES[:2] if quick else BATCHES
    contexts = CONTEXTS[:2] if quick else CONTEXTS
    ref_batch = REFERENCE["batch"] if not quick else batches[-1]
    rows = {}
    points = [("transformer_batch", f"transformer B={b} (n_ctx {base.n_ctx})", b, base.n_ctx, b) for b in batches]
    points += [("transformer_n_ctx", f"transformer n_ctx={T} (B {ref_batch})", ref_batch, T, T) for T in contexts]
    for series, name, batch, n_ctx, x in points:  # the reference shape is in both series: timed in each
        progress(name)
        cfg = dataclasses.replace(base, n_ctx=n_ctx)
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, cfg.d_vocab, size=(batch, n_ctx + 1))
        step = _numpy_step(tr.init(cfg, rng), tokens, cfg, fast=True)
        r = compare({"s": step}, batch * n_ctx, rounds, min_seconds)["s"]
        rows[name] = {**r, "series": series, "x": x, "flops_per_token": transformer_flops_per_token(cfg)}
    return rows


def ideal_lines(rows):
    """Add to each row its ideal: time proportional to FLOPs (SAE) or tokens/s inversely proportional to
    FLOPs per token (transformer), through the series' reference point (the default shape, or the one
    nearest to it that was measured). Also `vs_ideal`: measured over ideal throughput (> 1: cheaper than
    the FLOPs predict)."""
    for series in {r["series"] for r in rows.values()}:
        members = [r for r in rows.values() if r["series"] == series]
        key = {"sae_d_sae": "d_sae", "transformer_batch": "batch", "transformer_n_ctx": "n_ctx"}.get(series, "active")
        target = REFERENCE[key]
        ref = min(members, key=lambda r: (abs(np.log(r["x"] / target)), r["x"]))
        for r in members:
            if "flops" in r:
                ideal = ref["seconds_per_call"] * r["flops"] / ref["flops"]
                r.setdefault("ideal_seconds_per_call", ideal)
                r.setdefault("vs_ideal", ideal / r["seconds_per_call"])
            else:
                ideal = ref["per_second"] * ref["flops_per_token"] / r["flops_per_token"]
                r.setdefault("ideal_per_second", ideal)
                r.setdefault("vs_ideal", r["per_second"] / ideal)
    return rows


def sparse_stops_paying(rows):
    """The smallest measured active share at which the sparse step is no faster than the dense twin
    (None when it is faster at every share measured)."""
    shares = sorted({r["x"] for r in rows.values() if r["series"] == "sae_active_sparse"})
    for share in shares:
        sparse = next(r for r in rows.values() if r["series"] == "sae_active_sparse" and r["x"] == share)
        dense = next(r for r in rows.values() if r["series"] == "sae_active_dense" and r["x"] == share)
        if sparse["seconds_per_call"] >= dense["seconds_per_call"]:
            return share
    return None


def run(quick=False, figure=None, progress=print):
    """figure: where to write the figure (None: bench_scaling.png in the current folder; "" for none)."""
    figure = "bench_scaling.png" if figure is None else figure
    rounds, min_seconds = (1, 0.02) if quick else (3, 0.3)
    sae_rows, sae_config = _sae_points(quick, rounds, min_seconds, progress)
    rows = ideal_lines({**sae_rows, **_transformer_points(quick, rounds, min_seconds, progress)})
    crossover = sparse_stops_paying(rows)
    notes = ["the sparse SAE step stops paying at " + ("no share measured (it is faster up to "
             f"{max(SHARES if not quick else SHARES[::2]):.0%})" if crossover is None else f"{crossover:.1%} active"),
             "vs_ideal: measured throughput over the ideal line's (FLOPs-proportional through the reference point)"]
    result = {"benchmark": "scaling", "unit": "items/s",
              "config": {**sae_config, "transformer": "lessons 05-10's (d_mlp 128), batch and n_ctx varied",
                         "reference": REFERENCE},
              "results": rows, "ratios": {}, "notes": notes, "sparse_stops_paying": crossover}
    if figure:
        from tinymono import plots

        plots.scaling(rows).savefig(figure, dpi=110)
        result["figure"] = str(figure)
        notes.append(f"figure: {figure}")
    return result
