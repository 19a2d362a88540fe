"""The tutor's checks for lesson 02: the SAE's pieces (tinymono/sae.py), each against the library's.

Sizes B = 5, d_in = 3, d_sae = 7 (all different, and none 2), so a factor or a transpose is recognisable;
pre-activations stay 0.05 away from the ReLU's kink, where central differences would legitimately disagree.
"""
from __future__ import annotations

import numpy as np

from tinymono import sae as ref
from tinymono.exercises.tutor import Factor, Wrong, exercise, shapes
from tinymono.gradcheck import check_gradients, check_layer
from tinymono.optim import Adam

__tracebackhide__ = True  # pytest shows the test line and the tutor's message, not these frames

B, D_IN, D_SAE, L1 = 5, 3, 7, 0.3
DLOSS = 0.7  # the upstream gradient handed to the loss backwards: forgetting it shows


def relu(a):
    return np.maximum(a, 0.0)


def _batch(what):
    return Factor(B, "the batch size B", what)


def encoder_inputs(rng):
    """x [B, d_in], W_enc [d_in, d_sae], b_enc [d_sae], b_dec [d_in], every |pre-activation| >= 0.05."""
    cfg = ref.SAEConfig(d_in=D_IN, d_sae=D_SAE, dtype="float64")
    while True:
        p = ref.init(cfg, rng)
        b_enc, b_dec = 0.5 * rng.standard_normal(D_SAE), 0.5 * rng.standard_normal(D_IN)
        x = rng.standard_normal((B, D_IN))
        pre = (x - b_dec) @ p["W_enc"] + b_enc
        if np.abs(pre).min() > 0.05 and 0.2 < np.mean(pre > 0) < 0.8:
            return x, p["W_enc"], b_enc, b_dec


