"""What every lesson script shares: its scale, where it writes, and its ground-truth checks.

A lesson runs as `python lessons/NN_name.py [--scale smoke|default|full] [--seed N] [--runs DIR]
[--set SECTION.FIELD=VALUE ...]`, or as a notebook (set TINYMONO_SCALE, TINYMONO_SEED, TINYMONO_RUNS and
TINYMONO_SET, settings separated by `;`, in the environment instead of flags; figures then show inline):

- `smoke`: seconds; every cell and figure runs on sizes too small for the bars, so the checks that need
  trained sizes print SKIP (those that do not depend on scale, `scale_free=True`: gradients, causality,
  kernels against their reference, still PASS or FAIL);
- `default`: minutes on a 2-core laptop; every check is asserted;
- `full`: sizes closer to the papers'.

In exercise mode (TINYMONO_IMPL=WORKSPACE, see tinymono/exercises) the lesson says which of its modules
are the learner's, and its figures and models go under WORKSPACE/runs unless --runs says otherwise, so
that nothing trained by the learner's code mixes with the library's cache; the models go to a cache folder
named by a hash of the learner's modules (cache-<hash>), so that no model outlives the code that trained it.

--seed N (default 0) reseeds every lesson, so that a result can be checked with a second seed: lessons 05-08
pass it to the corpus, the transformer and the SAEs (tinymono/pipeline.py); lessons 01-04 were written with
seeds of their own (`np.random.default_rng(1)`, `seed=5`), and take each through `lesson.seeded(k)`, which
is k itself at seed 0 (so the numbers their prose quotes are seed 0's) and k + 1000 N at seed N. A run with
seed N > 0 lives in DIR/<scale>-seed<N>/ instead of DIR/<scale>/ (`run_folder`); `python -m tinymono sweep
seeds` runs several seeds and tabulates every check across them. --set changes a setting of the pipeline
(tinymono/settings.py); such a run writes into DIR/<scale>-set-<key>/ and its settings.json.

Figures go to DIR/<run>/<lesson>/ and models that later lessons reuse to DIR/<scale>[-seed<N>]/cache/
(shared by every --set run, whose files are named by its settings' key). Each
check prints one line, PASS/FAIL/SKIP with the measured number and the bar, and `finish()` exits
non-zero if any check failed. `finish()` also writes DIR/<run>/<lesson>/result.json (the checks, the
figures with their captions, the wall time): the reproduction report is assembled from these.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tinymono import executors, settings, train
from tinymono.exercises import switch
from tinymono.files import BadFile, DiskFullError, atomic_write, writing

SCALES = ("smoke", "default", "full")
# the settings a lesson reads from the environment when its command line does not give them (a notebook's way)
LESSON_ENV = ("TINYMONO_SCALE", "TINYMONO_SEED", "TINYMONO_RUNS", "TINYMONO_SET")
ROOT = Path(__file__).resolve().parents[1]  # the folder holding tinymono/


def run_folder(scale, seed=0, overrides=None):
    """The folder name of one run under the runs root: the scale, the seed when it is not 0, and the key of
    the settings (`--set`) when there are any."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    key = settings.key(overrides or {})
    return (scale if seed == 0 else f"{scale}-seed{seed}") + (f"-set-{key}" if key else "")


def derived_seed(k, seed):
    """The seed a lesson written with seed k uses at --seed `seed`: k at seed 0, k + 1000 seed otherwise (the
    lessons' own seeds are all below 1000, so no two (k, seed) pairs meet)."""
    if not isinstance(k, int) or not 0 <= k < 1000:
        raise ValueError(f"a lesson's own seed must be an integer in [0, 1000), got {k!r}")
    return k + 1000 * seed


def source_commit():
    """The source checkout's commit (with '+ local changes' when its files differ from it), or why not."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({type(e).__name__})"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip()[:12] + (" + local changes" if dirty.stdout.strip() else "")


def write_settings(folder, overrides):
    """settings.json in a run's folder: the settings that made it, as --set reads them."""
    text = json.dumps({"set": settings.describe(overrides), "settings": json.loads(settings.canonical(overrides))},
                      indent=1)
    atomic_write(Path(folder) / "settings.json", lambda fh: fh.write(text.encode()))


