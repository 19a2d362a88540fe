"""`python -m tinymono reproduce`: the whole paper, end to end, in one command.

The stages are the lessons, in order: toy superposition, the SAE on toy data, recovery of known
features, the transformer by hand, training it on the labelled corpus, the SAE on its MLP, the
interpretation of the features against the labels, and steering with features and their splitting
across dictionary sizes. Each lesson caches what it trains under DIR/<scale>[-seed<N>]/cache/ (training
resumes from its last checkpoint if it was interrupted; a --set run shares that cache, its files named by
the settings' key: tinymono/settings.py) and records its checks and figures in
DIR/<run>/<lesson>/result.json, where <run> is the scale (and `-seed<N>` for a seed other than 0,
`-set-<key>` for settings changed with --set). A stage whose
result.json exists is finished and is not run again (use --force to rerun); the report is assembled from
the result files: DIR/<run>/report.md opens with the tally of PASS/FAIL/SKIP and where the numbers come
from (versions, commit, date, settings, wall time per stage), embeds every figure and lists every check
with its number and bar, and the command exits non-zero if any check failed or any stage did not finish.

While a stage runs, its training loops report their progress as records (tinymono/progress.py): one live
bar per loop (steps, loss, rate, ETA) on a terminal, one line every half minute otherwise; the stage's
whole output, those lines included, goes to DIR/<run>/logs/<lesson>.log.

A full disk stops a stage, not the command: the stage's log ends with a note, the stage is marked
failed in the report with the error its lesson printed ("disk full: cannot write ..."), and the report
is still written, into space set aside for it when the command started (`.report-reserve`, freed at the
end). Once space is freed, the same command continues where the stages left off.
"""
from __future__ import annotations

import collections
import datetime
import os
import platform
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tinymono import progress, settings
from tinymono.files import BadFile, DiskFullError, atomic_write, read_json, writing
from tinymono.lesson import LESSON_ENV, run_folder, source_commit, write_settings

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding this tinymono package and its lessons
LESSONS_DIR = SOURCE_ROOT / "lessons"


def lessons():
    """The lesson scripts in order: lessons/NN_name.py."""
    if not LESSONS_DIR.is_dir():
        raise FileNotFoundError(f"no lessons folder at {LESSONS_DIR}: run from a source checkout "
                                "(pip install -e .)")
    return sorted(p for p in LESSONS_DIR.glob("[0-9][0-9]_*.py"))


RESERVE_BYTES = 256 * 1024  # set aside for report.md (a default-scale report is about 20 kB)
TAIL_LINES = 20  # the last lines of a stage's output kept in memory, for the report of a failed stage


def _result_path(root, run, lesson):
    """run: the run's folder name (lesson.run_folder: the scale, and the seed when it is not 0)."""
    return Path(root) / run / lesson.stem / "result.json"


def _read_result(path):
    """A stage's result.json, or None if there is none or it is damaged (a warning says which; the stage
    then counts as not finished, and runs again)."""
    if not path.exists():
        return None
    try:
        result = read_json(path, BadFile, "the stage will run again", required=("checks", "figures", "seconds"))
        fields_ok = (all(isinstance(c, dict) and {"status", "name", "value", "bar"} <= set(c) for c in result["checks"])
                     and all(isinstance(f, dict) and {"file", "caption"} <= set(f) for f in result["figures"])
                     and isinstance(result["seconds"], (int, float)))
        if not fields_ok:
            raise BadFile(f"{path} does not hold a lesson's checks and figures; the stage will run again")
    except (BadFile, TypeError) as e:
        print(f"warning: {e}", file=sys.stderr)
        return None
    return result


class Stopped(Exception):
    """This process got SIGTERM or SIGHUP while a lesson ran; the lesson got it too and has exited."""

    def __init__(self, signum):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def _open_log(path):
    try:
        return open(path, "w", buffering=1)  # line-buffered: a full disk shows at the line that meets it
    except OSError as e:
        print(f"  (no log: cannot write {path}: {e.strerror or e})", flush=True)
        return None


