"""Sweeps: many runs of one stage, spread over any `concurrent.futures.Executor` (tinymono/executors.py).

    python -m tinymono sweep sae-gt [--l1 L1 ...] [--ratio R ...] [--steps N]   lesson 03's grid, run to convergence
    python -m tinymono sweep seeds --seeds 0 1 2 [--only 07 08]                  the main job's checks per seed

A sweep is a list of *points*, each a small dict of settings, and a *stage*, a function that runs one point
as the lessons run theirs: cached and resumable. sae-gt's stage trains one SAE of lesson 03's recipe
(pipeline.gt_sae_config) with its checkpoint in the point's folder, so a point cut off mid-run resumes where
its last checkpoint left it. seeds' stage is `reproduce` for one seed, whose lessons each write
result.json into that seed's run folder and are not run again once they have.

`run` is the driver: it reads back every point that has finished, submits the others to the executor,
and records each result the moment it arrives (sae-gt: OUT/<run>/sweep-sae-gt/points/<point>/result.json,
written atomically). A sweep stopped at any moment (Ctrl-C, a killed worker, a reboot) resumes with the
same command, and a finished point is never run again. It prints one line per point as it finishes (done
/ total, the point's numbers, an ETA from the rate so far); at the end each sweep writes its table (and
sae-gt its figure) into its folder, OUT/<run>/sweep-<name>/, beside sweep.json, which lesson 03 reads.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import signal
import sys
import time
from concurrent.futures import BrokenExecutor, as_completed
from pathlib import Path

from tinymono import executors, progress
from tinymono.files import BadFile, atomic_write, read_json
from tinymono.lesson import derived_seed, run_folder, stops_as_ctrl_c

# lesson 03's grid, every point trained as long as its main run (pipeline.GT[scale]["steps"]); the main run
# (l1 3e-4, 1.1x) is one of the points. Sizes from 1x up: a smaller dictionary cannot hold the 512 features.
SAE_GT_GRID = {"smoke": dict(l1=[3e-4, 1e-3], ratio=[1.0, 2.0]),
               "default": dict(l1=[1.5e-4, 3e-4, 6e-4], ratio=[1.0, 1.1, 2.0, 4.0])}
SAE_GT_GRID["full"] = SAE_GT_GRID["default"]
SAVE_EVERY = 30.0  # seconds between a point's checkpoints: what a killed worker can lose
MMCS_BAR = 0.95  # the bar for the converged sweep: at the best L1 of each dictionary size


@contextlib.contextmanager
def _stops_as_interrupts():
    """SIGTERM and SIGHUP end the driver the way Ctrl-C does (the workers save their checkpoints first), for the
    time of the block (lesson.stops_as_ctrl_c, then the handlers before it)."""
    previous = stops_as_ctrl_c()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(points, stage, executor, *, finished, record, label, summary, on_result=None):
    """Run `stage(point)` for each point not yet finished, on `executor`; -> (results, failures), each a
    dict from the point's index to its result dict or its error line.

    finished(point) -> the result of a point that finished earlier, or None (read in this process);
    record(point, result): keep a result (called here, as each arrives); label(point), summary(result):
    the words of the progress lines; on_result(point, result): called after each record (tests use it to
    stop a sweep midway). stage must be a module-level function, so that a worker can import it.
    A KeyboardInterrupt, or a broken executor (a pool worker killed), cancels the points not started and
    propagates; a point that raises is a failure, and the others go on."""
    results, todo = {}, []
    for i, point in enumerate(points):
        result = finished(point)
        if result is None:
            todo.append(i)
        else:
            results[i] = result
    print(f"{len(points)} points: {len(results)} finished earlier, {len(todo)} to run", flush=True)
    failures, t0 = {}, time.perf_counter()
    futures = {executor.submit(executors.call, stage, points[i]): i for i in todo}
    try:
        for n, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            try:
                result = future.result()
            except (KeyboardInterrupt, BrokenExecutor):
                raise
            except Exception as e:  # this point failed; the others go on
                failures[i] = f"{type(e).__name__}: {e}"
                print(f"[{len(results) + len(failures)}/{len(points)}] {label(points[i])}: FAILED: {failures[i]}",
                      flush=True)
                continue
            record(points[i], result)
            results[i] = result
            elapsed = time.perf_counter() - t0
            eta = f"; ETA {progress.duration(elapsed / n * (len(todo) - n))}" if n < len(todo) else ""
            print(f"[{len(results) + len(failures)}/{len(points)}] {label(points[i])}: {summary(result)} "
                  f"({progress.duration(result.get('seconds', 0))}){eta}", flush=True)
            if on_result is not None:
                on_result(points[i], result)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return results, failures


def _where():
    return {"host": platform.node(), "pid": os.getpid()}


# ----------------------------------------------------------------------------------------------------
# sae-gt: lesson 03's L1 x dictionary-size grid


def _exact(v):
    """A number as its shortest %g text when that reads back as the same float, else its repr (two points
    whose %g texts agree, 1 and 1.0000001, must not share a folder)."""
    text = f"{v:g}"
    return text if float(text) == v else repr(float(v))


def point_name(point):
    return f"l1={_exact(point['l1_coefficient'])},ratio={_exact(point['ratio'])},steps={point['steps']}"


def sae_gt_stage(point):
    """One point of the sae-gt sweep, in a worker: lesson 03's SAE with this L1 and dictionary size, trained
    (or resumed) with its checkpoint in the point's folder, and scored against the true features."""
    from tinymono import pipeline  # here: a worker loads NumPy only once its threads are set (executors.py)

    t0 = time.perf_counter()
    scale, seed = point["scale"], point["seed"]
    data = pipeline.gt_world(scale, seed=derived_seed(0, seed))
    d_sae = int(point["ratio"] * data.cfg.n_features)
    cfg = pipeline.gt_sae_config(scale, d_sae, point["l1_coefficient"], point["steps"], seed=derived_seed(0, seed))
    folder = Path(point["folder"]) / point_name(point)
    folder.mkdir(parents=True, exist_ok=True)
    task, result = pipeline.train_gt_sae(cfg, data, checkpoint=folder / "sae.npz", progress=False,
                                         save_every=point.get("save_every", SAVE_EVERY))
    scores = pipeline.gt_evaluate(task.params, cfg, data, scale, seed=derived_seed(123, seed))
    del scores["density"]
    return {**{k: float(v) for k, v in scores.items()}, "d_sae": d_sae, "steps": result.step,
            "resumed_from": result.resumed_from, "resampled": task.resampled,
            "seconds": time.perf_counter() - t0, **_where()}


