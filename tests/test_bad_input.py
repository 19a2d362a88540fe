"""Bad input into the public functions: the only allowed outcomes are a correct result, or a ValueError or
TypeError raised before any work, whose message names the argument (and says what it got).

Three parts: a table of hand-picked cases (wrong ndim, dtype, NaN/inf, empty, out-of-range integers,
negative sizes), edge cases that must give a correct result rather than an error, and hypothesis, which
throws arrays of arbitrary shape and dtype (float, int, bool, complex, object; NaN, inf; empty) at a
handful of functions and checks each outcome against the function's stated contract.

When a case fails, the likely mistake is a missing check at the top of the function (the error then comes
from deep inside NumPy, or there is no error and the result is silently wrong), or a message that does
not say which argument is wrong."""
import copy
import re
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinymono import features
from tinymono import gradcheck
from tinymono import groundtruth as gt
from tinymono import interventions
from tinymono import layers as L
from tinymono import metrics
from tinymono import metrics as M
from tinymono import optim
from tinymono import sae
from tinymono import scores
from tinymono import text
from tinymono import toy
from tinymono import transformer as tr

rng = np.random.default_rng(0)
NAN, INF = np.nan, np.inf

SAE_CFG = sae.SAEConfig(d_in=4, d_sae=8)
SAE_P = sae.init(SAE_CFG, np.random.default_rng(0))
X = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
TCFG = tr.TransformerConfig(d_vocab=7, d_model=4, d_mlp=8, n_heads=2, d_head=2, n_ctx=5)
TP = tr.init(TCFG, np.random.default_rng(0), np.float64)
TOKENS = np.array([[1, 2, 3], [4, 5, 6]])
TOY = toy.ToyConfig(5, 2, n_inst=2, batch_size=16)
GT = gt.GroundTruth(gt.GroundTruthConfig(d=4, n_features=8, mean_active=2))
W_E = np.zeros((5, 3))
ATTN = [np.zeros((1, 3, 4)), *(a for _ in range(3) for a in (np.zeros((2, 4, 2)), np.zeros((2, 2)))),
        np.zeros((2, 2, 4)), np.zeros(4)]


def with_nan(a, where=(0, 0), value=NAN):
    a = np.array(a, dtype=np.float64)
    a[where] = value
    return a


def sae_with(k, value):
    return {**SAE_P, k: with_nan(SAE_P[k], value=value).astype(np.float32)}


def small_report():
    """A two-label analysis of 3 units over 40 rows (unit 2 never fires), for the report-reading functions."""
    A = np.random.default_rng(0).exponential(1.0, (40, 3)) * (np.arange(40)[:, None] % 3 != 0)
    A[:, 2] = 0
    store = SimpleNamespace(context=np.arange(40) % 2, context_names=("a", "b"), tokens=np.zeros(40, np.uint16))

    class Source(features.NeuronSource):
        kind = "neuron"

        def __init__(self):
            self.store, self.block_rows, self.n_rows, self.n_units = store, 16, 40, 3

        def activations(self, lo, hi, units=None):
            return A[lo:hi] if units is None else A[lo:hi][:, units]

    source = Source()
    return source, scores.analyse_units(source, families=("context",), bins=4, top_k=4)


SOURCE, REPORT = small_report()


def no_rows(source):
    empty = copy.copy(source)
    empty.n_rows = 0
    return empty

