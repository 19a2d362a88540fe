"""The static feature browser, read back with the standard library's HTML parser: hostile corpus text stays
text, nothing is fetched from a network, the structure is well formed, and the page holds what it should."""
import copy
import html
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from tinymono import activations as act
from tinymono import corpus as C
from tinymono import features
from tinymono import sae
from tinymono import scores
from tinymono.browser import write_browser
from test_activations import TINY, tiny_model

HOSTILE = (b'<script>alert(1)</script> "quoted" & \'single\' <b>bold</b> &amp; https://example.com/x.js '
           b'\x00\x07\x1b[31m \xd8 \xff\xfe \xe2\x80\xae' + "عربي".encode() + b"\n")
VOID = {"meta", "input", "br", "hr", "img", "path", "rect"}  # no end tag needed (or self-closed, in SVG)
ALLOWED = {"html", "head", "meta", "title", "style", "script", "body", "h1", "h2", "h3", "ul", "li", "p", "b",
           "small", "div", "span", "a", "input", "table", "thead", "tbody", "tr", "th", "td", "section", "svg",
           "path", "text", "br"}


class Checker(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags, self.text, self.scripts, self.refs = [], [], [], [], [], []
        self.attrs = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "poster", "data") or "url(" in (value or ""):
                self.refs.append((tag, name, value))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, n, v) for n, v in attrs if n in ("src", "href", "xlink:href")]

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "script":
            self.scripts.append(data)
        elif not (self.stack and self.stack[-1] == "style"):
            self.text.append(data)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    n = 40 * len(HOSTILE)
    tokens = np.frombuffer(HOSTILE * 40, np.uint8).astype(np.uint16)
    tokens[::97] = C.DOC_SEP
    context = (np.arange(n) // 200 % 3 + 1).astype(np.uint8)
    split = C.Split(tokens, context, context, np.full(n, np.nan, np.float32))
    names = ["separator", 'py"thon<', "eng&lish", "<base64>"]  # hostile label names too
    corpus = C.Corpus(None, {"fingerprint": "hostile", "context_names": names, "detail_names": names}, split, split)
    store = act.harvest(tiny_model(), TINY, corpus, folder / "store", fast=False)
    cfg = sae.SAEConfig(d_in=TINY.d_mlp, d_sae=12)
    params = sae.init(cfg, np.random.default_rng(0), store.rows(np.arange(len(store))))
    params["b_enc"][3] = -1e6  # a dead latent
    src = features.FeatureSource(store, params, cfg)
    report = scores.analyse_units(src)
    cards = features.feature_cards(src, report, tiny_model(), TINY, range(12), n_examples=5, before=len(HOSTILE),
                             after=len(HOSTILE))
    path = write_browser(folder / "features.html", cards, title="features <of> \"tiny\" & co",
                         summary={"L0": 3.25, "note": "<script>alert(2)</script>"})
    text = path.read_text(encoding="utf-8")
    checker = Checker()
    checker.feed(text)
    checker.close()
    return text, checker, cards


def test_corpus_text_stays_text(page):
    text, checker, _ = page
    assert set(checker.tags) <= ALLOWED, (f"tags that the browser never writes came from the data: "
                                          f"{sorted(set(checker.tags) - ALLOWED)}: is some text not html.escape'd?")
    assert checker.tags.count("script") == 1 and "alert" not in "".join(checker.scripts), \
        "the only script must be the browser's own"
    data = "".join(checker.text)
    assert "<script>alert(1)</script>" in data and "<b>bold</b>" in data and '"quoted"' in data, (
        "the hostile text must reach the reader as text (escaped in the file, unescaped by the parser)")
    assert "<script>alert(2)</script>" in data, "summary values must be escaped too"
    assert "\\x00" in data and "\\xd8" in data and "\u241e" not in data, \
        "control bytes and stray bytes must be shown visibly"
    assert '<span class="sep" title="document separator">\u00a7</span>' in text or 'sep" title="document' in text, \
        "the document separator is a boxed \u00a7, a glyph every font has (many lack \u241e)"
    bad = sorted({f"U+{ord(ch):04X}" for ch in text if ord(ch) < 0x20 and ch not in "\n\t"})
    assert not bad, f"raw control characters in the file: {bad}"


def test_no_network(page):
    text, checker, _ = page
    assert checker.refs == [] or all(v.startswith("#") for _, n, v in checker.refs if v), (
        f"resource references: {[r for r in checker.refs if not (r[2] or '').startswith('#')]}")
    assert all(tag not in checker.tags for tag in ("link", "img", "iframe", "object", "embed"))
    assert "@import" not in text and "url(" not in text, "CSS must not fetch anything"
    outside_text = text.replace("https://example.com/x.js", "")
    assert "http://" not in outside_text and "https://" not in outside_text, \
        "an http(s) address outside the corpus text"


def test_well_formed(page):
    text, checker, _ = page
    assert text.startswith("<!DOCTYPE html>") and checker.errors == [] and checker.stack == [], (
        f"mismatched tags: {checker.errors[:5]}, left open: {checker.stack}")
    for tag in ("html", "head", "body", "title"):
        assert checker.tags.count(tag) == 1, f"<{tag}> appears {checker.tags.count(tag)} times"


def test_contents(page):
    text, checker, cards = page
    assert text.count('<section id="f') == 12 and text.count("<svg") == 12, "one section and histogram per unit"
    assert text.count('href="#index">back to the index') == 12
    assert "never fires" in text, "the dead latent says so"
    data = "".join(checker.text)
    assert 'py"thon<' in data and "eng&lish" in data, "label names shown (escaped in the file)"
    live = [c for c in cards if c["examples"]]
    n_examples = sum(len(c["examples"]) + sum(len(q["examples"]) for q in c["quantiles"]) for c in cards)
    assert text.count('class="ex"') == n_examples and live
    assert all(len(c["quantiles"]) == 4 for c in live), "examples from each quarter of a live unit's activations"
    outlined = len(re.findall(r'class="(a\d )?c( sep)?"', text))
    assert outlined == text.count('class="ex"'), "each example outlines its activating byte"
    assert len(text) / n_examples < 7_000, f"{len(text):,} characters for 12 units, {n_examples} examples"


def test_size_is_reasonable_for_hundreds_of_features(page, tmp_path):
    _, _, cards = page
    many = [dict(c, unit=i) for i in range(300) for c in cards[:1]]  # 300 copies of a live card
    path = write_browser(tmp_path / "many.html", many, max_examples=5)
    size, examples = path.stat().st_size, 300 * (5 + sum(len(q["examples"]) for q in cards[0]["quantiles"]))
    assert size / examples < 6_000, (f"300 features take {size / 2**20:.1f} MB, {size / examples:,.0f} bytes per "
                                     "example of 160 hostile bytes (nearly every one escaped)")


# ----------------------------------------------------------------------------------------------------
# hostile strings in every field that reaches the page

ATTRS = {"lang", "charset", "class", "id", "href", "title", "data-v", "data-label", "data-id", "data-num",
         "data-kind", "onclick", "oninput",
         "placeholder", "style", "width", "height", "viewbox", "role", "fill", "d", "x", "y", "font-size",
         "text-anchor"}
HIDDEN = "\u202e\u202a\u2066\u2069\u200e\u200f\x00\x1b\x7f\x85"  # bidi controls, NUL, ESC, DEL, a C1 control
ATTACK = '0"><img src=x onerror=alert(1)>\'><script>alert(3)</script></td></table>' + HIDDEN + "\ud800"
FIELDS = {  # where a hostile string can enter: a function that puts it there (cards, title, summary)
    "unit": lambda cards, kw: cards[0].update(unit=ATTACK),
    "kind": lambda cards, kw: cards[0].update(kind=ATTACK),
    "best label": lambda cards, kw: cards[0]["best"].update(label=ATTACK),
    "histogram label": lambda cards, kw: cards[0]["histogram"]["labels"].__setitem__(
        int(np.argmax([sum(row) for row in cards[0]["histogram"]["counts"]])), ATTACK),  # one that is drawn
    "promoted token": lambda cards, kw: cards[0]["logits"]["promoted"].__setitem__(0, (ATTACK, 1.0)),
    "suppressed token": lambda cards, kw: cards[0]["logits"]["suppressed"].__setitem__(0, (ATTACK, -1.0)),
    "example text": lambda cards, kw: cards[0]["examples"][0]["pieces"].__setitem__(0, (ATTACK, 1.0, True)),
    "title": lambda cards, kw: kw.update(title=ATTACK),
    "summary name": lambda cards, kw: kw.update(summary={ATTACK: 1.0}),
    "summary value": lambda cards, kw: kw.update(summary={"note": ATTACK}),
}


def live_cards(page):
    _, _, cards = page
    live = [c for c in cards if c["examples"] and c["logits"]["promoted"] and c["logits"]["suppressed"]]
    assert live, "the fixture must have a live card with examples and logits"
    return copy.deepcopy(live[:2])


@pytest.mark.parametrize("field", list(FIELDS))
def test_every_field_is_escaped(page, tmp_path, field):
    cards, kw = live_cards(page), {}
    FIELDS[field](cards, kw)
    path = write_browser(tmp_path / "p.html", cards, **kw)
    text = path.read_text(encoding="utf-8")  # strict: a lone surrogate must not reach the file
    checker = Checker()
    checker.feed(text)
    checker.close()
    assert set(checker.tags) <= ALLOWED and set(checker.attrs) <= ATTRS, (
        f"{field}: markup from the data: tags {sorted(set(checker.tags) - ALLOWED)}, "
        f"attributes {sorted(set(checker.attrs) - ATTRS)}: is the {field} passed through esc()?")
    assert checker.tags.count("script") == 1 and "alert" not in "".join(checker.scripts)
    assert checker.errors == [] and checker.stack == [], f"{field}: the page's structure was broken: {checker.errors}"
    raw = sorted({f"U+{ord(ch):04X}" for ch in text if ch in HIDDEN or 0xD800 <= ord(ch) <= 0xDFFF})
    assert not raw, f"{field}: invisible or reordering characters reached the page raw: {raw}"
    data = "".join(checker.text) + "".join(v for _, _, v in checker.refs if v)
    for ch in "\u202e\u2066\x00\ud800":
        shown = f"\u27e8U+{ord(ch):04X}\u27e9"
        assert shown in data or shown in text, f"{field}: {ch!r} must be shown visibly, as {shown}"
    assert "<img src=x onerror=alert(1)>" in data, f"{field}: the hostile text must reach the reader as text"


def test_numbers_passed_as_strings(page, tmp_path):
    cards = live_cards(page)
    cards[0]["density"], cards[0]["max"] = "0.25", "2"
    cards[0]["best"]["pearson"] = "0.5"
    text = write_browser(tmp_path / "ok.html", cards).read_text()
    assert "density 0.25" in text and "max 2 " in text and "r 0.5" in text, "a string that reads as a number is that number"
    old = write_browser(tmp_path / "p.html", cards).read_bytes()
    for field, value in (("density", '0"><img src=x onerror=alert(1)>'), ("max", float("inf")), ("density", None),
                         ("max", [1])):
        bad = copy.deepcopy(cards)
        bad[0][field] = value
        with pytest.raises(TypeError, match=f"card 0 .* {field} must be a finite number"):
            write_browser(tmp_path / "p.html", bad)
        assert (tmp_path / "p.html").read_bytes() == old, "a page that fails must leave the old page as it was"
    del bad[0]["histogram"]
    with pytest.raises(KeyError, match="histogram"):
        write_browser(tmp_path / "p.html", bad)


def test_a_lone_surrogate_label_gives_a_whole_page(page, tmp_path):
    cards = live_cards(page)
    cards[0]["best"]["label"] = "dna\udc80"
    text = write_browser(tmp_path / "p.html", cards).read_text(encoding="utf-8")
    assert text.endswith("</html>\n") and "dna\u27e8U+DC80\u27e9" in text


def test_a_page_is_complete_or_not_written(page, tmp_path, monkeypatch):
    import errno
    import os

    cards = live_cards(page)
    path = write_browser(tmp_path / "p.html", cards)
    old = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match=f"disk full: cannot write {path}"):
        write_browser(path, cards, title="new")
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["p.html"], \
        "a page that could not be written whole must leave the old one and no temporary file"