def _log_line(fh, path, line):
    """Write `line` to the log; on a write error (a full disk) say so once and stop logging -> the handle
    to write the next line to, or None."""
    if fh is None:
        return None
    try:
        fh.write(line)
        return fh
    except OSError as e:
        print(f"  (log {path} stops here: {e.strerror or e}; the stage goes on)", flush=True)
        _close_log(fh)
        return None


def _close_log(fh):
    try:
        if fh is not None:
            fh.close()
    except OSError:  # its last line met a full disk; already said
        pass


def child_path():
    """PYTHONPATH for a stage: this tinymono's folder first, so that a lesson imports the package that runs
    it (another checkout, or an installed copy, would otherwise win over it)."""
    rest = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(SOURCE_ROOT)] + ([rest] if rest else []))


LOG_PROGRESS_EVERY = 10.0  # seconds between a loop's progress lines in the log (and its first and last)


def run_stage(lesson, scale, root, log, seed=0, overrides=None, display=None):
    """Run one lesson as a child process, streaming its output to the terminal and to `log` (as long as
    the disk allows), its progress records drawn by `display` (progress.Display: a live bar on a terminal,
    a line now and then otherwise) and logged as lines. Returns (exit code, seconds, the last TAIL_LINES
    lines of its output).

    Signals: the child runs in a session of its own, so a terminal's Ctrl-C reaches only this process,
    which passes each one on (the training loop saves its checkpoint on the first and gives up at once on
    a second), keeps relaying the child's output until it has exited, then re-raises KeyboardInterrupt.
    SIGTERM and SIGHUP are passed on too, and raise Stopped once the child has exited."""
    t0 = time.perf_counter()
    cmd = [sys.executable, str(lesson), "--scale", scale, "--seed", str(seed), "--runs", str(root),
           *settings.as_arguments(overrides or {})]
    env = {k: v for k, v in os.environ.items() if k not in LESSON_ENV}  # the flags above say it all (and an
    # inherited TINYMONO_SET would add to the stage's --set)
    env.update({"PYTHONUNBUFFERED": "1", progress.ENV: "records", "PYTHONPATH": child_path(),
                "OPENBLAS_THREAD_TIMEOUT": os.environ["OPENBLAS_THREAD_TIMEOUT"]})  # set by tinymono/__init__.py
    tail = collections.deque(maxlen=TAIL_LINES)
    display = display or progress.Display(lesson.stem[:2])
    logged = {}  # a loop's description -> when its last progress line went to the log
    fh = _open_log(log)
    # errors="replace": a byte that is not UTF-8 must not end the relay (the lesson would block on a full pipe)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                          env=env, bufsize=1, start_new_session=True) as proc:
        lines = queue.SimpleQueue()  # the child's output, read by a thread of its own: see _lines
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()

        def relay():
            nonlocal fh
            for line in _lines(lines, reader):
                record = progress.parse(line)
                if record is None:
                    display.write(f"  | {line}")
                    tail.append(line)
                    fh = _log_line(fh, log, line)
                    continue
                display.feed(record)
                now, desc = time.perf_counter(), record["desc"]
                if record.get("done") or now - logged.get(desc, -LOG_PROGRESS_EVERY) >= LOG_PROGRESS_EVERY:
                    logged[desc] = now
                    fh = _log_line(fh, log, f"progress: {progress.describe(record)}\n")
            return proc.wait()

        def stop(signum, frame):
            proc.send_signal(signum)
            raise Stopped(signum)

        previous = {}
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            code = relay()
        except KeyboardInterrupt:
            while True:
                proc.send_signal(signal.SIGINT)  # a no-op once the child has exited
                try:
                    relay()
                    break
                except KeyboardInterrupt:  # another Ctrl-C: pass it on too
                    continue
            raise
        except Stopped:
            relay()  # the child got the signal too: show what it printed until it exited
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            display.close()
            _close_log(fh)
            # leaving on an error while the child runs: Popen's exit must not close the pipe under the reader
            # (the close would wait for the reader's read, deaf to Ctrl-C); at the end, the reader is ending
            reader.join(timeout=0.1)
            if reader.is_alive():
                proc.stdout = None
    return code, time.perf_counter() - t0, list(tail)