# (what is wrong, the call, the error class, the argument its message must name)
BAD = [
    # layers: dtypes are checked on every call (cheap); values are not scanned (layers run every step)
    ("embedding: int W_E", lambda: L.embedding_forward(np.zeros(0, np.int64), np.zeros((5, 3), int)),
     TypeError, "W_E"),
    ("embedding: float ids", lambda: L.embedding_forward(np.array([0.5]), W_E), TypeError, "ids"),
    ("embedding: bool ids", lambda: L.embedding_forward(np.array([True]), W_E), TypeError, "ids"),
    ("embedding: id too large", lambda: L.embedding_forward(np.array([0, 5]), W_E), ValueError, "ids"),
    ("embedding: negative id", lambda: L.embedding_forward(np.array([[-1]]), W_E), ValueError, "ids"),
    ("cross-entropy: empty batch", lambda: L.cross_entropy_forward(np.zeros((0, 4)), np.zeros(0, int)),
     ValueError, "targets"),
    ("cross-entropy: float targets", lambda: L.cross_entropy_forward(np.zeros((2, 4)), np.zeros(2)), TypeError,
     "targets"),
    ("cross-entropy: int logits", lambda: L.cross_entropy_forward(np.zeros((2, 4), int), np.zeros(2, int)),
     TypeError, "logits"),
    ("cross-entropy: target out of range", lambda: L.cross_entropy_forward(np.zeros((2, 4)), np.array([0, 4])),
     ValueError, "targets"),
    ("cross-entropy: 0-d logits", lambda: L.cross_entropy_forward(np.zeros(()), np.zeros((), int)),
     ValueError, "logits"),
    ("log_softmax: no classes", lambda: L.log_softmax(np.zeros((2, 0))), ValueError, "logits"),
    ("gelu: int array", lambda: L.gelu_forward(np.arange(3)), TypeError, "x"),
    ("gelu: bool array", lambda: L.gelu_forward(np.array([True, False])), TypeError, "x"),
    ("gelu: object array", lambda: L.gelu_forward(np.array([1.0, 2.0], dtype=object)), TypeError, "x"),
    ("gelu: complex array", lambda: L.gelu_forward(np.array([1j])), TypeError, "x"),
    ("gelu: a list", lambda: L.gelu_forward([1.0, 2.0]), TypeError, "x"),
    ("gelu: unknown approximation", lambda: L.gelu_forward(np.zeros(2), "erf"), ValueError, "approximate"),
    ("relu: int array", lambda: L.relu_forward(np.arange(3)), TypeError, "x"),
    ("linear: int x", lambda: L.linear_forward(np.zeros((2, 4), int), np.zeros((4, 5)), np.zeros(5)), TypeError, "x"),
    ("linear: W [O, I]", lambda: L.linear_forward(np.zeros((2, 4)), np.zeros((5, 4)), np.zeros(5)), ValueError, "W"),
    ("layernorm: eps 0", lambda: L.layernorm_forward(np.zeros((2, 4)), np.ones(4), np.zeros(4), eps=0.0),
     ValueError, "eps"),
    ("layernorm: eps NaN", lambda: L.layernorm_forward(np.zeros((2, 4)), np.ones(4), np.zeros(4), eps=NAN),
     ValueError, "eps"),
    ("attention: no positions", lambda: L.attention_forward(np.zeros((1, 0, 4)), *ATTN[1:]), ValueError, "x"),
    ("attention: int bias", lambda: L.attention_forward(*ATTN[:-1], np.zeros(4, int)),
     TypeError, "b_O"),
    ("causal_mask: negative T", lambda: L.causal_mask(-1), ValueError, "T"),
    ("causal_mask: float T", lambda: L.causal_mask(2.5), TypeError, "T"),
    # toy model
    ("toy batch: batch_size 0 (was 16 rows)", lambda: toy.generate_batch(TOY, 0, batch_size=0), ValueError,
     "batch_size"),
    ("toy batch: negative batch_size", lambda: toy.generate_batch(TOY, 0, batch_size=-4), ValueError, "batch_size"),
    ("toy batch: float batch_size", lambda: toy.generate_batch(TOY, 0, batch_size=2.5), TypeError, "batch_size"),
    ("toy batch: bool batch_size", lambda: toy.generate_batch(TOY, 0, batch_size=True), TypeError, "batch_size"),
    ("toy batch: negative step", lambda: toy.generate_batch(TOY, -1), ValueError, "step"),
    ("toy batch: float step", lambda: toy.generate_batch(TOY, 1.0), TypeError, "step"),
    ("toy batch: float seed", lambda: toy.generate_batch(TOY, 0, seed=0.5), TypeError, "seed"),
    ("toy forward: feats mismatch", lambda: toy.forward(toy.init(TOY, rng), np.zeros((2, 3, 4)), TOY), ValueError,
     "x"),
    ("toy forward: NaN", lambda: toy.forward(toy.init(TOY, rng), with_nan(np.zeros((2, 3, 5)), (1, 2, 4)), TOY),
     ValueError, "x"),
    ("toy forward: int x", lambda: toy.forward(toy.init(TOY, rng), np.zeros((2, 3, 5), int), TOY), TypeError, "x"),
    ("toy forward: no instance axis", lambda: toy.forward(toy.init(TOY, rng), np.zeros((3, 5)), TOY), ValueError,
     "x"),
    ("toy init: a seed for rng", lambda: toy.init(TOY, 0), TypeError, "rng"),
    ("toy loss: out of another shape", lambda: toy.loss(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)), TOY), ValueError,
     "out"),
    ("toy geometry: 1-D W", lambda: toy.feature_norms(np.ones(3)), ValueError, "W"),
    ("toy geometry: no hidden dims", lambda: toy.dims_per_feature(np.ones((2, 0, 3))), ValueError, "W"),
    ("toy geometry: complex W", lambda: toy.superposition(np.ones((2, 3), complex)), TypeError, "W"),
    ("toy evaluate: batch_size 0", lambda: toy.evaluate(TOY, toy.init(TOY, rng), 0), ValueError, "batch_size"),
    # ground truth
    ("ground truth: negative batch", lambda: GT.sample(rng, -1), ValueError, "batch_size"),
    ("ground truth: float batch", lambda: GT.sample(rng, 2.0), TypeError, "batch_size"),
    ("ground truth: a seed for rng", lambda: GT.sample(42, 3), TypeError, "rng"),
    ("ground truth: bool d", lambda: gt.GroundTruthConfig(d=True), TypeError, "d"),
    ("ground truth: NaN mean_active", lambda: gt.GroundTruthConfig(mean_active=NAN), ValueError, "mean_active"),
    ("ground truth: str decay", lambda: gt.GroundTruthConfig(decay="0.9"), TypeError, "decay"),
    ("ground truth: negative seed", lambda: gt.GroundTruthConfig(seed=-1), ValueError, "seed"),
    ("ground truth: zero-dim directions", lambda: gt.random_directions(3, 0, rng), ValueError, "d"),
    # sparse autoencoder
    ("sae: 1-D x (L0 16x too small)", lambda: sae.forward(SAE_P, X[0], SAE_CFG), ValueError, "x"),
    ("sae: 3-D x (L1 4x too big)", lambda: sae.forward(SAE_P, X[None].repeat(4, 0), SAE_CFG), ValueError, "x"),
    ("sae: NaN in x", lambda: sae.forward(SAE_P, with_nan(X, (3, 1)).astype(np.float32), SAE_CFG), ValueError, "x"),
    ("sae: inf in x", lambda: sae.forward(SAE_P, with_nan(X, (0, 0), -INF).astype(np.float32), SAE_CFG), ValueError,
     "x"),
    ("sae: empty batch", lambda: sae.forward(SAE_P, X[:0], SAE_CFG), ValueError, "x"),
    ("sae: int x", lambda: sae.forward(SAE_P, X.astype(int), SAE_CFG), TypeError, "x"),
    ("sae: x of another width", lambda: sae.forward(SAE_P, X[:, :3], SAE_CFG), ValueError, "x"),
    ("sae: NaN parameter", lambda: sae.forward(sae_with("W_dec", NAN), X, SAE_CFG), ValueError, "W_dec"),
    ("sae encode: 1-D x", lambda: sae.encode(SAE_P, X[0], SAE_CFG), ValueError, "x"),
    ("sae encode: NaN (ReLU would make it 0)", lambda: sae.encode(SAE_P, with_nan(X), SAE_CFG), ValueError, "x"),
    ("sae encode: NaN in W_enc (ReLU would make it 0)", lambda: sae.encode(sae_with("W_enc", NAN), X, SAE_CFG),
     ValueError, "W_enc"),
    ("sae decode: f of another width", lambda: sae.decode(SAE_P, np.zeros((2, 4))), ValueError, "f"),
    ("sae: NaN in the median's sample", lambda: sae.geometric_median(with_nan(np.ones((3, 2)))), ValueError, "X"),
    ("sae: complex sample", lambda: sae.geometric_median(np.ones((3, 2), complex)), TypeError, "X"),
    ("sae init: a seed for rng", lambda: sae.init(SAE_CFG, 0), TypeError, "rng"),
    ("sae resample: int mask", lambda: sae.resample_dead(SAE_P, None, np.zeros(8, int), X, SAE_CFG, rng),
     TypeError, "dead"),
    ("sae resample: NaN inputs", lambda: sae.resample_dead(SAE_P, None, np.ones(8, bool), with_nan(X), SAE_CFG, rng),
     ValueError, "inputs"),
    # transformer
    ("transformer: empty batch (the old crash)", lambda: tr.forward(TP, np.zeros((0, 3), int), TCFG), ValueError,
     "tokens"),
    ("transformer: float tokens", lambda: tr.forward(TP, TOKENS.astype(float), TCFG), TypeError, "tokens"),
    ("transformer: bool tokens", lambda: tr.forward(TP, TOKENS > 2, TCFG), TypeError, "tokens"),
    ("transformer: loss on no windows", lambda: tr.loss(TP, np.zeros((0, 4), int), TCFG), ValueError, "tokens"),
    ("sample: n_new -3 (returned the prompt)", lambda: tr.sample(TP, TCFG, [1], -3, rng), ValueError, "n_new"),
    ("sample: float n_new", lambda: tr.sample(TP, TCFG, [1], 2.5, rng), TypeError, "n_new"),
    ("sample: NaN temperature", lambda: tr.sample(TP, TCFG, [1], 2, rng, temperature=NAN), ValueError, "temperature"),
    ("sample: negative temperature", lambda: tr.sample(TP, TCFG, [1], 2, rng, temperature=-1), ValueError,
     "temperature"),
    ("sample: top_k 0", lambda: tr.sample(TP, TCFG, [1], 2, rng, top_k=0), ValueError, "top_k"),
    ("sample: top_k past the vocabulary", lambda: tr.sample(TP, TCFG, [1], 2, rng, top_k=8), ValueError, "top_k"),
    ("sample: bool prompt", lambda: tr.sample(TP, TCFG, np.array([True]), 2, rng), ValueError, "prompt"),
    ("hook: NaN replacement", lambda: tr.forward(TP, TOKENS, TCFG, hook_post=np.full(8, NAN)), ValueError,
     "replacement"),
    ("hook: complex replacement", lambda: tr.forward(TP, TOKENS, TCFG, hook_post=lambda post: post + 1j), TypeError,
     "replacement"),
    ("backward: dlogits of another shape", lambda: tr.backward(TP, tr.forward(TP, TOKENS, TCFG)[1], TCFG,
                                                               np.zeros((2, 3, 6))), ValueError, "dlogits"),
    ("stream_bits: 2-D tokens", lambda: tr.stream_bits(TP, TCFG, TOKENS, fast=False), ValueError, "tokens"),
    ("stream_bits: negative token", lambda: tr.stream_bits(TP, TCFG, np.array([1, -1, 2]), fast=False), ValueError,
     "tokens"),
    ("stream_bits: batch 0", lambda: tr.stream_bits(TP, TCFG, np.arange(6), batch=0, fast=False), ValueError,
     "batch"),
    ("stream_bits: float stride", lambda: tr.stream_bits(TP, TCFG, np.arange(6), stride=1.5, fast=False), TypeError,
     "stride"),
    ("label_means: negative label", lambda: tr.label_means(np.ones(2), [0, -1], ["a"]), ValueError, "labels"),
    ("label_means: bits of another length", lambda: tr.label_means(np.ones(3), [0, 0], ["a"]), ValueError, "bits"),
    ("transformer init: int dtype", lambda: tr.init(TCFG, rng, dtype=np.int32), TypeError, "dtype"),
    # metrics
    ("mse: (4, 3) against (4, 1) (broadcast)", lambda: M.reconstruction_mse(np.ones((4, 3)), np.ones((4, 1))),
     ValueError, "x_hat"),
    ("mse: NaN", lambda: M.reconstruction_mse(with_nan(np.ones((4, 3))), np.ones((4, 3))), ValueError, "x"),
    ("l0: empty (was NaN)", lambda: M.l0(np.zeros((0, 5))), ValueError, "f"),
    ("l0: 1-D f", lambda: M.l0(np.ones(5)), ValueError, "f"),
    ("l0: NaN counted as active", lambda: M.l0(with_nan(np.zeros((2, 3)))), ValueError, "f"),
    ("density: empty (was NaN)", lambda: M.feature_density(np.zeros((0, 5))), ValueError, "f"),
    ("mmcs: no learned directions (was NaN)", lambda: M.mmcs(np.eye(3), np.zeros((0, 3))), ValueError, "learned"),
    ("mmcs: no true directions (was NaN)", lambda: M.mmcs(np.zeros((0, 3)), np.eye(3)), ValueError, "true"),
    ("mmcs: other dimension", lambda: M.mmcs(np.eye(3), np.eye(4)), ValueError, "learned"),
    ("mmcs: complex", lambda: M.mmcs(np.eye(3) * 1j, np.eye(3)), TypeError, "true"),
    ("one-to-one: NaN", lambda: M.one_to_one_score(np.eye(3), with_nan(np.eye(3))), ValueError, "learned"),
    ("recovered: NaN threshold", lambda: M.fraction_recovered(np.eye(3), np.eye(3), NAN), ValueError, "threshold"),
    ("dead fraction: empty (was NaN)", lambda: M.dead_fraction([]), ValueError, "density"),
    ("dead fraction: density above 1", lambda: M.dead_fraction([0.5, 2.0]), ValueError, "density"),
    ("histogram: bins 0", lambda: M.log_density_histogram(np.ones(3) / 2, bins=0), ValueError, "bins"),
    ("explained variance: NaN", lambda: M.explained_variance(with_nan(np.ones((3, 2))), np.ones((3, 2))),
     ValueError, "x"),
    ("explained variance: object", lambda: M.explained_variance(np.ones((3, 2), object), np.ones((3, 2))), TypeError,
     "x"),
    # analysis
    ("pearson: a NaN column (was scored 0)", lambda: metrics.pearson(with_nan(np.ones((4, 2)), (1, 1)), [0, 1, 0, 1]),
     ValueError, "A"),
    ("pearson: 1-D A", lambda: metrics.pearson(np.ones(4), [0, 1, 0, 1]), ValueError, "A"),
    ("pearson: no tokens", lambda: metrics.pearson(np.ones((0, 2)), []), ValueError, "A"),
    ("pearson: y of another length", lambda: metrics.pearson(np.ones((4, 2)), [0, 1]), ValueError, "y"),
    ("specificity: negative activation", lambda: metrics.specificity(-np.ones((2, 1)), [0, 1]), ValueError, "A"),
    ("specificity: unknown threshold", lambda: metrics.specificity(np.ones((2, 1)), [0, 1], "max"), ValueError,
     "threshold"),
    ("auroc: inf", lambda: metrics.auroc(with_nan(np.ones((3, 1)), value=INF), [0, 1, 0]), ValueError, "A"),
    ("clamp_hook: unit -1 (was the last latent)", lambda: interventions.clamp_hook(SAE_P, SAE_CFG, -1, 1.0), ValueError, "units"),
    ("clamp_hook: unit d_sae", lambda: interventions.clamp_hook(SAE_P, SAE_CFG, 8, 1.0), ValueError, "units"),
    ("clamp_hook: float unit", lambda: interventions.clamp_hook(SAE_P, SAE_CFG, 1.0, 1.0), TypeError, "units"),
    ("clamp_hook: three values for two units", lambda: interventions.clamp_hook(SAE_P, SAE_CFG, [1, 2], [1.0, 2, 3]),
     ValueError, "values"),
    ("clamp_hook: NaN value", lambda: interventions.clamp_hook(SAE_P, SAE_CFG, 1, NAN), ValueError, "values"),
    ("ablation_hook: unit -1", lambda: interventions.ablation_hook(SAE_P, SAE_CFG, -1), ValueError, "units"),
    ("ablation_effect: unit -1", lambda: interventions.ablation_effect(TP, TCFG, SAE_P, SAE_CFG, -1, TOKENS, fast=False),
     ValueError, "unit"),
    ("token_text: 300", lambda: text.token_text(300), ValueError, "t"),
    ("token_text: -1", lambda: text.token_text(-1), ValueError, "t"),
    ("byte_pieces: 2-D", lambda: text.byte_pieces(np.zeros((2, 2), int)), ValueError, "tokens"),
    ("format_example: centre past the end", lambda: text.format_example([65, 66], 2), ValueError, "centre"),
    ("logit_weights: direction of another length", lambda: features.logit_weights(TP, TCFG, np.ones(7)), ValueError,
     "direction"),
    ("top_logits: k -1", lambda: features.top_logits(np.arange(5.0), -1), ValueError, "k"),
    ("loss_recovered: NaN", lambda: metrics.loss_recovered(NAN, 1.0, 2.0), ValueError, "l_clean"),
    ("written_share: float tokens", lambda: text.written_share(np.array([65.0, 66.0]), "dna"), TypeError, "tokens"),
    ("written_share: negative byte", lambda: text.written_share(np.array([-191]), "dna"), ValueError, "tokens"),
    ("mean_loss: no windows", lambda: interventions.mean_loss(TP, TCFG, np.zeros((0, 4), int), fast=False), ValueError,
     "windows"),
    ("mean_loss: batch 0", lambda: interventions.mean_loss(TP, TCFG, TOKENS, batch=0, fast=False), ValueError, "batch"),
    ("loss_recovered_report: mean of another width", lambda: interventions.loss_recovered_report(
        TP, TCFG, TOKENS, SAE_P, SAE_CFG, np.zeros(3), fast=False), ValueError, "mean_acts"),
    ("top_examples: unit -1", lambda: features.top_examples(SOURCE, REPORT, -1), ValueError, "unit"),
    ("top_examples: unit past the end", lambda: features.top_examples(SOURCE, REPORT, 3), ValueError, "unit"),
    ("activation_histogram: unknown family", lambda: features.activation_histogram(REPORT, "detail", 0), ValueError,
     "family"),
    ("best_units: min_coverage 2", lambda: scores.best_units(REPORT, "context", min_coverage=2), ValueError,
     "min_coverage"),
    ("label_groups: unknown label", lambda: scores.label_groups(SOURCE, REPORT, "context", labels=["klingon"]),
     ValueError, "labels"),
    ("analyse_units: bins 0", lambda: scores.analyse_units(SOURCE, families=("context",), bins=0), ValueError, "bins"),
    ("analyse_units: unknown family", lambda: scores.analyse_units(SOURCE, families=("topic",)), ValueError, "families"),
    ("LabelStats: A of another width", lambda: scores.LabelStats(np.ones(3), {"c": 2}).update(np.ones((2, 4)),
                                                                                          {"c": [0, 1]}),
     ValueError, "A"),
    ("LabelStats: no labels for the block", lambda: scores.LabelStats(np.ones(3), {"c": 2}).update(np.ones((2, 3)),
                                                                                                {"c": []}),
     ValueError, "c labels must be"),
    ("analyse_units: a source of no rows", lambda: scores.analyse_units(no_rows(SOURCE)), ValueError, "no rows"),
    ("NeuronSource: block_rows 0", lambda: features.NeuronSource(SimpleNamespace(d=3), block_rows=0),
     ValueError, "block_rows"),
    # optimiser and gradient checks
    ("Adam: NaN lr", lambda: optim.Adam({"w": np.zeros(2)}, lr=NAN), ValueError, "lr"),
    ("clip: max_norm 0", lambda: optim.clip_grad_norm({"w": np.ones(2)}, 0.0), ValueError, "max_norm"),
    ("Schedule: NaN base_lr", lambda: optim.Schedule(NAN, 10), ValueError, "base_lr"),
    ("relative_error: sizes differ", lambda: gradcheck.relative_error(np.ones(3), np.ones(1)), ValueError,
     "analytic"),
    ("check_gradients: eps 0", lambda: gradcheck.check_gradients(lambda: 0.0, {}, {}, 1.0, eps=0.0), ValueError,
     "eps"),
]


