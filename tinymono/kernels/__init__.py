"""numba kernels, each beside the plain NumPy twin it must equal.

One module per model (toy.py, sae.py, transformer.py), plus optim.py (Adam's update) and moments.py (the
nonzero entries of sparse activation blocks, for the lessons' streamed scores). The rules every kernel
here follows:

- It is first written as a plain Python function `_name`, then bound as `name = njit(...)(_name)`,
  so `_name` can be read, stepped through in a debugger, and run with NUMBA_DISABLE_JIT=1 (the tests
  pass that way too, with readable tracebacks for a learner who edits a kernel).
- Its twin, `name_numpy`, computes the same thing with vectorised NumPy; a test checks the two agree
  on hypothesis-drawn inputs.
- Flags are stated beside each decorator: `cache=True` and no `parallel=True` (below); no mutable
  globals; `fastmath` only where a reason is written down and never where NaN or inf is tested; no
  jitted function is ever built inside a loop or per call (compiling costs seconds).

How the kernels use both cores (no kernel's results depend on the thread count): a thread pool over
`nogil=True` kernels (`in_parallel`, below). Each kernel takes a range [start, stop) of rows (or blocks,
or chunks), and a few Python threads run it on one range each. Every kernel stays `cache=True`, so a
process starts in a fraction of a second: the transformer's step (a dozen fused layers, each a few
milliseconds), the toy model's chunk of steps, and the SAE's sparse kernels, which call it only from
the sizes where threads pay (kernels/sae.py: over_rows). numba's own parallel loop (`prange`,
`njit(parallel=True)`) is simpler to write, and the SAE's kernels were written with it, uncached,
until `python -m tinymono bench startup` measured 4-6 s of compiling in every process that trained an
SAE at lesson 06's size. numba (0.68) can cache parallel functions too, but loading a cached one took
0.35 s here (numba starts its own thread pool), against milliseconds for these, and ranges cut by
`in_parallel` keep every result independent of the thread count by construction.
"""
from concurrent.futures import ThreadPoolExecutor

import numba

_POOL = ThreadPoolExecutor(max_workers=max(1, numba.config.NUMBA_NUM_THREADS - 1), thread_name_prefix="tinymono")


def in_parallel(kernel, n, *args):
    """kernel(*args, start, stop) over [0, n), cut into one contiguous range per thread (NUMBA_NUM_THREADS,
    by default the number of cores); this thread runs the first range and waits for the others. With
    NUMBA_DISABLE_JIT=1 the kernel is plain Python, which the GIL runs one thread at a time: then it runs
    here in one range (one thread to step through, and the caller's np.errstate applies to all of it)."""
    k = 1 if numba.config.DISABLE_JIT else max(1, min(numba.config.NUMBA_NUM_THREADS, n))
    bounds = [i * n // k for i in range(k + 1)]
    others = [_POOL.submit(kernel, *args, bounds[i], bounds[i + 1]) for i in range(1, k)]
    kernel(*args, bounds[0], bounds[1])
    for f in others:
        f.result()  # re-raises an error from that thread
