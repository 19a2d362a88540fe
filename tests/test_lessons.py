"""Every lesson runs end to end, as a learner runs it.

The default suite runs `python -m tinymono reproduce --scale smoke` once (every lesson in order, each a
stage of the pipeline, on sizes too small for the bars: every figure is written, the checks that do not
depend on scale PASS and the others print SKIP), checks each lesson's artefacts and the report, and that
a second call reuses the finished stages. Lesson 01 also runs at default scale here (about 15 seconds). Under the slow marker
(`python -m pytest -m slow`) the whole reproduction runs at default scale and every check must pass.
"""
import collections
import ctypes
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = {  # name: (figures it must write, number of checks)
    "01_superposition": (["feature_directions.png", "gram_and_norms.png", "phase_diagram.png", "dimensionality.png",
                          "correlated_pairs.png"], 13),
    "02_sparse_autoencoder": (["toy_features.png", "gradcheck.png", "sae_training.png", "learned_directions.png",
                               "latent_responses.png"], 2),
    "03_ground_truth_recovery": (["training.png", "recovery.png", "density.png", "sweep_heatmap.png",
                                  "correlated.png"], 3),
    "04_transformer_by_hand": (["causal_attention.png", "memorise_one_batch.png"], 9),
    "05_train_transformer": (["loss_curve.png", "bits_per_label.png", "family_over_floor.png"], 7),
    "06_sae_on_transformer": (["sae_training.png", "density_histogram.png"], 6),
    "07_interpreting_features": (["features_vs_neurons.png", "all_contexts_scatter.png", "feature_histograms.png",
                                  "feature_browser.html"], 11),
    "08_steering_and_splitting": (["pinned_sampling.png", "dna_family.png"], 8),
    "09_beyond_the_paper": (["ground_truth.png", "frontier.png"], 19),
    "10_universality": (["best_match.png", "real_vs_shuffled.png"], 9),
}
# checks that do not depend on scale (scale_free=True), which PASS at smoke scale too
SCALE_FREE = {"01_superposition": 2, "02_sparse_autoencoder": 1, "04_transformer_by_hand": 8, "05_train_transformer": 1,
              "06_sae_on_transformer": 2, "07_interpreting_features": 1, "09_beyond_the_paper": 3, "10_universality": 1}


def run(args, timeout):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def run_lesson(name, scale, runs, timeout=1800):
    return run([str(ROOT / "lessons" / f"{name}.py"), "--scale", scale, "--runs", str(runs)], timeout)


