"""Checkpoints: named arrays in one `.npz` plus a JSON description, written atomically, read without
pickle.

A checkpoint is `name.npz` holding the arrays and, under the key `__meta__`, the JSON metadata
(config, step, ...) as a plain unicode array, so the one file is complete; `name.json` beside it is a
readable copy for people. Writing goes to a temporary file that is renamed over the old one only
once it is complete, so an interrupted save never leaves a half-written checkpoint, and loading uses
`allow_pickle=False`, so a checkpoint from a stranger cannot run code.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

META_KEY = "__meta__"


class CheckpointError(Exception):
    """A checkpoint that is missing, truncated, corrupt, or does not match what it should hold."""


def _atomic_write(path: Path, write):
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never a mix
    finally:
        if tmp.exists():
            tmp.unlink()


def save(path, arrays: dict, meta: dict):
    """Write arrays (name -> ndarray) and meta (JSON-serialisable dict) to `path` (.npz added if absent)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if META_KEY in arrays:
        raise ValueError(f"{META_KEY!r} is reserved for the metadata")
    for k, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"array {k!r} has dtype object, which cannot be saved without pickle")
    text = json.dumps(meta, indent=1, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda fh: np.savez(fh, **arrays, **{META_KEY: np.array(text)}))
    _atomic_write(path.with_suffix(".json"), lambda fh: fh.write(text.encode()))
    return path


def load(path):
    """Read a checkpoint -> (arrays: dict name -> ndarray, meta: dict). Raises CheckpointError with the
    reason for a missing, truncated or corrupt file."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}  # reading each member checks its CRC
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {e}); "
                              "delete it to start over") from e
    if META_KEY not in arrays:
        raise CheckpointError(f"checkpoint {path} has no {META_KEY} entry: not written by tinymono")
    meta = json.loads(str(arrays.pop(META_KEY)))
    return arrays, meta


def validate_shapes(arrays: dict, expected: dict, where="checkpoint"):
    """Check that `arrays` holds exactly the keys of `expected` (name -> shape) with those shapes."""
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise CheckpointError(f"{where} is missing {missing}")
    for k, shape in expected.items():
        if tuple(arrays[k].shape) != tuple(shape):
            raise CheckpointError(f"{where}: {k} has shape {tuple(arrays[k].shape)}, but the config says {tuple(shape)}")
