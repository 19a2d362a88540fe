"""What a new process pays before the numba paths run at speed: the import, then each hot path's first call
minus its second (numba loads its cached machine code from disk, or compiles it on a first run), for the
transformer's training step, the SAE's sparse step and the toy model's fused kernel, at small shapes (the
SAE's at lesson 06's, from which its kernels run on threads).

Each measurement is a fresh `python -c` process, run twice: the first run may fill numba's on-disk cache
(its cost is what a fresh checkout pays once); the second is what every later process pays. The goal
is at most 1 s per process after the first run.
"""
from __future__ import annotations

import json
import subprocess
import sys

PROBE = r'''
import json, time
t0 = time.perf_counter()
import numpy as np
from tinymono import sae, toy
from tinymono import transformer as tr
from tinymono.benchmarks.sae import make_state, numba_step
from tinymono.optim import Adam
out = {"import": time.perf_counter() - t0}

def first_minus_second(fn):
    a = time.perf_counter(); fn(); b = time.perf_counter(); fn(); c = time.perf_counter()
    return max((b - a) - (c - b), 0.0)

rng = np.random.default_rng(0)
cfg = tr.TransformerConfig()
params, tokens = tr.init(cfg, rng), rng.integers(0, cfg.d_vocab, (4, cfg.n_ctx + 1))
out["transformer step"] = first_minus_second(lambda: tr.loss_and_grads(params, tokens, cfg, fast=True))
scfg = sae.SAEConfig(d_in=128, d_sae=1024, batch_size=4096, lr=1e-6)  # lesson 06's shape: its kernels run on threads
sp, x = make_state(scfg, rng)
buf, opt = sae.Buffers(scfg), Adam(sp, lr=1e-6, fused=True)
out["sae sparse step"] = first_minus_second(lambda: numba_step(sp, opt, x, scfg, buf))
task = toy.ToyTask(toy.ToyConfig(5, 2, n_inst=8, feature_probability=0.1, batch_size=64, steps=10**6,
                                 lr_decay="constant"), "numba")
state = {"step": 0}
def chunk():
    task.run_chunk(state["step"], 5)
    state["step"] += 5
out["toy kernel"] = first_minus_second(chunk)
print(json.dumps(out))
'''


def measure():
    """One fresh process: {part: seconds}."""
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the startup probe failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick=False):
    runs = [measure() for _ in range(2)]
    results = {}
    for label, got in (("first process", runs[0]), ("later process", runs[1])):
        total = sum(got.values())
        results[label] = {"per_second": 1 / total, "seconds_per_call": total, "spread": 0.0,
                          **{part.replace(" ", "_"): seconds for part, seconds in got.items()}}
    compile_later = sum(v for k, v in runs[1].items() if k != "import")
    notes = ["per_second here is processes started per second; each part is in seconds",
             f"numba's first-call cost in a later process: {compile_later:.2f} s (goal <= 1 s): "
             f"{'met' if compile_later <= 1 else 'MISSED'}"]
    return {"benchmark": "startup", "unit": "proc/s", "config": {"probe": "transformer, sae, toy at small shapes"},
            "results": results, "ratios": {}, "notes": notes, "compile_seconds_later": compile_later}
