"""The generated contexts: bytes drawn from generators whose statistics are known exactly, so that every
byte carries the entropy of its own distribution (corpus_sources.py explains the labels and the columns).

DNA, hex digests, base64 (of random bytes and of English text), words in Arabic and Hebrew letters, and
the family of small synthetic languages; and the insertion of short generated pieces (a digest, a blob)
into real Python and English documents, where they sit as people write them.

Each generator returns a Segment whose `entropy` column is the exact entropy in bits of each byte given
the generator's state, and the comments beside each say what the floor counts as known.
"""
import base64
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from tinymono.corpus_sources import (CTX, DET, LANGUAGES, N_LANGUAGES, HostDoc, Segment, concat, label_english,
                                     label_python, make_segment, slice_segment)


def entropy_bits(probs) -> float:
    """Entropy in bits of a discrete distribution given by its probabilities."""
    p = np.asarray(probs, np.float64)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _after_letter_bits(end, p) -> float:
    """Entropy in bits of the byte after a letter of a word: with probability `end` the word ends (a space,
    or a line end with LINE_END_PROB), else the next letter's first byte, distributed as `p`."""
    return entropy_bits(np.r_[end * np.array([1 - LINE_END_PROB, LINE_END_PROB]), (1 - end) * p])


# DNA. A record is a header line ">seq" + 6 random digits, then lines of bases. The bases follow an
# order-1 Markov chain, as real genomes do (where, e.g., G rarely follows C): each base is followed by
# the next one of the cycle A -> C -> G -> T -> A with probability DNA_PREFERRED, and by each of the other
# three with an equal share of the rest. The transition matrix is circulant, so every base has the same
# next-base entropy and the bases stay uniform overall. To predict a base a model must know both that it
# reads DNA and which base it just read: an AND of context and byte, the kind of thing an MLP computes.
# Each line has at least one base; after that, each position ends the line with probability
# DNA_NEWLINE_PROB (mean line 60 bases), so a model needs no counting: the newline's uncertainty is in
# the floor. The chain runs on across line ends. The number of lines per record is drawn in advance
# (4..30), so the '>' of the next header is free given the state; a model pays ~log2(lines) bits for
# it, about 5 bits per ~1000-byte record (0.005 bits/byte).
DNA_NEWLINE_PROB = 1 / 60
DNA_PREFERRED = 0.6
DNA_STEP = np.array([(1 - DNA_PREFERRED) / 3, DNA_PREFERRED, (1 - DNA_PREFERRED) / 3, (1 - DNA_PREFERRED) / 3])
DNA_NEXT = np.stack([np.roll(DNA_STEP, b) for b in range(4)])   # [previous base, next base], ACGT order
_DNA_BASE_BITS = entropy_bits(DNA_STEP)
_DNA_MID_BITS = entropy_bits([DNA_NEWLINE_PROB] + list((1 - DNA_NEWLINE_PROB) * DNA_STEP))
_HEADER_BITS = np.array([0, 0, 0, 0] + [np.log2(10)] * 6 + [0], np.float32)
_HEADER_STATE = np.array([0, 1, 2, 3] + [4] * 6 + [5], np.int32)


DNA_BASES = {False: b"ACGT", True: b"acgt"}   # lowercase: soft-masked sequence, as genome files mark repeats
DNA_ORDERS = (1, 2)


def _dna_chain(n_bases: int, rng: np.random.Generator, order: int):
    """(base [n] in 0..3 for ACGT, key [n]: the state each base leaves for the next one). Order 1: the step
    from one base to the next is drawn from DNA_STEP (preferred +1); key = the base. Order 2: the step
    repeats the previous step with probability DNA_PREFERRED, else is one of the other three; key = the
    base and the step into it (4 x 4 states; the record's first step counts as following a step of +1).
    Either way every state's next base has H(step) bits and the bases are uniform."""
    steps = rng.choice(4, size=n_bases, p=DNA_STEP)
    steps[0] = rng.integers(4)                                      # the first base: uniform
    if order == 2:
        steps[1:] = (1 + np.cumsum(steps[1:] - 1)) % 4              # each draw moves the step, +1 keeps it
    base = np.cumsum(steps) % 4
    if order == 1:
        return base, base
    into = steps.copy()
    into[0] = 1
    return base, base + 4 * into


