"""An SAE trained here, in the on-disk layout of SAELens, and back.

    python -m tinymono export-sae runs/default/cache/sae.npz out/sae    # -> out/sae/{sae_weights.safetensors, cfg.json}
    python -m tinymono import-sae out/sae runs/imported/sae.npz         # -> a tinymono checkpoint again

SAELens (`SAE.load_from_disk(folder)`) reads a folder holding `sae_weights.safetensors` (the tensors
W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], the names and shapes tinymono
already uses) and `cfg.json`. The cfg written here is SAELens's flat layout (the one before its 6.0; 6.0
and later convert it when they load it): architecture "standard" (ReLU of (x - b_dec) @ W_enc + b_enc,
decoded as f @ W_dec + b_dec: the paper's SAE and tinymono's), d_in, d_sae, dtype, the hook it reads
(TransformerLens's name for this model's MLP activations, blocks.0.mlp.hook_post), and no input
normalisation (tinymono trains on the raw activations). A tinymono checkpoint also holds the optimiser's
state and the training history; the export keeps only the parameters, and `tinymono.json` beside them
keeps tinymono's own config, so `import-sae` gives back a checkpoint that `sae.load` reads (its Adam
state starts at zero). An SAELens folder from elsewhere imports too, if it is a standard ReLU SAE
without input normalisation or a fine-tuning scale (anything else would compute other features than
tinymono's `encode`). Only the paper's ReLU SAE is exported: the later variants (TopK, JumpReLU, Gated, the
2024 recipe) compute their latents otherwise, and the export refuses them rather than write weights that
SAELens would read as a ReLU SAE.

The safetensors package (`pip install -e '.[saelens]'`) writes and reads the tensors through its NumPy
API; PyTorch is not needed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from tinymono import checkpoint as ckpt
from tinymono import sae
from tinymono.files import atomic_write

WEIGHTS, CFG, OURS = "sae_weights.safetensors", "cfg.json", "tinymono.json"
HOOK = "blocks.0.mlp.hook_post"  # TransformerLens's name for the MLP activations of a one-layer model
NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")


def _safetensors():
    try:
        import safetensors.numpy as st
    except ImportError as e:
        raise ImportError("writing SAELens's layout needs the safetensors package: pip install -e '.[saelens]' "
                          "(or pip install safetensors)") from e
    return st


def load_tinymono(path):
    """(params, SAEConfig) from a tinymono SAE checkpoint (as pipeline.get_sae writes it)."""
    arrays, meta = ckpt.load(path)
    config = meta.get("config")
    if not isinstance(config, dict) or "d_sae" not in config or "l1_coefficient" not in config:
        keys = ", ".join(sorted(config)[:8]) if isinstance(config, dict) else type(config).__name__
        raise ckpt.CheckpointError(f"{path} is a checkpoint, but not of an SAE (its config has {keys}); an SAE's "
                                   "checkpoint is runs/<scale>/cache/sae.npz or sae_<d_sae>.npz")
    known = {f.name for f in fields(sae.SAEConfig)}
    cfg = sae.SAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in known})
    if cfg.architecture != "relu":  # SAELens's standard SAE would compute other latents from its weights
        raise ValueError(f"{path} is a {cfg.architecture} SAE; the export writes the paper's ReLU SAE (architecture "
                         "'relu'), the one SAELens's standard layout computes")
    params = {k: arrays[f"params.{k}"] for k in NAMES if f"params.{k}" in arrays}
    ckpt.validate_shapes(params, sae.param_shapes(cfg), where=f"checkpoint {path}")
    return params, cfg


def saelens_cfg(cfg, n_ctx=None):
    """The cfg.json SAELens reads for a tinymono SAEConfig."""
    return {"architecture": "standard", "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": cfg.dtype, "device": "cpu",
            "model_name": "tinymono-1l", "hook_name": HOOK, "hook_layer": 0, "hook_head_index": None,
            "activation_fn_str": "relu", "activation_fn_kwargs": {}, "apply_b_dec_to_input": True,
            "finetuning_scaling_factor": False, "normalize_activations": "none", "context_size": n_ctx,
            "prepend_bos": False, "dataset_path": "tinymono labelled byte corpus", "dataset_trust_remote_code": False,
            "sae_lens_training_version": None}


def export(checkpoint_path, out_dir, n_ctx=None):
    """Write the SAE of a tinymono checkpoint as an SAELens folder; returns the folder."""
    st = _safetensors()
    params, cfg = load_tinymono(checkpoint_path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder for the SAELens layout")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(params[k]) for k in NAMES}
    data = st.save(tensors, metadata={"format": "np", "written_by": "tinymono"})
    atomic_write(out / WEIGHTS, lambda fh: fh.write(data))
    for name, obj in ((CFG, saelens_cfg(cfg, n_ctx)), (OURS, {"config": asdict(cfg), "from": str(checkpoint_path)})):
        text = json.dumps(obj, indent=1).encode()
        atomic_write(out / name, lambda fh, text=text: fh.write(text))
    return out


def read(folder):
    """(params, SAEConfig) from an SAELens folder (one exported here, or a standard ReLU SAE from elsewhere)."""
    st = _safetensors()
    folder = Path(folder)
    for name in (WEIGHTS, CFG):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not an SAELens SAE folder: it has no {name}")
    cfg_dict = json.loads((folder / CFG).read_text())
    arch = cfg_dict.get("architecture", "standard")
    act = cfg_dict.get("activation_fn_str", cfg_dict.get("activation_fn", "relu"))
    norm = cfg_dict.get("normalize_activations") or "none"
    if cfg_dict.get("finetuning_scaling_factor"):
        raise ValueError(f"{folder}: its latents are scaled by a finetuning_scaling_factor before decoding, which "
                         "tinymono's SAE does not do")
    if arch != "standard" or act != "relu" or norm != "none" or cfg_dict.get("apply_b_dec_to_input", True) is not True:
        raise ValueError(f"{folder}: a {arch} SAE with activation {act!r}, normalisation {norm!r} and "
                         f"apply_b_dec_to_input {cfg_dict.get('apply_b_dec_to_input')!r}; tinymono's SAE is the "
                         "standard ReLU SAE with b_dec subtracted from its input and no normalisation")
    tensors = st.load((folder / WEIGHTS).read_bytes())
    missing = [k for k in NAMES if k not in tensors]
    if missing:
        raise ValueError(f"{folder / WEIGHTS} lacks {missing}")
    ours = json.loads((folder / OURS).read_text())["config"] if (folder / OURS).is_file() else {}
    known = {f.name for f in fields(sae.SAEConfig)}
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in ours.items() if k in known}
    config["architecture"] = "relu"  # what the standard layout computes, whatever tinymono.json says
    dtype = str(tensors["W_enc"].dtype) if str(tensors["W_enc"].dtype) in ("float32", "float64") else "float32"
    config.update(d_in=int(cfg_dict["d_in"]), d_sae=int(cfg_dict["d_sae"]), dtype=config.get("dtype", dtype))
    cfg = sae.SAEConfig(**config)
    params = {k: np.ascontiguousarray(tensors[k], dtype=cfg.dtype) for k in NAMES}
    ckpt.validate_shapes(params, sae.param_shapes(cfg), where=str(folder / WEIGHTS))
    return params, cfg


def import_(folder, checkpoint_path):
    """An SAELens folder as a tinymono SAE checkpoint, at the end of its run (cfg.steps: the training loop
    reads it as finished), with the parameters and a fresh optimiser state; returns its path. A folder as
    `checkpoint_path` is refused (the checkpoint is a file, sae.npz and its .json beside it)."""
    if Path(checkpoint_path).is_dir():
        raise ValueError(f"{checkpoint_path} is a folder; give the checkpoint's file name, e.g. "
                         f"{Path(checkpoint_path) / 'sae.npz'}")
    params, cfg = read(folder)
    task = sae.SAETask(cfg, lambda rng, n: np.zeros((n, cfg.d_in), dtype=cfg.dtype), params=params)
    meta = {"config": task.config_dict(), "step": cfg.steps, "total_steps": cfg.steps, "imported_from": str(folder)}
    return ckpt.save(checkpoint_path, task.state_arrays(), meta)
