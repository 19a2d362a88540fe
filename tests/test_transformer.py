"""The one-layer transformer: whole-model gradients against central differences, the mlp.hook_post
hook (reading and replacing), causality, the kernels against the reference, sampling, evaluation,
bad input, and training through the shared loop with a bit-identical resume."""
import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tinymono import transformer as tr
from tinymono.gradcheck import format_table, numerical_gradient, relative_error
from tinymono.optim import Adam

BUDGET = 1e-6  # float64 central differences of a correct backward land near 1e-9; a wrong one near 1
# The whole model stacks three layer norms, whose curvature is large when a row's variance is small (d_model
# is 3-12 here): at h = 1e-3 the stencil's O(h^4) truncation error then reached 1e-6 on correct code. At
# h = 2e-4 it is ~600x smaller, while round-off (~1e-16 / h) stays near 1e-12.
EPS = 2e-4
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
seeds = st.integers(0, 2**32 - 1)


@st.composite
def small_configs(draw, layernorm=None, act_fn=None):
    n_heads, d_head = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    layernorm = draw(st.booleans()) if layernorm is None else layernorm
    if layernorm and n_heads * d_head < 3:  # layer norm over 1 or 2 numbers is degenerate (see test_layers)
        d_head = 3
    return tr.TransformerConfig(d_vocab=draw(st.integers(2, 7)), d_model=n_heads * d_head,
                                d_mlp=draw(st.integers(1, 6)),
                                n_heads=n_heads, d_head=d_head, n_ctx=draw(st.integers(1, 5)), layernorm=layernorm,
                                act_fn=act_fn or draw(st.sampled_from(["relu", "gelu"])), init_range=0.7)


def random_params(cfg, rng):
    """float64 parameters of order 1, biases and layer-norm gains included, so every path carries signal."""
    params = tr.init(cfg, rng, dtype=np.float64)
    for k, v in params.items():
        if not k.startswith("W_"):
            params[k] = v + 0.5 * rng.standard_normal(v.shape)
    return params


def pre_activations(params, cache):
    """The MLP's input to its ReLU, recomputed from the reference cache (to keep away from the kink)."""
    return cache.mlp_in[0].x @ params["W_in"] + params["b_in"]


def assert_grads_ok(errors, what):
    bad = {k: v for k, v in errors.items() if not v <= BUDGET}
    assert not bad, (f"{what}: backward disagrees with central differences. The residual stream feeds two "
                     f"branches at each block: are both gradients added?\n{format_table(errors, BUDGET)}")


def check_model_gradients(cfg, params, tokens, rng, hook_post=None, fast=False):
    """Every parameter's gradient against central differences of sum(logits * dlogits).

    Entries are judged relative to their own size, with a floor of 1e-4 x the largest gradient of any
    parameter: when a head's softmax saturates (weights of 1e-7), its W_Q and W_K gradients shrink to
    ~1e-5 of the others, and the difference quotient's round-off, which scales with the loss and not with
    them, is then a visible fraction of their size although the backward is right."""
    logits, cache = tr.forward(params, tokens, cfg, hook_post=hook_post, fast=fast)
    dlogits = rng.standard_normal(logits.shape)
    grads = tr.backward(params, cache, cfg, dlogits)
    assert list(grads) == list(params), "grads must have exactly the keys of params, in the same order"
    for k in params:
        assert grads[k].shape == params[k].shape and grads[k] is not params[k], f"grad {k}: wrong shape or aliased"
    floor = 1e-4 * max(np.abs(g).max() for g in grads.values())
    errors = {}
    for k, p in params.items():
        entries = rng.choice(p.size, size=min(p.size, 24), replace=False)
        numeric = numerical_gradient(
            lambda: float(np.sum(tr.forward(params, tokens, cfg, hook_post=hook_post, fast=fast)[0] * dlogits)),
            p, entries, eps=EPS)
        errors[k] = relative_error(grads[k].reshape(-1)[entries], numeric, atol=floor)
    # b_K's gradient is zero in theory (a shift of every key moves all of a query's scores equally, which
    # softmax ignores): a relative error would compare round-off with round-off, so check it is ~0 instead
    del errors["b_K"]
    assert np.abs(grads["b_K"]).max() < 1e-9, f"d b_K must vanish, got {np.abs(grads['b_K']).max():.2e}"
    return errors, grads, cache


@SETTINGS
@given(small_configs(), seeds, st.integers(1, 2), st.data())
def test_whole_model_gradients(cfg, seed, batch, data):
    rng = np.random.default_rng(seed)
    params = random_params(cfg, rng)
    T = data.draw(st.integers(1, cfg.n_ctx), label="T")
    tokens = rng.integers(0, cfg.d_vocab, size=(batch, T))
    if cfg.act_fn == "relu":  # central differences straddling the ReLU's kink disagree legitimately
        _, cache = tr.forward(params, tokens, cfg)
        assume(np.abs(pre_activations(params, cache)).min() > 0.02)
    errors, _, _ = check_model_gradients(cfg, params, tokens, rng)
    assert_grads_ok(errors, f"whole model {cfg}")