def names(message, name):
    """Does the message name the argument (as a whole word)?"""
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", message) is not None


@pytest.mark.parametrize("call, error, name", [pytest.param(c, e, n, id=i) for i, c, e, n in BAD])
def test_bad_input_gives_a_clear_error(call, error, name):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert isinstance(info.value, error), (
        f"raised {type(info.value).__name__}, expected {error.__name__} (TypeError for a wrong type or dtype, "
        f"ValueError for a wrong shape, value or range): {info.value}")
    assert names(str(info.value), name), f"the message does not name {name!r}: {info.value}"


def test_edge_cases_give_correct_results():
    """Empty where empty makes sense, and the smallest valid sizes: a result, not an error."""
    out, _ = L.embedding_forward(np.zeros((0, 3), np.int64), W_E)
    assert out.shape == (0, 3, 3)
    out, _ = L.linear_forward(np.zeros((0, 4)), np.ones((4, 2)), np.ones(2))
    assert out.shape == (0, 2)
    assert sae.encode(SAE_P, X[:0], SAE_CFG).shape == (0, 8)
    x, codes = GT.sample(rng, 0, codes=True)
    assert x.shape == (0, 4) and codes.shape == (0, 8)
    assert toy.generate_batch(TOY, 0, batch_size=1).shape == (2, 1, 5), "batch_size 1 means one row"
    assert toy.generate_batch(TOY, np.int64(3)).shape == (2, 16, 5), "a NumPy integer step is an integer"
    assert tr.sample(TP, TCFG, [1, 2], 0, rng).tolist() == [1, 2], "n_new 0 returns the prompt"
    counts, _, n_dead = M.log_density_histogram([])
    assert counts.sum() == 0 and n_dead == 0
    assert M.l0(np.array([[True, False], [True, True]])) == 1.5, "booleans count as 0/1 activations"
    assert text.written_share([], "dna") == 0.0
    assert features.top_logits(np.arange(3.0), 0) == ([], [])
    assert interventions.clamp_hook(SAE_P, SAE_CFG, np.int32(7), np.float32(2.0))(np.ones((1, 2, 4), np.float32)).shape == \
        (1, 2, 4), "NumPy scalars are valid units and values"
    out, _ = sae.forward(SAE_P, X[:1], SAE_CFG)
    assert out.l0 == np.count_nonzero(out.f), "one row is a valid batch"


