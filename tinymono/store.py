"""The on-disk store of harvested MLP activations (written by activations.harvest): its layout, its checks,
and reading it back.

Each group of rows a harvest writes gets a checksum (zlib.crc32 over the bytes of every column, recorded
in meta.json `checksums`), so damage is found, not read back as data: opening a store checks every
file's header and size and the last group's checksum (cheap; `verify="all"` or `store.verify()` checks
every group).

On disk (one folder):

    acts.npy     [N, d_mlp] float32 or float16   the activations at mlp.hook_post
    tokens.npy   [N] uint16                      token id of the row's byte
    context.npy  [N] uint8, detail.npy [N] uint8 its corpus labels
    pos.npy      [N] uint16                      its position in the window it was computed in
    index.npy    [N] int64                       its index in the corpus split
    meta.json    model and corpus fingerprints, dtype, plan, rows done, complete, a checksum per group

Axis vocabulary: N rows (tokens), M d_mlp, W window length (n_ctx).
"""
from __future__ import annotations

import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tinymono import transformer
from tinymono.files import BadFile, npy_layout, read_json
from tinymono.kernels.sae import gather_rows

FORMAT_VERSION = 2  # 2: a checksum per group
LABEL_FIELDS = {"tokens": np.uint16, "context": np.uint8, "detail": np.uint8, "pos": np.uint16, "index": np.int64}
COLUMNS = ("acts", *LABEL_FIELDS)  # the store's files, in the order the checksums read them
DTYPES = ("float32", "float16")
META_KEYS = ("format", "hook", "model", "corpus", "dtype", "d_mlp", "n_rows", "fast", "plan", "rows_done",
             "groups_done", "complete", "checksums")


class StoreError(BadFile):
    """An activation store that is incomplete, damaged, or not what its meta.json says."""



# ----------------------------------------------------------------------------------------------------
# which rows each group of windows writes


def group_rows(starts, W, batch):
    """[n_groups + 1]: group g (windows g*batch .. g*batch + batch - 1) writes rows bounds[g] .. bounds[g+1]."""
    ends = starts + W
    last = np.minimum(np.arange(batch, len(starts) + batch, batch), len(starts)) - 1
    return np.concatenate([[0], ends[last]])


# ----------------------------------------------------------------------------------------------------
# the store: reading


def repair_advice(path):
    return f"delete {path} and harvest again (the lessons do, when it is missing)"


def read_meta(path, whole=True):
    """(meta, group bounds, {column: header bytes}) of the store at `path`: meta.json with every key present
    and consistent, and each file's dtype and shape as meta.json says (and, if `whole`, each file as long
    as its shape says); else StoreError."""
    meta_path = path / "meta.json"
    meta = read_json(meta_path, StoreError, repair_advice(path), required=META_KEYS)
    if meta["format"] != FORMAT_VERSION:
        raise StoreError(f"{meta_path}: store format {meta['format']!r}, this version reads {FORMAT_VERSION}; "
                         f"delete {path} to harvest it again")
    if not (meta["dtype"] in DTYPES and all(type(meta[k]) is int and meta[k] >= 1 for k in ("n_rows", "d_mlp"))):
        raise StoreError(f"{meta_path}: dtype {meta['dtype']!r}, n_rows {meta['n_rows']!r}, d_mlp {meta['d_mlp']!r} "
                         f"are not a store's; {repair_advice(path)}")
    offsets = {}
    for name in COLUMNS:  # the files first: their sizes bound what the plan below may allocate
        want_dtype = np.dtype(meta["dtype"] if name == "acts" else LABEL_FIELDS[name])
        want_shape = (meta["n_rows"], meta["d_mlp"]) if name == "acts" else (meta["n_rows"],)
        offsets[name], dtype, shape = npy_layout(path / f"{name}.npy", StoreError, repair_advice(path), whole=whole)
        if dtype != want_dtype or tuple(shape) != want_shape:
            raise StoreError(f"{path / name}.npy: {dtype} {tuple(shape)}, meta.json says {want_dtype} {want_shape}; "
                             f"{repair_advice(path)}")
    try:
        plan = meta["plan"]
        bounds = group_rows(transformer.window_plan(meta["n_rows"], plan["window"], plan["stride"])[0], plan["window"],
                             plan["batch"])
        ok = (type(meta["groups_done"]) is int and 0 <= meta["groups_done"] <= len(bounds) - 1
              and meta["rows_done"] == bounds[meta["groups_done"]] and len(meta["checksums"]) == meta["groups_done"]
              and meta["complete"] == (meta["groups_done"] == len(bounds) - 1)
              and all(type(c) is int for c in meta["checksums"]))
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise StoreError(f"{meta_path} is inconsistent ({type(e).__name__}: {e}); {repair_advice(path)}") from e
    if not ok:
        raise StoreError(f"{meta_path} is inconsistent (rows {meta['rows_done']!r}, groups {meta['groups_done']!r}, "
                         f"{len(meta['checksums'])} checksums, complete {meta['complete']!r}); {repair_advice(path)}")
    return meta, bounds, offsets


def checksum(columns):
    """crc32 over the bytes of the columns {name: array} of one group, in COLUMNS order."""
    crc = 0
    for name in COLUMNS:
        crc = zlib.crc32(np.ascontiguousarray(columns[name]).data, crc)
    return crc


def first_bad_group(path, meta, bounds, offsets, groups):
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
        self.meta, self._bounds, self._offsets = read_meta(self.path)
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
        bad = first_bad_group(self.path, self.meta, self._bounds, self._offsets, groups)
        if bad is not None:
            raise StoreError(f"{self.path}: rows {self._bounds[bad]:,}..{self._bounds[bad + 1] - 1:,} do not match "
                             f"the checksum recorded when they were harvested (a file changed since); "
                             f"{repair_advice(self.path)}")

    def _map(self, name):
        if name not in self._mapped:
            try:
                self._mapped[name] = np.load(self.path / f"{name}.npy", mmap_mode="r")[: self.n_rows]
            except (OSError, ValueError, EOFError) as e:
                raise StoreError(f"{self.path}/{name}.npy cannot be read ({e}); {repair_advice(self.path)}") from e
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

    def read_float32(self, lo, hi):
        """Rows lo .. hi - 1 as float32 [hi - lo, d_mlp]. A float16 store's rows are widened by the numba kernel
        of the SAE's batches (kernels/sae.py: gather_rows), bit for bit NumPy's astype and 4x faster here (the
        lessons' scoring passes widen every row of the held-out store several times; docs/experiments.md,
        "Lessons 03 and 06-10 without their waste")."""
        raw = self.read(lo, hi)
        if raw.dtype == np.float32:
            return raw
        out = np.empty(raw.shape, np.float32)
        gather_rows(raw, np.arange(hi - lo), out)
        return out

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
            yield lo, self.read_float32(lo, hi)

    def mean(self, block_rows=8192):
        """[d_mlp] float64: the mean activation over the store (for mean-ablation)."""
        total = np.zeros(self.d, dtype=np.float64)
        for _, x in self.blocks(block_rows):
            total += x.sum(axis=0, dtype=np.float64)
        return total / max(self.n_rows, 1)