def dna_document(n_bytes: int, rng: np.random.Generator, lowercase: bool = False, order: int = 1) -> Segment:
    """FASTA-like records until at least n_bytes are written (the last record finishes); lowercase: the
    bases as a, c, g, t (the same chain and entropies); order 2: each base depends on the two before it
    (`_dna_chain`).

    States: 0-3 the fixed header bytes '>seq', 4 a header digit, 5 the header newline, 6 a record's
    first base (uniform: 2 bits), then with K = 4 chain states (order 1: the last base; order 2: 16, the
    last base and the step into it): 7..6+K a later position of a line (newline or base: h(p) + (1-p)
    H(step) bits), 7+K..6+2K the first base of a later line (H(step) bits).
    """
    K = 4 ** order
    parts = []
    total = 0
    while total < n_bytes:
        header = b">seq" + bytes(rng.integers(48, 58, size=6, dtype=np.uint8)) + b"\n"
        parts.append(make_segment(header, "dna", DET["dna_header"], _HEADER_BITS, _HEADER_STATE))
        lengths = rng.geometric(DNA_NEWLINE_PROB, size=int(rng.integers(4, 31)))  # bases per line
        n = int(lengths.sum() + len(lengths))
        newline = np.cumsum(lengths + 1) - 1                        # byte index of each '\n'
        is_base = np.ones(n, bool)
        is_base[newline] = False
        base, key = _dna_chain(int(lengths.sum()), rng, order)
        data = np.full(n, ord("\n"), np.uint8)
        data[is_base] = np.frombuffer(DNA_BASES[bool(lowercase)], np.uint8)[base]
        previous = np.zeros(n, np.int64)                            # the chain's state before each position
        previous[np.flatnonzero(is_base)[1:]] = key[:-1]
        previous[newline] = key[np.cumsum(lengths) - 1]
        detail = np.full(n, DET["dna_base"], np.uint8)
        detail[newline] = DET["dna_newline"]
        entropy = np.full(n, _DNA_MID_BITS, np.float32)
        state = (7 + previous).astype(np.int32)
        line_start = newline[:-1] + 1
        entropy[line_start], state[line_start] = _DNA_BASE_BITS, 7 + K + previous[line_start]
        entropy[0], state[0] = 2.0, 6
        parts.append(Segment(data, np.full(n, CTX["dna"], np.uint8), detail, entropy, state))
        total += len(header) + n
    return concat(parts)


def dna_sequence(n_bases: int, rng: np.random.Generator, lowercase: bool = False, order: int = 1) -> Segment:
    """n_bases bases of the same chain on one line, for an insertion into real text (a primer or a probe
    quoted in code or prose). The first base is uniform (2 bits, state 6); each later one has H(step)
    bits (state 7 + K + the chain's state, as a line's first base: no newline can come)."""
    base, key = _dna_chain(n_bases, rng, order)
    entropy = np.full(n_bases, _DNA_BASE_BITS, np.float32)
    state = np.empty(n_bases, np.int32)
    state[1:] = 7 + 4 ** order + key[:-1]
    entropy[0], state[0] = 2.0, 6
    return make_segment(np.frombuffer(DNA_BASES[bool(lowercase)], np.uint8)[base], "dna", DET["dna_base"],
                        entropy, state)


# Words in Arabic or Hebrew letters, UTF-8 encoded: every letter is two bytes, a lead byte (0xD8/0xD9
# for these Arabic letters, 0xD7 for Hebrew, as in the paper) and a continuation byte. Letters are
# uniform; after each letter the word ends with probability WORD_END_PROB; a word is followed by a
# newline with probability LINE_END_PROB, else a space. All of it is sequential, so the floor is tight.
WORD_END_PROB = 0.2
LINE_END_PROB = 0.1
SCRIPT_LETTERS = {
    "arabic": np.r_[0x0621:0x063B, 0x0641:0x064B],   # hamza .. ghain, feh .. yeh: 36 letters
    "hebrew": np.r_[0x05D0:0x05EB],                  # alef .. tav with final forms: 27 letters
}


def _word_lengths(n_bytes, rng, word_end=WORD_END_PROB):
    """Letters per word (>= 1, geometric: the word ends after each letter with probability word_end) of
    enough words for n_bytes of two-byte letters and separators."""
    n_words = max(4, int(1.3 * n_bytes * word_end / 2) + 4)          # ~2/word_end + 1 bytes each
    while True:
        lengths = rng.geometric(word_end, size=n_words)
        if 2 * lengths.sum() + n_words > n_bytes:
            return lengths
        n_words *= 2


def _letter_positions(lengths):
    """For words of `lengths` two-byte letters, each followed by one separator byte: (word_first [words],
    the index of each word's first letter; pos [letters], the byte of each letter's lead byte)."""
    word_first = np.cumsum(lengths) - lengths
    word_start = np.cumsum(2 * lengths + 1) - (2 * lengths + 1)
    pos = np.repeat(word_start, lengths) + 2 * (np.arange(int(lengths.sum())) - np.repeat(word_first, lengths))
    return word_first, pos


