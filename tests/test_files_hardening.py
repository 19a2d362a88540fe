"""Files the project wrote, read back after something went wrong: every defect is one clear error that names
the file and the fix (CheckpointError, StoreError, CorpusError: ValueErrors), a full disk says "disk full"
with the path at any stage, stale temporary files are removed, and the command line refuses arguments that
would write somewhere unexpected.

Each case damages a file the way a crash, a full disk, a hand edit or bit rot would, and checks the one
error a learner sees. A case fails if the error is a bare JSONDecodeError/KeyError/MemoryError/EOFError from
deep inside the standard library or NumPy, or if the damage is read back as data.
"""
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tinymono import activations as act
from tinymono import checkpoint as ckpt
from tinymono import corpus as C
from tinymono import corpus_build
from tinymono import files, reproduce, sae, toy
from tinymono.batches import ShuffledBatches
from tinymono.files import DiskFullError
from tinymono.store import LABEL_FIELDS, ActivationStore, StoreError
from tinymono.train import train
from test_activations import TINY, read_store_files, synthetic_corpus, tiny_model
from test_sae_training import GT, small_cfg

ROOT = Path(__file__).resolve().parents[1]
TOY = toy.ToyConfig(5, 2, n_inst=3, batch_size=32, steps=60, lr=0.01, seed=1)


def assert_clear(excinfo, path, *words):
    """The error names the file (or folder) and says what to do."""
    message = str(excinfo.value)
    assert str(path) in message, f"the error must name {path}: {message}"
    for word in words:
        assert word in message, f"the error must say {word!r}: {message}"


def write_npz(path, members):
    """An .npz written by hand, bypassing checkpoint.save's own checks (as a tampered file would be)."""
    with open(path, "wb") as fh:
        np.savez(fh, **members)


# ----------------------------------------------------------------------------------------------------
# checkpoints


@pytest.fixture
def toy_checkpoint(tmp_path):
    path = tmp_path / "toy.npz"
    train(toy.ToyTask(TOY), 20, chunk_steps=10, checkpoint=path, progress=False)
    arrays, meta = ckpt.load(path)
    return path, arrays, meta


def with_member(declared_shape, n_bytes):
    """Damage: the checkpoint gains a member whose header declares float64 `declared_shape` while it holds
    `n_bytes` bytes of data."""
    def damage(path, arrays, meta):
        write_npz(path, {**arrays, ckpt.META_KEY: np.array(json.dumps(meta))})
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": declared_shape})
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr("odd.npy", header.getvalue() + bytes(n_bytes))
    return damage


CHECKPOINT_DAMAGE = {
    "meta is not JSON": lambda p, a, m: write_npz(p, {**a, ckpt.META_KEY: np.array("{not json")}),
    "meta is a JSON list": lambda p, a, m: write_npz(p, {**a, ckpt.META_KEY: np.array("[1, 2]")}),
    "meta is a number array": lambda p, a, m: write_npz(p, {**a, ckpt.META_KEY: np.arange(3)}),
    "meta is missing": lambda p, a, m: write_npz(p, a),
    "a member declares 10^13 elements": with_member((10 ** 13,), 8),  # 80 TB: must not be allocated
    "a member holds more bytes than it declares": with_member((1,), 64),
    "a member holds fewer bytes than it declares": with_member((100,), 64),
    "a member's header brace flipped": lambda p, a, m: (write_npz(p, {**a, "big": np.zeros(2048),
                                                                  ckpt.META_KEY: np.array(json.dumps(m))}),
                                                        flip_header_brace(p, after=b"big.npy")),
    "a member is pickled": lambda p, a, m: write_npz(p, {**a, "o": np.array([{}], dtype=object),
                                                          ckpt.META_KEY: np.array(json.dumps(m))}),
    "empty file": lambda p, a, m: p.write_bytes(b""),
    "not a zip": lambda p, a, m: p.write_bytes(b"PK\x03\x04 but not really"),
    "truncated": lambda p, a, m: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "negative step": lambda p, a, m: ckpt.save(p, a, {**m, "step": -7}),
    "step past the run's own end": lambda p, a, m: ckpt.save(p, a, {**m, "step": 10 ** 6}),
    "step past this call's end": lambda p, a, m: ckpt.save(p, a, {**m, "step": 80, "total_steps": 80}),
    "step is a string": lambda p, a, m: ckpt.save(p, a, {**m, "step": "5"}),
    "step is a float": lambda p, a, m: ckpt.save(p, a, {**m, "step": 5.5}),
    "step is missing": lambda p, a, m: ckpt.save(p, a, {k: v for k, v in m.items() if k != "step"}),
    "config is a list": lambda p, a, m: ckpt.save(p, a, {**m, "config": [1, 2]}),
    "a state array is missing": lambda p, a, m: ckpt.save(p, {k: v for k, v in a.items() if k != "adam.v.W"}, m),
}


@pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE))
def test_a_damaged_checkpoint_is_one_clear_error(toy_checkpoint, damage):
    path, arrays, meta = toy_checkpoint
    CHECKPOINT_DAMAGE[damage](path, arrays, meta)
    before = path.read_bytes()
    with pytest.raises(ckpt.CheckpointError) as e:
        train(toy.ToyTask(TOY), TOY.steps, chunk_steps=10, checkpoint=path, progress=False)
    assert_clear(e, path)
    assert "delete" in str(e.value) or "another path" in str(e.value), f"say how to fix it: {e.value}"
    assert isinstance(e.value, ValueError)
    assert path.read_bytes() == before, "a refused checkpoint must be left as it was"


@pytest.mark.parametrize("since_fired", [np.array([np.nan] * 24), np.arange(24) - 5, np.arange(24) + 0.5],
                         ids=["NaN", "negative", "not whole"])
def test_sae_counters_must_be_counts(tmp_path, since_fired):
    path = tmp_path / "sae.npz"
    cfg = small_cfg()
    train(sae.SAETask(cfg, GT), 20, chunk_steps=10, checkpoint=path, progress=False)
    arrays, meta = ckpt.load(path)
    ckpt.save(path, {**arrays, "since_fired": since_fired}, meta)
    with pytest.raises(ckpt.CheckpointError, match="since_fired must hold counts") as e:
        train(sae.SAETask(cfg, GT), 40, chunk_steps=10, checkpoint=path, progress=False)
    assert_clear(e, path, "delete")


def test_a_damaged_batch_state_is_refused(tmp_path):
    store = act.harvest(tiny_model(), TINY, synthetic_corpus(600), tmp_path / "s", fast=False)
    batches = ShuffledBatches(store, block_rows=8, buffer_blocks=4)
    batches.next(10)
    good = batches.state_arrays()
    damaged = {"order not a permutation": {**good, "batches.order": np.zeros_like(good["batches.order"])},
               "position past the buffer": {**good, "batches.pos": np.array(10 ** 6)},
               "key missing": {k: v for k, v in good.items() if k != "batches.perm"},
               "rng not JSON": {**good, "batches.rng": np.array("{")}}
    for name, state in damaged.items():
        with pytest.raises(ckpt.CheckpointError, match="batch state"):
            ShuffledBatches(store, block_rows=8, buffer_blocks=4).load_state_arrays(state)


# ----------------------------------------------------------------------------------------------------
# the activation store


@pytest.fixture
def store(tmp_path):
    corpus, params = synthetic_corpus(700), tiny_model()
    act.harvest(params, TINY, corpus, tmp_path / "s", batch=4, fast=False)
    return tmp_path / "s", corpus, params


def edit_meta(path, change):
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps(change(meta)))


def overwrite_rows(path, lo, hi, value=7):
    """Rows lo..hi-1 of acts.npy overwritten in place (bit rot, or a stray write)."""
    offset, dtype, shape = files.npy_layout(path / "acts.npy", ValueError, "")
    with open(path / "acts.npy", "r+b") as fh:
        fh.seek(offset + lo * shape[1] * dtype.itemsize)
        fh.write(np.full((hi - lo, shape[1]), value, dtype).tobytes())


