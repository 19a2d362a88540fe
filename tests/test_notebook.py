"""A lesson opened as a notebook (jupytext, as the README says) runs and shows its figures inline."""
import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSON = "01_superposition"  # five figures, a few seconds at smoke scale
FIGURES = 5


def test_a_lesson_runs_as_a_notebook_and_shows_its_figures(tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext", reason="pip install -e '.[test]' (or '.[notebook]')")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
    if importlib.util.find_spec("ipykernel") is None:  # not imported here: tinymono reads an imported ipykernel
        pytest.skip("no ipykernel: pip install -e '.[test]'")  # as "running in a notebook"
    nb = jupytext.read(ROOT / "lessons" / f"{LESSON}.py")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    monkeypatch.setenv("TINYMONO_SCALE", "smoke")
    monkeypatch.setenv("TINYMONO_RUNS", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as in Jupyter: the kernel chooses the inline backend
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "lessons")}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == FIGURES, f"expected {FIGURES} inline figures, got {len(images)}"
    results = [o["data"].get("text/plain", "") for o in outputs if o.get("output_type") == "execute_result"]
    assert not any("PosixPath" in r for r in results), f"a cell shows a path instead of a figure: {results}"
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "IProgress not found" not in stderr, "tqdm needs ipywidgets in a notebook (the notebook extra)"
    saved = sorted(p.name for p in (tmp_path / "smoke" / LESSON).glob("*.png"))
    assert len(saved) == FIGURES, f"the figures must still be saved: {saved}"


def test_generated_notebooks_are_ignored_by_git():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [f"lessons/{LESSON}.ipynb", "lessons/.ipynb_checkpoints/x.ipynb"]
    proc = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.stdout.split() == paths, f"jupytext's notebooks must be in .gitignore: {proc.stdout} {proc.stderr}"
