"""Every hand-written backward against PyTorch autograd, in float64.

The other tests check each backward against central differences. This is a second, independent check: each
model's forward is written again here in PyTorch, from its mathematical definition (the module docstrings),
autograd takes the gradients, and the project's loss and backward must agree with them to a relative error
of 1e-10 (float64 round-off lands near 1e-15; a wrong term lands near 1). The torch side never calls the
project's forward or backward. Inputs are drawn so that no pre-activation sits within 1e-6 of a kink (ReLU
at 0, a top-k tie, a JumpReLU threshold or the edge of its rectangle kernel), where a gradient is not
defined and the two sides could legitimately differ.

Covered: the toy model (toy.py), the paper's SAE with its dense and numba training steps (sae.py), each
later SAE variant, dense and numba (sae_variants.py), and the one-layer transformer with the NumPy and the
numba layers (transformer.py). PyTorch is optional (the test extra installs it): without it this module is
skipped.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from tinymono import sae, toy
from tinymono import sae_variants as V
from tinymono import transformer as tr

TOL = 1e-10  # max relative error of every loss and gradient, float64
MARGIN = 1e-6  # how far every pre-activation keeps from its kinks


# ----------------------------------------------------------------------------------------------------
# helpers


def to_torch(arrays, frozen=()):
    """name -> float64 array  ->  name -> float64 tensor, a leaf that collects its gradient unless frozen."""
    return {k: torch.tensor(np.asarray(v), dtype=torch.float64, requires_grad=k not in frozen)
            for k, v in arrays.items()}


def autograd(loss, leaves):
    """Backpropagate the scalar `loss` -> name -> gradient (NumPy) of every leaf that collects one."""
    loss.backward()
    return {k: (t.grad if t.grad is not None else torch.zeros_like(t)).numpy()  # None: the loss never reached t
            for k, t in leaves.items() if t.requires_grad}


def rel_err(ours, theirs):
    """max |ours - theirs| / max |theirs|: one scale-free number per array."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, f"shapes differ: ours {ours.shape}, torch's {theirs.shape}"
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-300))


def assert_agree(what, ours, theirs, tol=TOL):
    """ours, theirs: name -> value (the loss, each gradient). Same names, each within tol."""
    assert set(ours) == set(theirs), f"{what}: ours has {sorted(ours)}, torch has {sorted(theirs)}"
    errors = {k: rel_err(ours[k], theirs[k]) for k in theirs}
    bad = {k: e for k, e in errors.items() if not e <= tol}
    table = "\n".join(f"  {k:<14} {e:.1e}" for k, e in errors.items())
    assert not bad, (f"{what}: the hand-written backward disagrees with PyTorch autograd on {sorted(bad)} "
                     f"(budget {tol:.0e}); is a term missing, or a transpose or a sum over the wrong axis?\n{table}")


def assert_clear(gaps, what):
    """gaps: distances of pre-activations from their kinks (any shape). Each must be at least MARGIN."""
    closest = float(np.min(np.abs(np.asarray(gaps, dtype=np.float64)), initial=np.inf))
    assert closest >= MARGIN, f"{what}: a pre-activation sits {closest:.1e} from a kink; draw another seed"


def ties(values):
    """The gaps between neighbouring values of `values` (flattened): a top-k choice is defined away from ties."""
    return np.diff(np.sort(np.asarray(values.detach()).ravel()))


# ----------------------------------------------------------------------------------------------------
# the toy model: x' = ReLU(W^T W x + b), loss = mean over batch of sum_f I_f (x_f - x'_f)^2, per instance


def torch_toy_loss(p, x, importance, model):
    """x [inst, batch, feats] -> (per-instance loss [inst], pre [inst, batch, feats])."""
    h = torch.einsum("ihf,ibf->ibh", p["W"], x)  # [inst, batch, hidden]
    pre = torch.einsum("ihf,ibh->ibf", p["W"], h) + p["b_final"][:, None, :]  # [inst, batch, feats]
    out = F.relu(pre) if model == "relu" else pre
    return (importance[:, None, :] * (x - out) ** 2).sum(dim=2).mean(dim=1), pre


