"""Sweeps (tinymono/sweep.py) on every executor: a tiny lesson-03 grid run serially is the reference; the
same grid on a ProcessPoolExecutor and on a dask LocalCluster is stopped midway (its workers killed, or
the sweep cancelled), run again, and must give the reference's numbers without rerunning a finished point.
The seeds sweep must give the numbers of one `reproduce` per seed."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import BrokenExecutor
from pathlib import Path

import pytest

from tinymono import executors, sweep
from tinymono.lesson import derived_seed

ROOT = Path(__file__).resolve().parents[1]
GRID = dict(scale="smoke", l1s=[3e-4, 1e-3], ratios=[1.0, 2.0], steps=1500)  # 4 points of a few seconds each
METRICS = ("mmcs", "recovered", "one_to_one", "dead", "l0", "explained_variance")
WORKER_THREADS = max(1, executors.cores() // 2)  # each of two workers' threads, as open_executor gives them


class Stop(Exception):
    """Raised by a test's on_result hook to stop a sweep midway."""


def points_dir(out):
    return Path(out) / "smoke" / "sweep-sae-gt" / "points"


def rows(out):
    got = json.loads((Path(out) / "smoke" / "sweep-sae-gt" / "sweep.json").read_text())["points"]
    return {(r["l1_coefficient"], r["ratio"]): r for r in got}


def finished_mtimes(out):
    return {p.parent.name: p.stat().st_mtime_ns for p in points_dir(out).glob("*/result.json")}


def assert_same_numbers(got, reference):
    assert got.keys() == reference.keys()
    for key, ref in reference.items():
        for m in METRICS:
            assert got[key][m] == pytest.approx(ref[m], rel=1e-5, abs=1e-6), \
                f"point {key}: {m} {got[key][m]} here, {ref[m]} in the serial run: a resumed point must end where an " \
                "uninterrupted one does (did the checkpoint miss some state, or the worker's data stream differ?)"


