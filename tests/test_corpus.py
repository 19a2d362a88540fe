"""Tests of the byte tokenizer and the labelled corpus (tinymono/corpus.py, corpus_sources.py, corpus_generated.py, corpus_build.py)."""
import ast
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinymono import corpus_generated as gen
from tinymono import corpus_sources as src
from tinymono.corpus import (DOC_SEP, SCRIPT_SIBLINGS, SEP_MARKER, SOURCES, VOCAB_SIZE, Corpus, CorpusConfig, Split, decode,
                             decode_bytes, encode, load_corpus, ngram_bits_per_byte)
from tinymono.corpus_build import build_corpus, get_corpus

SMALL = dict(n_train_bytes=400_000, n_val_bytes=150_000)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small corpus with the default mixture, shared by the tests of this module."""
    return build_corpus(CorpusConfig(seed=1, **SMALL), tmp_path_factory.mktemp("c") / "small",
                        progress=False)


def documents(split):
    """The documents of a split as bytes (the text between DOC_SEPs), with their context labels."""
    tokens, context = np.asarray(split.tokens), np.asarray(split.context)
    bounds = list(np.flatnonzero(tokens == DOC_SEP)) + [len(tokens)]
    return [(tokens[a + 1:b].astype(np.uint8).tobytes(), context[a + 1:b])
            for a, b in zip(bounds[:-1], bounds[1:])]


# --------------------------------------------------------------------------------------- tokenizer
@given(st.binary(max_size=300))
def test_bytes_round_trip(data):
    ids = encode(data)
    assert ids.dtype == np.uint16 and ids.shape == (len(data),)
    assert decode_bytes(ids) == data, "decode_bytes(encode(b)) must give b back exactly"


@given(st.text(max_size=200))
def test_text_round_trip(text):
    ids = encode(text)
    assert len(ids) == len(text.encode("utf-8")), "one token per UTF-8 byte, not per character"
    assert decode(ids) == text


def test_separator_and_errors():
    ids = np.concatenate([encode("ab"), [DOC_SEP], encode("c")])
    assert decode(ids) == "ab" + SEP_MARKER + "c"
    assert decode_bytes(ids, sep=b"|") == b"ab|c"
    with pytest.raises(ValueError, match="ids"):
        decode_bytes(ids)                          # DOC_SEP is not a byte
    for bad in ([0, 257], [-1, 3]):
        with pytest.raises(ValueError, match=r"ids.*\[0, 256\]"):
            decode(np.array(bad))
    broken = encode("é")[:1]                       # a lead byte without its continuation
    with pytest.raises(UnicodeDecodeError):
        decode(broken)
    assert decode(broken, errors="replace") == "\ufffd"
    assert VOCAB_SIZE == 257 and DOC_SEP == 256


# --------------------------------------------------------------------------------------- labels
def test_python_labels_on_non_ascii_snippet():
    code = 'héllo = "wörld"  # ünï\nif héllo: x = 0x1F\n'
    # One letter per character: N name, K keyword, O operator, S string, C comment, U number,
    # W whitespace. Each character's label must cover all of its UTF-8 bytes.
    marks = "NNNNNWOWSSSSSSSWWCCCCCWKKWNNNNNOWNWOWUUUUW"
    names = dict(N="py_name", K="py_keyword", O="py_operator", S="py_string", C="py_comment",
                 U="py_number", W="py_whitespace")
    assert len(marks) == len(code)
    expected = [names[m] for ch, m in zip(code, marks) for _ in ch.encode("utf-8")]
    got = [src.DETAIL_NAMES[d] for d in src.label_python(code).seg.detail]
    bad = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got)) if e != g]
    assert not bad, ("tokenize columns count characters, not bytes: convert them with the UTF-8 "
                     f"lengths of the characters before them. First mismatches (byte, want, got): {bad[:5]}")


def test_python_insertions_keep_files_valid():
    host = src.python_unit("py/textwrap.py")
    rng = np.random.default_rng(0)
    picks = rng.choice(len(host.anchors), size=25, replace=False)
    inserts = [(int(j), gen.python_hex_insertion(host.indents[j], rng) if k % 2 else
                gen.python_b64_insertion(gen.b64_random(20, rng), host.indents[j], rng))
               for k, j in enumerate(picks)]
    seg = gen.insert_segments(host, inserts)
    text = seg.data.tobytes().decode()
    ast.parse(text)   # raises if an inserted statement got the wrong indentation
    assert (seg.context == src.CTX["hex"]).sum() >= 32 and (seg.context == src.CTX["base64"]).sum() >= 28


def test_labels_align_with_tokens(corpus):
    for name in ("train", "val"):
        s = corpus.split(name)
        n = corpus.meta["sizes"][name]
        assert [len(a) for a in s] == [n] * 4, "tokens, context, detail and entropy must be equally long"
        sep = np.asarray(s.tokens) == DOC_SEP
        assert np.array_equal(sep, np.asarray(s.context) == 0), "DOC_SEP <=> context 'separator'"
        assert int(np.asarray(s.tokens).max()) <= DOC_SEP


def test_every_context_present_and_mixture_respected(corpus):
    requested = corpus.config.mixture
    for name in ("train", "val"):
        counts = np.bincount(np.asarray(corpus.split(name).context), minlength=len(corpus.context_names))
        missing = [c for c, k in zip(corpus.context_names, counts) if k == 0]
        assert not missing, f"{name}: no bytes of {missing}"
        n = len(corpus.split(name).tokens)
        share = {s: counts[corpus.context_names.index(s)] / n for s in requested if s != "family"}
        share["family"] = sum(counts[corpus.context_names.index(c)] for c in src.LANGUAGES) / n
        off = {s: (round(share[s], 4), f) for s, f in requested.items() if abs(share[s] - f) > 0.006}
        assert not off, f"{name}: (actual, requested) byte fractions differ: {off}"


def test_entropy_known_exactly_where_generated(corpus):
    s = corpus.val
    entropy, context, detail = np.asarray(s.entropy), np.asarray(s.context), np.asarray(s.detail)
    unknown = np.isin(context, [src.CTX[c] for c in ("separator", "python", "english")]) | (
        detail == src.DET["b64_text"])
    assert np.isnan(entropy[unknown]).all(), "real text (and base64 of text) has no known entropy"
    assert np.isfinite(entropy[~unknown]).all(), "every generated byte must record its entropy"
    floors = corpus.floors
    for label in ("dna", "hex", "arabic", "hebrew"):
        mean = float(entropy[context == src.CTX[label]].astype(np.float64).mean())
        assert floors["context"][label] == pytest.approx(mean, abs=1e-9)
    assert floors["context"]["python"] is None and floors["context"]["base64"] is None
    assert floors["detail"]["hex_digest"] == 4.0
    assert floors["detail"]["hebrew_cont"] == pytest.approx(np.log2(27), abs=1e-6)


def test_utf8_lead_bytes(corpus):
    tokens, detail = np.asarray(corpus.train.tokens), np.asarray(corpus.train.detail)
    for script, leads in (("arabic", {0xD8, 0xD9}), ("hebrew", {0xD7})):
        lead = np.flatnonzero(detail == src.DET[script + "_lead"])
        cont = np.flatnonzero(detail == src.DET[script + "_cont"])
        assert set(np.unique(tokens[lead]).tolist()) == leads, f"{script} letters must lead with {leads}"
        assert ((tokens[cont] >= 0x80) & (tokens[cont] <= 0xBF)).all(), "continuation bytes are 10xxxxxx"
        assert (detail[cont - 1] == src.DET[script + "_lead"]).all(), "each continuation follows a lead"
        inside = np.asarray(corpus.train.context) == src.CTX[script]
        text = decode(tokens[inside], errors="ignore")   # bytes of all documents, joined
        block = range(0x0600, 0x0700) if script == "arabic" else range(0x0590, 0x0600)
        stray = {ch for ch in text if not ch.isspace() and ord(ch) not in block}
        assert not stray, f"{script} documents hold characters outside the script: {sorted(stray)[:10]}"


def test_embedded_segments_change_labels_mid_document(corpus):
    pairs = set()
    for data, ctx in documents(corpus.train):
        kinds = set(np.unique(ctx).tolist())
        pairs |= {(h, g) for h in ("python", "english") for g in ("base64", "hex")
                  if src.CTX[h] in kinds and src.CTX[g] in kinds}
    assert len(pairs) == 4, f"expected base64 and hex inside both python and english documents, got {pairs}"
    tokens, context, detail = (np.asarray(a) for a in corpus.train[:3])
    start = np.flatnonzero((context[1:] == src.CTX["base64"]) & (context[:-1] == src.CTX["python"])) + 1
    assert len(start) > 0
    assert np.isin(tokens[start - 1], list(b"\"'")).all(), "a blob in Python sits in a string literal"
    assert (detail[start - 1] == src.DET["py_string"]).all(), "the quote keeps the label py_string"


# --------------------------------------------------------------------------------------- splits
def test_train_and_val_share_no_document(corpus):
    train = {data for data, _ in documents(corpus.train)}
    shared = [d[:60] for d, _ in documents(corpus.val) if d in train]
    assert not shared, f"documents in both splits: {shared[:3]}"
    # Validation prose and code are unseen: 128-byte windows of validation text almost never occur
    # in train. (Not never: the stdlib has near-copies, e.g. distutils' three MSVC compiler files.)
    train_bytes = np.asarray(corpus.train.tokens).astype(np.uint8).tobytes()
    tokens, context = np.asarray(corpus.val.tokens), np.asarray(corpus.val.context)
    rng = np.random.default_rng(0)
    found = total = 0
    for start in rng.integers(0, len(tokens) - 128, size=400):
        window = context[start:start + 128]
        if (window == window[0]).all() and window[0] in (src.CTX["python"], src.CTX["english"]):
            total += 1
            found += tokens[start:start + 128].astype(np.uint8).tobytes() in train_bytes
    assert total > 100 and found <= 0.05 * total, f"{found} of {total} validation windows occur in train"


def test_validation_text_comes_from_validation_units_only(corpus):
    units = {u.name: u for u in src.stdlib_units()}
    names = corpus.meta["units"]
    assert not set(names["train"]) & set(names["val"]), "a unit in both splits"
    assert set(names["train"]) | set(names["val"]) == set(units)

    def texts(split):
        out = []
        for name in names[split]:
            if units[name].python_bytes:
                out.append((src.stdlib_root() / name[3:]).read_bytes())
            out += [t.encode() for t in units[name].english]
        return b"\x00".join(out)
    val_text, train_text = texts("val"), texts("train")
    windows = [data[len(data) // 2 - 50:len(data) // 2 + 50] for data, ctx in documents(corpus.val)
               if len(data) >= 300 and (ctx == ctx[0]).all() and ctx[0] in (src.CTX["python"], src.CTX["english"])]
    assert len(windows) >= 20
    stray = [w for w in windows if w not in val_text]
    assert not stray, f"validation text that is in no validation unit: {stray[:2]}"
    seen = sum(w in train_text for w in windows)
    assert seen <= 0.05 * len(windows), f"{seen} of {len(windows)} validation windows are in train units"


def test_same_seed_same_corpus_other_seed_other(tmp_path):
    tiny = dict(n_train_bytes=30_000, n_val_bytes=10_000)
    a = build_corpus(CorpusConfig(seed=5, **tiny), tmp_path / "a", progress=False)
    b = build_corpus(CorpusConfig(seed=5, **tiny), tmp_path / "b", progress=False)
    c = build_corpus(CorpusConfig(seed=6, **tiny), tmp_path / "c", progress=False)
    for name in ("train", "val"):
        for x, y in zip(a.split(name), b.split(name)):
            assert np.array_equal(x, y, equal_nan=True), "same seed must give the same corpus"
        assert not np.array_equal(a.split(name).tokens, c.split(name).tokens), "seed must matter"


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=len(SOURCES), max_size=len(SOURCES)).filter(lambda w: sum(w) > 0),
       st.integers(4096, 12_000), st.integers(0, 2**16))
def test_any_mixture_fills_both_splits_exactly(weights, n, seed):
    mixture = {s: w / sum(weights) for s, w in zip(SOURCES, weights)}
    assume(mixture["hex"] == 0 or (mixture["python"] + mixture["english"]) * n >= 1000)
    cfg = CorpusConfig(seed=seed, n_train_bytes=n + 1, n_val_bytes=n, mixture=mixture)
    folder = Path(tempfile.mkdtemp())
    try:
        corpus = build_corpus(cfg, folder / "c", progress=False)  # loading checks the sizes
        for name in ("train", "val"):
            counts = np.bincount(np.asarray(corpus.split(name).context), minlength=len(src.CONTEXT_NAMES))
            present = {s: counts[src.CTX[s]] > 0 for s in SOURCES if s != "family"}
            present["family"] = counts[[src.CTX[c] for c in src.LANGUAGES]].sum() > 0
            missing = [s for s in SOURCES if present[s] != (mixture[s] > 0)]
            assert not missing, f"{name}: sources present/absent against the mixture: {missing}, {counts}"
    finally:
        shutil.rmtree(folder)


# --------------------------------------------------------------------------------------- floors
def miller_madow_bits(symbols: np.ndarray) -> float:
    """Plug-in entropy of a sample plus the Miller-Madow bias correction (K - 1) / (2 N ln 2)."""
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() + (len(counts) - 1) / (2 * counts.sum() * np.log(2)))


GENERATOR_SAMPLES = {
    "dna": lambda rng: gen.dna_document(600_000, rng),
    "arabic": lambda rng: gen.script_document("arabic", 300_000, rng),
    "hebrew": lambda rng: gen.script_document("hebrew", 200_000, rng),
    # letters that depend on the previous letter's class (corpus option script_classes)
    "arabic_classes": lambda rng: gen.script_document("arabic", 300_000, rng, classes=4),
    "hebrew_classes": lambda rng: gen.script_document("hebrew", 200_000, rng, classes=3),
    # shorter words (corpus option script_word_end): the state after a letter has other odds
    "hebrew_short_words": lambda rng: gen.script_document("hebrew", 200_000, rng, word_end=0.45),
    "arabic_classes_short_words": lambda rng: gen.script_document("arabic", 900_000, rng, classes=4, word_end=0.45),
    "hex": lambda rng: src.concat([gen.hex_digest(n, rng) for n in rng.choice(gen.HEX_LENGTHS, 2000)]),
    # DNA sequences for insertion into real text (corpus option dna_embed_fraction): short, so that the
    # first base's state gets thousands of samples too
    "dna_sequences": lambda rng: src.concat([gen.dna_sequence(int(n), rng) for n in rng.integers(1, 30, 20_000)]),
    # DNA whose bases depend on the two before them (corpus option dna_order): 16 chain states
    "dna_order2": lambda rng: gen.dna_document(600_000, rng, order=2),
    "dna_sequences_order2": lambda rng: src.concat([gen.dna_sequence(int(n), rng, order=2)
                                                    for n in rng.integers(1, 30, 20_000)]),
    # Two languages of the family: the one with the shortest words, and the one with the lowest floor.
    "lang_long_words": lambda rng: gen.language_document(
        int(np.argmin([lang.end for lang in gen.languages()])), 400_000, rng),
    "lang_low_floor": lambda rng: gen.language_document(
        int(np.argmin([gen.entropy_bits(lang.first) for lang in gen.languages()])), 400_000, rng),
    # Sibling languages (corpus option script_siblings): the last language in Hebrew letters, the one
    # before it in Arabic letters (two lead bytes).
    "lang_hebrew_letters": lambda rng: gen.language_document(src.N_LANGUAGES - 1, 600_000, rng, "hebrew"),
    "lang_arabic_letters": lambda rng: gen.language_document(src.N_LANGUAGES - 2, 600_000, rng, "arabic"),
    # ... and with letters of their own (corpus option sibling_own_letters: more lead bytes after a letter;
    # the Arabic sibling's three lead bytes make rare continuation states, which need the larger sample to
    # be estimated within the tolerance)
    "lang_hebrew_own_letters": lambda rng: gen.language_document(src.N_LANGUAGES - 1, 600_000, rng, "hebrew", True),
    "lang_arabic_own_letters": lambda rng: gen.language_document(src.N_LANGUAGES - 2, 4_000_000, rng, "arabic", True),
    # Many short blobs, half of them wrapped, so the rarer states (padded groups, line breaks) get
    # thousands of samples too.
    "base64": lambda rng: src.concat([gen.b64_random(int(n), rng, width=gen.B64_LINE_WIDTH if k % 2 else None)
                                      for k, n in enumerate(rng.integers(1, 40, size=12_000))]),
}


@pytest.mark.parametrize("name", GENERATOR_SAMPLES)
def test_entropy_agrees_with_empirical_estimate(name):
    """For every generator state: the recorded entropy equals the entropy of the bytes actually drawn
    in that state, estimated from a large sample. Catches a wrong formula (6 bits claimed for a
    padded base64 character that carries 2) and wrong state bookkeeping alike."""
    seg = GENERATOR_SAMPLES[name](np.random.default_rng(123))
    checked = 0
    for state in np.unique(seg.state):
        mask = seg.state == state
        claimed = seg.entropy[mask]
        assert np.ptp(claimed) < 1e-6, f"{name} state {state}: one state, several entropies {np.unique(claimed)}"
        if mask.sum() < 2000:
            continue
        estimate = miller_madow_bits(seg.data[mask])
        assert abs(estimate - claimed[0]) < 0.03, (
            f"{name} state {state}: recorded {claimed[0]:.4f} bits, the sample of {mask.sum()} bytes "
            f"has {estimate:.4f}: is the formula for this position right?")
        checked += int(mask.sum())
    assert checked >= 0.95 * len(seg.data), f"{name}: only {checked} of {len(seg.data)} bytes were checked"


def test_languages_overlap_so_no_byte_names_one():
    """The family's alphabets overlap: every letter that some language uses belongs to at least three,
    so a model can tell the languages apart only from the context, as with real languages. A document
    uses only its language's letters, spaces and newlines, and its words follow the language's chain."""
    langs = gen.languages()
    owners = np.zeros(256, int)
    for lang in langs:
        owners[lang.letters] += 1
    used = owners[owners > 0]
    assert used.min() >= 3, f"a letter belongs to only {used.min()} language(s): it would name them"
    assert len({lang.letters.tobytes() for lang in langs}) == len(langs), "two languages share an alphabet"
    for k in (0, len(langs) - 1):
        seg = gen.language_document(k, 5000, np.random.default_rng(k))
        assert len(seg.data) == 5000 and (seg.context == src.CTX[src.LANGUAGES[k]]).all()
        allowed = set(langs[k].letters.tolist()) | {ord(" "), ord("\n")}
        assert set(seg.data.tolist()) <= allowed, f"lang{k:02d} wrote bytes outside its alphabet"
        assert np.allclose(langs[k].next.sum(axis=1), 1) and np.isclose(langs[k].first.sum(), 1)


@pytest.mark.parametrize("siblings, own_letters", [(1, False), (3, False), (2, True)])
def test_sibling_languages_write_whole_letters_of_their_script(siblings, own_letters):
    """With script_siblings = S the last 2S languages write the same words as before (the same chain,
    the same draws), each letter now a letter of Arabic or Hebrew: whole UTF-8 characters of the
    script, ending after a letter, at most 2 bytes over the length asked for; the others are unchanged.
    With sibling_own_letters two of each sibling's letters are letters its script's own language never
    writes, under lead bytes that language never writes."""
    first = src.N_LANGUAGES - 2 * siblings
    assert [gen.sibling_script(k, siblings) for k in range(first - 1, src.N_LANGUAGES)] == \
        [None] + ["arabic", "hebrew"] * siblings
    for k in (first, src.N_LANGUAGES - 1):
        script = gen.sibling_script(k, siblings)
        plain = gen.language_document(k, 3000, np.random.default_rng(k))
        seg = gen.language_document(k, 3000, np.random.default_rng(k), script, own_letters)
        assert 3000 <= len(seg.data) <= 3002 and (seg.context == src.CTX[src.LANGUAGES[k]]).all()
        text = seg.data.tobytes().decode("utf-8")             # raises if a letter were cut or malformed
        words = text.split()
        letters = set(map(ord, "".join(words)))
        own = letters & set(gen.SIBLING_OWN_LETTERS[script].tolist())
        assert letters - own <= set(gen.SCRIPT_LETTERS[script].tolist()), f"lang{k:02d} wrote letters outside {script}"
        assert len(own) == (2 if own_letters else 0) and len(letters) <= gen.LANG_LETTERS
        own_leads = {0xC0 | (c >> 6) for c in own}
        assert not own_leads & {0xC0 | (int(c) >> 6) for c in gen.SCRIPT_LETTERS[script]}, \
            f"lang{k:02d}: its own letters share a lead byte with {script}'s"
        # the same words: map each script letter back to the lowercase letter it stands for
        back = dict(zip(gen._sibling_letters(gen.languages()[k].letters, script, own_letters).tolist(),
                        gen.languages()[k].letters.tolist()))
        assert len(back) == gen.LANG_LETTERS, "two letters of the alphabet became one script letter"
        plain_words = plain.data.tobytes().decode().split()
        assert [bytes(back[ord(c)] for c in w).decode() for w in words[:-1]] == plain_words[:len(words) - 1]


def test_dna_line_breaks_follow_their_probability():
    seg = gen.dna_document(300_000, np.random.default_rng(7))
    mid = seg.state == 7                       # positions where a line may end
    rate = (seg.data[mid] == ord("\n")).mean()
    assert abs(rate - gen.DNA_NEWLINE_PROB) < 0.002, f"newline rate {rate:.4f} != {gen.DNA_NEWLINE_PROB:.4f}"
    bases = seg.data[seg.detail == src.DET["dna_base"]]
    freq = np.bincount(bases, minlength=256)[list(b"ACGT")] / len(bases)
    assert np.abs(freq - 0.25).max() < 0.01, f"bases must be uniform, got {freq}"
    pairs = np.zeros((4, 4))                   # consecutive bases, across line ends
    index = np.full(256, -1)
    index[list(b"ACGT")] = range(4)
    b = index[bases]
    np.add.at(pairs, (b[:-1], b[1:]), 1)
    assert np.abs(pairs / pairs.sum(axis=1, keepdims=True) - gen.DNA_NEXT).max() < 0.02, "transitions"


def test_dna_of_order_two_repeats_its_steps():
    """dna_order 2: given the two bases before it, a base is 2 b[-1] - b[-2] (mod 4: the last step again)
    with probability DNA_PREFERRED, else one of the other three, while given the last base alone it
    is uniform (what an order-1 model of the bytes learns: nothing); the bases stay uniform."""
    seg = gen.dna_document(400_000, np.random.default_rng(11), order=2)
    index = np.full(256, -1)
    index[list(b"ACGT")] = range(4)
    b = index[seg.data[seg.detail == src.DET["dna_base"]]]
    assert np.abs(np.bincount(b, minlength=4) / len(b) - 0.25).max() < 0.01
    repeated = b[2:] == (2 * b[1:-1] - b[:-2]) % 4
    assert abs(repeated.mean() - gen.DNA_PREFERRED) < 0.01
    triples = np.zeros((16, 4))
    np.add.at(triples, (4 * b[:-2] + b[1:-1], b[2:]), 1)
    expect = np.array([np.roll(gen.DNA_STEP, (2 * (k % 4) - k // 4) % 4 - 1) for k in range(16)])
    assert np.abs(triples / triples.sum(axis=1, keepdims=True) - expect).max() < 0.02
    pairs = np.zeros((4, 4))
    np.add.at(pairs, (b[:-1], b[1:]), 1)
    assert np.abs(pairs / pairs.sum(axis=1, keepdims=True) - 0.25).max() < 0.02


# --------------------------------------------------------------------------------------- config, disk
@pytest.mark.parametrize("kwargs,message", [
    (dict(n_train_bytes=-5), "n_train_bytes"),
    (dict(n_val_bytes=10), "n_val_bytes"),
    (dict(mixture={"python": 0.5, "english": 0.4}), "sum to 1"),
    (dict(mixture={"python": 1.2, "english": -0.2}), ">= 0"),
    (dict(mixture={"python": 0.5, "klingon": 0.5}), "unknown source"),
    (dict(doc_bytes={"dna": (500, 100)}), "doc_bytes"),
    (dict(b64_text_fraction=1.5), "b64_text_fraction"),
    (dict(mixture={"hex": 0.5, "dna": 0.5}), "hex digests live inside"),
    (dict(script_siblings=25), "script_siblings"),
    (dict(script_classes=-1), "script_classes"),
    (dict(script_word_end=1.0), "script_word_end"),
    (dict(dna_embed_fraction=-0.1), "dna_embed_fraction"),
    (dict(embedded_dna_bases=(0, 10)), "embedded_dna_bases"),
    (dict(mixture={"dna": 0.5, "arabic": 0.5}, dna_embed_fraction=0.5), "embedded DNA"),
    (dict(dna_embed_hosts=("fortran",)), "dna_embed_hosts"),
    (dict(dna_embed_hosts=()), "dna_embed_hosts"),
    (dict(dna_lowercase="yes"), "dna_lowercase"),
    (dict(sibling_own_letters=1), "sibling_own_letters"),
    (dict(sibling_own_letters=True, script_siblings=0), "needs script_siblings"),
    (dict(dna_order=3), "dna_order"),
    (dict(mixture={"python": "0.49", "english": 0.51}), "with numbers"),
    (dict(mixture={"python": None, "english": 1.0}), "with numbers"),
    (dict(doc_bytes={"python": 5000}), r"doc_bytes\['python'\]"),
    (dict(doc_bytes=[(1, 2)]), "doc_bytes"),
])
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CorpusConfig(**kwargs)


OWN_LEADS = [0xD6, 0xDA, 0xDB]  # the lead bytes of corpus_generated.SIBLING_OWN_LETTERS


@pytest.mark.parametrize("own_letters", [False, True])
def test_corpus_with_siblings_fills_its_splits(tmp_path, own_letters):
    cfg = CorpusConfig(n_train_bytes=60_000, n_val_bytes=20_000, script_siblings=2, sibling_own_letters=own_letters)
    corpus = build_corpus(cfg, tmp_path / "c", progress=False)   # loading checks the sizes
    split = corpus.split("train")
    tokens, context = np.asarray(split.tokens), np.asarray(split.context)
    for k in range(src.N_LANGUAGES - 5, src.N_LANGUAGES):
        script = gen.sibling_script(k, 2)
        data = tokens[context == src.CTX[src.LANGUAGES[k]]]
        assert len(data) > 0
        high = (data >= 0x80).mean()
        assert (high > 0.5) if script else (high == 0), f"lang{k:02d} ({script}): {high:.0%} of its bytes >= 0x80"
        own_leads = np.isin(data, OWN_LEADS).any()
        assert own_leads == bool(script and own_letters), f"lang{k:02d} ({script}): own lead bytes {own_leads}"
    for script in ("arabic", "hebrew"):  # the scripts' own documents never write them
        assert not np.isin(tokens[context == src.CTX[script]], OWN_LEADS).any()


def test_embedded_dna_sits_in_real_text_and_keeps_the_share(tmp_path):
    """dna_embed_fraction: that share of the DNA bytes sits inside Python and English documents, one line of
    embedded_dna_bases bases after a host byte, with its exact entropies; the rest are records of their
    own, and the DNA share of each split is the mixture's."""
    cfg = CorpusConfig(n_train_bytes=400_000, n_val_bytes=100_000, dna_embed_fraction=0.5)
    corpus = build_corpus(cfg, tmp_path / "c", progress=False)
    for split in (corpus.train, corpus.val):
        tokens, context, detail = (np.asarray(a) for a in split[:3])
        entropy = np.asarray(split.entropy)
        dna = context == src.CTX["dna"]
        assert dna.mean() == pytest.approx(cfg.mixture["dna"], abs=2e-3)
        host = np.isin(context, [src.CTX["python"], src.CTX["english"]])
        hosted = np.zeros(len(tokens), bool)
        starts = np.flatnonzero(dna[1:] & host[:-1]) + 1
        assert len(starts) > 5
        for a in starts:
            b = a + int(np.argmin(dna[a:]))          # the first byte after the sequence
            assert host[b], "an embedded sequence ends in its host document"
            assert b - a <= cfg.embedded_dna_bases[1]   # the split's last one may be shorter than the minimum
            assert set(tokens[a:b].tolist()) <= set(b"ACGT") and (detail[a:b] == src.DET["dna_base"]).all()
            assert entropy[a] == 2.0 and np.allclose(entropy[a + 1:b], gen.entropy_bits(gen.DNA_STEP))
            hosted[a:b] = True
        assert 0.45 <= hosted.sum() / dna.sum() <= 0.55, f"{hosted.sum() / dna.sum():.2f} of the DNA is embedded"
        assert (detail[dna & ~hosted] == src.DET["dna_header"]).any(), "the rest are records with headers"
        assert {int(c) for c in context[starts - 1]} == {src.CTX["python"], src.CTX["english"]}