@pytest.mark.parametrize("layernorm", [True, False])
@pytest.mark.parametrize("n_heads", [1, 2, 3, 4])
def test_whole_model_gradients_fixed_configs(layernorm, n_heads):
    """The same check on a fixed grid (every head count, with and without layer norm, T = 1 and T = n_ctx)."""
    cfg = tr.TransformerConfig(d_vocab=5, d_model=2 * n_heads + 2 * (n_heads == 1), d_mlp=4, n_heads=n_heads,
                               d_head=2 + 2 * (n_heads == 1), n_ctx=4, layernorm=layernorm, act_fn="gelu",
                               init_range=0.7)
    rng = np.random.default_rng(n_heads)
    params = random_params(cfg, rng)
    for T in (1, cfg.n_ctx):
        errors, _, _ = check_model_gradients(cfg, params, rng.integers(0, 5, size=(2, T)), rng)
        assert_grads_ok(errors, f"layernorm={layernorm}, n_heads={n_heads}, T={T}")


@SETTINGS
@given(small_configs(act_fn="gelu"), seeds)
@example(tr.TransformerConfig(d_vocab=2, d_model=8, d_mlp=4, n_heads=4, d_head=2, n_ctx=3, act_fn="gelu",
                              layernorm=False, init_range=0.7), 52018094)  # tiny gradients: the floor below
def test_fast_path_matches_reference(cfg, seed):
    rng = np.random.default_rng(seed)
    params = random_params(cfg, rng)
    tokens = rng.integers(0, cfg.d_vocab, size=(2, cfg.n_ctx + 1))
    # the round-off of (softmax - onehot) is ~1 ulp of 1 per logit whatever the gradient's size (float32
    # ~1e-7, float64 ~1e-16), so when the model happens to predict these few tokens well, tiny gradients are
    # judged against a floor: 1e-3 (float32) and 1e-6 (float64) leave 10 * tol * floor, ~10-20 ulps of 1,
    # for round-off. (A float64 floor of 1e-9 allowed 1e-18, below one ulp: hypothesis found d_vocab=2,
    # seed=52018094, where b_out's gradient is 5e-11 and the two paths differ by 5e-17.)
    for dtype, tol, floor in ((np.float64, 1e-10, 1e-6), (np.float32, 2e-4, 1e-3)):
        p = {k: v.astype(dtype) for k, v in params.items()}
        loss_ref, g_ref = tr.loss_and_grads(p, tokens, cfg)
        loss_fast, g_fast = tr.loss_and_grads(p, tokens, cfg, fast=True)
        assert abs(loss_fast - loss_ref) <= tol * (abs(loss_ref) + 1), \
            f"{dtype.__name__} loss {loss_fast} vs {loss_ref}"
        for k in p:
            # b_K's gradient is zero in theory (round-off on both sides): judge it on W_K's scale
            scale = np.abs(g_ref["W_K" if k == "b_K" else k]).max() + floor
            assert g_fast[k].dtype == dtype, f"grad {k} is {g_fast[k].dtype}, params are {dtype.__name__}"
            err = np.abs(g_fast[k] - g_ref[k]).max() / scale
            assert err <= 10 * tol, f"{dtype.__name__} grad {k}: kernels differ from layers.py by {err:.2e} (relative)"


def test_relu_fast_path_gradients():
    """The fused bias + ReLU path (fast=True, relu) against central differences in float64."""
    cfg = tr.TransformerConfig(d_vocab=6, d_model=6, d_mlp=5, n_heads=2, d_head=3, n_ctx=5, init_range=0.7)
    rng = np.random.default_rng(5)  # a seed whose pre-activations all sit at least 0.9 from the kink
    params = random_params(cfg, rng)
    tokens = rng.integers(0, 6, size=(2, 5))
    _, cache = tr.forward(params, tokens, cfg)
    assert np.abs(pre_activations(params, cache)).min() > 0.02, "pick another seed: a pre-activation is near 0"
    errors, _, _ = check_model_gradients(cfg, params, tokens, rng, fast=True)
    assert_grads_ok(errors, "fast path with ReLU")


# ----------------------------------------------------------------------------------------------------
# the hook point mlp.hook_post


def next_token_nats(logits, tokens):
    """[B, T] by hand: -log softmax(logits[b, t])[tokens[b, t + 1]], for logits [B, T, V] of tokens[:, :T]."""
    z = logits.astype(np.float64)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, tokens[:, 1:z.shape[1] + 1, None], axis=-1)[..., 0]


def hook_setup(seed=0, layernorm=True):
    cfg = tr.TransformerConfig(d_vocab=7, d_model=6, d_mlp=5, n_heads=2, d_head=3, n_ctx=5, layernorm=layernorm,
                               act_fn="gelu", init_range=0.7)
    rng = np.random.default_rng(seed)
    return cfg, random_params(cfg, rng), rng.integers(0, 7, size=(2, 5)), rng


def test_hook_reads_the_activations():
    cfg, params, tokens, _ = hook_setup()
    seen = []
    logits_read, cache_read = tr.forward(params, tokens, cfg, hook_post=lambda post: seen.append(post.copy()))
    logits, cache = tr.forward(params, tokens, cfg)
    assert len(seen) == 1 and seen[0].shape == (2, 5, cfg.d_mlp), "the hook is called once with [B, T, d_mlp]"
    np.testing.assert_array_equal(seen[0], cache.hook_post, err_msg="the hook sees what the cache stores")
    np.testing.assert_array_equal(logits_read, logits, err_msg="a hook that returns None must change nothing")
    assert not cache_read.replaced


