"""The MLP activations of a trained transformer, harvested into an on-disk store (store.py reads it;
batches.py shuffles its rows into an SAE's training batches).

The paper trains its SAE on the post-ReLU MLP activations (`mlp.hook_post`, d_mlp numbers per token)
of billions of tokens, "shuffled so a batch mixes contexts". Neither the harvest nor the shuffle may
hold the whole thing in memory, so:

* `harvest` runs the model over a corpus split in windows of n_ctx tokens, a fixed group of `batch`
  windows per forward, and writes each group's rows straight to `.npy` files on disk (explicit file
  writes: nothing is memory-mapped, so the resident memory is one group's worth however long the
  split). One row per token of the split, in corpus order (row i is byte i of the split).
* Progress is recorded in `meta.json`, rewritten atomically after the data is flushed, so a harvest
  can stop (by choice: `max_rows`, by a crash, or on a full disk) and continue later, and the store it
  ends with is byte for byte the one an uninterrupted harvest writes. That holds because the windows and their
  grouping into forwards are a fixed plan (`transformer.window_plan`) and each resume restarts at a group
  boundary: a window's activations depend, in the last float bits, on the other windows in its
  batch (BLAS blocks the matmul by batch size), so regrouping would change bits.
* Each group's rows get a checksum (zlib.crc32 over the bytes of every column, recorded in meta.json
  `checksums`), so damage is found, not read back as data: opening a store checks every file's
  header and size and the last group's checksum (cheap; `verify="all"` or `store.verify()` checks
  every group), and a harvest that continues a store checks every group already on disk and harvests
  again from the first one that does not match (a truncated acts.npy is refilled, not left as zeros).
Which positions are kept (the choice the paper leaves open). A position t of a window has seen t + 1
tokens; a window's first positions have seen almost nothing and their activations are unlike the
model's usual ones. Windows therefore overlap by half (stride = n_ctx // 2) and each token is kept
once, from the earliest window where it has at least n_ctx - stride + 1 tokens of context (only the
first n_ctx - stride tokens of the split, which have no more context anywhere, come from position <
n_ctx - stride of the first window). The rule is `transformer.window_plan`, which stream_bits scores
text with too.
What it costs, measured: every kept token goes through the forward twice; writing the rows costs the
same either way, so a whole harvest took 1.4x as long as with non-overlapping windows (`python -m
tinymono bench harvest`: 63k vs 88k tokens/s at the default config, numba, 2 busy cores). What it
buys: with non-overlapping windows (stride = n_ctx, which `stride` allows) half the rows have fewer
than n_ctx / 2 tokens of context, and on a small trained model (d_model 64, n_ctx 64, 600 steps) a
token's activations at window position 0 differed from the same token's with >= 32 tokens of context
by 100% (median relative L2 distance), at positions 1-3 by 50%, 4-7 by 30%, 8-31 by 21%.

Axis vocabulary: N rows (tokens), M d_mlp, W window length (n_ctx), b windows per forward.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from contextlib import suppress
from pathlib import Path

import numpy as np

from tinymono import transformer
from tinymono.files import atomic_write, npy_layout, remove_stale_temps, writing
from tinymono.progress import bar as progress_bar
from tinymono.progress import reporting
from tinymono.store import (DTYPES, FORMAT_VERSION, LABEL_FIELDS, ActivationStore, StoreError, checksum,
                            first_bad_group, group_rows, read_meta, repair_advice)


def model_fingerprint(params, cfg):
    """A sha256 of the config and every parameter's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for name in sorted(params):
        arr = np.ascontiguousarray(params[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class _StopForward(Exception):
    def __init__(self, post):
        self.post = post


def _stop_at_hook(post):
    raise _StopForward(post)


def mlp_activations(params, tokens, cfg, *, fast=True):
    """tokens [B, T] -> the activations at mlp.hook_post [B, T, M]. The hook raises an exception that
    carries them out of the forward, so the rest of the model (W_out, the final layer norm and the
    unembedding: about a third of the forward's work) never runs."""
    try:
        transformer.forward(params, tokens, cfg, hook_post=_stop_at_hook, fast=fast)
    except _StopForward as stop:
        return stop.post
    raise RuntimeError(f"the forward finished without calling the {transformer.HOOK_POST} hook")


# ----------------------------------------------------------------------------------------------------
# the store: writing


def _write_json_atomic(path, obj):
    # readers see the old progress record or the new one, never half of one
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=1).encode()))


