"""The feature browser in a real headless Chromium: it loads with no network, sorting, filtering and search
work, links land, each label keeps one colour, right-to-left text keeps byte order, no console error; and a
screenshot of the page is written (to $TINYMONO_SCREENSHOT if set, for a report).

Chromium is Debian's `chromium` package; where it is missing, the set-up installs it with apt-get when it
can (as root, apt-get present), and the tests are skipped, with the reason, when it cannot.
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tinymono.browser import write_browser

NEEDLE = "needle-in-the-examples"


def _find_chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium():
    path = _find_chromium()
    if path is None:
        if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
            pytest.skip("no chromium, and apt-get cannot install it here (needs root and apt-get): "
                        "apt-get install chromium")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "chromium"]):
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                                      timeout=1200)
            except subprocess.TimeoutExpired:  # a mirror that does not answer is the network's failure, not ours
                pytest.skip(f"{' '.join(cmd)} took over 20 minutes")
            if cmd[1] == "install" and done.returncode == 0:
                break
        path = _find_chromium()
        if path is None:
            pytest.skip(f"apt-get could not install chromium: {(done.stderr or done.stdout)[-300:]}")
    return path


def _run(chromium, tmp_path, *args):
    """Chromium headless, its own profile, every network request sent to a dead proxy."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=http://127.0.0.1:9",
           "--proxy-bypass-list=<-loopback>", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _example(text, centre, weights=None):
    """An example card entry from text split into characters (as text.byte_pieces gives them)."""
    pieces = list(text) if isinstance(text, str) else text
    weights = weights or [0.0] * len(pieces)
    return {"activation": max(weights) or 1.0,
            "pieces": [(p, w, i == centre) for i, (p, w) in enumerate(zip(pieces, weights))]}


def _card(unit, kind, label, r, examples, labels, counts):
    return {"unit": unit, "kind": kind, "density": 0.01 * (unit + 1), "max": 1.0,
            "best": {"label": label, "pearson": r, "specificity": 0.5, "specificity_high": 0.6, "auroc": 0.9},
            "histogram": {"labels": labels, "edges": [i / 8 for i in range(9)], "counts": counts,
                          "zeros": [10] * len(labels)},
            "examples": examples, "logits": {"promoted": [("a", 1.0), ("\u241e", 0.5)], "suppressed": [("b", -1.0)]},
            "quantiles": [{"band": "0-50%", "lo": 0.1, "hi": 0.4, "examples": examples[:1]},
                          {"band": "50-100%", "lo": 0.4, "hi": 1.0, "examples": examples[1:2]}],
            "nearest": [((unit + 1) % 6, 0.8), (99, 0.3)] if kind == "feature" else []}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """Six features and two neurons over four labels; examples mix Arabic with \\xNN escapes and the separator,
    and one holds a searchable needle."""
    folder = tmp_path_factory.mktemp("chromium-page")
    labels = ["python", "english", "arabic", "dna"]
    arabic = ["x", "=", " ", "\u0639", "\u0631", "\\xd8", "\u0628", "\u064a", " ", "\u241e", "\\xff", "1", "2"]
    cards = []
    for u in range(6):
        label = labels[u % 4]
        counts = [[(u + k) % 3 + (5 if k == u % 4 else 0) for _ in range(8)] for k in range(4)]
        examples = [_example(arabic, centre=5, weights=[0.1 * (i % 4) for i in range(len(arabic))]),
                    _example(f"def f(x): return {NEEDLE}" if u == 4 else "print('hello world')", centre=3)]
        cards.append(_card(u, "feature", label, None if u == 3 else 0.2 + 0.1 * u, examples, labels, counts))
    for n, label in ((0, "arabic"), (1, "python")):
        cards.append(_card(n, "neuron", label, 0.15, [_example("abc", centre=1)], labels,
                           [[1] * 8, [2] * 8, [3] * 8, [0] * 8]))
    path = write_browser(folder / "features.html", cards, title="chromium test page")
    return path, cards