def check_lines(stdout):
    return [line for line in stdout.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")]


def assert_lesson(name, scale, runs, proc):
    figures, n_checks = LESSONS[name]
    lines = check_lines(proc.stdout)
    assert proc.returncode == 0, f"lesson {name} at {scale} scale failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    folder = runs / scale / name
    for fig in figures:
        assert (folder / fig).exists() and (folder / fig).stat().st_size > 5_000, f"{name}: {fig} missing or empty"
    assert len(lines) == n_checks, f"{name}: expected {n_checks} check lines:\n" + "\n".join(lines)
    statuses = collections.Counter(line[:4] for line in lines)
    free = SCALE_FREE.get(name, 0)
    expected = {"PASS": free, "SKIP": n_checks - free} if scale == "smoke" else {"PASS": n_checks}
    assert statuses == collections.Counter({k: v for k, v in expected.items() if v}), "\n".join(lines)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke-scale reproduction shared by the tests below: (runs folder, first call, second call)."""
    runs = tmp_path_factory.mktemp("runs")
    first = run(["-m", "tinymono", "reproduce", "--scale", "smoke", "--out", str(runs)], timeout=1200)
    second = run(["-m", "tinymono", "reproduce", "--scale", "smoke", "--out", str(runs)], timeout=600)
    return runs, first, second


@pytest.mark.parametrize("name", list(LESSONS))
def test_lesson_at_smoke_scale(name, smoke):
    runs, first, _ = smoke
    assert first.returncode == 0, f"reproduce --scale smoke failed:\n{first.stdout[-6000:]}\n{first.stderr[-3000:]}"
    result = json.loads((runs / "smoke" / name / "result.json").read_text())
    log = (runs / "smoke" / "logs" / f"{name}.log").read_text()
    assert_lesson(name, "smoke", runs, subprocess.CompletedProcess([], 0, log, ""))
    free = SCALE_FREE.get(name, 0)
    assert sorted(c["status"] for c in result["checks"]) == ["PASS"] * free + ["SKIP"] * (LESSONS[name][1] - free), \
        "at smoke scale, scale-free checks PASS and only the others SKIP"


def test_reproduce_report_and_reuse(smoke):
    runs, first, second = smoke
    report = (runs / "smoke" / "report.md").read_text()
    n_free, n_all = sum(SCALE_FREE.values()), sum(n for _, n in LESSONS.values())
    assert report.splitlines()[2].startswith(f"**{n_free} PASS, 0 FAIL, {n_all - n_free} SKIP**"), report[:400]
    assert re.search(r"^\| numba +\| \d", report, re.M) and "| commit " in report and "## Stages" in report
    # progress without a terminal: a line when each loop ends, with its rate, and the same in the log
    assert re.search(r"^  \[6/10\] sae: (\d+)/\1 step \(100%\), [\d,.]+ step/s, done in", first.stdout, re.M), \
        first.stdout[-3000:]
    assert "progress: transformer: " in (runs / "smoke" / "logs" / "05_train_transformer.log").read_text()
    # what each stage trained, with its throughput, in report.md's table and in the closing lines
    assert re.search(r"^\| 05_train_transformer +\|.*\| transformer: [\d,]+ steps, [\d,]+ tok/s +\|", report, re.M)
    assert re.search(r"^  06_sae_on_transformer .*\(sae: [\d,]+ steps, [\d,]+ act/s\)", first.stdout, re.M)
    for name, (figures, _) in LESSONS.items():
        for fig in figures:
            if fig.endswith(".png"):
                assert f"({name}/{fig})" in report, f"report.md does not embed {name}/{fig}"
    assert "## Verification table" in report and "feature_browser.html" in report
    assert second.returncode == 0, second.stdout[-3000:]
    reused = [line for line in second.stdout.splitlines() if "finished earlier, reused" in line]
    assert len(reused) == len(LESSONS), "a second call must reuse every finished stage:\n" + second.stdout[-3000:]
    third = run(["-m", "tinymono", "reproduce", "--scale", "smoke", "--out", str(runs), "--only", "07"], timeout=600)
    assert third.returncode == 0, third.stdout[-3000:]
    def body(text):  # the tally, then the lessons' sections without the headings, provenance and stage table,
        lines = text.splitlines()  # which say when and how each stage was obtained
        start = next(i for i, line in enumerate(lines) if line.startswith("## 01_"))
        return [lines[2]] + [line for line in lines[start:] if not line.startswith("## ")]

    assert body((runs / "smoke" / "report.md").read_text()) == body(report), \
        "--only must not drop the other stages from the report"


def test_reproduce_rejects_bad_arguments(tmp_path):
    nothing = run(["-m", "tinymono", "reproduce", "--scale", "smoke", "--out", str(tmp_path), "--only", "zzz"], 60)
    assert nothing.returncode == 2 and "matches no lesson" in nothing.stderr, nothing.stderr
    assert not any(tmp_path.iterdir()), "arguments that are refused must leave nothing behind"
    (tmp_path / "afile").write_text("")
    bad_out = run(["-m", "tinymono", "reproduce", "--scale", "smoke", "--out", str(tmp_path / "afile")], 60)
    assert bad_out.returncode == 2 and "cannot write into --out" in bad_out.stderr, bad_out.stderr
    assert "Traceback" not in nothing.stderr + bad_out.stderr


def test_only_answers_for_the_stages_asked_for(tmp_path, capsys):
    """--only reports every finished stage, but its exit code speaks only for the stages asked for."""
    from tinymono.reproduce import reproduce

    for name, status in (("01_superposition", "PASS"), ("02_sparse_autoencoder", "FAIL")):
        (tmp_path / "smoke" / name).mkdir(parents=True)
        (tmp_path / "smoke" / name / "result.json").write_text(json.dumps(
            {"seconds": 1.0, "figures": [], "checks": [{"status": status, "name": "c", "value": 1.0, "bar": "b"}]}))
    assert reproduce(tmp_path, "smoke", only=["01"]) == 0, "an earlier run's FAIL in another stage must not count"
    report = (tmp_path / "smoke" / "report.md").read_text()
    assert "## 02_sparse_autoencoder  (earlier run, not asked for" in report and "| FAIL |" in report
    assert reproduce(tmp_path, "smoke", only=["02"]) == 1


FAKE_LESSON = '''
import pathlib, signal, sys, time
runs = pathlib.Path(sys.argv[sys.argv.index("--runs") + 1])
def save(*_):  # like the training loop: the first Ctrl-C saves, a second gives up at once
    signal.signal(signal.SIGINT, lambda *_: sys.exit(4))
    time.sleep(0.5)  # a checkpoint takes a moment to write
    print("saved", flush=True)
    (runs / "saved").write_text("ok")
    sys.exit(3)
signal.signal(signal.SIGINT, save)
signal.signal(signal.SIGTERM, lambda *_: (print("terminated", flush=True), sys.exit(5)))
print("training", flush=True)
time.sleep(30)
'''


STUBBORN_LESSON = '''
import os, pathlib, signal, sys, time
(pathlib.Path(sys.argv[sys.argv.index("--runs") + 1]) / "pid").write_text(str(os.getpid()))
signal.signal(signal.SIGINT, signal.SIG_IGN)  # deaf to both, as a lesson stuck in a long C call is for a while
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("training", flush=True)
time.sleep(30)
'''


def start_fake_stage(tmp_path, lesson=FAKE_LESSON):
    """run_stage on a fake lesson in a driver process of its own session (like a job in a terminal),
    returned once the lesson is running. The driver first takes Python's own Ctrl-C handler, as a job in a
    terminal has it: a test run started in the background of a shell (`cmd &`) inherits SIGINT ignored, and
    Python then leaves it ignored."""
    (tmp_path / "99_fake.py").write_text(lesson)
    driver = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "from pathlib import Path; from tinymono.reproduce import run_stage; "
              f"run_stage(Path({str(tmp_path / '99_fake.py')!r}), 'smoke', Path({str(tmp_path)!r}), "
              f"Path({str(tmp_path / 'log')!r}))")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert "training" in proc.stdout.readline()  # relayed: the lesson has its handlers and is running
    return proc


def test_the_relay_ends_with_its_reader_even_without_the_end_mark():
    """An interrupt raised just after the relay took the end-of-output mark loses the mark (the reader has put
    it once and ended); the relay run again after that interrupt must still end, with the lines left."""
    import queue
    import threading

    from tinymono.reproduce import _lines

    reader = threading.Thread(target=lambda: None)
    reader.start()
    reader.join()
    lines = queue.SimpleQueue()
    lines.put("last\n")
    got = []
    relay = threading.Thread(target=lambda: got.extend(_lines(lines, reader, every=0.01)), daemon=True)
    relay.start()
    relay.join(5)
    assert not relay.is_alive() and got == ["last\n"]


def test_a_ctrl_c_after_a_sigterm_leaves_a_stage_that_does_not_stop(tmp_path):
    """reproduce waits for a stage it has passed a SIGTERM on to; a Ctrl-C then gives up the wait at once. (The
    pipe's reader thread, blocked in its read, once held that Ctrl-C until the stage ended.)"""
    proc = start_fake_stage(tmp_path, STUBBORN_LESSON)
    try:
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)  # the lesson sleeps 30 s
        assert "KeyboardInterrupt" in err, err[-2000:]
    finally:
        os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)


