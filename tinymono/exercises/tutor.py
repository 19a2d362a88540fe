"""The tutor: `check("02.4", module)` runs exercise 02.4's check on a learner's module and says, in words,
what is wrong.

Each check (toy_checks.py, sae_checks.py, layers_checks.py, metrics_checks.py) draws small random float64
inputs, calls the learner's function and the library's, and hands each output to `Tutor.expect`, which
names how the two differ: the shape (and whether it is a transpose), the sign, a factor such as the batch
size, or one of the mistakes a check lists as known-wrong answers for that function (layer norm's
backward without its mean terms, the L1 gradient without the batch mean, ...). A wrong gradient also
gets the project's gradient-check table: the learner's backward against central differences. The check
raises one AssertionError listing every problem, which pytest prints.

The learner's code is called with copies of the inputs, and an input it changes in place is reported (a
backward that edits its cache breaks the next call). An exception other than NotImplementedError is
re-raised as an AssertionError naming the exercise and the inputs' shapes, with the learner's traceback
above it. This module and the checks set `__tracebackhide__`, so pytest shows the test line and the message.
"""
from __future__ import annotations

import copy
import inspect
from typing import Callable, NamedTuple

import numpy as np

from tinymono.exercises import BY_ID, switch
from tinymono.gradcheck import check_layer, format_table

__tracebackhide__ = True  # pytest shows the test line and the message, not this module's frames
CHECKS: dict[str, Callable] = {}  # exercise id -> check(tutor); filled by the *_checks modules
RTOL = 1e-6  # float64 on inputs of order 1: a right answer computed another way agrees to ~1e-14


def exercise(id):
    """Decorator: register a check for exercise `id`."""
    def register(fn):
        CHECKS[id] = fn
        return fn
    return register


class Wrong(NamedTuple):
    """A known-wrong answer and the mistake that produces it."""
    value: object
    hint: str


class Factor(NamedTuple):
    """A number an answer may be off by: value, what it is ("the batch size B"), why it matters."""
    value: float
    what: str
    hint: str


def close(a, b, rtol=RTOL):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.abs(b).max(initial=0.0)), float(np.abs(a).max(initial=0.0)), 1e-3)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= rtol * np.abs(b) + 1e-9 * scale))


def _show(a, n=6):
    if np.ndim(a) == 0:
        return f"{float(a):.6g}"
    flat = np.asarray(a, dtype=np.float64).reshape(-1)
    more = f" ... ({flat.size} entries)" if flat.size > n else ""
    return np.array2string(flat[:n], precision=5, separator=", ", suppress_small=True) + more


def shapes(named):
    """'x [5, 3], W [3, 7]' for {name: value}."""
    parts = []
    for name, v in named.items():
        if isinstance(v, np.ndarray):
            parts.append(f"{name} {list(v.shape)}")
        elif np.isscalar(v):
            parts.append(f"{name} = {v!r}")
    return ", ".join(parts)


def _shape_message(got, want, axes):
    msg = f"has shape {got.shape}, expected {want.shape}" + (f" [{axes}]" if axes else "")
    if got.ndim >= 2 and got.shape == want.shape[:-2] + want.shape[-2:][::-1]:
        return msg + ": it is transposed (x.T @ dout against dout.T @ x, or W against W.T?)"
    if got.shape == want.shape[::-1] and got.ndim >= 2:
        return msg + ": its axes are in reverse order (a transpose too many or too few?)"
    if [d for d in got.shape if d != 1] == [d for d in want.shape if d != 1]:
        return msg + ": an axis of length 1 too many or too few (keepdims, or a missing reshape?)"
    if got.size == want.size:
        return msg + f": the right number of entries in the wrong shape (reshape it back to {want.shape}?)"
    if got.ndim > want.ndim:
        return msg + ": an axis too many (did a sum over that axis go missing?)"
    if got.ndim < want.ndim:
        return msg + ": an axis too few (summed over an axis that must stay, or a missing keepdims?)"
    return msg + ": check which axes you sum over and the order of the matrix product"


