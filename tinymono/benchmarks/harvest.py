"""`python -m tinymono bench harvest`: tokens per second of activations.harvest, and its memory.

A randomly initialised transformer at the default config (d_model 128, d_mlp 512, n_ctx 128) over a
synthetic corpus of random bytes (the speed does not depend on the text), float32 store, 32 windows
per forward. Side by side:
- numba:             the numba kernels of the transformer forward, windows overlapping by half (the
                     default: each token kept once, with at least n_ctx / 2 tokens of context);
- numpy:             the NumPy reference layers, same plan;
- numba_no_overlap:  non-overlapping windows (stride n_ctx, every position kept): what the overlap costs.
Then the resident memory while harvesting stores of growing size: the peak growth of RssAnon (the
process's own memory; the store is written with explicit writes, so no page cache is mapped in) and of
VmRSS, sampled every few milliseconds by a thread. Flat means the harvest holds one group of windows,
not the store. Last, ShuffledBatches reading the largest store back (rows per second, 4 MB buffer).
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tinymono import activations as act
from tinymono import corpus as C
from tinymono.corpus_sources import CONTEXT_NAMES, DETAIL_NAMES
from tinymono import transformer as tr
from tinymono.batches import ShuffledBatches
from tinymono.benchmarks import compare, ratio
from tinymono.store import ActivationStore


def _synthetic_corpus(n, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 256, n).astype(np.uint16)
    labels = np.ones(n, np.uint8)
    split = C.Split(tokens, labels, labels, np.full(n, np.nan, np.float32))
    meta = {"fingerprint": f"bench-random-{n}-{seed}", "context_names": list(CONTEXT_NAMES),
            "detail_names": list(DETAIL_NAMES)}
    return C.Corpus(None, meta, split, split)


def _status_kb(fields=("RssAnon", "VmRSS")):
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            name = line.split(":", 1)[0]
            if name in fields:
                out[name] = int(line.split()[1])
    return out


class _PeakSampler:
    """Samples /proc/self/status every `every` seconds in a thread; .peak[field] is the largest value (kB)."""

    def __init__(self, every=0.005):
        self.every, self.peak, self._stop = every, _status_kb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for k, v in _status_kb().items():
                self.peak[k] = max(self.peak[k], v)
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(quick=False):
    cfg = tr.TransformerConfig()
    params = tr.init(cfg, np.random.default_rng(0))
    sizes = [16_384, 65_536, 131_072] if quick else [131_072, 524_288, 1_048_576]
    corpus = _synthetic_corpus(max(sizes))
    n_call = 4_096 if quick else 16_384  # every row harvests as many tokens per call: the store's fixed costs
    root = Path(tempfile.mkdtemp(prefix="tinymono-bench-harvest-"))
    calls = {"n": 0}
    notes = []
    try:
        def harvester(n, **kw):
            def call():
                calls["n"] += 1
                path = root / f"s{calls['n']}"
                act.harvest(params, cfg, corpus, path, n_tokens=n, progress=False, save_every=60.0, **kw)
                shutil.rmtree(path)
            return call

        # memory first, from the process as it is before any harvest: a harvest's numba kernels make malloc
        # keep freed blocks for reuse (kernels/transformer.keep_freed_memory), so after the speed race below a
        # harvest would reuse that heap and its growth would read ~0 whatever its working set
        memory = []
        gc.collect()
        base = _status_kb()
        for n in sizes:
            path = root / f"mem{n}"
            with _PeakSampler() as sampler:
                act.harvest(params, cfg, corpus, path, n_tokens=n, progress=False, save_every=60.0, fast=True)
            store_mb = (path / "acts.npy").stat().st_size / 2**20
            memory.append({"tokens": n, "store_mb": round(store_mb, 1),
                           "rss_anon_growth_mb": round((sampler.peak["RssAnon"] - base["RssAnon"]) / 1024, 1),
                           "vm_rss_growth_mb": round((sampler.peak["VmRSS"] - base["VmRSS"]) / 1024, 1)})
            if n != sizes[-1]:
                shutil.rmtree(path)
        impls = {"numba": harvester(n_call, fast=True), "numpy": harvester(n_call, fast=False),
                 "numba_no_overlap": harvester(n_call, fast=True, stride=cfg.n_ctx)}
        results = compare(impls, n_call, rounds=2 if quick else 5, min_seconds=0.2 if quick else 1.0)
        for r in results.values():
            r["tokens_per_call"] = n_call

        store = ActivationStore(root / f"mem{sizes[-1]}")
        batches = ShuffledBatches(store, block_rows=1024, buffer_blocks=2, seed=0)  # 2 x 1024 x 2 KB = 4 MB
        results["batches_read"] = compare({"batches_read": lambda: batches.next(4096)}, 4096,
                                          rounds=2 if quick else 5, min_seconds=0.2 if quick else 1.0)["batches_read"]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    for m in memory:
        notes.append(f"harvest of {m['tokens']:>9,} tokens ({m['store_mb']:6.1f} MB store): peak RssAnon "
                     f"+{m['rss_anon_growth_mb']:.1f} MB, VmRSS +{m['vm_rss_growth_mb']:.1f} MB over the process "
                     "before its first harvest")
    notes.append(f"each call harvests {n_call:,} tokens into a new store: its fixed costs (the model's fingerprint, "
                 "six files created, their fsync, meta.json) and the disk's writes are in every row's time")
    notes.append("batches_read: rows/s of ShuffledBatches.next(4096) over the largest store (a 4 MB buffer)")
    notes.append("numba_no_overlap keeps every position of non-overlapping windows; numba (the default) computes "
                 "each kept token twice so that each has >= n_ctx/2 tokens of context")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    notes.append(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, load average "
                 f"{load:.1f} on {os.cpu_count()} cores (the NumPy path's batched matmuls suffer most on a busy machine)")
    return {"benchmark": "harvest", "unit": "tok/s",
            "config": {"d_model": cfg.d_model, "d_mlp": cfg.d_mlp, "n_ctx": cfg.n_ctx, "windows_per_forward": 32,
                       "dtype": "float32", "sizes": sizes},
            "results": results,
            "ratios": {"numba_vs_numpy": ratio(results, "numba", "numpy"),
                       "no_overlap_vs_overlap": ratio(results, "numba_no_overlap", "numba")},
            "memory": memory, "notes": notes}