def _script_bytes(script, code, pos, word_first, lengths, rng):
    """The bytes of words whose letters have code points `code`, each letter's lead byte at `pos`
    (_letter_positions), each word followed by a space or (LINE_END_PROB) a newline drawn from `rng`.
    -> (data, detail, sep): the bytes, their detail labels, the separators' positions."""
    sep = pos[word_first + lengths - 1] + 2                              # after each word's last letter
    data = np.zeros(int(sep[-1]) + 1, np.uint8)
    data[pos] = 0xC0 | (code >> 6)
    data[pos + 1] = 0x80 | (code & 0x3F)
    data[sep] = np.where(rng.random(len(lengths)) < LINE_END_PROB, ord("\n"), ord(" "))
    detail = np.full(len(data), DET[script + "_space"], np.uint8)
    detail[pos], detail[pos + 1] = DET[script + "_lead"], DET[script + "_cont"]
    return data, detail, sep


def _cut_after_letter(seg, pos, n_bytes):
    """`seg` cut after the first letter (lead byte at `pos`) that reaches n_bytes, or after its last one."""
    ends = pos + 2                                                       # positions right after a letter
    cut = int(ends[np.searchsorted(ends, n_bytes)]) if ends[-1] >= n_bytes else int(ends[-1])
    return slice_segment(seg, 0, cut)


def script_document(script: str, n_bytes: int, rng: np.random.Generator, classes: int = 0,
                    word_end: float = WORD_END_PROB) -> Segment:
    """Words of `script` letters until at least n_bytes are written, cut after a letter. classes > 0:
    the letters follow script_chain(script, classes) (script_class_document); 0: they are uniform.
    word_end: the probability that a word ends after each letter (corpus option script_word_end).

    States: 0 the lead byte of a word's first letter; 1 the byte after a letter (space, newline or
    the next lead byte); 2 + k a continuation byte after lead byte number k of the script.
    """
    if classes:
        return script_class_document(script, n_bytes, rng, classes, word_end)
    letters = SCRIPT_LETTERS[script]
    leads_all = 0xC0 | (letters >> 6)
    leads, lead_counts = np.unique(leads_all, return_counts=True)
    p_lead = lead_counts / len(letters)
    first_bits = entropy_bits(p_lead)
    after_bits = _after_letter_bits(word_end, p_lead)
    lengths = _word_lengths(n_bytes, rng, word_end)
    word_first, pos = _letter_positions(lengths)
    chosen = letters[rng.integers(0, len(letters), size=len(pos))]
    lead_of = np.searchsorted(leads, 0xC0 | (chosen >> 6))
    data, detail, _ = _script_bytes(script, chosen, pos, word_first, lengths, rng)
    n = len(data)
    entropy = np.full(n, after_bits, np.float32)
    state = np.ones(n, np.int32)
    entropy[pos[word_first]], state[pos[word_first]] = first_bits, 0
    entropy[pos + 1] = np.log2(lead_counts[lead_of])
    state[pos + 1] = 2 + lead_of
    seg = Segment(data, np.full(n, CTX[script], np.uint8), detail, entropy, state)
    return _cut_after_letter(seg, pos, n_bytes)


# Letters that depend on the letter before (corpus option script_classes = C > 0). With uniform letters
# (and no sibling languages) the lead byte alone fixes what follows it, so a model needs the script only
# at the byte after a letter, and its features for "Arabic" or "Hebrew" cover half of each letter
# (docs/experiments.md). Here each script's letters fall into C classes (a fixed shuffle, dealt
# round-robin) and, inside a word, the letter after one of class c is drawn from class c + 1 (mod C) with
# probability SCRIPT_PREFERRED, else from all letters; a word's first letter is uniform. To predict a
# continuation byte a model must then know the class of the previous letter, two and three bytes before
# it: a fact of the script, needed at the lead byte too. Every byte's entropy given (previous letter's
# class, lead byte) is exact.
SCRIPT_PREFERRED = 0.8
SCRIPT_CLASS_SEED = 2024


class ScriptChain(NamedTuple):
    """letters [L] code points; leads [n_leads] the lead bytes; lead_of [L] each letter's lead index;
    cls [L] each letter's class; next [C + 1, L] the next letter's distribution after a letter of class
    c (row C: a word's first letter, uniform)."""
    letters: np.ndarray
    leads: np.ndarray
    lead_of: np.ndarray
    cls: np.ndarray
    next: np.ndarray


