"""numba kernels, each beside the plain NumPy twin it must equal.

One module per model (toy.py, sae.py, transformer.py). The rules every kernel here follows:

- It is first written as a plain Python function `_name`, then bound as `name = njit(...)(_name)`,
  so `_name` can be read, stepped through in a debugger, and run with NUMBA_DISABLE_JIT=1 (the tests
  pass that way too, with readable tracebacks for a learner who edits a kernel).
- Its twin, `name_numpy`, computes the same thing with vectorised NumPy; a test checks the two agree
  on hypothesis-drawn inputs.
- Flags are stated beside each decorator: no `cache=True` together with `parallel=True` (numba's
  cache cannot hold the parallel runtime reliably); no mutable globals; `fastmath` only where a
  reason is written down and never where NaN or inf is tested; no jitted function is ever built inside
  a loop or per call (compiling costs seconds).
"""