def _plan_meta(params, cfg, corpus, split, n_tokens, dtype, stride, batch, fast, checkpoint):
    starts, keep_from, W, stride = transformer.window_plan(n_tokens, cfg.n_ctx, stride)
    bounds = group_rows(starts, W, batch)
    meta = {"format": FORMAT_VERSION, "hook": transformer.HOOK_POST,
            "model": {"fingerprint": model_fingerprint(params, cfg), "config": cfg.to_dict(),
                      "checkpoint": None if checkpoint is None else str(checkpoint)},
            "corpus": {"fingerprint": corpus.meta.get("fingerprint"), "split": split,
                       "context_names": list(corpus.context_names), "detail_names": list(corpus.detail_names)},
            "dtype": dtype, "d_mlp": cfg.d_mlp, "n_rows": int(n_tokens), "fast": bool(fast),
            "plan": {"window": int(W), "stride": int(stride), "batch": int(batch), "n_windows": len(starts),
                     "n_groups": len(bounds) - 1, "min_context": int(W - stride + 1)},
            "rows_done": 0, "groups_done": 0, "complete": False, "checksums": []}
    return meta, (starts, keep_from, W, bounds)


def _identity(meta):
    """The parts of the meta that a resumed harvest must share with the store it continues (the model by
    its fingerprint, not by where its checkpoint was read from)."""
    same = {k: meta[k] for k in ("format", "hook", "corpus", "dtype", "d_mlp", "n_rows", "fast", "plan")}
    return {**same, "model": {k: v for k, v in meta["model"].items() if k != "checkpoint"}}