TEST_SCRIPT = """<script>(function(){
const R={};const rows=()=>[...document.querySelectorAll('#index tbody tr')];
const visible=()=>rows().filter(r=>r.style.display!=='none').map(r=>r.dataset.id);
const set=(id,v)=>{const e=document.getElementById(id);e.value=v;e.dispatchEvent(new Event('input'));};
R.n_rows=rows().length;
const th=document.querySelectorAll('#index thead th')[4];
th.click();R.sorted_first=rows().map(r=>parseFloat(r.cells[4].dataset.v));
th.click();R.sorted_second=rows().map(r=>parseFloat(r.cells[4].dataset.v));
set('flabel','arab');R.filter_label=visible();
R.sections_shown=[...document.querySelectorAll('section')].filter(s=>s.style.display!=='none').map(s=>s.id);
set('flabel','');set('q','f3');R.search_id=visible();set('q','n1');R.search_neuron=visible();
set('q','2');R.search_number=visible();set('q','NEEDLE');R.search_text=visible();
R.shown_text=document.getElementById('shown').textContent;set('q','');R.after_clear=visible().length;
R.broken_links=[...document.querySelectorAll('a[href^="#"]')].map(a=>a.getAttribute('href').slice(1))
 .filter(id=>!document.getElementById(id));
const fills={};document.querySelectorAll('path[data-label]').forEach(p=>{
 (fills[p.dataset.label]=fills[p.dataset.label]||[]).push(p.getAttribute('fill'))});
R.fills=Object.fromEntries(Object.entries(fills).map(([k,v])=>[k,[...new Set(v)]]));
R.keys=document.querySelectorAll('.key').length;
const order=ex=>{const xs=[...ex.children].map(s=>s.getBoundingClientRect().left);
 for(let j=1;j<xs.length;j++)if(xs[j]<xs[j-1]-0.5)return j;return -1};
R.order_violations=[...document.querySelectorAll('.ex')].map(order).filter(j=>j>=0).length;
R.examples=document.querySelectorAll('.ex').length;
const control=document.querySelector('.ex').cloneNode(true);control.style.unicodeBidi='normal';
control.querySelectorAll('span').forEach(s=>s.style.unicodeBidi='normal');document.body.appendChild(control);
R.control_violation=order(control);control.remove();
R.resources=performance.getEntriesByType('resource').map(e=>e.name);R.errors=window.__errors;
const pre=document.createElement('pre');pre.id='results';pre.textContent=JSON.stringify(R);
document.body.appendChild(pre);})();</script>""".replace("NEEDLE", NEEDLE)

ERROR_HOOK = ("<script>window.__errors=[];window.addEventListener('error',e=>window.__errors.push(String(e.message)));"
              "const __ce=console.error;console.error=(...a)=>{window.__errors.push(a.join(' '));__ce(...a)};</script>")


@pytest.fixture(scope="module")
def results(chromium, page, tmp_path_factory):
    """The page with an error hook first and the test script last, run in Chromium -> what it measured."""
    folder = tmp_path_factory.mktemp("chromium-run")
    text = page[0].read_text(encoding="utf-8")
    probe = folder / "probe.html"
    probe.write_text(text.replace("<head>", "<head>" + ERROR_HOOK, 1).replace("</body>", TEST_SCRIPT + "</body>", 1),
                     encoding="utf-8")
    done = _run(chromium, folder, "--virtual-time-budget=5000", "--window-size=1280,1000", "--dump-dom",
                probe.as_uri())
    found = re.search(r'<pre id="results">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the test script did not run: exit {done.returncode}\n{done.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(found.group(1)))


def test_loads_without_network_and_without_errors(results):
    assert results["resources"] == [], f"the page fetched: {results['resources']}"
    assert results["errors"] == [], f"console errors: {results['errors']}"
    assert results["n_rows"] == 8 and results["after_clear"] == 8


def test_sorting_by_a_column_both_ways(results):
    """One card has no score ('-' on the page, NaN to parseFloat, which JSON gives as None): it sorts as the
    lowest value, last going down and first going up, and the other rows stay in order."""
    first, second = results["sorted_first"], results["sorted_second"]
    low = lambda v: float("-inf") if v is None else v  # noqa: E731
    assert first[-1] is None and second[0] is None, (first, second)
    assert [low(v) for v in first] == sorted(map(low, first), reverse=True), first
    assert [low(v) for v in second] == sorted(map(low, second)), second
    assert first != second, "the second click must reverse the order"


def test_filter_by_label_and_search_by_id_and_text(results):
    assert sorted(results["filter_label"]) == ["f2", "n0"], "the label filter keeps the arabic feature and neuron"
    assert sorted(results["sections_shown"]) == ["f2", "n0"], "and hides the other cards"
    assert results["search_id"] == ["f3"] and results["search_neuron"] == ["n1"]
    assert sorted(results["search_number"]) == ["f2"], "a bare number finds the unit of that number"
    assert results["search_text"] == ["f4"] and results["shown_text"] == "1 shown"


def test_links_land_and_each_label_keeps_one_colour(results):
    assert results["broken_links"] == [], f"links to nowhere: {results['broken_links']}"
    assert results["keys"] == 1, "one colour key for the page, not one per card"
    assert set(results["fills"]) == {"python", "english", "arabic", "dna"}
    assert all(len(fills) == 1 for fills in results["fills"].values()), f"a label changed colour: {results['fills']}"
    assert len({f[0] for f in results["fills"].values()}) == 4, "two labels share a colour"


def test_right_to_left_text_keeps_byte_order(results):
    assert results["examples"] > 0 and results["order_violations"] == 0, \
        f"{results['order_violations']} examples show their pieces out of byte order"
    assert results["control_violation"] >= 0, \
        "without isolation the same example must come out reordered (else this test could not fail)"


def test_screenshot(chromium, page, tmp_path):
    out = Path(os.environ.get("TINYMONO_SCREENSHOT") or tmp_path / "browser.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _run(chromium, tmp_path, f"--screenshot={out}", "--window-size=1280,1600", page[0].as_uri())
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000, \
        f"no screenshot: exit {done.returncode}\n{done.stderr[-1500:]}"
    print(f"screenshot: {out}")
