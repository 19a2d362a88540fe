"""The tutor's checks for lesson 01: the toy model of superposition (tinymono/toy.py) against the library's.

Sizes inst 3, hidden 4, feats 5, batch 6 (all different, so a factor or a swapped axis is recognisable);
pre-activations stay 0.05 away from the ReLU's kink; importances differ by feature and by instance.
"""
from __future__ import annotations

import numpy as np

from tinymono import toy as ref
from tinymono.exercises.tutor import Factor, Wrong, exercise, shapes
from tinymono.gradcheck import check_gradients

__tracebackhide__ = True  # pytest shows the test line and the tutor's message, not these frames

INST, HIDDEN, FEATS, BATCH = 3, 4, 5, 6


def config(model="relu"):
    importance = 0.9 ** np.arange(FEATS) * np.array([[1.0], [0.5], [2.0]])  # [inst, feats]
    return ref.ToyConfig(n_features=FEATS, d_hidden=HIDDEN, n_inst=INST, importance=importance, model=model)


def setup(rng):
    """params, x [inst, batch, feats] in [0, 1] with zeros (as the toy data), |pre| >= 0.05 everywhere."""
    while True:
        params = {"W": 0.6 * rng.standard_normal((INST, HIDDEN, FEATS)),
                  "b_final": 0.3 * rng.standard_normal((INST, FEATS))}
        x = rng.uniform(0, 1, (INST, BATCH, FEATS)) * (rng.random((INST, BATCH, FEATS)) < 0.6)
        h = np.einsum("ihf,ibf->ibh", params["W"], x)
        pre = np.einsum("ihf,ibh->ibf", params["W"], h) + params["b_final"][:, None, :]
        if np.abs(pre).min() > 0.05 and 0.2 < np.mean(pre > 0) < 0.8:
            return params, x


def _batch(what):
    return Factor(BATCH, "the batch size", what)


@exercise("01.1")
def forward(t):
    params, x = setup(t.rng)
    t.inputs = shapes(dict(W=params["W"], b_final=params["b_final"], x=x))
    for model in ("relu", "linear"):
        cfg = config(model)
        out, cache = t.expect_tuple(t.call(params, x, cfg), 2, "(out, cache)")
        want, want_cache = ref.forward(params, x, cfg)
        h = np.einsum("ihf,ibf->ibh", params["W"], x)
        no_bias = np.einsum("ihf,ibh->ibf", params["W"], h)  # W^T h
        pre = no_bias + params["b_final"][:, None, :]
        if model == "relu":
            wrong = [Wrong(np.maximum(no_bias, 0), "misses b_final"),
                     Wrong(pre, "has negative entries: the ReLU is missing")]
        else:
            wrong = [Wrong(no_bias, "misses b_final"),
                     Wrong(np.maximum(pre, 0), "applies the ReLU, but cfg.model is 'linear': then out = pre")]
        if t.expect(f"out ({model} model)", out, want, wrong, axes="inst, batch, feats"):
            t.expect_cache(cache, want_cache, "(x, h, active), active = pre > 0 (all True for the linear model)")
        if t.problems:
            return


@exercise("01.2")
def loss(t):
    cfg = config()
    out, x = t.rng.standard_normal((INST, BATCH, FEATS)), t.rng.uniform(0, 1, (INST, BATCH, FEATS))
    t.inputs = shapes(dict(out=out, x=x))
    per_inst, dout = t.expect_tuple(t.call(out, x, cfg), 2, "(per_inst, dout)")
    want, want_dout = ref.loss(out, x, cfg)
    plain = ((out - x) ** 2).sum(axis=2).mean(axis=1)
    no_imp = "misses the importance: each feature's squared error is weighted by I_f = cfg.importances()[inst, f]"
    t.expect("per_inst", per_inst, want, [Wrong(plain, no_imp)],
             [_batch("the loss is a mean over the batch"),
              Factor(FEATS, "the number of features", "the loss sums over the features; only the batch is averaged")],
             axes="inst")
    t.expect("dout", dout, want_dout, [Wrong(2 * (out - x) / BATCH, no_imp)],
             [_batch("the loss is a mean over the batch, so its gradient carries 1 / batch"),
              Factor(FEATS, "the number of features", "the loss sums over the features")],
             axes="inst, batch, feats")


@exercise("01.3")
def backward(t):
    cfg = config()
    params, x = setup(t.rng)
    t.inputs = shapes(dict(W=params["W"], b_final=params["b_final"], x=x))
    out, cache = ref.forward(params, x, cfg)
    _, dout = ref.loss(out, x, cfg)
    got = t.call(params, cache, cfg, dout)
    if not isinstance(got, dict) or set(got) != {"W", "b_final"}:
        t.problems.append(f"must return a dict with the keys 'W' and 'b_final'; yours is {type(got).__name__}"
                          + (f" with keys {sorted(got)}" if isinstance(got, dict) else ""))
        t.finish()
    want = ref.backward(params, cache, cfg, dout)
    _, h, active = cache
    W = params["W"]

    def parts(dpre):
        dec = np.einsum("ibh,ibf->ihf", h, dpre)
        enc = np.einsum("ibh,ibf->ihf", np.einsum("ihf,ibf->ibh", W, dpre), x)
        return dec, enc

    dec, enc = parts(np.where(active, dout, 0.0))
    no_mask = "misses the ReLU's backward: the gradient passes only where the pre-activation was > 0 (active)"
    t.expect("dW", got["W"], want["W"], [
        Wrong(dec, "is only the decoder's term (from pre = W^T h + b): W is also used in h = W x, so add that term"),
        Wrong(enc, "is only the encoder's term (from h = W x): W is also used in pre = W^T h + b, so add that term"),
        Wrong(sum(parts(dout)), no_mask)], axes="inst, hidden, feats")
    t.expect("db_final", got["b_final"], want["b_final"], [Wrong(dout.sum(axis=1), no_mask)],
             [_batch("sum over the batch: the loss's 1 / batch is already inside dout")], axes="inst, feats")
    t.gradcheck(lambda: check_gradients(lambda: ref.loss(ref.forward(params, x, cfg)[0], x, cfg)[0].sum(),
                                        params, got, 1.0, rng=np.random.default_rng(0)))