def harvest(params, cfg, corpus, path, *, split="train", n_tokens=None, dtype="float32", stride=None,
            batch=32, fast=True, max_rows=None, save_every=10.0, checkpoint=None, progress=None):
    """Harvest the MLP activations of the model (params, cfg) over the first n_tokens tokens (default: all)
    of `corpus`'s `split` into the store folder `path`; returns the ActivationStore (partial if stopped
    early).

    dtype: "float32" or "float16" (half the disk; activations above 65504 would become inf).
    stride: window stride (default n_ctx // 2, see the module docstring; n_ctx keeps every position of
        non-overlapping windows). batch: windows per forward (a fixed part of the plan).
    max_rows: stop once at least this many more rows are written (at the end of a group); call again
        to continue. A store already at `path` is continued if it was harvested with the same model,
        corpus, split, dtype and plan, and refused otherwise.
    save_every: seconds between progress records (data flushed to disk, then meta.json replaced);
        one is always written when the call ends. checkpoint: where params came from, recorded in meta."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    data = corpus.split(split)
    n_tokens = len(data.tokens) if n_tokens is None else int(n_tokens)
    if not 1 <= n_tokens <= len(data.tokens):
        raise ValueError(f"n_tokens must be in 1..{len(data.tokens)} (the {split} split), got {n_tokens}")
    meta, (starts, keep_from, W, bounds) = _plan_meta(params, cfg, corpus, split, n_tokens, dtype, stride,
                                                      batch, fast, checkpoint)
    path = Path(path)
    meta_path = path / "meta.json"
    files = {"acts": (np.dtype(dtype), (n_tokens, cfg.d_mlp)),
             **{name: (np.dtype(dt), (n_tokens,)) for name, dt in LABEL_FIELDS.items()}}
    remove_stale_temps(meta_path)  # a progress record a killed harvest was writing
    if meta_path.is_file():
        meta = _continue(path, meta, bounds)
        if meta["complete"]:  # nothing left to harvest: open it, writing nothing
            return ActivationStore(path)
    else:
        path.mkdir(parents=True, exist_ok=True)
        for name, (dt, shape) in files.items():  # header written, data space reserved (a sparse file)
            with writing(path / f"{name}.npy"):
                np.lib.format.open_memmap(path / f"{name}.npy", mode="w+", dtype=dt, shape=shape).flush()
        _write_json_atomic(meta_path, meta)

    handles = {name: open(path / f"{name}.npy", "r+b") for name in files}
    offsets = {name: npy_layout(path / f"{name}.npy", StoreError, repair_advice(path), whole=False)[0]
               for name in files}
    row_bytes = {name: dt.itemsize * (cfg.d_mlp if name == "acts" else 1) for name, (dt, _) in files.items()}
    arange_W = np.arange(W)

    def commit():
        with writing(path):
            for fh in handles.values():
                fh.flush()
                os.fsync(fh.fileno())
        _write_json_atomic(meta_path, meta)

    g, n_groups = meta["groups_done"], len(bounds) - 1
    first_row = meta["rows_done"]
    if progress is None:
        progress = sys.stderr.isatty() or "ipykernel" in sys.modules or reporting()
    bar = progress_bar(total=n_tokens, initial=first_row, unit="tok", unit_scale=True, desc=f"harvest {split}",
                       disable=not progress)
    last_commit = time.perf_counter()
    try:
        while g < n_groups and (max_rows is None or meta["rows_done"] - first_row < max_rows):
            w = slice(g * batch, min((g + 1) * batch, len(starts)))
            idx = starts[w, None] + arange_W  # [b, W] corpus index of each window position
            tokens = np.asarray(data.tokens[idx.ravel()], dtype=np.int64).reshape(idx.shape)  # [b, W]
            post = mlp_activations(params, tokens, cfg, fast=fast)  # [b, W, M]
            keep = arange_W >= keep_from[w, None]  # [b, W] positions this group keeps
            rows = idx[keep]  # [n] in increasing order: windows are in order and each keeps its tail
            lo, hi = bounds[g], bounds[g + 1]
            assert rows[0] == lo and rows[-1] == hi - 1 and len(rows) == hi - lo, "window plan out of step"
            with np.errstate(over="ignore"):
                acts = post[keep].astype(dtype)  # [n, M]
            if not np.isfinite(acts).all():
                raise ValueError(f"rows {lo}..{hi - 1}: activations are not finite in {np.dtype(dtype).name} "
                                 f"(largest {np.abs(post[keep]).max():.4g}; float16 ends at 65504): harvest with "
                                 "dtype='float32'")
            columns = {"acts": acts,
                       "tokens": data.tokens[rows], "context": data.context[rows], "detail": data.detail[rows],
                       "pos": np.broadcast_to(arange_W, idx.shape)[keep], "index": rows}
            columns = {name: np.ascontiguousarray(col, dtype=files[name][0]) for name, col in columns.items()}
            for name, col in columns.items():
                with writing(path / f"{name}.npy"):
                    handles[name].seek(offsets[name] + lo * row_bytes[name])
                    handles[name].write(col.data)
            g += 1
            meta["checksums"].append(checksum(columns))
            meta["groups_done"], meta["rows_done"], meta["complete"] = g, int(hi), g == n_groups
            bar.update(hi - lo)
            if time.perf_counter() - last_commit >= save_every or meta["complete"]:
                commit()
                last_commit = time.perf_counter()
        commit()
    except KeyboardInterrupt:  # keep every group written whole so far (a resumed harvest starts after them)
        done = min(meta["groups_done"], len(meta["checksums"]))  # the interrupt may fall between two updates
        meta["groups_done"], meta["rows_done"], meta["complete"] = done, int(bounds[done]), done == n_groups
        del meta["checksums"][done:]
        commit()
        raise
    finally:
        bar.close()
        for fh in handles.values():  # commit() flushed what counts; after a failure, what is left is redone
            with suppress(OSError):  # (so a full disk met again here does not hide the first error)
                fh.close()
    return ActivationStore(path, partial=True)


def _continue(path, want, bounds):
    """The meta of the store at `path`, which a harvest planned as `want` continues: refused if it was
    harvested differently; every group already on disk is checked against its checksum (only the last
    one of a complete store), and from the first that does not match the rows are harvested again."""
    have, _, offsets = read_meta(path, whole=False)
    if _identity(have) != _identity(want):
        diff = sorted(k for k in _identity(want) if _identity(have).get(k) != _identity(want)[k])
        raise ValueError(f"{path} holds a store harvested differently (differs in {diff}); use another "
                         "path, or delete it to start over")
    done = have["groups_done"]
    groups = range(done - 1, done) if have["complete"] else range(done)
    bad = first_bad_group(path, have, bounds, offsets, groups)
    if bad is not None and have["complete"]:
        bad = first_bad_group(path, have, bounds, offsets, range(done))  # the first damaged group
    if bad is not None:
        print(f"harvest: rows {bounds[bad]:,}.. of {path} do not match their checksums (a file was damaged or "
              f"truncated); harvesting again from row {bounds[bad]:,}", file=sys.stderr)
        have.update(groups_done=bad, rows_done=int(bounds[bad]), complete=False, checksums=have["checksums"][:bad])
    return have
