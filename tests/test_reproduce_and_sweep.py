"""`reproduce` and `sweep` on lessons of a few lines and on hand-made records: --force, the exit codes, reused
results and points, the report's and the sweeps' tables. From a mutation review of the orchestration
modules: each test kills a small bug the other tests let live."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tinymono import reproduce, sweep
from tinymono.reproduce import selects, write_report
from test_files_hardening import OK_LESSON

ROOT = Path(__file__).resolve().parents[1]


def fake_lessons(tmp_path, monkeypatch, **scripts):
    """A lessons folder holding `scripts` ({stem: source}), run by reproduce in place of the real lessons."""
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    for stem, source in scripts.items():
        (lessons / f"{stem}.py").write_text(source)
    monkeypatch.setattr(reproduce, "LESSONS_DIR", lessons)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def test_force_runs_a_finished_stage_again(tmp_path, monkeypatch, capsys):
    fake_lessons(tmp_path, monkeypatch, **{"01_ok": OK_LESSON})
    assert reproduce.reproduce(tmp_path / "runs", "smoke") == 0
    capsys.readouterr()
    assert reproduce.reproduce(tmp_path / "runs", "smoke") == 0
    assert "finished earlier, reused" in capsys.readouterr().out
    assert reproduce.reproduce(tmp_path / "runs", "smoke", force=True) == 0
    printed = capsys.readouterr().out
    assert "01_ok at scale smoke" in printed and "finished earlier" not in printed, \
        "--force must run the stage again:\n" + printed


def test_a_stage_that_exits_non_zero_after_its_checks_fails_the_command(tmp_path, monkeypatch):
    """A lesson that wrote result.json with every check passed and then crashed (its exit code 3) did not finish
    well: the command must not exit 0."""
    crash = OK_LESSON.replace("01_ok", "01_crash") + "raise SystemExit(3)\n"
    fake_lessons(tmp_path, monkeypatch, **{"01_crash": crash})
    assert reproduce.reproduce(tmp_path / "runs", "smoke") == 1
    report = (tmp_path / "runs" / "smoke" / "report.md").read_text()
    assert re.search(r"^\| 01_crash +\| failed \(exit 3\)", report, re.M), report


def test_a_result_whose_seconds_are_not_a_number_is_damaged(tmp_path, monkeypatch, capsys):
    """A hand-edited result.json ("seconds": "12") is a damaged result: the stage runs again, and the report is
    written (its times formatted as numbers), not a TypeError."""
    fake_lessons(tmp_path, monkeypatch, **{"01_ok": OK_LESSON})
    assert reproduce.reproduce(tmp_path / "runs", "smoke") == 0
    result = tmp_path / "runs" / "smoke" / "01_ok" / "result.json"
    result.write_text(json.dumps({**json.loads(result.read_text()), "seconds": "12"}))
    assert reproduce.reproduce(tmp_path / "runs", "smoke") == 0
    assert "01_ok at scale smoke" in capsys.readouterr().out, "the damaged stage must run again"
    assert isinstance(json.loads(result.read_text())["seconds"], float)


def stage_row(report, stem):
    """{column: cell} of the stages table's row of `stem` in report.md."""
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith("| stage "))
    row = next(line for line in lines if line.startswith(f"| {stem} "))
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split(" | ")]  # noqa: E731
    return dict(zip(cells(header), cells(row)))


def test_the_stage_table_counts_each_status_in_its_own_column(tmp_path):
    checks = [{"status": s, "name": f"c{i}", "value": 1.0, "bar": "b"}
              for i, s in enumerate(["PASS", "PASS", "PASS", "FAIL", "SKIP", "SKIP"])]
    (tmp_path / "smoke" / "01_x").mkdir(parents=True)
    (tmp_path / "smoke" / "01_x" / "result.json").write_text(json.dumps({"seconds": 1.0, "figures": [],
                                                                         "checks": checks}))
    report = write_report(tmp_path, "smoke", [(tmp_path / "lessons" / "01_x.py", "ok", 1.0, None)]).read_text()
    row = stage_row(report, "01_x")
    assert (row["PASS"], row["FAIL"], row["SKIP"]) == ("3", "1", "2"), row


def test_the_report_counts_only_the_stages_that_finished(tmp_path):
    (tmp_path / "smoke" / "01_x").mkdir(parents=True)
    (tmp_path / "smoke" / "01_x" / "result.json").write_text(json.dumps({"seconds": 1.0, "figures": [], "checks": [
        {"status": "PASS", "name": "c", "value": 1.0, "bar": "b"}]}))
    stages = [(tmp_path / "lessons" / "01_x.py", "ok", 1.0, None),
              (tmp_path / "lessons" / "02_y.py", "failed (exit 1)", 1.0, "Error: boom")]
    lines = write_report(tmp_path, "smoke", stages).read_text().splitlines()
    assert lines[2] == "**1 PASS, 0 FAIL, 0 SKIP** over 1 checks in 1 of 2 stages.", lines[2]


