"""The exercise-mode switch: TINYMONO_IMPL=WORKSPACE runs the library on a learner's workspace.

This is the one hook. When the variable is set, `import tinymono` (tinymono/__init__.py) calls
`use_workspace(WORKSPACE)` before any other module of the library is imported, and each library module
the workspace holds (layers.py, toy.py, sae.py, metrics.py; see tinymono.exercises.MODULES) is loaded
from there under the library's own name, `tinymono.sae` and so on. Whatever imports it afterwards, a
lesson, transformer.py (which builds its layer set from tinymono.layers) or features.py (which imports
tinymono.sae), gets the learner's module, written functions and copied rest alike. Nothing else changes.

One exception, said here because it is the only one: the SAE's sparse training step (`train_step_sparse`)
and the decoder constraint's row kernels (`sae.update(..., fast=True)`) run the library's numba kernels,
not the learner's functions. In exercise mode SAETask never takes the sparse step (`sae.SPARSE_STEP` is
off) and `update` always takes the learner's project_decoder_grad and normalise_decoder, so every
training step runs the learner's code: slower at default scale, and no difference at smoke scale. The
sparse step itself still works when called (lesson 06 checks it against the learner's forward/backward).
(The toy model's fused kernel in lesson 01 and the transformer's `fast=True` kernels stay the library's;
lessons 01 and 04 check the learner's code against them.)
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from tinymono.exercises import MODULES

_ACTIVE = {}  # module name -> the workspace file it was loaded from


def active():
    """{module name: workspace file} of the modules exercise mode replaced ({} when it is off)."""
    return dict(_ACTIVE)


def describe():
    """One line per replaced module, for a lesson's first lines ([] when exercise mode is off)."""
    from tinymono.exercises import EXERCISES

    return [f"exercise mode: tinymono/{name}.py is {path} (yours: "
            f"{', '.join(e.function for e in EXERCISES if e.module == name)})" for name, path in _ACTIVE.items()]


SCORING_ONLY = ("metrics",)  # replaced modules no trained model depends on: their functions only score


def cache_suffix():
    """'' when exercise mode replaces no module that training uses; else '-' and a hash of those modules'
    code, which a lesson adds to its cache folder's name, so that models trained by one version of the
    learner's code are never reused by another (the learner fixes a function and runs the lesson again: it
    trains afresh). The hash is of each module's syntax tree, so an edited comment or blank line keeps the
    models; the modules of SCORING_ONLY (metrics.py: the scores lessons compute from trained models, never
    cached) do not count, so exercises 06 and 07 never retrain a transformer."""
    trains = sorted(name for name in _ACTIVE if name not in SCORING_ONLY)
    if not trains:
        return ""
    h = hashlib.sha256()
    for name in trains:
        tree = ast.parse(Path(_ACTIVE[name]).read_text(encoding="utf-8"))
        h.update(name.encode() + b"\0" + ast.dump(tree).encode())
    return "-" + h.hexdigest()[:10]


def workspace_from_env():
    """The workspace folder TINYMONO_IMPL names, or None."""
    value = os.environ.get("TINYMONO_IMPL", "").strip()
    return Path(value) if value else None


def use_workspace(folder):
    """Load each module of MODULES that `folder` holds as tinymono.<name>. Must run before the library's
    own modules are imported (tinymono/__init__.py calls it first thing)."""
    import tinymono

    folder = Path(folder)
    if not folder.is_dir():
        raise RuntimeError(f"TINYMONO_IMPL={folder}: no such folder (it names a workspace written by "
                           "`python -m tinymono exercises`)")
    found = [name for name in MODULES if (folder / f"{name}.py").is_file()]
    if not found:
        raise RuntimeError(f"TINYMONO_IMPL={folder}: the folder holds none of "
                           f"{', '.join(n + '.py' for n in MODULES)}, so there is nothing to run in their place")
    loaded_early = [n for n in found if f"tinymono.{n}" in sys.modules]
    if loaded_early:
        raise RuntimeError(f"TINYMONO_IMPL: tinymono.{loaded_early[0]} was imported before the switch ran")
    for name in found:  # in MODULES order: layers before sae, which imports it
        path = (folder / f"{name}.py").resolve()
        spec = importlib.util.spec_from_file_location(f"tinymono.{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # before running it: its dataclasses look themselves up there
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[spec.name]
            raise
        setattr(tinymono, name, module)
        _ACTIVE[name] = path
    if "sae" in _ACTIVE:
        learners = sys.modules["tinymono.sae"]
        learners.SPARSE_STEP = False
        update = learners.update
        learners.update = lambda *args, **kwargs: update(*args, **{**kwargs, "fast": False})
