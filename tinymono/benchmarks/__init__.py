"""Benchmarks: throughput of implementations measured side by side in one run, reported as ratios.

Timing on a shared 2-core machine is noisy, so implementations are never timed in separate runs and
compared across them. `compare` alternates the implementations round by round, each round starting one
place further along (A, B, C, then B, C, A, ...: no implementation always follows the same neighbour and
what it leaves behind, such as BLAS threads still spinning), repeats each call until a round lasts at
least `min_seconds`, and reports the median over rounds. A goal is "met" only when the ratio holds in
every round (the rounds pair the two implementations: `ratio_range`), "MISSED" when it fails in every
round, and "within noise" otherwise.
Each benchmark module has `run(quick: bool) -> dict` returning
    {"benchmark": NAME, "config": {...}, "results": {IMPL: {"per_second": X, ...}}, "ratios": {...},
     "notes": [...]}
and the CLI prints the table and, with --json, that object (plus "machine") as the last line.

`busy_core()` (the CLI's --busy) runs a fixed CPU burner in another process for the whole benchmark, so
every implementation is timed while a second core is taken, as on a machine doing other work.
"""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time

# One core's worth of fixed work: integer arithmetic in a loop, no memory traffic, no BLAS threads.
BURNER = "x = 0\nwhile True:\n    x = (x * 1103515245 + 12345) & 0xFFFFFFFF\n"


@contextlib.contextmanager
def busy_core():
    """Keep one core busy with BURNER in a child process while the block runs; the child is killed on
    the way out (also on an error or Ctrl-C). Yields the child's Popen."""
    child = subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def compare(impls, items_per_call, rounds=5, min_seconds=0.3, warmup=1):
    """impls: name -> zero-argument callable doing one unit of work on `items_per_call` items (a number,
    or a dict name -> number when the implementations do different amounts of work per call).
    Returns name -> {"per_second": items/s (median over rounds), "seconds_per_call": median, "spread",
    "rounds": seconds per call in each round}."""
    if not isinstance(items_per_call, dict):
        items_per_call = {name: items_per_call for name in impls}
    for fn in impls.values():
        for _ in range(warmup):
            fn()  # compile numba kernels, fault in buffers
    per_call = {name: [] for name in impls}
    names = list(impls)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = impls[name]
            n, t0 = 0, time.perf_counter()
            while True:
                fn()
                n += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= min_seconds:
                    break
            per_call[name].append(elapsed / n)
    out = {}
    for name, times in per_call.items():
        med = statistics.median(times)
        out[name] = {"per_second": items_per_call[name] / med, "seconds_per_call": med,
                     "spread": (max(times) - min(times)) / med, "rounds": times}
    return out


def ratio(results, a, b):
    """Throughput of a over throughput of b (None when either is missing)."""
    if a in results and b in results:
        return results[a]["per_second"] / results[b]["per_second"]
    return None


def ratio_range(results, a, b):
    """(smallest, largest) over the rounds of a's throughput over b's, each round's two calls paired (None
    when either is missing)."""
    if a not in results or b not in results:
        return None
    per_round = [(results[a]["per_second"] * results[a]["seconds_per_call"] / ta)
                 / (results[b]["per_second"] * results[b]["seconds_per_call"] / tb)
                 for ta, tb in zip(results[a]["rounds"], results[b]["rounds"])]
    return min(per_round), max(per_round)


def goal_notes(values, goals, ranges=None):
    """One note per goal: goals {name: (least value, what it means)}, values {name: measured or None},
    ranges {name: (smallest, largest) over the rounds}: with a range, "met" only when its smallest value
    reaches the goal, "MISSED" when its largest does not, else "within noise"."""
    notes, ranges = [], ranges or {}
    for name, (least, meaning) in goals.items():
        v, span = values.get(name), ranges.get(name)
        if v is None:
            verdict = "not measured"
        elif span is None:
            verdict = f"{v:.2f} {'met' if v >= least else 'MISSED'}"
        else:
            lo, hi = span
            word = "met" if lo >= least else "MISSED" if hi < least else "within noise"
            verdict = f"{v:.2f} (rounds {lo:.2f}-{hi:.2f}) {word}"
        notes.append(f"goal {name} >= {least:g} ({meaning}): {verdict}")
    return notes


def machine():
    import numpy as np

    info = {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    for mod in ("numba", "torch"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def torch_or_none():
    """PyTorch set to the machine's cores, or None when it is not installed (benchmarks skip it)."""
    try:
        import torch
    except ImportError:
        return None
    from tinymono.executors import cores

    torch.set_num_threads(cores())  # the cores this process may use, as numba's and OpenBLAS's threads
    return torch


def torch_adam(torch, params, adamw=False, **kwargs):
    """PyTorch's Adam (AdamW) over `params` (a list, or parameter groups), with its fused CPU kernel where
    the build has one (one pass per tensor, as tinymono's fused Adam), else its default."""
    make = torch.optim.AdamW if adamw else torch.optim.Adam
    try:
        return make(params, fused=True, **kwargs)
    except (TypeError, RuntimeError):  # an older build: no fused update on the CPU
        return make(params, **kwargs)


def format_table(result, unit="items/s"):
    lines = [f"benchmark {result['benchmark']}: " + ", ".join(f"{k}={v}" for k, v in result["config"].items())]
    width = max(len(k) for k in result["results"]) + 2
    for name, r in result["results"].items():
        extra = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in r.items() if k not in ("per_second", "seconds_per_call", "spread", "rounds"))
        lines.append(f"  {name:<{width}} {r['per_second']:>14,.0f} {unit}   "
                     f"{1e3 * r['seconds_per_call']:9.2f} ms/call  (spread {100 * r['spread']:.0f}%)  {extra}")
    for k, v in result.get("ratios", {}).items():
        lines.append(f"  {k:<{width + 12}} {'n/a' if v is None else f'{v:.2f}x'}")
    for note in result.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