# ----------------------------------------------------------------------------------------------------
# hypothesis: arbitrary arrays; each function's contract decides whether an array is valid input

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int8, np.uint8, np.bool_, np.complex128, object]
VALUES = st.floats(-1e3, 1e3) | st.integers(-2, 8).map(float) | st.sampled_from([NAN, INF, -INF, 0.0])


@st.composite
def arrays(draw, width=None, max_dims=3):
    """An array of any dtype in DTYPES and any shape of up to max_dims axes (sides 0..5, so often empty);
    when `width` is given, half the time the last axis has that size (so valid inputs come up too)."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=5))
    if width is not None and shape and draw(st.booleans()):
        shape = shape[:-1] + (width,)
    values = draw(hnp.arrays(np.float64, shape, elements=VALUES))
    dtype = draw(st.sampled_from(DTYPES))
    with np.errstate(all="ignore"):
        if dtype is np.complex128:
            return values + 0.5j
        if dtype is np.bool_:
            return values > 0
        if np.dtype(dtype).kind in "iu":
            return np.nan_to_num(values).astype(dtype)
        return values.astype(dtype)


def is_real(a, finite=True):
    return a.dtype.kind in "fiub" and (not finite or a.dtype.kind != "f" or bool(np.isfinite(a).all()))


def outcome(call, valid, name):
    """Run call(); a valid input must give a result (returned), an invalid one a clear error naming `name`."""
    try:
        result = call()
    except (ValueError, TypeError) as e:
        assert not valid, f"valid input refused: {e}"
        assert names(str(e), name), f"the message does not name {name!r}: {e}"
        event("invalid: clear error")
        return None
    assert valid, f"invalid input accepted: {name} gave {result!r}"
    event("valid: result")
    return result


HSET = settings(max_examples=60, deadline=None)


@HSET
@given(arrays(width=4))
def test_any_array_into_sae_forward(x):
    valid = x.ndim == 2 and x.shape[1] == 4 and len(x) > 0 and x.dtype.kind == "f" and is_real(x)
    out = outcome(lambda: sae.forward(SAE_P, x, SAE_CFG)[0], valid, "x")
    if out is not None:
        assert out.f.shape == (len(x), 8) and out.l0 == np.count_nonzero(out.f) / len(x) and np.isfinite(out.loss)


@HSET
@given(arrays(width=3))
def test_any_array_into_transformer_forward(tokens):
    valid = (tokens.dtype.kind in "iu" and tokens.ndim == 2 and len(tokens) > 0 and 1 <= tokens.shape[1] <= 5
             and tokens.min() >= 0 and tokens.max() < 7)
    out = outcome(lambda: tr.forward(TP, tokens, TCFG)[0], valid, "tokens")
    if out is not None:
        assert out.shape == (*tokens.shape, 7) and np.isfinite(out).all()


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")  # x**3 of 1e3 in float16
@HSET
@given(arrays())
def test_any_array_into_gelu(x):
    out = outcome(lambda: L.gelu_forward(x)[0], x.dtype.kind == "f", "x")
    if out is not None:
        assert out.shape == x.shape and out.dtype == x.dtype, "gelu keeps the input's shape and dtype"


@HSET
@given(arrays(width=3))
def test_any_array_into_metrics(a):
    valid = a.ndim == 2 and a.size > 0 and is_real(a)
    got = outcome(lambda: M.l0(a), valid, "f")
    if got is not None:
        assert got == np.count_nonzero(a) / len(a)
    ref = np.ones((2, 3))
    got = outcome(lambda: M.reconstruction_mse(ref, a), a.shape == (2, 3) and is_real(a), "x_hat")
    if got is not None:
        assert got == pytest.approx(np.mean((ref - a.astype(np.float64)) ** 2), rel=1e-12)
    got = outcome(lambda: M.mmcs(np.eye(3), a), valid and a.shape[1] == 3, "learned")
    if got is not None:
        assert -1 - 1e-9 <= got <= 1 + 1e-9


@HSET
@given(arrays(width=2))
def test_any_array_into_pearson(A):
    y = np.arange(len(A)) % 2 if A.ndim else np.zeros(1)
    valid = A.ndim == 2 and A.size > 0 and is_real(A)
    r = outcome(lambda: metrics.pearson(A, y), valid, "A")
    if r is not None:
        assert r.shape == (A.shape[1],) and np.all(np.abs(r) <= 1 + 1e-9)


SCALARS = (st.integers(-3, 20) | st.floats(allow_nan=True) | st.booleans() | st.none() | st.text(max_size=2)
           | st.integers(-3, 20).map(np.int64))


@HSET
@given(SCALARS)
def test_any_scalar_as_a_size(n):
    integer = isinstance(n, (int, np.integer)) and not isinstance(n, bool)
    x = outcome(lambda: toy.generate_batch(TOY, 0, batch_size=n), n is None or (integer and n >= 1), "batch_size")
    if x is not None:
        assert x.shape == (2, 16 if n is None else n, 5)
    tokens = outcome(lambda: tr.sample(TP, TCFG, [1], n, rng, temperature=0), integer and n >= 0, "n_new")
    if tokens is not None:
        assert len(tokens) == 1 + n
    unit_ok = integer and 0 <= n < 8
    outcome(lambda: interventions.clamp_hook(SAE_P, SAE_CFG, n, 1.0), unit_ok, "units")
