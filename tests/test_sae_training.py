"""Resampling dead latents, and training an SAE through the shared loop: resume, Ctrl-C, the non-finite
guard, bad batches and bad checkpoints."""
import signal

import numpy as np
import pytest

from tinymono import checkpoint as ckpt
from tinymono import sae
from tinymono.groundtruth import GroundTruth, GroundTruthConfig
from tinymono.optim import Adam
from tinymono.train import NonFiniteError, train

GT = GroundTruth(GroundTruthConfig(d=8, n_features=12, mean_active=2))


def small_cfg(**kw):
    base = dict(d_in=8, d_sae=24, batch_size=32, steps=60, l1_coefficient=3e-3, lr=3e-3,
                resample_at=(0.25, 0.6), dead_window=0.1, resample_batches=2, init_sample=64, sparse_below=0.3)
    return sae.SAEConfig(**{**base, **kw})


# ----------------------------------------------------------------------------------------------------
# resampling


def test_resampling_touches_only_dead_latents():
    rng = np.random.default_rng(0)
    cfg = sae.SAEConfig(d_in=6, d_sae=10, batch_size=16, dtype="float64")
    params = sae.init(cfg, rng)
    opt = Adam(params)
    opt.step(params, {k: rng.standard_normal(v.shape) for k, v in params.items()})  # nonzero moments everywhere
    before = {k: v.copy() for k, v in params.items()}
    m_before = {k: v.copy() for k, v in opt.m.items()}
    dead = np.zeros(10, dtype=bool)
    dead[[2, 5, 7]] = True
    inputs = rng.standard_normal((40, 6))
    idx = sae.resample_dead(params, opt, dead, inputs, cfg, rng)
    np.testing.assert_array_equal(idx, [2, 5, 7])
    alive = ~dead
    for k in ("W_dec", "b_enc"):
        np.testing.assert_array_equal(params[k][alive], before[k][alive], err_msg=f"alive latents' {k} must not change")
        assert np.all(opt.m[k][dead] == 0) and np.all(opt.v[k][dead] == 0), f"Adam moments of resampled {k} must be 0"
        np.testing.assert_array_equal(opt.m[k][alive], m_before[k][alive], err_msg=f"alive latents' {k} moments kept")
    np.testing.assert_array_equal(params["W_enc"][:, alive], before["W_enc"][:, alive])
    assert np.all(opt.m["W_enc"][:, dead] == 0) and np.all(opt.v["W_enc"][:, dead] == 0), \
        "Adam moments of resampled encoder COLUMNS must be reset (W_enc is [d_in, d_sae])"
    np.testing.assert_array_equal(opt.m["W_enc"][:, alive], m_before["W_enc"][:, alive])
    np.testing.assert_array_equal(params["b_dec"], before["b_dec"])
    np.testing.assert_allclose(np.linalg.norm(params["W_dec"][dead], axis=1), 1, rtol=1e-12,
                               err_msg="resampled decoder rows must be unit norm")
    assert np.all(params["b_enc"][dead] == 0)
    target = 0.2 * np.linalg.norm(before["W_enc"][:, alive], axis=0).mean()
    np.testing.assert_allclose(np.linalg.norm(params["W_enc"][:, dead], axis=0), target, rtol=1e-12,
                               err_msg="new encoder columns: 0.2 x the mean encoder norm of the ALIVE latents")
    np.testing.assert_allclose(params["W_enc"][:, dead].T / target, params["W_dec"][dead], rtol=1e-12,
                               err_msg="encoder column and decoder row of a resampled latent share one direction")
    units = inputs / np.linalg.norm(inputs, axis=1, keepdims=True)
    for j in np.flatnonzero(dead):  # each new direction is one of the inputs, normalised
        assert np.abs(units @ params["W_dec"][j] - 1).min() < 1e-12
    assert sae.resample_dead(params, opt, np.zeros(10, bool), inputs, cfg, rng).size == 0


def test_resampling_prefers_inputs_with_high_loss():
    rng = np.random.default_rng(3)
    cfg = sae.SAEConfig(d_in=6, d_sae=10, dtype="float64", l1_coefficient=0.0)
    params = sae.init(cfg, rng)
    inputs = 0.1 * rng.standard_normal((50, 6))
    inputs[17] = 30.0 * rng.standard_normal(6)  # loss ~1e5 times the others, loss squared ~1e10
    dead = np.zeros(10, dtype=bool)
    dead[4] = True
    sae.resample_dead(params, Adam(params), dead, inputs, cfg, rng)
    np.testing.assert_allclose(params["W_dec"][4], inputs[17] / np.linalg.norm(inputs[17]), rtol=1e-12,
                               err_msg="inputs must be drawn with probability proportional to their loss squared")