STORE_DAMAGE = {
    "meta.json is not JSON": lambda p: (p / "meta.json").write_text('{"format": 2, '),
    "meta.json is a list": lambda p: (p / "meta.json").write_text("[]"),
    "meta.json is empty": lambda p: (p / "meta.json").write_text(""),
    "meta.json lacks rows_done": lambda p: edit_meta(p, lambda m: {k: v for k, v in m.items() if k != "rows_done"}),
    "meta.json rows_done off a group boundary": lambda p: edit_meta(p, lambda m: {**m, "rows_done": 7}),
    "meta.json n_rows 10^13": lambda p: edit_meta(p, lambda m: {**m, "n_rows": 10 ** 13}),
    "meta.json d_mlp a string": lambda p: edit_meta(p, lambda m: {**m, "d_mlp": "16"}),
    "meta.json of format 1": lambda p: edit_meta(p, lambda m: {**m, "format": 1}),
    "meta.json with a checksum missing": lambda p: edit_meta(p, lambda m: {**m, "checksums": m["checksums"][:-1]}),
    "empty context.npy": lambda p: (p / "context.npy").write_bytes(b""),
    "acts.npy header is garbage": lambda p: (p / "acts.npy").write_bytes(b"\x93NUMPY\x01\x00garbage" * 10),
    "tokens.npy of another dtype": lambda p: np.save(p / "tokens.npy", np.zeros(700, np.uint8)),
    "acts.npy truncated": lambda p: os.truncate(p / "acts.npy", (p / "acts.npy").stat().st_size // 2),
    "index.npy truncated": lambda p: os.truncate(p / "index.npy", 200),
    "the last rows overwritten": lambda p: overwrite_rows(p, 690, 700),
    "the last rows' labels overwritten": lambda p: np.lib.format.open_memmap(p / "context.npy", mode="r+").__setitem__(
        slice(695, 700), 0),
    "acts.npy header's brace flipped": lambda p: flip_header_brace(p / "acts.npy"),  # NumPy's parser: TokenError
}


def flip_header_brace(path, after=b""):
    """Damage: the first '{' of a .npy header (the first after the bytes `after`, e.g. a zip member's name)
    becomes 'z'."""
    data = bytearray(path.read_bytes())
    i = data.index(b"{", data.index(after) if after else 0)
    data[i:i + 1] = b"z"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", list(STORE_DAMAGE))
def test_a_damaged_store_is_one_clear_error(store, damage):
    path, _, _ = store
    STORE_DAMAGE[damage](path)
    with pytest.raises(StoreError) as e:
        s = ActivationStore(path)
        s.acts, s.context  # noqa: B018 (mapping the files is part of opening for a reader)
    assert_clear(e, path, "delete")


def test_rows_damaged_early_are_found_on_demand(store):
    path, _, _ = store
    overwrite_rows(path, 3, 5)
    ActivationStore(path)  # the cheap default checks only the last group
    with pytest.raises(StoreError, match=r"rows 0\.\..* do not match the checksum") as e:
        ActivationStore(path, verify="all")
    assert_clear(e, path, "delete")
    with pytest.raises(StoreError, match="checksum"):
        ActivationStore(path).verify()
    with pytest.raises(ValueError, match="verify must be"):
        ActivationStore(path, verify="some")


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_continued_harvest_redoes_damaged_rows(tmp_path, damage):
    """A partial store whose acts.npy was then truncated (or rows overwritten) is checked when the harvest
    continues, and the rows are harvested again: the store ends identical to an uninterrupted one, never
    with rows of zeros."""
    corpus, params = synthetic_corpus(900), tiny_model()
    kw = dict(batch=4, fast=False, save_every=0.0)
    act.harvest(params, TINY, corpus, tmp_path / "whole", **kw)
    act.harvest(params, TINY, corpus, tmp_path / "s", max_rows=500, **kw)
    acts = tmp_path / "s" / "acts.npy"
    if damage == "truncated":
        os.truncate(acts, 1000)  # the header and a few rows survive
    else:
        overwrite_rows(tmp_path / "s", 100, 120, value=0)
    done = act.harvest(params, TINY, corpus, tmp_path / "s", **kw)
    assert done.meta["complete"]
    ref_arrays, ref_meta = read_store_files(tmp_path / "whole")
    arrays, meta = read_store_files(tmp_path / "s")
    assert meta == ref_meta
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], ref_arrays[k], err_msg=f"{k}: the damaged rows were not redone")
    ActivationStore(tmp_path / "s", verify="all")


def test_a_complete_store_with_damage_is_repaired_by_the_next_harvest(store):
    path, corpus, params = store
    good = (path / "acts.npy").read_bytes()
    overwrite_rows(path, 690, 700)
    act.harvest(params, TINY, corpus, path, batch=4, fast=False)
    assert (path / "acts.npy").read_bytes() == good, "the harvest must redo the rows that fail their checksum"


