"""Bytes shown as text, and text the model writes scored without labels.

The tokeniser itself (`corpus.encode`, `corpus.decode`) turns whole sequences into text; this module
shows them byte by byte, for the lessons, the examples of a feature and the browser:
- `token_text`: one token visibly (printable ASCII as itself, escapes otherwise, the separator as ␞);
- `byte_pieces`: a sequence cut into pieces, each a whole printable UTF-8 character or one escaped byte;
- `format_example`: a sequence with one byte marked, as the lessons print a feature's examples;
- `written_text`: what a model wrote, as plain text (the separators dropped, broken UTF-8 shown as �).

Written text has no labels, so what the model writes while a feature is pinned on (lesson 08) is scored
by `written_share` with RECOGNISERS: long runs of a context's alphabet, whole letters of a script.
"""
from __future__ import annotations

import re

import numpy as np

from tinymono.corpus import DOC_SEP, SEP_MARKER
from tinymono.validate import check_ids, check_int


def token_text(t):
    """One token shown visibly: printable ASCII as itself, \\n \\t \\r \\\\ and \\xNN escapes otherwise,
    the document separator as the symbol ␞."""
    t = check_int("t", t, 0, DOC_SEP)
    if t == DOC_SEP:
        return SEP_MARKER
    special = {0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r", 0x5C: "\\\\"}
    if t in special:
        return special[t]
    return chr(t) if 0x20 <= t < 0x7F else f"\\x{t:02x}"


def _utf8_length(lead):
    return 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 1


def byte_pieces(tokens):
    """Token ids [n] -> [(text, start, stop)]: each complete, printable UTF-8 character as itself
    (start..stop its bytes), every other byte escaped alone by token_text."""
    tokens = check_ids("tokens", tokens, DOC_SEP + 1)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one sequence [n], got shape {tokens.shape}")
    tokens = tokens.tolist()
    out, i = [], 0
    while i < len(tokens):
        n = _utf8_length(tokens[i])
        if n > 1 and i + n <= len(tokens) and all(0x80 <= t <= 0xBF for t in tokens[i + 1:i + n]):
            try:
                ch = bytes(tokens[i:i + n]).decode("utf-8")
            except UnicodeDecodeError:
                ch = None
            if ch is not None and ch.isprintable():
                out.append((ch, i, i + n))
                i += n
                continue
        out.append((token_text(tokens[i]), i, i + 1))
        i += 1
    return out


def format_example(tokens, centre, mark=("\u27e6", "\u27e7")):
    """The bytes as readable text with the piece holding byte `centre` between the marks (a character
    of several bytes also shows which byte it was, e.g. ⟦ب·d8⟧)."""
    check_int("centre", centre, 0, len(tokens) - 1)
    parts = []
    for text, a, b in byte_pieces(tokens):
        if a <= centre < b:
            which = f"\u00b7{int(tokens[centre]):02x}" if b - a > 1 else ""
            text = f"{mark[0]}{text}{which}{mark[1]}"
        parts.append(text)
    return "".join(parts)


def written_text(tokens):
    """Token ids [n] -> what they say as text: the separators dropped, bytes that are not valid UTF-8 shown
    as � (a model's continuation may stop inside a character)."""
    return bytes(int(t) for t in tokens if t < DOC_SEP).decode("utf-8", errors="replace")


# What counts as a generated context in text the model writes (no labels there): runs too long to be
# chance in Python or English (base64 and hex blobs, DNA lines), and letters of the two scripts. A run
# must also hold a byte of each of the classes that tell it from its look-alikes (the patterns after the
# first): base64 a capital, a small letter and a digit, + or / (a hex digest has no capital, a DNA line no
# small letter or none of the rest, a family language's word and a Python name such as
# NotImplementedError no digit); hex a letter and a digit (a run of digits is a number; soft-masked DNA,
# a c g t, has no digit). A random base64 line of 76 characters lacks a digit, + and / with probability
# (52/64)^76, about 1e-7. DNA runs keep their case (`CorpusConfig.dna_lowercase`). Scripts are matched on
# decoded text; their recognisers cannot tell a script from its sibling languages, which write a subset
# of its letters (corpus_generated.sibling_script), and do not count the letters that siblings write only
# with the corpus option sibling_own_letters (corpus_generated.SIBLING_OWN_LETTERS).
RECOGNISERS = {"base64": (re.compile(rb"[A-Za-z0-9+/]{16,}"), re.compile(rb"[A-Z]"), re.compile(rb"[a-z]"),
                          re.compile(rb"[0-9+/]")),
               "dna": (re.compile(rb"[ACGT]{8,}|[acgt]{8,}"),),
               "hex": (re.compile(rb"[0-9a-f]{8,}"), re.compile(rb"[a-f]"), re.compile(rb"[0-9]")),
               # the letters corpus_generated.SCRIPT_LETTERS writes: Arabic hamza .. ghain and feh .. yeh (36; not
               # the five rare letters between them, nor the tatweel), Hebrew alef .. tav (27)
               "arabic": (re.compile("[\u0621-\u063a\u0641-\u064a]+"),),
               "hebrew": (re.compile("[\u05d0-\u05ea]+"),)}


def written_share(tokens, label):
    """The share of the bytes of `tokens` (token ids; the separator counts as a byte of no context) that
    RECOGNISERS[label] attributes to the label: bytes in its runs that also hold a byte of each telling
    class, or in the script's letters, which must be whole UTF-8 characters (a lead byte without its
    continuation byte is not Arabic)."""
    if label not in RECOGNISERS:
        raise ValueError(f"no recogniser for {label!r}; there is one for {sorted(RECOGNISERS)}")
    tokens = check_ids("tokens", tokens, DOC_SEP + 1)  # bytes and the separator
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one sequence (1-D), got shape {tokens.shape}: score each row on its own")
    if tokens.size == 0:
        return 0.0
    data = bytes(np.where(tokens < 256, tokens, 0).astype(np.uint8))  # the separator: a NUL breaks any run
    runs, *telling = RECOGNISERS[label]
    if label in ("arabic", "hebrew"):  # whole characters only: decode, find, and count their bytes
        found = sum(len(m.group().encode()) for m in runs.finditer(data.decode("utf-8", errors="replace")))
    else:
        found = sum(m.end() - m.start() for m in runs.finditer(data) if all(t.search(m.group()) for t in telling))
    return found / len(data)