@pytest.mark.parametrize("to", ["reproduce alone", "the terminal's process group"])
def test_reproduce_passes_ctrl_c_to_the_stage_and_waits_for_it(tmp_path, to):
    """A Ctrl-C must reach the lesson exactly once, whether the SIGINT goes to `reproduce` alone (`kill -INT`)
    or to the whole foreground group (a terminal's Ctrl-C; `timeout -s INT` sends both): the lesson saves its checkpoint,
    and reproduce relays the lesson's output until it has exited."""
    proc = start_fake_stage(tmp_path)
    if to == "reproduce alone":
        proc.send_signal(signal.SIGINT)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert (tmp_path / "saved").exists(), "the lesson did not get exactly one interrupt, so it could not save"
    assert "saved" in out and "saved" in (tmp_path / "log").read_text(), "output after the interrupt must be relayed"
    assert "KeyboardInterrupt" in err, "reproduce re-raises once the stage has exited"


def send_to_another_thread(pid, sig):
    """Deliver `sig` to a thread of process `pid` other than its main thread (tgkill), as Linux may deliver a
    process's signal; the main thread, blocked reading a pipe, is not woken by it."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("tgkill's system call number is x86-64 Linux's")
    time.sleep(0.5)  # time for the driver's main thread to block in its wait for the lesson's next line
    others = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert others, "the driver has no thread but its main one"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(234, pid, others[0], sig) == 0, os.strerror(ctypes.get_errno())  # 234: tgkill


@pytest.mark.parametrize("to", ["the process", "a thread but the main one"])
def test_reproduce_passes_sigterm_to_the_stage(tmp_path, to):
    """The lesson sleeps 30 s without a word after its first line: a driver that ran its handler only when the
    lesson printed again would time out here."""
    proc = start_fake_stage(tmp_path)
    if to == "the process":
        proc.send_signal(signal.SIGTERM)
    else:
        send_to_another_thread(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert "terminated" in out, "the lesson must get the SIGTERM too, not be left running"
    assert "Stopped" in err, err


def test_lesson_05_reuses_its_cached_model(smoke):
    runs, _, _ = smoke
    path = runs / "smoke" / "05_train_transformer" / "result.json"
    before = json.loads(path.read_text())["checks"]
    proc = run_lesson("05_train_transformer", "smoke", runs)
    assert proc.returncode == 0 and "already in the cache" in proc.stdout, proc.stdout[-2000:]
    after = json.loads(path.read_text())["checks"]
    assert [c["value"] for c in after] == [c["value"] for c in before], "the reused model must give the same numbers"


def test_lesson_01_at_default_scale(tmp_path):
    first = run_lesson("01_superposition", "default", tmp_path)
    assert_lesson("01_superposition", "default", tmp_path, first)
    again = run_lesson("01_superposition", "default", tmp_path)  # reuses the cached models: same numbers
    assert again.returncode == 0 and check_lines(again.stdout) == check_lines(first.stdout)


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    """The main job as a learner types it, at default scale (about 40 minutes): (runs folder, process)."""
    runs = tmp_path_factory.getbasetemp() / "default-runs"
    proc = run(["-m", "tinymono", "reproduce", "--scale", "default", "--out", str(runs)], timeout=3 * 3600)
    print(proc.stdout[-3000:])
    return runs, proc


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LESSONS))
def test_lesson_at_default_scale(name, default):
    runs, _ = default
    log = (runs / "default" / "logs" / f"{name}.log").read_text()
    print("\n".join(check_lines(log)))
    assert_lesson(name, "default", runs, subprocess.CompletedProcess([], 0, log, ""))


@pytest.mark.slow
def test_reproduce_at_default_scale_exits_cleanly(default):
    runs, proc = default
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (runs / "default" / "report.md").exists()


def test_seed_changes_every_seed_of_the_pipeline_and_the_run_folder(tmp_path):
    """`--seed N` reseeds the corpus, the transformer and the SAE, and nothing else; its run has a folder
    of its own, so a second seed never reads the first one's cache."""
    import dataclasses

    from tinymono import pipeline
    from tinymono.lesson import Lesson

    c0, c1 = pipeline.corpus_config("default"), pipeline.corpus_config("default", seed=1)
    assert c1 == dataclasses.replace(c0, seed=1) and c1.fingerprint() != c0.fingerprint()
    (m0, t0), (m1, t1) = pipeline.transformer_configs("default"), pipeline.transformer_configs("default", seed=1)
    assert m1 == m0 and t1 == dataclasses.replace(t0, seed=1)
    s0, s1 = pipeline.sae_config("default", 128), pipeline.sae_config("default", 128, seed=1)
    assert s1 == dataclasses.replace(s0, seed=1)
    lesson = Lesson("x", argv=["--seed", "1", "--runs", str(tmp_path)])
    assert lesson.seed == 1 and lesson.cache == tmp_path / "default-seed1" / "cache"
    assert Lesson("x", argv=["--runs", str(tmp_path)]).cache == tmp_path / "default" / "cache"
    assert Lesson("x", argv=["--out", str(tmp_path)]).cache == tmp_path / "default" / "cache", "reproduce's name too"
    with pytest.raises(SystemExit):
        Lesson("x", argv=["--seed", "-1", "--runs", str(tmp_path)])