def test_a_pipe_in_a_check_stays_inside_its_cell(tmp_path):
    """A check named with a '|' must not split its row of a Markdown table into more columns."""
    (tmp_path / "smoke" / "01_x").mkdir(parents=True)
    (tmp_path / "smoke" / "01_x" / "result.json").write_text(json.dumps({"seconds": 1.0, "figures": [], "checks": [
        {"status": "PASS", "name": "|a - b| small", "value": "x|y", "bar": "<= 1"}]}))
    report = write_report(tmp_path, "smoke", [(tmp_path / "lessons" / "01_x.py", "ok", 1.0, None)]).read_text()
    row = next(line for line in report.splitlines() if line.startswith("| 01_x ") and "small" in line)
    header = next(line for line in report.splitlines() if line.startswith("| lesson "))
    unescaped = lambda line: len(re.findall(r"(?<!\\)\|", line))  # noqa: E731
    assert unescaped(row) == unescaped(header), f"the row has more columns than its header:\n{header}\n{row}"


def test_only_reads_a_number_with_leading_zeros_as_that_number():
    assert selects("010", "10_universality") and selects("007", "07_interpreting_features")
    assert not selects("010", "01_superposition")


@pytest.mark.parametrize("kw", [dict(ratios=[0.0]), dict(ratios=[-1.0]), dict(l1s=[-1e-3]), dict(steps=0)])
def test_sae_gt_refuses_an_empty_dictionary_or_no_steps_before_training(tmp_path, kw):
    """A ratio of 0 is a dictionary of no latents: refused with the other bad values, before any point runs."""
    args = {**dict(l1s=[1e-3], ratios=[1.0], steps=20), **kw}
    with pytest.raises(ValueError, match="need steps >= 1, finite L1 >= 0 and finite ratios > 0"):
        sweep.sae_gt(out=tmp_path, scale="smoke", executor="serial", **args)
    assert not (tmp_path / "smoke" / "sweep-sae-gt" / "points").exists(), "nothing may run"


def grid_record(scale, points):
    rows = [dict(l1_coefficient=l1, ratio=ratio, mmcs=mmcs, d_sae=int(ratio * 64), recovered=0.9, one_to_one=0.9,
                 dead=0.0, l0=3.0, explained_variance=0.9, seconds=1.0) for l1, ratio, mmcs in points]
    return dict(scale=scale, seed=0, steps=100, executor="serial", seconds=1.0, points=rows)


def test_sae_gt_table_names_the_best_l1_of_each_size_and_passes_at_the_bar():
    """The best L1 of a dictionary size is the one with the highest MMCS, and an MMCS equal to the bar passes it
    (the bar reads 'MMCS >= 0.95')."""
    table = sweep.sae_gt_table(grid_record("default", [(1e-4, 1.0, 0.90), (3e-4, 1.0, sweep.MMCS_BAR), (6e-4, 1.0, 0.80),
                                                       (3e-4, 2.0, 0.70), (6e-4, 2.0, 0.60)]))
    best = [line for line in table.splitlines() if line.startswith("- ")]
    assert best == [f"- 1x: l1 0.0003, MMCS {sweep.MMCS_BAR:.4f} (PASS), dead 0.0%",
                    "- 2x: l1 0.0003, MMCS 0.7000 (FAIL), dead 0.0%"], table


def test_seeds_table_counts_only_passes():
    """A check that SKIPs in a seed (smoke sizes) did not pass there."""
    check = lambda st: {"name": "c", "bar": ">= 1", "value": 1.0, "status": st}  # noqa: E731
    results = {s: {"stages": {"01_x": {"checks": [check(st)]}}} for s, st in (("0", "PASS"), ("1", "SKIP"), ("2", "FAIL"))}
    table = sweep.seeds_table(dict(scale="smoke", seeds=[0, 1, 2], set=[], executor="serial", seconds=1.0,
                                   results=results))
    row = next(line for line in table.splitlines() if line.startswith("| 01_x"))
    assert row.endswith("| 1/3 |"), row


def test_vs_larger_scores_each_dictionary_against_the_next_larger(tmp_path, monkeypatch):
    """The small dictionary's rows are all among the large one's: its MMCS against the larger is 1 (the reverse,
    the larger against the smaller, is not)."""
    from tinymono import checkpoint

    large = np.eye(4)
    decoders = {1.0: large[:2], 2.0: large}
    rows = [dict(l1_coefficient=1e-3, ratio=r, steps=10) for r in (2.0, 1.0)]
    monkeypatch.setattr(checkpoint, "load", lambda path: ({"params.W_dec": decoders[
        next(r["ratio"] for r in rows if sweep.point_name(r) == Path(path).parent.name)]}, {}))
    assert sweep.vs_larger(tmp_path, rows) == {(1e-3, 1.0): pytest.approx(1.0)}