@lru_cache(maxsize=None)
def script_chain(script: str, classes: int) -> ScriptChain:
    """The letter chain of `script` with `classes` classes (fixed by SCRIPT_CLASS_SEED)."""
    letters = SCRIPT_LETTERS[script]
    n = len(letters)
    leads, lead_of = np.unique(0xC0 | (letters >> 6), return_inverse=True)
    cls = np.empty(n, np.int64)
    cls[np.random.default_rng([SCRIPT_CLASS_SEED, classes]).permutation(n)] = np.arange(n) % classes
    nxt = np.full((classes + 1, n), 1.0 / n)
    for c in range(classes):
        members = cls == (c + 1) % classes
        nxt[c] = (1 - SCRIPT_PREFERRED) / n + SCRIPT_PREFERRED * members / members.sum()
    return ScriptChain(letters, leads, lead_of, cls, nxt)


def script_class_document(script: str, n_bytes: int, rng: np.random.Generator, classes: int,
                          word_end: float = WORD_END_PROB) -> Segment:
    """script_document with letters from script_chain(script, classes).

    States: 0 the lead byte of a word's first letter; 1 + c the byte after a letter of class c;
    1 + C + (c n_leads + k) the continuation byte after lead byte k, the previous letter of class c
    (c = C: the word's first letter)."""
    chain = script_chain(script, classes)
    n_leads = len(chain.leads)
    lead_p = np.stack([np.bincount(chain.lead_of, weights=row, minlength=n_leads) for row in chain.next])
    after_bits = np.array([_after_letter_bits(word_end, lead_p[c]) for c in range(classes)])
    cont_bits = np.array([[entropy_bits(row * (chain.lead_of == k) / lead_p[c, k]) for k in range(n_leads)]
                          for c, row in enumerate(chain.next)])                 # [C + 1, n_leads], bits
    lengths = _word_lengths(n_bytes, rng, word_end)
    n_words = len(lengths)
    cum = np.cumsum(chain.next, axis=1)
    picks = np.zeros((n_words, lengths.max()), np.int64)                      # [words, longest] letter indices
    u = rng.random(picks.shape)
    prev = np.full(n_words, classes)                                           # row C: a word's first letter
    for t in range(picks.shape[1]):                                            # all words step together
        picks[:, t] = np.minimum((cum[prev] < u[:, t, None]).sum(axis=1), len(chain.letters) - 1)
        prev = chain.cls[picks[:, t]]
    in_word = np.arange(picks.shape[1])[None, :] < lengths[:, None]
    letter = picks[in_word]                                                    # [n_letters], word by word
    word_first, pos = _letter_positions(lengths)
    first = np.zeros(len(letter), bool)
    first[word_first] = True
    prev_cls = np.where(first, classes, np.r_[classes, chain.cls[letter[:-1]]])  # C: none (a word's first)
    code = chain.letters[letter]
    data, detail, sep = _script_bytes(script, code, pos, word_first, lengths, rng)
    n = len(data)
    entropy = np.zeros(n, np.float32)
    state = np.zeros(n, np.int32)
    lead_k = chain.lead_of[letter]
    entropy[pos] = np.where(first, entropy_bits(lead_p[classes]), after_bits[prev_cls % classes])
    state[pos] = np.where(first, 0, 1 + prev_cls % classes)
    entropy[pos + 1] = cont_bits[prev_cls, lead_k]
    state[pos + 1] = 1 + classes + prev_cls * n_leads + lead_k
    last_cls = chain.cls[letter[word_first + lengths - 1]]                    # each word's last letter
    entropy[sep], state[sep] = after_bits[last_cls], 1 + last_cls
    seg = Segment(data, np.full(n, CTX[script], np.uint8), detail, entropy, state)
    return _cut_after_letter(seg, pos, n_bytes)


# The family of synthetic languages. Five named contexts are too few to make a model superpose: it
# can spare a neuron for each (lesson 07). The paper's model read the Pile, with thousands of contexts
# for its 512 neurons. So the corpus also holds N_LANGUAGES small languages, each rare, each written in
# lowercase words. Language k has an alphabet of LANG_LETTERS of the 26 letters (the alphabets
# overlap: every letter belongs to about 15 languages, so no single byte tells them apart and a model
# must read the context, as with real languages), and draws its letters from an order-1 Markov chain:
#
#     P_k(next letter b | letter a) = u_k(b) B(a, b) / Z_k(a)      for a, b in the alphabet of k
#
# u_k is the language's taste in letters, B one bigram table shared by every language (its
# "phonotactics"). A word ends after each letter with the language's probability q_k and is followed
# by a newline with probability LINE_END_PROB, else a space; a word's first letter is drawn from u_k.
# The languages are the same for every corpus seed (LANGUAGE_SEED): a seed changes their documents,
# not their grammar. Every byte's entropy given (language, previous letter) is exact.
LANG_LETTERS = 8
LANGUAGE_SEED = 2023
_LOWER = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)


