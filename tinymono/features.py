"""One unit at a time: where its activations come from, its examples, its logit weights, and the card
the feature browser shows.

- NeuronSource / FeatureSource: the MLP neurons of an activation store, or an SAE's latents on its rows,
  read in row blocks (what scores.analyse_units streams over).
- top_examples / quantile_examples: the strongest activations, and some at each strength, as pieces of
  text around the activating byte (the paper's feature pages; sae_vis).
- logit_weights: the feature's decoder direction pushed through W_out, the final layer norm taken as
  mean removal, and W_U: which next bytes the feature promotes.
- feature_cards: all of it, JSON-ready, for browser.py.

Axis vocabulary: N tokens (store rows), U units, L labels of one family, K bins, M MLP neurons (d_mlp),
D d_model, V vocabulary.
"""
from __future__ import annotations

import numpy as np

from tinymono import sae
from tinymono.scores import SCORES, check_family
from tinymono.text import byte_pieces, token_text
from tinymono.validate import REAL, check_array, check_int


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
        return self._encode(self.store.read_float32(lo, hi), units)

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
        if sae_params["W_dec"].shape != (sae_cfg.d_sae, store.d):
            raise ValueError(f"sae_params['W_dec'] has shape {sae_params['W_dec'].shape}; the store's rows have "
                             f"d={store.d} and the config d_sae={sae_cfg.d_sae}")
        self.params, self.cfg, self.n_units = sae_params, sae_cfg, sae_cfg.d_sae

    def _encode(self, x, units):
        x = x.astype(self.params["W_dec"].dtype, copy=False)
        if units is None:
            return sae.encode(self.params, x, self.cfg)
        return sae.encode_units(self.params, x, self.cfg, units)



# ----------------------------------------------------------------------------------------------------
# one unit: examples, histogram, logit weights


def top_examples(source, report, unit, k=8, before=32, after=8):
    """The unit's k strongest activations as examples, more than `before` rows apart (one stretch of text
    would otherwise fill the list): [{"row", "activation", "tokens" [w], "acts" [w], "centre"}], the
    window running from `before` bytes before the activating byte to `after` after it.

    The candidates are the report's top_k rows; when they crowd into fewer than k stretches and the unit
    fires elsewhere too, the unit's whole column is read once to find the rest."""
    unit = check_int("unit", unit, 0, source.n_units - 1)
    k, before, after = check_int("k", k, lo=0), check_int("before", before, lo=0), check_int("after", after, lo=0)

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
    """The example of `unit` at row r: {"row", "activation", "tokens" [w], "acts" [w], "centre"}."""
    lo, hi = max(0, r - before), min(source.n_rows, r + after + 1)
    acts = source.activations(lo, hi, units=np.array([unit]))[:, 0]
    return {"row": r, "activation": float(acts[r - lo]), "tokens": np.asarray(source.store.tokens[lo:hi]),
            "acts": acts, "centre": r - lo}


def quantile_examples(source, units, n_bands=4, per_band=2, before=32, after=8, seed=0):
    """Beside the top examples, what a unit does at its ordinary strengths (as Anthropic's feature pages and
    sae_vis show): its nonzero activations cut into n_bands bands of equal count (quantiles: the weakest
    quarter, ...), and per_band examples drawn at random (seeded) from each. One pass over the source
    reads the columns of all `units` at once. -> {unit: [{"band": "0-25%", "lo": a, "hi": b, "examples":
    [...]}]}, bands weakest first; a unit that never fires gets [], one that fired m < n_bands times m bands."""
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
        bands, n = [], min(n_bands, order.size)  # a unit that fired fewer times than n_bands: fewer, wider bands
        for b, chunk in enumerate(np.array_split(order, n)):
            picked = np.sort(rng.choice(chunk, size=min(per_band, chunk.size), replace=False))
            bands.append({"band": f"{100 * b // n}-{100 * (b + 1) // n}%", "lo": float(v[chunk[0]]),
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
    fam = report.families[check_family(report, family)]
    unit = check_int("unit", unit, 0, len(report.max) - 1)
    counts = fam["hist"][:, unit]
    return np.linspace(0, report.max[unit], report.bins + 1), counts, fam["count"] - counts.sum(axis=1)


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


# ----------------------------------------------------------------------------------------------------
# feature cards: what the browser shows


def feature_cards(source, report, params, cfg, units, family="context", n_examples=8, before=32, after=8,
                  n_logits=8, n_bands=4, per_band=2, n_nearest=5):
    """A JSON-ready card per unit: density, best label of `family` by correlation and its scores, top
    examples (pieces of text with their activation), examples from n_bands quantile bands of its
    activations (per_band each: quantile_examples), the n_nearest features by decoder cosine (features
    only), the activation histogram per label and the logit weights (for features; neurons get their
    W_out row through the same path)."""
    names = report.names[check_family(report, family)]
    fam = report.families[family]
    units = [int(check_int("unit", u, 0, len(report.max) - 1)) for u in units]
    W_dec = source.params["W_dec"] if source.kind == "feature" else np.eye(cfg.d_mlp)
    bands = quantile_examples(source, units, n_bands, per_band, before, after) if per_band else {}
    nearest = nearest_by_decoder(W_dec, units, n_nearest) if source.kind == "feature" and n_nearest else {}

    def shown(ex):  # each piece: its text, its largest activation, and which of its bytes activated (1..; 0: none)
        pieces = [(text, float(ex["acts"][a:b].max()), ex["centre"] - a + 1 if a <= ex["centre"] < b else 0)
                  for text, a, b in byte_pieces(ex["tokens"])]
        return {"row": ex["row"], "activation": ex["activation"], "pieces": pieces}
    cards = []
    for u in units:
        l = int(np.argmax(fam["pearson"][:, u]))  # a unit correlating with no label gets "-" below
        examples = [shown(ex) for ex in top_examples(source, report, u, n_examples, before, after)]
        edges, counts, zeros = activation_histogram(report, family, u)
        promoted, suppressed = top_logits(logit_weights(params, cfg, W_dec[u]), n_logits)
        cards.append({"unit": u, "kind": report.kind, "density": float(report.density[u]),
                      "max": float(report.max[u]),
                      "best": {"label": names[l] if fam["pearson"][l, u] > 0 else "-",
                               **{s: float(fam[s][l, u]) for s in SCORES}},
                      "examples": examples,
                      "quantiles": [{**{k: band[k] for k in ("band", "lo", "hi")},
                                     "examples": [shown(ex) for ex in band["examples"]]} for band in bands.get(u, [])],
                      "nearest": nearest.get(u, []),
                      "histogram": {"edges": edges.tolist(), "labels": list(names), "counts": counts.tolist(),
                                    "zeros": zeros.tolist()},
                      "logits": {"promoted": promoted, "suppressed": suppressed}})
    return cards