def test_set_changes_a_setting_for_one_run_and_reuses_what_it_does_not_touch(smoke):
    """`reproduce --set sae.l1_coefficient=...`: a run folder of its own, the setting in its report, a new SAE
    (trained with it: a 10x L1 penalty fires fewer latents), the transformer reused from the plain run."""
    from tinymono import pipeline, settings

    runs = smoke[0]
    l1 = 10 * pipeline.SIZES["smoke"]["sae"]["l1_coefficient"]
    proc = run(["-m", "tinymono", "reproduce", "--scale", "smoke", "--out", str(runs), "--only", "06",
                "--set", f"sae.l1_coefficient={l1!r}"], timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    key = settings.key({"sae": {"l1_coefficient": l1}})
    folder = runs / f"smoke-set-{key}"
    assert f"| settings                  | sae.l1_coefficient={l1!r}" in (folder / "report.md").read_text()
    assert json.loads((folder / "settings.json").read_text())["set"] == [f"sae.l1_coefficient={l1!r}"]
    from tinymono import checkpoint

    trained = [p for p in (runs / "smoke" / "cache").glob("sae-*.npz")
               if checkpoint.load(p)[1]["config"]["l1_coefficient"] == l1]
    assert len(trained) == 1, "one SAE of its own, beside the plain run's sae.npz"
    log = (folder / "logs" / "06_sae_on_transformer.log").read_text()
    assert "transformer: " in log and "finished earlier" in log and "transformer: 0/" not in log, \
        "an SAE setting must reuse the transformer"

    def l0(path):
        return next(c["value"] for c in json.loads(path.read_text())["checks"] if "L0" in c["name"])
    assert l0(folder / "06_sae_on_transformer" / "result.json") < l0(runs / "smoke" / "06_sae_on_transformer" /
                                                                    "result.json"), "the setting did not reach the SAE"
    bad = run(["-m", "tinymono", "reproduce", "--scale", "smoke", "--out", str(runs), "--set", "sae.d_sae=0"], 120)
    assert bad.returncode == 2 and "d_sae must be a positive integer" in bad.stderr and "Traceback" not in bad.stderr


def test_another_dictionary_size_keeps_the_recipe_and_its_own_checkpoint(smoke):
    """Lesson 08's small SAE: the paper's recipe with only d_sae changed, cached beside the main SAE."""
    import dataclasses

    from tinymono import checkpoint, pipeline

    main = pipeline.sae_config("default", 128)
    assert pipeline.sae_config("default", 128, d_sae=64) == dataclasses.replace(main, d_sae=64)
    cache = smoke[0] / "smoke" / "cache"
    sizes = {name: checkpoint.load(cache / name)[1]["config"]["d_sae"] for name in ("sae.npz", "sae_16.npz")}
    assert sizes == {"sae.npz": 512, "sae_16.npz": 16}


def test_a_stage_imports_the_tinymono_that_runs_it(tmp_path, monkeypatch):
    """A lesson runs as a child process; it must import this tinymono, not one found first elsewhere (here a
    decoy package on PYTHONPATH, as another checkout or an installed copy would be)."""
    from tinymono.reproduce import SOURCE_ROOT, run_stage

    decoy = tmp_path / "decoy" / "tinymono"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(decoy.parent))
    lesson = tmp_path / "99_which.py"
    lesson.write_text("import tinymono\nprint('imported', tinymono.__file__)\n")
    code, _, tail = run_stage(lesson, "smoke", tmp_path, tmp_path / "log")
    assert code == 0, tail
    imported = [line.split("imported ", 1)[1].strip() for line in tail if "imported " in line]
    assert imported == [str(SOURCE_ROOT / "tinymono" / "__init__.py")], tail