def _read_lines(stream, lines):
    """Put each line of `stream` into the queue `lines`, then None at its end."""
    try:
        for line in stream:
            lines.put(line)
    finally:  # whatever stopped it (an error is printed by the thread), the relay must see the end
        lines.put(None)


def _lines(lines, reader, every=0.2):
    """The lines of the queue `lines` up to its None (left in it), or up to the end of the thread `reader`
    that fills it (an interrupt raised just after the None was taken would lose it), waiting at most `every`
    seconds at a time. A main thread blocked reading the child's pipe runs no signal handler until the read
    returns: a SIGTERM that came between its last check and the read's start (seen once in CI), or that
    another of its threads took, waited for the lesson's next line (minutes, in some lessons) before
    reproduce passed it on. The short waits run the handler within `every` seconds."""
    while True:
        try:
            line = lines.get(timeout=every)
        except queue.Empty:
            if not reader.is_alive() and lines.empty():
                return
            continue
        if line is None:
            lines.put(None)  # for the next reader: relay runs again after an interrupt
            return
        yield line


def _fmt_value(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _failure(tail):
    """What a failed stage said last (its error line), from the last lines of its output."""
    lines = [line.strip() for line in tail if line.strip()]
    return lines[-1] if lines else "it printed nothing"


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def provenance(scale, seed, overrides, wall_seconds, commit_at_start=None, stage_commits=None):
    """[(field, value)]: where the report's numbers come from. The corpus's real text is the running
    Python's standard library, so its version is part of every number. commit_at_start: source_commit() when
    the command began; if the checkout changed while it ran, the report says so (stages may then mix code).
    stage_commits: {stage name: the commit its result.json records (None: a result written before results
    recorded it)}; the stages made at another commit than this one are named."""
    commit = now = source_commit()
    if commit_at_start is not None and commit_at_start != commit:
        commit = f"{commit_at_start} at the start, {commit} at the end: the code changed during the run"
    other = {name: c for name, c in (stage_commits or {}).items() if c != now}
    if other:
        commit += "; made at other commits: " + ", ".join(
            f"{name} ({c or 'not recorded'})" for name, c in sorted(other.items()))
    return [("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
            ("scale", scale), ("seed", str(seed)),
            ("settings", ", ".join(settings.describe(overrides)) or "none (pipeline.SIZES as written)"),
            ("commit", commit),
            ("Python", f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"),
            ("NumPy", _version("numpy")), ("numba", _version("numba")), ("SciPy", _version("scipy")),
            ("machine", f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"),
            ("load average at the end", _load()),
            ("wall time of this command", progress.duration(wall_seconds))]


def _load():
    """The system's load averages, with what they say about the times: a load above the number of cores means
    other work shared the machine, and the stages' times are longer than on a quiet one."""
    try:
        loads = os.getloadavg()
    except (AttributeError, OSError):  # not on every platform
        return "not available here"
    busy = max(loads) > (os.cpu_count() or 1) + 0.5
    return (", ".join(f"{x:.2f}" for x in loads) + " over 1, 5, 15 min"
            + (" (more than the cores: other work shared the machine, so the times are longer than on a quiet one)"
               if busy else ""))


def tally(checks):
    """{'PASS': n, 'FAIL': n, 'SKIP': n} over [(lesson, check)]."""
    return {s: sum(c["status"] == s for _, c in checks) for s in ("PASS", "FAIL", "SKIP")}


def _table(header, rows):
    """A Markdown table whose columns line up in plain text too (each cell padded to its column's width)."""
    rows = [[str(cell).replace("|", "\\|") for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def throughput(result):
    """What a stage trained, from its result.json: "desc: N steps, X items/s; ..." ("" when it trained
    nothing: everything came from the cache, or the stage predates the record)."""
    parts = []
    runs = (result or {}).get("training", [])
    for run in runs if isinstance(runs, list) else []:
        try:
            rate = (f", {run['items'] / run['seconds']:,.0f} {run['items_name']}/s" if run["items"] and run["seconds"]
                    else "")
            parts.append(f"{run['desc']}: {run['steps']:,} steps{rate}")
        except (KeyError, TypeError, ValueError):  # a hand-edited record: shown as nothing, not a crash
            continue
    return "; ".join(parts)


FAILURES_EXPLAINED = ('README, "Where the reproduction stands", says which checks have failed with which recorded '
                      "seeds, and why; docs/experiments.md holds those runs.")


def write_report(root, scale, stages, seed=0, overrides=None, wall_seconds=0.0, commit_at_start=None):
    """report.md from the stages' result.json files. stages: [(lesson path, status, seconds, note)], note:
    what a stage that did not finish said last (or None); commit_at_start: see provenance."""
    overrides = overrides or {}
    run = run_folder(scale, seed, overrides)
    base = Path(root) / run
    results = {lesson: _read_result(_result_path(root, run, lesson)) for lesson, *_ in stages}
    checks = [(lesson.stem, c) for lesson, *_ in stages if results[lesson] for c in results[lesson]["checks"]]
    counts = tally(checks)
    lines = [f"# tinymono reproduction report (scale: {scale}, seed: {seed})", "",
             f"**{counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP** over {len(checks)} checks "
             f"in {sum(r is not None for r in results.values())} of {len(stages)} stages.", ""]
    if counts["FAIL"] and scale != "smoke":
        lines += ["A FAIL is a bar this run missed, reported as measured (the verification table at the end lists "
                  f"every check). {FAILURES_EXPLAINED}", ""]
    if scale == "smoke":
        lines += ["At smoke scale the checks that need trained sizes read SKIP: the sizes are too small for their "
                  "bars, so only the pipeline is exercised. The checks that do not depend on scale (gradients, "
                  "causality, kernels against their reference) PASS or FAIL as at every scale. Figures and captions "
                  "describe what the default scale shows; a panel left empty at this scale says why.", ""]
    where = provenance(scale, seed, overrides, wall_seconds, commit_at_start,
                       {lesson.stem: r.get("commit") for lesson, r in results.items() if r is not None})
    lines += ["## Provenance", ""] + _table(["what", "value"], where) + [""]
    lines += ["## Stages", "", "Wall time: a stage run by this command, its process (start-up included); a stage "
              "reused from an earlier run, the lesson's own time when it ran (without start-up).", ""] + _table(
        ["stage", "status", "wall time", "PASS", "FAIL", "SKIP", "trained by the stage's process (throughput)"],
        [[lesson.stem, status, progress.duration(seconds),
          *(tally([(None, c) for c in results[lesson]["checks"]]).values() if results[lesson] else ("-",) * 3),
          throughput(results[lesson]) or "-"]
         for lesson, status, seconds, _ in stages]) + [""]
    table = []
    for lesson, status, seconds, note in stages:
        lines.append(f"## {lesson.stem}  ({status}, {seconds:.0f} s)")
        result = results[lesson]
        if result is None:
            said = f": `{note}`" if note else ""
            lines += ["", f"This stage did not finish{said}; see its log (logs/{lesson.stem}.log).", ""]
            continue
        lines.append("")
        for fig in result["figures"]:
            lines += [f"![{fig['file']}]({lesson.stem}/{fig['file']})", "",
                      f"*{fig['caption']}*" if fig["caption"] else "", ""]
        for extra in sorted((base / lesson.stem).glob("*.html")):
            lines += [f"Interactive: [{extra.name}]({lesson.stem}/{extra.name})", ""]
        rows = [[c["name"], _fmt_value(c["value"]), c["bar"], c["status"]] for c in result["checks"]]
        lines += _table(["check", "measured", "bar", "result"], rows) + [""]
        table += [[lesson.stem, *row] for row in rows]
    lines += ["## Verification table", ""] + _table(["lesson", "check", "measured", "bar", "result"], table) + [""]
    report, text = base / "report.md", "\n".join(lines).encode()
    try:
        atomic_write(report, lambda fh: fh.write(text))
    except DiskFullError:  # the space set aside when the command started is there for this
        (base / ".report-reserve").unlink(missing_ok=True)
        atomic_write(report, lambda fh: fh.write(text))
    return report


def selects(name, stem):
    """Whether --only's `name` picks the lesson `stem`: a number is a lesson's number (1 and 01 are lesson 01,
    never lesson 10), any other text a part of its name (`sae`, `07_interp`)."""
    name = name.strip()
    if name.isascii() and name.isdigit():  # not "²", which isdigit() takes and int() refuses
        return stem[:2].isdigit() and int(stem[:2]) == int(name)
    return name in stem


def reproduce(root="runs", scale="default", force=False, only=None, seed=0, overrides=None):
    """Run every stage (or those `only` selects: see `selects`), write the report, print the
    verification table. The report and the table cover every stage with a result, including those
    finished by earlier calls. Returns the exit code: 0 only if every stage run here finished and no
    check failed in the stages asked for (all, or those of `only`). Raises ValueError for an --out that
    cannot be written, an --only that matches nothing or a setting that is not one. seed: every lesson's
    (see tinymono.lesson); overrides: settings.parse's {section: {field: value}} (--set)."""
    if not str(root).strip():
        raise ValueError("--out is empty: give the folder for models, figures and the report, e.g. --out runs")
    if only is not None and not all(o.strip() for o in only):
        raise ValueError(f"--only {only}: an empty name matches every lesson; give part of a lesson's name")
    overrides = overrides or {}
    if overrides:
        from tinymono import pipeline

        settings.ACTIVE = overrides
        pipeline.check_settings(scale)
    try:
        todo = [p for p in lessons() if not only or any(selects(o, p.stem) for o in only)]
    except FileNotFoundError as e:
        raise ValueError(str(e)) from e
    if not todo:
        raise ValueError(f"--only {' '.join(only)} matches no lesson; the lessons are "
                         + ", ".join(p.stem for p in lessons()))
    root, run = Path(root), run_folder(scale, seed, overrides)  # nothing is written before the arguments pass
    reserve = root / run / ".report-reserve"
    try:
        (root / run / "logs").mkdir(parents=True, exist_ok=True)
        lock = _lock(root / run)
    except OSError as e:
        raise ValueError(f"cannot write into --out {root}: {e.strerror or e}") from e
    try:
        return _reserved(root, run, reserve, scale, seed, overrides, todo, force)
    finally:
        lock.close()  # and with it the lock


def _lock(folder):
    """An exclusive lock on `folder`/.lock, held while the returned file is open: two runs in one run folder
    would train every stage twice, write one log file each into the same files, and one could find the
    other's half-built corpus folder and fail. ValueError when another process holds it."""
    fh = open(folder / ".lock", "a")
    try:
        import fcntl

        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise ValueError(f"another `reproduce` is running in {folder} (it holds {folder / '.lock'}): wait for it "
                         "to finish, or give another --out") from None
    except (ImportError, OSError) as e:  # no fcntl (Windows), or a file system without locks (some NFS, FUSE)
        print(f"note: {folder} cannot be locked here ({e}); do not start a second run in it", file=sys.stderr)
    return fh


def _reserved(root, run, reserve, scale, seed, overrides, todo, force):
    """reproduce() with its run folder locked: the disk reserve for the report, the settings, the stages."""
    try:
        with writing(reserve):
            reserve.write_bytes(bytes(RESERVE_BYTES))
        if overrides:
            write_settings(root / run, overrides)
    except OSError as e:
        if reserve.is_file():
            reserve.unlink()
        raise ValueError(f"cannot write into --out {root}: {e.strerror or e}") from e
    try:
        return _run(root, scale, seed, overrides, todo, force)
    finally:
        reserve.unlink(missing_ok=True)


def _run(root, scale, seed, overrides, todo, force):
    """reproduce() once its arguments are checked: the stages in `todo`, then the report."""
    run, t_start, commit_at_start = run_folder(scale, seed, overrides), time.perf_counter(), source_commit()
    ran, failed = {}, False
    for i, lesson in enumerate(todo, 1):
        result = _result_path(root, run, lesson)
        if not force and _read_result(result) is not None:
            print(f"[{i}/{len(todo)}] {lesson.stem}: finished earlier, reused ({result})")
            continue
        result.unlink(missing_ok=True)
        print(f"[{i}/{len(todo)}] {lesson.stem} at scale {scale} ...", flush=True)
        try:
            code, seconds, tail = run_stage(lesson, scale, root, root / run / "logs" / f"{lesson.stem}.log", seed,
                                            overrides, progress.Display(f"[{i}/{len(todo)}]"))
        except (KeyboardInterrupt, Stopped) as e:
            print(f"\n{'interrupted' if isinstance(e, KeyboardInterrupt) else e} during {lesson.stem}; the "
                  "checkpoints it saved are kept: run the same command again to resume", file=sys.stderr)
            raise
        note = None if code == 0 else _failure(tail)
        status = "ok" if code == 0 else f"failed{': disk full' if 'disk full' in note else ''} (exit {code})"
        failed |= code != 0
        ran[lesson] = (status, seconds, note)
        print(f"[{i}/{len(todo)}] {lesson.stem}: {status} in {progress.duration(seconds)}", flush=True)
    stages, checks, unfinished = [], [], []  # stages: every one run now or finished earlier
    for lesson in lessons():
        result = _read_result(_result_path(root, run, lesson))
        if lesson in ran:
            status, seconds, note = ran[lesson]
            if status == "ok" and result is None:  # exit 0 without a result: it never reached lesson.finish()
                status, note = "ended without a result", note or "exit 0, but no result.json"
            stages.append((lesson, status, seconds, note))
        elif result is not None:
            stages.append((lesson, "reused" if lesson in todo else "earlier run, not asked for", result["seconds"],
                           None))
        if result is not None:
            checks += [(lesson.stem, c) for c in result["checks"]]
        elif lesson in ran:
            unfinished.append(lesson.stem)
    report = write_report(root, scale, stages, seed, overrides, time.perf_counter() - t_start, commit_at_start)
    print("\nverification against ground truth")
    rows = [(c["status"], stem, c["name"], _fmt_value(c["value"]), c["bar"]) for stem, c in checks]
    widths = [max((len(r[k]) for r in rows), default=0) for k in range(4)]
    for status, stem, name, value, bar in rows:
        print(f"  {status}  {stem:<{widths[1]}}  {name:<{widths[2]}}  {value:>{widths[3]}}   bar: {bar}")
    asked = {l.stem for l in todo}  # the exit code speaks for these; the others are earlier runs' results
    failed |= any(c["status"] == "FAIL" and stem in asked for stem, c in checks) or bool(unfinished)
    print("\nwall time per stage (a stage run now: its process, start-up included; a reused stage: the lesson's "
          "own time when it ran, without start-up)")
    width = max(len(l.stem) for l, *_ in stages) if stages else 0
    for l, st, s, _ in stages:
        trained = throughput(_read_result(_result_path(root, run, l)))
        print(f"  {l.stem:<{width}}  {progress.duration(s):>12}  {st}" + (f"  ({trained})" if trained else ""))
    counts = tally(checks)
    print(f"report: {report}\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped"
          + (" (SKIP: smoke scale is too small for those bars)" if counts["SKIP"] else ""))
    if counts["FAIL"] and scale != "smoke":
        print(FAILURES_EXPLAINED)
    if unfinished:
        print(f"did not finish: {', '.join(unfinished)} (logs in {root / run / 'logs'})")
    return 1 if failed else 0
