"""tinymono: a runnable teaching text of "Towards Monosemanticity" (Bricken et al., 2023).

Sparse autoencoders, superposition toy models and a one-layer transformer, written in NumPy with
hand-written backward passes; numba speeds up the few hot loops.
"""
import os
import sys
import warnings

# OpenBLAS worker threads spin for a while after each matmul and slow down a numba kernel that runs
# right after one; a short timeout avoids that without slowing matmuls. OpenBLAS reads it once, when
# NumPy loads it, so it must be set before NumPy is imported: the lessons import tinymono first. Measured
# (docs/experiments.md): lesson 06's SAE trains at 86 steps/s with it and 36 without.
if "OPENBLAS_THREAD_TIMEOUT" not in os.environ and "numpy" in sys.modules:
    warnings.warn("NumPy was imported before tinymono, so OpenBLAS's idle threads keep spinning after each "
                  "matmul and slow the numba kernels (SAE training about 2x): import tinymono first, or set "
                  "OPENBLAS_THREAD_TIMEOUT=4 in the environment", RuntimeWarning, stacklevel=2)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"

# Exercise mode: TINYMONO_IMPL=WORKSPACE runs the library on a learner's workspace (tinymono/exercises/switch.py).
if os.environ.get("TINYMONO_IMPL", "").strip():
    from tinymono.exercises import switch as _switch

    _switch.use_workspace(_switch.workspace_from_env())
