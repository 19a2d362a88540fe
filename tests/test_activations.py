"""The activation store and its shuffled batches: the window plan, exact round trips (also harvested in
chunks and after a crash), refusing to mix harvests, sampling without replacement, mixing, bit-identical
resume (alone and inside an SAE run through the shared loop), and flat memory."""
import contextlib
import gc
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymono import activations as act
from tinymono import corpus as C
from tinymono.corpus_sources import CONTEXT_NAMES
from tinymono import sae
from tinymono import transformer as tr
from tinymono import pipeline
from tinymono.batches import ShuffledBatches, fits_in_memory
from tinymono.checkpoint import CheckpointError
from tinymono.store import ActivationStore, LABEL_FIELDS
from tinymono.train import train

TINY = tr.TransformerConfig(d_vocab=257, d_model=8, d_mlp=16, n_heads=2, d_head=4, n_ctx=16)


def synthetic_corpus(n, seed=0, run=50):
    """A Corpus over random bytes whose context labels come in runs of `run` tokens (like documents)."""
    rng = np.random.default_rng(seed)
    context = np.repeat(rng.integers(1, len(CONTEXT_NAMES), size=n // run + 1), run)[:n].astype(np.uint8)
    tokens = rng.integers(0, 257, size=n).astype(np.uint16)
    detail = (3 * context + tokens % 3).astype(np.uint8)
    split = C.Split(tokens, context, detail, np.full(n, np.nan, np.float32))
    meta = {"fingerprint": f"synthetic-{n}-{seed}-{run}", "context_names": list(CONTEXT_NAMES),
            "detail_names": [f"detail{i}" for i in range(3 * len(CONTEXT_NAMES))]}
    return C.Corpus(None, meta, split, split)


def tiny_model(cfg=TINY, seed=0):
    return tr.init(cfg, np.random.default_rng(seed), dtype=np.float32)


def read_store_files(path):
    names = ["acts", *LABEL_FIELDS]
    return {name: np.load(path / f"{name}.npy") for name in names}, json.loads((path / "meta.json").read_text())


def rss_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    pytest.skip(f"/proc/self/status has no {field} (not Linux?)")


# ----------------------------------------------------------------------------------------------------
# the window plan


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), n_ctx=st.integers(1, 40), data=st.data())
def test_window_plan_keeps_every_token_once_with_enough_context(n, n_ctx, data):
    W = min(n, n_ctx)
    stride = data.draw(st.one_of(st.none(), st.integers(1, n_ctx)))  # up to n_ctx: a short stream caps it
    starts, keep_from, W2, stride = tr.window_plan(n, n_ctx, stride)
    assert W2 == W and np.all(starts >= 0) and np.all(starts + W <= n), "a window runs outside the stream"
    kept = np.concatenate([s + np.arange(k, W) for s, k in zip(starts, keep_from)])
    np.testing.assert_array_equal(kept, np.arange(n), err_msg="every token must be kept exactly once, in order")
    context = np.concatenate([np.arange(k, W) + 1 for k in keep_from])  # tokens seen by each kept position
    late = np.arange(n) >= W  # tokens after the first window
    assert np.all(context[late] >= W - stride + 1), (
        f"a token past the first window was kept with only {context[late].min()} tokens of context "
        f"(W={W}, stride={stride}): is it taken from the earliest window that holds it, not the latest?")


# ----------------------------------------------------------------------------------------------------
# harvesting


