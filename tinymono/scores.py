"""Every unit against every label, streamed over a store: what an SAE feature (or an MLP neuron)
responds to, measured against the corpus labels.

What the paper measures (Bricken et al. 2023), for a unit's activations a over tokens and a label
indicator y (1 on bytes of, say, the `dna` context), with the definitions in metrics.py:
- sensitivity, as the Pearson correlation of a with y (the paper's best features: PAPER below);
- activation specificity: of the activation mass, the share on labelled tokens (overall, and above
  activation 5).

What this implementation chose where the paper is silent:
- AUROC of a as a score for y is reported beside the two (it does not depend on a's scale). Exact
  AUROC needs ranks over all tokens; here it comes from a per-unit histogram: one bin for a == 0 (an
  exact tie, as ReLU zeros are) and `bins` equal bins over (0, max]. Pairs in different bins are
  ordered exactly; pairs sharing a nonzero bin count one half, so the error is at most half their
  share, which is reported per unit and label (`auroc_err`). `metrics.auroc` computes the exact value
  from ranks for a whole column in memory.
- Specificity "above activation 5" needs the paper's activation scale; here the threshold is half of
  each unit's maximum (scale-free).
- The best unit per label under specificity is chosen among units that fire on at least
  `min_coverage` (5%) of the label's tokens: a unit firing once, on a labelled token, is 100% specific.
- Groups: a label may be covered by sibling features (UTF-8 lead and continuation bytes of Arabic);
  greedily, up to k = 3 features each with specificity >= 0.9 for the label are added while the
  correlation of their summed max-normalised activations with the label rises.
- Scores assume non-negative activations (ReLU neurons, SAE latents); GELU neurons are refused.

Everything runs over row blocks of a source (features.NeuronSource or FeatureSource: anything with
`store`, `n_units`, `n_rows`, `kind` and `blocks(units=None)`), in bounded memory: a first pass for
each unit's maximum, density and top activations, a second for the label statistics (Chan's pairwise
update of means and co-moments, so the correlation does not lose digits over millions of tokens; it reads
the nonzero entries the first pass kept, when they fit in memory), and a third, over a few candidate
columns only, for the groups.

Axis vocabulary: N tokens (store rows), U units, L labels of one family, K bins.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinymono.kernels import moments
from tinymono.validate import REAL, check_array, check_int, check_number

PAPER = {  # Bricken et al. 2023, for the tables: best feature per context, and the best neurons
    "pearson": {"arabic": 0.74, "dna": 0.80, "base64": 0.38, "hebrew": 0.55},
    "neuron_pearson": (0.10, 0.18),
    "specificity": {"arabic": 0.81},
    "specificity_high": {"arabic": 0.98},  # the paper's threshold: activation above 5
}
SCORES = ("pearson", "specificity", "specificity_high", "auroc")


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


def _top_k_merge(vals, rows, A, lo, scratch):
    """Merge the running top-k per column (vals, rows [k, U], descending) with block A [b, U] that starts at
    store row lo. Only entries above a column's current k-th value (and above 0) can enter, so after the
    first blocks few entries are looked at, and only the columns they are in are sorted again (the others
    keep their k entries as they are). scratch: a moments.SparseBlocks, whose buffers find them."""
    k = vals.shape[0]
    r, c = scratch.above(A, np.maximum(vals[-1], 0))  # [n] candidates
    if len(r) == 0:
        return vals, rows
    units = np.unique(c)  # the columns that have candidates
    cand_v = np.concatenate([vals[:, units].ravel(), A[r, c]])  # a column's old entries first, in their order
    cand_c = np.concatenate([np.tile(units, k), c])  # vals[:, units].ravel() runs over those units fastest
    cand_r = np.concatenate([rows[:, units].ravel(), lo + r])
    order = np.lexsort((-cand_v, cand_c))  # by unit, then by value descending; ties keep the order above
    rank = np.arange(len(order)) - np.searchsorted(cand_c[order], cand_c[order])  # place within its unit
    keep = order[rank < k]
    new_v, new_r = vals.copy(), rows.copy()
    new_v[rank[rank < k], cand_c[keep]] = cand_v[keep]  # each such unit has its k old entries: all slots fill
    new_r[rank[rank < k], cand_c[keep]] = cand_r[keep]
    return new_v, new_r


class LabelStats:
    """Running sums, over row blocks, for every score of every unit against every label of some label
    families (each family partitions the tokens: every token has exactly one context label).

    update(A [b, U] >= 0, {family: label ids [b]}); the pass needs each unit's maximum up front (for the
    half-max threshold and the histogram's bins)."""

    def __init__(self, unit_max, families: dict, bins=64):
        self.unit_max = check_array("unit_max", unit_max, ("U",), kinds=REAL, nonempty=False).astype(np.float64)
        self.U, self.bins = len(self.unit_max), check_int("bins", bins, lo=1)
        self.scale = np.divide(self.bins, self.unit_max, out=np.zeros(self.U), where=self.unit_max > 0)
        self.n, self.mean, self.m2 = 0, np.zeros(self.U), np.zeros(self.U)  # Chan's running moments of a
        self._entries = moments.SparseBlocks(share=2.0)  # every block's nonzero entries
        self.fam = {}
        for name, L in families.items():
            check_int(f"families[{name!r}] (its number of labels)", L, lo=1)
            self.fam[name] = {"count": np.zeros(L, np.int64), "co": np.zeros((L, self.U)),  # co-moment with y
                              "mass": np.zeros((L, self.U)), "mass_high": np.zeros((L, self.U)),
                              "fires": np.zeros((L, self.U), np.int64),
                              "hist": np.zeros((L, self.U, self.bins), np.int64)}  # nonzero a only

    def update(self, A, labels: dict):
        A = check_array("A", A, ("b", self.U), kinds=REAL, finite=False, nonempty=False)  # analyse_units scans
        if len(A):
            # the nonzero entries carry everything: the zeros add only to counts, known from the nonzeros'
            self.update_entries(*moments.nonzero_entries(A, self._entries), len(A), labels)

    def update_entries(self, rows, cols, vals, b, labels: dict):
        """update() from a block's nonzero entries alone (rows, cols, vals [nnz], in row-major order, as
        moments.nonzero_entries gives them) and its number of rows b."""
        vals = vals.astype(np.float64)
        mean_b, m2_b = moments.column_moments(cols, vals, b, self.U)  # the block's, merged into the running ones
        n_new = self.n + b
        delta = mean_b - self.mean
        w = self.n * b / n_new  # Chan et al.: the cross term of merging two sets' moments
        self.m2 += m2_b + delta**2 * w
        high = vals >= 0.5 * self.unit_max[cols]
        bin_ = np.minimum((vals * self.scale[cols]).astype(np.int64), self.bins - 1)  # (0, max] -> 0..K-1
        for name, fam in self.fam.items():
            ids = np.asarray(labels[name], dtype=np.int64)
            L = len(fam["count"])
            if ids.shape != (b,) or ids.min() < 0 or ids.max() >= L:  # (b >= 1 here; the labels may be empty)
                raise ValueError(f"{name} labels must be [{b}] ids in 0..{L - 1}, got {ids.shape}"
                                 + (f" {ids.min()}..{ids.max()}" if ids.size else ""))
            count_b = np.bincount(ids, minlength=L)
            key = ids[rows] * self.U + cols  # [nnz] (label, unit)
            sums_b = np.zeros((L, self.U))
            _scatter_add(sums_b, key, vals)
            # co-moment of the block, sum (y - ybar_b)(a - abar_b) = sum y a - n_l abar_b, then Chan's merge
            fam["co"] += sums_b - count_b[:, None] * mean_b + np.outer(count_b / b - fam["count"] / max(self.n, 1),
                                                                      delta) * w
            fam["mass"] += sums_b
            _scatter_add(fam["mass_high"], key[high], vals[high])
            _scatter_add(fam["fires"], key)
            _scatter_add(fam["hist"], key * self.bins + bin_)
            fam["count"] += count_b
        self.mean += delta * b / n_new
        self.n = n_new

    def scores(self, name):
        """{score: [L, U]} for one family, plus count [L], coverage [L, U] (share of the label's tokens
        the unit fires on), auroc_err [L, U] (bound on the histogram's error) and hist [L, U, K]."""
        fam, n = self.fam[name], self.n
        count = fam["count"].astype(np.float64)
        var_y = count * (n - count) / max(n, 1)  # [L] sum (y - ybar)^2 of a 0/1 indicator
        den = np.sqrt(np.outer(var_y, self.m2))
        mass_total = fam["mass"].sum(axis=0)  # each family partitions the tokens: summing labels gives all
        high_total = fam["mass_high"].sum(axis=0)
        out = {"count": fam["count"].copy(), "hist": fam["hist"].copy(), "fires": fam["fires"].copy(),
               "pearson": np.divide(fam["co"], den, out=np.zeros_like(den), where=den > 0),
               "specificity": np.divide(fam["mass"], mass_total, out=np.zeros_like(fam["mass"]), where=mass_total > 0),
               "specificity_high": np.divide(fam["mass_high"], high_total, out=np.zeros_like(fam["mass"]),
                                             where=high_total > 0),
               "coverage": fam["fires"] / np.maximum(count, 1)[:, None]}
        out["auroc"], out["auroc_err"] = _histogram_auroc(fam["hist"], fam["count"], n)
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


