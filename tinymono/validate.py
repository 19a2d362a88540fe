"""Checks for the public functions' arguments: one line at the top of a function, one clear error.

A wrong shape, dtype or value passed to NumPy code rarely fails where the mistake is: a [B] vector where
[B, d] was meant broadcasts into a wrong number, a NaN hides behind a ReLU (NaN > 0 is False), an
integer array goes through GELU as truncated integers, a negative index quietly reads the last row.
These helpers turn each of those into an error that names the argument, says what it got and what was
expected, before any work is done:

    x = check_array("x", x, ("B", d_in))            # [B, d_in] floats, finite, not empty
    check_floats(x=x, W=W)                          # floating ndarrays (a layer's per-step check)
    ids = check_ids("targets", targets, V)          # integers in [0, V)
    unit = check_int("unit", unit, 0, d_sae - 1)    # a Python or NumPy integer in 0..d_sae-1
    t = check_number("temperature", t, lo=0)        # a finite real number >= 0
    check_config_ints(self, ("d_in", "d_sae"))      # a config's integer fields, in its __post_init__

A wrong type or dtype raises InputTypeError (a TypeError, and also a ValueError, so code that catches
bad input as ValueError keeps working); a wrong shape, value or range raises ValueError.

Cost: shape, dtype and range checks are O(1) (a range check reads min and max); finiteness is one
float64 sum (a NaN or inf anywhere makes the sum non-finite; only then is the array searched for the
culprit), so no temporary array is made. Functions that run once per training step check shapes and
dtypes only; finiteness is checked where data enters from outside (and the training loop's own guard
watches the loss).
"""
from __future__ import annotations

import numbers

import numpy as np

FLOAT, INT, REAL, BOOL = "f", "iu", "fiub", "b"  # the dtype kinds a function accepts
KIND_NAMES = {FLOAT: "floats", INT: "integers", REAL: "real numbers (float, int or bool)", BOOL: "booleans"}


class InputTypeError(TypeError, ValueError):
    """An argument of the wrong type or dtype."""


def check_array(name, x, shape=None, *, ndim=None, kinds=FLOAT, finite=True, nonempty=True):
    """x as an ndarray (not copied when it is one), or an error naming `name`.

    shape: a tuple whose entries are ints (that size exactly) or strings (any size; the string names the
    axis in the message), e.g. ("B", 16). ndim: an int or a tuple of allowed ints (when shape is None).
    kinds: the allowed dtype kinds: FLOAT, INT, REAL or BOOL.
    finite: refuse NaN and inf. nonempty: refuse an array with no elements."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:  # a ragged list, say
        raise InputTypeError(f"{name} must be an array, got {type(x).__name__} that NumPy cannot read ({e})") from None
    if a.dtype.kind not in kinds:
        raise InputTypeError(f"{name} must be {KIND_NAMES.get(kinds, kinds)}, got dtype {a.dtype} (shape {a.shape})")
    if shape is not None:
        if a.ndim != len(shape) or any(isinstance(s, int) and s != n for s, n in zip(shape, a.shape)):
            want = "[" + ", ".join(str(s) for s in shape) + "]"
            raise ValueError(f"{name} must have shape {want}, got shape {a.shape}")
    elif ndim is not None and a.ndim not in np.atleast_1d(ndim):
        raise ValueError(f"{name} must have {' or '.join(map(str, np.atleast_1d(ndim)))} dimensions, "
                         f"got shape {a.shape}")
    if nonempty and a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}): there is nothing to compute on")
    if finite:
        check_finite(name, a)
    return a


def check_floats(**arrays):
    """Each keyword argument must be a floating-point ndarray (any shape; values not read): the layers'
    check, cheap enough for every call of a training step. E.g. check_floats(x=x, W=W, b=b)."""
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
            got = f"dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
            raise InputTypeError(f"{name} must be a floating-point NumPy array (float32 or float64), got {got}"
                                 + (": cast it, e.g. x.astype(np.float32)" if isinstance(a, np.ndarray) else ""))


def check_finite(name, a):
    """Raise ValueError if the array `a` holds a NaN or an inf, naming the first one's index."""
    if a.dtype.kind != "f" or a.size == 0:
        return
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf and overflow are what this looks for
        total = np.sum(a, dtype=np.float64)
    if not np.isfinite(total):
        bad = np.argwhere(~np.isfinite(a))
        if len(bad):  # else the sum overflowed: large, but finite
            where = tuple(int(i) for i in bad[0])
            raise ValueError(f"{name} holds NaN or inf ({len(bad)} entries; the first at index {where}: "
                             f"{a[where]})")


def check_ids(name, ids, n):
    """An integer array with every value in [0, n) (token ids, labels, targets); may be empty."""
    if not isinstance(ids, np.ndarray) and np.size(ids) == 0:
        ids = np.zeros(np.shape(ids), np.int64)  # [] holds no ids (NumPy would call it float64)
    a = check_array(name, ids, kinds=INT, finite=False, nonempty=False)
    if a.size:
        lo, hi = a.min(), a.max()
        if lo < 0 or hi >= n:
            raise ValueError(f"{name} must lie in [0, {n}), got values from {lo} to {hi}")
    return a


def check_int(name, v, lo=None, hi=None):
    """v as an int: a Python or NumPy integer (not a bool, not a float) in lo..hi (inclusive bounds)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
        raise InputTypeError(f"{name} must be an integer, got {v!r} ({type(v).__name__})")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must be an integer in {'' if lo is None else lo}..{'' if hi is None else hi}, "
                         f"got {v}")
    return int(v)


def check_number(name, v, lo=None, hi=None, *, gt=None):
    """v as a float: a finite real number (not a bool) with lo <= v <= hi and v > gt (each when given)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.integer, np.floating)):
        raise InputTypeError(f"{name} must be a real number, got {v!r} ({type(v).__name__})")
    v = float(v)
    if not np.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi) or (gt is not None and v <= gt):
        bounds = [f"{op} {b}" for op, b in ((">=", lo), ("<=", hi), (">", gt)) if b is not None]
        raise ValueError(f"{name} must be a finite number{' ' if bounds else ''}{' and '.join(bounds)}, got {v}")
    return v


def check_rng(name, rng):
    """A np.random.Generator (all randomness flows from one: same seed, same numbers)."""
    if not isinstance(rng, np.random.Generator):
        raise InputTypeError(f"{name} must be a np.random.Generator (np.random.default_rng(seed)), "
                             f"got {type(rng).__name__}")
    return rng


def check_config_ints(cfg, names, lo=1):
    """In a frozen config's __post_init__: each field in `names` must be an integer (not a bool) >= lo; it is
    stored back as a Python int, since a NumPy integer would not go into a checkpoint's JSON."""
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)) or v < lo:
            what = {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
            raise ValueError(f"{type(cfg).__name__}.{name} must be {what}, got {v!r}")
        object.__setattr__(cfg, name, int(v))
