"""The feature browser (tinymono/browser.py) on hand-made cards: every character that hides or reorders text is
shown, each activation shades its byte, and a card's partner is the best unit of the other kind.
"""
import re

import pytest

from tinymono.browser import SHADES, _example_html, esc, write_browser


@pytest.mark.parametrize("ch", ["\u061c", "\u200e", "\u200f", "\u2028", "\u2029", "\u202a", "\u202e", "\u2066",
                                "\u2069", "\x00", "\x1b", "\x85", "\ud800"])
def test_every_character_that_hides_or_reorders_text_is_shown_by_its_code_point(ch):
    """U+061C (the Arabic letter mark) reorders text as U+200F does; a label or byte holding it must show it."""
    assert esc(f"a{ch}b") == f"a\u27e8U+{ord(ch):04X}\u27e9b"


def test_every_nonzero_activation_shades_its_byte():
    """An activation of 1% of the unit's max is faint, not blank: blank means the unit is silent there."""
    pieces = [(c, a, 0) for c, a in zip("abcd", (0.0, 0.01, 0.3, 1.0))]
    page = _example_html({"activation": 1.0, "pieces": pieces}, 1.0)
    shades = dict(re.findall(r'<span class="a(\d)" title="[^"]*">(\w)</span>', page))
    assert {c: int(k) for k, c in shades.items()} == {"b": 1, "c": 3, "d": SHADES} and ">a<" in page, page


def card(kind, unit, label, r):
    return {"unit": unit, "kind": kind, "density": 0.01, "max": 1.0,
            "best": {"label": label, "pearson": r, "specificity": 0.5, "specificity_high": 0.5, "auroc": 0.9},
            "histogram": {"labels": [label], "edges": [0.0, 0.5, 1.0], "counts": [[1, 1]], "zeros": [10]},
            "examples": [], "logits": {"promoted": [], "suppressed": []}}


def test_a_card_stands_beside_the_best_unit_of_the_other_kind_on_the_page(tmp_path):
    cards = [card("feature", 0, "dna", 0.9), card("neuron", 3, "dna", 0.2), card("neuron", 5, "dna", 0.7),
             card("neuron", 4, "dna", 0.4)]
    text = write_browser(tmp_path / "p.html", cards).read_text(encoding="utf-8")
    assert 'the best neuron for dna: <a href="#n5">neuron 5</a> (r 0.7)' in text, \
        "the partner must be the neuron of the highest r for the label"
