"""Lesson 01 runs end to end: at smoke scale (every figure written, checks skipped) and at default scale
(every check passes; about a minute on 2 cores)."""
import subprocess
import sys
from pathlib import Path

import pytest

LESSON = Path(__file__).resolve().parents[1] / "lessons" / "01_superposition.py"
FIGURES = ["feature_directions.png", "gram_and_norms.png", "phase_diagram.png", "dimensionality.png"]


def run_lesson(scale, runs):
    r = subprocess.run([sys.executable, str(LESSON), "--scale", scale, "--runs", str(runs)],
                       capture_output=True, text=True, timeout=900)
    checks = [line for line in r.stdout.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")]
    return r, checks


@pytest.mark.parametrize("scale", ["smoke", "default"])
def test_lesson_01(scale, tmp_path):
    r, checks = run_lesson(scale, tmp_path)
    assert r.returncode == 0, f"lesson 01 at {scale} scale failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    for name in FIGURES:
        assert (tmp_path / scale / "01_superposition" / name).stat().st_size > 10_000, f"{name} missing or empty"
    assert len(checks) == 9, "\n".join(checks)
    expected = "SKIP" if scale == "smoke" else "PASS"
    assert all(line.startswith(expected) for line in checks), "\n".join(checks)
    # a second run reuses the cached models instead of training again
    r2, checks2 = run_lesson(scale, tmp_path)
    assert r2.returncode == 0 and checks2 == checks