def sae_setup(rng, l1=L1):
    x, W_enc, b_enc, b_dec = encoder_inputs(rng)
    cfg = ref.SAEConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=l1, dtype="float64")
    W_dec = rng.standard_normal((D_SAE, D_IN))
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    return cfg, {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, x


@exercise("02.1")
def encode_relu_forward(t):
    x, W_enc, b_enc, b_dec = encoder_inputs(t.rng)
    t.inputs = shapes(dict(x=x, W_enc=W_enc, b_enc=b_enc, b_dec=b_dec))
    f, cache = t.expect_tuple(t.call(x, W_enc, b_enc, b_dec), 2, "(f, cache)")
    want, want_cache = ref.encode_relu_forward(x, W_enc, b_enc, b_dec)
    wrong = [Wrong(relu(x @ W_enc + b_enc), "is ReLU(x @ W_enc + b_enc): subtract b_dec from x first, "
                                            "x_bar = x - b_dec"),
             Wrong(relu((x + b_dec) @ W_enc + b_enc), "adds b_dec to x; the encoder subtracts it: x_bar = x - b_dec"),
             Wrong((x - b_dec) @ W_enc + b_enc, "has negative entries: the ReLU is missing"),
             Wrong(relu((x - b_dec) @ W_enc), "misses b_enc")]
    if t.expect("f", f, want, wrong, axes="B, d_sae"):
        t.expect_cache(cache, want_cache, "holding x_bar = x - b_dec, relu_forward's cache and W_enc")


@exercise("02.2")
def encode_relu_backward(t):
    x, W_enc, b_enc, b_dec = encoder_inputs(t.rng)
    df = t.rng.standard_normal((B, D_SAE))
    t.inputs = shapes(dict(df=df, x=x, W_enc=W_enc, b_enc=b_enc, b_dec=b_dec))
    _, cache = ref.encode_relu_forward(x, W_enc, b_enc, b_dec)
    got = t.expect_tuple(t.call(df, cache), 4, "(None, dW_enc, db_enc, db_dec)")
    _, dW_enc, db_enc, db_dec = ref.encode_relu_backward(df, cache)
    x_bar = x - b_dec
    no_mask = "misses the ReLU's backward: the gradient passes only where the pre-activation was > 0"
    sums = _batch("sum over the batch: the loss's 1/B is already inside df")
    if got[0] is not None:
        t.problems.append("the first value must be None: x is data, and its gradient would cost a matmul for nothing")
    uses_x = "uses x; the encoder's input is x_bar = x - b_dec (cached)"
    t.expect("dW_enc", got[1], dW_enc, [Wrong(x_bar.T @ df, no_mask),
                                        Wrong(x.T @ np.where(cache.relu.active, df, 0), uses_x)], [sums], "d_in, d_sae")
    t.expect("db_enc", got[2], db_enc, [Wrong(df.sum(axis=0), no_mask)], [sums], "d_sae")
    t.expect("db_dec", got[3], db_dec, [Wrong(W_enc @ db_enc, "has the wrong sign: x_bar = x - b_dec, so db_dec = "
                                              "-(the gradient of x_bar summed over the batch) = -W_enc @ db_enc"),
                                        Wrong(-(W_enc @ df.sum(axis=0)), no_mask)], [sums], "d_in")
    t.gradcheck(lambda: check_layer(ref.encode_relu_forward, t.function(), [x, W_enc, b_enc, b_dec],
                                    ["x", "W_enc", "b_enc", "b_dec"], rng=np.random.default_rng(0)))


@exercise("02.3")
def decode_forward(t):
    cfg, p, x = sae_setup(t.rng)
    f = relu(t.rng.standard_normal((B, D_SAE)))
    t.inputs = shapes(dict(f=f, W_dec=p["W_dec"], b_dec=p["b_dec"]))
    x_hat, cache = t.expect_tuple(t.call(f, p["W_dec"], p["b_dec"]), 2, "(x_hat, cache)")
    want, want_cache = ref.decode_forward(f, p["W_dec"], p["b_dec"])
    wrong = [Wrong(f @ p["W_dec"], "misses b_dec: the decoder adds it back"),
             Wrong(f @ p["W_dec"] - p["b_dec"], "subtracts b_dec; the decoder adds it back (the encoder "
                                                "subtracted it)")]
    if t.expect("x_hat", x_hat, want, wrong, axes="B, d_in"):
        t.expect_cache(cache, want_cache, "holding f and W_dec")


@exercise("02.4")
def decode_backward(t):
    cfg, p, x = sae_setup(t.rng)
    f = relu(t.rng.standard_normal((B, D_SAE)))
    dx_hat = t.rng.standard_normal((B, D_IN))
    t.inputs = shapes(dict(dx_hat=dx_hat, f=f, W_dec=p["W_dec"]))
    t.expect_affine_backward(ref.decode_forward, ref.decode_backward, [f, p["W_dec"], p["b_dec"]],
                             ["f", "W_dec", "b_dec"], dx_hat,
                             _batch("sum over the batch: the loss's 1/B is already inside dx_hat"),
                             ["B, d_sae", "d_sae, d_in", "d_in"])


def _ignores_dloss():
    return Factor(1 / DLOSS, "1 / dloss", "multiply by dloss, the gradient arriving from above (the chain rule)")


def _mse_factors():
    return [_batch("the loss is a mean over the batch"),
            Factor(D_IN, "d_in", "the mean runs over the d_in elements of each input too"),
            Factor(B * D_IN, "B x d_in, the number of elements", "the loss is the mean over every element, not "
                                                                 "the sum")]


@exercise("02.5")
def mse_forward(t):
    x_hat, x = t.rng.standard_normal((B, D_IN)), t.rng.standard_normal((B, D_IN))
    t.inputs = shapes(dict(x_hat=x_hat, x=x))
    loss, cache = t.expect_tuple(t.call(x_hat, x), 2, "(loss, cache)")
    want, want_cache = ref.mse_forward(x_hat, x)
    wrong = [Wrong(np.sqrt(want), "is the square root of the right answer: the loss is the mean of the squares itself"),
             Wrong(np.mean(np.abs(x_hat - x)), "is the mean absolute error: square the differences")]
    if t.expect("the loss", loss, want, wrong, _mse_factors()):
        t.expect_cache(cache, want_cache, "holding err = x_hat - x")


@exercise("02.6")
def mse_backward(t):
    x_hat, x = t.rng.standard_normal((B, D_IN)), t.rng.standard_normal((B, D_IN))
    t.inputs = shapes(dict(dloss=DLOSS, x_hat=x_hat, x=x))
    _, cache = ref.mse_forward(x_hat, x)
    got = t.expect_tuple(t.call(DLOSS, cache), 2, "(dx_hat, dx)")
    dx_hat, dx = ref.mse_backward(DLOSS, cache)
    factors = [_ignores_dloss(), *_mse_factors()]
    t.expect("dx_hat", got[0], dx_hat, factors=factors, axes="B, d_in")
    t.expect("dx", got[1], dx, [Wrong(dx_hat, "equals dx_hat; err = x_hat - x, so dx = -dx_hat")], factors, "B, d_in")
    t.gradcheck(lambda: check_layer(ref.mse_forward, t.function(), [x_hat, x], ["x_hat", "x"],
                                    rng=np.random.default_rng(0)))


def _latents(rng):
    """f [B, d_sae] >= 0 with exact zeros (as after a ReLU), the positive ones >= 0.05 (away from |f|'s kink)."""
    f = rng.standard_normal((B, D_SAE))
    return np.where(f > 0, f + 0.05, 0.0)


def _l1_factors():
    return [_batch("the penalty is a mean over the batch: divide by B once"),
            Factor(D_SAE, "d_sae", "the penalty sums over the latents; only the batch is averaged")]


@exercise("02.7")
def l1_forward(t):
    f = _latents(t.rng)
    t.inputs = shapes(dict(f=f, l1_coefficient=L1))
    penalty, cache = t.expect_tuple(t.call(f, L1), 2, "(penalty, cache)")
    want, want_cache = ref.l1_forward(f, L1)
    wrong = [Wrong(want / L1, "misses the l1_coefficient")]
    if t.expect("the penalty", penalty, want, wrong, _l1_factors()):
        t.expect_cache(cache, want_cache, "holding f and l1_coefficient")


@exercise("02.8")
def l1_backward(t):
    f = _latents(t.rng)
    t.inputs = shapes(dict(dloss=DLOSS, f=f, l1_coefficient=L1))
    _, cache = ref.l1_forward(f, L1)
    got = t.expect_tuple(t.call(DLOSS, cache), 2, "(df, None)")
    (want, _) = ref.l1_backward(DLOSS, cache)
    wrong = [Wrong(np.full_like(f, DLOSS * L1 / B), "is nonzero where f = 0: d|f|/df is sign(f), which is 0 at f = 0"),
             Wrong(want / L1, "misses the l1_coefficient")]
    t.expect("df", got[0], want, wrong, [_ignores_dloss(), *_l1_factors()], "B, d_sae")
    if got[1] is not None:
        t.problems.append("the second value must be None: l1_coefficient is a setting, not a parameter")
    positive = f + 0.05 * (f == 0)  # central differences need |f| away from 0
    t.gradcheck(lambda: check_layer(ref.l1_forward, t.function(), [positive, L1], ["f", "l1_coefficient"],
                                    rng=np.random.default_rng(0)),
                where=" (at f > 0 only: |f| has no derivative at 0, so this table cannot see what you do there)")


@exercise("02.9")
def backward(t):
    cfg, params, x = sae_setup(t.rng)
    t.inputs = shapes(dict(x=x, **params)) + f", l1_coefficient = {cfg.l1_coefficient}"
    _, cache = ref.forward(params, x, cfg)
    got = t.call(params, cache, cfg)
    if not isinstance(got, dict) or set(got) != set(params):
        keys = f" with keys {sorted(got)}" if isinstance(got, dict) else ""
        t.problems.append(f"must return a dict with the keys {sorted(params)} (one gradient per parameter); "
                          f"yours is a {type(got).__name__}{keys}")
        t.finish()
    want = ref.backward(params, cache, cfg)
    # the pieces, to name a missing one
    df_pen, _ = ref.l1_backward(1.0, cache.penalty)
    dx_hat, _ = ref.mse_backward(1.0, cache.mse)
    df_dec, _, db_dec_out = ref.decode_backward(dx_hat, cache.dec)
    _, dW_enc_dec, db_enc_dec, db_dec_in_dec = ref.encode_relu_backward(df_dec, cache.enc)
    _, dW_enc_pen, db_enc_pen, _ = ref.encode_relu_backward(df_pen, cache.enc)
    _, _, _, db_dec_in = ref.encode_relu_backward(df_dec + df_pen, cache.enc)
    both = "f feeds both the decoder and the L1 penalty, so df = df_decoder + df_penalty"
    no_pen, no_dec = f"misses the penalty's gradient: {both}", f"misses the decoder's gradient: {both}"
    t.expect("dW_enc", got["W_enc"], want["W_enc"], [Wrong(dW_enc_dec, no_pen), Wrong(dW_enc_pen, no_dec)])
    t.expect("db_enc", got["b_enc"], want["b_enc"], [Wrong(db_enc_dec, no_pen), Wrong(db_enc_pen, no_dec)])
    t.expect("dW_dec", got["W_dec"], want["W_dec"])
    t.expect("db_dec", got["b_dec"], want["b_dec"], [
        Wrong(db_dec_out, "is only the decoder's part: b_dec is also subtracted before encoding, so add the "
                          "encoder's db_dec (the 4th value of encode_backward)"),
        Wrong(db_dec_in, "is only the encoder's part: b_dec is also added after decoding, so add decode_backward's "
                         "db_dec"),
        Wrong(db_dec_out + db_dec_in_dec, no_pen)])
    t.gradcheck(lambda: check_gradients(lambda: ref.forward(params, x, cfg)[0].loss, params, got, 1.0,
                                        rng=np.random.default_rng(0)))


@exercise("02.10")
def project_decoder_grad(t):
    W_dec = t.rng.standard_normal((D_SAE, D_IN))
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    dW_dec = t.rng.standard_normal((D_SAE, D_IN))
    t.inputs = shapes(dict(W_dec=W_dec, dW_dec=dW_dec))
    mine_W, mine_dW = W_dec.copy(), dW_dec.copy()
    returned = t.call(mine_W, mine_dW, in_place=True)
    want = dW_dec.copy()
    ref.project_decoder_grad(W_dec, want)
    along = np.sum(dW_dec * W_dec, axis=1, keepdims=True) * W_dec
    if not np.array_equal(mine_W, W_dec):
        t.problems.append("W_dec was changed: only dW_dec changes here")
    if returned is not None and np.array_equal(mine_dW, dW_dec):
        t.problems.append("returned a new array and left dW_dec as it was: change dW_dec in place (dW_dec -= ...)")
        return
    t.expect("dW_dec after the call", mine_dW, want, [
        Wrong(dW_dec, "is unchanged: the projection was skipped, or written as `dW_dec = dW_dec - ...`, which makes "
                      "a new array and leaves the caller's as it was (write dW_dec -= ...)"),
        Wrong(dW_dec + along, "adds the component along the row; subtract it"),
        Wrong(dW_dec - np.sum(dW_dec * W_dec, axis=0, keepdims=True) * W_dec,
              "projects along columns: the dictionary directions are the ROWS of W_dec [d_sae, d_in] (sum over "
              "axis 1, keepdims=True)"),
        Wrong(dW_dec - along / np.sum(W_dec * W_dec), "divides by the squared norm of the whole matrix; the rows are "
                                                      "unit vectors already")],
             axes="d_sae, d_in")


@exercise("02.11")
def normalise_decoder(t):
    W_dec = 2.0 * t.rng.standard_normal((D_SAE, D_IN))
    t.inputs = shapes(dict(W_dec=W_dec))
    mine = W_dec.copy()
    returned = t.call(mine, in_place=True)
    if returned is not None and np.array_equal(mine, W_dec):
        t.problems.append("returned a new array and left W_dec as it was: change W_dec in place (W_dec /= ...)")
        return
    norms = np.linalg.norm(W_dec, axis=1, keepdims=True)
    t.expect("W_dec after the call", mine, W_dec / norms, [
        Wrong(W_dec, "is unchanged: `W_dec = W_dec / ...` makes a new array; divide in place (W_dec /= ...)"),
        Wrong(W_dec / np.linalg.norm(W_dec, axis=0, keepdims=True),
              "normalises the columns: the dictionary directions are the ROWS of W_dec [d_sae, d_in] (axis=1)"),
        Wrong(W_dec / norms**2, "divides by the squared norm: divide by the norm, the square root of the sum of "
                                "squares"),
        Wrong(W_dec / np.linalg.norm(W_dec), "divides by the norm of the whole matrix; each row by its own")],
        axes="d_sae, d_in")


class _Recorder:
    """A Generator that remembers the probabilities `choice` was given (everything else passes through)."""

    def __init__(self, rng):
        self.rng, self.p = rng, None

    def choice(self, *args, **kwargs):
        self.p = kwargs.get("p", args[3] if len(args) > 3 else None)
        return self.rng.choice(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.rng, name)


def _resample_recipe(t):
    """Part 1: which entries change, to what, and Adam's moments."""
    cfg = ref.SAEConfig(d_in=6, d_sae=10, batch_size=16, dtype="float64", l1_coefficient=1e-2)
    params = ref.init(cfg, t.rng)
    opt = Adam(params)
    opt.step(params, {k: t.rng.standard_normal(v.shape) for k, v in params.items()})  # moments nonzero everywhere
    before, m_before = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in opt.m.items()}
    dead = np.zeros(10, dtype=bool)
    dead[[1, 3, 5]] = True  # each < d_in too, so an Adam reset along the wrong axis of W_enc resets wrong entries
    alive = ~dead
    inputs = t.rng.standard_normal((40, 6)) * t.rng.uniform(0.2, 3.0, (40, 1))
    t.inputs = (f"W_enc [6, 10], 3 dead latents (1, 3, 5), inputs [40, 6], resample_encoder_scale "
                f"{cfg.resample_encoder_scale}")
    rng = _Recorder(np.random.default_rng(1))
    idx = t.call(params, opt, dead, inputs, cfg, rng, in_place=True)
    if idx is None or not np.array_equal(np.asarray(idx), [1, 3, 5]):
        t.problems.append(f"returned {idx!r}; it returns the indices of the resampled latents, np.flatnonzero(dead)")
    for k, sel in (("W_dec", np.s_[alive]), ("b_enc", np.s_[alive]), ("W_enc", np.s_[:, alive]), ("b_dec", np.s_[:])):
        if not np.array_equal(params[k][sel], before[k][sel]):
            t.problems.append(f"{k} changed outside the dead latents: only they are resampled" +
                              (" (W_enc's latents are its COLUMNS)" if k == "W_enc" else ""))
    new = params["W_dec"][dead]
    units = inputs / np.linalg.norm(inputs, axis=1, keepdims=True)
    t.expect("the new decoder rows' norms", np.linalg.norm(new, axis=1), np.ones(3))
    if not np.all(np.abs(units @ new.T - 1).min(axis=0) < 1e-9):
        t.problems.append("a new decoder row is not one of the inputs normalised to unit length")
    enc = params["W_enc"][:, dead]
    scale = cfg.resample_encoder_scale
    target = scale * np.linalg.norm(before["W_enc"][:, alive], axis=0).mean()
    t.expect("the new encoder columns' norms", np.linalg.norm(enc, axis=0), np.full(3, target), [
        Wrong(np.full(3, scale * np.linalg.norm(before["W_enc"], axis=0).mean()),
              "uses the mean norm of all the latents; the recipe takes the ALIVE latents' mean encoder-column norm"),
        Wrong(np.ones(3), "are 1: scale the unit vector by resample_encoder_scale x the mean encoder-column norm of "
                          "the alive latents")],
        [Factor(1 / scale, "1 / resample_encoder_scale", "multiply by cfg.resample_encoder_scale")])
    cos = np.sum(enc.T * new, axis=1) / np.maximum(np.linalg.norm(enc, axis=0) * np.linalg.norm(new, axis=1), 1e-30)
    if not np.all(cos > 1 - 1e-9):
        t.problems.append("a resampled latent's encoder column must point along its new decoder row (W_enc[:, j] is "
                          "that unit vector times the scale)")
    if np.any(params["b_enc"][dead] != 0):
        t.problems.append("b_enc of a resampled latent must be 0")
    for k, axis in (("W_dec", 0), ("W_enc", 1), ("b_enc", 0)):
        d_sel = np.s_[:, dead] if axis else np.s_[dead]
        a_sel = np.s_[:, alive] if axis else np.s_[alive]
        if np.any(opt.m[k][d_sel] != 0) or np.any(opt.v[k][d_sel] != 0):
            t.problems.append(f"Adam's moments of the resampled entries of {k} are not reset: "
                              f"opt.reset({k!r}, indices, axis={axis})")
        elif not np.array_equal(opt.m[k][a_sel], m_before[k][a_sel]):
            t.problems.append(f"Adam's moments of alive latents of {k} were reset too: reset along axis={axis}")
    if rng.p is not None:
        loss = ref.per_input_loss(before, inputs, cfg)
        t.expect("the probabilities given to rng.choice", rng.p, loss**2 / np.sum(loss**2), [
            Wrong(loss / loss.sum(), "are proportional to the loss; the recipe weights each input by its loss SQUARED"),
            Wrong(np.full(len(loss), 1 / len(loss)), "are uniform; weight each input by the square of its loss")])