@pytest.mark.parametrize("layernorm", [True, False])
@pytest.mark.parametrize("kind", ["array", "function", "zeros", "mean"])
def test_hook_replacement_gradients(kind, layernorm):
    """With a replacement, the backward treats it as a constant: the gradients are those of the model in
    which the MLP's output is computed from that fixed array, which central differences check."""
    cfg, params, tokens, rng = hook_setup(1, layernorm)
    _, clean = tr.forward(params, tokens, cfg)
    fixed = {"array": rng.standard_normal(clean.hook_post.shape), "function": 0.5 * clean.hook_post + 1.0,
             "zeros": np.zeros_like(clean.hook_post),
             "mean": np.broadcast_to(clean.hook_post.mean(axis=(0, 1)), clean.hook_post.shape)}[kind]
    hook = {"array": fixed, "function": lambda post: 0.5 * post + 1.0, "zeros": 0.0,
            "mean": clean.hook_post.mean(axis=(0, 1))}[kind]
    errors, grads, cache = check_model_gradients(cfg, params, tokens, np.random.default_rng(2), hook_post=fixed)
    assert_grads_ok(errors, f"hook replacement ({kind})")
    assert cache.replaced
    _, cache_hook = tr.forward(params, tokens, cfg, hook_post=hook)
    assert cache_hook.replaced
    dlogits = np.random.default_rng(5).standard_normal((2, 5, cfg.d_vocab))
    g_hook = tr.backward(params, cache_hook, cfg, dlogits)
    g_fixed = tr.backward(params, tr.forward(params, tokens, cfg, hook_post=fixed)[1], cfg, dlogits)
    for k in params:
        np.testing.assert_allclose(g_hook[k], g_fixed[k], rtol=1e-12, atol=1e-14,
                                   err_msg=f"{kind}: grad {k} must equal the one with the fixed array")
    for k in ["W_in", "b_in"] + (["ln2_w", "ln2_b"] if layernorm else []):
        assert np.all(g_hook[k] == 0), f"{k} feeds only the replaced activations: its gradient must be exactly 0"


def test_hook_replacement_changes_the_output_and_fast_agrees():
    cfg, params, tokens, _ = hook_setup(4)
    logits, cache = tr.forward(params, tokens, cfg)
    zero_logits, zero_cache = tr.forward(params, tokens, cfg, hook_post=0.0)
    assert np.abs(zero_logits - logits).max() > 1e-3, "zero-ablating the MLP must change the logits"
    np.testing.assert_array_equal(zero_cache.hook_post, cache.hook_post,
                                  err_msg="cache.hook_post keeps the model's own activations, not the replacement")
    fast_logits, _ = tr.forward(params, tokens, cfg, hook_post=0.0, fast=True)
    np.testing.assert_allclose(fast_logits, zero_logits, rtol=1e-10, atol=1e-12)
    windows = np.concatenate([tokens, tokens[:, :1]], 1)  # [2, 6]: inputs `tokens`, each followed by a target
    by_hand = next_token_nats(zero_logits, windows).mean()
    assert tr.loss(params, windows, cfg, hook_post=0.0) == pytest.approx(by_hand, rel=1e-10), \
        "the zero-ablated loss must be the cross-entropy of the zero-ablated logits"


def test_hook_bad_replacement():
    cfg, params, tokens, _ = hook_setup()
    with pytest.raises(ValueError, match="mlp.hook_post"):
        tr.forward(params, tokens, cfg, hook_post=np.zeros((2, 5, cfg.d_mlp + 1)))


@pytest.mark.parametrize("fast", [False, True])
def test_hook_cannot_edit_in_place(fast):
    """A hook that writes into the activations would change the model behind the backward's back (the
    ReLU's mask, cache.hook_post): it gets a read-only view, and the error says to return the edit."""
    cfg, params, tokens, _ = hook_setup()

    def edit(post):
        post[..., 3] = 5.0

    with pytest.raises(ValueError, match="must return its edit"):
        tr.forward(params, tokens, cfg, hook_post=edit, fast=fast)
    _, cache = tr.forward(params, tokens, cfg, fast=fast)
    assert not np.any(cache.hook_post[..., 3] == 5.0)


# ----------------------------------------------------------------------------------------------------
# causality, input checks, config


@pytest.mark.parametrize("fast", [False, True])
def test_changing_a_token_changes_no_earlier_logit(fast):
    cfg = tr.TransformerConfig(d_vocab=9, d_model=8, d_mlp=8, n_heads=2, d_head=4, n_ctx=7, init_range=0.5)
    rng = np.random.default_rng(0)
    params = random_params(cfg, rng)
    tokens = rng.integers(0, 9, size=(3, 7))
    logits, _ = tr.forward(params, tokens, cfg, fast=fast)
    for t in range(7):
        changed = tokens.copy()
        changed[:, t] = (changed[:, t] + 1 + rng.integers(0, 8, size=3)) % 9
        logits2, _ = tr.forward(params, changed, cfg, fast=fast)
        np.testing.assert_array_equal(logits2[:, :t], logits[:, :t],
                                      err_msg=f"changing token {t} changed an earlier logit: the mask leaks the future")
        assert np.abs(logits2[:, t] - logits[:, t]).max() > 0, f"changing token {t} must change logit {t}"
    assert tr.causality_leaks(params, cfg, tokens, fast=fast) == 0, "causality_leaks must agree with the loop above"


