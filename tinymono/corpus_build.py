"""Building the corpus of tinymono/corpus.py from its sources, and finding it again: `build_corpus` writes one
config's corpus into a folder, `get_corpus` loads the folder for a config or builds it.

The split into train and validation is made by *unit*: one stdlib file (its source and the prose
taken from it) or one pydoc help topic, so validation text is not seen in training (up to the
stdlib's own near-copies: distutils has three MSVC compiler modules; repeated prose paragraphs are
kept once). Units are shuffled with the seed and handed to validation while it still needs that
unit's kind of text; the rest train (meta.json `units` lists both). Generated documents are drawn
afresh for each split. When a split wants more real text than its units hold, it goes through them
again in a new order: about 10 MB of Python and 1.9 MB of English ship with Python 3.11. A unit's prose
and source stay together, so validation's need for English brings Python with it: at the default scale
(19 MB to train, 4 MB to validate) validation takes about 4.8 MB of Python to collect its English and
uses 2 MB of it, and training reads its English about 4.6 times and its Python 1.8 times (the full
scale: 31 and 11 times; meta.json `pools` counts the passes).

A 20 MB corpus builds in under ten seconds on a laptop, most of it in `tokenize`.
"""
import json
import os
import platform
import shutil
import sysconfig
import time
from pathlib import Path

import numpy as np

from . import corpus_generated as gen
from . import corpus_sources as src
from .corpus import (DOC_SEP, FORMAT_VERSION, SOURCES, VOCAB_SIZE, Corpus, CorpusConfig, CorpusError, _FIELDS,
                     load_corpus)
from .corpus_sources import CONTEXT_NAMES, DETAIL_NAMES, FLOOR_DETAILS
from .files import DiskFullError, is_disk_full, remove_stale_temps, write_npy
from .progress import bar as progress_bar


def get_corpus(cfg: CorpusConfig, root, progress: bool = True) -> Corpus:
    """The corpus for `cfg` under folder `root`: each config lives in its own subfolder named by its
    fingerprint (root/corpus-<12 hex>), loaded if it is there, built otherwise."""
    path = Path(root) / f"corpus-{cfg.fingerprint()[:12]}"
    if path.exists():
        corpus = load_corpus(path)
        if corpus.meta["config"] != cfg.to_dict():
            raise CorpusError(f"{path}: holds a corpus for config {corpus.meta['config']}, not {cfg.to_dict()}; "
                              f"delete {path} to build it again")
        return corpus
    return build_corpus(cfg, path, progress=progress)


def _rng(cfg: CorpusConfig, *key: int) -> np.random.Generator:
    """One independent random stream per (split, source): changing one source's share leaves the
    documents of the other generated sources unchanged."""
    return np.random.default_rng([cfg.seed, *key])


def _budgets(cfg: CorpusConfig, n: int) -> dict:
    """Bytes per source in a split of n bytes; they sum to exactly n (the rounding remainder goes to
    the largest source), so with the separators the documents always fill the split."""
    budget = {s: int(round(cfg.mixture[s] * n)) for s in SOURCES}
    budget[max(SOURCES, key=cfg.mixture.get)] += n - sum(budget.values())
    return budget


def _assign_units(cfg: CorpusConfig) -> dict:
    """Shuffle the units; validation takes a unit while it still needs that unit's kind of text."""
    units = src.stdlib_units()
    need = _budgets(cfg, cfg.n_val_bytes)
    need_py = need["python"]
    need_en = max(need["english"], 1 if need["base64"] and cfg.b64_text_fraction else 0)
    have_py = have_en = 0
    out = {"train": [], "val": []}
    for i in _rng(cfg, 99).permutation(len(units)):
        unit = units[i]
        en_bytes = sum(len(t.encode()) for t in unit.english)
        wanted = (have_py < need_py and unit.python_bytes) or (have_en < need_en and en_bytes)
        out["val" if wanted else "train"].append(unit)
        if wanted:
            have_py, have_en = have_py + unit.python_bytes, have_en + en_bytes
    return out


def _chunks(host: src.HostDoc, lo: int, hi: int, rng: np.random.Generator):
    """Cut a document into pieces of about U[lo, hi] bytes; anchors follow their bytes. Python is cut
    at its anchors (between statements), so every piece starts where a statement may be inserted;
    English at line ends."""
    data = host.seg.data
    cuts = host.anchors if host.indents is not None else np.flatnonzero(data == ord("\n")) + 1
    start = 0
    while start < len(data):
        k = np.searchsorted(cuts, start + int(rng.integers(lo, hi + 1)))
        stop = int(cuts[k]) if k < len(cuts) and len(data) - cuts[k] >= lo else len(data)
        keep = (host.anchors >= start) & (host.anchors <= stop)
        indents = None if host.indents is None else tuple(np.array(host.indents, object)[keep])
        yield src.HostDoc(src.slice_segment(host.seg, start, stop), host.anchors[keep] - start, indents)
        start = stop


