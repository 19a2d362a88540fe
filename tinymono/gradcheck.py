"""Checking hand-written gradients against central differences.

A backward pass is easy to get subtly wrong (a missing transpose, a gradient summed over the wrong axis,
a parameter used twice whose two gradients were not added). The test is mechanical: pick a random
`dout`, define the scalar L = sum(forward(inputs) * dout), and compare each analytic gradient entry
with a central difference. The two-point quotient (L(x + h e_i) - L(x - h e_i)) / 2h has an O(h^2)
truncation error and an O(round-off / h) cancellation error, which together stay near 1e-7 at best:
too coarse to tell a correct float64 backward from one that is off by a hair. So we use the four-point
central stencil

    dL/dx_i  ~  (8 (L(x + h) - L(x - h)) - (L(x + 2h) - L(x - 2h))) / 12h,

whose truncation error is O(h^4): with h = 1e-3 both errors are near 1e-12, and a correct backward
agrees to ~1e-9 or better while a wrong one is off by O(1). Near a kink (ReLU at 0, |x| at 0, a top-k
tie) any difference quotient straddles the kink and disagrees legitimately, so tests draw inputs
more than 2h = 0.002 away from kinks.

The relative error of an entry is |a - n| / max(|a|, |n|, floor), where the floor is the larger of
1e-3 times the largest numeric entry among those checked (all of a small tensor, a random subset of a
large one) and `atol` (1e-6): entries a thousand times smaller than the largest, or gradients that are
exactly zero in theory (a key bias in attention, whose shift every softmax row ignores), are judged
against the floor, since their own size is within the round-off of the difference quotient. Tests use
inputs and outputs of order 1, where this floor sits far above round-off and far below any real mistake.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from tinymono.validate import check_array, check_int, check_number


def numerical_gradient(loss_fn: Callable[[], float], x: np.ndarray, entries, eps=1e-3):
    """Four-point central differences of the scalar `loss_fn()` with respect to the given flat `entries`
    of `x`, which `loss_fn` must read (x is perturbed in place and restored). Returns [len(entries)]."""
    flat = x.reshape(-1)  # a view: writing to it perturbs x
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so it can be perturbed in place")
    out = np.empty(len(entries), dtype=np.float64)

    def loss_at(i, value):
        flat[i] = value
        return loss_fn()

    for j, i in enumerate(entries):
        old = flat[i]
        near = loss_at(i, old + eps) - loss_at(i, old - eps)
        far = loss_at(i, old + 2 * eps) - loss_at(i, old - 2 * eps)
        flat[i] = old
        out[j] = (8 * near - far) / (12 * eps)
    return out


def relative_error(analytic, numeric, atol=1e-6):
    """Max over entries of |a - n| / max(|a|, |n|, 1e-3 * max|n|, atol)."""
    analytic = check_array("analytic", analytic, finite=False, nonempty=False).astype(np.float64).reshape(-1)
    numeric = check_array("numeric", numeric, finite=False, nonempty=False).astype(np.float64).reshape(-1)
    if analytic.shape != numeric.shape:  # a size-1 side would broadcast into a comparison of nothing
        raise ValueError(f"analytic and numeric must have one size, got {analytic.size} and {numeric.size}")
    scale = np.abs(numeric).max(initial=0.0)
    floor = max(1e-3 * scale, atol)
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return float((np.abs(analytic - numeric) / denom).max(initial=0.0))


def _pick_entries(size, max_entries, rng):
    if size <= max_entries:
        return np.arange(size)
    return rng.choice(size, size=max_entries, replace=False)


def check_gradients(
    f: Callable[[], object],
    inputs: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    dout,
    *,
    eps=1e-3,
    max_entries=64,
    rng=None,
):
    """Compare analytic `grads` with central differences of L = sum(f() * dout).

    f: a function of no arguments that reads the arrays in `inputs` (they are perturbed in place) and
       returns the output (array or scalar). inputs: name -> float64 array; grads: name -> analytic
       gradient of L, same shape. Tensors with more than `max_entries` entries are checked on a random
       subset of that many. Returns {name: max relative error}."""
    rng = np.random.default_rng(0) if rng is None else rng
    check_number("eps", eps, gt=0)
    check_int("max_entries", max_entries, lo=1)
    errors = {}
    for name, x in inputs.items():
        if x.dtype != np.float64:
            raise TypeError(f"gradient checks need float64 inputs; {name} is {x.dtype}")
        g = np.asarray(grads[name])
        if g.shape != x.shape:
            raise ValueError(f"gradient of {name} has shape {g.shape}, but {name} has shape {x.shape}")
        entries = _pick_entries(x.size, max_entries, rng)
        numeric = numerical_gradient(lambda: float(np.sum(f() * dout)), x, entries, eps)
        errors[name] = relative_error(g.reshape(-1)[entries], numeric)
    return errors


def check_layer(forward, backward, args, names=None, *, rng=None, eps=1e-3, max_entries=64, **kwargs):
    """Check a layer written as `out, cache = forward(*args, **kwargs)` and
    `grads = backward(dout, cache)` (one gradient per arg, None for non-float args such as ids).

    Draws a random dout, runs the backward once, and compares every argument's gradient (None: not
    checked; an argument with a gradient must be float64) with central differences. Returns {name: max
    relative error}; names default to arg0, arg1, ..."""
    rng = np.random.default_rng(0) if rng is None else rng
    names = names or [f"arg{i}" for i in range(len(args))]
    out, cache = forward(*args, **kwargs)
    dout = rng.standard_normal(np.shape(out))
    grads = backward(dout, cache)
    if len(grads) != len(args):
        raise ValueError(f"backward returned {len(grads)} gradients for {len(args)} forward arguments")
    inputs = {n: a for n, a, g in zip(names, args, grads) if g is not None}
    analytic = {n: g for n, g in zip(names, grads) if g is not None}
    return check_gradients(
        lambda: forward(*args, **kwargs)[0], inputs, analytic, dout, eps=eps, max_entries=max_entries, rng=rng
    )


def format_table(errors: Mapping[str, float], budget=1e-7, title="gradient check"):
    """A readable table of {name: relative error}, each marked ok or FAIL against the budget."""
    width = max([len(n) for n in errors] + [9])
    lines = [f"{title} (central differences, float64; budget {budget:.0e})",
             f"  {'parameter':<{width}}  max rel err"]
    for name, err in errors.items():
        lines.append(f"  {name:<{width}}  {err:10.2e}  {'ok' if err <= budget else 'FAIL'}")
    return "\n".join(lines)
