"""Command line:

    python -m tinymono reproduce [--out DIR] [--scale smoke|default|full] [--seed N] [--force] [--only NAME ...]
                                 [--set SECTION.FIELD=VALUE ...]
    python -m tinymono sweep sae-gt [--l1 L1 ...] [--ratio R ...] [--steps N] [--scale S] [--seed N] [--out DIR]
                                    [--executor process|serial|dask-local|dask://HOST:PORT] [--workers N]
    python -m tinymono sweep seeds --seeds N [N ...] [--only NAME ...] [--scale S] [--set ...] [--out DIR]
                                   [--executor ...] [--workers N]
    python -m tinymono bench NAME [--json] [--quick] [--busy] [--figure PATH]   (NAME: harvest, sae, scaling,
                                                                                 startup, toy, transformer)
    python -m tinymono exercises [NN] [--out DIR]
    python -m tinymono export-sae CHECKPOINT OUT     (an SAE checkpoint -> SAELens's folder layout)
    python -m tinymono import-sae FOLDER CHECKPOINT  (and back)
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import pkgutil
import sys
from pathlib import Path
from concurrent.futures import BrokenExecutor

from tinymono.files import DiskFullError
from tinymono.lesson import SCALES


def _error(message, code):
    """Say what went wrong on stderr, in one line, and return the exit code."""
    print(f"error: {message}", file=sys.stderr)
    return code


def _benchmarks():
    import tinymono.benchmarks as b

    return sorted(m.name for m in pkgutil.iter_modules(b.__path__))


def _bench(args):
    from tinymono.benchmarks import busy_core, format_table, machine

    names = _benchmarks()
    if args.name not in names:
        print(f"unknown benchmark {args.name!r}; choose from {names}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"tinymono.benchmarks.{args.name}")
    options = {"quick": args.quick}
    if "figure" in inspect.signature(module.run).parameters:
        options["figure"] = args.figure
    elif args.figure:
        print(f"--figure: the {args.name} benchmark draws no figure", file=sys.stderr)
        return 2
    if "busy" in inspect.signature(module.run).parameters:  # a benchmark whose goal differs on a busy machine
        options["busy"] = args.busy
    with busy_core() if args.busy else contextlib.nullcontext():
        result = module.run(**options)
    result["machine"] = machine()
    result["config"]["busy"] = args.busy
    if args.busy:
        result.setdefault("notes", []).append("--busy: another process kept one core busy for the whole run")
    print(format_table(result, unit=result.get("unit", "items/s")))
    if args.json:
        print(json.dumps(result))
    return 0


def _export(args):
    from tinymono import saelens
    from tinymono.files import BadFile

    try:
        if args.command == "export-sae":
            out = saelens.export(args.source, args.dest)
            print(f"wrote {out / saelens.WEIGHTS} and {out / saelens.CFG}: open it with "
                  f"sae_lens.SAE.load_from_disk({str(out)!r})")
        else:
            path = saelens.import_(args.source, args.dest)
            print(f"wrote {path}")
    except (ValueError, ImportError, OSError, BadFile) as e:
        return _error(e, 2)
    return 0


def _runs_folder(out):
    """--out, or its default: runs, and in exercise mode WORKSPACE/runs (so that nothing trained by a learner's
    code mixes with the library's cache, as a lesson run on its own keeps it apart too)."""
    from tinymono.exercises import switch

    if out is not None:
        return out
    return str(switch.workspace_from_env() / "runs") if switch.active() else "runs"


def _reproduce(args):
    from tinymono import settings
    from tinymono.reproduce import Stopped, reproduce

    try:
        overrides = settings.parse(args.set)
        return reproduce(_runs_folder(args.out), args.scale, force=args.force, only=args.only, seed=args.seed,
                         overrides=overrides)
    except ValueError as e:
        return _error(e, 2)
    except DiskFullError as e:  # not even the report could be written
        return _error(e, 1)
    except KeyboardInterrupt:
        return 130
    except Stopped as e:
        return 128 + e.signum


def _sweep(args):
    from tinymono import settings, sweep

    common = dict(out=_runs_folder(args.out), scale=args.scale, executor=args.executor, workers=args.workers)
    try:
        if args.sweep == "sae-gt":
            return sweep.sae_gt(l1s=args.l1, ratios=args.ratio, steps=args.steps, seed=args.seed, **common)
        return sweep.seeds(seed_list=args.seeds, only=args.only, overrides=settings.parse(args.set), **common)
    except ValueError as e:
        return _error(e, 2)
    except DiskFullError as e:
        return _error(e, 1)
    except OSError as e:  # --out is a file, or cannot be written
        return _error(f"cannot write into --out {common['out']}: {e.strerror or e} ({e.filename or common['out']})", 2)
    except KeyboardInterrupt:
        print("interrupted; finished points are kept and running ones saved their checkpoints: run the same "
              "command again to resume", file=sys.stderr)
        return 130
    except BrokenExecutor as e:
        return _error(f"a worker process died ({e}); finished points are kept: run the same command again to resume",
                      1)


def _exercises(args):
    from tinymono.exercises import LESSONS, parse_lesson
    from tinymono.exercises.workspace import lesson_script, write_workspace

    try:
        lessons = [parse_lesson(args.lesson)] if args.lesson is not None else list(LESSONS)
        out = args.out or ("exercises" if args.lesson is None else f"exercises-{lessons[0]}")
        files = write_workspace(lessons, out)
    except ValueError as e:
        return _error(e, 2)
    except OSError as e:
        return _error(f"cannot write the workspace into {out}: {e.strerror or e} ({e.filename or out})", 1)
    print(f"wrote the exercise workspace {out}/ for lesson{'s' if len(lessons) > 1 else ''} {', '.join(lessons)}:")
    for f in files:
        print(f"  {f}")
    print(f"next: python -m pytest {out} -x   (then, when it passes: TINYMONO_IMPL={Path(out).resolve()} python "
          f"{lesson_script(lessons[0])} --scale smoke; {out}/README.md says more)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinymono", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run every lesson (the whole pipeline) and write report.md")
    rep.add_argument("--out", help="folder for models, figures and the report (default: runs; in exercise mode "
                                   "WORKSPACE/runs)")
    rep.add_argument("--scale", choices=SCALES, default="default",
                     help="smoke: about a minute, too small for the bars (checks print SKIP); default: "
                          "the checked reproduction, 38-59 minutes on the 2-core machines measured (lesson 09 about "
                          "6-9, lesson 10 15-24); full: larger sizes, several hours (default: default)")
    rep.add_argument("--seed", type=int, default=0,
                     help="reseeds every lesson (05-08: the corpus, the transformer and the SAEs; 01-04: their own "
                          "seeds, which seed 0 keeps); a run with seed N > 0 lives in OUT/<scale>-seed<N> (default: 0)")
    rep.add_argument("--force", action="store_true", help="rerun stages that finished earlier")
    rep.add_argument("--only", nargs="+", metavar="NAME",
                     help="run only these lessons: a number is a lesson's (7 or 07), other text a part of its name")
    rep.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="change one setting of pipeline.SIZES for this run, e.g. --set sae.l1_coefficient=4e-4 "
                          "--set sae.d_sae=8192 (sections: corpus, model, train, harvest, sae; fields: those of "
                          "their configs); the run lives in OUT/<scale>-set-<key>")
    rep.set_defaults(func=_reproduce)
    sw = sub.add_parser("sweep", help="many runs spread over worker processes or a dask cluster: lesson 03's "
                                      "L1 x dictionary-size grid, or the main job's checks per seed",
                        description=importlib.import_module("tinymono.sweep").__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = sw.add_subparsers(dest="sweep", required=True)
    for name, text in (("sae-gt", "lesson 03's L1 x dictionary-size grid, each point trained as long as its main run; "
                                  "writes OUT/<scale>/sweep-sae-gt/ (table.md, tradeoff.png, sweep.json); the default "
                                  "grid at the default scale takes about 20 minutes on 2 cores"),
                       ("seeds", "reproduce once per seed (each a whole main job: 40-55 minutes on 2 cores at the "
                                 "default scale); a table of every check per seed and its spread, in "
                                 "OUT/<scale>/sweep-seeds/table.md")):
        k = kinds.add_parser(name, help=text, description=text)
        k.add_argument("--out", help="runs folder, as reproduce's (default: runs; in exercise mode WORKSPACE/runs)")
        k.add_argument("--scale", choices=SCALES, default="default", help="(default: default)")
        k.add_argument("--executor", default="process",
                       help="process: a pool of worker processes on this machine (default); dask://HOST:PORT: the "
                            "workers of a running dask scheduler (pip install -e '.[dask]'); dask-local: a dask "
                            "LocalCluster started here; serial: one point after another in this process")
        k.add_argument("--workers", type=int, help="worker processes for process and dask-local (default: one per "
                                                   "core); each gets cores // workers BLAS and numba threads")
        if name == "sae-gt":
            k.add_argument("--l1", type=float, nargs="+",
                           help="L1 coefficients (default: lesson 03's grid, at the default scale 1.5e-4 3e-4 6e-4)")
            k.add_argument("--ratio", type=float, nargs="+",
                           help="dictionary sizes as multiples of the true features (default: lesson 03's grid, at the "
                                "default scale 1 1.1 2 4)")
            k.add_argument("--steps", type=int,
                           help="training steps per point (default: lesson 03's main run, 6000 at the default scale)")
            k.add_argument("--seed", type=int, default=0, help="lesson 03's seed (see lesson.seeded; default: 0)")
        else:
            k.add_argument("--seeds", type=int, nargs="+", required=True, metavar="N", help="the seeds to run")
            k.add_argument("--only", nargs="+", metavar="NAME",
                           help="only these lessons: a number is a lesson's (7 or 07), other text a part of its name")
            k.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                           help="as reproduce's --set, for every seed")
    sw.set_defaults(func=_sweep)
    exp = sub.add_parser("export-sae", help="write an SAE checkpoint in SAELens's layout (safetensors + cfg.json)")
    exp.add_argument("source", metavar="CHECKPOINT", help="a tinymono SAE checkpoint, e.g. runs/default/cache/sae.npz")
    exp.add_argument("dest", metavar="OUT", help="the folder to write (sae_weights.safetensors, cfg.json)")
    exp.set_defaults(func=_export)
    imp = sub.add_parser("import-sae", help="read an SAE in SAELens's layout into a tinymono checkpoint")
    imp.add_argument("source", metavar="FOLDER", help="a folder with sae_weights.safetensors and cfg.json")
    imp.add_argument("dest", metavar="CHECKPOINT", help="the tinymono checkpoint to write (.npz)")
    imp.set_defaults(func=_export)
    bench = sub.add_parser("bench", help="throughput benchmarks, implementations side by side")
    bench.add_argument("name", help="which benchmark: " + ", ".join(_benchmarks()))
    bench.add_argument("--json", action="store_true", help="also print one JSON object as the last line")
    bench.add_argument("--quick", action="store_true", help="fewer rounds (for a smoke test)")
    bench.add_argument("--busy", action="store_true",
                       help="keep a second core busy with a fixed CPU burner for the whole run (both sides of a race)")
    bench.add_argument("--figure", metavar="PATH", default=None,
                       help="scaling only: where to write the figure (default: bench_scaling.png here)")
    bench.set_defaults(func=_bench)
    ex = sub.add_parser("exercises", help="a workspace where you write a lesson's functions, with tests that tutor you")
    ex.add_argument("lesson", nargs="?", metavar="NN",
                    help="the lesson (01, 02, 04, 06 or 07; default: all of them in one workspace)")
    ex.add_argument("--out", help="a new or empty folder for the workspace (default: exercises-NN, or exercises)")
    ex.set_defaults(func=_exercises)
    args = parser.parse_args(argv)
    return args.func(args)