def test_store_round_trips_exactly(tmp_path):
    corpus, params = synthetic_corpus(1000), tiny_model()
    store = act.harvest(params, TINY, corpus, tmp_path / "s", batch=4, fast=False)
    assert store.meta["complete"] and len(store) == 1000
    np.testing.assert_array_equal(store.index, np.arange(1000), err_msg="row i must be byte i of the split")
    for name in ("tokens", "context", "detail"):
        np.testing.assert_array_equal(getattr(store, name), getattr(corpus.train, name)[:1000],
                                      err_msg=f"the {name} column does not follow the rows")
    # exact: the same windows in the same groups of `batch` give the same bits
    starts, keep_from, W, _ = tr.window_plan(1000, TINY.n_ctx)
    for g in range(0, len(starts), 4):
        idx = starts[g:g + 4, None] + np.arange(W)
        _, cache = tr.forward(params, corpus.train.tokens[idx].astype(np.int64), TINY)
        keep = np.arange(W) >= keep_from[g:g + 4, None]
        np.testing.assert_array_equal(store.acts[idx[keep]], cache.hook_post[keep],
                                      err_msg=f"group {g // 4}: stored rows differ from the forward's hook_post")
        np.testing.assert_array_equal(store.pos[idx[keep]], np.broadcast_to(np.arange(W), idx.shape)[keep])
    # independent: each row against a forward of its own window alone (batch-size rounding only)
    for i in [0, 7, 8, 15, 16, 500, 993, 999]:
        start = store.index[i] - store.pos[i]
        _, cache = tr.forward(params, corpus.train.tokens[start:start + W][None].astype(np.int64), TINY)
        np.testing.assert_allclose(store.acts[i], cache.hook_post[0, store.pos[i]], rtol=1e-5, atol=1e-6,
                                   err_msg=f"row {i} is not the activation of token {store.index[i]} at position "
                                           f"{store.pos[i]}: is the window offset or the kept position wrong?")
    assert np.all(store.pos[TINY.n_ctx:] >= TINY.n_ctx // 2), "rows past the first window lack half a window of context"


def test_float16_store_is_the_float32_store_rounded(tmp_path):
    corpus, params = synthetic_corpus(300), tiny_model()
    s32 = act.harvest(params, TINY, corpus, tmp_path / "a", dtype="float32", fast=False)
    s16 = act.harvest(params, TINY, corpus, tmp_path / "b", dtype="float16", fast=False)
    assert s16.acts.dtype == np.float16 and (tmp_path / "b" / "acts.npy").stat().st_size < 0.6 * (
        tmp_path / "a" / "acts.npy").stat().st_size
    np.testing.assert_array_equal(s16.acts, s32.acts[:].astype(np.float16))
    np.testing.assert_array_equal(s16.rows([3, 1]), s32.acts[[3, 1]].astype(np.float16).astype(np.float32))
    for store in (s16, s32):  # read_float32 widens a float16 store's rows by a numba kernel: NumPy's numbers
        wide = store.read_float32(5, 250)
        assert wide.dtype == np.float32
        np.testing.assert_array_equal(wide, store.acts[5:250].astype(np.float32))

    big = {k: v * 1e6 if k == "W_in" else v for k, v in params.items()}  # activations past float16's range
    with pytest.raises(ValueError, match="float32"):
        act.harvest(big, TINY, corpus, tmp_path / "c", dtype="float16", fast=False)
    assert act.harvest(big, TINY, corpus, tmp_path / "d", dtype="float32", fast=False).acts.max() > 65504


def test_chunks_and_a_crash_give_the_same_store(tmp_path, monkeypatch):
    corpus, params = synthetic_corpus(1500), tiny_model()
    kw = dict(batch=5, fast=False, save_every=0.0)
    whole = act.harvest(params, TINY, corpus, tmp_path / "whole", **kw)

    chunked = None
    for _ in range(20):  # chunks of >= 200 rows, each ending at a group boundary
        chunked = act.harvest(params, TINY, corpus, tmp_path / "chunks", max_rows=200, **kw)
        if chunked.meta["complete"]:
            break
    assert chunked.meta["complete"]

    calls, real_forward = [], tr.forward

    def crashing_forward(*a, **k):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("simulated crash")
        return real_forward(*a, **k)

    monkeypatch.setattr(tr, "forward", crashing_forward)
    with pytest.raises(RuntimeError, match="simulated crash"):
        act.harvest(params, TINY, corpus, tmp_path / "crash", **kw)
    partial = ActivationStore(tmp_path / "crash", partial=True)
    assert 0 < len(partial) < 1500 and not partial.meta["complete"], "progress must be recorded before the crash"
    with pytest.raises(ValueError, match="incomplete"):
        ActivationStore(tmp_path / "crash")
    monkeypatch.setattr(tr, "forward", real_forward)
    act.harvest(params, TINY, corpus, tmp_path / "crash", **kw)

    ref_arrays, ref_meta = read_store_files(tmp_path / "whole")
    for name in ("chunks", "crash"):
        arrays, meta = read_store_files(tmp_path / name)
        assert meta == ref_meta, f"{name}: meta differs from the uninterrupted harvest's"
        for k in arrays:
            np.testing.assert_array_equal(arrays[k], ref_arrays[k], err_msg=f"{name}: {k} differs from the "
                                          "uninterrupted harvest: does a resume restart at a group boundary?")
    assert len(whole) == 1500


def test_ctrl_c_keeps_the_groups_harvested_so_far(tmp_path, monkeypatch):
    """With progress records far apart (save_every), a Ctrl-C still records every group written whole, and
    the harvest resumed after it gives the uninterrupted store."""
    corpus, params = synthetic_corpus(1500), tiny_model()
    kw = dict(batch=5, fast=False, save_every=3600.0)
    calls, real_forward = [], tr.forward

    def interrupted_forward(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_forward(*a, **k)

    monkeypatch.setattr(tr, "forward", interrupted_forward)
    with pytest.raises(KeyboardInterrupt):
        act.harvest(params, TINY, corpus, tmp_path / "cut", **kw)
    partial = ActivationStore(tmp_path / "cut", partial=True)
    assert partial.meta["groups_done"] == 3 and len(partial) == partial.meta["rows_done"] > 0, \
        "the three groups written before the interrupt must be recorded"
    monkeypatch.setattr(tr, "forward", real_forward)
    act.harvest(params, TINY, corpus, tmp_path / "cut", **kw)
    whole = act.harvest(params, TINY, corpus, tmp_path / "whole", **kw)
    cut_arrays, cut_meta = read_store_files(tmp_path / "cut")
    ref_arrays, ref_meta = read_store_files(tmp_path / "whole")
    assert cut_meta == ref_meta and len(whole) == 1500
    for k in ref_arrays:
        np.testing.assert_array_equal(cut_arrays[k], ref_arrays[k], err_msg=k)


def test_a_store_refuses_a_different_harvest(tmp_path):
    corpus = synthetic_corpus(400)
    act.harvest(tiny_model(seed=0), TINY, corpus, tmp_path / "s", fast=False, max_rows=50)
    with pytest.raises(ValueError, match="model"):
        act.harvest(tiny_model(seed=1), TINY, corpus, tmp_path / "s", fast=False)
    with pytest.raises(ValueError, match="dtype"):
        act.harvest(tiny_model(seed=0), TINY, corpus, tmp_path / "s", fast=False, dtype="float16")
    with pytest.raises(ValueError, match="plan"):
        act.harvest(tiny_model(seed=0), TINY, corpus, tmp_path / "s", fast=False, stride=16)
    done = act.harvest(tiny_model(seed=0), TINY, corpus, tmp_path / "s", fast=False, checkpoint="moved/model.npz")
    assert done.meta["complete"], "the same model read from another checkpoint path must be able to continue"
    os.utime(tmp_path / "s" / "meta.json", ns=(0, 0))
    again = act.harvest(tiny_model(seed=0), TINY, corpus, tmp_path / "s", fast=False)
    assert len(again) == len(done) and (tmp_path / "s" / "meta.json").stat().st_mtime_ns == 0, \
        "a complete store is opened, not written again"


def test_a_truncated_store_says_which_file_and_what_to_do(tmp_path):
    corpus = synthetic_corpus(400)
    act.harvest(tiny_model(seed=0), TINY, corpus, tmp_path / "s", fast=False)
    for name in ("acts", "tokens"):
        path = tmp_path / "s" / f"{name}.npy"
        kept = path.read_bytes()
        path.write_bytes(kept[:len(kept) // 2])
        with pytest.raises(ValueError, match=f"{name}.npy .*delete .* harvest again"):
            ActivationStore(tmp_path / "s").tokens
        path.write_bytes(kept)


def test_non_overlapping_windows_keep_every_position(tmp_path):
    corpus, params = synthetic_corpus(160), tiny_model()
    store = act.harvest(params, TINY, corpus, tmp_path / "s", stride=TINY.n_ctx, fast=False)
    np.testing.assert_array_equal(store.pos, np.tile(np.arange(16), 10))
    assert store.meta["plan"]["min_context"] == 1


def test_mean_and_rows(tmp_path):
    corpus, params = synthetic_corpus(700), tiny_model()
    store = act.harvest(params, TINY, corpus, tmp_path / "s", fast=False)
    full = np.asarray(store.acts, dtype=np.float64)
    np.testing.assert_allclose(store.mean(block_rows=64), full.mean(axis=0), rtol=1e-12, atol=1e-12)
    idx = np.array([699, 0, 350, 350])
    np.testing.assert_array_equal(store.rows(idx), full[idx].astype(np.float32))
    np.testing.assert_array_equal(store.read(10, 20), full[10:20].astype(np.float32))
    with pytest.raises(IndexError):
        store.rows([700])


# ----------------------------------------------------------------------------------------------------
# shuffled batches


@pytest.fixture(scope="module")
def store_2k(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "s"
    return act.harvest(tiny_model(), TINY, synthetic_corpus(2000, run=200), path, fast=False)


@settings(max_examples=25, deadline=None)
@given(block_rows=st.integers(1, 300), buffer_blocks=st.integers(1, 9), batch=st.integers(1, 700),
       seed=st.integers(0, 2**32 - 1))
def test_every_row_once_per_epoch(store_2k, block_rows, buffer_blocks, batch, seed):
    it = ShuffledBatches(store_2k, block_rows=block_rows, buffer_blocks=buffer_blocks, seed=seed)
    n = len(store_2k)
    rows = np.concatenate([it.next(batch)[1] for _ in range(-(-3 * n // batch))])
    for e in range(3):
        epoch = np.sort(rows[e * n:(e + 1) * n])
        assert np.array_equal(epoch, np.arange(n)), (
            f"epoch {e} does not visit every row exactly once ({len(np.unique(epoch))} distinct of {n}; "
            f"block_rows={block_rows}, buffer_blocks={buffer_blocks}, batch={batch})")
    x, rows = it.next(50)
    np.testing.assert_array_equal(x, store_2k.rows(rows), err_msg="a batch row does not hold its store row")


def test_batches_mix_contexts(store_2k):
    """Labels come in runs of 200 tokens; shuffled batches must draw from many runs at once."""
    ctx = np.asarray(store_2k.context)
    n_labels = int(ctx.max()) + 1
    overall = np.bincount(ctx, minlength=n_labels) / len(ctx)

    def tv_distance(rows):
        return 0.5 * np.abs(np.bincount(ctx[rows], minlength=n_labels) / len(rows) - overall).sum()

    it = ShuffledBatches(store_2k, block_rows=25, buffer_blocks=40, seed=0)
    batches = [it.next(100)[1] for _ in range(20)]
    shuffled = np.mean([tv_distance(r) for r in batches])
    in_order = np.mean([tv_distance(np.arange(i, i + 100)) for i in range(0, 2000, 100)])
    n_runs = np.mean([len(np.unique(r // 200)) for r in batches])
    assert shuffled < 0.3 and n_runs >= 6, (
        f"batches do not mix contexts: distance of a batch's label mix from the store's {shuffled:.2f} (in "
        f"order: {in_order:.2f}), {n_runs:.1f} runs per batch: are the rows shuffled within the buffer?")


class ArrayStore:
    """Just enough of an ActivationStore for ShuffledBatches: rows of an in-memory array."""

    def __init__(self, a):
        self.a, self.d, self.dtype, self.path = a, a.shape[1], a.dtype, "array"

    def __len__(self):
        return len(self.a)

    @contextlib.contextmanager
    def reader(self):
        def read(lo, hi, out):
            out[:] = self.a[lo:hi]
        yield read


def test_default_batches_meet_a_rare_context_often():
    """A context held by five stretches of 300 rows in 1M (0.15%, rarer than any generated context at default): the
    SAE must meet it in most batches of 4096, not in a burst every few hundred steps (a latent for it
    would look dead between bursts and be resampled)."""
    n, rare = 1_000_000, np.zeros(1_000_000, bool)
    for start in (70_000, 260_000, 480_000, 655_000, 910_000):
        rare[start:start + 300] = True
    store = ArrayStore(rare[:, None].astype(np.float16))

    def share_of_batches(**kw):
        it = ShuffledBatches(store, seed=0, **kw)
        return np.mean([it.next(4096)[0].any() for _ in range(2 * n // 4096)])  # two epochs

    default, coarse = share_of_batches(), share_of_batches(block_rows=1024, buffer_blocks=32)
    assert default > 0.9, f"the rare context is in only {default:.0%} of the batches (coarse blocks: {coarse:.0%})"
    assert coarse < 0.4, f"coarse blocks were expected to starve the batches of the rare context ({coarse:.0%})"


def test_state_round_trip_resumes_the_same_sequence(store_2k):
    a = ShuffledBatches(store_2k, block_rows=64, buffer_blocks=3, seed=5)
    for _ in range(11):
        a.next(77)
    state = {k: np.array(v) for k, v in a.state_arrays().items()}
    expected = [a.next(n) for n in (77, 300, 1, 2500)]  # runs across buffers and into the next epoch
    b = ShuffledBatches(store_2k, block_rows=64, buffer_blocks=3, seed=99)
    b.next(10)
    b.load_state_arrays(state)
    for (xa, ra), n in zip(expected, (77, 300, 1, 2500)):
        xb, rb = b.next(n)
        np.testing.assert_array_equal(rb, ra, err_msg="restored iterator draws other rows: is the RNG state saved?")
        np.testing.assert_array_equal(xb, xa)
    assert b.epoch == a.epoch >= 1
    with pytest.raises(ValueError, match="block_rows"):
        ShuffledBatches(store_2k, block_rows=32, buffer_blocks=3).load_state_arrays(state)


def test_saved_batches_belong_to_the_activations_they_were_drawn_from(store_2k, tmp_path):
    """A store harvested again from another model (same shape, same rows) must not resume an SAE trained on
    the old one: the batch state names the model and corpus its rows came from."""
    state = ShuffledBatches(store_2k, block_rows=64, buffer_blocks=3).state_arrays()
    other_model = act.harvest(tiny_model(TINY, seed=7), TINY, synthetic_corpus(2000, run=200), tmp_path / "s",
                              fast=False)
    assert len(other_model) == len(store_2k)
    with pytest.raises(CheckpointError, match="another model or corpus"):
        ShuffledBatches(other_model, block_rows=64, buffer_blocks=3).load_state_arrays(state)
    del state["batches.source"]  # a checkpoint written before the source was recorded still loads
    ShuffledBatches(other_model, block_rows=64, buffer_blocks=3).load_state_arrays(state)


def test_sae_training_on_the_store_resumes_bit_identically(store_2k, tmp_path):
    cfg = sae.SAEConfig(d_in=TINY.d_mlp, d_sae=32, batch_size=64, steps=40, init_sample=128, seed=3,
                        resample_at=(0.5,), dead_window=0.2, resample_batches=2)

    def source():
        return ShuffledBatches(store_2k, block_rows=50, buffer_blocks=4, seed=1)

    whole = sae.SAETask(cfg, source())
    train(whole, cfg.steps, chunk_steps=10, progress=False)
    first = sae.SAETask(cfg, source())
    train(first, 20, chunk_steps=10, checkpoint=tmp_path / "c", progress=False)
    resumed = sae.SAETask(cfg, source())
    result = train(resumed, cfg.steps, chunk_steps=10, checkpoint=tmp_path / "c", progress=False)
    assert result.resumed_from == 20
    for k in whole.params:
        np.testing.assert_array_equal(resumed.params[k], whole.params[k], err_msg=f"{k} differs after resuming")


def test_batches_from_memory_are_the_batches_from_the_file(store_2k, monkeypatch):
    """in_memory=True: the same rows in the same order over three epochs and after a resume, the store's
    file opened twice: for the first buffer, then for the one read of every row. Only the first buffer's
    batches, or a resume, read no more than they need (an SAE loaded from a finished checkpoint does both)."""
    kw = dict(block_rows=30, buffer_blocks=7, seed=4)
    n_batches = 3 * len(store_2k) // 333 + 1  # three epochs and a bit
    from_file = ShuffledBatches(store_2k, **kw)
    expected = [from_file.next(333) for _ in range(n_batches)]
    opened, real_reader = [], store_2k.reader

    def counting_reader():
        opened.append(1)
        return real_reader()
    monkeypatch.setattr(store_2k, "reader", counting_reader)
    from_memory = ShuffledBatches(store_2k, in_memory=True, **kw)
    for i, (x, rows) in enumerate(expected):
        y, rows_m = from_memory.next(333)
        np.testing.assert_array_equal(rows_m, rows, err_msg=f"batch {i}: other rows from memory")
        np.testing.assert_array_equal(y, x, err_msg=f"batch {i}: other values from memory")
        if i == 9:
            state = {k: np.array(v) for k, v in from_memory.state_arrays().items()}
    assert len(opened) == 2, f"the store's file was opened {len(opened)} times: are later blocks read from the file?"
    first_buffer = ShuffledBatches(store_2k, in_memory=True, **kw)
    np.testing.assert_array_equal(first_buffer.next(100)[0], expected[0][0][:100])
    resumed = ShuffledBatches(store_2k, in_memory=True, **kw)  # as SAETask resumes: a first sample, then the state
    resumed.next(100)
    resumed.load_state_arrays(state)
    assert len(opened) == 5 and first_buffer._whole is None and resumed._whole is None, \
        "the first buffer's batches or a resume copied the whole store"
    for i in range(10, 14):
        np.testing.assert_array_equal(resumed.next(333)[0], expected[i][0],
                                      err_msg=f"batch {i}, after resuming from memory at batch 10, differs")
    assert len(opened) == 6 and resumed._whole is not None, "the resumed run did not copy the store, or reads the file"


def test_sae_runs_over_the_store_more_than_once_take_it_into_memory(store_2k, monkeypatch):
    task = pipeline.sae_task("smoke", store_2k)
    assert task.cfg.steps * task.cfg.batch_size > len(store_2k) and task.source.in_memory
    monkeypatch.setattr(pipeline.batches, "fits_in_memory", lambda nbytes: False)
    assert not pipeline.sae_task("smoke", store_2k).source.in_memory, "a store too large for memory was taken in"
    assert fits_in_memory(store_2k.acts.nbytes) and not fits_in_memory(2**62)


# ----------------------------------------------------------------------------------------------------
# memory


def test_memory_stays_flat(tmp_path, monkeypatch):
    """A 64 MB store, harvested and read through a 4 MB buffer: the anonymous resident memory (RssAnon:
    the process's own arrays, not the page cache) must grow by far less than the store."""
    cfg = tr.TransformerConfig(d_model=8, d_mlp=256, n_heads=2, d_head=4, n_ctx=64)
    n = 65536
    corpus, params = synthetic_corpus(n), tiny_model(cfg)
    samples, real_forward = [], tr.forward

    def sampling_forward(*a, **k):
        samples.append(rss_kb("RssAnon"))
        return real_forward(*a, **k)

    path = tmp_path / "big"
    monkeypatch.setattr(tr, "forward", sampling_forward)
    store = act.harvest(params, cfg, corpus, path, batch=64, fast=False)
    monkeypatch.setattr(tr, "forward", real_forward)
    size_mb = (path / "acts.npy").stat().st_size / 2**20
    early = max(samples[: len(samples) // 8])  # after the first 1/8 of the tokens (the buffers are warm)
    harvest_growth = (max(samples) - early) / 1024
    assert size_mb >= 63 and harvest_growth < 8, (
        f"harvesting the last 7/8 of {size_mb:.0f} MB grew the anonymous memory by {harvest_growth:.1f} MB: "
        "are rows kept in memory instead of written group by group?")

    gc.collect()
    base = rss_kb("RssAnon")
    it = ShuffledBatches(store, block_rows=256, buffer_blocks=16, seed=0)  # 16 x 256 rows x 1 KB = 4 MB
    peak = base
    for _ in range(n // 1024 + 10):  # a whole epoch and a bit
        x, _ = it.next(1024)
        peak = max(peak, rss_kb("RssAnon"))
    del x
    growth = (peak - base) / 1024
    assert growth < 16, (f"iterating a {size_mb:.0f} MB store through a 4 MB buffer grew the anonymous memory "
                         f"by {growth:.1f} MB: is the store read whole, or are buffers not reused?")
    # calibration: the measurement does see a whole copy of the store
    gc.collect()
    base = rss_kb("RssAnon")
    whole = np.array(store.acts)
    grown = (rss_kb("RssAnon") - base) / 1024
    del whole
    assert grown > 0.8 * size_mb, f"RssAnon grew only {grown:.1f} MB for a {size_mb:.0f} MB copy: the probe is blind"


def test_harvest_benchmark_runs():
    """`python -m tinymono bench harvest --quick` end to end (what it measures, not how fast)."""
    import json

    from tinymono.benchmarks import format_table
    from tinymono.benchmarks import harvest as bench

    result = bench.run(quick=True)
    assert set(result["results"]) == {"numba", "numpy", "numba_no_overlap", "batches_read"}
    assert all(r["per_second"] > 0 for r in result["results"].values())
    assert [m["tokens"] for m in result["memory"]] == result["config"]["sizes"]
    assert "numba_vs_numpy" in format_table(result) and json.loads(json.dumps(result)) == result


# From a mutation review of batches.py: each test kills a small bug the tests above let live.


def test_each_epoch_draws_a_new_block_order(store_2k):
    it = ShuffledBatches(store_2k, block_rows=50, buffer_blocks=4, seed=0)
    n = len(store_2k)
    first, second = it.next(n)[1], it.next(n)[1]
    assert set(first[:200] // 50) != set(second[:200] // 50), "epoch 2 reads the blocks of epoch 1 in the same order"


def test_saved_batches_name_the_split(store_2k, tmp_path):
    state = ShuffledBatches(store_2k, block_rows=64, buffer_blocks=3).state_arrays()
    val = act.harvest(tiny_model(), TINY, synthetic_corpus(2000, run=200), tmp_path / "v", split="val", fast=False)
    with pytest.raises(CheckpointError, match="another model or corpus"):
        ShuffledBatches(val, block_rows=64, buffer_blocks=3).load_state_arrays(state)


def test_batches_are_float32_whatever_the_store_holds():
    it = ShuffledBatches(ArrayStore(np.arange(40, dtype=np.float16).reshape(20, 2)), block_rows=4, buffer_blocks=2)
    assert it.next(7)[0].dtype == np.float32 and it(None, 3).dtype == np.float32
