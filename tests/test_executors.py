"""Opening an executor (tinymono/executors.py): how many workers and threads, which --workers are refused, and
what an interrupt leaves behind outside a pool."""
import pytest

from tinymono import executors


def test_more_workers_than_cores_still_get_a_thread_each():
    """Thread variables of 0 would leave each worker's BLAS to pick its own count (every core)."""
    workers = executors.cores() + 1
    with executors.open_executor("process", workers=workers) as (_, what):  # no point submitted: no process starts
        assert what == f"process pool: {workers} workers x 1 thread", what


def test_a_pool_has_no_more_workers_than_points():
    """One point needs one worker, which then gets every core's threads."""
    threads = executors.cores()
    with executors.open_executor("process", points=1) as (_, what):
        assert what == f"process pool: 1 worker x {threads} thread{'s' if threads > 1 else ''}", what


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2"])
def test_workers_must_be_a_positive_integer(workers):
    with pytest.raises(ValueError, match="--workers must be a positive integer"):
        with executors.open_executor("serial", workers=workers):
            pass


def test_an_interrupted_point_outside_a_pool_does_not_stop_the_next(monkeypatch):
    """In the driver's own process (`serial`, a lesson's loop) a Ctrl-C ends one point; it must not refuse every
    later call as a pool worker that was interrupted does."""
    monkeypatch.setitem(executors._worker, "interrupted", False)
    monkeypatch.setitem(executors._worker, "pool", False)

    def interrupted(point):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        executors.call(interrupted, None)
    try:
        again = executors.call(lambda point: point * 2, 21)
    except KeyboardInterrupt:  # caught here: escaping, it would stop the whole test session
        pytest.fail("after one interrupted point, every later point in this process is refused")
    assert again == 42


def test_a_worker_whose_driver_died_lets_its_point_save_then_leaves(tmp_path):
    """A worker notices its driver is gone: it stops its point as a Ctrl-C would, waits for the point to end
    (the training loop saves at the end of its chunk), and exits; it neither dies mid-save nor lingers."""
    import subprocess
    import sys
    import textwrap

    saved = tmp_path / "saved"
    code = textwrap.dedent(f"""
        import threading, time
        from tinymono import executors

        def point(_):
            # a parent pid that is not ours: the watcher sees a dead driver at once, while this point runs
            try:
                threading.Thread(target=executors._watch_parent, args=(-1,), daemon=True).start()
                time.sleep(60)
            except KeyboardInterrupt:  # the watcher's Ctrl-C: finish the chunk and save, which takes a while
                time.sleep(1.0)
                open({str(saved)!r}, "w").write("saved")
                raise

        try:
            executors.call(point, None)
        except KeyboardInterrupt:  # a pool worker would go back to waiting for work: only the watcher ends it
            time.sleep(30)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert saved.exists(), proc.stderr[-2000:]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