@pytest.mark.parametrize("model", ["relu", "linear"])
@pytest.mark.parametrize("n_inst, n_features, d_hidden, seed", [(3, 5, 2, 0), (4, 20, 5, 1)])
def test_toy_model_matches_torch(model, n_inst, n_features, d_hidden, seed):
    """toy.loss and toy.backward (per-instance importance and sparsity) equal autograd of the toy loss."""
    rng = np.random.default_rng(seed)
    cfg = toy.ToyConfig(n_features=n_features, d_hidden=d_hidden, n_inst=n_inst, model=model, batch_size=64,
                        feature_probability=np.linspace(0.1, 0.5, n_inst),
                        importance=rng.uniform(0.1, 1.0, (n_inst, n_features)))
    params = toy.init(cfg, rng)
    params["b_final"] = 0.1 * rng.standard_normal(params["b_final"].shape)  # 0: an all-zero input sits on the kink
    x = toy.generate_batch(cfg, step=3)
    out, cache = toy.forward(params, x, cfg)
    per_inst, dout = toy.loss(out, x, cfg)
    grads = toy.backward(params, cache, cfg, dout)

    p = to_torch(params)
    loss_t, pre = torch_toy_loss(p, torch.tensor(x), torch.tensor(cfg.importances()), model)
    if model == "relu":
        assert_clear(pre.detach(), "toy ReLU")
    theirs = {"loss": loss_t.detach().numpy(), **autograd(loss_t.sum(), p)}
    assert_agree(f"toy {model}", {"loss": per_inst, **grads}, theirs)


# ----------------------------------------------------------------------------------------------------
# SAEs: the draws shared by the paper's SAE and every variant


SHAPES = [(8, 6, 24, 0), (32, 10, 40, 1)]  # (B, d_in, d_sae, seed)
TRAINED_BY_HAND = ("W_enc", "b_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec")


def sae_case(arch, B, d_in, d_sae, seed, **options):
    """A float64 config, params and batch. The weights are drawn afresh (untied: the variants' tied init,
    W_enc = W_dec^T, would hide a swapped transpose); the variants' own extras (log_threshold, input_scale,
    threshold) come from sae.init. sparse_below=1: the numba steps run however many latents fire."""
    cfg = sae.SAEConfig(d_in=d_in, d_sae=d_sae, architecture=arch, batch_size=B, dtype="float64", sparse_below=1.0,
                        l1_coefficient=0.3, **options)
    rng = np.random.default_rng(seed)
    x = 2.0 * rng.standard_normal((B, d_in))  # not unit scale: the 2024 recipe's input_scale is then not ~1
    params = sae.init(cfg, rng, x)
    for k in TRAINED_BY_HAND:
        if k in params:
            params[k] = 0.5 * rng.standard_normal(params[k].shape)
    return cfg, params, x, rng


def torch_mse(x_hat, x):
    """Mean over the batch and d_in of (x_hat - x)^2, the house's reconstruction loss."""
    return ((x_hat - x) ** 2).mean()


# ----------------------------------------------------------------------------------------------------
# the paper's SAE: f = ReLU((x - b_dec) W_enc + b_enc), x_hat = f W_dec + b_dec,
# loss = mse + l1_coefficient * mean over B of sum_j |f_j|


def torch_sae_loss(p, x, l1_coefficient):
    """-> (loss, pre [B, d_sae])."""
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    f = F.relu(pre)
    x_hat = f @ p["W_dec"] + p["b_dec"]
    return torch_mse(x_hat, x) + l1_coefficient * f.abs().sum() / x.shape[0], pre


def sae_loss_and_grads(params, x, cfg, path):
    """The project's loss and gradients (W_dec's before project_decoder_grad), dense or numba."""
    if path == "dense":
        out, cache = sae.forward(params, x, cfg)
        return out.loss, sae.backward(params, cache, cfg)
    result = sae.train_step_sparse(params, x, cfg, sae.Buffers(cfg))
    assert result is not None, "with sparse_below=1 the numba step must run"
    loss, _, _, _, grads, _ = result
    return loss, grads


@pytest.mark.parametrize("path", ["dense", "numba"])
@pytest.mark.parametrize("B, d_in, d_sae, seed", SHAPES)
def test_sae_matches_torch(path, B, d_in, d_sae, seed):
    """sae.forward/backward and the numba train_step_sparse (float64) equal autograd of the paper's loss."""
    cfg, params, x, _ = sae_case("relu", B, d_in, d_sae, seed)
    loss, grads = sae_loss_and_grads(params, x, cfg, path)

    p = to_torch(params)
    loss_t, pre = torch_sae_loss(p, torch.tensor(x), cfg.l1_coefficient)
    assert_clear(pre.detach(), "SAE ReLU")
    assert_agree(f"SAE ({path})", {"loss": loss, **grads}, {"loss": loss_t.item(), **autograd(loss_t, p)})


