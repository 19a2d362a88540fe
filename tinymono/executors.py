"""The executors a sweep runs on (tinymono/sweep.py): any `concurrent.futures.Executor`, opened by name.

    process            the standard library's ProcessPoolExecutor: one worker per core (the default)
    dask://HOST:PORT   the workers of a running dask.distributed scheduler, through Client(...).get_executor()
    dask-local         a dask LocalCluster of worker processes started here (and closed at the end)
    serial             every point in this process, one after another

Threads. NumPy's BLAS and numba each start one thread per core by default, so two workers on two cores
would run four busy threads and slow each other down. Each worker of the process pool and of dask-local
gets `cores // workers` threads (OPENBLAS/OMP/MKL/NUMBA_NUM_THREADS), set in its environment before it
loads NumPy: a pool worker is a fresh interpreter (`spawn`, not `fork`, which would inherit the parent's
loaded BLAS) whose first act is `_init_worker`. That is why this module imports only the standard library:
a worker imports it before its threads are set. dask's nanny sets the BLAS variables to 1 for the workers
it starts; start remote workers with one thread each (`dask worker tcp://HOST:PORT --nthreads 1`, with
NUMBA_NUM_THREADS=1 in their environment).

Signals. A pool worker runs in a session of its own, so a terminal's Ctrl-C reaches only the driver, which
passes exactly one SIGINT to each worker (`interrupt_workers`): the training loop then saves its checkpoint
and stops (a second one stops it at once, as in `reproduce`), and the worker starts no further point. A
worker whose driver died stops its point as by Ctrl-C and exits once the point has saved (`_watch_parent`),
so no worker outlives its sweep for long.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_env(threads):
    """The environment that gives a worker `threads` BLAS and numba threads."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def _watch_parent(parent, grace=600.0):
    while os.getppid() == parent:
        time.sleep(1.0)
    # the driver is gone (killed, or its terminal closed): nobody will collect this worker's result, but its
    # running point can still keep its work: stop it as a Ctrl-C would (the training loop saves at the end of
    # its chunk), wait until the point has ended (at most `grace` seconds), then leave
    os.kill(os.getpid(), signal.SIGINT)
    _IDLE.wait(grace)
    os._exit(1)


_worker = {"pool": False, "interrupted": False}  # this process is a pool worker; a SIGINT has reached it
_IDLE = threading.Event()  # set while this worker runs no point
_IDLE.set()


def _interrupted(signum, frame):
    _worker["interrupted"] = True


def _init_worker(env, parent):
    """First thing in each pool worker, before any task (and so before NumPy) is imported."""
    os.environ.update(env)
    os.setsid()  # a session of its own: a terminal's Ctrl-C reaches the driver only, which passes it on once
    _worker["pool"] = True
    signal.signal(signal.SIGINT, _interrupted)  # between points; `call` listens for it while a point runs
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def call(stage, point):
    """stage(point) in a worker. In a main thread (a pool worker, or `serial`), SIGINT raises
    KeyboardInterrupt while the point runs (the training loop turns the first one into a saved checkpoint).
    A pool worker that has been interrupted starts no more points: a pool hands each worker its next point
    before the current one ends, and the driver cannot take it back."""
    if threading.current_thread() is not threading.main_thread():
        return stage(point)
    if _worker["interrupted"]:
        raise KeyboardInterrupt("the sweep was interrupted before this point started")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    _IDLE.clear()
    try:
        return stage(point)
    except KeyboardInterrupt:
        _worker["interrupted"] = _worker["pool"]
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        _IDLE.set()


@contextmanager
def _main_script_hidden():
    """A spawned worker first runs the parent's main script again (as __mp_main__), found by its __file__.
    A lesson is such a script, with no `if __name__ == "__main__"` guard: each worker would start the
    lesson over. While workers start, the script's path is hidden, so a worker imports only the modules
    its tasks name. (A main run as a module, `python -m tinymono`, is imported by name and left alone.)"""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(getattr(main, "__spec__", None), "name", None):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def submit_all(executor, stage, points):
    """[future of call(stage, point) for each point]. A process pool starts its workers as the points are
    submitted; here the main script is hidden while it does (_main_script_hidden), so a lesson can use one."""
    with _main_script_hidden():
        return [executor.submit(call, stage, point) for point in points]


class SerialExecutor(cf.Executor):
    """Runs each call when it is submitted, in this process: the reference the others are compared with."""

    def submit(self, fn, /, *args, **kwargs):
        future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:
            future.set_exception(e)
        return future


def interrupt_workers():
    """One SIGINT to each worker process this process started (a pool's, or dask-local's)."""
    for child in multiprocessing.active_children():
        try:
            os.kill(child.pid, signal.SIGINT)
        except (ProcessLookupError, TypeError):  # already gone, or not started
            pass


_OPEN_POOLS = []  # the process pools of this process whose block has not been left yet