def check_family(report, family):
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


def analyse_units(source, families=("context", "detail"), bins=64, top_k=32, keep_bytes=1 << 30):
    """Both passes over `source` (NeuronSource or FeatureSource) -> UnitReport.

    The second pass needs only each block's nonzero entries, so the first keeps them (compressed sparse
    rows: 8 bytes an entry) while they fit in keep_bytes, and then the source is read, and a FeatureSource
    encoded, once instead of twice (2M tokens of lesson 06's SAE, 14 latents a token: 240 MB); past
    keep_bytes they are dropped and the second pass reads the source again. Memory besides: one block of
    activations and its nonzero entries, plus the per-label histograms, L x U x bins int64 (context and
    detail labels, 4096 features, 64 bins: 71 MB). Time: the encoder's matmul is the largest part
    (docs/experiments.md, "The lessons' scoring passes" and "One encoding per scoring pass")."""
    bins, top_k = check_int("bins", bins, lo=1), check_int("top_k", top_k, lo=1)
    keep_bytes = check_int("keep_bytes", keep_bytes, lo=0)
    for fam in families:
        if fam not in ("context", "detail"):
            raise ValueError(f"families must be 'context' and/or 'detail', got {fam!r}")
    store, U = source.store, source.n_units
    if source.n_rows == 0:
        raise ValueError(f"the {source.kind} source has no rows to score")
    vmax, nnz, total = np.zeros(U), np.zeros(U, np.int64), np.zeros(U)
    top_v, top_r = np.full((top_k, U), -np.inf), np.zeros((top_k, U), np.int64)
    scratch = moments.SparseBlocks(share=2.0)  # the top-k's candidates, then the block's entries to keep
    kept, kept_bytes = [], 0  # (lo, indptr, idx, val) of every block so far, or None past keep_bytes
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
        top_v, top_r = _top_k_merge(top_v, top_r, A, lo, scratch)
        if kept is not None and len(A):
            kept.append((lo, *(a.copy() for a in scratch.pack(A))))
            kept_bytes += sum(a.nbytes for a in kept[-1][1:])
            kept = kept if kept_bytes <= keep_bytes else None
    top_r[~np.isfinite(top_v)] = -1  # fewer than top_k positive activations
    top_v[~np.isfinite(top_v)] = 0.0
    stats = LabelStats(vmax, {fam: len(_family_names(store, fam)) for fam in families}, bins=bins)

    def labels(lo, hi):
        return {fam: np.asarray(getattr(store, fam)[lo:hi]) for fam in families}

    if kept is None:
        for lo, A in source.blocks():
            stats.update(A, labels(lo, lo + len(A)))
    else:
        for lo, indptr, idx, val in kept:
            b = len(indptr) - 1
            stats.update_entries(*moments.entries(indptr, idx, val), b, labels(lo, lo + b))
    n = source.n_rows
    return UnitReport(source.kind, n, nnz / n, vmax, total / n, stats.m2, top_v, top_r, bins,
                      {fam: _family_names(store, fam) for fam in families},
                      {fam: stats.scores(fam) for fam in families})