# ----------------------------------------------------------------------------------------------------
# the corpus


@pytest.fixture(scope="module")
def built_corpus(tmp_path_factory):
    return corpus_build.get_corpus(C.CorpusConfig(n_train_bytes=20_000, n_val_bytes=10_000), tmp_path_factory.mktemp("c"),
                        progress=False).path


def edit_corpus_meta(path, change):
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps(change(meta)))


CORPUS_DAMAGE = {
    "meta.json is not JSON": lambda p: (p / "meta.json").write_text("{"),
    "meta.json is a list": lambda p: (p / "meta.json").write_text("[]"),
    "meta.json lacks sizes": lambda p: edit_corpus_meta(p, lambda m: {k: v for k, v in m.items() if k != "sizes"}),
    "meta.json sizes are strings": lambda p: edit_corpus_meta(p, lambda m: {**m, "sizes": {"train": "x", "val": 1}}),
    "meta.json not complete": lambda p: edit_corpus_meta(p, lambda m: {**m, "complete": "yes"}),
    "empty train_context.npy": lambda p: (p / "train_context.npy").write_bytes(b""),
    "truncated val_tokens.npy": lambda p: os.truncate(p / "val_tokens.npy", 300),
    "a context label no name stands for": lambda p: np.lib.format.open_memmap(
        p / "train_context.npy", mode="r+").__setitem__(5, 200),
    "a token past DOC_SEP": lambda p: np.lib.format.open_memmap(p / "val_tokens.npy", mode="r+").__setitem__(3, 999),
}


@pytest.mark.parametrize("damage", list(CORPUS_DAMAGE))
def test_a_damaged_corpus_is_one_clear_error(built_corpus, tmp_path, damage):
    path = tmp_path / built_corpus.name
    shutil.copytree(built_corpus, path)
    CORPUS_DAMAGE[damage](path)
    with pytest.raises(C.CorpusError) as e:
        C.load_corpus(path)
    assert_clear(e, path, "delete")


# ----------------------------------------------------------------------------------------------------
# a full disk, simulated: the OS's own error (errno 28) raised where a write meets it


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an open file through /proc (Linux)")
def test_atomic_write_syncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    """The rename reaches the disk only when the folder holding it is synced; a power cut could undo it."""
    synced, real = [], os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    files.atomic_write(tmp_path / "a.txt", lambda fh: fh.write(b"x"))
    assert len(synced) == 2 and synced[1] == str(tmp_path), synced
    assert (tmp_path / "a.txt").read_bytes() == b"x"