def test_bad_tokens():
    cfg = tr.TransformerConfig(d_vocab=5, d_model=4, d_mlp=4, n_heads=2, d_head=2, n_ctx=4)
    params = tr.init(cfg, np.random.default_rng(0))
    cases = [(np.array([[0, 5]]), "must be in \\[0, 5\\)"), (np.array([[-1, 0]]), "must be in"),
             (np.zeros((1, 5), int), "outside 1..4"), (np.zeros((1, 2)), "integer dtype"),
             (np.zeros(3, int), "\\[B, T\\]"), ([[0, 1]], "NumPy integer array"), (np.zeros((1, 0), int), "outside")]
    for tokens, match in cases:
        with pytest.raises(ValueError, match=match):
            tr.forward(params, tokens, cfg)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        tr.loss(params, np.zeros((1, 1), int), cfg)
    tr.loss(params, np.zeros((1, 5), int), cfg)  # n_ctx + 1 tokens: n_ctx inputs, n_ctx targets
    with pytest.raises(ValueError, match="outside"):
        tr.loss(params, np.zeros((1, 6), int), cfg)


@pytest.mark.parametrize("kwargs, match", [
    (dict(d_model=100), "n_heads \\* d_head"), (dict(d_mlp=0), "d_mlp must be a positive integer"),
    (dict(n_ctx=-1), "n_ctx"), (dict(n_heads=2.0, d_head=64), "n_heads"), (dict(act_fn="tanh"), "act_fn"),
    (dict(init_range=0.0), "init_range")])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tr.TransformerConfig(**kwargs)


def test_default_config_and_param_shapes():
    cfg = tr.TransformerConfig()
    params = tr.init(cfg, np.random.default_rng(0))
    assert (cfg.d_vocab, cfg.d_model, cfg.d_mlp, cfg.act_fn, cfg.layernorm) == (257, 128, 512, "relu", True)
    expected = {"W_E": (257, 128), "W_pos": (128, 128), "W_Q": (4, 128, 32), "b_Q": (4, 32), "W_O": (4, 32, 128),
                "W_in": (128, 512), "b_in": (512,), "W_out": (512, 128), "W_U": (128, 257), "lnf_w": (128,)}
    for k, shape in expected.items():
        assert params[k].shape == shape and params[k].dtype == np.float32, f"{k}: {params[k].shape} {params[k].dtype}"
    assert sum(v.size for v in params.values()) == tr.n_params(cfg)
    no_ln = tr.TransformerConfig(layernorm=False)
    assert not any(k.startswith("ln") for k in no_ln.param_shapes())
    tokens = np.zeros((1, 3), int)
    with pytest.raises(ValueError, match="missing \\['W_U'\\]"):
        tr.forward({k: v for k, v in params.items() if k != "W_U"}, tokens, cfg)
    with pytest.raises(ValueError, match="W_in has shape"):
        tr.forward({**params, "W_in": params["W_in"].T}, tokens, cfg)
    with pytest.raises(ValueError, match="float32 or all float64"):
        tr.forward({**params, "b_U": params["b_U"].astype(np.float64)}, tokens, cfg)


# ----------------------------------------------------------------------------------------------------
# sampling and evaluation


def test_sampling():
    cfg = tr.TransformerConfig(d_vocab=257, d_model=8, d_mlp=8, n_heads=2, d_head=4, n_ctx=6, init_range=1.0)
    params = tr.init(cfg, np.random.default_rng(0), np.float64)
    a = tr.sample(params, cfg, "hi", 10, np.random.default_rng(1))
    b = tr.sample(params, cfg, b"hi", 10, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b, err_msg="same seed, same prompt (str or its UTF-8 bytes): same sample")
    assert len(a) == 12 and list(a[:2]) == [ord("h"), ord("i")]
    greedy = tr.sample(params, cfg, [1, 2, 3], 12, np.random.default_rng(2), temperature=0)  # slides past n_ctx
    top1 = tr.sample(params, cfg, [1, 2, 3], 12, np.random.default_rng(3), top_k=1)
    np.testing.assert_array_equal(greedy, top1, err_msg="top_k=1 must always pick the most likely token")
    for i in range(3, 15):  # each greedy token is the argmax given the last n_ctx tokens
        window = greedy[max(0, i - cfg.n_ctx):i][None]
        assert greedy[i] == np.argmax(tr.forward(params, window, cfg)[0][0, -1]), f"token {i} is not the argmax"
    with pytest.raises(ValueError, match="at least one token"):
        tr.sample(params, cfg, "", 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="top_k"):
        tr.sample(params, cfg, "a", 3, np.random.default_rng(0), top_k=0)
    with pytest.raises(ValueError, match="must be in \\[0, 257\\)"):
        tr.sample(params, cfg, [300] + [1] * 10, 3, np.random.default_rng(0))  # out of range, even far back
    long_prompt = "a prompt longer than n_ctx"
    assert len(tr.sample(params, cfg, long_prompt, 2, np.random.default_rng(0))) == len(long_prompt) + 2