def where(*functions):
    """Print where to read each function, one line each: `tinymono/sae.py:118-135  sae.encode_relu_forward` (a
    lesson points at the code rather than printing it; the line numbers are read from the file as it is now).
    """
    for f in functions:
        lines, first = inspect.getsourcelines(f)
        path = Path(inspect.getsourcefile(f)).resolve()
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path  # exercise mode: the workspace's file
        print(f"  {shown}:{first}-{first + len(lines) - 1}  {f.__module__.split('.')[-1]}.{f.__qualname__}")


def in_notebook():
    """True inside a Jupyter kernel: an IPython shell with a kernel, not merely a process that imported
    ipykernel (a test that starts a kernel does, as jupyter_client looks for one)."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return getattr(shell, "kernel", None) is not None


def _interrupt_hook(previous, name, cache):
    """An excepthook that ends a Ctrl-C with one line instead of a traceback (training saved its checkpoint
    before re-raising the interrupt), and a full disk or a damaged file of the project's with the error's
    own message, which names the file and the fix."""
    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            executors.stop_open_pools()  # a pool entered in one cell and left in another (lesson 09's)
            print(f"\ninterrupted; finished training and checkpoints are kept in {cache}: run the same command "
                  "again to resume", file=sys.stderr)
        elif issubclass(kind, (DiskFullError, BadFile)):
            print(f"lesson {name} stopped: {kind.__name__}: {value}", file=sys.stderr)
        else:
            previous(kind, value, tb)
    return hook


def _as_ctrl_c(signum, frame):
    """SIGTERM or SIGHUP, handled as the SIGINT handler in force would handle a Ctrl-C; where SIGINT is ignored
    (a job started in the background of a shell), as Python's default Ctrl-C: a `kill` must still stop it."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def stops_as_ctrl_c():
    """From now on SIGTERM (`kill`, `timeout`, reproduce passing its own on) and SIGHUP (a closed terminal) stop
    this process as Ctrl-C does: a training loop saves its checkpoint, a pool's workers save theirs. Left at
    their defaults, the process died at once and the work since the last periodic save was lost. Returns the
    handlers replaced ({signal: handler}; none off the main thread, where Python cannot set them)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _as_ctrl_c) for sig in (signal.SIGTERM, signal.SIGHUP)}


class Lesson:
    def __init__(self, name, argv=None, reads_settings=True):
        parser = argparse.ArgumentParser(description=f"tinymono lesson {name}")
        parser.add_argument("--scale", choices=SCALES, default=os.environ.get("TINYMONO_SCALE", "default"),
                            help="smoke: seconds, sizes too small for the bars; default: the checked sizes, "
                                 "minutes (lesson 10 about a quarter of an hour; a lesson trains what earlier lessons "
                                 "would have cached, if they have not run); full: hours (default: default, or "
                                 "TINYMONO_SCALE in the environment)")
        parser.add_argument("--seed", default=os.environ.get("TINYMONO_SEED", "0"),
                            help="reseeds the lesson (lessons 05-08: corpus, transformer, SAEs; 01-04: their own seeds, "
                                 "unchanged at 0) (default: 0, or TINYMONO_SEED)")
        exercise_runs = str(switch.workspace_from_env() / "runs") if switch.active() else None
        parser.add_argument("--runs", "--out", dest="runs", default=os.environ.get("TINYMONO_RUNS", exercise_runs or "runs"),
                            help="root folder for figures and cached models, as reproduce's --out (default: ./runs, or "
                                 "TINYMONO_RUNS; in exercise mode WORKSPACE/runs)")
        parser.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                            default=[s for s in os.environ.get("TINYMONO_SET", "").split(";") if s.strip()],
                            help="change one setting of the pipeline, e.g. --set sae.l1_coefficient=4e-4 (repeat "
                                 "for more; or TINYMONO_SET, separated by ';'); see tinymono/settings.py")
        args, unknown = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
        notebook = in_notebook()

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
        if not (str(args.seed).isascii() and str(args.seed).isdigit()):  # isdigit alone takes '²' (int() does not)
            fail(f"--seed (or TINYMONO_SEED) must be a non-negative integer, got {args.seed!r}")
        try:
            overrides = settings.parse(args.set)
            settings.ACTIVE = overrides
            if overrides:
                from tinymono import pipeline  # only now: lessons 01-04 never need it

                pipeline.check_settings(args.scale)
        except ValueError as e:
            fail(str(e))
        self.name, self.scale, self.seed, self.settings = name, args.scale, int(args.seed), overrides
        self.out = Path(args.runs) / run_folder(self.scale, self.seed, overrides) / name
        # one cache for every setting: pipeline.py names each cached file by the settings it depends on
        # (in exercise mode, one cache per version of the learner's code: a model trained by a buggy function
        # must not outlive the fix)
        self.cache = Path(args.runs) / run_folder(self.scale, self.seed) / f"cache{switch.cache_suffix()}"
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.cache.mkdir(parents=True, exist_ok=True)
            if overrides:
                write_settings(self.out.parent, overrides)
        except OSError as e:  # --runs is a file, or cannot be written
            fail(f"cannot write into --runs {args.runs}: {e.strerror or e} ({e.filename or args.runs})")
        self.results = []  # (status, name, value, bar)
        self.figures = []  # (filename, caption)
        self._t0 = time.perf_counter()
        if not notebook:  # a kernel has its own ways to stop (and ignores SIGINT between cells)
            stops_as_ctrl_c()
            sys.excepthook = _interrupt_hook(sys.excepthook, name, self.cache)
        seed = f", seed {self.seed}" if self.seed else ""
        changed = f", settings {' '.join(settings.describe(overrides))}" if overrides else ""
        print(f"lesson {name} at scale {self.scale!r}{seed}{changed}; figures in {self.out}")
        if overrides and not reads_settings:
            print("  (this lesson reads none of pipeline.SIZES' settings: its numbers are the plain run's, written "
                  "here beside the other lessons of this run)")
        for line in switch.describe():
            print(line)

    def seeded(self, k):
        """The lesson's own seed k at this run's --seed: k at seed 0 (`derived_seed`)."""
        return derived_seed(k, self.seed)

    def pick(self, smoke, default, full=None):
        """The value for the current scale (full takes default's, unless given)."""
        return {"smoke": smoke, "default": default, "full": default if full is None else full}[self.scale]

    def savefig(self, fig, filename, caption=""):
        """Save a matplotlib figure into the lesson's folder (its path in self.figures) and close it; in a
        notebook, show it in the cell first. Returns nothing, so a cell that ends with it shows the figure
        alone. The caption goes under the figure in the reproduction report."""
        import matplotlib.pyplot as plt

        path = self.out / filename
        try:
            with writing(path):
                fig.savefig(path, dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)  # closed, the inline backend would not show it: in a notebook the saved PNG is shown
        if in_notebook():
            from IPython.display import Image, display

            display(Image(filename=str(path)))
        self.figures = [f for f in self.figures if f[0] != filename] + [(filename, caption)]
        print(f"  figure: {path}")

    def check(self, name, value, passed, bar, scale_free=False):
        """Record and print one ground-truth check. At smoke scale the check is reported as SKIP unless it
        is `scale_free` (a gradient check, causality, a kernel against its reference: the same bar holds
        on any size), so a first smoke run already shows what passes."""
        status = "SKIP" if self.scale == "smoke" and not scale_free else ("PASS" if passed else "FAIL")
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        line = f"{status}  {name:<58} {shown:>12}   bar: {bar}"
        self.results.append((status, name, value, bar))
        print(line, flush=True)
        return passed

    def finish(self):
        """Print the summary, write result.json, and exit non-zero if any check failed (as a script)."""
        failed = [r for r in self.results if r[0] == "FAIL"]
        counts = {s: sum(r[0] == s for r in self.results) for s in ("PASS", "FAIL", "SKIP")}
        record = {"lesson": self.name, "scale": self.scale, "seed": self.seed, "set": settings.describe(self.settings),
                  "seconds": time.perf_counter() - self._t0,
                  "checks": [{"status": st, "name": n, "value": v if isinstance(v, (int, float, str)) else str(v),
                              "bar": b} for st, n, v, b in self.results],
                  "figures": [{"file": f, "caption": c} for f, c in self.figures],
                  "training": list(train.RUNS),  # what this process trained (not loaded from the cache; not a worker's)
                  "commit": source_commit()}
        atomic_write(self.out / "result.json", lambda fh: fh.write(json.dumps(record, indent=1).encode()))
        print(f"lesson {self.name}: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
        if failed and not in_notebook():
            sys.exit(1)
        return not failed
