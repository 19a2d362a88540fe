"""Features against ground truth: what an SAE feature (or an MLP neuron) responds to, measured against
the corpus labels, and what it does to the model's predictions.

What the paper measures (Bricken et al. 2023), for a unit's activations a over tokens and a label
indicator y (1 on bytes of, say, the `dna` context):
- sensitivity, as the Pearson correlation of a with y (Arabic 0.74, DNA 0.8, base64 0.38, Hebrew 0.55
  for the best features; 0.10-0.18 for the best single neurons);
- activation specificity: of the activation mass, the share on labelled tokens (Arabic: 81% overall,
  98% above activation 5);
- logit weights: the feature's decoder direction pushed through W_out, the final layer norm taken as
  mean removal, and W_U: which next bytes the feature promotes;
- ablation: subtract f_i d_i from the MLP activations at every position, measure the loss per token;
- pinned sampling: hold a feature at a high value while the model writes, and read what it writes;
- loss recovered: (L_zero_ablation - L_with_SAE) / (L_zero_ablation - L_clean).

What this implementation chose where the paper is silent:
- AUROC of a as a score for y is reported beside the two (it does not depend on a's scale). Exact
  AUROC needs ranks over all tokens; here it comes from a per-unit histogram: one bin for a == 0 (an
  exact tie, as ReLU zeros are) and `bins` equal bins over (0, max]. Pairs in different bins are
  ordered exactly; pairs sharing a nonzero bin count one half, so the error is at most half their
  share, which is reported per unit and label (`auroc_err`). `auroc` computes the exact value from
  ranks for a whole column in memory.
- Specificity "above activation 5" needs the paper's activation scale; here the threshold is half of
  each unit's maximum (scale-free).
- The best unit per label under specificity is chosen among units that fire on at least
  `min_coverage` (5%) of the label's tokens: a unit firing once, on a labelled token, is 100% specific.
- Groups: a label may be covered by sibling features (UTF-8 lead and continuation bytes of Arabic);
  greedily, up to k = 3 features each with specificity >= 0.9 for the label are added while the
  correlation of their summed max-normalised activations with the label rises.
- Scores assume non-negative activations (ReLU neurons, SAE latents); GELU neurons are refused.
- Pinned sampling (clamp_hook, with transformer.sample) keeps the SAE's error term and the other
  features; lesson 08 pins at a feature's largest held-out activation. Written text has no labels, so
  `written_share` scores it with RECOGNISERS: long runs of a context's alphabet, whole script letters.

Everything runs over row blocks of a store (tinymono.activations), in bounded memory: a first pass
for each unit's maximum, density and top activations, a second for the label statistics (Chan's
pairwise update of means and co-moments, so the correlation does not lose digits over millions of
tokens), and a third, over a few candidate columns only, for the groups.

Axis vocabulary: N tokens (store rows), U units, L labels of one family, K bins, B T M V as in
transformer.py.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from tinymono import sae, transformer
from tinymono.corpus import DOC_SEP
from tinymono.validate import INT, REAL, InputTypeError, check_array, check_ids, check_int, check_number

PAPER = {  # Bricken et al. 2023, for the tables: best feature per context, and the best neurons
    "pearson": {"arabic": 0.74, "dna": 0.80, "base64": 0.38, "hebrew": 0.55},
    "neuron_pearson": (0.10, 0.18),
    "specificity": {"arabic": 0.81},
    "specificity_high": {"arabic": 0.98},  # the paper's threshold: activation above 5
}
SCORES = ("pearson", "specificity", "specificity_high", "auroc")


# ----------------------------------------------------------------------------------------------------
# the scores on arrays in memory: the definitions, which the streaming versions must reproduce


def _activations(A, ndim=2):
    """A [N, U] (or [N] when ndim allows it): real, finite (a NaN would score 0, not fail), N >= 1."""
    return check_array("A", A, ndim=ndim, kinds=REAL).astype(np.float64)


def _indicator(y, n):
    y = check_array("y", y, kinds=REAL, finite=False, nonempty=False)
    if y.dtype != bool and not np.isin(y, (0, 1)).all():
        raise ValueError("a label indicator holds 0/1 or booleans (label ids would be read as 'id != 0')")
    y = y.astype(bool)
    if y.shape != (n,):
        raise ValueError(f"y (the label indicator) has shape {y.shape}, the activations have {n} rows")
    return y


def pearson(A, y):
    """A [N, U], y [N] bool -> [U]: the correlation of each column with y (0 where either is constant)."""
    A = _activations(A)
    y = _indicator(y, len(A)).astype(np.float64)
    a, yc = A - A.mean(axis=0), y - y.mean()
    den = np.sqrt((a * a).sum(axis=0) * (yc @ yc))
    return np.divide(yc @ a, den, out=np.zeros(A.shape[1]), where=den > 0)


def specificity(A, y, threshold=None):
    """A [N, U] >= 0, y [N] bool -> [U]: the share of each unit's activation mass on labelled tokens,
    counting only activations >= threshold (None: all; "half": half the unit's max; or a number / [U]).
    A unit with no mass there scores 0."""
    A = _activations(A)
    if A.min() < 0:
        raise ValueError(f"A must be >= 0 (activation mass), got values down to {A.min():.3g}")
    y = _indicator(y, len(A))
    if isinstance(threshold, str) and threshold != "half":
        raise ValueError(f"threshold must be None, 'half', a number or [U] numbers, got {threshold!r}")
    if threshold is not None:
        t = 0.5 * A.max(axis=0) if isinstance(threshold, str) else check_array("threshold", threshold, kinds=REAL)
        A = np.where(A >= t, A, 0.0)
    total = A.sum(axis=0)
    return np.divide(A[y].sum(axis=0), total, out=np.zeros(A.shape[1]), where=total > 0)


def auroc(A, y):
    """A [N, U] (or [N]), y [N] bool -> [U]: P(a on a labelled token > a on an unlabelled one), ties
    counted one half, exactly, from ranks (Mann-Whitney). 0.5 when y is all true or all false."""
    A = _activations(A, ndim=(1, 2))
    col = A.ndim == 1
    A = A[:, None] if col else A
    y = _indicator(y, len(A))
    P, Q = int(y.sum()), int((~y).sum())
    if P == 0 or Q == 0:
        out = np.full(A.shape[1], 0.5)
    else:
        ranks = rankdata(A, axis=0)  # ties get their average rank
        out = (ranks[y].sum(axis=0) - P * (P + 1) / 2) / (P * Q)
    return out[0] if col else out


# ----------------------------------------------------------------------------------------------------
# where unit activations come from: row blocks of a store, as neurons or as SAE features


class NeuronSource:
    """The MLP neurons of a store: activations(lo, hi, units) -> float32 [hi - lo, len(units)]."""

    kind = "neuron"

    def __init__(self, store, block_rows=8192, n_rows=None):
        self.store, self.block_rows = store, check_int("block_rows", block_rows, lo=1)
        self.n_rows = len(store) if n_rows is None else min(check_int("n_rows", n_rows, lo=0), len(store))
        self.n_units = store.d

    def _encode(self, x, units):
        return x if units is None else x[:, units]

    def activations(self, lo, hi, units=None):
        return self._encode(self.store.read(lo, hi).astype(np.float32, copy=False), units)

    def blocks(self, units=None):
        """Yield (lo, A [b, U]) over the first n_rows rows."""
        for lo in range(0, self.n_rows, self.block_rows):
            yield lo, self.activations(lo, min(lo + self.block_rows, self.n_rows), units)


class FeatureSource(NeuronSource):
    """The latents of an SAE applied to a store's rows. Asking for a few units encodes only their
    columns (each latent of the paper's ReLU encoder depends on its own column alone)."""

    kind = "feature"

    def __init__(self, store, sae_params, sae_cfg, block_rows=4096, n_rows=None):
        super().__init__(store, block_rows, n_rows)
        if sae_params["W_enc"].shape != (store.d, sae_cfg.d_sae):
            raise ValueError(f"sae_params['W_enc'] has shape {sae_params['W_enc'].shape}; the store's rows have "
                             f"d={store.d} and the config d_sae={sae_cfg.d_sae}")
        self.params, self.cfg, self.n_units = sae_params, sae_cfg, sae_cfg.d_sae

    def _encode(self, x, units):
        p = self.params if units is None else {"W_enc": self.params["W_enc"][:, units],
                                               "b_enc": self.params["b_enc"][units], "b_dec": self.params["b_dec"]}
        return sae.encode(p, x.astype(self.params["W_enc"].dtype, copy=False), self.cfg)


# ----------------------------------------------------------------------------------------------------
# streaming statistics


def _scatter_add(out, key, weights=None):
    """out.flat[key] += weights (1 each when None), repeated keys summed; cheap whether key is short or
    long next to out (bincount's result is as long as out, so short keys go through unique instead)."""
    flat = out.reshape(-1)
    if 4 * len(key) >= flat.size:
        flat += np.bincount(key, weights, minlength=flat.size).astype(flat.dtype, copy=False)
    elif len(key):
        uniq, inv = np.unique(key, return_inverse=True)
        flat[uniq] += np.bincount(inv, weights).astype(flat.dtype, copy=False)


def _top_k_merge(vals, rows, A, lo):
    """Merge the running top-k per column (vals, rows [k, U], descending) with block A [b, U] that starts at
    store row lo. Only entries above a column's current k-th value (and above 0) can enter, so after the
    first blocks few entries are looked at."""
    k, U = vals.shape
    r, c = np.nonzero(A > np.maximum(vals[-1], 0))  # [n] candidates
    if len(r) == 0:
        return vals, rows
    cand_v = np.concatenate([vals.ravel(), A[r, c]])
    cand_c = np.concatenate([np.tile(np.arange(U), k), c])  # vals.ravel() runs over units fastest
    cand_r = np.concatenate([rows.ravel(), lo + r])
    order = np.lexsort((-cand_v, cand_c))  # by unit, then by value descending
    rank = np.arange(len(order)) - np.searchsorted(cand_c[order], cand_c[order])  # place within its unit
    keep = order[rank < k]
    new_v, new_r = np.empty_like(vals), np.empty_like(rows)
    new_v[rank[rank < k], cand_c[keep]] = cand_v[keep]  # every unit has its k old entries: all slots fill
    new_r[rank[rank < k], cand_c[keep]] = cand_r[keep]
    return new_v, new_r


class LabelStats:
    """Running sums, over row blocks, for every score of every unit against every label of some label
    families (each family partitions the tokens: every token has exactly one context label).

    update(A [b, U] >= 0, {family: label ids [b]}); the pass needs each unit's maximum up front (for the
    half-max threshold and the histogram's bins)."""

    def __init__(self, unit_max, families: dict, bins=64, chunk_elems=1 << 21):
        self.unit_max = check_array("unit_max", unit_max, ("U",), kinds=REAL, nonempty=False).astype(np.float64)
        self.U, self.bins = len(self.unit_max), check_int("bins", bins, lo=1)
        self.chunk_elems = check_int("chunk_elems", chunk_elems, lo=1)
        self.scale = np.divide(self.bins, self.unit_max, out=np.zeros(self.U), where=self.unit_max > 0)
        self.n, self.mean, self.m2 = 0, np.zeros(self.U), np.zeros(self.U)  # Chan's running moments of a
        self.fam = {}
        for name, L in families.items():
            check_int(f"families[{name!r}] (its number of labels)", L, lo=1)
            self.fam[name] = {"count": np.zeros(L, np.int64), "co": np.zeros((L, self.U)),  # co-moment with y
                              "mass": np.zeros((L, self.U)), "mass_high": np.zeros((L, self.U)),
                              "fires": np.zeros((L, self.U), np.int64),
                              "hist": np.zeros((L, self.U, self.bins), np.int64)}  # nonzero a only

    def update(self, A, labels: dict):
        A = check_array("A", A, ("b", self.U), kinds=REAL, finite=False, nonempty=False)  # analyse_units scans
        b = len(A)
        if b == 0:
            return
        # moments of a over the block (in float64 sub-chunks), merged into the running ones
        step = max(1, self.chunk_elems // self.U)
        mean_b = A.sum(axis=0, dtype=np.float64) / b
        m2_b = np.zeros(self.U)
        for i in range(0, b, step):
            d = A[i:i + step].astype(np.float64) - mean_b
            m2_b += np.einsum("ij,ij->j", d, d)
        n_new = self.n + b
        delta = mean_b - self.mean
        w = self.n * b / n_new  # Chan et al.: the cross term of merging two sets' moments
        self.m2 += m2_b + delta**2 * w
        # the nonzero entries carry everything label-specific
        rows, cols = np.nonzero(A)
        vals = A[rows, cols].astype(np.float64)
        high = vals >= 0.5 * self.unit_max[cols]
        bin_ = np.minimum((vals * self.scale[cols]).astype(np.int64), self.bins - 1)  # (0, max] -> 0..K-1
        for name, f in self.fam.items():
            ids = np.asarray(labels[name], dtype=np.int64)
            L = len(f["count"])
            if ids.shape != (b,) or ids.min() < 0 or ids.max() >= L:
                raise ValueError(f"{name} labels must be [{b}] ids in 0..{L - 1}, got {ids.shape} "
                                 f"{ids.min()}..{ids.max()}")
            count_b = np.bincount(ids, minlength=L)
            key = ids[rows] * self.U + cols  # [nnz] (label, unit)
            sums_b = np.zeros((L, self.U))
            _scatter_add(sums_b, key, vals)
            # co-moment of the block, sum (y - ybar_b)(a - abar_b) = sum y a - n_l abar_b, then Chan's merge
            f["co"] += sums_b - count_b[:, None] * mean_b + np.outer(count_b / b - f["count"] / max(self.n, 1),
                                                                      delta) * w
            f["mass"] += sums_b
            _scatter_add(f["mass_high"], key[high], vals[high])
            _scatter_add(f["fires"], key)
            _scatter_add(f["hist"], key * self.bins + bin_)
            f["count"] += count_b
        self.mean += delta * b / n_new
        self.n = n_new

    def scores(self, name):
        """{score: [L, U]} for one family, plus count [L], coverage [L, U] (share of the label's tokens
        the unit fires on), auroc_err [L, U] (bound on the histogram's error) and hist [L, U, K]."""
        f, n = self.fam[name], self.n
        count = f["count"].astype(np.float64)
        var_y = count * (n - count) / max(n, 1)  # [L] sum (y - ybar)^2 of a 0/1 indicator
        den = np.sqrt(np.outer(var_y, self.m2))
        mass_total = f["mass"].sum(axis=0)  # each family partitions the tokens: summing labels gives all
        high_total = f["mass_high"].sum(axis=0)
        out = {"count": f["count"].copy(), "hist": f["hist"].copy(), "fires": f["fires"].copy(),
               "pearson": np.divide(f["co"], den, out=np.zeros_like(den), where=den > 0),
               "specificity": np.divide(f["mass"], mass_total, out=np.zeros_like(f["mass"]), where=mass_total > 0),
               "specificity_high": np.divide(f["mass_high"], high_total, out=np.zeros_like(f["mass"]),
                                             where=high_total > 0),
               "coverage": f["fires"] / np.maximum(count, 1)[:, None]}
        out["auroc"], out["auroc_err"] = _histogram_auroc(f["hist"], f["count"], n)
        return out


def _histogram_auroc(hist, count, n):
    """AUROC [L, U] and its error bound from per-label histograms of the nonzero activations hist
    [L, U, K] (bins in increasing order), with the zeros (an exact tie) recovered from the counts."""
    L, U, K = hist.shape
    total = hist.sum(axis=0)  # [U, K] every label's tokens in each bin
    auc, err = np.full((L, U), 0.5), np.zeros((L, U))
    for l in range(L):
        P, Q = int(count[l]), int(n - count[l])
        if P == 0 or Q == 0:
            continue
        pos = hist[l].astype(np.float64)  # [U, K]
        neg = total - pos
        pos0, neg0 = P - pos.sum(axis=1), Q - neg.sum(axis=1)  # [U] zeros
        below = neg0[:, None] + np.cumsum(neg, axis=1) - neg  # [U, K] negatives in lower bins
        ties = (pos * neg).sum(axis=1)
        auc[l] = ((pos * below).sum(axis=1) + 0.5 * (ties + pos0 * neg0)) / (P * Q)
        err[l] = 0.5 * ties / (P * Q)
    return auc, err


# ----------------------------------------------------------------------------------------------------
# the whole analysis of a set of units


@dataclass
class UnitReport:
    """What `analyse_units` found: per unit (arrays [U]) and per label family ({score: [L, U]})."""

    kind: str  # "feature" or "neuron"
    n_rows: int
    density: np.ndarray  # [U] share of tokens where the unit is > 0
    max: np.ndarray  # [U]
    mean: np.ndarray  # [U]
    m2: np.ndarray  # [U] sum of squared deviations from the mean
    top_values: np.ndarray  # [k, U] largest positive activations, descending (0 when fewer than k)
    top_rows: np.ndarray  # [k, U] their store rows (-1 for those 0s)
    bins: int
    names: dict = field(default_factory=dict)  # family -> label names
    families: dict = field(default_factory=dict)  # family -> LabelStats.scores(...)

    def score(self, family, label, score):
        """[U]: one score of every unit for one label (by name)."""
        return self.families[family][score][self.names[family].index(label)]


def _check_family(report, family):
    if family not in report.families:
        raise ValueError(f"family {family!r} was not analysed; the report has {sorted(report.families)}")
    return family


def _check_labels(labels, names):
    unknown = [x for x in labels if x not in names]
    if unknown or isinstance(labels, str):
        raise ValueError(f"labels must be a list of label names from {list(names)}, got {labels!r}")
    return labels


def _family_names(store, family):
    return tuple(store.context_names if family == "context" else store.detail_names)


def analyse_units(source, families=("context", "detail"), bins=64, top_k=32):
    """Both passes over `source` (NeuronSource or FeatureSource) -> UnitReport.

    Memory: one block of activations and its nonzero entries, plus the per-label histograms, L x U x
    bins int64 (context and detail labels, 4096 features, 64 bins: 71 MB). Time: a FeatureSource encodes
    every row twice; measured at d_sae 1024 on 600k tokens, 25 s on 2 busy cores, 60% of it the encoder."""
    bins, top_k = check_int("bins", bins, lo=1), check_int("top_k", top_k, lo=1)
    for fam in families:
        if fam not in ("context", "detail"):
            raise ValueError(f"families must be 'context' and/or 'detail', got {fam!r}")
    store, U = source.store, source.n_units
    vmax, nnz, total = np.zeros(U), np.zeros(U, np.int64), np.zeros(U)
    top_v, top_r = np.full((top_k, U), -np.inf), np.zeros((top_k, U), np.int64)
    for lo, A in source.blocks():
        lowest = A.min() if A.size else 0.0
        if np.isnan(lowest):
            raise ValueError(f"{source.kind} activations hold NaN in rows {lo}..{lo + len(A) - 1}")
        if lowest < 0:
            raise ValueError(f"{source.kind} activations go down to {lowest:.3g}: these scores assume non-negative "
                             "units (ReLU neurons, SAE latents)")
        vmax = np.maximum(vmax, A.max(axis=0))
        nnz += np.count_nonzero(A, axis=0)
        total += A.sum(axis=0, dtype=np.float64)
        top_v, top_r = _top_k_merge(top_v, top_r, A, lo)
    top_r[~np.isfinite(top_v)] = -1  # fewer than top_k positive activations
    top_v[~np.isfinite(top_v)] = 0.0
    stats = LabelStats(vmax, {fam: len(_family_names(store, fam)) for fam in families}, bins=bins)
    for lo, A in source.blocks():
        hi = lo + len(A)
        stats.update(A, {fam: np.asarray(getattr(store, fam)[lo:hi]) for fam in families})
    n = source.n_rows
    return UnitReport(source.kind, n, nnz / n, vmax, total / n, stats.m2, top_v, top_r, bins,
                      {fam: _family_names(store, fam) for fam in families},
                      {fam: stats.scores(fam) for fam in families})


def best_units(report, family, min_coverage=0.05):
    """{label: {score: (unit, value)}}: the best unit for each label under each score. Under the two
    specificities only units firing on >= min_coverage of the label's tokens compete."""
    _check_family(report, family)
    check_number("min_coverage", min_coverage, 0, 1)
    f, out = report.families[family], {}
    for l, label in enumerate(report.names[family]):
        out[label] = {}
        for score in SCORES:
            value = f[score][l].copy()
            if score.startswith("specificity"):
                value[f["coverage"][l] < min_coverage] = -np.inf
            u = int(np.argmax(value))
            out[label][score] = (u, float(value[u]) if np.isfinite(value[u]) else float("nan"))
    return out


def label_groups(source, report, family, labels=None, k=3, min_specificity=0.9, n_candidates=64):
    """For each label, a greedy group of at most k units, each with specificity >= min_specificity for
    the label, whose summed max-normalised activation sum_i a_i / max_i correlates best with the label.
    Third pass: the covariances of the candidates, over their columns only. The candidates are the
    eligible units with the n_candidates best single correlations, since a sibling with a low correlation
    of its own can complete a group. The cap bounds the third pass's cost: in our default run each
    generated context has at most 14 eligible units, so it leaves none out, but a broad label such as
    python can have hundreds.
    -> {label: {"units": [...], "pearson": r, "singles": [r_i ...], "eligible": number of eligible units}}."""
    f, names = report.families[_check_family(report, family)], report.names[family]
    labels = names if labels is None else _check_labels(labels, names)
    k, n_candidates = check_int("k", k, lo=1), check_int("n_candidates", n_candidates, lo=1)
    check_number("min_specificity", min_specificity, 0, 1)
    cands, eligible = {}, {}
    for label in labels:
        l = names.index(label)
        r = np.where((f["specificity"][l] >= min_specificity) & (f["pearson"][l] > 0), f["pearson"][l], -np.inf)
        order = np.argsort(-r, kind="stable")[:n_candidates]
        cands[label], eligible[label] = order[np.isfinite(r[order])], int(np.isfinite(r).sum())
    union = np.unique(np.concatenate([np.zeros(0, np.int64), *cands.values()]))
    C = len(union)
    n, mean, cov = 0, np.zeros(C), np.zeros((C, C))  # Chan's merge again, for a [C, C] co-moment matrix
    for lo, X in (source.blocks(units=union) if C else []):
        X = X.astype(np.float64)
        mean_b = X.mean(axis=0)
        d = X - mean_b
        delta, n_new = mean_b - mean, n + len(X)
        cov += d.T @ d + np.outer(delta, delta) * n * len(X) / n_new
        mean += delta * len(X) / n_new
        n = n_new
    out = {}
    for label in labels:
        l, members = names.index(label), cands[label]
        at = np.searchsorted(union, members)
        count = f["count"][l]
        var_y = count * (report.n_rows - count) / report.n_rows
        scale = 1.0 / report.max[members]
        co_y = f["pearson"][l, members] * np.sqrt(report.m2[members] * var_y) * scale  # cov(a_i / max_i, y)
        cv = cov[np.ix_(at, at)] * np.outer(scale, scale)

        def corr(group):
            g = list(group)
            var = cv[np.ix_(g, g)].sum()
            return co_y[g].sum() / np.sqrt(var * var_y) if var > 0 and var_y > 0 else 0.0

        group, best = [], 0.0
        while len(group) < min(k, len(members)):
            trial = {j: corr(group + [j]) for j in range(len(members)) if j not in group}
            j = max(trial, key=trial.get)
            if trial[j] <= best + 1e-12:
                break
            group.append(j)
            best = trial[j]
        out[label] = {"units": [int(members[j]) for j in group], "pearson": float(best),
                      "singles": [float(f["pearson"][l, members[j]]) for j in group], "eligible": eligible[label]}
    return out


def comparison_table(features, neurons, groups=None, family="context", labels=None):
    """One row per label: the best feature and the best neuron by correlation (with their other scores),
    the best feature group, and the paper's numbers where it gives them."""
    names = features.names[_check_family(features, family)]
    _check_family(neurons, family)
    labels = [x for x in names if x != "separator"] if labels is None else _check_labels(labels, names)
    best_f, best_n = best_units(features, family), best_units(neurons, family)
    rows = []
    for label in labels:
        l = names.index(label)
        row = {"label": label, "tokens": int(features.families[family]["count"][l])}
        for who, report, best in (("feature", features, best_f), ("neuron", neurons, best_n)):
            u = best[label]["pearson"][0]
            row[who] = {"unit": u, **{s: float(report.families[family][s][l, u]) for s in (*SCORES, "auroc_err")}}
        if groups is not None and label in groups:
            row["group"] = groups[label]
        row["paper"] = {"pearson": PAPER["pearson"].get(label), "specificity": PAPER["specificity"].get(label),
                        "specificity_high": PAPER["specificity_high"].get(label)}
        rows.append(row)
    return rows


def format_comparison(rows):
    """comparison_table's rows as a text table (scores in %, the paper's in brackets)."""
    def pct(x):
        return "  -" if x is None else f"{100 * x:3.0f}"
    lo, hi = PAPER["neuron_pearson"]
    lines = [f"{'label':<10} {'tokens':>8} | {'feature':>7} {'r':>4} {'[paper]':>7} {'spec':>4} {'[p]':>4} "
             f"{'hi':>4} {'[p]':>4} {'auc':>4} | {'neuron':>6} {'r':>4} {'spec':>4} {'auc':>4} | group r  (units)",
             f"{'(every score x 100)':<21}|{'':<50}| paper: best neurons r {100 * lo:.0f}-{100 * hi:.0f}"]
    for r in rows:
        f, nu, p = r["feature"], r["neuron"], r["paper"]
        group = r.get("group")
        gtext = f"{pct(group['pearson'])}  {group['units']}" if group else ""
        lines.append(f"{r['label']:<10} {r['tokens']:>8} | {f['unit']:>7} {pct(f['pearson'])} {pct(p['pearson']):>7} "
                     f"{pct(f['specificity'])} {pct(p['specificity']):>4} {pct(f['specificity_high'])} "
                     f"{pct(p['specificity_high']):>4} {pct(f['auroc'])} | {nu['unit']:>6} {pct(nu['pearson'])} "
                     f"{pct(nu['specificity'])} {pct(nu['auroc'])} | {gtext}")
    err = max((r[who].get("auroc_err", 0.0) for r in rows for who in ("feature", "neuron")), default=0.0)
    lines.append(f"(auc: from per-label histograms, each within {err:.4f} of the exact AUROC)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# one feature: examples, histogram, logit weights, ablation


def token_text(t):
    """One token shown visibly: printable ASCII as itself, \\n \\t \\r \\\\ and \\xNN escapes otherwise,
    the document separator as the symbol ␞."""
    t = check_int("t", t, 0, DOC_SEP)
    if t == DOC_SEP:
        return "\u241e"
    special = {0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r", 0x5C: "\\\\"}
    if t in special:
        return special[t]
    return chr(t) if 0x20 <= t < 0x7F else f"\\x{t:02x}"


def _utf8_length(lead):
    return 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 1


def byte_pieces(tokens):
    """Token ids [n] -> [(text, start, stop)]: each complete, printable UTF-8 character as itself
    (start..stop its bytes), every other byte escaped alone by token_text."""
    tokens = check_ids("tokens", tokens, DOC_SEP + 1)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one sequence [n], got shape {tokens.shape}")
    tokens = tokens.tolist()
    out, i = [], 0
    while i < len(tokens):
        n = _utf8_length(tokens[i])
        if n > 1 and i + n <= len(tokens) and all(0x80 <= t <= 0xBF for t in tokens[i + 1:i + n]):
            try:
                ch = bytes(tokens[i:i + n]).decode("utf-8")
            except UnicodeDecodeError:
                ch = None
            if ch is not None and ch.isprintable():
                out.append((ch, i, i + n))
                i += n
                continue
        out.append((token_text(tokens[i]), i, i + 1))
        i += 1
    return out


def format_example(tokens, center, mark=("\u27e6", "\u27e7")):
    """The bytes as readable text with the piece holding byte `center` between the marks (a character
    of several bytes also shows which byte it was, e.g. ⟦ب·d8⟧)."""
    check_int("center", center, 0, len(tokens) - 1)
    parts = []
    for text, a, b in byte_pieces(tokens):
        if a <= center < b:
            which = f"\u00b7{int(tokens[center]):02x}" if b - a > 1 else ""
            text = f"{mark[0]}{text}{which}{mark[1]}"
        parts.append(text)
    return "".join(parts)


def top_examples(source, report, unit, k=8, before=32, after=8):
    """The unit's k strongest activations as examples, more than `before` rows apart (one stretch of text
    would otherwise fill the list): [{"row", "activation", "tokens" [w], "acts" [w], "center"}], the
    window running from `before` bytes before the activating byte to `after` after it.

    The candidates are the report's top_k rows; when they crowd into fewer than k stretches and the unit
    fires elsewhere too, the unit's whole column is read once to find the rest."""
    unit = check_int("unit", unit, 0, source.n_units - 1)
    k, before, after = check_int("k", k, lo=0), check_int("before", before, lo=0), check_int("after", after, lo=0)
    store = source.store

    def pick(values, rows):
        chosen = []
        for v, r in zip(values, rows):
            if len(chosen) == k or v <= 0:
                break
            if all(abs(int(r) - c) > before for c in chosen):
                chosen.append(int(r))
        return chosen

    chosen = pick(report.top_values[:, unit], report.top_rows[:, unit])
    if len(chosen) < k and report.density[unit] * report.n_rows > np.count_nonzero(report.top_values[:, unit]):
        column = np.concatenate([X[:, 0] for _, X in source.blocks(units=np.array([unit]))])
        order = np.argsort(-column, kind="stable")
        chosen = pick(column[order], order)
    return [_example(source, unit, r, before, after) for r in chosen]


def _example(source, unit, r, before, after):
    """The example of `unit` at row r: {"row", "activation", "tokens" [w], "acts" [w], "center"}."""
    lo, hi = max(0, r - before), min(source.n_rows, r + after + 1)
    acts = source.activations(lo, hi, units=np.array([unit]))[:, 0]
    return {"row": r, "activation": float(acts[r - lo]), "tokens": np.asarray(source.store.tokens[lo:hi]),
            "acts": acts, "center": r - lo}


def quantile_examples(source, units, n_bands=4, per_band=2, before=32, after=8, seed=0):
    """Beside the top examples, what a unit does at its ordinary strengths (as Anthropic's feature pages and
    sae_vis show): its nonzero activations cut into n_bands bands of equal count (quantiles: the weakest
    quarter, ...), and per_band examples drawn at random (seeded) from each. One pass over the source
    reads the columns of all `units` at once. -> {unit: [{"band": "0-25%", "lo": a, "hi": b, "examples":
    [...]}]}, bands weakest first; a unit that never fires gets []."""
    units = np.array([check_int("unit", u, 0, source.n_units - 1) for u in units], dtype=np.int64)
    n_bands, per_band = check_int("n_bands", n_bands, lo=1), check_int("per_band", per_band, lo=0)
    rows, values = [[] for _ in units], [[] for _ in units]
    for lo, A in source.blocks(units=units):  # A [b, len(units)]
        r, j = np.nonzero(A)
        for k in np.unique(j):
            rows[k].append(r[j == k] + lo)
            values[k].append(A[r[j == k], k])
    rng, out = np.random.default_rng(seed), {}
    for k, u in enumerate(units.tolist()):
        if not rows[k]:
            out[u] = []
            continue
        r, v = np.concatenate(rows[k]), np.concatenate(values[k])
        order = np.argsort(v, kind="stable")
        bands = []
        for b, chunk in enumerate(np.array_split(order, n_bands)):
            if chunk.size == 0:
                continue
            picked = np.sort(rng.choice(chunk, size=min(per_band, chunk.size), replace=False))
            bands.append({"band": f"{100 * b // n_bands}-{100 * (b + 1) // n_bands}%", "lo": float(v[chunk[0]]),
                          "hi": float(v[chunk[-1]]),
                          "examples": [_example(source, u, int(r[i]), before, after) for i in picked]})
        out[u] = bands
    return out


def nearest_by_decoder(W_dec, units, k=5):
    """{unit: [(other unit, cosine)]}: the k units whose decoder directions (rows of W_dec [U, d]) lie
    nearest each unit's own, by cosine, the unit itself left out."""
    W = np.asarray(W_dec, dtype=np.float64)
    W = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    out = {}
    for u in units:
        cos = W @ W[int(u)]  # [U]
        cos[int(u)] = -np.inf
        best = np.argsort(-cos, kind="stable")[:k]
        out[int(u)] = [(int(o), float(cos[o])) for o in best]
    return out


def activation_histogram(report, family, unit):
    """(edges [K + 1] over (0, max], counts [L, K] of the unit's nonzero activations per label,
    zeros [L]: tokens per label where it is 0)."""
    f = report.families[_check_family(report, family)]
    unit = check_int("unit", unit, 0, len(report.max) - 1)
    counts = f["hist"][:, unit]
    return np.linspace(0, report.max[unit], report.bins + 1), counts, f["count"] - counts.sum(axis=1)


def logit_weights(params, cfg, direction):
    """direction [M] (a decoder row) -> [V]: its direct effect on the logits, W_out, then the final layer
    norm approximated as mean removal (times its gain: a model whose gain is folded into W_U, as the
    paper's, needs no gain), then W_U."""
    direction = check_array("direction", direction, (cfg.d_mlp,), kinds=REAL)
    r = direction.astype(np.float64) @ params["W_out"]  # [D]
    if cfg.layernorm:  # a model without layer norms (layernorm=False) has nothing to approximate
        r = (r - r.mean()) * params["lnf_w"]
    return r @ params["W_U"]  # [V]


def top_logits(weights, k=8):
    """-> (promoted, suppressed): lists of (token shown by token_text, weight), strongest first."""
    weights = check_array("weights", weights, ("V",), kinds=REAL)
    k = check_int("k", k, lo=0)
    order = np.argsort(weights, kind="stable")
    return ([(token_text(t), float(weights[t])) for t in order[::-1][:k]],
            [(token_text(t), float(weights[t])) for t in order[:k]])


def clamp_hook(sae_params, sae_cfg, units, values, record=None):
    """A mlp.hook_post function that sets feature `units` (one index, or several) to `values` at every
    position and leaves the rest of the true activations (not the SAE's reconstruction) as they are:
    post + sum_i (v_i - f_i(post)) W_dec[i], every f_i read from the activations as they came in. Value 0
    is the paper's ablation; a large value pins the feature on (the paper's pinned sampling). Appends the
    features as they were, [B, T] for one unit or [B, T, k] for k, to `record` when given."""
    d_sae = sae_params["W_enc"].shape[1]
    idx = np.atleast_1d(check_ids("units", units, d_sae))  # a negative unit would silently be counted from the end
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"units must be one feature index or a non-empty list of them, got {units!r}")
    values = check_array("values", values, kinds=REAL)
    if values.ndim > 1 or values.size not in (1, idx.size):
        raise ValueError(f"values must be one number or one per unit ({idx.size}), got shape {values.shape}")
    if record is not None and not hasattr(record, "append"):
        raise InputTypeError(f"record must be a list (or None), got {type(record).__name__}")
    p = {"W_enc": sae_params["W_enc"][:, idx], "b_enc": sae_params["b_enc"][idx], "b_dec": sae_params["b_dec"]}
    D = sae_params["W_dec"][idx]  # [k, M]
    v = np.broadcast_to(np.asarray(values, dtype=np.float64), idx.shape)

    def hook(post):  # [B, T, M]
        f = sae.encode(p, post.reshape(-1, post.shape[-1]), sae_cfg)  # [B*T, k]
        if record is not None:
            record.append(f.reshape(*post.shape[:2], *np.shape(units)))
        return post + ((v - f) @ D).reshape(post.shape)
    return hook


def ablation_hook(sae_params, sae_cfg, unit, record=None):
    """A mlp.hook_post function: post - f_i(post) * W_dec[i] (the true activations, minus the feature's
    share). Appends f_i [B, T] to `record` when given."""
    return clamp_hook(sae_params, sae_cfg, unit, 0.0, record)


def ablation_effect(params, cfg, sae_params, sae_cfg, unit, windows, batch=32, fast=True):
    """Per-token loss change (nats) from ablating feature `unit` on windows [B, T + 1]:
    {"delta" [B, T], "fires" [B, T] bool (f_i > 0 at the position), "mean_on", "mean_off", "n_on", "n_off"}."""
    check_int("unit", unit, 0, sae_cfg.d_sae - 1)
    windows, batch = _check_windows(windows), check_int("batch", batch, lo=1)
    deltas, fired = [], []
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch].astype(np.int64)
        clean = transformer.per_token_loss(params, w, cfg, fast=fast)
        rec = []
        ablated = transformer.per_token_loss(params, w, cfg, hook_post=ablation_hook(sae_params, sae_cfg, unit, rec),
                                             fast=fast)
        deltas.append(ablated - clean)
        fired.append(rec[0] > 0)
    delta, fires = np.concatenate(deltas), np.concatenate(fired)
    return {"delta": delta, "fires": fires, "n_on": int(fires.sum()), "n_off": int((~fires).sum()),
            "mean_on": float(delta[fires].mean()) if fires.any() else 0.0,
            "mean_off": float(delta[~fires].mean()) if (~fires).any() else 0.0}


# ----------------------------------------------------------------------------------------------------
# loss recovered


def sae_hook(sae_params, sae_cfg):
    """A mlp.hook_post function replacing the activations by the SAE's reconstruction."""
    def hook(post):  # [B, T, M]
        x = post.reshape(-1, post.shape[-1])
        return sae.decode(sae_params, sae.encode(sae_params, x, sae_cfg)).reshape(post.shape)
    return hook


def _check_windows(windows):
    """windows [B >= 1, T + 1] token ids (their range is checked by the transformer)."""
    return check_array("windows", windows, ("B", "T + 1"), kinds=INT, finite=False)


def mean_loss(params, cfg, windows, hook_post=None, batch=32, fast=True):
    """Mean next-token loss (nats) over windows [B, T + 1], with mlp.hook_post set to hook_post."""
    windows, batch = _check_windows(windows), check_int("batch", batch, lo=1)
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        nats = transformer.per_token_loss(params, windows[i:i + batch].astype(np.int64), cfg,
                                          hook_post=hook_post, fast=fast)
        total, count = total + float(nats.sum()), count + nats.size
    return total / count


def loss_recovered(l_clean, l_replaced, l_ablated):
    """(L_ablated - L_replaced) / (L_ablated - L_clean): 1 when the replacement is as good as the real
    activations, 0 when it is no better than the ablation."""
    l_clean, l_replaced = check_number("l_clean", l_clean), check_number("l_replaced", l_replaced)
    l_ablated = check_number("l_ablated", l_ablated)
    if l_ablated == l_clean:
        raise ValueError(f"the ablation does not change the loss ({l_clean}), so nothing can be recovered: "
                         "does the model's MLP reach the logits?")
    if l_ablated < l_clean:
        warnings.warn(f"the ablation lowers the loss ({l_clean:.4g} -> {l_ablated:.4g}), so the MLP does not help "
                      "yet (an untrained model?) and the sign of loss recovered means nothing", RuntimeWarning,
                      stacklevel=2)
    return (l_ablated - l_replaced) / (l_ablated - l_clean)


def loss_recovered_report(params, cfg, windows, sae_params, sae_cfg, mean_acts, batch=32, fast=True):
    """Losses with the real activations, the SAE's reconstruction, zeros and the mean activation
    [M] (e.g. ActivationStore.mean()); loss recovered against zero-ablation (the paper's) and
    mean-ablation (a fairer baseline: zeros are far from any activation the model ever sees)."""
    mean_acts = check_array("mean_acts", mean_acts, (cfg.d_mlp,), kinds=REAL)
    kw = dict(batch=batch, fast=fast)
    out = {"clean": mean_loss(params, cfg, windows, **kw),
           "sae": mean_loss(params, cfg, windows, sae_hook(sae_params, sae_cfg), **kw),
           "zero": mean_loss(params, cfg, windows, 0.0, **kw),
           "mean": mean_loss(params, cfg, windows, np.asarray(mean_acts, dtype=np.float32), **kw)}
    out["recovered_zero"] = loss_recovered(out["clean"], out["sae"], out["zero"])
    out["recovered_mean"] = loss_recovered(out["clean"], out["sae"], out["mean"])
    return out


# ----------------------------------------------------------------------------------------------------
# steering: pinned sampling, scored by what the model writes

# What counts as a generated context in text the model writes (no labels there): runs too long to be
# chance in Python or English (base64 and hex blobs, DNA lines), and letters of the two scripts. A run
# must also hold a byte that tells it from its look-alikes (second pattern): base64 one outside the hex
# and DNA alphabets, hex a letter (a run of digits is a number). Scripts are matched on decoded text.
RECOGNISERS = {"base64": (re.compile(rb"[A-Za-z0-9+/]{16,}"), re.compile(rb"[g-zBDEFH-SU-Z+/]")),
               "dna": (re.compile(rb"[ACGT]{8,}"), None),
               "hex": (re.compile(rb"[0-9a-f]{8,}"), re.compile(rb"[a-f]")),
               "arabic": (re.compile("[\u0621-\u064a]+"), None), "hebrew": (re.compile("[\u05d0-\u05ea]+"), None)}


def written_share(tokens, label):
    """The share of the bytes of `tokens` (token ids; the separator counts as a byte of no context) that
    RECOGNISERS[label] attributes to the label: bytes in its runs that also hold a telling byte, or in the
    script's letters, which must be whole UTF-8 characters (a lead byte without its continuation byte is
    not Arabic)."""
    if label not in RECOGNISERS:
        raise ValueError(f"no recogniser for {label!r}; there is one for {sorted(RECOGNISERS)}")
    tokens = check_ids("tokens", tokens, DOC_SEP + 1)  # bytes and the separator
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one sequence (1-D), got shape {tokens.shape}: score each row on its own")
    if tokens.size == 0:
        return 0.0
    data = bytes(np.where(tokens < 256, tokens, 0).astype(np.uint8))  # the separator: a NUL breaks any run
    runs, telling = RECOGNISERS[label]
    if label in ("arabic", "hebrew"):  # whole characters only: decode, find, and count their bytes
        found = sum(len(m.group().encode()) for m in runs.finditer(data.decode("utf-8", errors="replace")))
    else:
        found = sum(m.end() - m.start() for m in runs.finditer(data) if telling is None or telling.search(m.group()))
    return found / len(data)


# ----------------------------------------------------------------------------------------------------
# feature cards: what the browser shows


def feature_cards(source, report, params, cfg, units, family="context", n_examples=8, before=32, after=8,
                  n_logits=8, n_bands=4, per_band=2, n_nearest=5):
    """A JSON-ready card per unit: density, best label of `family` by correlation and its scores, top
    examples (pieces of text with their activation), examples from n_bands quantile bands of its
    activations (per_band each: quantile_examples), the n_nearest features by decoder cosine (features
    only), the activation histogram per label and the logit weights (for features; neurons get their
    W_out row through the same path)."""
    names = report.names[_check_family(report, family)]
    f = report.families[family]
    units = [int(check_int("unit", u, 0, len(report.max) - 1)) for u in units]
    W_dec = source.params["W_dec"] if source.kind == "feature" else np.eye(cfg.d_mlp)
    bands = quantile_examples(source, units, n_bands, per_band, before, after) if per_band else {}
    nearest = nearest_by_decoder(W_dec, units, n_nearest) if source.kind == "feature" and n_nearest else {}

    def shown(ex):
        pieces = [(text, float(ex["acts"][a:b].max()), a <= ex["center"] < b)
                  for text, a, b in byte_pieces(ex["tokens"])]
        return {"row": ex["row"], "activation": ex["activation"], "pieces": pieces}
    cards = []
    for u in units:
        l = int(np.argmax(f["pearson"][:, u]))  # a unit correlating with no label gets "-" below
        examples = [shown(ex) for ex in top_examples(source, report, u, n_examples, before, after)]
        edges, counts, zeros = activation_histogram(report, family, u)
        promoted, suppressed = top_logits(logit_weights(params, cfg, W_dec[u]), n_logits)
        cards.append({"unit": u, "kind": report.kind, "density": float(report.density[u]),
                      "max": float(report.max[u]),
                      "best": {"label": names[l] if f["pearson"][l, u] > 0 else "-",
                               **{s: float(f[s][l, u]) for s in SCORES}},
                      "examples": examples,
                      "quantiles": [{**{k: band[k] for k in ("band", "lo", "hi")},
                                     "examples": [shown(ex) for ex in band["examples"]]} for band in bands.get(u, [])],
                      "nearest": nearest.get(u, []),
                      "histogram": {"edges": edges.tolist(), "labels": list(names), "counts": counts.tolist(),
                                    "zeros": zeros.tolist()},
                      "logits": {"promoted": promoted, "suppressed": suppressed}})
    return cards