def _read_point(folder, point):
    path = Path(folder) / point_name(point) / "result.json"
    if not path.exists():
        return None
    try:
        result = read_json(path, BadFile, "the point will run again", required=("point", "result"))
    except BadFile as e:
        print(f"warning: {e}", file=sys.stderr)
        return None
    return result["result"] if result["point"] == _identity(point) else None


def _identity(point):
    return {k: point[k] for k in ("scale", "seed", "l1_coefficient", "ratio", "steps")}


def _write_point(folder, point, result):
    text = json.dumps({"point": _identity(point), "result": result}, indent=1).encode()
    path = Path(folder) / point_name(point) / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fh.write(text))


def vs_larger(folder, rows):
    """{(l1, ratio): MMCS of that dictionary's decoder rows against the next larger dictionary's at the same
    L1}, from the points' checkpoints (the signal a researcher has without ground truth)."""
    from tinymono import checkpoint, metrics

    out = {}
    for l1 in sorted({r["l1_coefficient"] for r in rows}):
        sizes = sorted((r for r in rows if r["l1_coefficient"] == l1), key=lambda r: r["ratio"])
        for small, large in zip(sizes, sizes[1:]):
            try:
                a, b = (checkpoint.load(Path(folder) / point_name(r) / "sae.npz")[0]["params.W_dec"]
                        for r in (small, large))
            except BadFile:  # a checkpoint on another machine's disk
                continue
            out[small["l1_coefficient"], small["ratio"]] = float(metrics.mmcs(a, b))
    return out