# ----------------------------------------------------------------------------------------------------
# TopK with AuxK (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024)


def keep_top(values, k, dim):
    """A bool mask of the k largest entries of `values` along dim."""
    idx = torch.topk(values, k, dim=dim).indices
    return torch.zeros_like(values, dtype=torch.bool).scatter(dim, idx, True)


def torch_topk_loss(p, x, cfg, dead, batch):
    """f = pre where among the k largest of its row (batch: the B k largest of the batch) and positive;
    loss = mse + aux_coefficient * mse(z W_dec, e), z the aux_k largest positive pre-activations among the
    dead latents, e = x - x_hat taken as data. -> (loss, [pre, gaps between its values])."""
    B = x.shape[0]
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]  # [B, d_sae]
    keep = keep_top(pre.reshape(-1), B * cfg.k, dim=0).view_as(pre) if batch else keep_top(pre, cfg.k, dim=1)
    f = torch.where(keep & (pre > 0), pre, 0.0)
    x_hat = f @ p["W_dec"] + p["b_dec"]
    loss = torch_mse(x_hat, x)
    if dead.any():
        masked = torch.where(dead, pre, -torch.inf)  # only dead latents compete
        z = torch.where(keep_top(masked, min(cfg.aux_k, cfg.d_sae), dim=1) & (masked > 0), pre, 0.0)
        loss = loss + cfg.aux_coefficient * torch_mse(z @ p["W_dec"], (x - x_hat).detach())
    return loss, [pre.detach(), ties(pre)]


# JumpReLU (Rajamanoharan et al. 2024): f = pi H(pi - theta), loss = mse + lambda mean_B sum_j H(pi_j - theta_j).
# H has derivative 0 wherever it has one, so theta learns from the paper's straight-through pseudo-derivatives,
# with the rectangle kernel K(u) = 1[-1/2 < u < 1/2] and bandwidth eps:
#     d/dtheta JumpReLU(pi) := -(theta / eps) K((pi - theta) / eps),   d/dtheta H(pi - theta) := -(1 / eps) K(...)
# and d/dpi of them: H(pi - theta) (exact) and 0. Autograd cannot know this, so each is a torch Function.


def rectangle(u):
    """K(u) = 1 where -1/2 < u < 1/2, else 0."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLU(torch.autograd.Function):
    """f = pi H(pi - theta), with the paper's pseudo-derivative for theta."""

    @staticmethod
    def forward(ctx, pi, theta, eps):
        ctx.save_for_backward(pi, theta)
        ctx.eps = eps
        return torch.where(pi > theta, pi, 0.0)

    @staticmethod
    def backward(ctx, grad):
        pi, theta = ctx.saved_tensors
        dpi = torch.where(pi > theta, grad, 0.0)
        dtheta = (grad * -(theta / ctx.eps) * rectangle((pi - theta) / ctx.eps)).sum(dim=0)  # theta [d_sae]
        return dpi, dtheta, None


class Step(torch.autograd.Function):
    """H(pi - theta), with the paper's pseudo-derivative for theta and none for pi."""

    @staticmethod
    def forward(ctx, pi, theta, eps):
        ctx.save_for_backward(pi, theta)
        ctx.eps = eps
        return (pi > theta).to(pi.dtype)

    @staticmethod
    def backward(ctx, grad):
        pi, theta = ctx.saved_tensors
        dtheta = (grad * -(1.0 / ctx.eps) * rectangle((pi - theta) / ctx.eps)).sum(dim=0)
        return torch.zeros_like(pi), dtheta, None


def torch_jumprelu_loss(p, x, cfg, lam):
    """pi = x W_enc + b_enc (no b_dec subtracted), theta = exp(log_threshold). -> (loss, pi - theta and the
    distances of pi from the kernel's edges)."""
    pi = x @ p["W_enc"] + p["b_enc"]
    theta = torch.exp(p["log_threshold"])
    f = JumpReLU.apply(pi, theta, cfg.bandwidth)
    x_hat = f @ p["W_dec"] + p["b_dec"]
    loss = torch_mse(x_hat, x) + lam * Step.apply(pi, theta, cfg.bandwidth).sum() / x.shape[0]
    gap = (pi - theta).detach()
    return loss, [gap, gap.abs() - cfg.bandwidth / 2]


