"""Writing a workspace (`python -m tinymono exercises [NN] --out DIR`), and loading its modules for its tests.

    DIR/README.md                 what to do, and the exercises in order
    DIR/<module>.py               the library's module, the exercises' bodies blanked (blank.py)
    DIR/test_NN_<lesson>.py       one test per exercise, each calling the tutor
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tinymono.exercises import LESSONS, MODULES, for_lessons
from tinymono.exercises.blank import blank_source

LIBRARY = Path(__file__).resolve().parents[1]  # tinymono/: the workspace is made from these files


def _header(module, exercises):
    ids = ", ".join(f"{e.id} {e.function}" for e in exercises)
    return (f"# tinymono exercise workspace: tinymono/{module}.py, with the bodies of these functions left for\n"
            f"# you to write: {ids}.\n"
            f"# Each says what to compute in its docstring. `python -m pytest <this folder> -x` checks them in\n"
            f"# order; TINYMONO_IMPL=<this folder> makes the library (and the lessons) use this file instead.\n")


def _test_file(lesson, modules, exercises):
    name = LESSONS[lesson]
    lines = [f'"""Lesson {lesson}\'s exercises (lessons/{name}.py), in the order the lesson meets them.',
             "",
             "Run `python -m pytest <this folder> -x` and fix the first failure: each test checks one function of",
             "your module against the library's on small random inputs and says what is wrong.",
             f'Written by `python -m tinymono exercises {lesson}`."""',
             "from tinymono.exercises.tutor import check",
             "from tinymono.exercises.workspace import load_module",
             ""]
    lines += [f'{m} = load_module(__file__, "{m}")' for m in modules]
    for e in exercises:
        k = e.id.split(".")[1]
        lines += ["", "", f"def test_{lesson}_{int(k):02d}_{e.function}():",
                  f'    """exercise {e.id}: {e.task}"""',
                  f'    check("{e.id}", {e.module})']
    return "\n".join(lines) + "\n"


def lesson_script(lesson):
    """The path of a lesson's script (reproduce's LESSONS_DIR, the lessons/ folder beside the package)."""
    from tinymono.reproduce import LESSONS_DIR

    return LESSONS_DIR / f"{LESSONS[lesson]}.py"


def _readme(lessons, exercises, out):
    rows = "\n".join(f"| {e.id} | `{e.module}.py` | `{e.function}` | {e.task} |" for e in exercises)
    runs = "\n".join(f"    TINYMONO_IMPL={Path(out).resolve()} python {lesson_script(n)} --scale smoke"
                     for n in lessons)
    return f"""# tinymono exercises: lesson{'s' if len(lessons) > 1 else ''} {', '.join(lessons)}

Each `.py` file here is a copy of the library module of the same name in `tinymono/`, in which the
functions below have lost their bodies: each has a docstring saying what to compute (the shapes, the
formula) and raises `NotImplementedError` until you write it. Work down the list:

    python -m pytest {out} -x

Each test checks one function against the library's on small random inputs and says what is wrong: a
shape (a transposed matrix?), a sign, a factor such as the batch size, a missing term, and for a
backward, the gradient-check table (your gradient against central differences). Keep to the order: a
later function may call an earlier one (in lesson 02, the whole backward and the resampling do).

| exercise | file | function | what |
|---|---|---|---|
{rows}

When every test passes, run the lesson on your own code (`TINYMONO_IMPL` loads your files in place of
the library's; the lesson's figures and models then go under `{out}/runs`):

{runs}

Run the tests without `TINYMONO_IMPL` set: the tutor compares your functions with the library's.
"""


def check_out(out):
    """The folder must not exist yet, or be empty: a workspace holds a learner's work and is never overwritten."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the workspace")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty; give a new folder (a workspace is never written "
                         "over: it holds your work)")
    return out


def write_workspace(lessons, out):
    """Write the workspace of `lessons` (["02"], or several) into `out`. Returns the files written."""
    out = check_out(out)
    exercises = for_lessons(lessons)
    modules = [m for m in MODULES if any(e.module == m for e in exercises)]
    files = {}
    for m in modules:
        mine = [e for e in exercises if e.module == m]
        source = (LIBRARY / f"{m}.py").read_text(encoding="utf-8")
        files[f"{m}.py"] = blank_source(source, mine, _header(m, mine))
    for lesson in lessons:
        mine = [e for e in exercises if e.lesson == lesson]
        used = [m for m in modules if any(e.module == m for e in mine)]
        files[f"test_{LESSONS[lesson]}.py"] = _test_file(lesson, used, mine)
    files["README.md"] = _readme(lessons, exercises, out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / name for name in files]


def load_module(test_file, name):
    """The module <name>.py beside `test_file` (a workspace's test), loaded once per process."""
    path = (Path(test_file).resolve().parent / f"{name}.py")
    key = f"tinymono_workspace_{abs(hash(str(path))):x}_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # before running it: its dataclasses look themselves up there
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]