def sae_gt_table(sweep):
    """Markdown: the grid's numbers, point by point, then the best L1 of each dictionary size."""
    rows = [r for r in sweep["points"] if r.get("mmcs") is not None]
    lines = [f"# sae-gt sweep: lesson 03's L1 x dictionary size, {sweep['steps']} steps per point "
             f"(scale {sweep['scale']}, seed {sweep['seed']})", "",
             f"{len(rows)} of {len(sweep['points'])} points finished; run on {sweep['executor']}; this call's wall "
             f"time {progress.duration(sweep['seconds'])}; points' own times summed "
             f"{progress.duration(sum(r['seconds'] for r in rows))}.",
             "", "| L1 | dictionary | latents | MMCS | recovered (cos >= 0.9) | one-to-one | dead | L0 | explained "
             "variance | MMCS vs next larger | time |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        larger = r.get("vs_larger")
        lines.append(f"| {r['l1_coefficient']:g} | {r['ratio']:g}x | {r['d_sae']} | {r['mmcs']:.4f} | "
                     f"{r['recovered']:.1%} | {r['one_to_one']:.4f} | {r['dead']:.1%} | {r['l0']:.2f} | "
                     f"{r['explained_variance']:.4f} | {'-' if larger is None else f'{larger:.3f}'} | "
                     f"{progress.duration(r['seconds'])} |")
    lines += ["", f"Best L1 per dictionary size (bar: MMCS >= {MMCS_BAR}):", ""]
    for ratio, best in best_per_size(rows).items():
        verdict = "SKIP: smoke sizes" if sweep["scale"] == "smoke" else "PASS" if best["mmcs"] >= MMCS_BAR else "FAIL"
        lines.append(f"- {ratio:g}x: l1 {best['l1_coefficient']:g}, MMCS {best['mmcs']:.4f} ({verdict}), "
                     f"dead {best['dead']:.1%}")
    return "\n".join(lines) + "\n"


def best_per_size(rows):
    """{ratio: the finished row with the highest MMCS among that dictionary size's L1 coefficients}."""
    best = {}
    for r in rows:
        if r.get("mmcs") is not None and (r["ratio"] not in best or r["mmcs"] > best[r["ratio"]]["mmcs"]):
            best[r["ratio"]] = r
    return dict(sorted(best.items()))


def _run_on(executor, workers, points, stage, **how):
    """`run` on an executor opened for the points (Ctrl-C and SIGTERM stop it as interrupts) ->
    (results, failures, what the executor is, wall seconds)."""
    t0 = time.perf_counter()
    # the signal handlers outlive the pool: a SIGTERM while the workers save must not kill the driver
    with _stops_as_interrupts(), executors.open_executor(executor, workers, len(points)) as (ex, what):
        print(f"executor: {what}", flush=True)
        results, failures = run(points, stage, ex, **how)
    return results, failures, what, time.perf_counter() - t0


def _save(base, sweep, make_table):
    """Write a sweep's record (sweep.json) and its table (table.md) into `base` -> the table."""
    atomic_write(base / "sweep.json", lambda fh: fh.write(json.dumps(sweep, indent=1).encode()))
    table = make_table(sweep)
    atomic_write(base / "table.md", lambda fh: fh.write(table.encode()))
    return table


def sweep_grid(record):
    """([L1 ...], [ratio ...], steps) of a sae-gt grid ({"l1", "ratio", "steps"}, as sweep.json holds it), in
    a form two grids can be compared in."""
    return [float(v) for v in record["l1"]], [float(v) for v in record["ratio"]], int(record["steps"])


def lesson_grid(scale):
    """Lesson 03's grid at a scale, as sweep_grid gives it."""
    from tinymono import pipeline

    return sweep_grid({**SAE_GT_GRID[scale], "steps": pipeline.GT[scale]["steps"]})


def sae_gt(out="runs", scale="default", l1s=None, ratios=None, steps=None, seed=0, executor="process",
           workers=None, on_result=None, save_every=SAVE_EVERY):
    """Lesson 03's grid: every L1 in `l1s` with every dictionary size in `ratios` (x the true features),
    each trained `steps` steps (default: the main run's). Results in OUT/<run>/sweep-sae-gt/, which lesson 03
    reads; once lesson 03's own grid is recorded there, another grid's record, table and figure go to a folder
    of their own inside it, named by the grid (the points are shared: none is trained twice). -> exit code."""
    from tinymono import pipeline

    if scale not in SAE_GT_GRID:
        raise ValueError(f"scale must be one of {sorted(SAE_GT_GRID)}, got {scale!r}")
    lesson = lesson_grid(scale)
    l1s, ratios, steps = l1s or lesson[0], ratios or lesson[1], lesson[2] if steps is None else steps
    l1s, ratios = list(dict.fromkeys(l1s)), list(dict.fromkeys(ratios))  # a point given twice is trained once
    if steps < 1 or min(l1s) < 0 or min(ratios) <= 0 or not all(map(math.isfinite, [*l1s, *ratios])):
        raise ValueError(f"need steps >= 1, finite L1 >= 0 and finite ratios > 0, got {steps}, {l1s}, {ratios}")
    base = Path(out) / run_folder(scale, seed) / "sweep-sae-gt"
    folder = base / "points"
    grid, recorded = sweep_grid(dict(l1=l1s, ratio=ratios, steps=steps)), load_sae_gt(base.parent)
    if grid != lesson and recorded is not None and sweep_grid(recorded) == lesson:
        # another grid must not replace lesson 03's record: it gets a folder of its own (the points are shared)
        base = base / ("grid-l1-" + "-".join(f"{v:g}" for v in grid[0]) + "_ratio-"
                       + "-".join(f"{v:g}" for v in grid[1]) + f"_steps-{grid[2]}")
    base.mkdir(parents=True, exist_ok=True)
    points = [dict(scale=scale, seed=seed, l1_coefficient=float(l1), ratio=float(r), steps=int(steps),
                   folder=str(folder), save_every=save_every) for l1 in l1s for r in ratios]
    n_features = pipeline.GT[scale]["data"]["n_features"]
    print(f"sweep sae-gt: {len(l1s)} L1 x {len(ratios)} dictionary sizes, {steps} steps each (lesson 03's main run: "
          f"{lesson[2]}), in {base}", flush=True)
    results, failures, what, seconds = _run_on(
        executor, workers, points, sae_gt_stage, finished=lambda p: _read_point(folder, p),
        record=lambda p, r: _write_point(folder, p, r), on_result=on_result,
        label=lambda p: f"l1 {p['l1_coefficient']:g}, {p['ratio']:g}x ({int(p['ratio'] * n_features)} latents)",
        summary=lambda r: f"MMCS {r['mmcs']:.4f}, recovered {r['recovered']:.1%}, dead {r['dead']:.1%}, "
                          f"L0 {r['l0']:.2f}")
    rows = [{**_identity(p), **results.get(i, {"mmcs": None})} for i, p in enumerate(points)]
    for (l1, ratio), v in vs_larger(folder, [r for r in rows if r["mmcs"] is not None]).items():
        next(r for r in rows if r["l1_coefficient"] == l1 and r["ratio"] == ratio)["vs_larger"] = v
    sweep = dict(sweep="sae-gt", scale=scale, seed=seed, steps=steps, l1=list(l1s), ratio=list(ratios),
                 executor=what, seconds=seconds, n_features=n_features, points=rows,
                 failures={point_name(points[i]): e for i, e in failures.items()})
    table = _save(base, sweep, sae_gt_table)
    _tradeoff_figure(sweep, base / "tradeoff.png")
    print(f"\n{table}\ntable: {base / 'table.md'}\nfigure: {base / 'tradeoff.png'}\n"
          f"wall time {progress.duration(sweep['seconds'])}")
    return 1 if failures else 0


def load_sae_gt(run_dir):
    """The sae-gt sweep recorded in a run's folder (its sweep.json), or None if there is none."""
    path = Path(run_dir) / "sweep-sae-gt" / "sweep.json"
    if not path.exists():
        return None
    try:
        return read_json(path, BadFile, "run the sweep again to rewrite it", required=("points", "steps", "n_features"))
    except BadFile as e:
        print(f"warning: {e}", file=sys.stderr)
        return None


def _tradeoff_figure(sweep, path):
    import matplotlib.pyplot as plt

    from tinymono import plots

    fig = plots.sweep_tradeoff(sweep["points"], sweep["steps"], sweep["n_features"])
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# seeds: the main job (or some of its lessons) once per seed


def seeds_stage(point):
    """One seed of the seeds sweep, in a worker: `reproduce` for that seed (finished lessons are reused), its
    output in the seed's logs/sweep.log; -> the checks of each lesson asked for."""
    from tinymono import reproduce

    t0 = time.perf_counter()
    log = Path(point["out"]) / run_folder(point["scale"], point["seed"], point["overrides"]) / "logs" / "sweep.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", buffering=1) as fh, contextlib.redirect_stdout(fh):
        code = reproduce.reproduce(point["out"], point["scale"], only=point["only"], seed=point["seed"],
                                   overrides=point["overrides"])
    stages = _seed_results(point, partial=True)  # a lesson that did not finish is missing; the others count
    return {"code": code, "stages": stages, "log": str(log), "seconds": time.perf_counter() - t0, **_where()}


