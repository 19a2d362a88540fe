"""The MLP activations of a trained transformer, harvested into an on-disk store, and shuffled batches
of them for training a sparse autoencoder.

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
* `ShuffledBatches` samples rows without replacement within an epoch: it shuffles the order of
  fixed-size blocks of rows, reads a buffer of several random blocks, shuffles the rows inside the
  buffer and hands out batches. Its whole state (epoch, positions, random-number state) is a few
  arrays, so an SAE run that checkpoints them beside its own resumes bit-identically.

Which positions are kept (the choice the paper leaves open). A position t of a window has seen t + 1
tokens; a window's first positions have seen almost nothing and their activations are unlike the
model's usual ones. Windows therefore overlap by half (stride = n_ctx // 2) and each token is kept
once, from the earliest window where it has at least n_ctx - stride + 1 tokens of context (only the
first n_ctx - stride tokens of the split, which have no more context anywhere, come from position <
n_ctx - stride of the first window). The rule is `transformer.window_plan`; stream_bits scores text with it too.
What it costs, measured: every kept token goes through the forward twice; writing the rows costs the
same either way, so a whole harvest took 1.4x as long as with non-overlapping windows (`python -m
tinymono bench harvest`: 63k vs 88k tokens/s at the default config, numba, 2 busy cores). What it
buys: with non-overlapping windows (stride = n_ctx, which `stride` allows) half the rows have fewer
than n_ctx / 2 tokens of context, and on a small trained model (d_model 64, n_ctx 64, 600 steps) a
token's activations at window position 0 differed from the same token's with >= 32 tokens of context
by 100% (median relative L2 distance), at positions 1-3 by 50%, 4-7 by 30%, 8-31 by 21%.

On disk (one folder):

    acts.npy     [N, d_mlp] float32 or float16   the activations at mlp.hook_post
    tokens.npy   [N] uint16                      token id of the row's byte
    context.npy  [N] uint8, detail.npy [N] uint8 its corpus labels
    pos.npy      [N] uint16                      its position in the window it was computed in
    index.npy    [N] int64                       its index in the corpus split
    meta.json    model and corpus fingerprints, dtype, plan, rows done, complete, a checksum per group

Axis vocabulary: N rows (tokens), M d_mlp, W window length (n_ctx), b windows per forward.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zlib
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from tinymono import checkpoint as ckpt
from tinymono import transformer
from tinymono.files import BadFile, atomic_write, npy_layout, read_json, remove_stale_temps, writing
from tinymono.progress import bar as progress_bar
from tinymono.progress import reporting

FORMAT_VERSION = 2  # 2: a checksum per group
LABEL_FIELDS = {"tokens": np.uint16, "context": np.uint8, "detail": np.uint8, "pos": np.uint16, "index": np.int64}
COLUMNS = ("acts", *LABEL_FIELDS)  # the store's files, in the order the checksums read them
DTYPES = ("float32", "float16")
META_KEYS = ("format", "hook", "model", "corpus", "dtype", "d_mlp", "n_rows", "fast", "plan", "rows_done",
             "groups_done", "complete", "checksums")


class StoreError(BadFile):
    """An activation store that is incomplete, damaged, or not what its meta.json says."""


def model_fingerprint(params, cfg):
    """A sha256 of the config and every parameter's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for name in sorted(params):
        arr = np.ascontiguousarray(params[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------
# the plan: which windows are run, which of their positions are kept, and how they are grouped


def _group_rows(starts, W, batch):
    """[n_groups + 1]: group g (windows g*batch .. g*batch + batch - 1) writes rows bounds[g] .. bounds[g+1]."""
    ends = starts + W
    last = np.minimum(np.arange(batch, len(starts) + batch, batch), len(starts)) - 1
    return np.concatenate([[0], ends[last]])


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
# the store: reading


def _fix(path):
    return (f"delete {path} and harvest again (or call harvest() with the same model: it checks the store and "
            "redoes the damaged rows)")


def _read_meta(path, whole=True):
    """(meta, group bounds, {column: header bytes}) of the store at `path`: meta.json with every key present
    and consistent, and each file's dtype and shape as meta.json says (and, if `whole`, each file as long
    as its shape says); else StoreError."""
    meta_path = path / "meta.json"
    meta = read_json(meta_path, StoreError, _fix(path), required=META_KEYS)
    if meta["format"] != FORMAT_VERSION:
        raise StoreError(f"{meta_path}: store format {meta['format']!r}, this version reads {FORMAT_VERSION}; "
                         f"delete {path} to harvest it again")
    if not (meta["dtype"] in DTYPES and all(type(meta[k]) is int and meta[k] >= 1 for k in ("n_rows", "d_mlp"))):
        raise StoreError(f"{meta_path}: dtype {meta['dtype']!r}, n_rows {meta['n_rows']!r}, d_mlp {meta['d_mlp']!r} "
                         f"are not a store's; {_fix(path)}")
    offsets = {}
    for name in COLUMNS:  # the files first: their sizes bound what the plan below may allocate
        want_dtype = np.dtype(meta["dtype"] if name == "acts" else LABEL_FIELDS[name])
        want_shape = (meta["n_rows"], meta["d_mlp"]) if name == "acts" else (meta["n_rows"],)
        offsets[name], dtype, shape = npy_layout(path / f"{name}.npy", StoreError, _fix(path), whole=whole)
        if dtype != want_dtype or tuple(shape) != want_shape:
            raise StoreError(f"{path / name}.npy: {dtype} {tuple(shape)}, meta.json says {want_dtype} {want_shape}; "
                             f"{_fix(path)}")
    try:
        plan = meta["plan"]
        bounds = _group_rows(transformer.window_plan(meta["n_rows"], plan["window"], plan["stride"])[0], plan["window"],
                             plan["batch"])
        ok = (type(meta["groups_done"]) is int and 0 <= meta["groups_done"] <= len(bounds) - 1
              and meta["rows_done"] == bounds[meta["groups_done"]] and len(meta["checksums"]) == meta["groups_done"]
              and meta["complete"] == (meta["groups_done"] == len(bounds) - 1)
              and all(type(c) is int for c in meta["checksums"]))
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise StoreError(f"{meta_path} is inconsistent ({type(e).__name__}: {e}); {_fix(path)}") from e
    if not ok:
        raise StoreError(f"{meta_path} is inconsistent (rows {meta['rows_done']!r}, groups {meta['groups_done']!r}, "
                         f"{len(meta['checksums'])} checksums, complete {meta['complete']!r}); {_fix(path)}")
    return meta, bounds, offsets


def _checksum(columns):
    """crc32 over the bytes of the columns {name: array} of one group, in COLUMNS order."""
    crc = 0
    for name in COLUMNS:
        crc = zlib.crc32(np.ascontiguousarray(columns[name]).data, crc)
    return crc


def _first_bad_group(path, meta, bounds, offsets, groups):
    """The first of `groups` whose bytes on disk do not match their checksum (a file that ends early
    included), or None."""
    row_bytes = {name: np.dtype(meta["dtype"]).itemsize * meta["d_mlp"] if name == "acts"
                 else np.dtype(LABEL_FIELDS[name]).itemsize for name in COLUMNS}
    handles = {name: open(path / f"{name}.npy", "rb") for name in COLUMNS}
    try:
        for g in groups:
            lo, hi, crc = bounds[g], bounds[g + 1], 0
            for name in COLUMNS:
                handles[name].seek(offsets[name] + lo * row_bytes[name])
                crc = zlib.crc32(handles[name].read((hi - lo) * row_bytes[name]), crc)  # short if the file ends
            if crc != meta["checksums"][g]:
                return g
    finally:
        for fh in handles.values():
            fh.close()
    return None


def _read_exact(fh, offset, out):
    """Fill the C-contiguous array `out` with the bytes of file `fh` starting at `offset`."""
    view = memoryview(out).cast("B")
    fh.seek(offset)
    done = 0
    while done < len(view):
        n = fh.readinto(view[done:])
        if not n:
            raise StoreError(f"{fh.name}: file ends before offset {offset + len(view)} (truncated since it was "
                             "opened?)")
        done += n


class ActivationStore:
    """A harvested store, opened for reading. Only the rows harvested so far are visible (a partial store
    must be asked for with partial=True).

    verify: "last" (default) checks the last group's checksum, "all" every group's (`verify()` does the
    same later); either way every file's header and size are checked against meta.json. Any damage is a
    StoreError naming the file and the fix.

    acts, tokens, context, detail, pos, index: read-only memory maps [n_rows, ...] for random access in
    analysis (pages touched stay resident as file cache: for a pass over a large store use `read` or
    `blocks`, which copy through explicit reads and keep the resident memory flat)."""

    def __init__(self, path, *, partial=False, verify="last"):
        if verify not in ("last", "all"):
            raise ValueError(f"verify must be 'last' or 'all', got {verify!r}")
        self.path = Path(path)
        if not (self.path / "meta.json").is_file():
            raise FileNotFoundError(f"{self.path}: no meta.json; not an activation store (or its harvest never "
                                    "wrote its first progress record)")
        self.meta, self._bounds, self._offsets = _read_meta(self.path)
        if not self.meta["complete"] and not partial:
            raise StoreError(f"{self.path}: the harvest is incomplete ({self.meta['rows_done']:,} of "
                             f"{self.meta['n_rows']:,} rows); call harvest() again to finish it, or open with "
                             "partial=True to use the rows done")
        self.n_rows = int(self.meta["rows_done"])
        self.d = int(self.meta["d_mlp"])
        self.dtype = np.dtype(self.meta["dtype"])
        self._offset = self._offsets["acts"]
        done = self.meta["groups_done"]
        self.verify(range(done) if verify == "all" else range(max(done - 1, 0), done))
        self._mapped = {}

    def verify(self, groups=None):
        """Check the checksums of `groups` (default: every group harvested); StoreError at the first that
        does not match."""
        groups = range(self.meta["groups_done"]) if groups is None else groups
        bad = _first_bad_group(self.path, self.meta, self._bounds, self._offsets, groups)
        if bad is not None:
            raise StoreError(f"{self.path}: rows {self._bounds[bad]:,}..{self._bounds[bad + 1] - 1:,} do not match "
                             f"the checksum recorded when they were harvested (a file changed since); "
                             f"{_fix(self.path)}")

    def _map(self, name):
        if name not in self._mapped:
            try:
                self._mapped[name] = np.load(self.path / f"{name}.npy", mmap_mode="r")[: self.n_rows]
            except (OSError, ValueError, EOFError) as e:
                raise StoreError(f"{self.path}/{name}.npy cannot be read ({e}); {_fix(self.path)}") from e
        return self._mapped[name]

    acts = property(lambda self: self._map("acts"), doc="[n_rows, d_mlp] memory map")
    tokens = property(lambda self: self._map("tokens"), doc="[n_rows] uint16 token ids")
    context = property(lambda self: self._map("context"), doc="[n_rows] uint8 context label ids")
    detail = property(lambda self: self._map("detail"), doc="[n_rows] uint8 detail label ids")
    pos = property(lambda self: self._map("pos"), doc="[n_rows] uint16 position in the window")
    index = property(lambda self: self._map("index"), doc="[n_rows] int64 index in the corpus split")

    @property
    def context_names(self):
        return tuple(self.meta["corpus"]["context_names"])

    @property
    def detail_names(self):
        return tuple(self.meta["corpus"]["detail_names"])

    def __len__(self):
        return self.n_rows

    def read(self, lo, hi, out=None):
        """Rows lo .. hi - 1 as a fresh array [hi - lo, d_mlp] in the store's dtype (or into `out`, a
        C-contiguous array of that shape and dtype), through an explicit file read."""
        with self.reader() as read:
            return read(lo, hi, out)

    @contextmanager
    def reader(self):
        """A context holding the file open, yielding read(lo, hi, out=None) with `read`'s contract (for
        many small reads)."""
        with open(self.path / "acts.npy", "rb", buffering=0) as fh:
            def read(lo, hi, out=None):
                if not 0 <= lo <= hi <= self.n_rows:
                    raise IndexError(f"rows {lo}..{hi} are outside the store's 0..{self.n_rows}")
                out = np.empty((hi - lo, self.d), self.dtype) if out is None else out
                if out.shape != (hi - lo, self.d) or out.dtype != self.dtype or not out.flags.c_contiguous:
                    raise ValueError(f"out must be C-contiguous {self.dtype} {(hi - lo, self.d)}, "
                                     f"got {out.dtype} {out.shape}")
                _read_exact(fh, self._offset + lo * self.d * self.dtype.itemsize, out)
                return out
            yield read

    def rows(self, index):
        """The activations of the rows `index` (an int array, any order) as float32 [len(index), d_mlp]."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.n_rows):
            raise IndexError(f"row index out of range 0..{self.n_rows - 1}: min {index.min()}, max {index.max()}")
        return np.asarray(self.acts[index], dtype=np.float32)

    def blocks(self, block_rows=8192):
        """Yield (lo, acts [b, d_mlp] float32) for consecutive blocks of rows, in order."""
        for lo in range(0, self.n_rows, block_rows):
            hi = min(lo + block_rows, self.n_rows)
            yield lo, self.read(lo, hi).astype(np.float32, copy=False)

    def mean(self, block_rows=8192):
        """[d_mlp] float64: the mean activation over the store (for mean-ablation)."""
        total = np.zeros(self.d, dtype=np.float64)
        for _, x in self.blocks(block_rows):
            total += x.sum(axis=0, dtype=np.float64)
        return total / max(self.n_rows, 1)


# ----------------------------------------------------------------------------------------------------
# the store: writing


def _write_json_atomic(path, obj):
    # readers see the old progress record or the new one, never half of one
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=1).encode()))


def _plan_meta(params, cfg, corpus, split, n_tokens, dtype, stride, batch, fast, checkpoint):
    starts, keep_from, W, stride = transformer.window_plan(n_tokens, cfg.n_ctx, stride)
    bounds = _group_rows(starts, W, batch)
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
    offsets = {name: npy_layout(path / f"{name}.npy", StoreError, _fix(path), whole=False)[0] for name in files}
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
            meta["checksums"].append(_checksum(columns))
            meta["groups_done"], meta["rows_done"], meta["complete"] = g, int(hi), g == n_groups
            bar.update(hi - lo)
            if time.perf_counter() - last_commit >= save_every or meta["complete"]:
                commit()
                last_commit = time.perf_counter()
        commit()
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
    have, _, offsets = _read_meta(path, whole=False)
    if _identity(have) != _identity(want):
        diff = sorted(k for k in _identity(want) if _identity(have).get(k) != _identity(want)[k])
        raise ValueError(f"{path} holds a store harvested differently (differs in {diff}); use another "
                         "path, or delete it to start over")
    done = have["groups_done"]
    groups = range(done - 1, done) if have["complete"] else range(done)
    bad = _first_bad_group(path, have, bounds, offsets, groups)
    if bad is not None and have["complete"]:
        bad = _first_bad_group(path, have, bounds, offsets, range(done))  # the first damaged group
    if bad is not None:
        print(f"harvest: rows {bounds[bad]:,}.. of {path} do not match their checksums (a file was damaged or "
              f"truncated); harvesting again from row {bounds[bad]:,}", file=sys.stderr)
        have.update(groups_done=bad, rows_done=int(bounds[bad]), complete=False, checksums=have["checksums"][:bad])
    return have


# ----------------------------------------------------------------------------------------------------
# shuffled batches for SAE training


class ShuffledBatches:
    """Rows of a store in random order, without replacement within an epoch, for stores larger than RAM.

    Each epoch shuffles the order of the store's blocks of `block_rows` consecutive rows; the next
    `buffer_blocks` blocks of that order are read into a buffer (explicit reads through one file handle,
    in file order), the buffer's rows are shuffled, and batches are taken from it in that order; when
    the buffer runs out the next blocks are read. Consecutive rows come from one stretch of text, so a
    batch mixes at most as many stretches as the buffer holds blocks: raise buffer_blocks (or lower
    block_rows) for better mixing, lower it for less memory (buffer_blocks * block_rows * d_mlp *
    itemsize bytes). The defaults, 4096 blocks of 32 rows (128 MB at d_mlp 512 in float16), put about
    3,000 stretches of text into each batch of 4096. Coarse blocks do harm: with 32 blocks of 1024 rows,
    a context held by a few short documents sat in under a tenth of the batches, in bursts, and the
    SAE's latents for it went silent long enough to be resampled as dead. A batch may run across two
    buffers or two epochs; every epoch still visits every row exactly once.

    `next(n)` returns (x [n, d_mlp] float32, rows [n] int64). Called as `source(rng, n)` it returns x
    alone, the batch-source contract of sae.SAETask (whose rng it leaves alone: the order is drawn from
    this object's own generator, seeded by `seed`, so that it can be saved and restored with
    state_arrays / load_state_arrays, keys prefixed "batches.")."""

    def __init__(self, store: ActivationStore, *, block_rows=32, buffer_blocks=4096, seed=0):
        if block_rows < 1 or buffer_blocks < 1:
            raise ValueError(f"block_rows and buffer_blocks must be >= 1, got {block_rows}, {buffer_blocks}")
        if len(store) == 0:
            raise ValueError(f"{store.path}: the store has no rows yet")
        self.store, self.block_rows, self.buffer_blocks = store, int(block_rows), int(buffer_blocks)
        self.n_blocks = -(-len(store) // self.block_rows)
        self._rng = np.random.default_rng(seed)
        self._raw = np.empty((self.buffer_blocks * self.block_rows, store.d), store.dtype)  # the buffer
        self.epoch = 0
        self._order = self._rng.permutation(self.n_blocks)  # this epoch's block order
        self._next_block = 0  # position in _order of the next block to read
        self._blocks = np.zeros(0, np.int64)  # blocks in the buffer, in the order they sit there
        self._buffer_rows = np.zeros(0, np.int64)  # the store row of each buffer row
        self._perm = np.zeros(0, np.int64)  # the buffer's rows in the order they are handed out
        self._pos = 0  # how many of them have been handed out

    def _read_blocks(self, blocks):
        """Read the sorted `blocks` into the buffer one after another, each run of adjacent blocks in one
        read; returns the store row of each buffer row."""
        starts = np.flatnonzero(np.diff(blocks, prepend=-2) != 1)  # where a run of adjacent blocks begins
        runs = zip(blocks[starts], np.diff(np.append(starts, len(blocks))))
        rows, at = [], 0
        with self.store.reader() as read:
            for b, n in runs:
                lo, hi = b * self.block_rows, min((b + n) * self.block_rows, len(self.store))
                read(lo, hi, self._raw[at:at + hi - lo])
                rows.append(np.arange(lo, hi))
                at += hi - lo
        return np.concatenate(rows)

    def _fill(self):
        if self._next_block == self.n_blocks:
            self.epoch += 1
            self._order = self._rng.permutation(self.n_blocks)
            self._next_block = 0
        take = self._order[self._next_block:self._next_block + self.buffer_blocks]
        self._next_block += len(take)
        self._blocks = np.sort(take)  # read in file order
        self._buffer_rows = self._read_blocks(self._blocks)
        self._perm = self._rng.permutation(len(self._buffer_rows))
        self._pos = 0

    def next(self, n):
        """The next n rows: (x [n, d_mlp] float32, rows [n] int64 store row of each)."""
        x, rows = np.empty((n, self.store.d), np.float32), np.empty(n, np.int64)
        done = 0
        while done < n:
            if self._pos == len(self._perm):
                self._fill()
            take = self._perm[self._pos:self._pos + n - done]  # buffer positions
            x[done:done + len(take)] = self._raw[take]
            rows[done:done + len(take)] = self._buffer_rows[take]
            done += len(take)
            self._pos += len(take)
        return x, rows

    def __call__(self, rng, n):
        return self.next(n)[0]

    def state_arrays(self):
        """Everything the future batches depend on, as arrays (the buffer's contents are re-read)."""
        return {"batches.epoch": np.array(self.epoch, np.int64), "batches.order": self._order,
                "batches.next_block": np.array(self._next_block, np.int64), "batches.blocks": self._blocks,
                "batches.perm": self._perm, "batches.pos": np.array(self._pos, np.int64),
                "batches.rng": np.array(json.dumps(self._rng.bit_generator.state)),
                "batches.layout": np.array([len(self.store), self.block_rows, self.buffer_blocks], np.int64)}

    def load_state_arrays(self, arrays):
        """The reverse of state_arrays; a state that no iterator over this store could be in is a
        CheckpointError (the checkpoint was damaged, or written for another store or layout)."""
        keys = ("epoch", "order", "next_block", "blocks", "perm", "pos", "rng", "layout")
        missing = [f"batches.{k}" for k in keys if f"batches.{k}" not in arrays]
        if missing:
            raise ckpt.CheckpointError(f"saved batch state lacks {missing}")
        layout = [int(v) for v in arrays["batches.layout"]]
        if layout != [len(self.store), self.block_rows, self.buffer_blocks]:
            raise ckpt.CheckpointError(
                f"saved batch state is for (rows, block_rows, buffer_blocks) = {layout}, this iterator has "
                f"{[len(self.store), self.block_rows, self.buffer_blocks]} (a checkpoint from another batch "
                "layout, e.g. an earlier version's: delete it to train afresh)")
        order, blocks = np.asarray(arrays["batches.order"]), np.asarray(arrays["batches.blocks"])
        perm, next_block, pos = np.asarray(arrays["batches.perm"]), arrays["batches.next_block"], arrays["batches.pos"]
        ok = (all(a.dtype.kind in "iu" for a in (order, blocks, perm, next_block, pos, arrays["batches.epoch"]))
              and np.array_equal(np.sort(order), np.arange(self.n_blocks)) and 0 <= next_block <= self.n_blocks
              and np.isin(blocks, order[:next_block]).all() and np.array_equal(np.sort(perm), np.arange(len(perm)))
              and 0 <= pos <= len(perm) <= self.buffer_blocks * self.block_rows)
        if not ok:
            raise ckpt.CheckpointError("saved batch state is not one this iterator could be in (order, blocks, "
                                       "positions out of range): the checkpoint is damaged")
        try:
            self._rng.bit_generator.state = json.loads(str(arrays["batches.rng"]))
        except (ValueError, TypeError, KeyError) as e:
            raise ckpt.CheckpointError(f"saved batch state: unreadable random-number state ({e})") from e
        self.epoch = int(arrays["batches.epoch"])
        self._order = np.array(order, np.int64)
        self._next_block = int(next_block)
        self._blocks = np.array(blocks, np.int64)
        self._perm = np.array(perm, np.int64)
        self._pos = int(pos)
        self._buffer_rows = self._read_blocks(self._blocks) if len(self._blocks) else np.zeros(0, np.int64)
        if len(self._buffer_rows) != len(self._perm):
            raise ckpt.CheckpointError(f"saved batch state: the buffer holds {len(self._buffer_rows)} rows but its "
                                       f"order has {len(self._perm)}: the checkpoint is damaged")