# Gated (Rajamanoharan et al. 2024): pi_gate = (x - b_dec) W_gate + b_gate, pi_mag = (x - b_dec) W_mag + b_mag
# with W_mag = W_gate exp(r_mag) column by column, f = 1[pi_gate > 0] ReLU(pi_mag); the gate learns from
# lambda ||ReLU(pi_gate)||_1 and from reconstructing x out of ReLU(pi_gate) through a frozen copy of the decoder.


def torch_gated_loss(p, x, lam):
    x_bar = x - p["b_dec"]
    pi_gate = x_bar @ p["W_enc"] + p["b_gate"]
    pi_mag = x_bar @ (p["W_enc"] * torch.exp(p["r_mag"])) + p["b_mag"]
    f = (pi_gate > 0).to(x.dtype) * F.relu(pi_mag)  # the comparison carries no gradient
    x_hat = f @ p["W_dec"] + p["b_dec"]
    gate = F.relu(pi_gate)
    x_aux = gate @ p["W_dec"].detach() + p["b_dec"].detach()
    loss = torch_mse(x_hat, x) + lam * gate.sum() / x.shape[0] + torch_mse(x_aux, x)
    return loss, [pi_gate.detach(), pi_mag.detach()]


# Anthropic's 2024 recipe: xs = input_scale x (a fixed buffer), f = ReLU(xs W_enc + b_enc), xs_hat = f W_dec + b_dec,
# loss = mse(xs_hat, xs) + lambda mean over B of sum_j f_j ||W_dec[j]||.


def torch_recipe2024_loss(p, x, lam):
    xs = x * p["input_scale"]
    pre = xs @ p["W_enc"] + p["b_enc"]
    f = F.relu(pre)
    xs_hat = f @ p["W_dec"] + p["b_dec"]
    loss = torch_mse(xs_hat, xs) + lam * (f * p["W_dec"].norm(dim=1)).sum() / x.shape[0]
    return loss, [pre.detach()]


def torch_variant_loss(arch, p, x, cfg, train):
    """-> (loss, distances of the pre-activations from the architecture's kinks)."""
    if arch in ("topk", "batchtopk"):
        return torch_topk_loss(p, x, cfg, torch.tensor(train.dead), batch=arch == "batchtopk")
    if arch == "jumprelu":
        return torch_jumprelu_loss(p, x, cfg, train.l1_coefficient)
    if arch == "gated":
        return torch_gated_loss(p, x, train.l1_coefficient)
    return torch_recipe2024_loss(p, x, train.l1_coefficient)


VARIANT_OPTIONS = {"topk": {"k": 4, "aux_k": 6}, "batchtopk": {"k": 4, "aux_k": 6}, "jumprelu": {"bandwidth": 0.5}}


@pytest.mark.parametrize("path", ["dense", "numba"])
@pytest.mark.parametrize("B, d_in, d_sae, seed", SHAPES)
@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "gated", "anthropic2024"])
def test_sae_variant_matches_torch(arch, path, B, d_in, d_sae, seed):
    """Each variant's training step (dense_step, or its numba step) equals autograd of its definition."""
    cfg, params, x, rng = sae_case(arch, B, d_in, d_sae, seed, **VARIANT_OPTIONS.get(arch, {}))
    if arch == "jumprelu":  # thresholds spread out, so that some pre-activations fall in the kernel's window
        params["log_threshold"] = np.log(rng.uniform(0.2, 2.0, d_sae))
    dead = rng.random(d_sae) < 0.5 if arch in ("topk", "batchtopk") else np.zeros(d_sae, dtype=bool)
    train = V.Train(l1_coefficient=0.2, dead=dead)  # 0.2, not cfg's 0.3: the step's (warmed-up) value is used
    variant = sae.variant_of(cfg)
    p = to_torch(params, frozen=variant.buffers)  # BatchTopK's threshold and input_scale are not trained
    loss_t, gaps = torch_variant_loss(arch, p, torch.tensor(x), cfg, train)
    assert_clear(np.concatenate([np.ravel(g) for g in gaps]), arch)
    if path == "dense":
        terms, grads, _ = V.dense_step(variant, params, x, cfg, train, None, 0)
    else:
        terms, grads, _ = variant.step(variant, params, x, cfg, train, variant.sparse_buffers(cfg), 0)
    if arch == "jumprelu":
        assert np.any(grads["log_threshold"] != 0), "the case should put pre-activations inside the kernel"
    if arch in ("topk", "batchtopk"):
        assert terms[2] > 0, "the case should exercise AuxK (dead latents with positive pre-activations)"
    assert_agree(f"{arch} ({path})", {"loss": terms[0], **grads}, {"loss": loss_t.item(), **autograd(loss_t, p)})


