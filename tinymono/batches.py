"""Shuffled batches of a store's rows, for training a sparse autoencoder on more activations than fit in
memory.

`ShuffledBatches` samples rows without replacement within an epoch: it shuffles the order of
fixed-size blocks of rows, reads a buffer of several random blocks, shuffles the rows inside the
buffer and hands out batches. Its whole state (epoch, positions, random-number state) is a few
arrays, so an SAE run that checkpoints them beside its own resumes bit-identically.

Axis vocabulary: N rows (tokens), M d_mlp.
"""
from __future__ import annotations

import contextlib
import json
import os

import numpy as np

from tinymono import checkpoint as ckpt
from tinymono.kernels.sae import gather_rows
from tinymono.store import ActivationStore



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

    in_memory=True reads the whole store into process memory once, with one sequential read, and takes the
    blocks from there: the same batches, bit for bit, and later epochs read no file. The copy is made when
    the buffer is filled the second time. An SAE loaded from a finished checkpoint draws its initial sample
    from the first buffer (the pipeline's samples fit in one) and restores its saved buffer from the file,
    so it does not copy the store. Use in_memory when a run goes over the store more than once and the
    store fits in memory (`fits_in_memory`). A machine that evicts file pages untouched for a while, as
    the VMs measured here do, otherwise reads a cold store back 8 KB at a time: steps of lesson 06's SAE
    took 30-86 ms instead of about 20 (docs/experiments.md, "The SAE's batches from memory").

    `next(n)` returns (x [n, d_mlp] float32, rows [n] int64). Called as `source(rng, n)` it returns x
    alone, the batch-source contract of sae.SAETask (whose rng it leaves alone: the order is drawn from
    this object's own generator, seeded by `seed`, so that it can be saved and restored with
    state_arrays / load_state_arrays, keys prefixed "batches.")."""

    def __init__(self, store: ActivationStore, *, block_rows=32, buffer_blocks=4096, seed=0, in_memory=False):
        if block_rows < 1 or buffer_blocks < 1:
            raise ValueError(f"block_rows and buffer_blocks must be >= 1, got {block_rows}, {buffer_blocks}")
        if len(store) == 0:
            raise ValueError(f"{store.path}: the store has no rows yet")
        self.store, self.block_rows, self.buffer_blocks = store, int(block_rows), int(buffer_blocks)
        self.n_blocks = -(-len(store) // self.block_rows)
        self._rng = np.random.default_rng(seed)
        self.in_memory = bool(in_memory)
        self._whole = None  # with in_memory: every row of the store, copied at the second fill of the buffer
        self._fills = 0  # how many times _fill has filled the buffer
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
        with self._reader() as read:
            for b, n in runs:
                lo, hi = b * self.block_rows, min((b + n) * self.block_rows, len(self.store))
                read(lo, hi, self._raw[at:at + hi - lo])
                rows.append(np.arange(lo, hi))
                at += hi - lo
        return np.concatenate(rows)

    def _reader(self):
        """The store's reader; once the store is copied into memory, a reader of the copy (the same contract)."""
        if self._whole is None:
            return self.store.reader()

        def read(lo, hi, out):
            out[:] = self._whole[lo:hi]
        return contextlib.nullcontext(read)

    def _fill(self):
        self._fills += 1
        if self.in_memory and self._whole is None and self._fills > 1:
            self._whole = np.empty((len(self.store), self.store.d), self.store.dtype)
            with self.store.reader() as read:
                read(0, len(self.store), self._whole)
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
            gather_rows(self._raw, take, x[done:done + len(take)])
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
                "batches.layout": np.array([len(self.store), self.block_rows, self.buffer_blocks], np.int64),
                "batches.source": np.array(self._source())}

    def _source(self):
        """What the store's rows are: the model and corpus fingerprints and the split (JSON), so that a
        checkpoint of an SAE trained on one model's activations is not resumed on another's."""
        meta = getattr(self.store, "meta", {})
        return json.dumps([meta.get("model", {}).get("fingerprint"), meta.get("corpus", {}).get("fingerprint"),
                           meta.get("corpus", {}).get("split")])

    def load_state_arrays(self, arrays):
        """The reverse of state_arrays; a state that no iterator over this store could be in is a
        CheckpointError (the checkpoint was damaged, or written for another store or layout)."""
        keys = ("epoch", "order", "next_block", "blocks", "perm", "pos", "rng", "layout")
        missing = [f"batches.{k}" for k in keys if f"batches.{k}" not in arrays]
        if missing:
            raise ckpt.CheckpointError(f"saved batch state lacks {missing}")
        if "batches.source" in arrays and str(arrays["batches.source"]) != self._source():  # (older: absent)
            raise ckpt.CheckpointError(
                f"saved batch state is for the activations of another model or corpus "
                f"({arrays['batches.source']}; this store: {self._source()}): the checkpoint belongs to an "
                "earlier harvest: delete it to train afresh")
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


def fits_in_memory(nbytes, share=0.25):
    """Whether `nbytes` is at most `share` of the memory the system has available now (MemAvailable of
    /proc/meminfo; where there is none, the free physical pages). False where neither can be read."""
    try:
        with open("/proc/meminfo") as fh:
            available = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return False
    return nbytes <= share * available
