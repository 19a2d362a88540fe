"""A stage's progress reaches the learner whether or not reproduce's stdout is a terminal, and the log."""
import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np

from tinymono import progress
from tinymono.reproduce import write_report

ROOT = Path(__file__).resolve().parents[1]

# A lesson whose one loop reports through progress.bar, as train() does, with a record every chunk.
FAKE_LESSON = '''
import time
import numpy as np
from tinymono import progress
print("lesson fake starts", flush=True)
bar = progress.bar(total=40, desc="sae", unit="step")
for i in range(8):
    time.sleep(0.05)
    bar.set_postfix({"loss": f"{0.5 / (i + 1):.4g}"})
    bar.update(np.int64(5))  # the loops count with NumPy integers
    bar._emit()
bar.close()
print("PASS  a check", flush=True)
'''


def test_records_round_trip_and_describe_rate_and_eta():
    out = io.StringIO()
    bar = progress.Records(total=100, desc="transformer", unit="step", initial=20, out=out, every=3600)
    bar.set_postfix({"loss": "1.25"})
    bar.update(np.int64(30))  # within `every`: no record yet
    bar.close()
    records = [progress.parse(line) for line in out.getvalue().splitlines()]
    assert [r["n"] for r in records] == [20, 50] and records[-1]["done"] and records[-1]["postfix"] == {"loss": "1.25"}
    assert progress.parse("PASS  not a record") is None and progress.parse(progress.PREFIX + "{broken") is None
    line = progress.describe({"desc": "sae", "n": 1000, "total": 4000, "initial": 0, "unit": "step",
                              "elapsed": 20.0, "postfix": {"loss": "0.0123"}, "done": False})
    assert line == "sae: 1,000/4,000 step (25%), 50 step/s, ETA 60 s, loss 0.0123", line
    reused = progress.describe({"desc": "sae", "n": 40, "total": 40, "initial": 40, "elapsed": 0.0, "done": True})
    assert "finished earlier" in reused
    assert records[-1]["stopped"], "a loop closed at 50 of 100 (interrupted, or failed) must not read as done"
    line = progress.describe(records[-1])
    assert "stopped after" in line and "done in" not in line, line