@pytest.mark.parametrize("fast", [False, True])
def test_sample_many_continues_each_prompt_as_sample_does(fast):
    """Prompts continued together: each row draws from its own generator what `sample` draws for that prompt
    alone, the window sliding past n_ctx (float64: a batch's products round far below any draw's margin)."""
    cfg = tr.TransformerConfig(d_vocab=11, d_model=8, d_mlp=8, n_heads=2, d_head=4, n_ctx=6, init_range=1.0)
    params = tr.init(cfg, np.random.default_rng(0), np.float64)
    prompts = np.random.default_rng(1).integers(0, 11, size=(4, 3))
    many = tr.sample_many(params, cfg, prompts, 9, [np.random.default_rng(10 + b) for b in range(4)], fast=fast)
    assert many.shape == (4, 12) and len({tuple(row[3:]) for row in many}) > 1, "the rows drew alike"
    for b in range(4):
        alone = tr.sample(params, cfg, prompts[b], 9, np.random.default_rng(10 + b), fast=fast)
        np.testing.assert_array_equal(many[b], alone, err_msg=f"prompt {b} continued otherwise in the batch")
    with pytest.raises(ValueError, match="as many generators"):
        tr.sample_many(params, cfg, prompts, 2, [np.random.default_rng(0)])


@pytest.mark.parametrize("fast", [False, True])
def test_loss_is_the_next_token_cross_entropy_of_the_logits(fast):
    """Written out from the logits alone: position t is scored on token t + 1."""
    cfg = tr.TransformerConfig(d_vocab=11, d_model=8, d_mlp=12, n_heads=2, d_head=4, n_ctx=6, init_range=0.8)
    rng = np.random.default_rng(4)
    params = random_params(cfg, rng)
    tokens = rng.integers(0, 11, size=(3, 7))
    logits = tr.forward(params, tokens[:, :-1], cfg)[0]  # [3, 6, 11]
    nats = next_token_nats(logits, tokens)
    assert nats[1, 2] == pytest.approx(np.log(np.exp(logits[1, 2].astype(np.float64)).sum()) - logits[1, 2, tokens[1, 3]])
    np.testing.assert_allclose(tr.per_token_loss(params, tokens, cfg, fast=fast), nats, rtol=1e-10)  # float64
    assert tr.loss(params, tokens, cfg, fast=fast) == pytest.approx(nats.mean(), rel=1e-10)
    assert tr.loss_and_grads(params, tokens, cfg, fast=fast)[0] == pytest.approx(nats.mean(), rel=1e-10)


def test_sampling_draws_from_the_tempered_top_k_softmax():
    cfg = tr.TransformerConfig(d_vocab=9, d_model=8, d_mlp=8, n_heads=2, d_head=4, n_ctx=6, init_range=1.0)
    params = tr.init(cfg, np.random.default_rng(0), np.float64)
    last = tr.forward(params, np.array([[1, 2, 3]]), cfg)[0][0, -1].astype(np.float64)

    class Recorder:
        def choice(self, n, p):
            self.p = p
            return 0

    for temperature, top_k in ((0.5, None), (2.0, 3)):
        z = last / temperature
        if top_k:
            z = np.where(last >= np.sort(last)[-top_k], z, -np.inf)
        want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        rec = Recorder()
        tr.sample(params, cfg, [1, 2, 3], 1, rec, temperature=temperature, top_k=top_k)
        np.testing.assert_allclose(rec.p, want, rtol=1e-12, err_msg=f"temperature {temperature}, top_k {top_k}")
        assert np.count_nonzero(rec.p) == (top_k or cfg.d_vocab)


def test_sampling_applies_the_hook_at_every_step():
    """A hook (a pinned feature, an ablation) changes what is sampled: each step draws from the hooked
    model's softmax, here with the MLP zero-ablated, and the hook sees every step's window."""
    cfg = tr.TransformerConfig(d_vocab=9, d_model=8, d_mlp=8, n_heads=2, d_head=4, n_ctx=4, init_range=1.0)
    params = tr.init(cfg, np.random.default_rng(0), np.float64)
    seen = []

    def zero(post):
        seen.append(post.shape)
        return np.zeros_like(post)

    class Recorder:
        def __init__(self):
            self.ps = []

        def choice(self, n, p):
            self.ps.append(p)
            return 5

    rec = Recorder()
    out = tr.sample(params, cfg, [1, 2, 3], 3, rec, hook_post=zero)
    assert out.tolist() == [1, 2, 3, 5, 5, 5] and seen == [(1, 3, 8), (1, 4, 8), (1, 4, 8)]  # the window slides
    for step, window in enumerate(([1, 2, 3], [1, 2, 3, 5], [2, 3, 5, 5])):
        last = tr.forward(params, np.array([window]), cfg, hook_post=0.0)[0][0, -1]
        want = np.exp(last - last.max()) / np.exp(last - last.max()).sum()
        np.testing.assert_allclose(rec.ps[step], want, rtol=1e-12, err_msg=f"step {step}")
    plain = tr.forward(params, np.array([[1, 2, 3]]), cfg)[0][0, -1]
    assert not np.allclose(tr.forward(params, np.array([[1, 2, 3]]), cfg, hook_post=0.0)[0][0, -1], plain)


