"""A static HTML feature browser: one self-contained file that opens in any browser without a server
or a network (inline CSS, inline SVG, a few lines of inline JavaScript to sort, filter and search).

    write_browser("features.html", features.feature_cards(...) + neuron cards, title=..., summary={...})

The page opens with one colour key for the whole page (each label keeps its colour on every card) and
an index of every card's unit with its density, its best-matching label and that label's scores: a
table you can sort by clicking a column, filter by label, and search by unit ("12", "f12" for feature
12, "n3" for neuron 3) or by text in the unit's examples. Then, per unit (each with a link back to the
index): its top examples, examples from several bands of its activations (the weakest quarter of its
nonzero activations, the next, ...: what it does at its ordinary strengths, not only at its peak), a
histogram of its nonzero activations stacked by label, the next bytes its logit weights promote and
suppress, the features whose decoder directions lie nearest its own (cosine, linked when on the page),
and, when the page holds neurons too, the best neuron for its label (and a neuron's best feature), so
features and neurons sit side by side.

In an example each byte's background is as dark as the unit's activation on it and the activating byte
is outlined. Every piece of text is its own bidi isolate, so right-to-left script, the `\\xNN` escapes
beside it and the outlined byte all stay in byte order, left to right. The document separator is shown
as a boxed § (every font has it; U+241E, the symbol for a record separator, is missing from many).

Every field is hostile until escaped: corpus text contains `<script>`, quotes, ampersands, control
bytes and stray bytes of broken UTF-8, and a card or a label may come from anywhere. Every value that
reaches the page, text and attributes alike, numbers passed as strings included, goes through `esc`:
html.escape, and characters that would hide or reorder what is shown (controls, NUL, the bidi
overrides and isolates U+202A-U+202E, U+2066-U+2069, the marks U+200E/U+200F/U+061C, lone surrogates)
are written visibly as ⟨U+202E⟩. Numeric fields must be numbers (or strings that read as numbers),
else TypeError. The page is written to a temporary file and renamed, so it is complete or absent.
"""
from __future__ import annotations

import html
import math
import numbers
import unicodedata
from pathlib import Path

from tinymono.files import atomic_write

# one colour per label across the page: the labels with the most nonzero activations over all cards get
# these, in order; the rest share OTHER
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#9c755f", "#76b7b2", "#edc948", "#ff9da7",
           "#17becf", "#8c564b", "#bcbd22")
