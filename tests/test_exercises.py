"""Exercise mode: the workspaces `python -m tinymono exercises` writes, the tutor's messages, the switch.

Each lesson's workspace is generated and its own tests are run with pytest, as a learner runs them: on the
blank copy every exercise must fail with its own NotImplementedError (nothing else), and with the library's
modules in its place every test must pass. Typical mistakes, planted one at a time, must come back named.
"""
import ast
import os
import re
import shutil
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tinymono import layers, metrics, sae, toy
from tinymono.cli import main
from tinymono.exercises import EXERCISES, LESSONS, MODULES, for_lessons, parse_lesson
from tinymono.exercises.blank import blank_source
from tinymono.exercises.tutor import Factor, check, diagnose
from tinymono.exercises.workspace import LIBRARY, write_workspace

ROOT = Path(__file__).resolve().parents[1]
LIBRARY_MODULES = {"toy": toy, "sae": sae, "layers": layers, "metrics": metrics}


def env(**extra):
    e = {k: v for k, v in os.environ.items() if k != "TINYMONO_IMPL"}
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return {**e, **extra}


def run_pytest(folders, tmp_path, name):
    """pytest on the given workspaces, as a learner runs it; -> ({exercise id: (outcome, message)}, stdout)."""
    xml = tmp_path / f"{name}.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", *map(str, folders), "-q", "-p", "no:cacheprovider",
                           f"--junitxml={xml}"], capture_output=True, text=True, cwd=tmp_path, env=env(), timeout=300)
    results = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        lesson, k = re.match(r"test_(\d\d)_(\d\d)_", case.get("name")).groups()
        bad = [c for c in case if c.tag in ("failure", "error", "skipped")]
        results[f"{lesson}.{int(k)}"] = (bad[0].tag, bad[0].get("message", "")) if bad else ("passed", "")
    return results, proc.stdout


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """One workspace per lesson, written by the CLI: {lesson: folder}."""
    base = tmp_path_factory.mktemp("workspaces")
    out = {}
    for nn in LESSONS:
        out[nn] = base / f"ex{nn}"
        assert main(["exercises", nn, "--out", str(out[nn])]) == 0
    return out


def solved(folder, dest):
    """A copy of a workspace whose modules are the library's own: what a learner who got everything right has."""
    shutil.copytree(folder, dest)
    for m in MODULES:
        if (dest / f"{m}.py").exists():
            shutil.copy(LIBRARY / f"{m}.py", dest / f"{m}.py")
    return dest


# ----------------------------------------------------------------------------------------------------
# the workspaces


def test_each_workspace_holds_its_modules_tests_and_readme(workspaces):
    for nn, folder in workspaces.items():
        modules = sorted({f"{e.module}.py" for e in for_lessons([nn])})
        assert sorted(p.name for p in folder.iterdir()) == sorted(modules + ["README.md", f"test_{LESSONS[nn]}.py"])
        readme = (folder / "README.md").read_text()
        for e in for_lessons([nn]):
            assert f"| {e.id} | `{e.module}.py` | `{e.function}` |" in readme
        script = ROOT / "lessons" / f"{LESSONS[nn]}.py"
        assert script.exists() and f"TINYMONO_IMPL={folder.resolve()} python {script} --scale smoke" in readme


def test_blank_workspaces_fail_every_exercise_with_its_own_message(workspaces, tmp_path):
    results, stdout = run_pytest(workspaces.values(), tmp_path, "blank")
    assert sorted(results) == sorted(e.id for e in EXERCISES), stdout[-3000:]
    for e in EXERCISES:
        outcome, message = results[e.id]
        assert outcome == "failure" and message.startswith(f"NotImplementedError: exercise {e.id}: "), \
            f"{e.id}: {outcome}: {message}\n{stdout[-3000:]}"