def _seed_results(point, partial=False):
    """{lesson: its result.json} for every lesson asked for in this seed's run folder, or None if one is
    missing (with `partial`: the lessons that have one)."""
    from tinymono import reproduce

    run = run_folder(point["scale"], point["seed"], point["overrides"])
    stages = {}
    for lesson in reproduce.lessons():
        if point["only"] and not any(reproduce.selects(o, lesson.stem) for o in point["only"]):
            continue
        result = reproduce._read_result(reproduce._result_path(point["out"], run, lesson))
        if result is None:
            if partial:
                continue
            return None
        stages[lesson.stem] = result
    return stages


def _seed_finished(point):
    stages = _seed_results(point)
    return None if stages is None else {"code": 0, "stages": stages, "seconds": 0.0}


def _seed_summary(result):
    from tinymono import reproduce

    counts = reproduce.tally([(lesson, c) for lesson, st in result["stages"].items() for c in st["checks"]])
    return f"{len(result['stages'])} lessons, " + ", ".join(f"{v} {k}" for k, v in counts.items())


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_ASIDE = re.compile(r"\([^()]*\)")  # a check name's words in brackets say what its run found: "(gated)"


def _mask(text):
    return _NUMBER.sub("#", _ASIDE.sub("(.)", text))


def _check_keys(checks):
    """One key per check of a lesson, the same for the same check in every seed's run: a check's name and
    bar may carry its run's own numbers ("group of 2 features", "floor 1.701") and findings in brackets
    ("best variant (gated)"), so those are masked, and checks that are then alike ("topk at 1.1x: MMCS",
    "topk at 2x: MMCS") are told apart by their order, which a lesson keeps from run to run."""
    seen, keys = {}, []
    for c in checks:
        base = (_mask(c["name"]), _NUMBER.sub("#", c["bar"]))
        keys.append(base + (seen.get(base, 0),))
        seen[base] = seen.get(base, 0) + 1
    return keys