REPEAT_WINDOW = 0.5  # seconds: `timeout -s INT` signals the process and then its group, one stop sent twice


def _stop_after_interrupt(pool):
    """Ctrl-C for a pool: pass it on to the workers, drop the queued points and wait for the running ones to
    save their checkpoints (a second Ctrl-C is passed on too: the points stop at once). An interrupt within
    REPEAT_WINDOW of the last one passed on is the same stop delivered twice (a signal to the process and to
    its group), not a second Ctrl-C: passing it on would make the workers stop without saving. The wait is
    on the worker processes themselves: a pool's own shutdown, cut short by such an interrupt, returned at
    once the second time, while its workers were still saving, and this process then left without them."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown forgets them
    passed_on, asked, told = None, False, False
    while True:
        try:
            if passed_on is None or time.monotonic() - passed_on > REPEAT_WINDOW:
                passed_on = time.monotonic()
                interrupt_workers()
            if not told:
                told = True
                print("interrupted: the running points save their checkpoints, then stop (Ctrl-C again, a moment "
                      "later: stop now)", file=sys.stderr, flush=True)
            if not asked:
                pool.shutdown(wait=False, cancel_futures=True)  # no new point starts; the workers end after theirs
                asked = True
            for worker in workers:
                worker.join(timeout=0.2)
            if not any(worker.is_alive() for worker in workers):
                pool.shutdown(wait=True)
                return
        except KeyboardInterrupt:
            continue


def stop_open_pools():
    """Ctrl-C for the pools still open when an interrupt reached the top of the program: a lesson may enter
    its pool in one cell and leave it in a later one, so the interrupt never passes through the block, and
    without this the interpreter's exit would wait for every queued point to run."""
    while _OPEN_POOLS:
        _stop_after_interrupt(_OPEN_POOLS.pop())


@contextmanager
def process_pool(workers, threads):
    """A ProcessPoolExecutor of `workers` spawned workers with `threads` threads each. Leaving the block by
    Ctrl-C passes it on to the workers and waits for their points to save their checkpoints (a second Ctrl-C
    passes that on too: the points stop at once)."""
    pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_init_worker, initargs=(thread_env(threads), os.getpid()))
    _OPEN_POOLS.append(pool)
    try:
        yield pool
    except KeyboardInterrupt:
        _stop_after_interrupt(pool)
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        if pool in _OPEN_POOLS:
            _OPEN_POOLS.remove(pool)
    pool.shutdown(wait=True)


@contextmanager
def dask_executor(address=None, workers=2, threads=1):
    """The executor of a dask.distributed Client: of the scheduler at `address` ('tcp://HOST:PORT'), or of a
    LocalCluster of `workers` processes with one task at a time and `threads` BLAS/numba threads each, on
    this machine's loopback address, closed (its processes ended) when the block is left."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise ValueError("this executor needs dask.distributed: pip install -e '.[dask]' (or 'dask[distributed]')") \
            from e
    import logging

    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR, env=thread_env(threads))
    try:
        client = Client(cluster if cluster is not None else address, timeout="20s")
    except OSError as e:
        if cluster is not None:
            cluster.close()
        raise ValueError(f"cannot reach the dask scheduler at {address}: {e}") from e
    try:
        yield client.get_executor(pure=False)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def describe_dask(executor):
    """'N dask workers, T task threads in all' of a dask ClientExecutor."""
    info = executor._client.scheduler_info(n_workers=-1)["workers"]
    return f"{len(info)} dask workers, {sum(w['nthreads'] for w in info.values())} task threads in all"


@contextmanager
def open_executor(spec, workers=None, points=None, threads=None):
    """(executor, a line saying what it is) for an --executor value: 'process', 'serial', 'dask-local' or
    'dask://HOST:PORT', or any concurrent.futures.Executor of the caller's (used as it is, and left open).
    workers: processes to start (default: one per core, and never more than `points`); each gets
    `threads` threads (default: cores // workers)."""
    if isinstance(spec, cf.Executor):
        yield spec, f"the caller's {type(spec).__name__}"
        return
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"--workers must be a positive integer, got {workers!r}")
    n = workers or cores()
    n = max(1, min(n, points)) if points else n
    threads = threads or max(1, cores() // n)
    many = f"{n} worker{'s' if n > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
    if spec == "serial":
        yield SerialExecutor(), "serial (this process)"
    elif spec == "process":
        with process_pool(n, threads) as pool:
            yield pool, f"process pool: {many}"
    elif spec == "dask-local":
        with dask_executor(None, n, threads) as ex:
            yield ex, f"dask LocalCluster: {many}"
    elif spec.startswith(("dask://", "tcp://")):
        address = "tcp://" + spec.split("://", 1)[1]
        with dask_executor(address) as ex:
            yield ex, f"dask scheduler {address}: {describe_dask(ex)}"
    else:
        raise ValueError(f"--executor {spec!r}: use process, serial, dask-local or dask://HOST:PORT")
