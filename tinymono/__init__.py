"""tinymono: a runnable teaching text of "Towards Monosemanticity" (Bricken et al., 2023).

Sparse autoencoders, superposition toy models and a one-layer transformer, written in NumPy with
hand-written backward passes; numba speeds up the few hot loops.
"""
import os

# OpenBLAS worker threads spin for a while after each matmul and slow down a numba kernel that runs
# right after one; a short timeout (set before NumPy loads OpenBLAS) avoids that without slowing matmuls.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"

# Exercise mode: TINYMONO_IMPL=WORKSPACE runs the library on a learner's workspace (tinymono/exercises/switch.py).
if os.environ.get("TINYMONO_IMPL", "").strip():
    from tinymono.exercises import switch as _switch

    _switch.use_workspace(_switch.workspace_from_env())