def test_quantile_bands_hold_what_they_say(page):
    """Each band's examples activate within the band's bounds, and the bands climb from the weakest quarter."""
    _, _, cards = page
    live = [c for c in cards if c["quantiles"]]
    assert live
    for c in live:
        bands = c["quantiles"]
        assert [b["band"] for b in bands] == ["0-25%", "25-50%", "50-75%", "75-100%"]
        assert all(b["lo"] <= b["hi"] for b in bands) and all(a["hi"] <= b["lo"] for a, b in zip(bands, bands[1:]))
        for b in bands:
            assert b["examples"] and all(b["lo"] - 1e-6 <= ex["activation"] <= b["hi"] + 1e-6 for ex in b["examples"]), \
                f"unit {c['unit']} band {b['band']}: an example outside [{b['lo']}, {b['hi']}]"


def test_nearest_by_decoder_matches_the_cosine_matrix():
    W = np.random.default_rng(3).standard_normal((20, 6)) * np.linspace(0.5, 2, 20)[:, None]  # rows not unit norm
    got = features.nearest_by_decoder(W, [0, 7], k=4)
    cos = (W @ W.T) / np.outer(np.linalg.norm(W, axis=1), np.linalg.norm(W, axis=1))
    for u in (0, 7):
        others = [o for o in np.argsort(-cos[u]) if o != u][:4]
        assert [o for o, _ in got[u]] == others and u not in [o for o, _ in got[u]]
        np.testing.assert_allclose([c for _, c in got[u]], cos[u, others], rtol=1e-12)