def test_write_npy_lets_the_disk_say_it_is_full():
    """np.save reports a full disk only as 'N requested and M written' (no errno); write_npy must not."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full (not Linux)")
    with pytest.raises(OSError) as e:
        files.write_npy("/dev/full", np.zeros(100_000))
    assert e.value.errno == errno.ENOSPC, e.value


def test_disk_full_while_saving_a_checkpoint_keeps_the_old_one(toy_checkpoint, monkeypatch):
    path, arrays, meta = toy_checkpoint
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", lambda fh, **members: (fh.write(b"PK half a zip"), enospc()))
    with pytest.raises(DiskFullError) as e:
        ckpt.save(path, arrays, {**meta, "step": 30})
    assert_clear(e, path, "disk full", "bytes free")
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    assert path.read_bytes() == before and not list(path.parent.glob("*.tmp*")), \
        "a failed save must leave the old checkpoint and no temporary file"


class FullAfter:
    """A file whose writes fail with ENOSPC once `budget` bytes have been written."""

    def __init__(self, fh, budget):
        self.fh, self.budget = fh, budget

    def write(self, data):
        n = memoryview(data).nbytes
        if n > self.budget:
            enospc()
        self.budget -= n
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)


def test_disk_full_during_a_harvest_is_said_and_the_next_harvest_finishes_it(tmp_path, monkeypatch):
    corpus, params = synthetic_corpus(900), tiny_model()
    kw = dict(batch=4, fast=False, save_every=0.0)
    act.harvest(params, TINY, corpus, tmp_path / "whole", **kw)
    real_open = open
    monkeypatch.setattr(act, "open", lambda p, mode="r", *a, **k: FullAfter(real_open(p, mode, *a, **k), 20_000)
                        if str(p).endswith("acts.npy") and "+" in mode else real_open(p, mode, *a, **k), raising=False)
    with pytest.raises(DiskFullError) as e:
        act.harvest(params, TINY, corpus, tmp_path / "s", **kw)
    assert_clear(e, tmp_path / "s" / "acts.npy", "disk full")
    monkeypatch.undo()
    act.harvest(params, TINY, corpus, tmp_path / "s", **kw)  # "a larger disk"
    ref_arrays, ref_meta = read_store_files(tmp_path / "whole")
    arrays, meta = read_store_files(tmp_path / "s")
    assert meta == ref_meta and all(np.array_equal(arrays[k], ref_arrays[k]) for k in arrays), \
        "the store finished after a full disk must be the one an uninterrupted harvest writes"


def test_disk_full_during_a_corpus_build_is_said_and_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def write_half_then_fail(path, array):
        calls.append(path)
        if len(calls) == 3:
            Path(path).write_bytes(b"\x93NUMPY half")
            enospc()
        files.write_npy(path, array)

    monkeypatch.setattr(corpus_build, "write_npy", write_half_then_fail)
    cfg = C.CorpusConfig(n_train_bytes=20_000, n_val_bytes=10_000)
    with pytest.raises(DiskFullError) as e:
        corpus_build.get_corpus(cfg, tmp_path, progress=False)
    assert "disk full" in str(e.value) and str(tmp_path) in str(e.value), e.value
    assert list(tmp_path.iterdir()) == [], "a build stopped by a full disk must leave nothing behind"


# ----------------------------------------------------------------------------------------------------
# stale temporary files


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # exited and reaped: no process has this pid (until it is reused)


def test_stale_temporary_files_are_removed_and_live_ones_kept(toy_checkpoint, store):
    path, arrays, meta = toy_checkpoint
    dead, live = dead_pid(), os.getppid() or os.getpid()  # parent 0: pytest is pid 1 in a container
    stale = [path.with_name(f"toy.npz.tmp{dead}"), path.with_name(f"toy.json.tmp{dead}"),
             path.with_name(f"toy.npz.tmp{live}")]  # the last: a live pid, but two days old (a reused pid)
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    os.utime(stale[2], (time.time() - 2 * 86400,) * 2)
    fresh_live = path.with_name(f"toy.json.tmp{live}")
    fresh_live.write_bytes(b"being written")
    ckpt.load(path)
    assert not any(p.exists() for p in stale), "temporary files of dead or old writers must be removed"
    assert fresh_live.exists(), "a live writer's recent temporary file must be left alone"

    store_path, corpus, params = store
    leftover = store_path / f"meta.json.tmp{dead}"
    leftover.write_text("{half")
    act.harvest(params, TINY, corpus, store_path, batch=4, fast=False)
    assert not leftover.exists(), "a killed harvest's progress record must be removed"


def test_stale_corpus_build_folders_are_removed(tmp_path):
    cfg = C.CorpusConfig(n_train_bytes=20_000, n_val_bytes=10_000)
    name = f"corpus-{cfg.fingerprint()[:12]}"
    stale = tmp_path / f".{name}.tmp-{dead_pid()}"
    (stale / "x").mkdir(parents=True)
    corpus_build.get_corpus(cfg, tmp_path, progress=False)
    assert not stale.exists(), "the folder of a killed build must be removed"


# ----------------------------------------------------------------------------------------------------
# the command line


def run(args, cwd=ROOT, env=None, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def test_reproduce_refuses_an_empty_out_or_only(tmp_path):
    for args, message in ((["--out", ""], "--out is empty"), (["--out", "  "], "--out is empty"),
                          (["--out", str(tmp_path / "r"), "--only", ""], "empty name matches every lesson")):
        proc = run(["-m", "tinymono", "reproduce", "--scale", "smoke", *args], cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be written into the working folder"


LESSON = str(ROOT / "lessons" / "01_superposition.py")


@pytest.mark.parametrize("case", ["runs is a file", "runs is empty", "runs under a file", "scale from env"])
def test_a_lesson_refuses_bad_arguments_without_a_traceback(tmp_path, case):
    (tmp_path / "afile").write_text("")
    args, env, message = {
        "runs is a file": (["--runs", str(tmp_path / "afile")], {}, "cannot write into --runs"),
        "runs is empty": (["--runs", ""], {}, "--runs (or TINYMONO_RUNS) is empty"),
        "runs under a file": (["--runs", str(tmp_path / "afile" / "x")], {}, "cannot write into --runs"),
        "scale from env": ([], {"TINYMONO_SCALE": "huge"}, "TINYMONO_SCALE"),
    }[case]
    proc = run([LESSON, "--scale", "smoke", *args] if case != "scale from env" else [LESSON, *args], cwd=tmp_path,
               env=env)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


FULL_LESSON = '''
from pathlib import Path
from tinymono.files import writing
from tinymono.lesson import Lesson
lesson = Lesson("02_full")
print("harvesting", flush=True)
with writing(Path("/dev/full")), open("/dev/full", "wb") as fh:  # a real ENOSPC, as on a full disk
    fh.write(b"x" * 100_000)
'''
OK_LESSON = '''
from tinymono.lesson import Lesson
lesson = Lesson("01_ok")
lesson.check("one", 1.0, True, ">= 1")
lesson.finish()
'''


def test_reproduce_writes_its_report_when_the_disk_fills(tmp_path, monkeypatch, capsys):
    """A stage that meets a full disk is marked failed with the lesson's own words; its log meeting the full
    disk too stops the log, not the command; and the report is written into the space set aside for it."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full (not Linux)")
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    (lessons / "01_ok.py").write_text(OK_LESSON)
    (lessons / "02_full.py").write_text(FULL_LESSON)
    (lessons / "03_after.py").write_text(OK_LESSON.replace("01_ok", "03_after"))
    monkeypatch.setattr(reproduce, "LESSONS_DIR", lessons)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    out = tmp_path / "runs"
    (out / "smoke" / "logs").mkdir(parents=True)
    (out / "smoke" / "logs" / "02_full.log").symlink_to("/dev/full")  # the log's writes meet ENOSPC too
    real_write = reproduce.atomic_write

    def full_until_reserve_freed(path, write):  # the disk is full: only the reserve's space is left
        if (out / "smoke" / ".report-reserve").exists():
            raise DiskFullError(path)
        return real_write(path, write)

    monkeypatch.setattr(reproduce, "atomic_write", full_until_reserve_freed)
    code = reproduce.reproduce(out, "smoke")
    printed = capsys.readouterr().out
    assert code == 1
    report = (out / "smoke" / "report.md").read_text()
    assert "## 02_full  (failed: disk full (exit 1)" in report, report
    assert "disk full: cannot write /dev/full" in report, "the report must say what the stage said"
    assert "## 03_after  (ok" in report, "the stages after a failed one still run"
    assert "log /dev/full stops here" in printed or "stops here" in printed, printed
    assert "Traceback" not in report + printed
    assert not (out / "smoke" / ".report-reserve").exists(), "the reserve is freed at the end"