def test_a_stage_whose_output_is_not_utf8_is_relayed_to_its_end(tmp_path):
    """A byte that is not UTF-8 in a lesson's output (a sampled byte printed raw) must not end the relay: its
    reader would stop, and a lesson that prints more than a pipe holds would then block for ever (so the
    driver runs in a process of its own, with a timeout)."""
    lesson = tmp_path / "99_bytes.py"
    lesson.write_text("import sys\nsys.stdout.buffer.write(b'sampled \\xd7\\n')\n"
                      "for i in range(20000):\n    print('line', i, 'x' * 40)\n")  # about 1 MB: 16 pipes' worth
    driver = ("from pathlib import Path; from tinymono.reproduce import run_stage; "
              f"code, _, tail = run_stage(Path({str(lesson)!r}), 'smoke', Path({str(tmp_path)!r}), "
              f"Path({str(tmp_path / 'log')!r})); print('result', code, tail[-1], end='')")
    proc = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=60)
    assert proc.stdout.endswith("result 0 line 19999 " + "x" * 40 + "\n"), proc.stdout[-300:] + proc.stderr[-2000:]
    assert "sampled \ufffd\n" in (tmp_path / "log").read_text()


def test_a_stage_takes_its_settings_from_its_command_line_not_the_environment(tmp_path, monkeypatch):
    """TINYMONO_SET (and the other settings a notebook reads from the environment) in the shell that runs
    `reproduce` must not reach a stage: --set would add its settings to the stage's own, and the stage would
    write its results into another run's folder than the one the report reads."""
    from tinymono.reproduce import run_stage

    monkeypatch.setenv("TINYMONO_SET", "sae.l1_coefficient=4e-4")
    monkeypatch.setenv("TINYMONO_SEED", "3")
    lesson = tmp_path / "99_where.py"
    lesson.write_text("import tinymono\nfrom tinymono.lesson import Lesson\nprint('out', Lesson('99_where').out)\n")
    code, _, tail = run_stage(lesson, "smoke", tmp_path, tmp_path / "log", seed=1)
    assert code == 0, tail
    assert [line.split("out ", 1)[1].strip() for line in tail if line.startswith("out ")] == \
        [str(tmp_path / "smoke-seed1" / "99_where")], tail


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_imports_tinymono_before_numpy(name):
    """OpenBLAS reads its idle-thread timeout once, when NumPy loads it; tinymono sets it, so a lesson that
    imported NumPy first would train its SAEs about 2x slower (docs/experiments.md)."""
    import ast
    tree = ast.parse((ROOT / "lessons" / f"{name}.py").read_text())
    order = [alias.name.split(".")[0] if isinstance(node, ast.Import) else (node.module or "").split(".")[0]
             for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
             for alias in (node.names if isinstance(node, ast.Import) else node.names[:1])]
    assert "tinymono" in order and "numpy" in order
    assert order.index("tinymono") < order.index("numpy"), f"{name} imports {order}: tinymono must come before numpy"
