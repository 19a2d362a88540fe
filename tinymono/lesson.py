"""What every lesson script shares: its scale, where it writes, and its ground-truth checks.

A lesson runs as `python lessons/NN_name.py [--scale smoke|default|full] [--seed N] [--runs DIR]`, or as a
notebook (set TINYMONO_SCALE, TINYMONO_SEED and TINYMONO_RUNS in the environment instead of flags):

- `smoke`: seconds; every cell and figure runs on sizes too small for the bars, so checks print SKIP;
- `default`: minutes on a 2-core laptop; every check is asserted;
- `full`: sizes closer to the papers'.

In exercise mode (TINYMONO_IMPL=WORKSPACE, see tinymono/exercises) the lesson says which of its modules
are the learner's, and its figures and models go under WORKSPACE/runs unless --runs says otherwise, so
that nothing trained by the learner's code mixes with the library's cache.

--seed N (default 0) seeds the corpus, the transformer and the SAEs of lessons 05-08 (lessons 01-04 keep
their own seeds), so a result can be checked with a second seed; a run with seed N > 0 lives in
DIR/<scale>-seed<N>/ instead of DIR/<scale>/ (`run_folder`).

Figures go to DIR/<run>/<lesson>/ and models that later lessons reuse to DIR/<run>/cache/. Each
check prints one line, PASS/FAIL/SKIP with the measured number and the bar, and `finish()` exits
non-zero if any check failed. `finish()` also writes DIR/<run>/<lesson>/result.json (the checks, the
figures with their captions, the wall time): the reproduction report is assembled from these.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tinymono.exercises import switch
from tinymono.files import BadFile, DiskFullError, atomic_write, writing

SCALES = ("smoke", "default", "full")


def run_folder(scale, seed=0):
    """The folder name of one run under the runs root: the scale, and the seed when it is not 0."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return scale if seed == 0 else f"{scale}-seed{seed}"


def _interrupt_hook(previous, name, cache):
    """An excepthook that ends a Ctrl-C with one line instead of a traceback (training saved its checkpoint
    before re-raising the interrupt), and a full disk or a damaged file of the project's with the error's
    own message, which names the file and the fix."""
    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            print(f"\ninterrupted; finished training and checkpoints are kept in {cache}: run the same command "
                  "again to resume", file=sys.stderr)
        elif issubclass(kind, (DiskFullError, BadFile)):
            print(f"lesson {name} stopped: {kind.__name__}: {value}", file=sys.stderr)
        else:
            previous(kind, value, tb)
    return hook


class Lesson:
    def __init__(self, name, argv=None):
        parser = argparse.ArgumentParser(description=f"tinymono lesson {name}")
        parser.add_argument("--scale", choices=SCALES, default=os.environ.get("TINYMONO_SCALE", "default"),
                            help="(or TINYMONO_SCALE in the environment)")
        parser.add_argument("--seed", default=os.environ.get("TINYMONO_SEED", "0"),
                            help="seed of the corpus, transformer and SAEs of lessons 05-08 (default: 0, or "
                                 "TINYMONO_SEED)")
        exercise_runs = str(switch.workspace_from_env() / "runs") if switch.active() else None
        parser.add_argument("--runs", default=os.environ.get("TINYMONO_RUNS", exercise_runs or "runs"),
                            help="root folder for figures and cached models (default: ./runs, or TINYMONO_RUNS; in "
                                 "exercise mode WORKSPACE/runs)")
        args, unknown = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
        notebook = "ipykernel" in sys.modules

        def fail(message):  # a script exits with a usage line; a notebook raises
            if notebook:
                raise ValueError(message)
            parser.error(message)

        if unknown and not notebook:  # a notebook's kernel adds arguments of its own
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        if args.scale not in SCALES:  # argparse checks choices on the command line, not a default from TINYMONO_SCALE
            fail(f"scale must be one of {SCALES}, got {args.scale!r} (from --scale or TINYMONO_SCALE)")
        if not args.runs.strip():
            fail("--runs (or TINYMONO_RUNS) is empty: give the folder for figures and models, e.g. --runs runs")
        if not str(args.seed).isdigit():
            fail(f"--seed (or TINYMONO_SEED) must be a non-negative integer, got {args.seed!r}")
        self.name, self.scale, self.seed = name, args.scale, int(args.seed)
        self.out = Path(args.runs) / run_folder(self.scale, self.seed) / name
        self.cache = Path(args.runs) / run_folder(self.scale, self.seed) / "cache"
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # --runs is a file, or cannot be written
            fail(f"cannot write into --runs {args.runs}: {e.strerror or e} ({e.filename or args.runs})")
        self.results = []  # (status, name, value, bar)
        self.figures = []  # (filename, caption)
        self._t0 = time.perf_counter()
        if not notebook:
            sys.excepthook = _interrupt_hook(sys.excepthook, name, self.cache)
        seed = f", seed {self.seed}" if self.seed else ""
        print(f"lesson {name} at scale {self.scale!r}{seed}; figures in {self.out}")
        for line in switch.describe():
            print(line)

    def pick(self, smoke, default, full=None):
        """The value for the current scale (full takes default's, unless given)."""
        return {"smoke": smoke, "default": default, "full": default if full is None else full}[self.scale]

    def savefig(self, fig, filename, caption=""):
        """Save a matplotlib figure into the lesson's folder and close it; returns the path. The caption
        goes under the figure in the reproduction report."""
        import matplotlib.pyplot as plt

        path = self.out / filename
        try:
            with writing(path):
                fig.savefig(path, dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)
        self.figures = [f for f in self.figures if f[0] != filename] + [(filename, caption)]
        print(f"  figure: {path}")
        return path

    def check(self, name, value, passed, bar):
        """Record and print one ground-truth check. At smoke scale the check is reported as SKIP."""
        status = "SKIP" if self.scale == "smoke" else ("PASS" if passed else "FAIL")
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        line = f"{status}  {name:<58} {shown:>12}   bar: {bar}"
        self.results.append((status, name, value, bar))
        print(line, flush=True)
        return passed

    def finish(self):
        """Print the summary, write result.json, and exit non-zero if any check failed (as a script)."""
        failed = [r for r in self.results if r[0] == "FAIL"]
        counts = {s: sum(r[0] == s for r in self.results) for s in ("PASS", "FAIL", "SKIP")}
        record = {"lesson": self.name, "scale": self.scale, "seed": self.seed,
                  "seconds": time.perf_counter() - self._t0,
                  "checks": [{"status": st, "name": n, "value": v if isinstance(v, (int, float, str)) else str(v),
                              "bar": b} for st, n, v, b in self.results],
                  "figures": [{"file": f, "caption": c} for f, c in self.figures]}
        atomic_write(self.out / "result.json", lambda fh: fh.write(json.dumps(record, indent=1).encode()))
        print(f"lesson {self.name}: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
        if failed and "ipykernel" not in sys.modules:
            sys.exit(1)
        return not failed