def test_a_point_recorded_for_another_run_is_not_reused(tmp_path):
    """A point's folder is named by its L1, ratio and steps; a result.json there that records another scale or
    seed (a folder copied from another run) must be run again, not read as this point's result."""
    point = dict(scale="smoke", seed=1, l1_coefficient=1e-3, ratio=1.0, steps=20)
    sweep._write_point(tmp_path, {**point, "seed": 0}, {"mmcs": 0.5})
    assert sweep._read_point(tmp_path, point) is None
    sweep._write_point(tmp_path, point, {"mmcs": 0.7})
    assert sweep._read_point(tmp_path, point) == {"mmcs": 0.7}


FAILS_ANYWHERE = '''
from tinymono.lesson import Lesson
lesson = Lesson("01_fails")
lesson.check("one", 0.5, False, ">= 1", scale_free=True)
lesson.finish()
'''
PASSES_ANYWHERE = '''
from tinymono.lesson import Lesson
lesson = Lesson("01_ok")
lesson.check("one", 1.0, True, ">= 1", scale_free=True)
lesson.finish()
'''




def test_seeds_sweep_exits_1_when_a_check_failed(tmp_path, monkeypatch):
    fake_lessons(tmp_path, monkeypatch, **{"01_fails": FAILS_ANYWHERE})
    assert sweep.seeds(out=tmp_path / "runs", scale="smoke", seed_list=[0], executor="serial") == 1
    table = (tmp_path / "runs" / "smoke" / "sweep-seeds" / "table.md").read_text()
    assert "| 01_fails | one | >= 1 | 0.5 F | - | 0/1 |" in table, table


def test_a_seed_given_twice_is_run_once(tmp_path, monkeypatch):
    fake_lessons(tmp_path, monkeypatch, **{"01_ok": PASSES_ANYWHERE})
    assert sweep.seeds(out=tmp_path / "runs", scale="smoke", seed_list=[0, 0], executor="serial") == 0
    record = json.loads((tmp_path / "runs" / "smoke" / "sweep-seeds" / "sweep.json").read_text())
    table = (tmp_path / "runs" / "smoke" / "sweep-seeds" / "table.md").read_text()
    assert record["seeds"] == [0] and "| 01_ok | one | >= 1 | 1 P | - | 1/1 |" in table, table


ANY_NUMBER = '''
from tinymono.lesson import Lesson
lesson = Lesson("{n}")
lesson.check("one", 1.0, True, ">= 1", scale_free=True)
lesson.finish()
'''


def test_seeds_only_takes_a_number_as_reproduce_does(tmp_path, monkeypatch):
    """`sweep seeds --only 1`: reproduce runs lesson 01 alone, but seeds expects lesson 10 too, so every seed
    'did not finish' and the sweep exits 1 with every check passed."""
    (tmp_path / "lessons").mkdir()
    for n in ("01_first", "10_tenth"):
        (tmp_path / "lessons" / f"{n}.py").write_text(ANY_NUMBER.format(n=n))
    monkeypatch.setattr(reproduce, "LESSONS_DIR", tmp_path / "lessons")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    assert sweep.seeds(out=tmp_path / "runs", scale="smoke", seed_list=[0], only=["1"], executor="serial") == 0


def test_a_run_folder_on_a_file_system_without_locks_still_runs(tmp_path, monkeypatch, capsys):
    """Some NFS and FUSE mounts answer flock with ENOLCK or EOPNOTSUPP: the run goes on, unlocked, and says so."""
    import errno
    import fcntl

    def no_locks(fh, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    reproduce._lock(tmp_path).close()
    assert "cannot be locked here" in capsys.readouterr().err


def test_a_run_with_a_failed_check_says_where_failures_are_explained(tmp_path, monkeypatch, capsys):
    """Beside the tally, a FAIL outside smoke scale points at README's account of the recorded failures; a run
    that failed nothing, or a smoke run (where a FAIL is a bug, not a missed bar), does not."""
    failing = OK_LESSON.replace("01_ok", "01_fail").replace('lesson.check("one", 1.0, True, ">= 1"',
                                                            'lesson.check("one", 0.5, False, ">= 1", scale_free=True')
    fake_lessons(tmp_path, monkeypatch, **{"01_fail": failing})
    assert reproduce.reproduce(tmp_path / "runs", "default") == 1
    assert reproduce.FAILURES_EXPLAINED in capsys.readouterr().out
    assert reproduce.reproduce(tmp_path / "runs", "smoke") == 1
    assert reproduce.FAILURES_EXPLAINED not in capsys.readouterr().out