def test_resampling_weights_are_the_losses_squared():
    rng = np.random.default_rng(5)
    cfg = sae.SAEConfig(d_in=6, d_sae=10, batch_size=16, dtype="float64", l1_coefficient=1e-2)
    params = sae.init(cfg, rng)
    inputs = rng.standard_normal((40, 6)) * rng.uniform(0.2, 3.0, (40, 1))  # losses over two decades
    f = np.maximum((inputs - params["b_dec"]) @ params["W_enc"] + params["b_enc"], 0)
    x_hat = f @ params["W_dec"] + params["b_dec"]
    loss = np.mean((x_hat - inputs) ** 2, axis=1) + cfg.l1_coefficient * f.sum(axis=1)  # by hand

    class Recorder:
        def choice(self, n, size, replace, p):
            self.p = p
            return np.arange(size)

    dead = np.zeros(10, dtype=bool)
    dead[[1, 6]] = True
    rec = Recorder()
    sae.resample_dead(params, Adam(params), dead, inputs, cfg, rec)
    np.testing.assert_allclose(rec.p, loss**2 / (loss**2).sum(), rtol=1e-10,
                               err_msg="inputs must be drawn with probability proportional to their loss SQUARED")


def test_dead_means_silent_for_the_whole_window():
    cfg = small_cfg(steps=100, dead_window=0.1)  # 10 steps
    task = sae.SAETask(cfg, GT)
    assert cfg.dead_window_steps == 10
    task.since_fired[:] = 0
    task.since_fired[[1, 2]] = 9
    task.since_fired[[3, 4]] = 10
    task.since_fired[5] = 11
    np.testing.assert_array_equal(np.flatnonzero(task.dead()), [3, 4, 5],
                                  err_msg="a latent silent for exactly dead_window_steps steps is dead; one less is not")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_dead_below_counts_the_windows_firings(backend):
    """dead_below > 0: at a scheduled resampling, the latents that fired on at most that share of the dead
    window's inputs are resampled too. The firings are counted here independently, with the forward pass on
    each batch the task draws, and the rule applied to them by hand."""
    cfg = small_cfg(steps=40, resample_at=(0.5,), dead_window=0.25, dead_below=0.05, backend=backend)
    assert cfg.resample_steps == [20] and cfg.dead_window_steps == 10  # window: steps 10..19, 320 inputs
    limit = 0.05 * 10 * cfg.batch_size  # 16 firings
    fires, step_now = np.zeros(cfg.d_sae, dtype=np.int64), [0]

    def source(rng, n):
        x = GT.sample(rng, n)
        if n == cfg.batch_size and 10 <= step_now[0] < 20:  # the batch of a step in the window (not init's sample)
            fires[:] += np.count_nonzero(sae.forward(task.params, x.astype(cfg.dtype), cfg)[0].f > 0, axis=0)
        return x

    task = sae.SAETask(cfg, source)
    task.params["b_enc"][:8] -= np.linspace(0.2, 3.0, 8)  # latents from rare to silent
    for step in range(20):
        step_now[0] = step
        task.step(step)
    np.testing.assert_array_equal(task.window_fires, fires, err_msg="firings counted over the dead window")
    want = (fires <= limit) | (task.since_fired >= cfg.dead_window_steps)
    assert 0 < want.sum() < cfg.d_sae and np.any(fires[want] > 0), "the test needs rare (not silent) latents"
    np.testing.assert_array_equal(task.to_resample(20), want)
    assert not np.array_equal(task.dead(), want), "the paper's rule alone would resample fewer latents"
    step_now[0] = 20
    task.step(20)
    assert task.resampled == [(20, int(want.sum()))]
    assert sae.SAETask(small_cfg(), GT).config_dict().get("dead_below", "absent") == "absent", \
        "dead_below = 0 (the paper's rule) keeps checkpoints' configs as they were"


