"""The one training loop, shared by the toy model, the sparse autoencoder and the transformer.

A model module supplies a *task*: an object that knows how to advance its own training by a chunk of
steps (one Python step at a time, or a numba kernel that runs the whole chunk) and how to hand over and
take back its complete state. This loop supplies everything else, the same way for every model:

- a progress bar with the task's live metrics (and items per second, e.g. tokens/s);
- a metrics history, one row per chunk;
- checkpoints: every `save_every` seconds and at the end, atomically (checkpoint.py);
- resume: a run restarted from its checkpoint ends bit-identical to one that was never stopped,
  because the checkpoint holds every array the task's future depends on (parameters, optimiser
  moments, random-number state, counters) and the history so far;
- Ctrl-C: the first one finishes the current chunk, saves a checkpoint and exits with
  KeyboardInterrupt; a second one aborts at once;
- a non-finite guard: if a metric becomes NaN or inf the run stops with a clear message, and the last
  good checkpoint on disk is kept (the bad state is never saved).

The task protocol (duck-typed; no model module imports this file):

    task.config_dict() -> dict                    JSON-able; a checkpoint must match it to be resumed
    task.run_chunk(start_step, n_steps) -> dict   advance n steps; metrics such as {"loss": ...}
    task.state_arrays() -> dict[str, ndarray]     everything needed to resume
    task.load_state_arrays(arrays) -> None        the reverse; raise CheckpointError on a shape mismatch
    task.items_per_step (optional)                e.g. tokens per step, to show items/s
    task.chunk_steps (optional)                   the chunk length the task prefers
    task.items_name (optional)                    e.g. "tok"
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from tinymono import checkpoint as ckpt
from tinymono.progress import bar as progress_bar
from tinymono.progress import reporting


class NonFiniteError(RuntimeError):
    """Training produced a NaN or infinite metric."""


@dataclass
class TrainResult:
    history: dict = field(default_factory=dict)  # name -> [n_chunks] array; "step" is the step after each chunk
    step: int = 0  # steps completed
    resumed_from: int | None = None  # the checkpoint step this run continued from, if any
    seconds: float = 0.0  # wall time of this call


# Ctrl-C, `kill` and a closed terminal: each asks the loop to save and stop (SIGHUP is not on Windows)
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class _InterruptFlag:
    """Turns the first Ctrl-C (or SIGTERM, SIGHUP) into a flag the loop checks between chunks; the second
    one aborts. `stop()` is what the loop raises once it has saved: KeyboardInterrupt for Ctrl-C, else the
    exit a killed process reports (128 + the signal's number)."""

    def __init__(self):
        self.raised = False
        self.signum = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in _STOP_SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised, self.signum = True, signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: finishing this chunk and saving a checkpoint (Ctrl-C again to abort now)",
              file=sys.stderr, flush=True)

    def stop(self):
        return KeyboardInterrupt() if self.signum in (None, signal.SIGINT) else SystemExit(128 + self.signum)

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        return False


def _normalise(config):
    """The config as it reads back from JSON (tuples become lists), so comparisons are fair."""
    return json.loads(json.dumps(config))


def _history_arrays(history):
    return {f"history.{k}": np.asarray(v, dtype=np.float64) for k, v in history.items()}


def _resume_step(path, meta, config, total_steps):
    """The step a checkpoint's meta says was reached, after checking that the meta belongs to this run."""
    saved = meta.get("config")
    if saved != config:
        saved = saved if isinstance(saved, dict) else {}
        diff = sorted(k for k in set(config) | set(saved) if config.get(k) != saved.get(k))
        raise ckpt.CheckpointError(f"checkpoint {path} was written for a different config (differs in "
                                   f"{diff}); use another path or delete it to start over")
    step, end = meta.get("step"), meta.get("total_steps", total_steps)
    if not (type(step) is int and type(end) is int and 0 <= step <= end):
        raise ckpt.CheckpointError(f"checkpoint {path} says it reached step {step!r} of {end!r}, which no "
                                   "run writes; delete it to start over")
    if step > total_steps:
        raise ckpt.CheckpointError(f"checkpoint {path} is at step {step}, past this run's end ({total_steps} "
                                   "steps): it belongs to a longer run; use another path or delete it")
    return step