def best_units(report, family, min_coverage=0.05):
    """{label: {score: (unit, value)}}: the best unit for each label under each score. Under the two
    specificities only units firing on >= min_coverage of the label's tokens compete."""
    check_family(report, family)
    check_number("min_coverage", min_coverage, 0, 1)
    fam, out = report.families[family], {}
    for l, label in enumerate(report.names[family]):
        out[label] = {}
        for score in SCORES:
            value = fam[score][l].copy()
            if score.startswith("specificity"):
                value[fam["coverage"][l] < min_coverage] = -np.inf
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
    fam, names = report.families[check_family(report, family)], report.names[family]
    labels = names if labels is None else _check_labels(labels, names)
    k, n_candidates = check_int("k", k, lo=1), check_int("n_candidates", n_candidates, lo=1)
    check_number("min_specificity", min_specificity, 0, 1)
    cands, eligible = {}, {}
    for label in labels:
        l = names.index(label)
        r = np.where((fam["specificity"][l] >= min_specificity) & (fam["pearson"][l] > 0), fam["pearson"][l], -np.inf)
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
        count = fam["count"][l]
        var_y = count * (report.n_rows - count) / report.n_rows
        scale = 1.0 / report.max[members]
        co_y = fam["pearson"][l, members] * np.sqrt(report.m2[members] * var_y) * scale  # cov(a_i / max_i, y)
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
                      "singles": [float(fam["pearson"][l, members[j]]) for j in group], "eligible": eligible[label]}
    return out


def comparison_table(features, neurons, groups=None, family="context", labels=None):
    """One row per label: the best feature and the best neuron by correlation (with their other scores),
    the best feature group, and the paper's numbers where it gives them."""
    names = features.names[check_family(features, family)]
    check_family(neurons, family)
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


def group_pearson(row):
    """A comparison_table row's group correlation for a figure: NaN where no group formed (no feature specific
    enough to join one, or groups not asked for), which a bar of height 0 would hide."""
    group = row.get("group") or {}
    return float(group["pearson"]) if group.get("units") else float("nan")


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
    lines.append("columns: the label's best feature and best neuron by r, Pearson's correlation of the unit's activation "
                 "with the label; spec, the share of the unit's activation mass on the label's bytes; hi, the same "
                 "counting only activations above half the unit's maximum (the paper's: above 5); auc, the AUROC of "
                 "the activation as a detector of the label; [paper] and [p], the paper's value where it gives one; "
                 "group, the best sum of up to 3 features each >= 0.9 specific: its r and its units")
    return "\n".join(lines)
