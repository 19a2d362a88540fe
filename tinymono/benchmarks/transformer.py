"""Training throughput of the one-layer transformer: tinymono (numba kernels), tinymono's NumPy
reference layers, and the same model written in PyTorch (when installed), side by side.

One training step = forward, backward, gradient clipping and an AdamW update, on one fixed batch of
32 windows of 128 bytes (4096 tokens) of the model the main job trains (lesson 05 at the default scale:
d_model 128, d_mlp 128, 4 heads of 32), float32, on the machine's cores.
The PyTorch model is written the way a PyTorch user would write it for speed (one matmul for queries,
keys and values, F.layer_norm, F.scaled_dot_product_attention with is_causal=True, F.cross_entropy,
torch.optim.AdamW) with the same parameters; its first loss is compared with tinymono's to show it is
the same model. Both run in one process, so both get the same malloc settings
(kernels.keep_freed_memory, which also spares PyTorch's CPU allocator its page faults).

In the same rounds, as two more rows of the table (not steps): the products of the model's linear maps
alone, at the step's shapes, in NumPy and in PyTorch (`step_products`). Each library leaves them to its
BLAS, and they set a bound: a step built on NumPy's products, doing nothing else, would be
`bound_vs_torch` times PyTorch's step. After the race, a profile: the share of tinymono's step time in
each layer, measured in place by running the model with a set of layers that times every call
(transformer.Layers), and inside each attention row the time of the core alone (the numba loops over the
(batch, head) pairs; the rest of the row is the projections' matmuls).
"""
from __future__ import annotations

import resource
import time
from collections import defaultdict

import numpy as np

from tinymono import pipeline
from tinymono import transformer as tr
from tinymono.benchmarks import compare, goal_notes, ratio, ratio_range, torch_adam, torch_or_none
from tinymono.kernels import transformer as K
from tinymono.optim import Adam, clip_grad_norm

BATCH = 32
LR, WEIGHT_DECAY, BETAS, CLIP = 1e-3, 0.1, (0.9, 0.99), 1.0


def _numpy_step(params, tokens, cfg, fast):
    opt = Adam(params, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)

    def step():
        _, grads = tr.loss_and_grads(params, tokens, cfg, fast=fast)
        clip_grad_norm(grads, CLIP)
        opt.step(params, grads)
    return step


def _torch_model(torch, params, cfg):
    """The same transformer in PyTorch, on copies of tinymono's parameters. Returns (loss_fn, step)."""
    F = torch.nn.functional
    p = {k: torch.tensor(v).requires_grad_() for k, v in params.items()}
    groups = [{"params": [v for v in p.values() if v.ndim >= 2]},  # what tinymono's Adam decays: 2-d and up
              {"params": [v for v in p.values() if v.ndim < 2], "weight_decay": 0.0}]
    opt = torch_adam(torch, groups, adamw=True, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    D, H, E = cfg.d_model, cfg.n_heads, cfg.d_head

    def loss_fn(tokens):
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        B, T = inputs.shape
        x = p["W_E"][inputs] + p["W_pos"][:T]  # [B, T, D]
        h = F.layer_norm(x, (D,), p["ln1_w"], p["ln1_b"], cfg.ln_eps)
        # one matmul for queries, keys and values, as nanoGPT's c_attn (the weights side by side, per step)
        W_qkv = torch.stack([p["W_Q"], p["W_K"], p["W_V"]]).permute(2, 0, 1, 3).reshape(D, 3 * H * E)
        b_qkv = torch.stack([p["b_Q"], p["b_K"], p["b_V"]]).reshape(-1)
        q, k, v = (h @ W_qkv + b_qkv).view(B, T, 3, H, E).permute(2, 0, 3, 1, 4)  # each [B, H, T, E]
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, E]
        x = x + z.transpose(1, 2).reshape(B, T, H * E) @ p["W_O"].reshape(H * E, D) + p["b_O"]
        h = F.layer_norm(x, (D,), p["ln2_w"], p["ln2_b"], cfg.ln_eps)
        x = x + F.relu(h @ p["W_in"] + p["b_in"]) @ p["W_out"] + p["b_out"]
        h = F.layer_norm(x, (D,), p["lnf_w"], p["lnf_b"], cfg.ln_eps)
        logits = h @ p["W_U"] + p["b_U"]
        return F.cross_entropy(logits.reshape(-1, cfg.d_vocab), targets.reshape(-1))

    def step(tokens):
        opt.zero_grad(set_to_none=True)
        loss_fn(tokens).backward()
        torch.nn.utils.clip_grad_norm_(p.values(), CLIP)
        opt.step()
    return loss_fn, step


# which layer a call belongs to, by the order calls come in one forward (or backward)
_ORDER = {"layernorm_forward": ("ln1", "ln2", "lnf"), "layernorm_backward": ("lnf", "ln2", "ln1"),
          "linear_forward": ("mlp", "unembed+loss"), "linear_backward": ("unembed+loss", "mlp")}