def seeds_table(sweep):
    """Markdown: every check of every lesson asked for, its value per seed, its spread (max - min) over the
    seeds, and in how many seeds it passed. A check whose name or bar holds numbers of its own run is one
    row, named as the first seed that ran it names it."""
    seeds = sweep["seeds"]
    per_seed = {s: sweep["results"].get(str(s)) or {} for s in seeds}
    rows = {}  # (lesson, key) -> {"name", "bar", seed: check}, in the order the lessons print them
    for s in seeds:
        for lesson, result in per_seed[s].get("stages", {}).items():
            for key, c in zip(_check_keys(result["checks"]), result["checks"]):
                rows.setdefault((lesson, key), {"name": c["name"], "bar": c["bar"]})[s] = c
    lines = [f"# seeds sweep: scale {sweep['scale']}, seeds {' '.join(map(str, seeds))}"
             + (f", settings {' '.join(sweep['set'])}" if sweep["set"] else ""), "",
             f"Run on {sweep['executor']}; this call's wall time {progress.duration(sweep['seconds'])}. "
             "Each value: the "
             "check's number in that seed's run (P = PASS, F = FAIL, S = SKIP); spread: max - min over the seeds (nan "
             "when a seed's number is). "
             "Where a check's name holds numbers of its run, the first seed's are shown.", "",
             "| lesson | check | bar | " + " | ".join(f"seed {s}" for s in seeds) + " | spread | PASS |",
             "|---|---|---|" + "---|" * len(seeds) + "---|---|"]
    for (lesson, _), row in rows.items():
        cells, values, passes = [], [], 0
        for s in seeds:
            c = row.get(s)
            if c is None:
                cells.append("-")
                continue
            v = c["value"]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values.append(float(v))
            passes += c["status"] == "PASS"
            cells.append(f"{v:.4g} {c['status'][0]}" if isinstance(v, float) else f"{v} {c['status'][0]}")
        finite = [v for v in values if math.isfinite(v)]  # max/min of a list holding NaN depend on its order
        spread = ("nan" if len(finite) < len(values) else f"{max(finite) - min(finite):.3g}") if len(values) > 1 else "-"
        lines.append(f"| {lesson} | {row['name']} | {row['bar']} | " + " | ".join(cells)
                     + f" | {spread} | {passes}/{len(seeds)} |")
    return "\n".join(lines) + "\n"


