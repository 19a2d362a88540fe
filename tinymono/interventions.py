"""Changing the MLP activations while the model runs, through the hook point mlp.hook_post, and
measuring the loss.

- clamp_hook: set some SAE features to chosen values at every position and keep the rest of the true
  activations (and the SAE's error term). Value 0 is the paper's ablation; a large value pins the
  feature on while the model writes (pinned sampling, with transformer.sample; lesson 08 pins at a
  feature's largest held-out activation).
- ablation_effect: the loss per token with one feature ablated, where it fires and where it does not.
- loss_recovered_report: the loss with the real activations, the SAE's reconstruction, zeros and the
  mean activation, and metrics.loss_recovered against each ablation.

Axis vocabulary: B T as in transformer.py, M MLP neurons (d_mlp), k pinned features.
"""
from __future__ import annotations

import numpy as np

from tinymono import sae, transformer
from tinymono.metrics import loss_recovered
from tinymono.validate import INT, REAL, InputTypeError, check_array, check_ids, check_int


# ----------------------------------------------------------------------------------------------------
# hooks: ablation and pinning


def clamp_hook(sae_params, sae_cfg, units, values, record=None):
    """A mlp.hook_post function that sets feature `units` (one index, or several) to `values` at every
    position and leaves the rest of the true activations (not the SAE's reconstruction) as they are:
    post + sum_i (v_i - f_i(post)) W_dec[i] (divided by the SAE's `input_scale` where it has one, as
    sae.decode scales its reconstruction back), every f_i read from the activations as they came in. Value 0
    is the paper's ablation; a large value pins the feature on (the paper's pinned sampling). Appends the
    features as they were, [B, T] for one unit or [B, T, k] for k, to `record` when given."""
    d_sae = sae_params["W_dec"].shape[0]
    idx = np.atleast_1d(check_ids("units", units, d_sae))  # a negative unit would silently be counted from the end
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"units must be one feature index or a non-empty list of them, got {units!r}")
    values = check_array("values", values, kinds=REAL)
    if values.ndim > 1 or values.size not in (1, idx.size):
        raise ValueError(f"values must be one number or one per unit ({idx.size}), got shape {values.shape}")
    if record is not None and not hasattr(record, "append"):
        raise InputTypeError(f"record must be a list (or None), got {type(record).__name__}")
    D = sae_params["W_dec"][idx] / sae_params.get("input_scale", 1.0)  # [k, M], in the activations' units
    v = np.broadcast_to(np.asarray(values, dtype=np.float64), idx.shape)

    def hook(post):  # [B, T, M]
        f = sae.encode_units(sae_params, post.reshape(-1, post.shape[-1]), sae_cfg, idx)  # [B*T, k]
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