# ----------------------------------------------------------------------------------------------------
# the one-layer transformer (transformer.py's docstring):
#   resid = W_E[tokens] + W_pos[:T];  resid_mid = resid + attn(ln1(resid));
#   resid_post = resid_mid + act(ln2(resid_mid) W_in + b_in) W_out + b_out;  logits = lnf(resid_post) W_U + b_U
# loss = mean next-token cross-entropy


def torch_transformer_loss(p, tokens, cfg):
    """tokens [B, T+1] -> (loss, the MLP's pre-activations [B, T, M])."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    T = inputs.shape[1]

    def ln(x, name):
        return F.layer_norm(x, (cfg.d_model,), p[f"{name}_w"], p[f"{name}_b"], cfg.ln_eps)

    def heads(x, name):  # [B, T, D] -> [B, H, T, E], one projection per head
        return torch.einsum("btd,hde->bhte", x, p[f"W_{name}"]) + p[f"b_{name}"][None, :, None, :]

    resid = p["W_E"][inputs] + p["W_pos"][:T]  # [B, T, D]
    x = ln(resid, "ln1")
    q, k, v = heads(x, "Q"), heads(x, "K"), heads(x, "V")
    scores = q @ k.transpose(-1, -2) / cfg.d_head**0.5  # [B, H, T, T] query rows, key columns
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    pattern = torch.softmax(scores.masked_fill(~causal, -torch.inf), dim=-1)
    z = pattern @ v  # [B, H, T, E]
    resid_mid = resid + torch.einsum("bhte,hed->btd", z, p["W_O"]) + p["b_O"]
    pre = ln(resid_mid, "ln2") @ p["W_in"] + p["b_in"]  # [B, T, M]
    post = F.relu(pre) if cfg.act_fn == "relu" else F.gelu(pre, approximate="tanh")
    resid_post = resid_mid + post @ p["W_out"] + p["b_out"]
    logits = ln(resid_post, "lnf") @ p["W_U"] + p["b_U"]  # [B, T, V]
    return F.cross_entropy(logits.reshape(-1, cfg.d_vocab), targets.reshape(-1)), pre


@pytest.mark.parametrize("fast, act_fn", [(False, "relu"), (True, "relu"), (False, "gelu")])
def test_transformer_matches_torch(fast, act_fn):
    """tr.loss_and_grads (NumPy layers, or the numba kernels) equals autograd for every parameter."""
    cfg = tr.TransformerConfig(d_vocab=20, d_model=16, n_heads=2, d_head=8, n_ctx=8, d_mlp=32, act_fn=act_fn)
    rng = np.random.default_rng(0)
    # every parameter moved off GPT-2's init (zero biases, unit gains, weights of 0.02) so each term counts
    params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in tr.init(cfg, rng, dtype=np.float64).items()}
    tokens = rng.integers(0, cfg.d_vocab, size=(3, cfg.n_ctx + 1))  # a small vocabulary: ids repeat
    loss, grads = tr.loss_and_grads(params, tokens, cfg, fast=fast)

    p = to_torch(params)
    loss_t, pre = torch_transformer_loss(p, torch.tensor(tokens), cfg)
    if act_fn == "relu":
        assert_clear(pre.detach(), "MLP ReLU")
    theirs = {"loss": loss_t.item(), **autograd(loss_t, p)}
    # b_K's gradient is exactly 0: it adds q . b_K to a whole row of scores, which the softmax ignores. Both
    # sides return round-off (~1e-17), whose relative error means nothing: each must be 0 to within TOL of
    # the largest gradient instead
    scale = max(np.abs(g).max() for g in theirs.values())
    for name, side in (("ours", grads), ("torch's", theirs)):
        assert np.abs(side.pop("b_K")).max() <= TOL * scale, f"{name} b_K gradient should be 0 (softmax shift)"
    assert_agree(f"transformer (fast={fast}, {act_fn})", {"loss": loss, **grads}, theirs)