class Language(NamedTuple):
    """One synthetic language: letters [L] uint8 (its alphabet), first [L] (a word's first letter),
    next [L, L] (row a: the next letter after letter a, given the word goes on), end: q_k; and the exact
    entropies in bits of a word's first letter (first_bits) and of the byte after letter a (after_bits [L]:
    the word's end, as a space or a newline, or its next letter)."""
    letters: np.ndarray
    first: np.ndarray
    next: np.ndarray
    end: float
    first_bits: float
    after_bits: np.ndarray


@lru_cache(maxsize=None)
def languages() -> tuple:
    """The N_LANGUAGES languages of the family (fixed by LANGUAGE_SEED)."""
    rng = np.random.default_rng(LANGUAGE_SEED)
    shared = np.exp(rng.normal(0.0, 1.0, size=(26, 26)))               # B [26, 26]
    out = []
    for _ in range(N_LANGUAGES):
        idx = np.sort(rng.choice(26, LANG_LETTERS, replace=False))
        taste = rng.dirichlet(np.ones(LANG_LETTERS))                     # u_k [L]
        nxt = taste[None, :] * shared[np.ix_(idx, idx)]                  # [L, L]
        nxt /= nxt.sum(axis=1, keepdims=True)
        end = float(rng.uniform(0.15, 0.3))
        after = [_after_letter_bits(end, row) for row in nxt]
        out.append(Language(_LOWER[idx], taste, nxt, end, entropy_bits(taste), np.array(after, np.float32)))
    return tuple(out)


# Sibling languages (corpus option script_siblings = S > 0): the last 2S languages of the family are
# written in the letters of the two scripts, S in Arabic and S in Hebrew, as Persian and Urdu are written
# in Arabic letters and Yiddish in Hebrew ones. A sibling keeps its chain; each letter of its alphabet
# becomes a letter of the script (two bytes). With siblings, a lead byte no longer settles what follows
# it: after 0xD7 the next byte is uniform over the Hebrew letters in Hebrew and follows a chain in a
# sibling, so a model needs the context at both bytes of a letter, not only after its last one.
def sibling_script(k: int, siblings: int):
    """The script language k of the family is written in with `siblings` per script, or None (lowercase)."""
    first = N_LANGUAGES - 2 * siblings
    return None if k < first else ("arabic", "hebrew")[(k - first) % 2]


# With the corpus option sibling_own_letters, a sibling also writes two letters that its script's own
# language never does, under lead bytes that language never writes: Hebrew's vowel points (U+05B0..U+05B7,
# lead byte 0xD6; Yiddish writes some vowels with them, here they stand for letters of their own, so a word
# may even begin with one) and letters that Persian and Urdu add to the Arabic alphabet (lead bytes 0xDA and
# 0xDB; with the default two siblings per script both Arabic ones draw U+06CC and U+06D2, under 0xDB).
# Without them the byte after a letter is the same choice in a script and in its siblings (a lead byte of
# the script or a separator), so the model needs the context only at the lead byte; with them, after a
# letter a sibling may write a lead byte that the script never writes, and the model needs the context at
# both bytes.
SIBLING_OWN_LETTERS = {
    "arabic": np.array([0x0686, 0x0698, 0x06A9, 0x06AF, 0x06BA, 0x06BE, 0x06CC, 0x06D2]),
    "hebrew": np.r_[0x05B0:0x05B8],
}


