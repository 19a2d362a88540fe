"""The tutor's checks for lessons 06 and 07 (tinymono/metrics.py): loss recovered, and the three scores of
a unit against a label, each against the library's.

The activations hold the cases the definitions must get right: exact zeros (a ReLU's), tied values, an
activation exactly at half a unit's maximum, a constant unit and a silent one.
"""
from __future__ import annotations

import numpy as np
from tinymono import metrics as ref
from tinymono.exercises.tutor import Wrong, exercise, shapes

__tracebackhide__ = True  # pytest shows the test line and the tutor's message, not these frames


@exercise("06.1")
def loss_recovered(t):
    t.inputs = "mean losses (clean, replaced, ablated) in nats"
    for clean, replaced, ablated in ((2.0, 2.3, 3.5), (2.0, 2.0, 3.5), (2.0, 3.5, 3.5), (1.5, 2.5, 1.9)):
        got = t.call(clean, replaced, ablated)
        want = ref.loss_recovered(clean, replaced, ablated)
        if not t.expect(f"loss_recovered({clean}, {replaced}, {ablated})", got, want, [
            Wrong(1 - want, "is the share of the loss LOST, (L_replaced - L_clean) / (L_ablated - L_clean): "
                            "loss recovered is 1 minus that"),
            Wrong((ablated - clean) / (ablated - replaced) if ablated != replaced else None,
                  "is upside down: (L_ablated - L_replaced) / (L_ablated - L_clean)"),
            Wrong((ablated - replaced) / ablated, "divides by L_ablated; divide by the loss the ablation costs, "
                                                  "L_ablated - L_clean")]):
            return
    try:
        got = t.function()(2.0, 2.3, 2.0)
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as e:
        t.problems.append(f"loss_recovered(2.0, 2.3, 2.0) raised {type(e).__name__} ({e}): when l_ablated == l_clean "
                          "nothing can be recovered, so raise a ValueError that says so")
        return
    t.problems.append(f"loss_recovered(2.0, 2.3, 2.0) returned {got!r}: when l_ablated == l_clean nothing can be "
                      "recovered (the ratio divides by 0), so raise a ValueError that says so")


def units_and_label(rng, n=40):
    """A [n, 5] >= 0 (a ReLU-like unit, one tracking the label, one with ties, a constant and a silent one), y."""
    y = rng.random(n) < 0.35
    y[:2] = True, False
    relu = np.maximum(rng.standard_normal(n), 0)
    tracking = np.where(y, rng.uniform(1, 3, n), np.maximum(rng.standard_normal(n), 0) * 0.5)
    ties = rng.integers(0, 4, n).astype(float)
    ties[0], ties[1] = 2.0, 4.0  # the max is 4: one activation sits exactly at half of it, on a labelled token
    A = np.stack([relu, tracking, ties, np.full(n, 1.5), np.zeros(n)], axis=1)
    return A, y


def score_case(t, reference, note):
    """The units and label above, shown to the learner with `note`, and the learner's and the library's scores:
    -> (A, y, got, want)."""
    A, y = units_and_label(t.rng)
    t.inputs = shapes(dict(A=A, y=y)) + note
    return A, y, t.call(A, y), reference(A, y)


@exercise("07.1")
def pearson(t):
    A, y, got, want = score_case(t, ref.pearson, " (unit 3 is constant, unit 4 silent)")
    if isinstance(got, np.ndarray) and got.shape == want.shape and not np.all(np.isfinite(got[3:])):
        t.problems.append("the constant and the silent unit (columns 3 and 4) give NaN: their variance is 0, so "
                          "return 0 there instead of dividing by 0 (np.divide(..., where=den > 0))")
        return
    a, yc = A - A.mean(axis=0), y - y.mean()
    norms = np.linalg.norm(A, axis=0) * np.linalg.norm(y.astype(float))
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(norms > 0, (A.T @ y) / norms, 0.0)
        half_centred = np.where(norms > 0, (a.T @ y) / (np.linalg.norm(a, axis=0) * np.linalg.norm(y.astype(float))), 0)
    t.expect("r", got, want, [
        Wrong(raw, "does not subtract the means: Pearson's r correlates a - mean(a) with y - mean(y)"),
        Wrong(half_centred, "centres a but not y: subtract y's mean too"),
        Wrong(yc @ a / len(y), "is the covariance: divide by both standard deviations"),
        Wrong(yc @ a / (len(y) - 1), "is the covariance: divide by both standard deviations")], axes="U")
    constant_y = t.call(A, np.zeros(len(y), dtype=bool))
    t.expect("r with y all False", constant_y, np.zeros(A.shape[1]),
             [Wrong(np.full(A.shape[1], np.nan), "is NaN: a constant y has variance 0, so every unit scores 0")])