def test_the_lessons_best_units_stand_beside_the_cards_and_in_the_label_filter(page, tmp_path):
    """A card's 'best neuron' is the lesson's best over every neuron (given), not only the best among the cards;
    a unit is found by the label filter under every label it is the best unit for; the search says how many
    units the page holds."""
    _, _, cards = page
    cards = copy.deepcopy(cards[:4])
    label = cards[0]["best"]["label"]
    neuron = {**copy.deepcopy(cards[1]), "kind": "neuron", "unit": 7}
    path = write_browser(tmp_path / "p.html", cards + [neuron], n_units={"feature": 12, "neuron": 16},
                         best_units={("neuron", label): (99, 0.42), ("feature", "other label"): (cards[2]["unit"], 0.5)})
    text = path.read_text(encoding="utf-8")
    assert f"the best neuron for {html.escape(label)}: neuron 99 (r 0.42)" in text  # not on the page: no link
    row = re.search(rf'<tr data-label="([^"]*)" data-id="f{cards[2]["unit"]}"', text)
    assert row and "other label" in html.unescape(row.group(1))
    assert 'title="4 of 12 features are on this page; 1 of 16 neurons are on this page"' in text


def test_a_cards_own_label_never_hides_in_the_shared_grey(page, tmp_path):
    """Past the palette's colours, labels share one grey; a card whose own best label is among them draws it in
    a colour of its own."""
    _, _, cards = page
    card = copy.deepcopy(next(c for c in cards if c["examples"]))
    bins = len(card["histogram"]["edges"]) - 1
    labels = [f"l{i}" for i in range(14)]  # 14 labels: the two rarest get the shared grey
    card["histogram"] = {**card["histogram"], "labels": labels, "counts": [[20 - i] * bins for i in range(14)]}
    card["best"] = {**card["best"], "label": "l13"}
    text = write_browser(tmp_path / "p.html", [card]).read_text(encoding="utf-8")
    colour = re.search(r'best label <b style="border-bottom:3px solid ([^"]+)">l13</b>', text).group(1)
    assert colour != "#bab0ac" and f'fill="{colour}" data-label="l13"' in text, "l13 must have a colour of its own"
    assert 'fill="#bab0ac" data-label="other"' in text, "l12 still shares the grey"


def test_a_card_says_why_it_is_on_the_page(page, tmp_path):
    _, _, cards = page
    cards = copy.deepcopy(cards[:2])
    text = write_browser(tmp_path / "p.html", cards, reasons={("feature", cards[1]["unit"]): "drawn <at> random"}
                         ).read_text(encoding="utf-8")
    section = re.search(rf'<section id="f{cards[1]["unit"]}".*?</section>', text).group(0)
    assert "on this page as: drawn &lt;at&gt; random" in section
    assert "on this page as" not in re.search(rf'<section id="f{cards[0]["unit"]}".*?</section>', text).group(0)


def test_the_activating_byte_of_a_two_byte_letter_is_named():
    from tinymono.browser import _example_html

    ex = {"activation": 2.0, "pieces": [("a", 0.5, 0), ("\u05d0", 2.0, 2), ("\\xd8", 1.0, 0)]}  # alef: D7 90
    page = _example_html(ex, 2.0)
    assert "the activating byte is byte 2 of 2 (0x90)" in page and page.count("activating byte") == 1