def _resample_draws(t):
    """Part 2: many draws from three inputs with losses 1 : 2 : 4 (and one all-zero input, never usable)."""
    d_in, n_dead = 4, 300
    cfg = ref.SAEConfig(d_in=d_in, d_sae=n_dead + 1, l1_coefficient=0.0, dtype="float64", batch_size=8)
    params = ref.init(cfg, np.random.default_rng(2))
    params["b_enc"][:] = -1e3  # every latent off: x_hat = b_dec, so each input's loss is mean((x - b_dec)^2)
    params["b_dec"][:] = 3.0  # the all-zero input has the largest loss (9): forgetting it would pick it most
    u = np.linalg.qr(np.random.default_rng(3).standard_normal((d_in, d_in)))[0][:3]  # three orthonormal directions
    inputs = np.concatenate([3.0 + np.sqrt(d_in * np.array([1.0, 2.0, 4.0]))[:, None] * u, np.zeros((1, d_in))])
    dead = np.ones(n_dead + 1, dtype=bool)
    dead[0] = False
    t.call(params, Adam(params), dead, inputs, cfg, np.random.default_rng(4), in_place=True)
    rows = params["W_dec"][dead]
    if not np.all(np.isfinite(rows)) or np.any(np.linalg.norm(rows, axis=1) < 0.5):
        t.problems.append("a latent was given the all-zero input, which has no direction: give such inputs weight 0")
        return
    units = inputs[:3] / np.linalg.norm(inputs[:3], axis=1, keepdims=True)
    freq = np.bincount(np.argmax(rows @ units.T, axis=1), minlength=3) / n_dead
    for name, w in (("the loss squared", np.array([1.0, 4.0, 16.0])), ("the loss", np.array([1.0, 2.0, 4.0])),
                    ("nothing (uniform)", np.ones(3))):
        if np.abs(freq - w / w.sum()).max() < 0.09:
            if name != "the loss squared":
                t.problems.append(f"300 draws from inputs with losses 1 : 2 : 4 came out {np.round(freq, 2)}, as if "
                                  f"weighted by {name}; the recipe weights by the loss squared (1 : 4 : 16)")
            return
    t.problems.append(f"300 draws from inputs with losses 1 : 2 : 4 came out {np.round(freq, 2)}; weighted by the loss "
                      f"squared they would be near {np.round(np.array([1, 4, 16]) / 21, 2)}")


def _resample_distinct(t):
    """Part 3: as many dead latents as usable inputs: each input is drawn once (without replacement), so no two
    latents restart on the same direction."""
    cfg = ref.SAEConfig(d_in=5, d_sae=6, l1_coefficient=0.0, dtype="float64", batch_size=8)
    params = ref.init(cfg, np.random.default_rng(5))
    inputs = np.eye(5) * np.arange(1.0, 6.0)[:, None]  # five orthogonal inputs of different losses
    dead = np.ones(6, dtype=bool)
    dead[0] = False
    t.call(params, Adam(params), dead, inputs, cfg, np.random.default_rng(6), in_place=True)
    picked = np.argmax(np.abs(params["W_dec"][dead]), axis=1)  # which input each new row is
    if len(set(picked.tolist())) < 5:
        t.problems.append(f"5 dead latents and 5 inputs: the new decoder rows are inputs {sorted(picked.tolist())}, "
                          "one input twice; draw without replacement while there are enough usable inputs "
                          "(rng.choice(..., replace=False))")


@exercise("02.12")
def resample_dead(t):
    _resample_recipe(t)
    if not t.problems:
        _resample_draws(t)
    if not t.problems:
        _resample_distinct(t)