@exercise("07.2")
def specificity(t):
    A, y = units_and_label(t.rng)
    A = A[:, [0, 1, 2, 4]]  # the silent unit stays; a constant unit has no special case here
    t.inputs = shapes(dict(A=A, y=y)) + " (unit 3 is silent)"
    fires = A > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        counted = np.where(fires.sum(0) > 0, fires[y].sum(0) / fires.sum(0), 0.0)
        off_label = np.where(A[~y].sum(0) > 0, A[y].sum(0) / A[~y].sum(0), 0.0)
        per_token = A[y].sum(0) / y.sum()
    got = t.call(A, y)
    want = ref.specificity(A, y)
    if isinstance(got, np.ndarray) and got.shape == want.shape and not np.isfinite(got[3]):
        t.problems.append("the silent unit (column 3) gives NaN: a unit with no activation mass scores 0 "
                          "(np.divide(..., where=total > 0))")
        return
    t.expect("specificity (threshold None)", got, want, [
        Wrong(counted, "counts tokens: specificity weighs each token by its activation (a share of the MASS)"),
        Wrong(off_label, "divides by the mass on unlabelled tokens; divide by the unit's whole mass"),
        Wrong(per_token, "divides by the number of labelled tokens; divide by the unit's whole mass")], axes="U")
    half = ref.specificity(A, y, "half")
    t_unit = 0.5 * A.max(axis=0)
    strict = np.where(A > t_unit, A, 0.0)
    above_all = np.where(A >= 0.5 * A.max(), A, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        strict_s = np.where(strict.sum(0) > 0, strict[y].sum(0) / strict.sum(0), 0.0)
        above_all_s = np.where(above_all.sum(0) > 0, above_all[y].sum(0) / above_all.sum(0), 0.0)
    t.expect('specificity (threshold "half")', t.call(A, y, "half"), half, [
        Wrong(want, "ignores the threshold: with \"half\", count only activations >= half of each unit's maximum"),
        Wrong(strict_s, "drops the activation exactly at half the maximum (unit 2): count a >= threshold"),
        Wrong(above_all_s, "takes half of the largest activation of ALL units; each unit's threshold is half its own "
                           "maximum, A.max(axis=0)")], axes="U")
    t.expect("specificity (threshold 1.0)", t.call(A, y, 1.0), ref.specificity(A, y, 1.0), axes="U")
    per_unit = np.array([0.5, 2.0, 3.0, 0.1])
    t.expect("specificity (one threshold per unit)", t.call(A, y, per_unit), ref.specificity(A, y, per_unit), axes="U")


@exercise("07.3")
def auroc(t):
    A, y, got, want = score_case(t, ref.auroc, " (unit 2 has ties, 3 is constant, 4 silent)")
    P, Q = int(y.sum()), int((~y).sum())
    pos, neg = A[y][:, None, :], A[~y][None, :, :]
    strict = (pos > neg).sum(axis=(0, 1)) / (P * Q)
    ordinal = np.argsort(np.argsort(A, axis=0, kind="stable"), axis=0) + 1.0  # ties broken by order: no average
    t.expect("AUROC", got, want, [
        Wrong(strict, "counts ties as losses: a tie between a labelled and an unlabelled token counts one half"),
        Wrong(strict + (pos == neg).sum(axis=(0, 1)) / (P * Q), "counts ties as wins: a tie counts one half"),
        Wrong(1 - want, "is 1 - AUROC: sum the ranks of the LABELLED tokens"),
        Wrong((ordinal[y].sum(axis=0) - P * (P + 1) / 2) / (P * Q),
              "gives tied values different ranks: scipy's rankdata gives them their average rank")], axes="U")
    t.expect("AUROC of a 1-D A (one unit)", t.call(A[:, 1], y), ref.auroc(A[:, 1], y))
    t.expect("AUROC with y all True", t.call(A, np.ones(len(y), dtype=bool)), np.full(A.shape[1], 0.5))
