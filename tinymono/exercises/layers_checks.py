"""The tutor's checks for lesson 04: the transformer's backwards (tinymono/layers.py) against the library's.

Leading axes [3, 4] (12 rows) before the layer's own axes, and sizes that differ from each other, so that a
transpose, a factor such as the number of rows, or a swapped axis is recognisable.
"""
from __future__ import annotations

import math

import numpy as np

from tinymono import layers as ref
from tinymono.exercises.tutor import Factor, Wrong, exercise, shapes
from tinymono.gradcheck import check_layer

__tracebackhide__ = True  # pytest shows the test line and the tutor's message, not these frames

LEAD = (3, 4)
ROWS = 12
BUDGET = 1e-6  # the lesson's budget for its layers


def _rows(what):
    return Factor(ROWS, "the number of rows (3 x 4 leading positions)", what)


@exercise("04.1")
def linear_backward(t):
    x, W, b = t.rng.standard_normal((*LEAD, 5)), t.rng.standard_normal((5, 6)), t.rng.standard_normal(6)
    dout = t.rng.standard_normal((*LEAD, 6))
    t.inputs = shapes(dict(dout=dout, x=x, W=W, b=b))
    t.expect_affine_backward(ref.linear_forward, ref.linear_backward, [x, W, b], ["x", "W", "b"], dout,
                             _rows("sum over every leading axis: each row's gradient adds up, it is not averaged"),
                             ["3, 4, I", "I, O", "O"], BUDGET)


@exercise("04.2")
def layernorm_backward(t):
    x, w, b = t.rng.standard_normal((*LEAD, 6)), t.rng.standard_normal(6), t.rng.standard_normal(6)
    dout = t.rng.standard_normal((*LEAD, 6))
    t.inputs = shapes(dict(dout=dout, x=x, w=w, b=b))
    _, cache = ref.layernorm_forward(x, w, b)
    got = t.expect_tuple(t.call(dout, cache), 3, "(dx, dw, db)")
    dx, dw, db = ref.layernorm_backward(dout, cache)
    xhat, inv_std = cache.xhat, cache.inv_std
    g = dout * w

    def mean(a):
        return a.mean(axis=-1, keepdims=True)

    def mean_over(a, axis):
        return a.mean(axis=axis, keepdims=True)

    formula = "dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))"
    t.expect("dx", got[0], dx, [
        Wrong(inv_std * g, f"misses both mean terms: {formula}. The forward subtracts the mean and divides by the std, "
                           "both functions of x: each takes a direction out of the gradient"),
        Wrong(inv_std * (g - xhat * mean(g * xhat)), f"misses the mean(g) term (the forward subtracts the mean of x): "
                                                     f"{formula}"),
        Wrong(inv_std * (g - mean(g)), f"misses the xhat * mean(g * xhat) term (the forward divides by the std, which "
                                       f"depends on x too): {formula}"),
        Wrong(inv_std * (dout - mean(dout) - xhat * mean(dout * xhat)),
              "uses dout where g = dout * w belongs: the gain w scales the gradient on its way to xhat"),
        Wrong(g - mean(g) - xhat * mean(g * xhat), "misses the factor inv_std in front"),
        *[Wrong(inv_std * (g - mean_over(g, axis) - xhat * mean_over(g * xhat, axis)),
                f"takes its means over {where}: they run over the last axis (D), one per position: "
                "mean(..., axis=-1, keepdims=True)") for axis, where in ((0, "the first axis"), (None, "every axis"))]],
        axes="3, 4, D")
    sums = _rows("sum over every leading axis")
    t.expect("dw", got[1], dw, [Wrong(db, "is db's formula: out = xhat * w + b, so dw = sum of dout * xhat")],
             [sums], axes="D")
    t.expect("db", got[2], db, factors=[sums], axes="D")
    t.gradcheck(lambda: check_layer(ref.layernorm_forward, t.function(), [x, w, b], ["x", "w", "b"],
                                    rng=np.random.default_rng(0)), BUDGET)


@exercise("04.3")
def embedding_backward(t):
    V, D = 4, 6
    ids = t.rng.integers(0, V, size=LEAD)
    ids[0, :2] = 1  # at least one repeat, for sure
    W_E = t.rng.standard_normal((V, D))
    dout = t.rng.standard_normal((*LEAD, D))
    t.inputs = shapes(dict(dout=dout, ids=ids, W_E=W_E)) + " (a vocabulary of 4: ids repeat)"
    _, cache = ref.embedding_forward(ids, W_E)
    got = t.expect_tuple(t.call(dout, cache), 2, "(None, dW_E)")
    _, dW_E = ref.embedding_backward(dout, cache)
    buffered = np.zeros((V, D))
    buffered[ids.reshape(-1)] += dout.reshape(-1, D)  # the classic bug, on purpose
    if got[0] is not None:
        t.problems.append("the first value must be None: ids are integers, they have no gradient")
    t.expect("dW_E", got[1], dW_E, [Wrong(buffered, "is wrong in the rows of ids that occur more than once: "
                                                    "`dW_E[ids] += dout` keeps only one of the repeats (NumPy buffers "
                                                    "the update); np.add.at(dW_E, ids, dout) adds every one")],
             axes="V, D")
    t.gradcheck(lambda: check_layer(ref.embedding_forward, t.function(), [ids, W_E], ["ids", "W_E"],
                                    rng=np.random.default_rng(0)), BUDGET)


