"""The shared training loop and checkpoints: resume, Ctrl-C, the non-finite guard, corrupt files."""
import json
import os
import signal

import numpy as np
import pytest

from tinymono import checkpoint as ckpt
from tinymono import toy
from tinymono.train import NonFiniteError, train

CFG = toy.ToyConfig(5, 2, n_inst=3, feature_probability=[1.0, 0.1, 0.03], importance=0.7 ** np.arange(5),
                    batch_size=32, steps=60, lr=0.01, seed=1)


class InterruptAt(toy.ToyTask):
    """A toy task that presses Ctrl-C (sends itself SIGINT, or `signum`) while running the chunk that starts at `at`."""

    def __init__(self, cfg, at, signum=signal.SIGINT):
        super().__init__(cfg)
        self.at, self.signum = at, signum

    def run_chunk(self, start_step, n_steps):
        if start_step == self.at:
            os.kill(os.getpid(), self.signum)
        return super().run_chunk(start_step, n_steps)


class PoisonAt(toy.ToyTask):
    """A toy task whose weights become NaN in the chunk that starts at `at`."""

    def __init__(self, cfg, at):
        super().__init__(cfg)
        self.at = at

    def run_chunk(self, start_step, n_steps):
        if start_step == self.at:
            self.params["W"][0, 0, 0] = np.nan
        return super().run_chunk(start_step, n_steps)


def test_resume_after_ctrl_c_is_bit_identical(tmp_path):
    straight = toy.ToyTask(CFG)
    full = train(straight, CFG.steps, chunk_steps=10, progress=False)

    path = tmp_path / "toy.npz"
    with pytest.raises(KeyboardInterrupt):
        train(InterruptAt(CFG, at=30), CFG.steps, chunk_steps=10, checkpoint=path, progress=False)
    _, meta = ckpt.load(path)
    assert meta["step"] == 40, "Ctrl-C during the chunk at 30 should finish that chunk, save at 40 and stop"

    resumed = toy.ToyTask(CFG)
    result = train(resumed, CFG.steps, chunk_steps=10, checkpoint=path, progress=False)
    assert result.resumed_from == 40 and result.step == CFG.steps
    for k in straight.params:
        assert np.array_equal(resumed.params[k], straight.params[k]), \
            f"{k} differs after resume: the checkpoint must hold every array the run's future depends on"
    for k in full.history:
        np.testing.assert_array_equal(result.history[k], full.history[k], err_msg=f"history {k}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_kill_saves_like_ctrl_c_and_exits_as_killed(tmp_path, signum):
    """`kill` (SIGTERM) or a closed terminal (SIGHUP) mid-run: the chunk is finished and saved as for Ctrl-C,
    then the loop exits as a process killed by that signal does (128 + its number), and the signal's own
    handler is back afterwards."""
    before = signal.getsignal(signum)
    path = tmp_path / "toy.npz"
    with pytest.raises(SystemExit) as stopped:
        train(InterruptAt(CFG, at=30, signum=signum), CFG.steps, chunk_steps=10, checkpoint=path, progress=False)
    assert stopped.value.code == 128 + signum
    assert ckpt.load(path)[1]["step"] == 40
    assert signal.getsignal(signum) is before


def test_resume_with_other_chunking_gives_the_same_numbers(tmp_path):
    a = toy.ToyTask(CFG)
    train(a, CFG.steps, chunk_steps=7, progress=False)
    b = toy.ToyTask(CFG)
    train(b, 25, chunk_steps=25, checkpoint=tmp_path / "c", progress=False)
    train(toy.ToyTask(CFG), CFG.steps, chunk_steps=60, checkpoint=tmp_path / "c", progress=False)
    c = toy.ToyTask(CFG)
    c.load_state_arrays(ckpt.load(tmp_path / "c.npz")[0])
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k])


def test_a_finished_run_is_loaded_not_written_again(tmp_path):
    train(toy.ToyTask(CFG), CFG.steps, chunk_steps=30, checkpoint=tmp_path / "c", progress=False)
    path = tmp_path / "c.npz"
    os.utime(path, ns=(0, 0))  # mark it: a rewrite would give it a new modification time
    result = train(toy.ToyTask(CFG), CFG.steps, chunk_steps=30, checkpoint=tmp_path / "c", progress=False)
    assert result.resumed_from == CFG.steps and path.stat().st_mtime_ns == 0, "the checkpoint was rewritten"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "toy.npz"
    with pytest.raises(NonFiniteError, match=r"non-finite.*steps 30\.\.39.*step 30\) is kept"):
        train(PoisonAt(CFG, at=30), CFG.steps, chunk_steps=10, checkpoint=path, save_every=0, progress=False)
    arrays, meta = ckpt.load(path)
    assert meta["step"] == 30 and np.all(np.isfinite(arrays["W"])), "the checkpoint must be the last good state"