def test_dead_below_threshold_covers_the_steps_counted():
    """Windows longer than the gap between resamplings overlap: the later window's start zeroes the counts
    inside the earlier window, and the run's first window may begin before step 0. The share dead_below is
    then of the inputs actually counted, not of a whole window's."""
    cfg = small_cfg(steps=40, resample_at=(0.25, 0.5), dead_window=0.375, dead_below=0.05)
    assert cfg.resample_steps == [10, 20] and cfg.dead_window_steps == 15
    task = sae.SAETask(cfg, GT)
    assert sorted(task.window_starts) == [-5, 5]  # the window of step 20 begins at 5, inside that of step 10
    assert [task.window_steps(10), task.window_steps(20)] == [5, 15], \
        "counts zeroed at step 5 cover steps 5..9 when step 10 reads them, and 5..19 at step 20"
    task.since_fired[:] = 0  # nothing dead by the paper's rule: only dead_below decides
    task.window_fires[:] = np.arange(cfg.d_sae)
    limit = 0.05 * 5 * cfg.batch_size  # 8 firings in the 5 steps counted (a whole window's would be 24)
    np.testing.assert_array_equal(task.to_resample(10), np.arange(cfg.d_sae) <= limit)
    no_overlap = sae.SAETask(small_cfg(steps=40, resample_at=(0.5,), dead_window=0.25), GT)
    assert no_overlap.window_steps(20) == no_overlap.cfg.dead_window_steps == 10


def test_a_step_is_backward_projection_adam_then_unit_rows():
    """One step of the task, against the paper's recipe written out: the decoder gradient loses its
    component along each row, Adam at the scheduled rate, then the rows go back to unit norm."""
    cfg = small_cfg(dtype="float64", backend="numpy", resample_at=(), lr_decay_start=0.0, steps=10)
    x = GT.sample(np.random.default_rng(9), cfg.batch_size)
    task = sae.SAETask(cfg, lambda rng, n: x[:n] if n <= len(x) else GT.sample(rng, n))
    p = {k: v.copy() for k, v in task.params.items()}
    adam = Adam(p, betas=cfg.adam_betas, eps=cfg.adam_eps)  # checked by hand in test_gradcheck_optim
    for step in range(3):
        out, cache = sae.forward(p, x, cfg)
        g = sae.backward(p, cache, cfg)
        W = p["W_dec"]
        g["W_dec"] = g["W_dec"] - np.sum(g["W_dec"] * W, axis=1, keepdims=True) * W  # rows are unit norm
        adam.step(p, g, lr=cfg.lr * (1 - step / cfg.steps))  # linear decay from step 0
        p["W_dec"] /= np.linalg.norm(p["W_dec"], axis=1, keepdims=True)
        task.step(step)
        for k in p:
            np.testing.assert_allclose(task.params[k], p[k], rtol=1e-9, atol=1e-12,
                                       err_msg=f"step {step}: {k} differs from the recipe written out")


def test_task_resamples_on_schedule():
    cfg = small_cfg(steps=40, resample_at=(0.5,), dead_window=0.25)
    task = sae.SAETask(cfg, GT)
    task.since_fired[:5] = 100  # pretend five latents have been silent for long
    task.params["b_enc"][:5] = -1e3  # ...and keep them silent until the resampling
    train(task, 40, chunk_steps=10, progress=False)
    assert [s for s, _ in task.resampled] == [20], "resampling happens at the scheduled step only"
    assert task.resampled[0][1] >= 5, "the five silent latents must have been resampled"
    assert np.all(task.params["b_enc"][:5] > -1e3)


def test_resampled_latents_start_a_new_dead_window():
    task = sae.SAETask(small_cfg(), GT)
    task.since_fired[:] = np.arange(24) * 3  # latents 2, 3, ... have been silent for >= dead_window_steps = 6
    idx = task.resample(15)
    np.testing.assert_array_equal(idx, np.arange(2, 24))
    np.testing.assert_array_equal(task.since_fired, [0, 3] + [0] * 22)
    assert not task.dead().any() and task.resampled == [(15, 22)]


def test_resampling_skips_all_zero_inputs():
    """An all-zero input has the largest loss when b_dec is far from 0, but no direction to give a latent."""
    rng = np.random.default_rng(0)
    cfg = sae.SAEConfig(d_in=6, d_sae=10, batch_size=16, dtype="float64")
    params = sae.init(cfg, rng)
    params["b_dec"][:] = 5.0
    inputs = rng.standard_normal((40, 6))
    inputs[::2] = 0
    dead = np.arange(10) < 8
    sae.resample_dead(params, Adam(params), dead, inputs, cfg, rng)
    assert np.all(np.isfinite(params["W_dec"])) and np.all(np.isfinite(params["W_enc"]))
    units = inputs[1::2] / np.linalg.norm(inputs[1::2], axis=1, keepdims=True)
    assert np.all(np.abs(units @ params["W_dec"][dead].T - 1).min(axis=0) < 1e-12), "each new row is a nonzero input"
    with pytest.raises(ValueError, match="all zeros"):
        sae.resample_dead(params, Adam(params), dead, np.zeros((8, 6)), cfg, rng)


