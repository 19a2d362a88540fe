"""Lessons 04 and 05 run end to end: at smoke scale in the default suite (every figure written, every check
line printed as SKIP), and at default scale under the slow marker (every check passes; lesson 05 trains
the full model, about ten minutes on 2 idle cores)."""
import subprocess
import sys
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
CASES = {
    "04_transformer_by_hand": (["causal_attention.png", "memorise_one_batch.png"], 9),
    "05_train_transformer": (["loss_curve.png", "bits_per_label.png"], 6),
}


def run_lesson(name, scale, runs, timeout):
    r = subprocess.run([sys.executable, str(LESSONS / f"{name}.py"), "--scale", scale, "--runs", str(runs)],
                       capture_output=True, text=True, timeout=timeout)
    checks = [line for line in r.stdout.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")]
    return r, checks


def assert_lesson_ran(name, scale, runs, r, checks):
    figures, n_checks = CASES[name]
    assert r.returncode == 0, f"lesson {name} at {scale} scale failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    for fig in figures:
        path = runs / scale / name / fig
        assert path.exists() and path.stat().st_size > 10_000, f"{fig} missing or empty"
    assert len(checks) == n_checks, "expected one line per check:\n" + "\n".join(checks)
    expected = "SKIP" if scale == "smoke" else "PASS"
    assert all(line.startswith(expected) for line in checks), "\n".join(checks)


@pytest.mark.parametrize("name", list(CASES))
def test_lesson_smoke(name, tmp_path):
    r, checks = run_lesson(name, "smoke", tmp_path, timeout=600)
    assert_lesson_ran(name, "smoke", tmp_path, r, checks)
    if name == "05_train_transformer":
        assert (tmp_path / "smoke" / "cache" / "transformer.npz").exists(), "the trained model must be cached"
        r2, checks2 = run_lesson(name, "smoke", tmp_path, timeout=600)  # a second run reuses it
        assert r2.returncode == 0 and "already in the cache" in r2.stdout, r2.stdout[-2000:]
        assert checks2 == checks, "the reused model must give the same numbers:\n" + "\n".join(checks + checks2)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_lesson_default(name, tmp_path):
    r, checks = run_lesson(name, "default", tmp_path, timeout=3 * 3600)
    print("\n".join(checks))
    assert_lesson_ran(name, "default", tmp_path, r, checks)
