"""What a lesson records and how it ends (tinymono/lesson.py): its checks' statuses at each scale, its exit code,
result.json, its figures and its seeds."""
import json

import pytest

from tinymono.lesson import Lesson, derived_seed


def test_no_two_lesson_seeds_meet_at_any_run_seed():
    """derived_seed promises that no two (own seed, --seed) pairs give one seed: lessons' own seeds go up to 999."""
    seeds = [derived_seed(k, s) for s in range(4) for k in range(1000)]
    assert len(set(seeds)) == len(seeds)


@pytest.mark.parametrize("scale", ["default", "full"])
def test_checks_are_asserted_at_every_scale_but_smoke(tmp_path, scale):
    lesson = Lesson("99_x", ["--scale", scale, "--runs", str(tmp_path)])
    lesson.check("needs trained sizes", 0.5, False, ">= 1")
    lesson.check("needs trained sizes too", 2.0, True, ">= 1")
    assert [r[0] for r in lesson.results] == ["FAIL", "PASS"], f"at {scale} scale a check must PASS or FAIL, never SKIP"
    smoke = Lesson("99_y", ["--scale", "smoke", "--runs", str(tmp_path)])
    smoke.check("needs trained sizes", 0.5, False, ">= 1")
    smoke.check("scale free", 0.5, False, ">= 1", scale_free=True)
    assert [r[0] for r in smoke.results] == ["SKIP", "FAIL"]


def test_a_lesson_with_a_failed_check_exits_1_and_records_its_run(tmp_path):
    """finish() writes result.json (with the run's seed) and then exits 1: reproduce reads the exit code."""
    lesson = Lesson("99_fail", ["--scale", "smoke", "--seed", "2", "--runs", str(tmp_path)])
    lesson.check("a check", 0.5, False, ">= 1", scale_free=True)
    with pytest.raises(SystemExit) as e:
        lesson.finish()
    assert e.value.code == 1, "a failed check must make the lesson exit non-zero"
    record = json.loads((tmp_path / "smoke-seed2" / "99_fail" / "result.json").read_text())
    assert (record["seed"], record["scale"], [c["status"] for c in record["checks"]]) == (2, "smoke", ["FAIL"])


def test_a_figure_saved_twice_is_listed_once(tmp_path):
    """A cell run again saves its figure again: the report must embed it once, with its latest caption."""
    import matplotlib.pyplot as plt

    lesson = Lesson("99_fig", ["--scale", "smoke", "--runs", str(tmp_path)])
    for caption in ("first", "second"):
        fig, _ = plt.subplots()
        lesson.savefig(fig, "a.png", caption)
    assert lesson.finish()
    record = json.loads((tmp_path / "smoke" / "99_fig" / "result.json").read_text())
    assert record["figures"] == [{"file": "a.png", "caption": "second"}]


def test_a_lesson_that_reads_no_settings_says_so_under_set(tmp_path, capsys):
    """Lessons 01-03 read none of pipeline.SIZES: under --set their run folder is new, their numbers are not."""
    argv = ["--scale", "smoke", "--runs", str(tmp_path), "--set", "sae.d_sae=64"]
    Lesson("01_x", argv, reads_settings=False)
    assert "reads none of pipeline.SIZES' settings" in capsys.readouterr().out
    Lesson("06_x", argv)
    assert "reads none" not in capsys.readouterr().out


def test_sigterm_stops_a_lesson_whose_ctrl_c_is_ignored(monkeypatch):
    """A lesson started in the background of a shell ignores SIGINT: a SIGTERM (`kill`) must stop it all the
    same, not be ignored with it (a notebook kernel, which ignores SIGINT between cells, never installs this)."""
    import signal

    from tinymono.lesson import _as_ctrl_c

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt):
            _as_ctrl_c(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGINT, previous)
    with pytest.raises(KeyboardInterrupt):
        _as_ctrl_c(signal.SIGTERM, None)  # the default SIGINT handler: as a Ctrl-C
