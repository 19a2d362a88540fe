"""A static HTML feature browser: one self-contained file that opens in any browser without a server
or a network (inline CSS, inline SVG, a few lines of inline JavaScript to sort and filter the index).

    write_browser("features.html", analysis.feature_cards(...), title=..., summary={...})

The page lists every card's unit with its density, its best-matching label and that label's scores
(a table you can sort by clicking a column and filter by label), and then, per unit: its top
examples (each byte's background as dark as the unit's activation on it, the activating byte
outlined), a histogram of its nonzero activations stacked by label, and the next bytes its logit
weights promote and suppress.

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

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#9c755f")  # last: every other label
HIST_W, HIST_H, HIST_BINS = 320, 90, 32
SHADES = 8  # activation shading levels of the examples' bytes

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:70em}
table{border-collapse:collapse;font-size:90%}th,td{padding:2px 8px;text-align:right}
th{cursor:pointer;background:#eee;position:sticky;top:0}td.l,th.l{text-align:left}
tr:nth-child(even){background:#f8f8f8}section{border-top:1px solid #ccc;margin-top:1.5em}
.ex{font-family:ui-monospace,monospace;white-space:pre;overflow-x:auto;margin:2px 0;font-size:90%}
.ex span{border-radius:2px}.ex .c{outline:2px solid #c00}.v{color:#888;display:inline-block;width:4.5em}
.cols{display:flex;gap:2em;flex-wrap:wrap}.tok{font-family:ui-monospace,monospace;background:#eef}
.key span{display:inline-block;width:.8em;height:.8em;margin:0 .2em 0 .8em}small{color:#666}
""" + "".join(f".a{k}{{background:rgba(255,110,0,{k / SHADES:.3f})}}" for k in range(1, SHADES + 1))

JS = """
function sortBy(th){const t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,up=th.dataset.up!=='1';
[...t.tHead.rows[0].cells].forEach(c=>c.dataset.up='');th.dataset.up=up?'1':'0';
const key=r=>{const c=r.cells[i];return c.dataset.v!==undefined?parseFloat(c.dataset.v):c.textContent};
[...b.rows].sort((x,y)=>{const a=key(x),c=key(y);return (a<c?-1:a>c?1:0)*(up?-1:1)}).forEach(r=>b.appendChild(r));}
function filterRows(q){q=q.toLowerCase();document.querySelectorAll('#index tbody tr').forEach(
r=>{r.style.display=r.dataset.label.toLowerCase().includes(q)?'':'none'})}
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
    KeyError naming one that is missing); its strings stay as they are, for esc."""
    def num(v, field, kind=float, score=False):
        return _num(v, f"card {i} ({card.get('unit')!r}) {field}", kind, score)
    try:
        best, hist, logits = card["best"], card["histogram"], card["logits"]
        return {"unit": card["unit"], "kind": card["kind"], "density": num(card["density"], "density"),
                "max": num(card["max"], "max"),
                "best": {"label": best["label"], **{k: num(best[k], f"best {k}", score=True) for k in SCORES}},
                "histogram": {"labels": list(hist["labels"]), "edges": [num(e, "histogram edges") for e in hist["edges"]],
                              "counts": [[num(c, "histogram counts", int) for c in row] for row in hist["counts"]],
                              "zeros": [num(z, "histogram zeros", int) for z in hist["zeros"]]},
                "examples": [{"activation": num(ex["activation"], "example activation"),
                              "pieces": [(text, num(a, "example piece"), bool(center))
                                         for text, a, center in ex["pieces"]]} for ex in card["examples"]],
                "logits": {k: [(t, num(w, f"logits {k}")) for t, w in logits[k]] for k in ("promoted", "suppressed")}}
    except KeyError as e:
        raise KeyError(f"card {i} lacks the field {e}; cards come from analysis.feature_cards") from e


def _fmt(x, digits=3):
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def _example_html(example, vmax):
    """One example: each piece of text a span shaded by its activation relative to the unit's max (one of
    SHADES classes, the exact value on hover); pieces where the unit is 0 are bare text."""
    parts = [f'<span class="v">{_fmt(example["activation"])}</span>']
    for text, a, center in example["pieces"]:
        shade = min(SHADES, math.ceil(SHADES * a / vmax)) if vmax > 0 and a > 0 else 0
        classes = " ".join(([f"a{shade}"] if shade else []) + (["c"] if center else []))
        if classes:
            title = f' title="{a:.2g}"' if shade else ""
            parts.append(f'<span class="{classes}"{title}>{esc(text)}</span>')
        else:
            parts.append(esc(text))
    return '<div class="ex">' + "".join(parts) + "</div>"


