"""Lessons 02 (the sparse autoencoder) and 03 (ground-truth recovery) run as a learner runs them.

Smoke scale in the default suite: exit 0, every figure written, every check line printed (as SKIP).
Default scale under the `slow` marker (python -m pytest -m slow): exit 0 and no FAIL line."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = {
    "02_sparse_autoencoder": {
        "figures": ["toy_features.png", "gradcheck.png", "sae_training.png", "learned_directions.png",
                    "latent_responses.png"],
        "checks": ["gradient check", "features recovered at cos >= 0.99"],
    },
    "03_ground_truth_recovery": {
        "figures": ["training.png", "recovery.png", "density.png", "sweep_heatmap.png", "correlated.png"],
        "checks": ["MMCS", "recovered at cos >= 0.9", "dead latents"],
    },
}


def run_lesson(name, scale, runs):
    return subprocess.run([sys.executable, str(ROOT / "lessons" / f"{name}.py"), "--scale", scale, "--runs", str(runs)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1800)


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_smoke(name, tmp_path):
    proc = run_lesson(name, "smoke", tmp_path)
    assert proc.returncode == 0, f"lesson {name} failed at smoke scale:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    folder = tmp_path / "smoke" / name
    missing = [f for f in LESSONS[name]["figures"] if not (folder / f).exists()]
    assert not missing, f"lesson {name} did not write {missing} (wrote {sorted(p.name for p in folder.iterdir())})"
    check_lines = [line for line in proc.stdout.splitlines() if line.startswith(("PASS", "FAIL", "SKIP"))]
    for check in LESSONS[name]["checks"]:
        assert any(check in line for line in check_lines), f"lesson {name}: no check line mentions {check!r}:\n" + \
            "\n".join(check_lines)
    assert all(line.startswith("SKIP") for line in check_lines), "at smoke scale every check must print SKIP"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_default(name, tmp_path):
    proc = run_lesson(name, "default", tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("PASS", "FAIL", "SKIP"))]
    print("\n".join(lines))
    assert proc.returncode == 0 and not any(line.startswith("FAIL") for line in lines), \
        f"lesson {name} at default scale:\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