_LABEL = {"embed_forward": "embedding", "embed_backward": "embedding", "attention_forward": "attention fwd",
          "attention_backward": "attention bwd", "mlp_in_forward": "mlp", "mlp_in_backward": "mlp",
          "softmax_cross_entropy": "unembed+loss"}
PROFILE_ROWS = ("embedding", "ln1", "attention fwd", "attention bwd", "ln2", "mlp", "lnf", "unembed+loss",
                "clip+optimizer", "other")
CORE_ROWS = {"attention fwd": "attention fwd: core", "attention bwd": "attention bwd: core"}  # parts of those rows


def _timed_layers(base: tr.Layers, seconds):
    calls = defaultdict(int)

    def wrap(name, fn):
        def timed(*args):
            order = _ORDER.get(name)
            label = order[calls[name] % len(order)] if order else _LABEL[name]
            calls[name] += 1
            t0 = time.perf_counter()
            out = fn(*args)
            seconds[label] += time.perf_counter() - t0
            return out
        return timed
    return tr.Layers(*(wrap(name, fn) for name, fn in zip(tr.Layers._fields, base)))


def _timed_core(base, seconds):
    """kernels.transformer's in_parallel, also timing the attention core's kernels (the numba loops over the
    (batch, head) pairs; the rest of each attention row is the projections' matmuls and their copies)."""
    rows = {id(K.attention_heads_forward): CORE_ROWS["attention fwd"],
            id(K.attention_heads_backward): CORE_ROWS["attention bwd"]}

    def timed(kernel, n, *args):
        t0 = time.perf_counter()
        base(kernel, n, *args)
        if id(kernel) in rows:
            seconds[rows[id(kernel)]] += time.perf_counter() - t0
    return timed


