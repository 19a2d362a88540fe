"""Checkpoints: named arrays in one `.npz` plus a JSON description, written atomically, read without
pickle.

A checkpoint is `name.npz` holding the arrays and, under the key `__meta__`, the JSON metadata
(config, step, ...) as a plain unicode array, so the one file is complete; `name.json` beside it is a
readable copy for people. Writing goes to a temporary file that is renamed over the old one only
once it is complete, so an interrupted save never leaves a half-written checkpoint (and the temporary
files a killed save left behind are removed by the next save or load: files.py), and loading uses
`allow_pickle=False`, so a checkpoint from a stranger cannot run code. Before any array is read, each
member's header is checked against the bytes the member holds, so a damaged header cannot make NumPy
allocate terabytes.
"""
from __future__ import annotations

import json
import math
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from tinymono.files import BadFile, atomic_write, npy_header, remove_stale_temps

META_KEY = "__meta__"


class CheckpointError(BadFile):
    """A checkpoint that is missing, truncated, corrupt, or does not match what it should hold."""


def npz_path(path):
    """`path` as the file save() writes: with .npz added when it lacks it."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save(path, arrays: dict, meta: dict):
    """Write arrays (name -> ndarray) and meta (JSON-serialisable dict) to `path` (.npz added if absent)."""
    path = npz_path(path)
    if META_KEY in arrays:
        raise ValueError(f"{META_KEY!r} is reserved for the metadata")
    for k, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"array {k!r} has dtype object, which cannot be saved without pickle")
    text = json.dumps(meta, indent=1, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: np.savez(fh, **arrays, **{META_KEY: np.array(text)}))
    atomic_write(path.with_suffix(".json"), lambda fh: fh.write(text.encode()))
    return path


def _check_members(path, fix):
    """Every member's declared shape and dtype must fill exactly the bytes it holds (read from the headers
    alone, before anything is allocated)."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as fh:
                shape, _, dtype = npy_header(fh)
                declared, held = math.prod(shape) * dtype.itemsize, info.file_size - fh.tell()
            if dtype.hasobject or declared != held:
                raise CheckpointError(f"checkpoint {path}: member {info.filename} declares {dtype} {shape} "
                                      f"({declared:,} bytes) but holds {held:,} bytes; {fix}")


def load(path):
    """Read a checkpoint -> (arrays: dict name -> ndarray, meta: dict). Raises CheckpointError with the
    reason for a missing, truncated or corrupt file, and the fix."""
    path = npz_path(path)
    for p in (path, path.with_suffix(".json")):
        remove_stale_temps(p)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    fix = f"delete {path} to start over"
    try:
        _check_members(path, fix)
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}  # reading each member checks its CRC
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError, NotImplementedError,
            tokenize.TokenError) as e:  # a damaged zip entry or .npy header can raise the last two
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {e}); "
                              f"{fix}") from e
    if META_KEY not in arrays:
        raise CheckpointError(f"checkpoint {path} has no {META_KEY} entry: not written by tinymono; {fix}")
    text = arrays.pop(META_KEY)
    try:
        meta = json.loads(str(text)) if text.dtype.kind == "U" and text.shape == () else None
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path}: its {META_KEY} is not valid JSON ({e}); {fix}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: its {META_KEY} is not a JSON object ({text.dtype} "
                              f"{text.shape}: {str(text)[:60]!r}); {fix}")
    return arrays, meta


def validate_shapes(arrays: dict, expected: dict, where="checkpoint", counters=()):
    """Check that `arrays` holds every key of `expected` (name -> shape) with that shape (other keys, such as
    the optional state a task adds, are the caller's to read or ignore), and that the `counters` among them
    hold non-negative integers."""
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise CheckpointError(f"{where} is missing {missing}")
    for k, shape in expected.items():
        if tuple(arrays[k].shape) != tuple(shape):
            raise CheckpointError(f"{where}: {k} has shape {tuple(arrays[k].shape)}, but the config says {tuple(shape)}")
    for k in counters:
        a = arrays[k]
        if a.dtype.kind not in "iu" or (a.size and a.min() < 0):
            lowest = f", lowest {a.min()}" if a.size and a.dtype.kind in "iuf" else ""
            raise CheckpointError(f"{where}: {k} must hold counts (non-negative integers), got {a.dtype}{lowest}")