def seeds(out="runs", scale="default", seed_list=(0, 1), only=None, overrides=None, executor="process",
          workers=None):
    """`reproduce` once per seed (each seed a point; its lessons run in order, in its own run folder),
    then the table of every check across the seeds in OUT/<run>/sweep-seeds/. -> exit code (1 if a check
    failed or a stage did not finish in any seed)."""
    from tinymono import reproduce, settings

    overrides = overrides or {}
    seed_list = list(dict.fromkeys(seed_list))
    if not seed_list or any(not isinstance(s, int) or s < 0 for s in seed_list):
        raise ValueError(f"--seeds takes non-negative integers, got {seed_list}")
    names = [p.stem for p in reproduce.lessons() if not only or any(reproduce.selects(o, p.stem) for o in only)]
    if not names:
        raise ValueError(f"--only {' '.join(only)} matches no lesson; the lessons are "
                         + ", ".join(p.stem for p in reproduce.lessons()))
    if overrides:
        from tinymono import pipeline

        settings.ACTIVE = overrides
        pipeline.check_settings(scale)
    base = Path(out) / run_folder(scale, 0, overrides) / "sweep-seeds"
    points = [dict(out=str(out), scale=scale, seed=s, only=list(only or []), overrides=overrides) for s in seed_list]
    logs = ", ".join(str(Path(out) / run_folder(scale, s, overrides) / "logs" / "sweep.log") for s in seed_list)
    print(f"sweep seeds: {', '.join(names)} at scale {scale}, seeds {' '.join(map(str, seed_list))}; each seed's "
          f"output in {logs}", flush=True)
    results, failures, what, seconds = _run_on(
        executor, workers, points, seeds_stage, finished=_seed_finished, record=lambda p, r: None,
        label=lambda p: f"seed {p['seed']}", summary=_seed_summary)
    sweep = dict(sweep="seeds", scale=scale, seeds=seed_list, lessons=names, set=settings.describe(overrides),
                 executor=what, seconds=seconds,
                 results={str(points[i]["seed"]): r for i, r in results.items()},
                 failures={str(points[i]["seed"]): e for i, e in failures.items()})
    base.mkdir(parents=True, exist_ok=True)
    table = _save(base, sweep, seeds_table)
    print(f"\n{table}\ntable: {base / 'table.md'}\nwall time {progress.duration(sweep['seconds'])}")
    unfinished = [s for s in seed_list if str(s) not in sweep["results"]
                  or set(sweep["results"][str(s)]["stages"]) != set(names)]
    failed = any(c["status"] == "FAIL" for r in sweep["results"].values() for st in r["stages"].values()
                 for c in st["checks"])
    if unfinished:
        print(f"did not finish: seed{'s' if len(unfinished) > 1 else ''} {' '.join(map(str, unfinished))}")
    return 1 if failures or unfinished or failed else 0