@exercise("04.4")
def cross_entropy_backward(t):
    V, dloss = 7, 0.7
    logits, targets = 2 * t.rng.standard_normal((*LEAD, V)), t.rng.integers(0, V, size=LEAD)
    t.inputs = shapes(dict(dloss=dloss, logits=logits, targets=targets))
    _, cache = ref.cross_entropy_forward(logits, targets)
    got = t.expect_tuple(t.call(dloss, cache), 2, "(dlogits, None)")
    (want, _) = ref.cross_entropy_backward(dloss, cache)
    onehot = np.eye(V)[targets]
    probs = cache.probs.reshape(logits.shape)
    t.expect("dlogits", got[0], want, [
        Wrong(dloss * probs / ROWS, "misses the -1 at each token's target: d loss / d logits = softmax - "
                                    "onehot(target)"),
        Wrong(dloss * (onehot - probs) / ROWS, "has the wrong sign: d loss / d logits = softmax - onehot(target)")],
        [Factor(1 / dloss, "1 / dloss", "multiply by dloss, the gradient arriving from above (the chain rule)"),
         Factor(ROWS, "n, the number of tokens", "the loss is the mean over the tokens, so divide by n once"),
         Factor(LEAD[1], "T, the sequence length", "the loss is the mean over all B x T tokens, not over the batch "
                                                   "alone: divide by n = B x T")],
        axes="3, 4, V: the logits' shape")
    if got[1] is not None:
        t.problems.append("the second value must be None: targets are integers, they have no gradient")
    t.gradcheck(lambda: check_layer(ref.cross_entropy_forward, t.function(), [logits, targets],
                                    ["logits", "targets"], rng=np.random.default_rng(0)), BUDGET)


NAMES = ["x", "W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O"]


def attention_grads(dout, c, rowsum=True, scale=True, x_from="qkv", swap_qk=False, transpose_v=True):
    """attention_backward with switches that reproduce the usual mistakes (all on: the right answer)."""
    E = c.q.shape[-1]
    db_O = dout.sum(axis=(0, 1))
    dW_O = np.einsum("bhte,btd->hed", c.z, dout)
    dz = np.einsum("btd,hed->bhte", dout, c.W_O)
    dpattern = dz @ c.v.transpose(0, 1, 3, 2)
    dv = (c.pattern.transpose(0, 1, 3, 2) if transpose_v else c.pattern) @ dz
    dscores = c.pattern * (dpattern - ((dpattern * c.pattern).sum(axis=-1, keepdims=True) if rowsum else 0))
    dscores = dscores / math.sqrt(E) if scale else dscores
    dq, dk = dscores @ c.k, dscores.transpose(0, 1, 3, 2) @ c.q
    if swap_qk:
        dq, dk = dscores.transpose(0, 1, 3, 2) @ c.k, dscores @ c.q
    out, dx = [], np.zeros_like(c.x)
    for name, d, W in (("q", dq, c.W_Q), ("k", dk, c.W_K), ("v", dv, c.W_V)):
        out += [np.einsum("btd,bhte->hde", c.x, d), d.sum(axis=(0, 2))]
        if name in x_from:
            dx = dx + np.einsum("bhte,hde->btd", d, W)
    return [dx, *out, dW_O, db_O]


@exercise("04.5")
def attention_backward(t):
    B, T, D, H, E = 3, 4, 6, 2, 5
    x = t.rng.standard_normal((B, T, D))
    args = [x] + [a for _ in range(3) for a in (t.rng.standard_normal((H, D, E)), t.rng.standard_normal((H, E)))]
    args += [t.rng.standard_normal((H, E, D)) / np.sqrt(E), t.rng.standard_normal(D)]
    dout = t.rng.standard_normal((B, T, D))
    t.inputs = shapes(dict(dout=dout, x=x, W_Q=args[1], W_O=args[7])) + f" (H={H} heads of E={E})"
    _, cache = ref.attention_forward(*args)
    got = t.expect_tuple(t.call(dout, cache), 9, "(" + ", ".join("d" + n for n in NAMES) + ")")
    want = ref.attention_backward(dout, cache)
    mistakes = [
        (attention_grads(dout, cache, rowsum=False), "misses the row-sum term of the softmax's backward: dscores = "
                                                     "pattern * (dpattern - rowsum(pattern * dpattern))"),
        (attention_grads(dout, cache, scale=False), "misses the 1/sqrt(E) of the scores (scores = q k^T / sqrt(E)): "
                                                    "dscores carries it too"),
        (attention_grads(dout, cache, swap_qk=True), "swaps the gradients of q and k: scores = q k^T, so dq = dscores "
                                                     "@ k and dk = dscores^T @ q"),
        (attention_grads(dout, cache, transpose_v=False), "misses a transpose: z = pattern @ v, so dv = "
                                                          "pattern^T @ dz"),
        *[(attention_grads(dout, cache, x_from=p), f"adds only the gradient through {p}: x feeds q, k and v, so dx is "
                                                  f"the sum of the three") for p in ("q", "k", "v")]]
    for i, name in enumerate(NAMES):
        wrong = [Wrong(m[i], hint) for m, hint in mistakes]
        t.expect("d" + name, got[i], want[i], wrong,
                 [Factor(B * T, "B x T, the number of positions", "sum over the batch and the positions")],
                 axes="the shape of " + name)
    t.gradcheck(lambda: {k: v for k, v in check_layer(ref.attention_forward, t.function(), args, NAMES,
                                                      rng=np.random.default_rng(0)).items() if k != "b_K"}, BUDGET)
    if t.table and t.table.startswith("your gradients"):
        t.table += ("\n(b_K is not in the table: its gradient is exactly 0, since the softmax ignores a shift of a "
                    "query's every score; db_K is compared with 0 above)")