def test_embedded_dna_only_in_the_hosts_asked_for(tmp_path):
    cfg = CorpusConfig(n_train_bytes=200_000, n_val_bytes=60_000, dna_embed_fraction=0.5, dna_embed_hosts=("english",))
    corpus = build_corpus(cfg, tmp_path / "c", progress=False)
    context = np.asarray(corpus.train.context)
    dna = context == src.CTX["dna"]
    before = context[np.flatnonzero(dna[1:] & ~dna[:-1])]          # the byte before each stretch of DNA
    assert src.CTX["english"] in before and src.CTX["python"] not in before
    assert dna.mean() == pytest.approx(cfg.mixture["dna"], abs=2e-3)


def test_lowercase_dna_is_the_same_chain_in_other_bytes(tmp_path):
    """dna_lowercase: the same corpus to the byte except DNA's bases, which read a, c, g, t for A, C, G, T,
    in records and in embedded sequences, with the same labels and exact entropies."""
    kwargs = dict(n_train_bytes=200_000, n_val_bytes=60_000, dna_embed_fraction=0.3)
    upper = build_corpus(CorpusConfig(**kwargs), tmp_path / "upper", progress=False)
    lower = build_corpus(CorpusConfig(**kwargs, dna_lowercase=True), tmp_path / "lower", progress=False)
    for a, b in ((upper.train, lower.train), (upper.val, lower.val)):
        base = np.asarray(a.detail) == src.DET["dna_base"]
        assert base.sum() > 500
        for field in ("context", "detail", "entropy"):
            assert np.array_equal(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)), equal_nan=True), field
        ta, tb = np.asarray(a.tokens), np.asarray(b.tokens)
        assert np.array_equal(ta[~base], tb[~base])
        assert set(ta[base].tolist()) == set(b"ACGT") and np.array_equal(ta[base] + 32, tb[base])
    assert lower.config.dna_lowercase and upper.config.fingerprint() != lower.config.fingerprint()


