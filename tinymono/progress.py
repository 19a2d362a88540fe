"""Progress bars that reach the learner whether the loop runs in a terminal, a notebook, or a child process.

In a terminal or a notebook a loop shows tqdm's bar. `python -m tinymono reproduce` runs each lesson as a
child whose output is a pipe, where a bar would be a stream of carriage returns; so it sets
TINYMONO_PROGRESS=records, and `bar()` then returns a `Records` object instead: the same calls (update,
set_postfix, close) written as one line `@progress {json}` on stdout at most once a second, and once at
the end. The parent reads them with `Display`: one live tqdm bar per running loop (steps, loss, rate,
ETA) when its own stdout is a terminal, and otherwise one readable line now and then
("sae: 2,000/4,000 step (50%), 40.1 step/s, ETA 50 s, loss 0.0123") that a log or a CI page can hold.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time

from tqdm.auto import tqdm

ENV = "TINYMONO_PROGRESS"
PREFIX = "@progress "


def reporting():
    """Whether this process reports its progress to a parent as records (TINYMONO_PROGRESS=records)."""
    return os.environ.get(ENV) == "records"


def bar(*, total, desc, unit="it", initial=0, disable=False, unit_scale=False, **kwargs):
    """tqdm(...), or Records(...) when this process reports progress to a parent (and the bar is shown)."""
    if reporting() and not disable:
        return Records(total=total, desc=desc, unit=unit, initial=initial, unit_scale=unit_scale)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, unit_scale=unit_scale,
                **kwargs)


_WRITE_LOCK = threading.Lock()  # a pool's callback thread and the main thread may both report


class Records:
    """tqdm's update / set_postfix / close, written as `@progress {...}` lines for a parent process."""

    def __init__(self, *, total, desc, unit="it", initial=0, unit_scale=False, every=1.0, out=None):
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.n = self.initial = initial
        self.postfix, self.every, self.out = {}, every, out
        self.t0 = self.last = time.perf_counter()
        self.closed = False
        self._emit()

    def _emit(self, done=False):
        record = {"desc": str(self.desc), "n": int(self.n), "total": int(self.total or 0), "initial": int(self.initial),
                  "unit": str(self.unit),
                  "unit_scale": self.unit_scale, "elapsed": round(time.perf_counter() - self.t0, 3),
                  "postfix": self.postfix, "done": done,
                  "stopped": bool(done and self.total and self.n < self.total)}  # closed short of its total
        out = self.out or sys.stdout
        with _WRITE_LOCK:  # one write per record: print's text and newline, from two threads, can interleave
            out.write(PREFIX + json.dumps(record) + "\n")
            out.flush()
        self.last = time.perf_counter()

    def update(self, n=1):
        self.n += n
        if time.perf_counter() - self.last >= self.every:
            self._emit()

    def set_postfix(self, postfix=None, refresh=True, **kwargs):
        self.postfix = {k: str(v) for k, v in {**(postfix or {}), **kwargs}.items()}

    def close(self):
        if not self.closed:
            self.closed = True
            self._emit(done=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def parse(line):
    """The record a `@progress` line holds, or None for any other line (or a damaged record)."""
    if not line.startswith(PREFIX):
        return None
    try:
        record = json.loads(line[len(PREFIX):])
    except ValueError:
        return None
    return record if isinstance(record, dict) and {"desc", "n", "total"} <= set(record) else None


def duration(seconds):
    """'45 s', '12 min 05 s' or '3 h 07 min': a wall time as the progress lines, reports and sweeps print it."""
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def describe(record):
    """One readable line for a record: 'sae: 2,000/4,000 step (50%), 40.1 step/s, ETA 50 s, loss 0.0123'."""
    n, total, unit = record["n"], record["total"] or 0, record.get("unit", "it")
    done_here, elapsed = n - record.get("initial", 0), record.get("elapsed", 0.0)
    if record.get("done") and done_here == 0:
        return f"{record['desc']}: {n:,}/{total:,} {unit}, finished earlier (from its checkpoint)"
    rate = done_here / elapsed if elapsed > 0 and done_here > 0 else None
    parts = [f"{n:,}/{total:,} {unit}" + (f" ({100 * n / total:.0f}%)" if total else "")]
    if rate:
        parts.append((f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}") + f" {unit}/s")
        if total and not record.get("done"):
            parts.append(f"ETA {duration((total - n) / rate)}")
    if record.get("stopped"):
        parts.append(f"stopped after {duration(elapsed)}")
    elif record.get("done"):
        parts.append(f"done in {duration(elapsed)}")
    parts += [f"{k} {v}" for k, v in record.get("postfix", {}).items()]
    return f"{record['desc']}: " + ", ".join(parts)


class Display:
    """Shows the records of one running stage: a live tqdm bar per loop on a terminal (`live`), else one
    line per loop `first` seconds after it starts, then every `every` seconds, and at its end. `write`
    prints any other line of the stage's output without tearing the bar."""

    def __init__(self, label, live=None, every=30.0, first=3.0, out=None):
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self.label, self.every, self.first = label, every, first
        self.bars, self.shown = {}, {}  # desc -> tqdm bar; desc -> when its last line was printed

    def write(self, text):
        if self.live:
            tqdm.write(text.rstrip("\n"), file=self.out)
        else:
            self.out.write(text if text.endswith("\n") else text + "\n")
            self.out.flush()

    def feed(self, record):
        desc = record["desc"]
        if not self.live:
            now = time.perf_counter()
            self.shown.setdefault(desc, now - self.every + self.first)  # its first line comes after `first` s
            if record.get("done") or now - self.shown[desc] >= self.every:
                self.shown[desc] = now
                self.write(f"  {self.label} {describe(record)}")
            if record.get("done"):
                self.shown.pop(desc, None)
            return
        b = self.bars.get(desc)
        if b is None:
            b = self.bars[desc] = tqdm(total=record["total"], initial=record.get("initial", 0),
                                       desc=f"{self.label} {desc}", unit=record.get("unit", "it"),
                                       unit_scale=record.get("unit_scale", False), file=self.out,
                                       dynamic_ncols=True, leave=True)
        b.set_postfix(record.get("postfix", {}), refresh=False)
        b.update(max(0, record["n"] - b.n))
        if record.get("done"):
            b.close()
            del self.bars[desc]

    def close(self):
        for b in self.bars.values():
            b.close()
        self.bars.clear()