def test_corrupt_or_truncated_checkpoint_is_refused_and_kept(tmp_path):
    path = tmp_path / "toy.npz"
    train(toy.ToyTask(CFG), 20, chunk_steps=10, checkpoint=path, progress=False)
    good = path.read_bytes()
    for broken in (good[: len(good) // 2], good[:100] + b"\x00" * 50 + good[150:], b"not a zip file"):
        path.write_bytes(broken)
        with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt"):
            train(toy.ToyTask(CFG), CFG.steps, chunk_steps=10, checkpoint=path, progress=False)
        assert path.read_bytes() == broken, "a refused checkpoint must not be overwritten"


def test_checkpoint_for_another_config_or_shape_is_refused(tmp_path):
    path = tmp_path / "toy.npz"
    train(toy.ToyTask(CFG), 20, chunk_steps=10, checkpoint=path, progress=False)
    other = toy.ToyConfig(5, 2, n_inst=3, batch_size=32, steps=60, lr=0.02, seed=1)
    with pytest.raises(ckpt.CheckpointError, match="different config"):
        train(toy.ToyTask(other), other.steps, checkpoint=path, progress=False)
    arrays, meta = ckpt.load(path)
    arrays["W"] = arrays["W"][:, :, :4]
    ckpt.save(path, arrays, meta)
    with pytest.raises(ckpt.CheckpointError, match=r"W has shape \(3, 2, 4\), but the config says \(3, 2, 5\)"):
        train(toy.ToyTask(CFG), CFG.steps, checkpoint=path, progress=False)


def test_checkpoint_roundtrip_without_pickle(tmp_path):
    arrays = {"a": np.arange(6.0).reshape(2, 3), "b": np.array([1, 2], dtype=np.uint16)}
    path = ckpt.save(tmp_path / "x", arrays, {"config": {"n": 1}, "step": 3})
    back, meta = ckpt.load(path)
    assert meta == {"config": {"n": 1}, "step": 3}
    assert all(np.array_equal(back[k], arrays[k]) and back[k].dtype == arrays[k].dtype for k in arrays)
    assert json.loads((tmp_path / "x.json").read_text())["step"] == 3, "the readable JSON copy sits beside it"
    assert not list(tmp_path.glob("*.tmp*")), "no temporary files may be left behind"
    with pytest.raises(TypeError, match="object"):
        ckpt.save(tmp_path / "y", {"o": np.array([{}], dtype=object)}, {})
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.load(tmp_path / "missing")


def test_each_run_that_steps_records_its_steps_items_and_time(tmp_path, monkeypatch):
    """train.RUNS: what `reproduce` reports as a stage's throughput. A resumed run counts only the steps it
    ran; a finished run loaded from its checkpoint ran none and adds nothing."""
    from tinymono import train as train_module
    from tinymono.reproduce import throughput

    monkeypatch.setattr(train_module, "RUNS", [])
    path = tmp_path / "c"
    train(toy.ToyTask(CFG), 20, chunk_steps=10, checkpoint=path, progress=False, desc="toy")
    train(toy.ToyTask(CFG), CFG.steps, chunk_steps=10, checkpoint=path, progress=False, desc="toy")
    train(toy.ToyTask(CFG), CFG.steps, chunk_steps=10, checkpoint=path, progress=False, desc="toy")
    runs = train_module.RUNS
    assert [r["steps"] for r in runs] == [20, CFG.steps - 20], runs
    assert all(r["items"] == r["steps"] * CFG.n_inst and r["items_name"] == "inst-step" and r["seconds"] > 0
               for r in runs)
    shown = throughput({"training": runs})
    assert shown.startswith("toy: 20 steps, ") and "inst-step/s; toy: 40 steps" in shown
    assert throughput({"training": [{"desc": "x"}]}) == "" and throughput(None) == "", "damaged or absent: nothing"


class TwiceAt(toy.ToyTask):
    def run_chunk(self, start_step, n_steps):
        if start_step == 20:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return super().run_chunk(start_step, n_steps)


def test_a_second_ctrl_c_aborts_at_once(tmp_path):
    path = tmp_path / "toy.npz"
    with pytest.raises(KeyboardInterrupt):
        train(TwiceAt(CFG), CFG.steps, chunk_steps=10, checkpoint=path, save_every=0, progress=False)
    assert ckpt.load(path)[1]["step"] == 20, "the second Ctrl-C must abort before the chunk finishes and saves"


def test_chunks_of_no_steps_are_refused(tmp_path):
    with pytest.raises(ValueError, match="chunk_steps >= 1"):
        train(toy.ToyTask(CFG), CFG.steps, chunk_steps=0, progress=False)


def test_a_ctrl_c_during_the_last_save_lets_it_finish(tmp_path, monkeypatch):
    """The final checkpoint was written after the loop's handler was gone: a Ctrl-C then cut it short, and the
    run kept only its last periodic checkpoint. Now the save finishes, and the run stops as asked."""
    path, real = tmp_path / "toy.npz", ckpt.save

    def save(target, arrays, meta):
        if meta["step"] == CFG.steps:
            os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, while the last checkpoint is written
        return real(target, arrays, meta)

    monkeypatch.setattr(ckpt, "save", save)
    with pytest.raises(KeyboardInterrupt):
        train(toy.ToyTask(CFG), CFG.steps, chunk_steps=10, checkpoint=path, save_every=3600, progress=False)
    assert ckpt.load(path)[1]["step"] == CFG.steps