def profile(params, tokens, cfg, n_steps=20):
    """Share of the step time per layer: {label: seconds per step}, plus "total" and, inside the attention
    rows, the time of the attention core alone (CORE_ROWS)."""
    seconds = defaultdict(float)
    timed = _timed_layers(tr.layers_for(True), seconds)
    opt = Adam(params, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    base, K.in_parallel = K.in_parallel, _timed_core(K.in_parallel, seconds)  # the name the layer wrappers call
    try:
        for i in range(n_steps + 2):
            if i == 2:  # two warm-up steps (compiles, first-touch of buffers), then measure
                seconds.clear()
                faults_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t_start = time.perf_counter()
            _, grads = tr.loss_and_grads(params, tokens, cfg, fast=timed)
            t0 = time.perf_counter()
            clip_grad_norm(grads, CLIP)
            opt.step(params, grads)
            seconds["clip+optimizer"] += time.perf_counter() - t0
    finally:
        K.in_parallel = base
    total = time.perf_counter() - t_start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_start
    seconds["other"] = total - sum(seconds[k] for k in PROFILE_ROWS if k != "other")
    out = {k: seconds[k] / n_steps for k in (*PROFILE_ROWS, *CORE_ROWS.values())}
    out["total"] = total / n_steps
    out["page_faults"] = faults / n_steps  # memory touched for the first time (see kernels.keep_freed_memory)
    return out


def format_profile(prof):
    lines = ["profile of one tinymono training step (share of the step's wall time):"]
    for k in PROFILE_ROWS:
        lines.append(f"  {k:<15} {1e3 * prof[k]:7.2f} ms  {100 * prof[k] / prof['total']:5.1f}%")
        if k in CORE_ROWS:
            core = prof[CORE_ROWS[k]]
            lines.append(f"    of which the core (numba, per (batch, head)) {1e3 * core:.2f} ms")
    lines.append(f"  {'total':<15} {1e3 * prof['total']:7.2f} ms   ({prof['page_faults']:,.0f} page faults per step)")
    return "\n".join(lines)


def step_products(cfg, batch):
    """The matrix products of one training step: (n, i, o) for each linear map of the model (queries, keys and
    values as one; the heads' output; the MLP's two; the unembedding), n = batch * n_ctx rows. Each map
    makes three products: x @ W [n, i] x [i, o] forward, dout @ W.T and x.T @ dout backward."""
    n, HE = batch * cfg.n_ctx, cfg.n_heads * cfg.d_head
    maps = [(cfg.d_model, 3 * HE), (HE, cfg.d_model), (cfg.d_model, cfg.d_mlp), (cfg.d_mlp, cfg.d_model),
            (cfg.d_model, cfg.d_vocab)]
    return [(n, i, o) for i, o in maps]


def _products_call(lib, shapes, rng):
    """A zero-argument callable running the step's products in `lib` (numpy, or torch: tensors from the same
    arrays), float32, on fixed random operands."""
    arrays = [tuple(rng.standard_normal(s).astype(np.float32) for s in ((n, i), (i, o), (n, o))) for n, i, o in shapes]
    if lib is not np:
        arrays = [tuple(lib.from_numpy(a) for a in trio) for trio in arrays]

    def call():
        for x, W, dout in arrays:
            x @ W, dout @ W.T, x.T @ dout
    return call


def run(quick=False, busy=False):
    """busy: the run has another process on the second core (the CLI's --busy), where the goal is lower."""
    cfg, _ = pipeline.transformer_configs("default")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.d_vocab, size=(BATCH, cfg.n_ctx + 1))
    params = tr.init(cfg, rng)
    n_tokens = BATCH * cfg.n_ctx
    impls = {"tinymono": _numpy_step({k: v.copy() for k, v in params.items()}, tokens, cfg, fast=True),
             "numpy_reference": _numpy_step({k: v.copy() for k, v in params.items()}, tokens, cfg, fast=False)}
    notes = []
    torch = torch_or_none()
    if torch is None:
        notes.append("PyTorch is not installed: the torch column is skipped (pip install 'tinymono[torch]')")
    else:
        loss_fn, torch_step = _torch_model(torch, params, cfg)
        t_tokens = torch.from_numpy(tokens)
        with torch.no_grad():
            gap = abs(float(loss_fn(t_tokens).detach()) - tr.loss(params, tokens, cfg))
        notes.append(f"same model: PyTorch's first loss differs from tinymono's by {gap:.1e} nats; torch "
                     f"{torch.__version__} on {torch.get_num_threads()} threads")
        impls["torch"] = lambda: torch_step(t_tokens)
        # how much of each step is its linear maps' products, which each library leaves to its BLAS: the products
        # alone, timed in the same rounds as the steps (two more rows of the table, which are not steps)
        shapes = step_products(cfg, BATCH)
        impls["products_numpy"] = _products_call(np, shapes, rng)
        impls["products_torch"] = _products_call(torch, shapes, rng)
    results = compare(impls, n_tokens, rounds=3 if quick else 7, min_seconds=0.3 if quick else 1.0)
    mm, rest = {}, {}
    if torch is not None:
        mm = {k: results[f"products_{k}"]["seconds_per_call"] for k in ("numpy", "torch")}
        rest = {"tinymono": results["tinymono"]["seconds_per_call"] - mm["numpy"],  # each step outside its products
                "torch": results["torch"]["seconds_per_call"] - mm["torch"]}
        notes.append(f"the products of the step's linear maps ({3 * len(shapes)}; attention's own are not among "
                     f"them) alone, at the same shapes: NumPy's BLAS {1e3 * mm['numpy']:.1f} ms, PyTorch "
                     f"{1e3 * mm['torch']:.1f} ms; the rest of the step: tinymono {1e3 * rest['tinymono']:.1f} ms, "
                     f"PyTorch {1e3 * rest['torch']:.1f} ms; a step of NumPy's products and nothing else would reach "
                     "bound_vs_torch")

    prof = profile({k: v.copy() for k, v in params.items()}, tokens, cfg, n_steps=5 if quick else 30)
    print(format_profile(prof))
    ratios = {"tinymono_vs_torch": ratio(results, "tinymono", "torch"),
              "tinymono_vs_numpy_reference": ratio(results, "tinymono", "numpy_reference"),
              # the most a step built on NumPy's matmul can gain on PyTorch's: a step of its products and nothing else
              "bound_vs_torch": ratio(results, "products_numpy", "torch")}
    goal = 1.0 if busy else 1.3
    notes += goal_notes(ratios, {"tinymono_vs_torch": (goal, "with the second core busy") if busy else
                                 (goal, "on a quiet machine; with --busy the goal is 1.0")},
                        {"tinymono_vs_torch": ratio_range(results, "tinymono", "torch")})
    if mm:
        low, high = ratio_range(results, "products_numpy", "torch")
        left = results["torch"]["seconds_per_call"] / goal - mm["numpy"]
        notes.append(f"the goal of {goal}x is " + (
            f"within the bound {ratios['bound_vs_torch']:.2f}x (rounds {low:.2f}-{high:.2f}): it leaves "
            f"{1e3 * left:.1f} ms for the rest of the step, where PyTorch spends {1e3 * rest['torch']:.1f}" if left > 0 else
            f"beyond the bound {ratios['bound_vs_torch']:.2f}x (rounds {low:.2f}-{high:.2f}): NumPy's products alone "
            "take longer than the goal allows the whole step")
            + (" (the step measured above the bound: the timings are noise; rerun on a quiet machine)"
               if ratios["tinymono_vs_torch"] > ratios["bound_vs_torch"] else ""))
    if busy:
        notes.append("under --busy each library keeps its own idle-thread default: tinymono shortens OpenBLAS's "
                     "spinning (OPENBLAS_THREAD_TIMEOUT), PyTorch's OpenMP threads spin as they do by default")
    return {"benchmark": "transformer", "unit": "tok/s",
            "config": {"d_model": cfg.d_model, "d_mlp": cfg.d_mlp, "n_heads": cfg.n_heads, "n_ctx": cfg.n_ctx,
                       "batch": BATCH, "dtype": "float32", "step": "forward+backward+clip+AdamW"},
            "results": results,
            "ratios": ratios,
            "profile": {k: v for k, v in prof.items()},
            "products_seconds": mm,
            "notes": notes}