def _truncate(host: src.HostDoc, n: int) -> src.HostDoc:
    keep = host.anchors <= n
    indents = None if host.indents is None else tuple(np.array(host.indents, object)[keep])
    return src.HostDoc(src.slice_segment(host.seg, 0, n), host.anchors[keep], indents)


def _real_documents(units, kind: str, budget: int, bounds, rng, progress) -> tuple:
    """Documents of one real source ('python' or 'english') worth exactly `budget` bytes, going
    through the units in a fresh random order on each pass. Returns (docs, passes)."""
    def hosts(unit):
        if kind == "python":
            host = src.python_unit(unit.name) if unit.python_bytes else None
            return [] if host is None else [host]
        return [src.label_english(text) for text in unit.english]
    docs, total, passes = [], 0, 0
    while total < budget:
        passes += 1
        before = total
        for i in rng.permutation(len(units)):
            for host in hosts(units[i]):
                for piece in _chunks(host, *bounds, rng):
                    piece = _truncate(piece, min(len(piece.seg.data), budget - total))
                    docs.append(piece)
                    total += len(piece.seg.data)
                    progress.update(len(piece.seg.data))
                    if total >= budget:
                        return docs, passes
        if total == before:
            raise ValueError(f"the {kind} units of this split hold no text, but the mixture asks "
                             f"for {budget} bytes of {kind}")
    return docs, passes


def _english_slice(texts: list, lo: int, hi: int, rng: np.random.Generator) -> bytes:
    """A random stretch of U[lo, hi] bytes (or a whole shorter text) of this split's English prose."""
    text = texts[rng.integers(len(texts))]
    n = min(int(rng.integers(lo, hi + 1)), len(text))
    start = int(rng.integers(0, len(text) - n + 1))
    return text[start:start + n]


def _generated_documents(cfg: CorpusConfig, split: int, budget: dict, progress) -> list:
    """Standalone DNA, Arabic, Hebrew and family documents, each source filling its budget; the family's
    budget is shared equally by its languages (any remainder goes to the first ones)."""
    out = []
    share, extra = divmod(budget["family"], src.N_LANGUAGES)
    for k in range(src.N_LANGUAGES):
        rng, total, need = _rng(cfg, split, 10 + k), 0, share + (k < extra)
        while total < need:
            size = min(int(rng.integers(*cfg.doc_bytes["family"])), need - total)
            out.append(gen.language_document(k, size, rng, gen.sibling_script(k, cfg.script_siblings),
                                             cfg.sibling_own_letters))
            total += len(out[-1].data)   # a sibling's document ends after a letter: at most 2 bytes over
            progress.update(len(out[-1].data))
    for k, kind in enumerate(("dna", "arabic", "hebrew"), start=2):
        rng, total = _rng(cfg, split, k), 0
        while total < budget[kind]:
            size = min(int(rng.integers(*cfg.doc_bytes[kind])), budget[kind] - total)
            if kind == "dna":   # records run past `size`; cut to the budget (the bytes are ASCII)
                seg = gen.dna_document(size, rng, cfg.dna_lowercase, cfg.dna_order)
                seg = src.slice_segment(seg, 0, min(len(seg.data), budget[kind] - total))
            else:               # ends after the letter that reaches `size`: at most 2 bytes over
                seg = gen.script_document(kind, size, rng, cfg.script_classes, cfg.script_word_end)
            out.append(seg)
            total += len(seg.data)
            progress.update(len(seg.data))
    return out