def test_evaluate_credits_each_byte_to_the_label_of_the_byte_predicted():
    cfg = tr.TransformerConfig(d_vocab=7, d_model=6, d_mlp=5, n_heads=2, d_head=3, n_ctx=4, init_range=0.7)
    rng = np.random.default_rng(1)
    params = random_params(cfg, rng)
    n = 40
    split = SimpleNamespace(tokens=rng.integers(0, 7, n), context=np.arange(n) % 3, detail=(np.arange(n) // 2) % 2)
    corpus = SimpleNamespace(split=lambda name: split, context_names=("a", "b", "c"), detail_names=("x", "y"))
    got = tr.evaluate(params, cfg, corpus, fast=False)
    bits = tr.stream_bits(params, cfg, split.tokens, fast=False)  # bits[i]: predicting byte i + 1
    for family, labels, names in (("context", split.context, "abc"), ("detail", split.detail, "xy")):
        for j, name in enumerate(names):
            want = np.mean([bits[i] for i in range(n - 1) if labels[i + 1] == j])
            assert got[family][name] == pytest.approx(want, rel=1e-12), f"{family} {name}"
    assert got["overall"] == pytest.approx(bits.mean(), rel=1e-12)


def test_stream_bits_scores_each_position_once_with_most_context():
    cfg = tr.TransformerConfig(d_vocab=7, d_model=6, d_mlp=5, n_heads=2, d_head=3, n_ctx=4, init_range=0.7)
    rng = np.random.default_rng(0)
    params = random_params(cfg, rng)
    tokens = rng.integers(0, 7, size=15)
    bits = tr.stream_bits(params, cfg, tokens, stride=2, fast=False)
    assert bits.shape == (14,) and np.isfinite(bits).all()

    def bits_with_context(i, start):  # -log2 p(tokens[i+1] | tokens[start:i+1]), computed on its own
        return tr.per_token_loss(params, tokens[None, start:i + 2], cfg)[0, -1] / math.log(2)

    for i in range(14):
        # the earliest window (starts 0, 2, 4, ..., and one flush with the end) that holds position i
        start = 0 if i < 4 else min(s for s in list(range(0, 11, 2)) + [10] if s <= i < s + 4)
        assert bits[i] == pytest.approx(bits_with_context(i, start), rel=1e-12), f"position {i}"
    short = tr.stream_bits(params, cfg, tokens[:3], fast=False)
    np.testing.assert_allclose(short, tr.per_token_loss(params, tokens[None, :3], cfg)[0] / math.log(2))
    labels = np.array([0, 1, 0, 2])
    means = tr.label_means(np.array([1.0, 2.0, 3.0, 4.0]), labels, ["a", "b", "c", "d"])
    assert means == {"a": 2.0, "b": 2.0, "c": 4.0}, "labels with no bytes are left out"


# ----------------------------------------------------------------------------------------------------
# training through tinymono.train


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from tinymono.corpus import CorpusConfig
    from tinymono.corpus_build import get_corpus

    return get_corpus(CorpusConfig(seed=0, n_train_bytes=20_000, n_val_bytes=6_000),
                      tmp_path_factory.mktemp("corpus"), progress=False)


TINY = tr.TransformerConfig(d_model=16, d_mlp=32, n_heads=2, d_head=8, n_ctx=16)


def test_training_learns_and_resume_is_bit_identical(tiny_corpus, tmp_path):
    from tinymono.train import train

    tc = tr.TrainConfig(steps=30, batch=4, lr=3e-3, warmup=5, eval_every=20, eval_tokens=500, val_windows=2)
    straight = tr.TransformerTask(TINY, tc, tiny_corpus)
    result = train(straight, 30, chunk_steps=10, checkpoint=tmp_path / "a", progress=False)
    assert result.history["bpb"][-1] < result.history["bpb"][0] - 0.5, \
        f"30 steps should cut the loss well below log2(257) = 8 bits: {result.history['bpb']}"
    assert [e["step"] for e in straight.evals] == [20, 30] and straight.evals[-1]["tokens"] == 6_000
    assert set(straight.evals[-1]["context"]) >= {"python", "english"}

    first = tr.TransformerTask(TINY, tc, tiny_corpus)
    train(first, 20, chunk_steps=10, checkpoint=tmp_path / "b", progress=False)
    resumed = tr.TransformerTask(TINY, tc, tiny_corpus)  # a fresh process would start like this
    result2 = train(resumed, 30, chunk_steps=10, checkpoint=tmp_path / "b", progress=False)
    assert result2.resumed_from == 20
    for k in straight.params:
        np.testing.assert_array_equal(resumed.params[k], straight.params[k],
                                      err_msg=f"{k} differs after resuming: is the batch RNG state checkpointed?")
    np.testing.assert_array_equal(resumed.opt.m["W_in"], straight.opt.m["W_in"])
    np.testing.assert_array_equal(result2.history["bpb"], result.history["bpb"])
    assert resumed.evals == straight.evals

    params, cfg, meta = tr.load_model(tmp_path / "a")
    assert cfg == TINY and meta["step"] == 30 and meta["evals"][-1] == straight.evals[-1]
    for k in params:
        np.testing.assert_array_equal(params[k], straight.params[k])

    quiet = tr.TransformerTask(TINY, dataclasses.replace(tc, eval_every=0), tiny_corpus)  # lesson 10's model B
    train(quiet, 30, chunk_steps=10, checkpoint=tmp_path / "c", progress=False)
    assert quiet.evals == [], "eval_every 0 evaluates nothing, not even the whole split at the end"
    for k in params:
        np.testing.assert_array_equal(quiet.params[k], straight.params[k], err_msg="evaluating must not change training")


def test_a_training_step_clips_then_takes_an_adamw_step_at_the_scheduled_rate(tiny_corpus):
    """Two steps of the task against the recipe written out: a batch from the task's own generator, the
    gradients clipped to norm `clip` jointly, AdamW with weight decay on the matrices, lr from the
    warm-up schedule."""
    tc = tr.TrainConfig(steps=10, batch=3, lr=1e-2, warmup=4, clip=0.05, weight_decay=0.5, val_windows=1)
    task = tr.TransformerTask(TINY, tc, tiny_corpus, fast=False)
    p = {k: v.astype(np.float64) for k, v in task.params.items()}
    adamw = Adam(p, betas=tc.betas, weight_decay=tc.weight_decay)  # checked by hand in test_gradcheck_optim
    rng = np.random.default_rng()
    rng.bit_generator.state = task.batch_rng.bit_generator.state
    norms = []
    for step in range(2):
        tokens = tiny_corpus.sample_windows("train", tc.batch, TINY.n_ctx + 1, rng)[0]
        _, g = tr.loss_and_grads({k: a.astype(np.float32) for k, a in p.items()}, tokens, TINY)
        norm = np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in g.values()))
        norms.append(norm)
        assert norm > tc.clip, "the test needs gradients above the clipping norm"
        adamw.step(p, {k: a * tc.clip / norm for k, a in g.items()}, lr=tc.lr * (step + 1) / tc.warmup)
    out = task.run_chunk(0, 2)
    assert out["grad_norm"] == pytest.approx(np.mean(norms), rel=1e-4), "grad_norm reports the norm before clipping"
    for k in p:
        np.testing.assert_allclose(task.params[k], p[k], rtol=2e-4, atol=2e-6, err_msg=f"{k} after two steps")