def diagnose(got, want, wrong=(), factors=(), axes=None):
    """None when `got` matches `want`; otherwise what is wrong with it, in a few lines."""
    want = np.asarray(want, dtype=np.float64)
    expected = "a number" if want.ndim == 0 else f"an array of shape {want.shape}"
    if got is None:
        return f"is None; expected {expected}"
    try:
        got_arr = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return f"is a {type(got).__name__}; expected {expected}"
    if want.ndim == 0 and got_arr.ndim > 0:
        return (f"is an array of shape {got_arr.shape}; expected a single number (a mean or sum over every "
                f"axis, turned into a float)")
    if got_arr.shape != want.shape:
        return _shape_message(got_arr, want, axes)
    numbers = f"\n      yours: {_show(got_arr)}\n      right: {_show(want)}"
    if not np.all(np.isfinite(got_arr)):
        bad = int(np.sum(~np.isfinite(got_arr)))
        return f"holds NaN or inf in {bad} of {got_arr.size} entries (a division by zero?)" + numbers
    if close(got_arr, want):
        return None
    for w in wrong:
        if w.value is not None and np.shape(w.value) == want.shape and close(got_arr, w.value) \
                and not close(w.value, want):
            return w.hint + numbers
    if close(got_arr, -want):
        return "is minus the right answer: a sign is flipped" + numbers
    if want.ndim >= 2 and want.shape[-1] == want.shape[-2] and close(got_arr, np.swapaxes(want, -1, -2)):
        return "is the right answer transposed" + numbers
    factors = [*factors, Factor(2.0, "the 2 of a square's derivative", "d(e^2)/de = 2e")]
    for f in factors:
        for ratio, size in ((f.value, "large"), (1.0 / f.value, "small")):
            if close(got_arr, ratio * want):
                return f"is {f.value:g} times too {size} ({f.value:g} = {f.what}): {f.hint}" + numbers
    for i, f in enumerate(factors):  # two mistakes at once, e.g. dloss ignored and the wrong mean
        for g in factors[i + 1:]:
            for sf, sg in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                if close(got_arr, f.value**sf * g.value**sg * want):
                    says = [f"{'too large' if s > 0 else 'too small'} by {h.value:g} = {h.what} ({h.hint})"
                            for s, h in ((sf, f), (sg, g))]
                    return (f"is {f.value**sf * g.value**sg:.4g} times the right answer, two factors off: "
                            f"{says[0]}, and {says[1]}" + numbers)
    if not np.any(got_arr) and np.any(want):
        return "is all zeros" + numbers
    denom = float(np.sum(want * want))
    if denom > 0:
        r = float(np.sum(got_arr * want)) / denom
        if close(got_arr, r * want):
            return f"is the right answer times {r:.4g}: a constant factor is off" + numbers
    diff = np.abs(got_arr - want)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    n_bad = int(np.sum(diff > RTOL * np.abs(want) + 1e-9 * max(np.abs(want).max(), 1e-3)))
    where = f" (worst at index {tuple(int(i) for i in worst)})" if worst else ""
    return (f"differs from the right answer in {n_bad} of {want.size} entries; largest difference "
            f"{diff.max():.3g}{where}, where the right values reach {np.abs(want).max():.3g}" + numbers)


def snapshot(obj):
    """A deep copy of the arrays in obj (tuples, NamedTuples, lists, dicts), to spot changes in place."""
    return copy.deepcopy(obj)


def _changed(before, after):
    if isinstance(before, np.ndarray):
        return not (isinstance(after, np.ndarray) and before.shape == after.shape
                    and np.array_equal(before, after, equal_nan=True))
    if isinstance(before, (tuple, list)):
        return any(_changed(b, a) for b, a in zip(before, after))
    if isinstance(before, dict):
        return any(_changed(before[k], after.get(k)) for k in before)
    return False