# ----------------------------------------------------------------------------------------------------
# training through the loop


def test_training_reduces_loss_on_both_backends():
    for backend in ("numpy", "numba"):
        cfg = small_cfg(steps=300, backend=backend, sparse_below=0.5)
        result = train(sae.SAETask(cfg, GT), cfg.steps, chunk_steps=50, progress=False)
        mse = result.history["mse"]
        assert mse[-1] < 0.5 * mse[0], f"{backend}: mse {mse} must fall by half in 300 steps"
        assert set(result.history) >= {"loss", "mse", "l1", "l0", "dead"}


def test_numba_and_numpy_backends_agree():
    cfg64 = dict(dtype="float64", sparse_below=1.0, steps=20)
    tasks = [sae.SAETask(small_cfg(backend=b, **cfg64), GT) for b in ("numpy", "numba")]
    for t in tasks:
        t.run_chunk(0, 20)
    for k in tasks[0].params:
        np.testing.assert_allclose(tasks[1].params[k], tasks[0].params[k], rtol=1e-8, atol=1e-10,
                                   err_msg=f"the sparse path must train exactly like the dense one ({k})")


def test_switching_between_sparse_and_dense_steps_changes_nothing(monkeypatch):
    """With sparse_below near the active fraction the numba task alternates between its sparse kernels and
    the dense reference (and resamples twice); it must still train exactly like the dense NumPy task."""
    sparse_steps = []
    real = sae.train_step_sparse

    def spy(*args):
        out = real(*args)
        sparse_steps.append(out is not None)
        return out

    monkeypatch.setattr(sae, "train_step_sparse", spy)
    tasks = [sae.SAETask(small_cfg(backend=b, dtype="float64", sparse_below=0.4), GT) for b in ("numpy", "numba")]
    for t in tasks:
        t.run_chunk(0, t.cfg.steps)
    assert 10 < sum(sparse_steps) < len(sparse_steps) - 10, f"the test needs both paths: {sparse_steps}"
    assert tasks[1].resampled == tasks[0].resampled and len(tasks[0].resampled) == 2
    for k in tasks[0].params:
        np.testing.assert_allclose(tasks[1].params[k], tasks[0].params[k], rtol=1e-8, atol=1e-10,
                                   err_msg=f"mixing sparse and dense steps changed {k}")


def state_of(task):
    return {k: np.array(v) for k, v in task.state_arrays().items()}


def assert_same_state(a, b, what):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{what}: {k} differs")


@pytest.mark.parametrize("dead_below", [0.0, 0.2])
def test_resume_is_bit_identical(tmp_path, dead_below):
    cfg = small_cfg(dead_below=dead_below)
    straight = sae.SAETask(cfg, GT)
    r1 = train(straight, cfg.steps, chunk_steps=3, checkpoint=tmp_path / "a", progress=False)
    first = sae.SAETask(cfg, GT)
    train(first, 33, chunk_steps=3, checkpoint=tmp_path / "b", progress=False)  # stop inside the window 30..35
    resumed = sae.SAETask(cfg, GT)
    r2 = train(resumed, cfg.steps, chunk_steps=3, checkpoint=tmp_path / "b", progress=False)
    assert r2.resumed_from == 33
    # the resampling record survives the checkpoint: the resumed run reports the resampling before its stop
    assert [s for s, _ in straight.resampled] == [15, 36] and resumed.resampled == straight.resampled
    assert_same_state(state_of(straight), state_of(resumed), "resumed run vs uninterrupted run")
    for k in r1.history:
        np.testing.assert_array_equal(r1.history[k], r2.history[k], err_msg=f"history {k} differs after resume")