def test_train_config_errors():
    with pytest.raises(ValueError, match="warmup"):
        tr.TrainConfig(steps=10, warmup=11)
    with pytest.raises(ValueError, match="lr"):
        tr.TrainConfig(lr=0.0)
    for betas in ((0.9,), (0.9, 1.5)):
        with pytest.raises(ValueError, match="betas"):
            tr.TrainConfig(betas=betas)


# ----------------------------------------------------------------------------------------------------
# the benchmark's pieces (no timing asserts: only that they measure the same model and add up)


def test_benchmark_profile_adds_up_and_torch_model_is_the_same():
    from tinymono import kernels
    from tinymono.benchmarks import torch_or_none
    from tinymono.benchmarks import transformer as bench

    rng = np.random.default_rng(0)
    cfg = tr.TransformerConfig(d_model=16, d_mlp=32, n_heads=2, d_head=8, n_ctx=8)
    params = tr.init(cfg, rng)
    tokens = rng.integers(0, cfg.d_vocab, size=(2, 9))
    prof = bench.profile({k: v.copy() for k, v in params.items()}, tokens, cfg, n_steps=2)
    assert set(prof) == set(bench.PROFILE_ROWS) | set(bench.CORE_ROWS.values()) | {"total", "page_faults"}
    assert all(prof[k] >= 0 for k in bench.PROFILE_ROWS if k != "other"), prof
    assert sum(prof[k] for k in bench.PROFILE_ROWS) == pytest.approx(prof["total"], rel=1e-9)
    for row, core in bench.CORE_ROWS.items():  # the core is timed inside its row, once per step
        assert 0 < prof[core] < prof[row], (row, prof)
    assert bench.K.in_parallel is kernels.in_parallel, "the profile must put the kernels' in_parallel back"
    torch = torch_or_none()
    if torch is None:
        pytest.skip("PyTorch is not installed")
    loss_fn, step = bench._torch_model(torch, params, cfg)
    t_tokens = torch.from_numpy(tokens)
    assert float(loss_fn(t_tokens).detach()) == pytest.approx(tr.loss(params, tokens, cfg), abs=1e-5), \
        "the PyTorch model must compute the same loss from the same parameters"


def test_benchmark_products_are_the_models_linear_maps():
    """bench transformer times the step's matrix products on their own: one product [n, i] x [i, o] per linear
    map, n = batch * n_ctx rows, and the maps' weights are every weight of the model but the embeddings."""
    from tinymono.benchmarks import transformer as bench

    cfg = tr.TransformerConfig(d_model=16, d_mlp=24, n_heads=2, d_head=8, n_ctx=8)
    shapes = bench.step_products(cfg, batch=3)
    assert all(n == 3 * cfg.n_ctx for n, _, _ in shapes)
    weights = {k: v for k, v in tr.init(cfg, np.random.default_rng(0)).items()
               if k.startswith("W_") and k not in ("W_E", "W_pos")}
    assert sum(i * o for _, i, o in shapes) == sum(v.size for v in weights.values()), sorted(weights)
    assert sorted((i, o) for _, i, o in shapes) == sorted([(cfg.d_model, 3 * cfg.n_heads * cfg.d_head),
                                                         (cfg.n_heads * cfg.d_head, cfg.d_model),
                                                         (cfg.d_model, cfg.d_mlp), (cfg.d_mlp, cfg.d_model),
                                                         (cfg.d_model, cfg.d_vocab)])


