"""Exercise mode: write the lessons' functions yourself, tutored by tests that say what is wrong.

    python -m tinymono exercises 02 --out ex02      a workspace for lesson 02 (no NN: every lesson below)
    python -m pytest ex02 -x                         work down the list, one function at a time
    TINYMONO_IMPL=ex02 python lessons/02_sparse_autoencoder.py --scale smoke    the lesson, on your code

A workspace holds a copy of each library module a lesson builds (sae.py for lesson 02), made from the
library's own source with the bodies of the functions below replaced by a docstring and
`raise NotImplementedError("exercise NN.k: ...")` (blank.py), and one test file per lesson whose tests
call the tutor (tutor.py and the checks beside it): each compares one function with the library's on
small random inputs and names the likely mistake. switch.py is the TINYMONO_IMPL hook.

This file is the list of exercises, as data, in the order a learner meets them: lesson, module, function,
what the NotImplementedError says, and the docstring the blank gets.
"""
from __future__ import annotations

from typing import NamedTuple

LESSONS = {"01": "01_superposition", "02": "02_sparse_autoencoder", "04": "04_transformer_by_hand",
           "06": "06_sae_on_transformer", "07": "07_interpreting_features"}
MODULES = ("layers", "toy", "sae", "metrics")  # the library modules a workspace may hold, imported in this order


class Exercise(NamedTuple):
    id: str  # "NN.k": lesson NN, k-th function of the lesson
    module: str  # a name of MODULES: the function lives in tinymono/<module>.py
    function: str
    task: str  # what the NotImplementedError says after "exercise NN.k: "
    doc: str  # the blank's docstring: what to compute (shapes, formula)

    @property
    def lesson(self):
        return self.id.split(".")[0]


