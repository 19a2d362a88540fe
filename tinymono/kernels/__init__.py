"""numba kernels, each beside the plain NumPy twin it must equal.

One module per model (toy.py, sae.py, transformer.py), plus optim.py (Adam's update) and moments.py (the
nonzero entries of sparse activation blocks, for the lessons' streamed scores). The rules every kernel
here follows:

- It is first written as a plain Python function `_name`, then bound as `name = njit(...)(_name)`,
  so `_name` can be read, stepped through in a debugger, and run with NUMBA_DISABLE_JIT=1 (the tests
  pass that way too, with readable tracebacks for a learner who edits a kernel).
- Its twin, `name_numpy`, computes the same thing with vectorised NumPy; a test checks the two agree
  on hypothesis-drawn inputs.
- Flags are stated beside each decorator: no `cache=True` together with `parallel=True` (numba's
  cache cannot hold the parallel runtime reliably); no mutable globals; `fastmath` only where a
  reason is written down and never where NaN or inf is tested; no jitted function is ever built inside
  a loop or per call (compiling costs seconds).

Two ways to use both cores, each where it pays (neither kernel's results depend on the thread count):

- `prange` (sae.py): numba's own parallel loop, `njit(parallel=True)`. Simple to write, but a
  parallel function cannot be cached on disk (so a new process compiles it again, seconds), and starting
  and joining its threads costs tens of microseconds idle, milliseconds on a busy machine. Use it for
  few, long calls: the SAE's sparse kernels, each bound a second time without prange (`name_serial`) for
  the sizes where threads do not pay.
- A thread pool over `nogil=True` kernels (`in_parallel`, below): each kernel takes a range
  [start, stop) of rows, and a few Python threads run it on one range each. Every kernel stays
  `cache=True`, so a process starts in a fraction of a second. Use it for many short calls, as the
  transformer's step makes (a dozen fused layers per step, each a few milliseconds), and for kernels a
  new process should not wait seconds to compile (the toy model's chunk of steps).
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