def test_a_stage_that_exits_0_without_a_result_is_not_called_ok(tmp_path, monkeypatch):
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    (lessons / "01_quiet.py").write_text("print('nothing to check')\n")
    monkeypatch.setattr(reproduce, "LESSONS_DIR", lessons)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    assert reproduce.reproduce(tmp_path / "runs", "smoke") == 1
    report = (tmp_path / "runs" / "smoke" / "report.md").read_text()
    assert "| 01_quiet | ended without a result" in report and "| 01_quiet | ok" not in report, report


def test_reproduce_reruns_a_stage_whose_result_is_damaged(tmp_path, monkeypatch, capsys):
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    (lessons / "01_ok.py").write_text(OK_LESSON)
    monkeypatch.setattr(reproduce, "LESSONS_DIR", lessons)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    assert reproduce.reproduce(tmp_path / "runs", "smoke") == 0
    result = tmp_path / "runs" / "smoke" / "01_ok" / "result.json"
    for damaged in ("{", "[]", json.dumps({"checks": [{"status": "PASS"}], "figures": [], "seconds": 1})):
        result.write_text(damaged)
        assert reproduce.reproduce(tmp_path / "runs", "smoke") == 0
        printed = capsys.readouterr()
        assert "01_ok at scale smoke" in printed.out and str(result) in printed.err, \
            "a damaged result.json must be said and the stage run again"
        assert json.loads(result.read_text())["checks"][0]["name"] == "one"


# From a mutation review of store.py, activations.py, checkpoint.py and files.py: each test kills a small
# bug the tests above let live.