EXERCISES = [
    # lesson 01: the toy model of superposition ----------------------------------------------------------
    Exercise("01.1", "toy", "forward", "the toy model's forward pass", """\
x [inst, batch, feats] -> (out [inst, batch, feats], cache).

h = W x (`hidden(params, x)` computes it), pre = W^T h + b_final, out = ReLU(pre) when cfg.model is
"relu" and out = pre when it is "linear". params["W"] is [inst, hidden, feats], params["b_final"]
[inst, feats]. The cache is the tuple (x, h, active), active [inst, batch, feats] bool: where pre > 0
(everywhere for the linear model)."""),
    Exercise("01.2", "toy", "loss", "the importance-weighted loss and its gradient", """\
out, x [inst, batch, feats] -> (per_inst [inst], dout [inst, batch, feats]).

per_inst = mean over the batch of sum over features of I_f (out - x)^2, I = cfg.importances()
[inst, feats]; dout = d(sum of per_inst) / d out."""),
    Exercise("01.3", "toy", "backward", "the toy model's backward pass", """\
dout [inst, batch, feats] (d loss / d out) -> {"W": [inst, hidden, feats], "b_final": [inst, feats]}.

cache = (x, h, active) from forward. Go back through the ReLU (the gradient passes only where active),
then pre = W^T h + b_final, then h = W x. W is used twice: its gradient is the sum of two terms."""),
    # lesson 02: the sparse autoencoder ------------------------------------------------------------------
    Exercise("02.1", "sae", "encode_relu_forward", "the ReLU encoder", """\
x [B, d_in], W_enc [d_in, d_sae], b_enc [d_sae], b_dec [d_in] -> (f [B, d_sae], cache).

f = ReLU((x - b_dec) @ W_enc + b_enc), the ReLU by relu_forward (imported from tinymono.layers).
cache = EncodeCache(x_bar, relu_cache, W_enc) with x_bar = x - b_dec."""),
    Exercise("02.2", "sae", "encode_relu_backward", "the ReLU encoder's backward", """\
df [B, d_sae] -> (None, dW_enc [d_in, d_sae], db_enc [d_sae], db_dec [d_in]).

cache = EncodeCache(x_bar, relu, W_enc). Back through the ReLU with relu_backward(df, cache.relu), then
pre = x_bar @ W_enc + b_enc, then x_bar = x - b_dec. x is data: its gradient is returned as None."""),
    Exercise("02.3", "sae", "decode_forward", "the decoder", """\
f [B, d_sae], W_dec [d_sae, d_in], b_dec [d_in] -> (x_hat [B, d_in], cache).

x_hat = f @ W_dec + b_dec; cache = DecodeCache(f, W_dec)."""),
    Exercise("02.4", "sae", "decode_backward", "the decoder's backward", """\
dx_hat [B, d_in] -> (df [B, d_sae], dW_dec [d_sae, d_in], db_dec [d_in]); cache = DecodeCache(f, W_dec)."""),
    Exercise("02.5", "sae", "mse_forward", "the reconstruction loss", """\
x_hat, x [B, d_in] -> (loss, cache): loss, a float, is the mean over the batch AND over the d_in
elements of (x_hat - x)^2; cache = MSECache(err) with err = x_hat - x."""),
    Exercise("02.6", "sae", "mse_backward", "the reconstruction loss's backward", """\
dloss (a number: the gradient arriving from above) -> (dx_hat [B, d_in], dx [B, d_in]).
cache = MSECache(err), err = x_hat - x [B, d_in]."""),
    Exercise("02.7", "sae", "l1_forward", "the L1 sparsity penalty", """\
f [B, d_sae], l1_coefficient (a number) -> (penalty, cache): penalty, a float, is l1_coefficient times
the mean over the batch of the sum over latents of |f|; cache = L1Cache(f, l1_coefficient)."""),
    Exercise("02.8", "sae", "l1_backward", "the L1 penalty's backward", """\
dloss (a number) -> (df [B, d_sae], None); cache = L1Cache(f, l1_coefficient).
d|f|/df = sign(f), taken as 0 at f = 0 (those latents are off)."""),
    Exercise("02.9", "sae", "backward", "the whole SAE's backward, chaining the pieces", """\
params, cache = SAECache(enc, dec, mse, penalty) from forward -> grads {"W_enc", "b_enc", "W_dec",
"b_dec"}, each shaped like its parameter.

Chain the pieces' backwards, starting from dloss = 1: arch = ARCHITECTURES[cfg.architecture] holds the
encoder's and the penalty's (arch.encode_backward, arch.penalty_backward); mse_backward and
decode_backward are shared. f feeds both the decoder and the penalty, and b_dec is used twice
(subtracted before encoding, added after decoding): each gets the sum of its gradients."""),
    Exercise("02.10", "sae", "project_decoder_grad", "the decoder-gradient projection", """\
In place (returns None): remove from each row of dW_dec [d_sae, d_in] its component along the same row
of W_dec (rows of unit norm): dW_dec[j] -= (dW_dec[j] . W_dec[j]) W_dec[j] for every latent j."""),
    Exercise("02.11", "sae", "normalise_decoder", "the decoder rows' renormalisation", """\
In place (returns None): rescale each row of W_dec [d_sae, d_in] to unit Euclidean norm."""),
    Exercise("02.12", "sae", "resample_dead", "resampling the dead latents", """\
Resample the latents where dead [d_sae] is True, in place (the paper's recipe); return their indices,
np.flatnonzero(dead) (an empty array when none is dead).

1. each input of inputs [n, d_in] is weighted by the square of its loss, per_input_loss(params, inputs,
   cfg) (in slices of cfg.batch_size rows if you like); an all-zero input gets weight 0 (no direction);
2. one input is drawn per dead latent, with probability proportional to the weights (rng.choice with
   p=...), without replacement when there are at least as many inputs of nonzero weight as dead latents;
3. latent j's decoder row W_dec[j] becomes its input normalised to unit length, its encoder column
   W_enc[:, j] the same unit vector times cfg.resample_encoder_scale times the mean encoder-column norm
   of the alive latents, and b_enc[j] = 0;
4. Adam forgets both moments of every entry written: opt.reset(name, indices, axis), axis=1 for W_enc."""),
    # lesson 04: the transformer's layers ----------------------------------------------------------------
    Exercise("04.1", "layers", "linear_backward", "the linear layer's backward", """\
dout [N..., O] -> (dx [N..., I], dW [I, O], db [O]); cache = LinearCache(x [N..., I], W [I, O]).

The forward is out = x @ W + b. The leading axes N... are all batch axes: dW and db sum over them."""),
    Exercise("04.2", "layers", "layernorm_backward", "layer norm's backward", """\
dout [N..., D] -> (dx [N..., D], dw [D], db [D]); cache = LayerNormCache(xhat [N..., D], inv_std
[N..., 1], w [D]).

The forward is out = xhat * w + b with xhat = (x - mean(x)) * inv_std, inv_std = 1 / sqrt(var(x) + eps)
over the last axis. With g = dout * w (the gradient w.r.t. xhat),
    dx = inv_std * (g - mean(g) - xhat * mean(g * xhat)),   means over the last axis."""),
    Exercise("04.3", "layers", "embedding_backward", "the embedding's backward", """\
dout [N..., D] -> (None, dW_E [V, D]); cache = EmbeddingCache(ids [N...], vocab_shape = (V, D)).

The forward is out = W_E[ids]. Row v of dW_E sums dout over every position that holds id v (ids repeat).
The ids are integers: their gradient is None."""),
    Exercise("04.4", "layers", "cross_entropy_backward", "softmax cross-entropy's backward", """\
dloss (a number) -> (dlogits [N..., V], None); cache = CrossEntropyCache(probs [n, V], targets [n],
logits_shape, token_logp [n]) with n = the number of tokens.

The loss is the mean over the n tokens of -log softmax(logits)[target], so
d loss / d logits = (softmax(logits) - onehot(target)) / n, in the logits' shape."""),
    Exercise("04.5", "layers", "attention_backward", "causal attention's backward", """\
dout [B, T, D] -> (dx, dW_Q, db_Q, dW_K, db_K, dW_V, db_V, dW_O, db_O), each shaped like the forward's
argument. cache = AttentionCache(x, q, k, v, pattern, z, W_Q, W_K, W_V, W_O); q, k, v, z [B, H, T, E],
pattern [B, H, T, T].

Reverse the forward line by line: out = sum over heads of z W_O + b_O; z = pattern @ v; pattern =
softmax(scores) row by row, whose backward is dscores = pattern * (dpattern - rowsum(pattern * dpattern))
(masked entries have pattern 0, so they get 0); scores = q k^T / sqrt(E); q, k, v = x W + b per head
(x feeds all three)."""),
    # lesson 06: the SAE on the transformer ---------------------------------------------------------------
    Exercise("06.1", "metrics", "loss_recovered", "loss recovered", """\
The three mean losses (floats) -> (L_ablated - L_replaced) / (L_ablated - L_clean) as a float: 1 when the
replacement is as good as the real activations, 0 when it is no better than the ablation. Raise a
ValueError that says so when l_ablated == l_clean (nothing can be recovered)."""),
    # lesson 07: features against the labels ----------------------------------------------------------------
    Exercise("07.1", "metrics", "pearson", "Pearson correlation with a label", """\
A [N, U], y [N] bool -> [U]: Pearson's correlation of each column of A with y (as 0/1), and 0 for a
column, or a y, that is constant. (`_activations(A)` and `_indicator(y, len(A))` check and convert the
inputs.)"""),
    Exercise("07.2", "metrics", "specificity", "activation specificity", """\
A [N, U] >= 0, y [N] bool -> [U]: the share of each unit's activation mass that falls on labelled
tokens, sum of a over rows with y / sum of a over all rows, counting only activations >= threshold:
None (count all), "half" (half of that unit's maximum), or a number or [U] numbers. A unit with no mass
there scores 0."""),
    Exercise("07.3", "metrics", "auroc", "AUROC of a unit as a score for a label", """\
A [N, U] (or [N], then a float), y [N] bool -> [U]: the probability that the activation on a random
labelled token is larger than on a random unlabelled one, ties counting one half. From ranks
(Mann-Whitney): with rankdata (scipy, imported) giving tied values their average rank, AUROC = (sum of
the ranks of the labelled tokens - P (P + 1) / 2) / (P Q), P labelled and Q unlabelled tokens. 0.5 when y
is all True or all False."""),
]
BY_ID = {e.id: e for e in EXERCISES}


def for_lessons(lessons):
    """The exercises of the given lessons ("02", ...), in order."""
    return [e for e in EXERCISES if e.lesson in lessons]


def parse_lesson(text):
    """"2", "02" or "02_sparse_autoencoder" -> "02"; a lesson without exercises -> ValueError saying which have."""
    head = str(text).split("_")[0]
    nn = head.zfill(2) if head.isdigit() else None
    if nn not in LESSONS:
        raise ValueError(f"lesson {text!r} has no exercises; lessons with exercises: {', '.join(LESSONS)}")
    return nn
