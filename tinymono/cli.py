"""Command line:

    python -m tinymono reproduce [--out DIR] [--scale smoke|default|full] [--seed N] [--force] [--only NAME ...]
                                 [--set SECTION.FIELD=VALUE ...]
    python -m tinymono bench NAME [--json] [--quick]
    python -m tinymono exercises [NN] [--out DIR]
    python -m tinymono export-sae CHECKPOINT OUT     (an SAE checkpoint -> SAELens's folder layout)
    python -m tinymono import-sae FOLDER CHECKPOINT  (and back)
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys

from tinymono.files import DiskFullError
from tinymono.lesson import SCALES


def _benchmarks():
    import tinymono.benchmarks as b

    return sorted(m.name for m in pkgutil.iter_modules(b.__path__))


def _bench(args):
    from tinymono.benchmarks import format_table, machine

    names = _benchmarks()
    if args.name not in names:
        print(f"unknown benchmark {args.name!r}; choose from {names}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"tinymono.benchmarks.{args.name}")
    result = module.run(quick=args.quick)
    result["machine"] = machine()
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
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _reproduce(args):
    from tinymono import settings
    from tinymono.reproduce import Stopped, reproduce

    try:
        overrides = settings.parse(args.set)
        return reproduce(args.out, args.scale, force=args.force, only=args.only, seed=args.seed, overrides=overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DiskFullError as e:  # not even the report could be written
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Stopped as e:
        return 128 + e.signum


def _exercises(args):
    from tinymono.exercises import LESSONS, parse_lesson
    from tinymono.exercises.workspace import write_workspace

    try:
        lessons = [parse_lesson(args.lesson)] if args.lesson is not None else list(LESSONS)
        out = args.out or ("exercises" if args.lesson is None else f"exercises-{lessons[0]}")
        files = write_workspace(lessons, out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write the workspace into {out}: {e.strerror or e} ({e.filename or out})", file=sys.stderr)
        return 1
    print(f"wrote the exercise workspace {out}/ for lesson{'s' if len(lessons) > 1 else ''} {', '.join(lessons)}:")
    for f in files:
        print(f"  {f}")
    print(f"next: python -m pytest {out} -x   (then, when it passes: TINYMONO_IMPL={out} python "
          f"lessons/{LESSONS[lessons[0]]}.py --scale smoke; {out}/README.md says more)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinymono", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run every lesson (the whole pipeline) and write report.md")
    rep.add_argument("--out", default="runs", help="folder for models, figures and the report (default: runs)")
    rep.add_argument("--scale", choices=SCALES, default="default",
                     help="smoke: about a minute, too small for the bars (checks print SKIP); default: "
                          "the checked reproduction, about 30 minutes on 2 cores; full: larger sizes, several "
                          "hours (default: default)")
    rep.add_argument("--seed", type=int, default=0,
                     help="seed of the corpus, the transformer and the SAEs (lessons 05-08); a run with seed N > 0 "
                          "lives in OUT/<scale>-seed<N> (default: 0)")
    rep.add_argument("--force", action="store_true", help="rerun stages that finished earlier")
    rep.add_argument("--only", nargs="+", metavar="NAME", help="run only lessons whose name contains NAME")
    rep.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="change one setting of pipeline.SIZES for this run, e.g. --set sae.l1_coefficient=4e-4 "
                          "--set sae.d_sae=8192 (sections: corpus, model, train, harvest, sae; fields: those of "
                          "their configs); the run lives in OUT/<scale>-set-<key>")
    rep.set_defaults(func=_reproduce)
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
    bench.set_defaults(func=_bench)
    ex = sub.add_parser("exercises", help="a workspace where you write a lesson's functions, with tests that tutor you")
    ex.add_argument("lesson", nargs="?", metavar="NN",
                    help="the lesson (01, 02, 04, 06 or 07; default: all of them in one workspace)")
    ex.add_argument("--out", help="a new or empty folder for the workspace (default: exercises-NN, or exercises)")
    ex.set_defaults(func=_exercises)
    args = parser.parse_args(argv)
    return args.func(args)