def test_records_from_two_threads_stay_one_per_line():
    """Lesson 09 counts finished SAEs on a pool's callback thread while its main thread closes the bar: each
    record must reach the parent whole (print writes the text and the newline apart, and two threads' writes
    interleaved into one unparseable line, so the parent lost the closing record)."""
    import threading
    import time

    class SlowOut(io.StringIO):  # a pipe whose writes let another thread in between
        def write(self, text):
            time.sleep(0.0005)
            return super().write(text)

    out = SlowOut()
    bar = progress.Records(total=400, desc="pool", out=out, every=0)
    workers = [threading.Thread(target=lambda: [bar.update(1) for _ in range(100)]) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    bar.close()
    lines = out.getvalue().splitlines()
    assert all(progress.parse(line) is not None for line in lines), [ln for ln in lines if progress.parse(ln) is None][:2]
    assert len(lines) == 1 + 400 + 1 and progress.parse(lines[-1])["done"]


def test_display_without_a_terminal_prints_lines_now_and_then():
    out = io.StringIO()
    shown = progress.Display("[6/8]", live=False, every=3600, first=3600, out=out)
    for n in (0, 10, 20):
        shown.feed({"desc": "sae", "n": n, "total": 40, "initial": 0, "unit": "step", "elapsed": n / 10, "done": False})
    assert out.getvalue() == "", "no line before `first` seconds, so quick loops print one line, not a stream"
    shown.feed({"desc": "sae", "n": 40, "total": 40, "initial": 0, "unit": "step", "elapsed": 4.0, "done": True})
    assert out.getvalue() == "  [6/8] sae: 40/40 step (100%), 10 step/s, done in 4 s\n"


def test_display_on_a_terminal_draws_a_bar_with_the_metrics():
    out = io.StringIO()
    shown = progress.Display("[6/8]", live=True, out=out)
    shown.feed({"desc": "sae", "n": 10, "total": 40, "initial": 0, "unit": "step", "postfix": {"loss": "0.5"}})
    shown.feed({"desc": "sae", "n": 40, "total": 40, "initial": 0, "unit": "step", "postfix": {"loss": "0.1"},
                "done": True})
    text = out.getvalue()
    assert "[6/8] sae" in text and "40/40" in text and "loss=0.1" in text and "\r" in text, repr(text)


def _run_fake_stage(tmp_path, stdout):
    (tmp_path / "99_fake.py").write_text(FAKE_LESSON)
    driver = ("from pathlib import Path; from tinymono.reproduce import run_stage; "
              f"code, _, tail = run_stage(Path({str(tmp_path / '99_fake.py')!r}), 'smoke', Path({str(tmp_path)!r}), "
              f"Path({str(tmp_path / 'log')!r})); print('exit', code)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    return subprocess.Popen([sys.executable, "-c", driver], stdout=stdout, stderr=subprocess.STDOUT, env=env)


def test_a_stage_shows_progress_lines_when_stdout_is_a_pipe_and_logs_everything(tmp_path):
    proc = _run_fake_stage(tmp_path, subprocess.PIPE)
    out = proc.communicate(timeout=60)[0].decode()
    assert "exit 0" in out, out
    assert "sae: 40/40 step (100%)" in out and "done in" in out, out
    assert "@progress" not in out, "records must be drawn, not shown raw"
    log = (tmp_path / "log").read_text()
    assert "lesson fake starts" in log and "PASS  a check" in log
    assert "progress: sae: 40/40 step (100%)" in log and "loss 0.0625" in log, log


def test_a_stage_shows_a_live_bar_when_stdout_is_a_terminal(tmp_path):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    proc = _run_fake_stage(tmp_path, follower)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert "exit 0" in text, text
    assert "\r" in text and "40/40" in text and "step/s" in text and "loss=0.0625" in text, repr(text[-1500:])
    assert "  | PASS  a check" in text, "the lesson's own lines must still be shown beside the bar"


def test_report_points_a_failing_run_at_the_record_of_failures(tmp_path):
    lesson = tmp_path / "lessons" / "07_x.py"
    texts = {}
    for scale, status in (("default", "FAIL"), ("default", "PASS"), ("smoke", "FAIL")):
        (tmp_path / scale / "07_x").mkdir(parents=True, exist_ok=True)
        (tmp_path / scale / "07_x" / "result.json").write_text(
            '{"seconds": 1.0, "figures": [], "checks": [{"status": "%s", "name": "c", "value": 1.0, "bar": "b"}]}' % status)
        texts[scale, status] = write_report(tmp_path, scale, [(lesson, "ok", 1.0, None)]).read_text().splitlines()
    pointer = [line for line in texts["default", "FAIL"] if "Where the reproduction stands" in line]
    assert len(pointer) == 1 and texts["default", "FAIL"].index(pointer[0]) == 4, texts["default", "FAIL"][:6]
    assert not any("Where the reproduction stands" in line for line in texts["default", "PASS"] + texts["smoke", "FAIL"])


def test_report_tables_line_up_and_the_tally_comes_first(tmp_path):
    lesson = tmp_path / "lessons" / "01_long.py"
    checks = [{"status": "PASS", "name": "a short check", "value": 1.0, "bar": "b"},
              {"status": "SKIP", "name": "a check with a much, much longer name than the first " * 2, "value": 0.25,
               "bar": "<= 0.5"},
              {"status": "FAIL", "name": "pipe | inside", "value": "other", "bar": "x"}]
    (tmp_path / "smoke" / "01_long").mkdir(parents=True)
    (tmp_path / "smoke" / "01_long" / "result.json").write_text(
        '{"seconds": 3.0, "figures": [], "checks": %s}' % __import__("json").dumps(checks))
    text = write_report(tmp_path, "smoke", [(lesson, "ok", 3.0, None)], wall_seconds=65.0).read_text()
    lines = text.splitlines()
    assert lines[2] == "**1 PASS, 1 FAIL, 1 SKIP** over 3 checks in 1 of 1 stages.", lines[:4]
    for field in ("| date", "| commit", "| Python", "| NumPy", "| numba", "| scale", "| settings",
                  "| wall time of this command | 65 s"):
        assert any(line.startswith(field) for line in lines), f"provenance lacks {field!r}"
    tables, current = [], []
    for line in lines + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) == 4  # provenance, stages, the lesson's checks, the verification table
    for table in tables:
        assert len({len(line) for line in table}) == 1, "columns must line up:\n" + "\n".join(table)


def test_the_report_says_when_the_code_changed_during_the_run(monkeypatch):
    """The commit is read when reproduce starts and again when it writes the report; a checkout that moved
    in between (a merge while a long run was going) must show, since the stages may then mix two versions."""
    from tinymono import reproduce
    monkeypatch.setattr(reproduce, "source_commit", lambda: "bbbbbbbbbbbb")
    rows = dict(reproduce.provenance("smoke", 0, {}, 1.0, commit_at_start="aaaaaaaaaaaa"))
    assert rows["commit"] == "aaaaaaaaaaaa at the start, bbbbbbbbbbbb at the end: the code changed during the run", rows
    rows = dict(reproduce.provenance("smoke", 0, {}, 1.0, commit_at_start="bbbbbbbbbbbb"))
    assert rows["commit"] == "bbbbbbbbbbbb", "an unchanged checkout names its commit once"


def test_the_report_says_when_other_work_shared_the_machine(monkeypatch):
    """Stage times read against README's are only comparable on a quiet machine: the provenance gives the load."""
    from tinymono import reproduce
    monkeypatch.setattr(reproduce.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(reproduce.os, "getloadavg", lambda: (4.9, 5.2, 3.0))
    row = dict(reproduce.provenance("smoke", 0, {}, 1.0))["load average at the end"]
    assert row.startswith("4.90, 5.20, 3.00") and "other work shared the machine" in row, row
    monkeypatch.setattr(reproduce.os, "getloadavg", lambda: (1.9, 2.0, 1.2))
    assert dict(reproduce.provenance("smoke", 0, {}, 1.0))["load average at the end"] == "1.90, 2.00, 1.20 over 1, 5, 15 min"


def test_the_report_names_the_stages_made_at_another_commit(tmp_path, monkeypatch):
    """A stage reused from an earlier run was made by the code of then: the report must not credit its numbers
    to the checkout of now. Each lesson records its commit in result.json."""
    from tinymono import reproduce
    monkeypatch.setattr(reproduce, "source_commit", lambda: "bbbbbbbbbbbb")
    stages = []
    for name, commit in (("01_now", "bbbbbbbbbbbb"), ("02_then", "aaaaaaaaaaaa"), ("03_older", None)):
        (tmp_path / "smoke" / name).mkdir(parents=True)
        record = {"seconds": 1.0, "figures": [], "checks": [], **({"commit": commit} if commit else {})}
        (tmp_path / "smoke" / name / "result.json").write_text(__import__("json").dumps(record))
        stages.append((tmp_path / "lessons" / f"{name}.py", "reused", 1.0, None))
    line = next(x for x in write_report(tmp_path, "smoke", stages).read_text().splitlines() if x.startswith("| commit"))
    assert "bbbbbbbbbbbb; made at other commits: 02_then (aaaaaaaaaaaa), 03_older (not recorded)" in line, line
    assert "01_now" not in line


def test_a_lesson_records_the_commit_that_made_it(tmp_path):
    from tinymono.lesson import Lesson, source_commit
    lesson = Lesson("99_commit", ["--scale", "smoke", "--runs", str(tmp_path)])
    lesson.check("a check", 1.0, True, "any", scale_free=True)
    lesson.finish()  # every check passed: no SystemExit
    record = __import__("json").loads((tmp_path / "smoke" / "99_commit" / "result.json").read_text())
    assert record["commit"] == source_commit() and record["commit"]