# Every training run of this process that advanced at least one step, in order: what `reproduce` reports
# as each stage's throughput (tinymono.lesson writes it into the stage's result.json).
RUNS: list = []


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def train(task, total_steps, *, chunk_steps=None, checkpoint=None, resume=True, save_every=60.0,
          progress=None, desc="train"):
    """Advance `task` to `total_steps` steps, in chunks of `chunk_steps` (default: the task's own
    `chunk_steps` attribute, else 100).

    checkpoint: path of the checkpoint file (None: no checkpoints). resume: continue from it if it exists
    (a checkpoint that is corrupt or was written for another config is an error, and is left untouched).
    save_every: seconds between checkpoints (one is always written at the end). progress: show a bar
    (None: only when stderr is a terminal or a notebook). Returns a TrainResult."""
    chunk_steps = getattr(task, "chunk_steps", 100) if chunk_steps is None else chunk_steps
    if total_steps < 0 or chunk_steps < 1:
        raise ValueError(f"need total_steps >= 0 and chunk_steps >= 1, got {total_steps}, {chunk_steps}")
    config = _normalise(task.config_dict())
    history: dict[str, list] = {}
    step, resumed_from = 0, None
    path = ckpt.npz_path(checkpoint) if checkpoint is not None else None

    if path is not None and resume and path.exists():
        arrays, meta = ckpt.load(path)
        step = resumed_from = _resume_step(path, meta, config, total_steps)
        history = {k[len("history."):]: list(v) for k, v in arrays.items() if k.startswith("history.")}
        try:
            task.load_state_arrays({k: v for k, v in arrays.items() if not k.startswith("history.")})
        except (ValueError, TypeError, KeyError) as e:  # the task found a member missing or unusable
            reason = str(e) if isinstance(e, ckpt.CheckpointError) else f"{type(e).__name__}: {e}"
            raise ckpt.CheckpointError(f"checkpoint {path}: {reason}; delete it to start over") from e

    saved_step = resumed_from

    def save():
        nonlocal saved_step
        if path is not None:
            ckpt.save(path, {**task.state_arrays(), **_history_arrays(history)},
                      {"config": config, "step": step, "total_steps": total_steps})
            saved_step = step

    if progress is None:
        progress = sys.stderr.isatty() or "ipykernel" in sys.modules or reporting()
    items_per_step = getattr(task, "items_per_step", None)
    items_name = getattr(task, "items_name", "item")
    bar = progress_bar(total=total_steps, initial=min(step, total_steps), desc=desc, unit="step",
                       disable=not progress, dynamic_ncols=True, leave=True)
    t_start = last_save = time.perf_counter()
    first_step, stepping = step, 0.0  # seconds inside run_chunk: the throughput, without checkpoint writes
    try:
        with _InterruptFlag() as interrupt:
            while step < total_steps:
                n = min(chunk_steps, total_steps - step)
                t0 = time.perf_counter()
                metrics = task.run_chunk(step, n)
                dt = time.perf_counter() - t0
                stepping += dt
                bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
                if bad:
                    where = (f"the last good checkpoint ({path}, step {saved_step}) is kept" if saved_step is not None
                             else "no checkpoint had been written yet")
                    raise NonFiniteError(
                        f"{desc}: non-finite {bad} in steps {step}..{step + n - 1}; {where}. The learning rate "
                        "may be too high, or the data holds NaN/inf.")
                step += n
                history.setdefault("step", []).append(step)
                for k, v in metrics.items():
                    history.setdefault(k, []).append(float(v))
                postfix = {k: _fmt(float(v)) for k, v in metrics.items()}
                if items_per_step:
                    postfix[f"{items_name}/s"] = f"{items_per_step * n / max(dt, 1e-9):,.0f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(n)
                if interrupt.raised:
                    save()
                    bar.close()
                    where = f"checkpoint saved to {path}; run again to resume" if path else "no checkpoint path given"
                    print(f"{desc}: interrupted at step {step} ({where})", file=sys.stderr, flush=True)
                    raise interrupt.stop()
                if path is not None and time.perf_counter() - last_save >= save_every:
                    save()
                    last_save = time.perf_counter()
            if step != saved_step:  # a finished run loaded from its checkpoint is not written again
                save()  # still under the flag: a Ctrl-C now waits for the save, then stops as asked
            if interrupt.raised:
                raise interrupt.stop()
    finally:
        bar.close()
        if step > first_step:
            RUNS.append({"desc": desc, "steps": step - first_step, "seconds": stepping,
                         "items": None if items_per_step is None else items_per_step * (step - first_step),
                         "items_name": items_name})
    hist = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}
    return TrainResult(hist, step, resumed_from, time.perf_counter() - t_start)