OTHER = "#bab0ac"
OWN = "#222222"  # a card's own best label, where it has no colour of its own on the page
HIST_W, HIST_H, HIST_BINS = 320, 90, 32
SHADES = 8  # activation shading levels of the examples' bytes
SEPARATOR, SEPARATOR_SHOWN = "\u241e", "\u00a7"  # text.token_text's separator, and what the page shows

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:70em}
table{border-collapse:collapse;font-size:90%}th,td{padding:2px 8px;text-align:right}
th{cursor:pointer;background:#eee;position:sticky;top:0}td.l,th.l{text-align:left}
tr:nth-child(even){background:#f8f8f8}section{border-top:1px solid #ccc;margin-top:1.5em}
.ex{font-family:ui-monospace,monospace;white-space:pre;overflow-x:auto;overflow-y:hidden;margin:2px 0;font-size:90%;
direction:ltr;unicode-bidi:isolate}.ex span{border-radius:2px;unicode-bidi:isolate}
.ex .c{outline:2px solid #c00}.v{color:#888;display:inline-block;width:4.5em}
.ex .sep{border:1px solid #999;color:#555;padding:0 1px}
.cols{display:flex;gap:2em;flex-wrap:wrap}.tok{font-family:ui-monospace,monospace;background:#eef}
.key span{display:inline-block;width:.8em;height:.8em;margin:0 .2em 0 .8em}small{color:#666}
.controls input{margin:0 1em .5em 0;width:22em}.back{font-size:80%;float:right}
""" + "".join(f".a{k}{{background:rgba(255,110,0,{k / SHADES:.3f})}}" for k in range(1, SHADES + 1))

JS = """
function sortBy(th){const t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,up=th.dataset.up!=='1';
[...t.tHead.rows[0].cells].forEach(c=>c.dataset.up='');th.dataset.up=up?'1':'0';
const key=r=>{const c=r.cells[i];if(c.dataset.v===undefined)return c.textContent;const v=parseFloat(c.dataset.v);
return isNaN(v)?-Infinity:v};
[...b.rows].sort((x,y)=>{const a=key(x),c=key(y);return (a<c?-1:a>c?1:0)*(up?-1:1)}).forEach(r=>b.appendChild(r));}
function exText(e){return [...e.childNodes].filter(n=>!(n.classList&&n.classList.contains('v')))
.map(n=>n.textContent).join('').toLowerCase();}
function matches(r,label,q,id){if(!r.dataset.label.toLowerCase().includes(label))return false;if(!q)return true;
if(id)return r.dataset.num===id[2]&&(!id[1]||r.dataset.kind[0]===id[1]);
const s=document.getElementById(r.dataset.id);
return !!s&&[...s.querySelectorAll('.ex')].some(e=>exText(e).includes(q));}
function applyFilters(){const label=document.getElementById('flabel').value.toLowerCase(),
q=document.getElementById('q').value.trim().toLowerCase();let n=0;
let id=/^([fn]?)(\\d+)$/.exec(q);  // a unit's id if some unit has it (or it says f/n), else text to find
if(id&&!id[1]&&!document.querySelector('#index tbody tr[data-num="'+id[2]+'"]'))id=null;
document.querySelectorAll('#index tbody tr').forEach(r=>{const ok=matches(r,label,q,id);n+=ok;
r.style.display=ok?'':'none';const s=document.getElementById(r.dataset.id);if(s)s.style.display=ok?'':'none';});
const shown=document.getElementById('shown');shown.textContent=n+' shown'+(n===0&&q?' ('+shown.title+')':'');}
function reveal(){const s=document.getElementById(location.hash.slice(1));
if(s&&s.tagName==='SECTION'&&s.style.display==='none'){s.style.display='';s.scrollIntoView();}}
window.addEventListener('hashchange',reveal);window.addEventListener('load',reveal);
"""


HIDDEN = {0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def _visible(ch):
    """A character as shown: itself, or its code point in brackets (e.g. ⟨U+202E⟩) if it would hide or
    reorder text (a control other than newline and tab, a bidi control, a line separator, a lone
    surrogate)."""
    hidden = ord(ch) in HIDDEN or (unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\n\t")
    return f"\u27e8U+{ord(ch):04X}\u27e9" if hidden else ch


def esc(value):
    """Any value as safe page text (or attribute value)."""
    return html.escape("".join(map(_visible, str(value))), quote=True)


SCORES = ("pearson", "specificity", "specificity_high", "auroc")


def _num(value, field, kind=float, score=False):
    """A numeric field as a finite `kind` (a score may also be None or NaN: it matches no label); a string
    that reads as a number is that number; anything else is a TypeError naming the field."""
    if score and value is None:
        return None
    if isinstance(value, (numbers.Real, str)) and not isinstance(value, bool):
        try:
            number = float(value)
            if math.isfinite(number) or (score and math.isnan(number)):
                return kind(number)
        except ValueError:
            pass
    raise TypeError(f"{field} must be a finite number, got {type(value).__name__} {str(value)[:60]!r}")


def _checked(card, i):
    """Card `i` with every numeric field turned into a number (TypeError naming a field that is not one,
    KeyError naming one that is missing); its strings stay as they are, for esc. `quantiles` and
    `nearest` may be absent (a card written before they existed)."""
    def num(v, field, kind=float, score=False):
        return _num(v, f"card {i} ({card.get('unit')!r}) {field}", kind, score)

    def examples(items, where):
        return [{"activation": num(ex["activation"], f"{where} activation"),
                 "pieces": [(text, num(a, f"{where} piece"), int(centre)) for text, a, centre in ex["pieces"]]}
                for ex in items]
    try:
        best, hist, logits = card["best"], card["histogram"], card["logits"]
        return {"unit": card["unit"], "kind": card["kind"], "density": num(card["density"], "density"),
                "max": num(card["max"], "max"),
                "best": {"label": best["label"], **{k: num(best[k], f"best {k}", score=True) for k in SCORES}},
                "histogram": {"labels": list(hist["labels"]), "edges": [num(e, "histogram edges") for e in hist["edges"]],
                              "counts": [[num(c, "histogram counts", int) for c in row] for row in hist["counts"]],
                              "zeros": [num(z, "histogram zeros", int) for z in hist["zeros"]]},
                "examples": examples(card["examples"], "example"),
                "quantiles": [{"band": q["band"], "lo": num(q["lo"], "band lo"), "hi": num(q["hi"], "band hi"),
                               "examples": examples(q["examples"], "band example")} for q in card.get("quantiles", [])],
                "nearest": [(other, num(cos, "nearest cosine")) for other, cos in card.get("nearest", [])],
                "logits": {k: [(t, num(w, f"logits {k}")) for t, w in logits[k]] for k in ("promoted", "suppressed")}}
    except KeyError as e:
        raise KeyError(f"card {i} lacks the field {e}; cards come from features.feature_cards") from e


def _fmt(x, digits=3):
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def anchor(kind, unit):
    """The id of a unit's section: f12 for feature 12, n3 for neuron 3 (a page may hold both)."""
    return f"{str(kind)[:1].lower()}{unit}"


def label_colours(cards):
    """{label: colour}, one for the whole page: the labels with the most nonzero activations over all
    cards get PALETTE's colours in order, every other label OTHER."""
    totals = {}
    for c in cards:
        for label, row in zip(c["histogram"]["labels"], c["histogram"]["counts"]):
            totals[label] = totals.get(label, 0) + sum(row)
    ranked = sorted((l for l in totals if totals[l] > 0), key=lambda l: -totals[l])
    return {l: PALETTE[k] if k < len(PALETTE) else OTHER for k, l in enumerate(ranked)}


def _key_html(colours):
    named = [(l, c) for l, c in colours.items() if c != OTHER]
    rest = len(colours) - len(named)
    items = [(esc(l), c) for l, c in named] + ([(f"{rest} other labels", OTHER)] if rest else [])
    return ('<div class="key" id="key">colours of the labels, on every card: '
            + "".join(f'<span style="background:{c}"></span>{name}' for name, c in items) + "</div>")


def _right_to_left(text):
    return any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in text)


def _example_html(example, vmax):
    """One example: its pieces of text in spans, each a bidi isolate (see the module's docstring): a piece
    shaded by its activation relative to the unit's max (one of SHADES classes, the exact value on hover),
    the activating piece, the separator and every right-to-left character in a span of its own; runs of
    other bare pieces share one (they hold no right-to-left character to reorder them)."""
    parts, run = [f'<span class="v">{_fmt(example["activation"])}</span>'], []
    for text, a, centre in example["pieces"]:
        shade = min(SHADES, math.ceil(SHADES * a / vmax)) if vmax > 0 and a > 0 else 0
        classes = ([f"a{shade}"] if shade else []) + (["c"] if centre else [])
        title = f"{a:.2g}" if shade else ""
        if centre and len(text) == 1 and text != SEPARATOR:  # one character of several bytes (a script's letter):
            raw = text.encode("utf-8", "surrogatepass")     # say which of its bytes activated
            if 1 < len(raw) >= centre:
                title += (f"{'; ' if title else ''}the activating byte is byte {centre} of {len(raw)} "
                          f"(0x{raw[centre - 1]:02X})")
        if text == SEPARATOR:
            text, title = SEPARATOR_SHOWN, "document separator" + (f" ({title})" if title else "")
            classes.append("sep")
        if not classes and not _right_to_left(text):
            run.append(esc(text))
            continue
        if run:
            parts.append(f"<span>{''.join(run)}</span>")
            run = []
        attrs = (f' class="{" ".join(classes)}"' if classes else "") + (f' title="{title}"' if title else "")
        parts.append(f"<span{attrs}>{esc(text)}</span>")
    if run:
        parts.append(f"<span>{''.join(run)}</span>")
    return '<div class="ex">' + "".join(parts) + "</div>"


def _histogram_svg(hist, colours):
    """Stacked bars of the nonzero activations per label in the page's colours (labels without a colour
    of their own together, as OTHER), rebinned to HIST_BINS bins -> (svg, one line under it)."""
    counts, edges, labels = hist["counts"], hist["edges"], hist["labels"]
    n_bins = len(edges) - 1
    group = max(1, n_bins // HIST_BINS)
    rebinned = [[sum(row[i:i + group]) for i in range(0, n_bins, group)] for row in counts]  # [L][bins']
    n = len(rebinned[0]) if rebinned else 0
    layers, rest = {}, [0] * n  # colour -> (label, counts); labels sharing OTHER summed into rest
    for label, row in sorted(zip(labels, rebinned), key=lambda lr: -sum(lr[1])):
        if not sum(row):
            continue
        colour = colours.get(label, OTHER)
        if colour == OTHER:
            rest = [a + b for a, b in zip(rest, row)]
        else:
            layers[colour] = (label, row)
    stack = list(layers.items()) + ([(OTHER, ("other", rest))] if any(rest) else [])
    height = [sum(row[b] for _, (_, row) in stack) for b in range(n)]
    top = max(height, default=0) or 1
    w = HIST_W / max(n, 1)
    paths, base = [], [0.0] * n
    for colour, (label, row) in stack:
        d = []
        for b in range(n):
            if row[b]:
                h = HIST_H * row[b] / top
                d.append(f"M{b * w:.1f},{HIST_H - base[b] - h:.1f}h{w * 0.9:.1f}v{h:.1f}h{-w * 0.9:.1f}z")
                base[b] += h
        paths.append(f'<path fill="{colour}" data-label="{esc(label)}" d="{"".join(d)}"/>')
    svg = (f'<svg width="{HIST_W}" height="{HIST_H + 14}" viewBox="0 0 {HIST_W} {HIST_H + 14}" role="img">'
           f'{"".join(paths)}<text x="0" y="{HIST_H + 12}" font-size="10">0</text>'
           f'<text x="{HIST_W}" y="{HIST_H + 12}" font-size="10" text-anchor="end">{_fmt(edges[-1])}</text></svg>')
    zeros = sum(hist["zeros"])
    return svg, f"<small>{zeros:,} tokens at 0 (not drawn); peak {top:,}</small>"


def _link(kind, unit, on_page, text=None):
    text = esc(text or f"{kind} {unit}")
    return f'<a href="#{esc(anchor(kind, unit))}">{text}</a>' if anchor(kind, unit) in on_page else text


def _card_html(card, max_examples, colours, on_page, best_of, reason):
    u, best, kind = card["unit"], card["best"], card["kind"]
    own = {best["label"]: OWN} if colours.get(best["label"], OTHER) == OTHER else {}  # its label never hides in grey
    svg, under = _histogram_svg(card["histogram"], {**colours, **own})
    examples = "".join(_example_html(ex, card["max"]) for ex in card["examples"][:max_examples])
    bands = "".join(f'<p class="band"><small>{esc(q["band"])} of its nonzero activations ({_fmt(q["lo"])} to '
                    f'{_fmt(q["hi"])})</small></p>' + "".join(_example_html(ex, card["max"]) for ex in q["examples"])
                    for q in card["quantiles"])
    logits = card["logits"]

    def tokens(items):
        return " ".join(f'<span class="tok" title="{w:.3g}">{esc(SEPARATOR_SHOWN if t == SEPARATOR else t)}</span>'
                        for t, w in items)
    nearest = "".join(f"<li>{_link('feature', o, on_page)} <small>cos {_fmt(c, 2)}</small></li>"
                      for o, c in card["nearest"])
    other_kind = "neuron" if str(kind) == "feature" else "feature"
    partner = best_of.get((other_kind, best["label"]))
    side = (f'<p>the best {other_kind} for {esc(best["label"])}: '
            f'{_link(other_kind, partner[0], on_page)} (r {_fmt(partner[1], 2)})</p>' if partner else "")
    colour = own.get(best["label"], colours.get(best["label"], OTHER))
    return (f'<section id="{esc(anchor(kind, u))}"><a class="back" href="#index">back to the index</a>'
            f'<h2>{esc(kind)} {esc(u)}</h2>'
            + (f'<p><small>on this page as: {esc(reason)}</small></p>' if reason else "")
            + f'<p>density {_fmt(card["density"])} &middot; max {_fmt(card["max"])} &middot; best label '
            f'<b style="border-bottom:3px solid {colour}">{esc(best["label"])}</b>: r {_fmt(best["pearson"], 2)}, '
            f'specificity {_fmt(best["specificity"], 2)} (above half max {_fmt(best["specificity_high"], 2)}), '
            f'AUROC {_fmt(best["auroc"], 3)}</p>{side}'
            f'<div class="cols"><div><h3>activations</h3>{svg}<br>{under}</div>'
            f'<div><h3>logit weights</h3><p>promotes {tokens(logits["promoted"])}</p>'
            f'<p>suppresses {tokens(logits["suppressed"])}</p></div>'
            + (f'<div><h3>nearest features</h3><small>by decoder direction</small><ul>{nearest}</ul></div>'
               if nearest else "") + '</div>'
            f'<h3>top examples</h3>{examples or "<p>never fires</p>"}'
            + (f"<h3>examples across its activations</h3>{bands}" if bands else "") + "</section>")


LEGEND = ("Scores are against the label each unit correlates with best (r: Pearson correlation; "
          "specificity: the share of its activation mass on that label, overall and above half its max; "
          "AUROC: the chance that a random byte of the label activates it more than a random other byte, 0.5 "
          "being chance; '-': it matches no label). Density: the share of held-out tokens it fires on (the "
          "index gives its log10); max: its largest activation there; the number left of an example is its "
          "activation at the activating byte. In examples, the shade of a piece is the activation there, the piece "
          f"outlined in red holds the example's activating byte (hover over a letter of two bytes to see which of "
          f"them), a boxed {SEPARATOR_SHOWN} is the document "
          "separator (its label is 'separator'), \\xNN is a byte that is not printable on its own, and every "
          "piece stays in byte order, left to right, right-to-left script included.")


def _index_html(cards, best_for, missing):
    head = "".join(f'<th{cls} onclick="sortBy(this)">{name}</th>' for name, cls in
                   (("unit", ""), ("kind", ' class="l"'), ("log10 density", ""), ("best label", ' class="l"'),
                    ("r", ""), ("specificity", ""), ("spec. high", ""), ("AUROC", ""), ("max", "")))
    rows = []
    for c in cards:
        b, a = c["best"], esc(anchor(c["kind"], c["unit"]))
        live = c["density"] > 0
        logd = math.log10(c["density"]) if live else -99.0
        cells = [f'<td data-v="{esc(c["unit"])}"><a href="#{a}">{esc(c["unit"])}</a></td>',
                 f'<td class="l">{esc(c["kind"])}</td>',
                 f'<td data-v="{logd:.4f}">{_fmt(logd, 3) if live else "dead"}</td>',
                 f'<td class="l">{esc(b["label"])}</td>']
        cells += [f'<td data-v="{_fmt(b[k], 6)}">{_fmt(b[k], 2)}</td>' for k in SCORES]
        cells.append(f'<td data-v="{_fmt(c["max"], 6)}">{_fmt(c["max"])}</td>')
        labels = " ".join(dict.fromkeys([str(b["label"]), *best_for.get((str(c["kind"]), c["unit"]), [])]))
        rows.append(f'<tr data-label="{esc(labels)}" data-id="{a}" data-num="{esc(c["unit"])}" '
                    f'data-kind="{esc(c["kind"])}">{"".join(cells)}</tr>')
    example = next((f"{str(c['kind'])[0]}{c['unit']}" for c in cards), "f0")
    return ('<div class="controls"><input id="q" placeholder="search: a unit (' + esc(example) + ') or text in the '
            'examples" '
            'oninput="applyFilters()"><input id="flabel" placeholder="filter by label" oninput="applyFilters()">'
            f'<small id="shown" title="{esc(missing)}">{len(cards)} shown</small></div>'
            f'<table id="index"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def write_browser(path, cards, *, title="tinymono feature browser", summary=None, max_examples=8, best_units=None,
                  n_units=None, reasons=None):
    """Write the page for `cards` (features.feature_cards, of features, neurons or both) to `path`;
    summary: {name: value} shown at the top (e.g. the SAE's L0 and loss recovered). At most max_examples
    top examples per unit. best_units: {(kind, label): (unit, r)}, the best unit of each kind for each label
    over all units (the lesson's table), shown beside a card whose best label it is, linked where it is on
    the page; without it, the best among the cards. n_units: {kind: how many there are}, to say how many a
    search can find. reasons: {(kind, unit): why it is on the page}, shown on its card. Returns the path."""
    cards = [_checked(c, i) for i, c in enumerate(cards)]
    colours = label_colours(cards)
    on_page = {anchor(c["kind"], c["unit"]) for c in cards}
    best_of = {}  # (kind, label) -> (unit, r): the best unit of each kind for each label, for the side-by-side links
    for c in cards:
        key, r = (str(c["kind"]), c["best"]["label"]), c["best"]["pearson"]
        if r is not None and math.isfinite(r) and (key not in best_of or r > best_of[key][1]):
            best_of[key] = (c["unit"], r)
    best_of.update(best_units or {})
    best_for = {}  # (kind, unit) -> the labels it is the best unit of its kind for
    for (kind, label), (unit, _) in best_of.items():
        best_for.setdefault((str(kind), unit), []).append(str(label))
    reasons = reasons or {}
    shown = {k: sum(str(c["kind"]) == k for c in cards) for k in dict.fromkeys(str(c["kind"]) for c in cards)}
    missing = "; ".join(f"{n:,} of {(n_units or {}).get(k, n):,} {k}s are on this page" for k, n in shown.items())
    summary_html = "".join(f"<li>{esc(k)}: {esc(_fmt(v, 4) if isinstance(v, float) else v)}</li>"
                           for k, v in (summary or {}).items())
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<style>{CSS}</style><script>{JS}</script></head>'
            f'<body><h1>{esc(title)}</h1><ul>{summary_html}</ul>'
            f'<p>{esc(LEGEND)}</p>{_key_html(colours)}'
            f'{_index_html(cards, best_for, missing)}'
            + "".join(_card_html(c, max_examples, colours, on_page, best_of, reasons.get((str(c["kind"]), c["unit"])))
                      for c in cards) + '</body></html>\n')
    data = page.encode("utf-8")  # before any file is opened: whatever fails here leaves no page behind
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda fh: fh.write(data))