def test_workspaces_with_the_library_pass_every_exercise(workspaces, tmp_path):
    results, stdout = run_pytest([solved(f, tmp_path / f.name) for f in workspaces.values()], tmp_path, "solved")
    assert sorted(results) == sorted(e.id for e in EXERCISES), stdout[-3000:]
    failed = {k: v for k, v in results.items() if v[0] != "passed"}
    assert not failed, f"{failed}\n{stdout[-4000:]}"


def _functions(tree):
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_workspace_is_the_library_without_the_solution_bodies(tmp_path):
    write_workspace(list(LESSONS), tmp_path / "all")
    text = "\n".join(p.read_text() for p in (tmp_path / "all").iterdir())
    present = {line.strip() for line in text.splitlines()}
    allowed = {"arch = ARCHITECTURES[cfg.architecture]"}  # sae._forward's first line too; backward's docstring names it
    for m in {e.module for e in EXERCISES}:
        lib_src = (LIBRARY / f"{m}.py").read_text()
        lib, ws = _functions(ast.parse(lib_src)), _functions(ast.parse((tmp_path / "all" / f"{m}.py").read_text()))
        mine = {e.function: e for e in EXERCISES if e.module == m}
        assert set(lib) == set(ws), f"{m}.py: the workspace must keep every function of the library"
        for name, node in lib.items():
            if name not in mine:  # everything else is the library's, unchanged
                assert ast.dump(node) == ast.dump(ws[name]), f"{m}.{name} differs from the library's"
                continue
            e, body = mine[name], ws[name].body
            assert len(body) == 2 and isinstance(body[0], ast.Expr) and isinstance(body[1], ast.Raise), \
                f"{e.id}: the blank must be a docstring and a raise, got {ast.dump(ws[name])[:300]}"
            assert ast.literal_eval(body[1].exc.args[0]).startswith(f"exercise {e.id}: ")
            assert ast.dump(node.args) == ast.dump(ws[name].args), f"{e.id}: the signature must stay the library's"
            first = node.body[1 if ast.get_docstring(node) else 0]
            solution = lib_src.splitlines()[first.lineno - 1:node.end_lineno]
            copied = [s.strip() for s in solution if len(s.strip()) >= 24 and not s.strip().startswith("#")
                      and s.strip() in present and s.strip() not in allowed]
            assert not copied, f"{e.id} {name}: lines of the solution are in the workspace: {copied}"