def test_config_dict_rebuilds_the_config():
    """The config's dict (what meta.json holds) rebuilds it exactly, options included; script_classes,
    script_word_end, sibling_own_letters and the DNA options stay out of it at their defaults, so that
    adding them moved no cached corpus."""
    configs = [CorpusConfig(), CorpusConfig(script_siblings=0), CorpusConfig(script_classes=4),
               CorpusConfig(script_word_end=0.45), CorpusConfig(dna_embed_fraction=0.5),
               CorpusConfig(dna_embed_fraction=0.5, dna_embed_hosts=("english",)), CorpusConfig(dna_lowercase=True),
               CorpusConfig(dna_order=2), CorpusConfig(sibling_own_letters=True)]
    assert not ({"script_classes", "script_word_end", "dna_embed_fraction", "dna_lowercase", "dna_order",
                 "sibling_own_letters"}
                & set(configs[0].to_dict()))
    assert configs[0].script_siblings == SCRIPT_SIBLINGS > 0
    assert len({cfg.fingerprint() for cfg in configs}) == len(configs)
    for cfg in configs:
        assert CorpusConfig(**cfg.to_dict()) == cfg


def test_interrupted_build_leaves_nothing_loadable(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(gen, "script_document", interrupt)
    cfg = CorpusConfig(n_train_bytes=20_000, n_val_bytes=10_000)
    with pytest.raises(KeyboardInterrupt):
        get_corpus(cfg, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == [], "a failed build must not leave a folder behind"
    monkeypatch.undo()
    corpus = get_corpus(cfg, tmp_path, progress=False)
    # A folder killed mid-build (arrays but no meta.json) or a damaged one is refused, not loaded.
    (corpus.path / "meta.json").rename(tmp_path / "meta.json")
    with pytest.raises(FileNotFoundError, match="interrupted"):
        get_corpus(cfg, tmp_path)
    (tmp_path / "meta.json").rename(corpus.path / "meta.json")
    np.save(corpus.path / "val_tokens.npy", np.zeros(5, np.uint16))
    with pytest.raises(ValueError, match="val_tokens"):
        load_corpus(corpus.path)


def test_get_corpus_loads_what_it_built(tmp_path):
    cfg = CorpusConfig(n_train_bytes=20_000, n_val_bytes=10_000, mixture={"dna": 0.5, "english": 0.5})
    first = get_corpus(cfg, tmp_path, progress=False)
    again = get_corpus(cfg, tmp_path)
    assert again.path == first.path and again.meta == first.meta
    assert isinstance(again.train.tokens, np.memmap), "arrays are memory-mapped, not read into RAM"
    meta = json.loads((first.path / "meta.json").read_text())
    meta["config"]["seed"] = 99
    (first.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="holds a corpus for config"):
        get_corpus(cfg, tmp_path)
    with pytest.raises(FileExistsError):
        build_corpus(cfg, first.path, progress=False)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_sample_windows(corpus):
    tokens, context, detail = corpus.sample_windows("train", 8, 64, np.random.default_rng(3))
    assert tokens.shape == context.shape == detail.shape == (8, 64)
    assert tokens.dtype == np.uint16 and context.dtype == np.uint8
    again = corpus.sample_windows("train", 8, 64, np.random.default_rng(3))
    assert np.array_equal(tokens, again[0]), "the same rng state must give the same windows"
    full = np.asarray(corpus.train.tokens)
    for row in tokens:   # every window is a contiguous slice of the split
        starts = np.flatnonzero(full[:len(full) - 63] == row[0])
        assert any(np.array_equal(full[s:s + 64], row) for s in starts)
    with pytest.raises(TypeError, match="Generator"):
        corpus.sample_windows("train", 8, 64, 3)


# --------------------------------------------------------------------------------------- baselines
def test_ngram_baselines_on_dna(tmp_path):
    cfg = CorpusConfig(n_train_bytes=300_000, n_val_bytes=60_000, mixture={"dna": 1.0})
    corpus = build_corpus(cfg, tmp_path / "dna", progress=False)
    uni, bi = ngram_bits_per_byte(corpus, 1), ngram_bits_per_byte(corpus, 2)
    floor = corpus.floors["context"]["dna"]
    # A unigram model's cross-entropy is the entropy of the byte histogram: 2 bits for the bases, a
    # little more for line breaks and headers.
    counts = np.bincount(np.asarray(corpus.val.tokens)[1:], minlength=VOCAB_SIZE)
    p = counts[counts > 0] / counts.sum()
    histogram_bits = float(-(p * np.log2(p)).sum())
    assert abs(uni["overall"] - histogram_bits) < 0.02, (uni["overall"], histogram_bits)
    assert 2.0 <= uni["dna"] <= 2.3, f"unigram on DNA's uniform bases should be ~2 bits, got {uni['dna']:.3f}"
    # The bases are an order-1 chain, so a bigram model nearly reaches the floor: it pays only where the
    # previous byte is not the previous base (after a line end, in headers).
    assert bi["dna"] >= floor - 0.02, f"bigram {bi['dna']:.3f} beats the floor {floor:.3f}: a floor is wrong"
    assert bi["dna"] <= floor + 0.06, f"bigram {bi['dna']:.3f} far above the floor {floor:.3f}: is the chain there?"
    chain = gen.entropy_bits(gen.DNA_STEP)
    assert chain + 0.03 <= floor <= chain + 0.2, f"floor {floor:.3f}: the chain's {chain:.3f} bits a base plus line ends"


def test_ngram_counts_by_hand(tmp_path):
    """train "aab", val "ab": the one scored byte is 'b' (after 'a'). With add-k, k = 0.5, over 257
    tokens: unigram P(b) = (1 + k) / (3 + 257k); bigram P(b | a) = (1 + k) / (2 + 257k)."""
    def split(text):
        tokens = encode(text)
        n = len(tokens)
        return Split(tokens, np.full(n, 2, np.uint8), np.zeros(n, np.uint8), np.full(n, np.nan, np.float32))
    names = {"context_names": list(src.CONTEXT_NAMES), "detail_names": list(src.DETAIL_NAMES)}
    toy = Corpus(tmp_path, names, split("aab"), split("ab"))
    uni, bi = ngram_bits_per_byte(toy, 1), ngram_bits_per_byte(toy, 2)
    assert uni["english"] == pytest.approx(-np.log2(1.5 / 131.5))
    assert bi["english"] == pytest.approx(-np.log2(1.5 / 130.5)), "bigram must condition on the previous byte"
    assert uni["overall"] == uni["english"] and set(bi) == {"english", "overall"}
    assert ngram_bits_per_byte(toy, 2, by="detail") == {"separator": bi["english"], "overall": bi["overall"]}


def test_bigram_beats_unigram_on_real_text(corpus):
    uni, bi = ngram_bits_per_byte(corpus, 1), ngram_bits_per_byte(corpus, 2)
    for label in ("python", "english", "overall"):
        assert bi[label] < uni[label], f"{label}: bigram {bi[label]:.3f} >= unigram {uni[label]:.3f}"
    assert set(uni) == set(corpus.context_names) | {"overall"}
    with pytest.raises(ValueError, match="order"):
        ngram_bits_per_byte(corpus, 3)


def test_dna_record_first_base_has_two_bits():
    seg = gen.dna_document(50_000, np.random.default_rng(1))
    first = seg.state == 6
    assert first.sum() > 10 and np.all(seg.entropy[first] == 2.0)
    assert np.all(seg.data[np.flatnonzero(first) - 1] == ord("\n"))  # right after each header


def test_every_floor_detail_has_its_floor(corpus):
    """Lesson 05 reads floors["detail"]["b64_random"]: each of FLOOR_DETAILS must be there, the mean exact entropy
    of its bytes in the validation split."""
    floors, s = corpus.floors["detail"], corpus.val
    assert set(floors) == set(src.FLOOR_DETAILS)
    entropy, detail = np.asarray(s.entropy, np.float64), np.asarray(s.detail)
    for name in src.FLOOR_DETAILS:
        assert floors[name] == pytest.approx(entropy[detail == src.DET[name]].mean(), abs=1e-9), name