def _sibling_letters(lang_letters, script, own_letters=False):
    """The script's code points standing for a language's lowercase letters: spread over the script's
    alphabet in order, so that the siblings' alphabets overlap as the lowercase ones do. own_letters:
    the third and sixth letters of the (sorted) alphabet become two consecutive letters of
    SIBLING_OWN_LETTERS[script] instead, from the index of the third letter's place in a-z (mod 8) on."""
    lower = lang_letters.astype(np.int64) - ord("a")
    letters = SCRIPT_LETTERS[script]
    code = letters[lower * len(letters) // 26]
    if own_letters:
        own = SIBLING_OWN_LETTERS[script]
        code[[2, 5]] = own[(lower[2] + np.arange(2)) % len(own)]
    return code


def _two_byte_entropies(lang, code):
    """For language `lang` written in code points `code` [L]: (lead_of [L] each letter's lead index,
    lead_bits [1 + L] the entropy of the byte in state s (0: a word's first letter; 1 + a: after letter a,
    a separator or a lead byte), cont_bits [1 + L, n_leads] the entropy of the continuation byte after
    lead byte g in state s)."""
    _, lead_of = np.unique(0xC0 | (code >> 6), return_inverse=True)
    n_leads = int(lead_of.max()) + 1
    rows = np.vstack([lang.first, lang.next])                                 # [1 + L, L] next letter
    lead_p = np.stack([np.bincount(lead_of, weights=row, minlength=n_leads) for row in rows])
    lead_bits = np.array([entropy_bits(lead_p[0])] + [_after_letter_bits(lang.end, p) for p in lead_p[1:]])
    cont_bits = np.array([[entropy_bits(row * (lead_of == g) / max(lead_p[s, g], 1e-300)) for g in range(n_leads)]
                          for s, row in enumerate(rows)])
    return lead_of, lead_bits, cont_bits


def language_document(k: int, n_bytes: int, rng: np.random.Generator, script: str | None = None,
                      own_letters: bool = False) -> Segment:
    """Exactly n_bytes of words in language k (cut wherever n_bytes falls). script: written in that
    script's letters (a sibling language), then cut after the letter that reaches n_bytes (at most 2 bytes
    over: a document never ends inside a letter); own_letters: two of them letters the script's own
    language never writes (_sibling_letters).

    States (for the tests): 0 a word's first letter (after a space, a newline or the document start);
    1 + a the byte after letter number a of the alphabet (the word's next letter, or its end). In a
    script, these are the lead bytes and separators, and 1 + L + s n_leads + g the continuation byte
    after lead byte g in state s.
    """
    lang = languages()[k]
    n_letters = len(lang.letters)
    n_words = int(n_bytes * lang.end) + 8
    while True:
        lengths = rng.geometric(lang.end, size=n_words)                  # letters per word, >= 1
        if (lengths + 1).sum() >= n_bytes:
            break
        n_words *= 2
    cum_first, cum_next = np.cumsum(lang.first), np.cumsum(lang.next, axis=1)
    letters = np.zeros((n_words, lengths.max()), np.int64)               # [words, longest] alphabet indices
    letters[:, 0] = np.minimum(np.searchsorted(cum_first, rng.random(n_words)), n_letters - 1)
    u = rng.random(letters.shape)
    for t in range(1, letters.shape[1]):                                 # all words step together
        prev = letters[:, t - 1]
        letters[:, t] = np.minimum((cum_next[prev] < u[:, t, None]).sum(axis=1), n_letters - 1)
    in_word = np.arange(letters.shape[1])[None, :] < lengths[:, None]   # [words, longest]
    if script is not None:
        return _sibling_document(k, lang, letters[in_word], lengths, n_bytes, rng, script, own_letters)
    n = int((lengths + 1).sum())
    ends = np.cumsum(lengths + 1) - 1                                    # byte index of each separator
    is_letter = np.ones(n, bool)
    is_letter[ends] = False
    alpha = np.full(n, -1, np.int64)
    alpha[is_letter] = letters[in_word]                                  # row-major: word by word
    data = np.where(is_letter, lang.letters[np.maximum(alpha, 0)], ord(" ")).astype(np.uint8)
    data[ends[rng.random(n_words) < LINE_END_PROB]] = ord("\n")
    state = np.zeros(n, np.int32)
    state[1:] = np.where(is_letter[:-1], 1 + alpha[:-1], 0)
    entropy = np.where(state == 0, lang.first_bits, lang.after_bits[np.maximum(state - 1, 0)])
    detail = np.where(is_letter, DET["lang_letter"], DET["lang_space"]).astype(np.uint8)
    seg = Segment(data, np.full(n, CTX[LANGUAGES[k]], np.uint8), detail, entropy.astype(np.float32), state)
    return slice_segment(seg, 0, n_bytes)


def _sibling_document(k, lang, alpha, lengths, n_bytes, rng, script, own_letters):
    """language_document's words (alphabet indices `alpha`, word by word; `lengths` letters per word)
    written in `script`'s letters, two bytes each."""
    code = _sibling_letters(lang.letters, script, own_letters)
    lead_of, lead_bits, cont_bits = _two_byte_entropies(lang, code)
    word_first, pos = _letter_positions(lengths)
    prev = np.r_[-1, alpha[:-1]]
    prev[word_first] = -1                                                # state 1 + prev; 0 at a word's start
    data, _, sep = _script_bytes(script, code[alpha], pos, word_first, lengths, rng)
    n, L = len(data), len(lang.letters)
    state = np.zeros(n, np.int32)
    state[pos] = 1 + prev
    state[sep] = 1 + alpha[word_first + lengths - 1]                    # after each word's last letter
    state[pos + 1] = 1 + L + (1 + prev) * cont_bits.shape[1] + lead_of[alpha]
    entropy = np.where(state <= L, lead_bits[np.minimum(state, L)],
                       cont_bits.ravel()[np.maximum(state - 1 - L, 0)]).astype(np.float32)
    detail = np.full(n, DET["lang_space"], np.uint8)
    detail[pos], detail[pos + 1] = DET["lang_letter"], DET["lang_letter"]
    seg = Segment(data, np.full(n, CTX[LANGUAGES[k]], np.uint8), detail, entropy, state)
    return _cut_after_letter(seg, pos, n_bytes)


HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
HEX_LENGTHS = (32, 40, 64)   # md5, sha1, sha256


def hex_digest(n_chars: int, rng: np.random.Generator) -> Segment:
    """n_chars uniform lowercase hex digits: 4 bits each (state 0). Where the digest ends is part of
    its template (an md5 is 32 long), and the byte after it belongs to the surrounding text."""
    data = HEX_DIGITS[rng.integers(0, 16, size=n_chars)]
    return make_segment(data, "hex", DET["hex_digest"], np.full(n_chars, 4.0), np.zeros(n_chars))


# Base64. Each group of 3 bytes becomes 4 characters of 6 bits. The last group of a blob whose length
# is not a multiple of 3 carries fewer bits: one leftover byte gives "xy==" (x 6 bits, y 2 bits: the
# byte's low 2 bits, then zeros), two give "xyz=" (6, 6, 4 bits). The blob length is drawn in advance,
# so '=' is free given the state; a model pays a few bits per blob to guess where a blob ends.
# Standalone blobs are wrapped at B64_LINE_WIDTH characters as in MIME: the line break is free given
# the state but needs counting to 76; a model that cannot count pays about
# (log2(77) + 76 log2(77/76)) / 77 ~ 0.1 bits per byte there, under 2% of the 6-bit floor.
B64_LINE_WIDTH = 76
_B64_GROUP_BITS = {3: (6, 6, 6, 6), 2: (6, 6, 4, 0), 1: (6, 2, 0, 0)}
_B64_GROUP_STATE = {3: (0, 0, 0, 0), 2: (0, 0, 1, 3), 1: (0, 2, 3, 3)}


def _b64_segment(raw: bytes, detail: str, width: int | None, known: bool) -> Segment:
    """Base64 of raw, wrapped at `width` characters (with a final newline) when width is given.
    known: record exact entropies (random bytes) or NaN (encoded text). States: 0 a full 6-bit
    character, 1 a 4-bit character, 2 a 2-bit character, 3 '=' padding, 4 a line break."""
    data = np.frombuffer(base64.b64encode(raw), np.uint8)
    n = len(data)
    entropy = np.tile(np.array(_B64_GROUP_BITS[3], np.float32), n // 4)
    state = np.zeros(n, np.int32)
    if len(raw) % 3:
        entropy[-4:] = _B64_GROUP_BITS[len(raw) % 3]
        state[-4:] = _B64_GROUP_STATE[len(raw) % 3]
    if width is not None:
        breaks = np.arange(width, n, width)
        data = np.append(np.insert(data, breaks, ord("\n")), np.uint8(ord("\n")))
        entropy = np.append(np.insert(entropy, breaks, 0.0), np.float32(0.0))
        state = np.append(np.insert(state, breaks, 4), np.int32(4))
    if not known:
        entropy, state = None, None
    return make_segment(data, "base64", DET[detail], entropy, state)


def b64_random(n_raw: int, rng: np.random.Generator, width: int | None = None) -> Segment:
    """Base64 of n_raw uniform random bytes (detail b64_random), entropies exact."""
    return _b64_segment(rng.bytes(n_raw), "b64_random", width, known=True)


def b64_text(text: bytes, width: int | None = None) -> Segment:
    """Base64 of English text (detail b64_text); its entropy is unknown (NaN)."""
    return _b64_segment(text, "b64_text", width, known=False)


# ---------------------------------------------------------------------------------------------------
# Embedding generated segments in real text
# ---------------------------------------------------------------------------------------------------
# An insertion is a short stretch of code or prose around generated bytes. The surrounding bytes keep
# the host's labels (Python labels come from tokenising the inserted statement); only the generated
# bytes carry the generated labels.

_B64_NAMES = ("DATA", "_PAYLOAD", "ICON_DATA", "_KEY", "BLOB", "_SAMPLE", "TOKEN")
_PY_B64 = ('{name} = "{v}"\n', "{name} = b'{v}'\n", '{name} = base64.b64decode("{v}")\n')
_PY_HEX = {32: ('EXPECTED_MD5 = "{v}"\n', "_md5 = '{v}'\n", "# md5: {v}\n"),
           40: ('COMMIT = "{v}"\n', "# commit {v}\n", "_REVISION = '{v}'\n"),
           64: ('EXPECTED_SHA256 = "{v}"\n', "# sha256: {v}\n", "SHA256 = '{v}'\n")}
_EN_B64 = (" The encoded form is {v}.", " For example, {v} is the base64 encoding of the data.",
           ' Set the key to "{v}" before calling it.')
_EN_HEX = {32: (" Its MD5 digest is {v}.", " The file's md5 checksum is {v}."),
           40: (" This was fixed in commit {v}.", " See revision {v} for details."),
           64: (" The archive's sha256: {v}.", " Check that the SHA-256 checksum is {v}.")}
_PY_DNA = ('PRIMER = "{v}"\n', "probe = '{v}'\n", "# target: {v}\n", 'ADAPTER_SEQ = "{v}"\n')
_EN_DNA = (" The forward primer is {v}.", " The probe binds the sequence {v} in the promoter.",
           ' The reads began with "{v}" before trimming.')
_FILE_NAMES = ("setup.py", "README.rst", "data.bin", "index.json", "logo.png", "release.tar.gz")


def _fill(parts: list, host: str, indent: bytes) -> Segment:
    """Join glue strings and payload Segments (ASCII) into one segment. The glue is labelled by
    tokenising (Python) or classifying (English) the whole joined text, so a payload inside a string
    literal leaves the quotes labelled py_string; then the payload bytes take back their own labels."""
    text, spans = "", []
    for part in parts:
        if isinstance(part, Segment):
            spans.append((len(text), part))
            text += part.data.tobytes().decode("ascii")
        else:
            text += part
    glue = (label_python(text) if host == "python" else label_english(text)).seg
    seg = Segment(*(np.array(column) for column in glue))   # writable copies of the columns
    for start, payload in spans:
        for field, values in zip(seg, payload):
            field[start:start + len(values)] = values
    if indent:
        seg = concat([make_segment(indent, "python", DET["py_whitespace"]), seg])
    return seg


def python_b64_insertion(blob: Segment, indent: bytes, rng: np.random.Generator) -> Segment:
    """One assignment statement holding a single-line base64 blob."""
    template = _PY_B64[rng.integers(len(_PY_B64))]
    name = _B64_NAMES[rng.integers(len(_B64_NAMES))]
    before, after = template.replace("{name}", name).split("{v}")
    return _fill([before, blob, after], "python", indent)


def python_hex_insertion(indent: bytes, rng: np.random.Generator) -> Segment:
    """A statement or comment with one digest, or (one time in three) a dict of 2-6 checksums."""
    length = HEX_LENGTHS[rng.integers(3)]
    if rng.random() < 2 / 3:
        before, after = _PY_HEX[length][rng.integers(3)].split("{v}")
        return _fill([before, hex_digest(length, rng), after], "python", indent)
    n = int(rng.integers(2, 7))
    inner = indent.decode() + "    "
    names = rng.choice(len(_FILE_NAMES), size=n, replace=False)
    parts = ["_CHECKSUMS = {\n"]
    for i in names:
        parts += [f'{inner}"{_FILE_NAMES[i]}": "', hex_digest(length, rng), '",\n']
    parts.append(indent.decode() + "}\n")
    return _fill(parts, "python", indent)


def english_b64_insertion(blob: Segment, rng: np.random.Generator) -> Segment:
    """One sentence holding a base64 blob."""
    before, after = _EN_B64[rng.integers(len(_EN_B64))].split("{v}")
    return _fill([before, blob, after], "english", b"")


def english_hex_insertion(rng: np.random.Generator) -> Segment:
    """One sentence holding a digest ("This was fixed in commit <sha1>.")."""
    length = HEX_LENGTHS[rng.integers(3)]
    before, after = _EN_HEX[length][rng.integers(len(_EN_HEX[length]))].split("{v}")
    return _fill([before, hex_digest(length, rng), after], "english", b"")


def python_dna_insertion(seq: Segment, indent: bytes, rng: np.random.Generator) -> Segment:
    """One statement or comment holding a DNA sequence."""
    before, after = _PY_DNA[rng.integers(len(_PY_DNA))].split("{v}")
    return _fill([before, seq, after], "python", indent)


def english_dna_insertion(seq: Segment, rng: np.random.Generator) -> Segment:
    """One sentence holding a DNA sequence."""
    before, after = _EN_DNA[rng.integers(len(_EN_DNA))].split("{v}")
    return _fill([before, seq, after], "english", b"")


def insert_segments(host: HostDoc, insertions: list) -> Segment:
    """The host's bytes with each (anchor index, segment) inserted at that anchor, in anchor order."""
    pieces, at = [], 0
    for index, seg in sorted(insertions, key=lambda pair: pair[0]):
        offset = int(host.anchors[index])
        pieces += [slice_segment(host.seg, at, offset), seg]
        at = offset
    pieces.append(slice_segment(host.seg, at, len(host.seg.data)))
    return concat(pieces)