def _histogram_svg(hist):
    """Stacked bars of the nonzero activations per label (the 5 largest labels, the rest as 'other'),
    rebinned to HIST_BINS bins; returns (svg, legend html)."""
    counts, edges, labels = hist["counts"], hist["edges"], hist["labels"]
    n_bins = len(edges) - 1
    group = max(1, n_bins // HIST_BINS)
    rebinned = [[sum(row[i:i + group]) for i in range(0, n_bins, group)] for row in counts]  # [L][bins']
    totals = [sum(row) for row in rebinned]
    order = [l for l in sorted(range(len(labels)), key=lambda l: -totals[l]) if totals[l] > 0]
    layers = [(labels[l], rebinned[l]) for l in order[:len(PALETTE) - 1]]
    rest = order[len(PALETTE) - 1:]
    if rest:
        layers.append(("other", [sum(rebinned[l][b] for l in rest) for b in range(len(rebinned[0]))]))
    n = len(rebinned[0]) if rebinned else 0
    height = [sum(layer[b] for _, layer in layers) for b in range(n)]
    top = max(height, default=0) or 1
    w = HIST_W / max(n, 1)
    paths, base = [], [0.0] * n
    for k, (_, layer) in enumerate(layers):
        d = []
        for b in range(n):
            if layer[b]:
                h = HIST_H * layer[b] / top
                d.append(f"M{b * w:.1f},{HIST_H - base[b] - h:.1f}h{w * 0.9:.1f}v{h:.1f}h{-w * 0.9:.1f}z")
                base[b] += h
        paths.append(f'<path fill="{PALETTE[min(k, len(PALETTE) - 1)]}" d="{"".join(d)}"/>')
    svg = (f'<svg width="{HIST_W}" height="{HIST_H + 14}" viewBox="0 0 {HIST_W} {HIST_H + 14}" role="img">'
           f'{"".join(paths)}<text x="0" y="{HIST_H + 12}" font-size="10">0</text>'
           f'<text x="{HIST_W}" y="{HIST_H + 12}" font-size="10" text-anchor="end">{_fmt(edges[-1])}</text></svg>')
    legend = "".join(f'<span style="background:{PALETTE[min(k, len(PALETTE) - 1)]}"></span>{esc(name)}'
                     for k, (name, _) in enumerate(layers))
    zeros = sum(hist["zeros"])
    return svg, f'<div class="key">{legend}</div><small>{zeros:,} tokens at 0 (not drawn); peak {top:,}</small>'


def _card_html(card, max_examples):
    u, best = card["unit"], card["best"]
    svg, legend = _histogram_svg(card["histogram"])
    examples = "".join(_example_html(ex, card["max"]) for ex in card["examples"][:max_examples])
    logits = card["logits"]

    def tokens(items):
        return " ".join(f'<span class="tok" title="{w:.3g}">{esc(t)}</span>' for t, w in items)
    return (f'<section id="u{esc(u)}"><h2>{esc(card["kind"])} {esc(u)}</h2>'
            f'<p>density {_fmt(card["density"])} &middot; max {_fmt(card["max"])} &middot; best label '
            f'<b>{esc(best["label"])}</b>: r {_fmt(best["pearson"], 2)}, specificity {_fmt(best["specificity"], 2)} '
            f'(above half max {_fmt(best["specificity_high"], 2)}), AUROC {_fmt(best["auroc"], 3)}</p>'
            f'<div class="cols"><div><h3>activations</h3>{svg}{legend}</div>'
            f'<div><h3>logit weights</h3><p>promotes {tokens(logits["promoted"])}</p>'
            f'<p>suppresses {tokens(logits["suppressed"])}</p></div></div>'
            f'<h3>top examples</h3>{examples or "<p>never fires</p>"}</section>')


LEGEND = ("Scores are against the label each feature correlates with best (r: Pearson correlation; "
          "specificity: the share of its activation mass on that label, overall and above half its max; "
          "'-': it matches no label). In examples, the shade of a piece is the activation there, the piece "
          "outlined in red holds the example's activating byte, \u241e is the document separator (its label "
          "is 'separator'), and \\xNN is a byte that is not printable on its own.")


def _index_html(cards):
    head = "".join(f'<th{cls} onclick="sortBy(this)">{name}</th>' for name, cls in
                   (("unit", ""), ("log10 density", ""), ("best label", ' class="l"'), ("r", ""),
                    ("specificity", ""), ("spec. high", ""), ("AUROC", ""), ("max", "")))
    rows = []
    for c in cards:
        b = c["best"]
        live = c["density"] > 0
        logd = math.log10(c["density"]) if live else -99.0
        cells = [f'<td data-v="{esc(c["unit"])}"><a href="#u{esc(c["unit"])}">{esc(c["unit"])}</a></td>',
                 f'<td data-v="{logd:.4f}">{_fmt(logd, 3) if live else "dead"}</td>',
                 f'<td class="l">{esc(b["label"])}</td>']
        cells += [f'<td data-v="{_fmt(b[k], 6)}">{_fmt(b[k], 2)}</td>' for k in SCORES]
        cells.append(f'<td data-v="{_fmt(c["max"], 6)}">{_fmt(c["max"])}</td>')
        rows.append(f'<tr data-label="{esc(b["label"])}">{"".join(cells)}</tr>')
    return (f'<input placeholder="filter by label" oninput="filterRows(this.value)">'
            f'<table id="index"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def write_browser(path, cards, *, title="tinymono feature browser", summary=None, max_examples=8):
    """Write the page for `cards` (analysis.feature_cards) to `path`; summary: {name: value} shown at the
    top (e.g. the SAE's L0 and loss recovered). At most max_examples examples per unit. Returns the path."""
    cards = [_checked(c, i) for i, c in enumerate(cards)]
    summary_html = "".join(f"<li>{esc(k)}: {esc(_fmt(v, 4) if isinstance(v, float) else v)}</li>"
                           for k, v in (summary or {}).items())
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<style>{CSS}</style><script>{JS}</script></head><body><h1>{esc(title)}</h1><ul>{summary_html}</ul>'
            f'<p>{esc(LEGEND)}</p>'
            f'{_index_html(cards)}{"".join(_card_html(c, max_examples) for c in cards)}</body></html>\n')
    data = page.encode("utf-8")  # before any file is opened: whatever fails here leaves no page behind
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda fh: fh.write(data))