def test_ctrl_c_saves_and_resumes(tmp_path):
    cfg = small_cfg()
    calls = {"n": 0}

    def interrupting_source(rng, n):
        calls["n"] += 1
        if calls["n"] == 25:
            signal.raise_signal(signal.SIGINT)  # as if the learner pressed Ctrl-C during step ~20
        return GT(rng, n)

    with pytest.raises(KeyboardInterrupt):
        train(sae.SAETask(cfg, interrupting_source), cfg.steps, chunk_steps=10, checkpoint=tmp_path / "c",
              progress=False)
    _, meta = ckpt.load(tmp_path / "c")
    assert 0 < meta["step"] < cfg.steps and meta["step"] % 10 == 0, "the chunk in progress finishes, then it saves"
    resumed = sae.SAETask(cfg, GT)
    train(resumed, cfg.steps, chunk_steps=10, checkpoint=tmp_path / "c", progress=False)
    straight = sae.SAETask(cfg, GT)
    train(straight, cfg.steps, chunk_steps=10, progress=False)
    assert_same_state(state_of(straight), state_of(resumed), "run resumed after Ctrl-C")


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_non_finite_guard_keeps_the_last_good_checkpoint(tmp_path):
    cfg = small_cfg()
    calls = {"n": 0}

    def exploding_source(rng, n):
        calls["n"] += 1
        x = GT(rng, n)
        return x * np.float32(1e30) if calls["n"] > 40 else x  # finite, but its square overflows float32

    path = tmp_path / "d"
    with pytest.raises(NonFiniteError, match="non-finite"):
        train(sae.SAETask(cfg, exploding_source), cfg.steps, chunk_steps=10, checkpoint=path, save_every=0.0,
              progress=False)
    arrays, meta = ckpt.load(path)
    assert meta["step"] >= 10, "the last good chunk's checkpoint must be on disk"
    assert all(np.all(np.isfinite(v)) for k, v in arrays.items() if v.dtype.kind == "f"), \
        "the bad state must never be saved"


def test_bad_batches_are_refused():
    cfg = small_cfg()
    with pytest.raises(ValueError, match="d_in=8"):
        sae.SAETask(cfg, lambda rng, n: np.zeros((n, 9), np.float32))
    task = sae.SAETask(cfg, GT)
    task.source = lambda rng, n: np.full((n, 8), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN or inf"):
        task.run_chunk(0, 1)
    task.source = lambda rng, n: np.ones((n - 1, 8), np.float32)
    with pytest.raises(ValueError, match="shape"):
        task.run_chunk(0, 1)


def test_bad_checkpoints_are_refused_and_kept(tmp_path):
    cfg = small_cfg()
    path = tmp_path / "e.npz"
    train(sae.SAETask(cfg, GT), 20, chunk_steps=10, checkpoint=path, progress=False)
    arrays, meta = ckpt.load(path)
    arrays["params.W_dec"] = arrays["params.W_dec"][:-1]  # one latent short
    ckpt.save(path, arrays, meta)
    original = path.read_bytes()
    with pytest.raises(ckpt.CheckpointError, match="W_dec"):
        train(sae.SAETask(cfg, GT), 40, chunk_steps=10, checkpoint=path, progress=False)
    assert path.read_bytes() == original, "a refused checkpoint must not be overwritten"
    path.write_bytes(original[: len(original) // 2])  # truncated
    with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt"):
        train(sae.SAETask(cfg, GT), 40, chunk_steps=10, checkpoint=path, progress=False)
    assert path.read_bytes() == original[: len(original) // 2]
    task = sae.SAETask(cfg, GT)
    bad = state_of(task)
    bad["rng"] = np.array("not json")
    with pytest.raises(ckpt.CheckpointError, match="random-number state"):
        task.load_state_arrays(bad)
    del bad["since_fired"]
    with pytest.raises(ckpt.CheckpointError, match="since_fired"):
        task.load_state_arrays(bad)


def test_resampling_draws_distinct_inputs_when_it_can():
    rng = np.random.default_rng(0)
    cfg = sae.SAEConfig(d_in=6, d_sae=10, batch_size=16, dtype="float64")
    params = sae.init(cfg, rng)
    inputs = np.zeros((40, 6))
    inputs[:8] = rng.standard_normal((8, 6))  # exactly 8 usable inputs for 8 dead latents
    dead = np.arange(10) < 8
    sae.resample_dead(params, Adam(params), dead, inputs, cfg, rng)
    units = inputs[:8] / np.linalg.norm(inputs[:8], axis=1, keepdims=True)
    match = np.argmax(params["W_dec"][dead] @ units.T, axis=1)  # which input each new row came from
    assert sorted(match.tolist()) == list(range(8)), f"inputs drawn more than once: {match}"


def test_since_fired_counts_steps_since_the_last_firing():
    cfg = sae.SAEConfig(d_in=4, d_sae=3, batch_size=8, steps=100, resample_at=(), dtype="float64", backend="numpy")
    task = sae.SAETask(cfg, lambda rng, n: np.abs(rng.standard_normal((n, 4))))
    task.params["b_enc"][:] = [1e3, -1e3, -1e3]  # latent 0 fires on every input, 1 and 2 never
    task.params["W_enc"][:] = 0.0
    for step in range(3):
        task.step(step)
    np.testing.assert_array_equal(task.since_fired[:2], [0, 3])