def test_benchmark_quick_run_reports_the_race_and_the_products():
    from tinymono.benchmarks import torch_or_none
    from tinymono.benchmarks import transformer as bench

    result = bench.run(quick=True)
    assert {"tinymono", "numpy_reference"} <= set(result["results"])
    assert result["ratios"]["tinymono_vs_numpy_reference"] > 0
    if torch_or_none() is not None:
        assert set(result["products_seconds"]) == {"numpy", "torch"} and min(result["products_seconds"].values()) > 0
        assert any("linear maps" in n and "alone" in n for n in result["notes"]), result["notes"]
        want = result["results"]["torch"]["seconds_per_call"] / result["products_seconds"]["numpy"]
        assert abs(result["ratios"]["bound_vs_torch"] - want) <= 1e-9 * want


def test_fast_steps_reuse_freed_memory():
    """After the first steps, a training step should find its ~40 MB of arrays in memory the process already
    holds (kernels.keep_freed_memory) instead of page-faulting fresh pages in every step (~10,000 faults)."""
    import resource

    from tinymono.kernels import transformer as K

    if not K.keep_freed_memory():
        pytest.skip("no glibc mallopt on this platform")
    cfg = tr.TransformerConfig()
    rng = np.random.default_rng(0)
    params = tr.init(cfg, rng)
    tokens = rng.integers(0, cfg.d_vocab, size=(32, cfg.n_ctx + 1))
    for _ in range(2):
        tr.loss_and_grads(params, tokens, cfg, fast=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        tr.loss_and_grads(params, tokens, cfg, fast=True)
    per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
    assert per_step < 1000, f"{per_step:.0f} page faults per step: are freed arrays going back to the OS?"


def test_transformer_task_reports_bits_per_byte():
    stream = np.random.default_rng(0).integers(0, 257, 5000)

    def sample_windows(split, n, length, rng):
        starts = rng.integers(0, len(stream) - length, n)
        return np.stack([stream[s:s + length] for s in starts]), None, None

    corpus = SimpleNamespace(sample_windows=sample_windows, meta={})
    cfg = tr.TransformerConfig(d_model=8, d_mlp=16, n_heads=2, d_head=4, n_ctx=8)
    task = tr.TransformerTask(cfg, tr.TrainConfig(steps=4, batch=3, warmup=0, val_windows=2), corpus, fast=False)
    rng = np.random.default_rng()
    rng.bit_generator.state = task.batch_rng.bit_generator.state  # the batch the step will draw
    tokens = sample_windows("train", 3, cfg.n_ctx + 1, rng)[0]
    nats = tr.per_token_loss({k: v.copy() for k, v in task.params.items()}, tokens, cfg).mean()
    out = task.run_chunk(0, 1)
    assert out["bpb"] == pytest.approx(nats / math.log(2), rel=1e-5)
    assert out["val_bpb"] == pytest.approx(tr.per_token_loss(task.params, task.val_tokens, cfg).mean() / math.log(2),
                                           rel=1e-5)


def test_the_model_takes_its_layer_norm_eps_and_scores_in_float64():
    cfg = tr.TransformerConfig(d_vocab=7, d_model=6, d_mlp=5, n_heads=2, d_head=3, n_ctx=5, ln_eps=0.5, init_range=0.7)
    params = tr.init(cfg, np.random.default_rng(0), np.float64)
    tokens = np.random.default_rng(1).integers(0, 7, (2, 5))
    _, cache = tr.forward(params, tokens, cfg)
    np.testing.assert_allclose(cache.ln1.inv_std, 1 / np.sqrt(cache.resid_pre.var(-1, keepdims=True) + 0.5), rtol=1e-12)
    params32 = tr.init(dataclasses.replace(cfg, ln_eps=1e-5), np.random.default_rng(0))  # float32, as training uses
    loss = tr.per_token_loss(params32, np.random.default_rng(1).integers(0, 7, (2, 6)), cfg)
    assert loss.dtype == np.float64, "per-token losses are summed over millions of tokens"


def test_causality_check_finds_a_leak(monkeypatch):
    """The check itself must be able to fail: with a mask that lets each query see one key ahead, it counts leaks."""
    from tinymono import layers as L

    cfg = tr.TransformerConfig(d_vocab=7, d_model=6, d_mlp=5, n_heads=2, d_head=3, n_ctx=5)
    params = tr.init(cfg, np.random.default_rng(0), np.float64)
    tokens = np.random.default_rng(1).integers(0, 7, (2, 5))
    assert tr.causality_leaks(params, cfg, tokens) == 0
    monkeypatch.setattr(L, "causal_mask", lambda T: np.tril(np.ones((T, T), dtype=bool), k=1))
    assert tr.causality_leaks(params, cfg, tokens) > 0


@pytest.mark.parametrize("n, n_ctx", [(100, 5), (100, 7), (100, 8), (3, 7)])
def test_window_plan_strides_half_a_window_rounded_down(n, n_ctx):
    """The default stride gives each kept token at least n_ctx - n_ctx // 2 + 1 tokens of context; a test of
    the context against the stride the plan returns cannot see a wrong default."""
    starts, _, W, stride = tr.window_plan(n, n_ctx)
    assert stride == max(1, W // 2)
    assert np.all(np.diff(starts)[:-1] == stride)