class Tutor:
    """One check of one exercise on one learner module: calls, comparisons, and the final verdict."""

    def __init__(self, ex, module):
        self.ex, self.module, self.problems, self.table = ex, module, [], None
        self.rng = np.random.default_rng([int(p) for p in ex.id.split(".")])  # the same inputs every run
        self.inputs = ""

    def header(self):
        where = f" on {self.inputs}" if self.inputs else ""
        return f"exercise {self.ex.id} ({self.ex.function} in {self.ex.module}.py){where}"

    def function(self, name=None):
        name = name or self.ex.function
        fn = getattr(self.module, name, None)
        if not callable(fn):
            raise AssertionError(f"{self.header()}: the module has no function {name!r} (renamed or deleted?)")
        return fn

    def call(self, *args, in_place=False, **kwargs):
        """The learner's function on copies of args; reports arguments it changed unless in_place."""
        mine = snapshot(args) if not in_place else args
        try:
            out = self.function()(*mine, **kwargs)
        except NotImplementedError:
            raise
        except Exception as e:
            raise AssertionError(f"{self.header()}: your {self.ex.function} raised {type(e).__name__}: {e}\n"
                                 "  (its traceback is above; the docstring gives every shape)") from e
        if not in_place:
            try:
                names = list(inspect.signature(self.function()).parameters)
            except (TypeError, ValueError):
                names = []
            for i, (before, after) in enumerate(zip(args, mine)):
                if _changed(before, after):
                    name = f"`{names[i]}`" if i < len(names) else f"number {i + 1}"
                    self.problems.append(f"your {self.ex.function} changed its argument {name} in place: work on a "
                                         "copy (e.g. a.copy()); the caller, or the next call, still needs it")
        return out

    def expect(self, name, got, want, wrong=(), factors=(), axes=None):
        """Compare one output; record what is wrong with it. Returns True when it is right."""
        problem = diagnose(got, want, wrong, factors, axes)
        if problem:
            self.problems.append(f"{name} {problem}")
        return problem is None

    def expect_tuple(self, got, n, what):
        """The learner returned a tuple of n values (what: their names). Returns it, or fails now."""
        if not isinstance(got, (tuple, list)) or len(got) != n:
            kind = f"{len(got)} values" if isinstance(got, (tuple, list)) else f"a {type(got).__name__}"
            self.problems.append(f"returned {kind}; it must return {n}: {what}")
            self.finish()
        return got

    def expect_cache(self, got, want, what):
        """The learner's cache against the library's: same NamedTuple fields, same values."""
        fields = getattr(type(want), "_fields", None)
        if fields is not None and getattr(type(got), "_fields", None) != fields:
            self.problems.append(f"the cache must be {type(want).__name__}({', '.join(fields)}), {what}; yours "
                                 f"is a {type(got).__name__}")
            return
        if not isinstance(got, tuple) or len(got) != len(want):
            size = f" of {len(got)}" if isinstance(got, tuple) else ""
            self.problems.append(f"the cache must be a tuple {what}; yours is a {type(got).__name__}{size}")
            return
        names = fields or [f"cache[{i}]" for i in range(len(want))]
        for name, g, w in zip(names, got, want):
            if isinstance(w, np.ndarray):
                if w.dtype == bool:
                    g_ok = isinstance(g, np.ndarray) and g.shape == w.shape and np.array_equal(g, w)
                    if not g_ok:
                        self.problems.append(f"the cache's {name} must be the boolean mask {what}")
                else:
                    self.expect(f"the cache's {name}", g, w)
            elif isinstance(w, tuple):
                self.expect_cache(g, w, f"(inside {name})")
            elif isinstance(w, (int, float)) and not close(g, w):
                self.problems.append(f"the cache's {name} is {g!r}, expected {w!r}")

    def gradcheck(self, errors, budget=1e-7, where=""):
        """When a problem was found, attach the gradient-check table: errors() -> {name: max relative error} of
        the learner's gradients against central differences (tinymono.gradcheck). where: what the inputs of
        the check leave out, said in the table's heading (an 'ok' there says nothing about those)."""
        if not self.problems:
            return
        try:
            table = format_table(errors(), budget)
        except Exception as e:  # a wrong shape stops the check itself; the problems above say why
            self.table = f"(no gradient check: it stopped on {type(e).__name__}: {e})"
        else:
            self.table = f"your gradients against central differences{where}:\n" + table

    def expect_affine_backward(self, forward, backward, args, names, dout, sums, axes, budget=1e-7):
        """The check of a backward whose forward is affine, x W + b (the linear layer, the SAE's decoder): the
        learner's three gradients, (d + each of `names`), against `backward`'s, those of W and b each summed
        over the axes `sums` names, then the gradient-check table. axes: the three gradients' axis names."""
        _, cache = forward(*args)
        got = self.expect_tuple(self.call(dout, cache), 3, f"({', '.join('d' + n for n in names)})")
        want = backward(dout, cache)
        for k in range(3):
            self.expect(f"d{names[k]}", got[k], want[k], factors=[sums] if k else [], axes=axes[k])
        self.gradcheck(lambda: check_layer(forward, self.function(), list(args), list(names),
                                          rng=np.random.default_rng(0)), budget)

    def finish(self):
        if self.problems:
            lines = [self.header() + ":"] + [f"  - {p}" for p in self.problems]
            if self.table:
                lines.append(self.table)
            raise AssertionError("\n".join(lines))


def check(id, module):
    """Run exercise `id`'s check on `module` (the learner's copy of the library module)."""
    if switch.active():
        raise RuntimeError("the tutor compares your functions with the library's, but TINYMONO_IMPL is set, "
                           "so the library is your workspace: run the tests without TINYMONO_IMPL")
    from tinymono.exercises import layers_checks, metrics_checks, sae_checks, toy_checks  # noqa: F401  (register)

    tutor = Tutor(BY_ID[id], module)
    CHECKS[id](tutor)
    tutor.finish()