def wait_for_partial_checkpoint(out, timeout=60):
    """A point that has saved a checkpoint but not finished (no result.json yet): its folder name."""
    from tinymono import checkpoint

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        for ckpt in points_dir(out).glob("*/sae.npz"):
            if (ckpt.parent / "result.json").exists():
                continue
            try:
                meta = checkpoint.load(ckpt)[1]
            except checkpoint.CheckpointError:  # being replaced right now
                continue
            if 0 < meta["step"] < meta["total_steps"]:
                return ckpt.parent.name
        time.sleep(0.05)
    pytest.fail(f"no point was caught mid-run within {timeout} s: nothing to resume")


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The reference: the grid run point after point, in a process with the threads each worker of the pools
    below gets (two workers share the cores). The thread count is part of the computation: on some CPUs
    (a 2-core AMD EPYC) one BLAS and numba thread gives other float32 rounding than two, and a point's
    MMCS after 1,500 steps moves by 2e-5 to 3e-4 relative, more than a resume may."""
    out = tmp_path_factory.mktemp("serial")
    env = {**os.environ, **executors.thread_env(WORKER_THREADS)}
    code = f"from tinymono import sweep; raise SystemExit(sweep.sae_gt(out={str(out)!r}, executor='serial', **{GRID!r}))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, rows(out)


def test_executors_module_leaves_numpy_unloaded():
    """A worker imports tinymono.executors before its thread counts are set: it must not load NumPy."""
    code = "import sys, tinymono.executors; print('numpy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr


def test_pool_workers_get_their_threads_before_numpy_loads():
    threads = max(1, executors.cores() // 2)
    with executors.open_executor("process", workers=2) as (pool, what):
        assert what == f"process pool: 2 workers x {threads} thread{'s' if threads > 1 else ''}"
        numpy_loaded = pool.submit(eval, "'numpy' in __import__('sys').modules").result()
        names = executors.THREAD_VARIABLES
        env = pool.submit(eval, f"{{k: __import__('os').environ.get(k) for k in {names!r}}}").result()
        numba_threads = pool.submit(eval, "__import__('numba').get_num_threads()").result()
        own_session = pool.submit(eval, "__import__('os').getsid(0) == __import__('os').getpid()").result()
    assert not numpy_loaded, "a worker loaded NumPy before its first task: its BLAS threads were fixed too early"
    assert env == executors.thread_env(threads) and numba_threads == threads, (env, numba_threads)
    assert own_session, "a pool worker must run in a session of its own, or a terminal's Ctrl-C reaches it twice"
    assert not multiprocessing.active_children(), "the pool's workers outlived it"


def test_sae_gt_on_a_process_pool_resumes_after_its_workers_are_killed(serial, tmp_path, capsys):
    """Kill every worker while a point is mid-run: the sweep stops with the finished points kept; run again,
    it runs only the others (the one cut off resumes from its checkpoint) and ends with the serial numbers."""
    _, reference = serial
    caught = []

    def kill_workers(point, result):
        if not caught:
            caught.append(wait_for_partial_checkpoint(tmp_path))
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(BrokenExecutor):
        sweep.sae_gt(out=tmp_path, executor="process", workers=2, save_every=0.0, on_result=kill_workers, **GRID)
    assert not multiprocessing.active_children(), "killed workers must not be left behind"
    before = finished_mtimes(tmp_path)
    assert 1 <= len(before) < 4 and caught[0] not in before, (before, caught)
    capsys.readouterr()
    assert sweep.sae_gt(out=tmp_path, executor="process", workers=2, **GRID) == 0
    out = capsys.readouterr().out
    assert f"{len(before)} finished earlier, {4 - len(before)} to run" in out, out
    after = finished_mtimes(tmp_path)
    assert {k: after[k] for k in before} == before, "a finished point was run again"
    got = rows(tmp_path)
    resumed = {sweep.point_name(r): r["resumed_from"] for r in got.values()}
    assert resumed[caught[0]] and resumed[caught[0]] > 0, f"the point cut off mid-run did not resume: {resumed}"
    assert_same_numbers(got, reference)
    assert (tmp_path / "smoke" / "sweep-sae-gt" / "tradeoff.png").stat().st_size > 5_000
    assert "| 0.001 | 2x | 128 |" in (tmp_path / "smoke" / "sweep-sae-gt" / "table.md").read_text()


def test_ctrl_c_on_the_command_saves_the_running_points_and_starts_no_other(tmp_path):
    """SIGINT to `python -m tinymono sweep` alone (as `kill -INT` sends it; a terminal's Ctrl-C reaches only the
    driver too, the workers being in sessions of their own): the point in training saves its checkpoint, no
    queued point starts, the command exits 130, and its workers are gone. (The worker that has just finished
    a point may be setting up its next one, which then stops before its first step: nothing to save.)"""
    cmd = [sys.executable, "-m", "tinymono", "sweep", "sae-gt", "--scale", "smoke", "--steps", "6000", "--ratio", "1",
           "2", "3", "--out", str(tmp_path), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    t_end = time.monotonic() + 120
    while not list(points_dir(tmp_path).glob("*/result.json")) and time.monotonic() < t_end and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted at step" in out, "the point in training must save its checkpoint:\n" + out
    started = sorted(p.name for p in points_dir(tmp_path).iterdir())
    assert len(started) <= 3, f"a point queued behind the running ones started after the interrupt: {started}"
    worker = json.loads(next(points_dir(tmp_path).glob("*/result.json")).read_text())["result"]["pid"]
    time.sleep(2)
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


def test_sae_gt_on_a_dask_local_cluster_resumes_after_a_cancel_and_a_killed_worker(serial, tmp_path, capsys):
    """On dask: cancel the sweep after its first point, run it again and kill both workers mid-point (dask
    reruns their points on the restarted workers, from their checkpoints): the serial numbers, and no
    finished point run twice."""
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed "
                                                            "(pip install -e '.[dask]')")
    _, reference = serial
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, env=executors.thread_env(WORKER_THREADS)) as cluster, \
            distributed.Client(cluster) as client:
        ex = client.get_executor(pure=False)

        def cancel(point, result):
            raise Stop

        with pytest.raises(Stop):
            sweep.sae_gt(out=tmp_path, executor=ex, save_every=0.0, on_result=cancel, **GRID)
        before = finished_mtimes(tmp_path)
        assert len(before) == 1, before
        caught = []

        def kill_workers(point, result):
            if not caught:
                caught.append(wait_for_partial_checkpoint(tmp_path))
                for pid in client.run(os.getpid).values():
                    os.kill(pid, signal.SIGKILL)

        capsys.readouterr()
        assert sweep.sae_gt(out=tmp_path, executor=ex, save_every=0.0, on_result=kill_workers, **GRID) == 0
        out = capsys.readouterr().out
    assert "1 finished earlier, 3 to run" in out, out
    assert not multiprocessing.active_children(), "the LocalCluster's processes outlived it"
    after = finished_mtimes(tmp_path)
    assert {k: after[k] for k in before} == before, "a finished point was run again"
    got = rows(tmp_path)
    assert got[next(k for k in got if sweep.point_name(got[k]) == caught[0])]["resumed_from"], \
        "the point whose worker was killed must resume from its checkpoint"
    assert_same_numbers(got, reference)


def test_lesson_03_draws_the_sweep_it_finds(serial):
    out, _ = serial
    proc = subprocess.run([sys.executable, str(ROOT / "lessons" / "03_ground_truth_recovery.py"), "--scale", "smoke",
                           "--runs", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "converged sweep: 4 of 4 points finished, 1500 steps each" in proc.stdout, proc.stdout[-3000:]
    assert (out / "smoke" / "03_ground_truth_recovery" / "sweep_converged.png").stat().st_size > 5_000


def test_seeds_sweep_gives_each_seeds_serial_numbers(tmp_path):
    """`sweep seeds --seeds 0 1 --only 02 03` on the pool: the numbers of `reproduce --seed 0` and `--seed 1`
    run one after the other (lessons 01-04 reseed through lesson.seeded, so the two seeds differ)."""
    from tinymono.reproduce import reproduce

    only = ["02", "03"]
    code = subprocess.run([sys.executable, "-m", "tinymono", "sweep", "seeds", "--seeds", "0", "1", "--only", *only,
                           "--scale", "smoke", "--out", str(tmp_path / "sweep"), "--workers", "2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert code.returncode == 0, code.stdout[-3000:] + code.stderr[-3000:]
    for seed in (0, 1):
        assert reproduce(tmp_path / "serial", "smoke", only=only, seed=seed) == 0
    values = {}
    for where in ("sweep", "serial"):
        for seed, run in ((0, "smoke"), (1, "smoke-seed1")):
            for lesson in ("02_sparse_autoencoder", "03_ground_truth_recovery"):
                checks = json.loads((tmp_path / where / run / lesson / "result.json").read_text())["checks"]
                values[where, seed, lesson] = [c["value"] for c in checks]
    for key in [k for k in values if k[0] == "sweep"]:
        assert values[key] == pytest.approx(values[("serial", *key[1:])], rel=1e-6, abs=1e-9), key
    assert values["serial", 0, "03_ground_truth_recovery"] != values["serial", 1, "03_ground_truth_recovery"], \
        "seed 1 must reseed lesson 03"
    table = (tmp_path / "sweep" / "smoke" / "sweep-seeds" / "table.md").read_text()
    assert "| lesson | check | bar | seed 0 | seed 1 | spread | PASS |" in table
    assert "| 03_ground_truth_recovery | MMCS of the main SAE vs the 64 true features |" in table, table


def test_another_grid_keeps_lesson_03s_record(tmp_path):
    """Once lesson 03's grid is recorded, a smaller grid writes its record beside it, not over it."""
    assert sweep.sae_gt(out=tmp_path, scale="smoke", executor="serial") == 0
    base = tmp_path / "smoke" / "sweep-sae-gt"
    lesson_record = (base / "sweep.json").read_text()
    assert sweep.sae_gt(out=tmp_path, scale="smoke", executor="serial", l1s=[1e-3], ratios=[1.0], steps=20) == 0
    assert (base / "sweep.json").read_text() == lesson_record
    other = json.loads((base / "grid-l1-0.001_ratio-1_steps-20" / "sweep.json").read_text())
    assert (other["l1"], other["ratio"], other["steps"], len(other["points"])) == ([1e-3], [1.0], 20, 1)