def test_a_partial_store_shows_only_the_rows_done(tmp_path):
    s = act.harvest(tiny_model(), TINY, synthetic_corpus(400), tmp_path / "s", fast=False, max_rows=50)
    n = len(s)
    assert 0 < n < 400
    assert len(s.acts) == len(s.tokens) == len(s.index) == n, "the memory maps must end at rows_done"
    with pytest.raises(IndexError):
        s.read(n - 1, n + 1)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an open file through /proc (Linux)")
def test_a_progress_record_follows_its_data_to_disk(tmp_path, monkeypatch):
    synced, real = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name), real(fd))[1])
    act.harvest(tiny_model(), TINY, synthetic_corpus(200), tmp_path / "s", fast=False)
    last_meta = max(i for i, name in enumerate(synced) if name.startswith("meta.json.tmp"))
    for col in ("acts", *LABEL_FIELDS):
        assert f"{col}.npy" in synced[:last_meta], f"{col}.npy not synced before the last progress record"


def test_progress_records_are_replaced_never_rewritten_in_place(tmp_path):
    corpus, params, path = synthetic_corpus(400), tiny_model(), tmp_path / "s"
    act.harvest(params, TINY, corpus, path, fast=False, max_rows=50)
    os.link(path / "meta.json", tmp_path / "old_meta.json")  # a reader holding the old record
    before = (tmp_path / "old_meta.json").read_bytes()
    act.harvest(params, TINY, corpus, path, fast=False)
    assert (tmp_path / "old_meta.json").read_bytes() == before, "meta.json was rewritten in place, not replaced"


def test_max_rows_stops_at_the_first_group_that_reaches_it(tmp_path):
    corpus, params = synthetic_corpus(400), tiny_model()
    one = act.harvest(params, TINY, corpus, tmp_path / "a", fast=False, batch=2, max_rows=1)
    assert one.meta["groups_done"] == 1
    again = act.harvest(params, TINY, corpus, tmp_path / "b", fast=False, batch=2, max_rows=len(one))
    assert again.meta["groups_done"] == 1 and len(again) == len(one)


def test_a_complete_store_damaged_early_and_late_is_repaired_whole(tmp_path):
    corpus, params, path = synthetic_corpus(700), tiny_model(), tmp_path / "s"
    act.harvest(params, TINY, corpus, path, batch=4, fast=False)
    good = (path / "acts.npy").read_bytes()
    overwrite_rows(path, 3, 5)
    overwrite_rows(path, 690, 700)
    act.harvest(params, TINY, corpus, path, batch=4, fast=False)
    assert (path / "acts.npy").read_bytes() == good, "the early damaged rows were not redone"


def test_the_metadata_key_is_reserved(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        ckpt.save(tmp_path / "z", {ckpt.META_KEY: np.zeros(1)}, {})


def test_npy_layout_counts_the_header(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(10, dtype=np.int64))
    os.truncate(p, p.stat().st_size - 1)
    with pytest.raises(files.BadFile, match="truncated"):
        files.npy_layout(p, files.BadFile, "fix")


def test_npy_layout_refuses_fortran_order(tmp_path):
    p = tmp_path / "f.npy"
    np.save(p, np.asfortranarray(np.arange(6.0).reshape(2, 3)))
    with pytest.raises(files.BadFile, match="Fortran"):
        files.npy_layout(p, files.BadFile, "fix")


def test_another_users_live_writer_keeps_its_temporary_file(tmp_path, monkeypatch):
    def kill(pid, sig):
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "kill", kill)
    tmp = tmp_path / "x.npz.tmp4242"
    tmp.write_bytes(b"being written")
    assert files.remove_stale_temps(tmp_path / "x.npz") == [] and tmp.exists()


def test_a_full_quota_is_a_full_disk(tmp_path):
    with pytest.raises(DiskFullError, match="disk full"):
        with files.writing(tmp_path / "x"):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")


@pytest.mark.parametrize("suffix", ["0", "99999999999999999999"])
def test_a_temporary_file_no_writer_can_own_is_removed_without_an_error(tmp_path, suffix):
    """pid 0 is no process (os.kill(0, 0) would ask this process's own group), and a number past any pid made
    os.kill raise OverflowError out of checkpoint.load."""
    tmp = tmp_path / f"x.npz.tmp{suffix}"
    tmp.write_bytes(b"left by nobody")
    assert files.remove_stale_temps(tmp_path / "x.npz") == [tmp] and not tmp.exists()