def test_cli_refuses_a_lesson_without_exercises_and_a_used_folder(tmp_path, capsys):
    assert main(["exercises", "03", "--out", str(tmp_path / "a")]) == 2
    assert "lesson '03' has no exercises; lessons with exercises: 01, 02, 04, 06, 07" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("my work")
    assert main(["exercises", "02", "--out", str(tmp_path / "used")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["notes.txt"], "a used folder must stay untouched"
    (tmp_path / "file").write_text("")
    assert main(["exercises", "02", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["exercises", "2", "--out", str(tmp_path / "empty")]) == 0, "an empty folder and '2' are fine"
    assert "python -m pytest" in capsys.readouterr().out
    assert parse_lesson("07_interpreting_features") == "07"
    with pytest.raises(ValueError, match="no exercises"):
        parse_lesson("x")


def test_blanking_keeps_everything_but_the_bodies():
    source = ('# a comment\n"""doc"""\n\n\n@staticmethod\ndef f(x,\n      y=1):  # keep me\n    """Old."""\n'
              '    # inside\n    return x + y  # the answer\n\n\ndef g():\n    return 2\n')
    ex = EXERCISES[0]._replace(function="f", task="write f", doc="New: x + y.")
    out = blank_source(source, [ex], "# header\n")
    assert out.startswith("# header\n# a comment\n")
    assert "def f(x,\n      y=1):  # keep me\n" in out and "@staticmethod" in out and "def g():\n    return 2" in out
    assert "return x + y" not in out and "Old." not in out and "# inside" not in out
    assert '    """New: x + y."""\n    raise NotImplementedError(\'exercise 01.1: write f (f in toy.py)\')' in out
    with pytest.raises(ValueError, match="no top-level function 'h'"):
        blank_source(source, [ex._replace(function="h")])


# ----------------------------------------------------------------------------------------------------
# the tutor's words


def test_diagnose_names_shape_sign_factor_and_nan():
    want = np.arange(6.0).reshape(2, 3) + 1
    assert diagnose(want + 1e-12, want) is None
    assert "transposed" in diagnose(want.T, want)
    assert "axis too many" in diagnose(np.ones((2, 3, 4)), want)
    assert "an axis of length 1 too many or too few" in diagnose(want[None], want)
    assert "wrong shape (reshape it back to (2, 3)?)" in diagnose(want.reshape(1, 6), want)
    assert "minus the right answer" in diagnose(-want, want)
    batch = Factor(5, "the batch size", "")
    assert "5 times too large (5 = the batch size)" in diagnose(5 * want, want, factors=[batch])
    assert "two factors off: too large by 5 = the batch size" in diagnose(10 * want, want, factors=[batch])
    assert "2 times too small" in diagnose(want / 2, want)
    assert "NaN or inf in 1 of 6" in diagnose(np.where(want == 3, np.nan, want), want)
    assert "a single number" in diagnose(np.array([1.0]), 1.0)
    assert "differs from the right answer in 1 of 6 entries" in diagnose(np.where(want == 3, 0, want), want)


def planted(module, **functions):
    """The library module with some functions replaced: a learner's copy with one mistake."""
    ns = types.SimpleNamespace(**vars(module))
    vars(ns).update(functions)
    return ns


def message(id, module):
    with pytest.raises(AssertionError) as info:
        check(id, module)
    return str(info.value)


def test_lesson_01_mistakes_are_named():
    def decoder_term_only(params, cache, cfg, dout):
        x, h, active = cache
        dpre = np.where(active, dout, 0.0)
        return {"W": np.einsum("ibh,ibf->ihf", h, dpre), "b_final": dpre.sum(axis=1)}

    def loss_without_batch_mean(out, x, cfg):
        per_inst, dout = toy.loss(out, x, cfg)
        return per_inst, dout * x.shape[1]

    msg = message("01.3", planted(toy, backward=decoder_term_only))
    assert "dW is only the decoder's term" in msg and "W is also used in h = W x" in msg
    assert re.search(r"  W +\d\.\d\de[+-]\d\d  FAIL", msg) and re.search(r"  b_final +\S+  ok", msg), msg
    msg = message("01.2", planted(toy, loss=loss_without_batch_mean))
    assert "dout is 6 times too large (6 = the batch size)" in msg and "per_inst" not in msg, msg


def test_lesson_02_mistakes_are_named():
    def l1_without_batch_mean(dloss, cache):
        return dloss * cache.l1_coefficient * np.sign(cache.f), None

    def projection_skipped(W_dec, dW_dec):
        return None

    def b_dec_decoder_part_only(params, cache, cfg):
        grads = sae.backward(params, cache, cfg)
        dx_hat, _ = sae.mse_backward(1.0, cache.mse)
        grads["b_dec"] = dx_hat.sum(axis=0)
        return grads

    def weighted_by_the_loss(params, opt, dead, inputs, cfg, rng):
        class Linear:  # hands rng.choice the square root of the right weights: the loss, not its square
            def choice(self, n, size, replace, p):
                return rng.choice(n, size=size, replace=replace, p=np.sqrt(p) / np.sqrt(p).sum())
        return sae.resample_dead(params, opt, dead, inputs, cfg, Linear())

    def drawn_elsewhere_by_the_loss(params, opt, dead, inputs, cfg, rng):
        class Linear:  # the same mistake, drawn from a generator of its own: only the frequencies can tell
            def choice(self, n, size, replace, p):
                p = np.sqrt(p) / np.sqrt(p).sum()
                return np.random.default_rng(0).choice(n, size=size, replace=replace, p=p)
        return sae.resample_dead(params, opt, dead, inputs, cfg, Linear())

    def zero_inputs_kept(params, opt, dead, inputs, cfg, rng):
        idx = np.flatnonzero(dead)  # the recipe, but an all-zero input keeps its weight
        w = sae.per_input_loss(params, inputs, cfg) ** 2
        v = inputs[rng.choice(len(inputs), size=idx.size, replace=idx.size > np.count_nonzero(w), p=w / w.sum())]
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        alive_norm = np.linalg.norm(params["W_enc"], axis=0)[~dead].mean()
        params["W_dec"][idx], params["W_enc"][:, idx] = v, (cfg.resample_encoder_scale * alive_norm * v).T
        params["b_enc"][idx] = 0
        for name, axis in (("W_dec", 0), ("W_enc", 1), ("b_enc", 0)):
            opt.reset(name, idx, axis=axis)
        return idx

    msg = message("02.8", planted(sae, l1_backward=l1_without_batch_mean))
    assert "df is 5 times too large (5 = the batch size B): the penalty is a mean over the batch" in msg, msg
    assert re.search(r"  f +8\.00e-01  FAIL", msg), "the gradient check must show the error (1 - 1/5)"
    msg = message("02.10", planted(sae, project_decoder_grad=projection_skipped))
    assert "is unchanged: the projection was skipped" in msg, msg
    msg = message("02.9", planted(sae, backward=b_dec_decoder_part_only))
    assert "db_dec is only the decoder's part" in msg and "dW_enc" not in msg, msg
    msg = message("02.12", planted(sae, resample_dead=weighted_by_the_loss))
    assert "rng.choice are proportional to the loss; the recipe weights each input by its loss SQUARED" in msg, msg
    msg = message("02.12", planted(sae, resample_dead=drawn_elsewhere_by_the_loss))
    assert "300 draws" in msg and "as if weighted by the loss;" in msg, msg
    def encoder_moments_reset_along_rows(params, opt, dead, inputs, cfg, rng):
        reset = opt.reset
        opt.reset = lambda name, index, axis=0: reset(name, index, 0 if name == "W_enc" else axis)  # rows, not columns
        try:
            return sae.resample_dead(params, opt, dead, inputs, cfg, rng)
        finally:
            opt.reset = reset

    msg = message("02.12", planted(sae, resample_dead=encoder_moments_reset_along_rows))
    assert "Adam's moments of the resampled entries of W_enc are not reset" in msg, msg
    msg = message("02.12", planted(sae, resample_dead=zero_inputs_kept))
    assert "a latent was given the all-zero input, which has no direction: give such inputs weight 0" in msg, msg

    def with_replacement(params, opt, dead, inputs, cfg, rng):
        class Always:  # every draw with replacement: two latents can restart on one input
            def choice(self, n, size, replace, p):
                return rng.choice(n, size=size, replace=True, p=p)
        return sae.resample_dead(params, opt, dead, inputs, cfg, Always())

    msg = message("02.12", planted(sae, resample_dead=with_replacement))
    assert "one input twice; draw without replacement" in msg, msg
    msg = message("02.8", planted(sae, l1_backward=lambda dloss, cache: (np.full_like(cache.f, dloss * cache.l1_coefficient
                                                                                      / len(cache.f)), None)))
    assert "is nonzero where f = 0" in msg and "at f > 0 only" in msg, msg


def test_lesson_04_mistakes_are_named(tmp_path, workspaces):
    def layernorm_without_means(dout, cache):
        xhat, inv_std, w = cache
        D = xhat.shape[-1]
        return inv_std * dout * w, (dout * xhat).reshape(-1, D).sum(axis=0), dout.reshape(-1, D).sum(axis=0)

    def embedding_with_fancy_indexing(dout, cache):
        dW_E = np.zeros(cache.vocab_shape)
        dW_E[cache.ids.reshape(-1)] += dout.reshape(-1, cache.vocab_shape[1])
        return None, dW_E

    def cross_entropy_editing_its_cache(dloss, cache):
        d = cache.probs  # no copy
        d[np.arange(cache.targets.size), cache.targets] -= 1.0
        d *= dloss / cache.targets.size
        return d.reshape(cache.logits_shape), None

    msg = message("04.2", planted(layers, layernorm_backward=layernorm_without_means))
    assert "dx misses both mean terms: dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))" in msg, msg
    assert re.search(r"  x +\S+  FAIL", msg) and re.search(r"  w +\S+  ok", msg), msg
    msg = message("04.3", planted(layers, embedding_backward=embedding_with_fancy_indexing))
    assert "occur more than once" in msg and "np.add.at" in msg, msg
    msg = message("04.4", planted(layers, cross_entropy_backward=cross_entropy_editing_its_cache))
    assert "changed its argument `cache` in place" in msg, msg

    def layernorm_means_over_the_batch(dout, cache):
        xhat, inv_std, w = cache
        g, D = dout * w, xhat.shape[-1]
        dx = inv_std * (g - g.mean(axis=0, keepdims=True) - xhat * (g * xhat).mean(axis=0, keepdims=True))
        return dx, (dout * xhat).reshape(-1, D).sum(axis=0), dout.reshape(-1, D).sum(axis=0)

    def cross_entropy_over_the_batch(dloss, cache):
        d = cache.probs.copy()
        d[np.arange(cache.targets.size), cache.targets] -= 1.0
        return (d * dloss / cache.logits_shape[0]).reshape(cache.logits_shape), None  # / B, not / (B x T)

    msg = message("04.2", planted(layers, layernorm_backward=layernorm_means_over_the_batch))
    assert "takes its means over the first axis" in msg and "axis=-1" in msg, msg
    msg = message("04.4", planted(layers, cross_entropy_backward=cross_entropy_over_the_batch))
    assert "T, the sequence length" in msg and "not over the batch alone" in msg, msg
    # the same mistake typed into a workspace file, as pytest shows it to the learner
    ws = solved(workspaces["04"], tmp_path / "ws")
    src = (ws / "layers.py").read_text()
    right = "    dx = inv_std * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))\n"
    assert src.count(right) == 1
    (ws / "layers.py").write_text(src.replace(right, "    dx = inv_std * g\n"))
    results, stdout = run_pytest([ws], tmp_path, "planted")
    assert results["04.1"][0] == "passed" and results["04.2"][0] == "failure", stdout[-3000:]
    assert "dx misses both mean terms" in results["04.2"][1] and "misses both mean terms" in stdout


def test_lesson_04_attention_mistake_is_named():
    def without_rowsum(dout, cache):
        from tinymono.exercises.layers_checks import attention_grads
        return tuple(attention_grads(dout, cache, rowsum=False))

    msg = message("04.5", planted(layers, attention_backward=without_rowsum))
    assert "misses the row-sum term of the softmax's backward" in msg and "dW_O" not in msg, msg


def test_lesson_06_mistakes_are_named():
    msg = message("06.1", planted(metrics, loss_recovered=lambda c, r, a: (r - c) / (a - c)))
    assert "is the share of the loss LOST" in msg and "yours: 0.2\n      right: 0.8" in msg, msg
    msg = message("06.1", planted(metrics, loss_recovered=lambda c, r, a: (a - r) / (a - c) if a != c else 0.0))
    assert "returned 0.0: when l_ablated == l_clean" in msg and "raise a ValueError" in msg, msg


def test_lesson_07_mistakes_are_named():
    def auroc_ties_lose(A, y):
        A = np.asarray(A, dtype=float)
        pos, neg = A[y][:, None], A[~y][None]
        return ((pos > neg).sum(axis=(0, 1)) / (y.sum() * (~y).sum())) if y.any() and (~y).any() else 0.5 + 0 * A[0]

    def specificity_counting_tokens(A, y, threshold=None):
        fires = A > 0
        return np.divide(fires[y].sum(0), fires.sum(0), out=np.zeros(A.shape[1]), where=fires.sum(0) > 0)

    def pearson_uncentred(A, y):
        den = np.linalg.norm(A, axis=0) * np.linalg.norm(y.astype(float))
        return np.divide(A.T @ y, den, out=np.zeros(A.shape[1]), where=den > 0)

    assert "counts ties as losses" in message("07.3", planted(metrics, auroc=auroc_ties_lose))
    assert "counts tokens" in message("07.2", planted(metrics, specificity=specificity_counting_tokens))
    assert "does not subtract the means" in message("07.1", planted(metrics, pearson=pearson_uncentred))


# ----------------------------------------------------------------------------------------------------
# the switch


def test_tinymono_impl_puts_the_workspace_in_the_library(tmp_path):
    ws = tmp_path / "ws"
    write_workspace(list(LESSONS), ws)
    solved(ws, tmp_path / "done")
    code = """
import sys
from pathlib import Path
from tinymono import layers, sae, toy, metrics, features, interventions, transformer, pipeline
from tinymono.kernels import transformer as KT
from tinymono.exercises import switch, tutor
for m in (layers, sae, toy, metrics):
    assert Path(m.__file__) == Path(sys.argv[1]).resolve() / (m.__name__.split(".")[1] + ".py"), m.__file__
assert transformer.REFERENCE.layernorm_backward is layers.layernorm_backward and KT.L is layers
assert features.sae is sae and interventions.sae is sae and pipeline.sae is sae
assert interventions.loss_recovered is metrics.loss_recovered
assert sae.ARCHITECTURES["relu"].encode_forward is sae.encode_relu_forward
assert sae.SPARSE_STEP is False  # training takes the learner's forward/backward at every step
called = []  # the decoder constraint takes the learner's functions even where training asks for the kernels
sae.project_decoder_grad, sae.normalise_decoder = (lambda W, dW: called.append("project"),
                                                   lambda W: called.append("normalise"))
import numpy as np
from tinymono.optim import Adam
p = {"W_dec": np.eye(2)}
sae.update(p, {"W_dec": np.ones((2, 2))}, Adam(p), fast=True)
assert called == ["project", "normalise"], called
try:
    tutor.check("02.1", sae)
except RuntimeError as e:
    print("refused:", e)
print(switch.describe()[0])
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "done")], capture_output=True, text=True,
                          env=env(TINYMONO_IMPL=str(tmp_path / "done")), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: the tutor compares your functions with the library's, but TINYMONO_IMPL is set" in proc.stdout
    where = (tmp_path / "done" / "layers.py").resolve()
    assert f"exercise mode: tinymono/layers.py is {where} (yours: linear_backward" in proc.stdout
    for bad, words in ((tmp_path / "nowhere", "no such folder"), (tmp_path, "holds none of layers.py")):
        proc = subprocess.run([sys.executable, "-c", "import tinymono"], capture_output=True, text=True,
                              env=env(TINYMONO_IMPL=str(bad)), timeout=60)
        assert proc.returncode == 1 and words in proc.stderr, proc.stderr[-2000:]


def test_a_lesson_runs_on_the_learners_code(workspaces, tmp_path):
    lesson = str(ROOT / "lessons" / "02_sparse_autoencoder.py")
    blank = subprocess.run([sys.executable, lesson, "--scale", "smoke", "--runs", str(tmp_path / "runs")],
                           capture_output=True, text=True, cwd=tmp_path, env=env(TINYMONO_IMPL=str(workspaces["02"])),
                           timeout=600)
    assert blank.returncode != 0 and re.search(r"NotImplementedError: exercise 02\.\d+: ", blank.stderr), \
        blank.stderr[-2000:]
    done = solved(workspaces["02"], tmp_path / "done")
    proc = subprocess.run([sys.executable, lesson, "--scale", "smoke"], capture_output=True, text=True, cwd=tmp_path,
                          env=env(TINYMONO_IMPL=str(done)), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"exercise mode: tinymono/sae.py is {(done / 'sae.py').resolve()}" in proc.stdout
    assert (done / "runs" / "smoke" / "02_sparse_autoencoder" / "gradcheck.png").exists(), "runs go to the workspace"
    worst = re.search(r"gradient check: worst relative error of any SAE piece +(\S+)", proc.stdout)
    assert worst and float(worst.group(1)) < 1e-7, proc.stdout[-3000:]


def test_lesson_06_runs_on_a_workspace_that_holds_sae_py_and_a_code_change_trains_afresh(workspaces, tmp_path):
    """Lesson 06 calls the sparse step itself (checked against the learner's dense step): exercise mode must turn
    the sparse step off for training only. And its models are cached by the code that trained them: after a
    change to the learner's sae.py, the lesson trains a new SAE instead of reusing the old one."""
    done = solved(workspaces["02"], tmp_path / "done")  # holds sae.py (lesson 02's exercises)
    lesson = str(ROOT / "lessons" / "06_sae_on_transformer.py")
    run = lambda: subprocess.run([sys.executable, lesson, "--scale", "smoke"], capture_output=True, text=True,  # noqa: E731
                                 cwd=tmp_path, env=env(TINYMONO_IMPL=str(done)), timeout=900)
    first = run()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    caches = sorted(p.name for p in (done / "runs" / "smoke").glob("cache-*"))
    assert len(caches) == 1 and (done / "runs" / "smoke" / caches[0] / "sae.npz").exists(), caches
    with open(done / "sae.py", "a") as fh:
        fh.write("\n# a learner's comment: the code is the same, so are the models\n")
    assert switch_suffix(done) == caches[0].removeprefix("cache"), "a comment must not retrain the models"
    with open(done / "sae.py", "a") as fh:
        fh.write("\nLEARNERS_CONSTANT = 1\n")
    second = run()
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert len(list((done / "runs" / "smoke").glob("cache-*"))) == 2, "the edited code must get a cache of its own"


def switch_suffix(workspace):
    """The cache suffix exercise mode gives `workspace`, computed in a fresh process."""
    code = "from tinymono.exercises import switch; print(switch.cache_suffix())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env(TINYMONO_IMPL=str(workspace)), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_a_workspace_that_holds_only_metrics_py_keeps_the_librarys_cache_name(workspaces, tmp_path):
    """Exercises 06 and 07 replace metrics.py, which only scores trained models: editing it must not retrain a
    transformer (a default-scale lesson 06 would train for half an hour)."""
    assert switch_suffix(workspaces["07"]) == ""
    assert switch_suffix(workspaces["02"]).startswith("-")


def test_exercise_mode_keeps_the_main_jobs_models_in_the_workspace(monkeypatch, tmp_path):
    """`python -m tinymono reproduce` (or sweep) with TINYMONO_IMPL set and no --out trains with the learner's
    code: its models go under WORKSPACE/runs, never into the library's own runs/ cache."""
    from tinymono import cli
    from tinymono.exercises import switch

    assert cli._runs_folder(None) == "runs" and cli._runs_folder("elsewhere") == "elsewhere"
    monkeypatch.setenv("TINYMONO_IMPL", str(tmp_path))
    monkeypatch.setattr(switch, "_ACTIVE", {"sae": str(tmp_path / "sae.py")})
    assert cli._runs_folder(None) == str(tmp_path / "runs")
    assert cli._runs_folder("elsewhere") == "elsewhere", "an explicit --out still wins"