def test_a_point_given_twice_is_trained_once_and_close_values_get_their_own_folders(tmp_path):
    assert sweep.sae_gt(out=tmp_path, scale="smoke", executor="serial", l1s=[1e-3, 1e-3], ratios=[1.0, 1.0],
                        steps=20) == 0
    record = json.loads(next((tmp_path / "smoke" / "sweep-sae-gt").rglob("sweep.json")).read_text())
    assert (record["l1"], record["ratio"], len(record["points"])) == ([1e-3], [1.0], 1)
    names = {sweep.point_name(dict(l1_coefficient=1e-3, ratio=r, steps=20)) for r in (1.0, 1.0000001)}
    assert len(names) == 2 and "l1=0.001,ratio=1,steps=20" in names, names  # and the usual names as they were
    with pytest.raises(ValueError, match="finite"):
        sweep.sae_gt(out=tmp_path, scale="smoke", executor="serial", l1s=[1e-3], ratios=[float("inf")], steps=20)


def test_sweep_into_a_file_says_so(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = subprocess.run([sys.executable, "-m", "tinymono", "sweep", "sae-gt", "--scale", "smoke", "--out", str(afile),
                           "--steps", "5"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "cannot write into --out" in proc.stderr and "Traceback" not in proc.stderr, \
        proc.stderr[-2000:]


def test_a_seed_whose_lesson_did_not_finish_keeps_its_other_lessons(tmp_path):
    """A killed lesson must not take the seed's finished lessons out of the table (it is run again next time)."""
    (tmp_path / "smoke-seed2" / "01_superposition").mkdir(parents=True)
    (tmp_path / "smoke-seed2" / "01_superposition" / "result.json").write_text(
        json.dumps({"seconds": 1.0, "figures": [], "checks": [{"status": "PASS", "name": "c", "value": 1, "bar": "b"}]}))
    point = dict(out=str(tmp_path), scale="smoke", seed=2, overrides={}, only=["01", "03"])
    assert list(sweep._seed_results(point, partial=True)) == ["01_superposition"]
    assert sweep._seed_results(point) is None, "not finished: the sweep must still run this seed"


def test_seeds_table_spread_and_passes():
    check = lambda v, st: {"name": "c", "bar": ">= 1", "value": v, "status": st}  # noqa: E731
    result = {s: {"stages": {"01_x": {"checks": [check(v, st)]}}}
              for s, v, st in (("0", 0.5, "FAIL"), ("3", 1.25, "PASS"))}
    table = sweep.seeds_table(dict(scale="smoke", seeds=[0, 3], set=[], executor="serial", seconds=1.0, results=result))
    assert "| 01_x | c | >= 1 | 0.5 F | 1.25 P | 0.75 | 1/2 |" in table, table
    for values in ((111.0, float("nan")), (float("nan"), 111.0)):  # the seeds do not agree, in either order
        result = {s: {"stages": {"01_x": {"checks": [check(v, "FAIL")]}}} for s, v in zip(("0", "1"), values)}
        table = sweep.seeds_table(dict(scale="smoke", seeds=[0, 1], set=[], executor="serial", seconds=1.0,
                                       results=result))
        assert [ln.split(" | ")[-2] for ln in table.splitlines() if ln.startswith("| 01_x")] == ["nan"], table


def test_only_takes_a_number_as_a_lessons_number_and_text_as_part_of_its_name():
    from tinymono.reproduce import selects

    assert selects("1", "01_superposition") and selects("01", "01_superposition")
    assert not selects("1", "10_universality") and selects("10", "10_universality")
    assert selects("sparse", "02_sparse_autoencoder") and selects("06_sae", "06_sae_on_transformer")
    assert selects("7", "07_interpreting_features") and not selects("sae", "02_sparse_autoencoder")


def test_seeds_table_joins_a_check_whose_name_holds_its_runs_numbers():
    def check(name, bar, v, st):
        return {"name": name, "bar": bar, "value": v, "status": st}

    result = {"0": {"stages": {"07_x": {"checks": [
        check("dna: group of 0 features (min 0.00)", ">= 0.8", 0.0, "FAIL"),
        check("topk at 1.1x: MMCS", ">= 0.99", 0.995, "PASS"), check("topk at 2x: MMCS", ">= 0.99", 0.9988, "PASS")]}}},
        "1": {"stages": {"07_x": {"checks": [
            check("dna: group of 2 features (min 0.93)", ">= 0.8", 0.958, "PASS"),
            check("topk at 1.1x: MMCS", ">= 0.99", 0.99, "PASS"), check("topk at 2x: MMCS", ">= 0.99", 0.9, "FAIL")]}}}}
    result["0"]["stages"]["07_x"]["checks"].append(check("best variant (gated) minus the paper's", "> 0", 0.01, "PASS"))
    result["1"]["stages"]["07_x"]["checks"].append(check("best variant (topk) minus the paper's", "> 0", 0.02, "PASS"))
    table = sweep.seeds_table(dict(scale="smoke", seeds=[0, 1], set=[], executor="serial", seconds=1.0, results=result))
    rows = [line for line in table.splitlines() if line.startswith("| 07_x")]
    assert rows == ["| 07_x | dna: group of 0 features (min 0.00) | >= 0.8 | 0 F | 0.958 P | 0.958 | 1/2 |",
                    "| 07_x | topk at 1.1x: MMCS | >= 0.99 | 0.995 P | 0.99 P | 0.005 | 2/2 |",
                    "| 07_x | topk at 2x: MMCS | >= 0.99 | 0.9988 P | 0.9 F | 0.0988 | 1/2 |",
                    "| 07_x | best variant (gated) minus the paper's | > 0 | 0.01 P | 0.02 P | 0.01 | 2/2 |"], table


def test_lesson_seeds_are_their_own_at_seed_0():
    assert [derived_seed(k, 0) for k in (0, 1, 123)] == [0, 1, 123]
    assert len({derived_seed(k, s) for k in (0, 1, 999) for s in (0, 1, 2)}) == 9
    with pytest.raises(ValueError):
        derived_seed(1000, 1)


SCRIPT_WITHOUT_GUARD = '''
import sys
from pathlib import Path
from tinymono import executors
log = Path(sys.argv[1])
with log.open("a") as fh:
    fh.write("script ran\\n")  # a lesson's top level: it must run once, not again in each worker
with executors.open_executor("process", workers=2) as (pool, _):
    futures = executors.submit_all(pool, eval, ["6 * 7", "2 + 2"])
    print([f.result() for f in futures])
'''


def test_a_script_without_a_main_guard_can_use_a_process_pool(tmp_path):
    """Lesson 09 is a script with no `if __name__ == "__main__"`; spawned workers re-run the parent's main
    script unless submit_all hides it while they start. The script's top level must run exactly once."""
    script, log = tmp_path / "lesson_like.py", tmp_path / "log"
    script.write_text(SCRIPT_WITHOUT_GUARD)
    out = subprocess.run([sys.executable, str(script), str(log)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[42, 4]", out.stdout
    assert log.read_text() == "script ran\n", f"the script's top level ran {log.read_text().count('ran')} times"


SCRIPT_POOL_ACROSS_CELLS = """
import sys
from contextlib import ExitStack
from tinymono import executors, lesson

sys.excepthook = lesson._interrupt_hook(sys.excepthook, "demo", "nowhere")
stack = ExitStack()  # lesson 09 enters its pool in one cell and leaves it in a later one
pool, _ = stack.enter_context(executors.open_executor("process", workers=1))
marks = sys.argv[1]
jobs = [f"(open({marks!r} + '{i}', 'w').close(), __import__('time').sleep(4))" for i in range(4)]
futures = executors.submit_all(pool, eval, jobs)
print("submitted", flush=True)
futures[-1].result()
stack.close()
"""


def test_ctrl_c_stops_a_pool_that_outlives_its_cell(tmp_path):
    """An interrupt that reaches the top of a lesson past its open pool (no `with` around the cells that use
    it) stops the pool: the queued points never start, where the interpreter's exit would otherwise run
    every one of them before it ends."""
    script = tmp_path / "lesson_like.py"
    script.write_text(SCRIPT_POOL_ACROSS_CELLS)
    marks = str(tmp_path / "started-")
    proc = subprocess.Popen([sys.executable, str(script), marks], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    t_end = time.monotonic() + 60
    while not list(tmp_path.glob("started-*")) and time.monotonic() < t_end:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    started = sorted(p.name for p in tmp_path.glob("started-*"))
    assert started == ["started-0"], f"queued points ran after the interrupt: {started}\n{err[-2000:]}"
    assert "interrupted" in err and "Traceback" not in err, err[-2000:]


class _Pool:
    """A pool whose first shutdown is cut short by an interrupt arriving `after` seconds into it."""

    def __init__(self, after):
        self.after, self.calls = after, 0

    def shutdown(self, wait=True, cancel_futures=False):
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.after)
            raise KeyboardInterrupt


def test_a_stop_delivered_twice_at_once_reaches_the_workers_once(monkeypatch):
    """`timeout -s INT` signals the driver and then its process group: the same stop, twice, 0.4 ms apart.
    Passed on twice, each worker took the second as "Ctrl-C again" and stopped without saving. A second
    Ctrl-C that comes later is still passed on (the points stop at once)."""
    passed_on = []
    monkeypatch.setattr(executors, "interrupt_workers", lambda: passed_on.append(time.monotonic()))
    monkeypatch.setattr(executors, "REPEAT_WINDOW", 60.0)  # "at once", even on a machine that stalls
    executors._stop_after_interrupt(_Pool(after=0.0))
    assert len(passed_on) == 1
    passed_on.clear()
    monkeypatch.setattr(executors, "REPEAT_WINDOW", 0.05)
    executors._stop_after_interrupt(_Pool(after=0.15))
    assert len(passed_on) == 2


def test_a_lesson_stops_on_sigterm_as_on_ctrl_c(tmp_path):
    """`kill`, `timeout` or reproduce passing on its own SIGTERM: lesson 09's driver, with its SAEs training in a
    pool and no training loop of its own, died at once and its workers lost their unsaved steps."""
    # 'ready' inside the try: the test's SIGTERM may be handled the moment print returns
    code = ("import sys, time\nfrom tinymono.lesson import Lesson\n"
            "Lesson('x', argv=['--scale', 'smoke', '--runs', sys.argv[1]])\n"
            "try:\n    print('ready', flush=True)\n    time.sleep(120)\n"
            "except KeyboardInterrupt:\n    print('stopped as by Ctrl-C', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    while proc.stdout.readline().strip() != "ready":  # after the lesson's own first line
        assert proc.poll() is None, "the lesson ended before it was ready"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert "stopped as by Ctrl-C" in out and proc.returncode == 0, (out, proc.returncode)


def test_two_reproduce_runs_in_one_run_folder_are_refused(tmp_path):
    """Two runs on one --out trained every stage twice, interleaved their logs, and one crashed on the other's
    half-built corpus folder: the second must be refused while the first holds the folder."""
    import fcntl

    from tinymono import reproduce

    (tmp_path / "smoke").mkdir()
    with open(tmp_path / "smoke" / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the first run
        with pytest.raises(ValueError, match="another `reproduce` is running"):
            reproduce.reproduce(tmp_path, "smoke", only=["01"])
    assert not (tmp_path / "smoke" / "01_superposition").exists(), "the refused run must write nothing"