def _insertions_and_blobs(cfg: CorpusConfig, split: int, budget: dict, docs: dict, texts: list, progress):
    """Hex digests (all inside real documents), base64 blobs (b64_embed_fraction of the bytes inside real
    documents on one line, the rest as wrapped documents of their own) and the embedded DNA sequences.
    Returns (insertions as {(kind, doc index): [(anchor index, segment), ...]}, base64 documents)."""
    hosts = {kind: [i for i, d in enumerate(docs[kind]) if len(d.anchors)] for kind in docs}
    kinds = [kind for kind in ("python", "english") if hosts[kind]]
    insertions, blobs = {}, []

    def place(rng, make, among=None) -> src.Segment:
        """Insert make(kind, indent) at a random anchor of a random host document (of a kind `among`)."""
        among = kinds if among is None else among
        kind = among[rng.integers(len(among))]
        i = hosts[kind][rng.integers(len(hosts[kind]))]
        j = int(rng.integers(len(docs[kind][i].anchors)))
        seg = make(kind, docs[kind][i].indents[j] if kind == "python" else None)
        insertions.setdefault((kind, i), []).append((j, seg))
        return seg

    rng, total = _rng(cfg, split, 5), 0
    if budget["hex"] and not kinds:
        raise ValueError("this split has no python or english document to hold hex digests; "
                         "raise the python/english share or the split size")
    while total < budget["hex"]:
        seg = place(rng, lambda kind, indent: (gen.python_hex_insertion(indent, rng) if kind == "python"
                                               else gen.english_hex_insertion(rng)))
        added = int((seg.context == src.CTX["hex"]).sum())
        total += added
        progress.update(added)
    if budget["base64"] and cfg.b64_text_fraction and not texts:
        raise ValueError("this split has no English prose to encode as base64 text")
    rng = _rng(cfg, split, 6)
    n_embed = round(cfg.b64_embed_fraction * budget["base64"]) if kinds else 0
    for embedded, share in ((True, n_embed), (False, budget["base64"] - n_embed)):
        total = 0
        while total < share:
            lo, hi = cfg.embedded_b64_bytes if embedded else cfg.doc_bytes["base64"]
            if not embedded:   # document bounds count encoded bytes: 4 characters per 3 raw bytes
                lo, hi = 3 * lo // 4, 3 * hi // 4
            hi = max(1, min(hi, 3 * (share - total) // 4))     # the last blob fits the budget
            lo = min(max(lo, 1), hi)
            width = None if embedded else gen.B64_LINE_WIDTH
            blob = (gen.b64_text(_english_slice(texts, lo, hi, rng), width)
                    if rng.random() < cfg.b64_text_fraction
                    else gen.b64_random(int(rng.integers(lo, hi + 1)), rng, width))
            if embedded:
                place(rng, lambda kind, indent: (gen.python_b64_insertion(blob, indent, rng)
                                                 if kind == "python" else gen.english_b64_insertion(blob, rng)))
            else:
                blobs.append(blob)
            total += len(blob.data)
            progress.update(len(blob.data))
    n_dna = embedded_dna(cfg, budget)
    dna_hosts = [kind for kind in kinds if kind in cfg.dna_embed_hosts]
    if n_dna and not dna_hosts:
        raise ValueError(f"this split has no {' or '.join(cfg.dna_embed_hosts)} document to hold DNA sequences; "
                         "raise that share or the split size, or set dna_embed_fraction 0")
    rng, total = _rng(cfg, split, 8), 0
    while total < n_dna:
        lo, hi = cfg.embedded_dna_bases
        seq = gen.dna_sequence(min(int(rng.integers(lo, hi + 1)), n_dna - total), rng, cfg.dna_lowercase,
                               cfg.dna_order)
        place(rng, lambda kind, indent: (gen.python_dna_insertion(seq, indent, rng) if kind == "python"
                                         else gen.english_dna_insertion(seq, rng)), dna_hosts)
        total += len(seq.data)
        progress.update(len(seq.data))
    return insertions, blobs


def embedded_dna(cfg: CorpusConfig, budget: dict) -> int:
    """The DNA bytes of a split that go inside real documents (the rest are records of their own)."""
    return round(cfg.dna_embed_fraction * budget["dna"])


def _build_split(cfg: CorpusConfig, split: int, units: list, n: int, progress) -> tuple:
    """All documents of one split, shuffled, each after a DOC_SEP: exactly n bytes.
    Returns (Segment [n], number of documents, statistics of the real-text pools)."""
    budget = _budgets(cfg, n)
    docs, pools = {}, {}
    for k, kind in enumerate(("python", "english")):
        docs[kind], passes = ([], 0) if budget[kind] == 0 else _real_documents(
            units, kind, budget[kind], cfg.doc_bytes[kind], _rng(cfg, split, k), progress)
        pool = [u.python_bytes if kind == "python" else sum(len(t.encode()) for t in u.english)
                for u in units]
        pools[kind] = {"units": sum(1 for b in pool if b), "pool_bytes": sum(pool),
                       "used_bytes": budget[kind], "passes": passes}
    generated = _generated_documents(cfg, split, {**budget, "dna": budget["dna"] - embedded_dna(cfg, budget)},
                                     progress)
    texts = [t.encode() for u in units for t in u.english]
    insertions, blobs = _insertions_and_blobs(cfg, split, budget, docs, texts, progress)

    real = [(kind, i) for kind in ("python", "english") for i in range(len(docs[kind]))]
    all_docs = [gen.insert_segments(docs[k][i], insertions[k, i]) if (k, i) in insertions
                else docs[k][i].seg for k, i in real] + generated + blobs
    # Separators, the text around inserted segments and the last generated segment of each source
    # made the split too long. Shorten real-text documents (last drawn first; those without
    # insertions before those with) so that python and english each keep their share; the stream's
    # end absorbs any rest.
    excess = sum(len(d.data) + 1 for d in all_docs) - n
    host_budget = budget["python"] + budget["english"]
    over = {k: sum(int((d.context == src.CTX[k]).sum()) for d in all_docs) - budget[k] for k in docs}
    rest = excess - sum(over.values())
    rest_python = round(rest * budget["python"] / host_budget) if host_budget else 0
    for kind, trim in (("python", over["python"] + rest_python),
                       ("english", over["english"] + rest - rest_python)):
        candidates = sorted((d for d in reversed(range(len(real))) if real[d][0] == kind),
                            key=lambda d: real[d] in insertions)
        for d in candidates:
            if trim <= 0:
                break
            cut = min(trim, len(all_docs[d].data) - 1)
            all_docs[d] = src.slice_segment(all_docs[d], 0, len(all_docs[d].data) - cut)
            trim -= cut
    separator = src.make_segment(b"\0", "separator", src.DET["separator"])
    stream = [part for i in _rng(cfg, split, 7).permutation(len(all_docs))
              for part in (separator, all_docs[i])]
    # The generator-state column is for tests only: leave it out of the (large) final arrays.
    columns = [np.concatenate([seg[c] for seg in stream])[:n] for c in range(4)]
    return src.Segment(*columns, state=None), len(all_docs), pools


def _floors(seg: src.Segment) -> dict:
    """Mean exact entropy per label over the given bytes; None where any byte's entropy is unknown."""
    def mean_or_none(mask):
        values = seg.entropy[mask]
        return float(values.astype(np.float64).mean()) if values.size and np.isfinite(values).all() else None
    context = {name: mean_or_none(seg.context == i) for i, name in enumerate(CONTEXT_NAMES)}
    detail = {name: mean_or_none(seg.detail == src.DET[name]) for name in FLOOR_DETAILS}
    return {"context": context, "detail": detail}


def build_corpus(cfg: CorpusConfig, out_dir, progress: bool = True) -> Corpus:
    """Build the corpus for `cfg` into folder `out_dir` (which must not exist) and return it loaded.

    Deterministic in cfg (on one Python installation). The folder is built under a temporary name
    beside `out_dir` and renamed when complete; if the build fails or is interrupted the temporary
    folder is removed, and a folder killed mid-build is never loaded (it has no meta.json and not the
    final name).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; load it with load_corpus, or use get_corpus")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir, prefix=f".{out_dir.name}.tmp-")  # folders of builds that were killed
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    started = time.time()
    try:
        tmp.mkdir()
        meta = {"format_version": FORMAT_VERSION, "config": cfg.to_dict(),
                "fingerprint": cfg.fingerprint(), "python": platform.python_version(),
                "stdlib": sysconfig.get_paths()["stdlib"], "vocab_size": VOCAB_SIZE, "doc_sep": DOC_SEP,
                "context_names": list(CONTEXT_NAMES), "detail_names": list(DETAIL_NAMES),
                "floor_details": list(FLOOR_DETAILS), "sizes": {}, "n_documents": {},
                "mixture_actual": {}, "pools": {}}
        units = _assign_units(cfg)
        meta["units"] = {split: [unit.name for unit in units[split]] for split in units}
        bar = progress_bar(total=cfg.n_train_bytes + cfg.n_val_bytes, unit="B", unit_scale=True,
                           desc="building corpus", disable=not progress, delay=1.0)
        with bar:
            for k, split in enumerate(("train", "val")):
                n = cfg.n_train_bytes if split == "train" else cfg.n_val_bytes
                seg, n_docs, pools = _build_split(cfg, k, units[split], n, bar)
                tokens = seg.data.astype(np.uint16)
                tokens[seg.context == src.CTX["separator"]] = DOC_SEP
                for name, arr in zip(_FIELDS, (tokens, seg.context, seg.detail, seg.entropy)):
                    write_npy(tmp / f"{split}_{name}.npy", arr.astype(_FIELDS[name]))
                counts = np.bincount(seg.context, minlength=len(CONTEXT_NAMES))
                meta["sizes"][split] = int(n)
                meta["n_documents"][split] = int(n_docs)
                meta["mixture_actual"][split] = {c: float(counts[i] / n) for i, c in enumerate(CONTEXT_NAMES)}
                meta["pools"][split] = pools
                if split == "val":
                    meta["floors"] = _floors(seg)
        meta["build_seconds"] = round(time.time() - started, 1)
        meta["complete"] = True
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        os.rename(tmp, out_dir)
    except BaseException as e:
        full = is_disk_full(e) and not isinstance(e, DiskFullError) and DiskFullError(e.filename or out_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:  # said with the space that was left at the time
            raise full from e
        raise
    return load_corpus(out_dir)
