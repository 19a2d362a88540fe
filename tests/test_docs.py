"""docs/experiments.md is where the lessons, the code and README send a reader for the numbers of past runs:
every section they name must exist, and the index at its top must link every section."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "docs" / "experiments.md"


def _headings():
    return [line.lstrip("#").strip() for line in EXPERIMENTS.read_text().splitlines() if re.match(r"#{2,6} ", line)]


def _references():
    """(file, quoted section name) for every `experiments.md ... "Name"` in the lessons, the package, README and
    the tests; a name may run over a comment's line break."""
    files = [ROOT / "README.md", *sorted((ROOT / "lessons").glob("*.py")), *sorted((ROOT / "tinymono").rglob("*.py")),
             *sorted((ROOT / "tests").glob("*.py"))]
    refs = []
    for path in files:
        if path.name == Path(__file__).name:
            continue
        text = re.sub(r"\s*\n\s*(?:#\s*)?", " ", path.read_text())  # join comment and docstring lines
        refs += [(path.relative_to(ROOT), name) for name in re.findall(r'experiments\.md[^"\n]{0,12}?"([^"]{3,150})"', text)]
    return refs


def github_slug(title, seen):
    """The anchor GitHub gives a heading: lower case, punctuation dropped (not - or _), spaces as hyphens,
    -1, -2, ... on repeats."""
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    return slug if n == 0 else f"{slug}-{n}"


def test_github_slug_rules():
    seen = {}
    assert github_slug("Lesson 10's model B (5 December 2026, seeds 0 and 1)", seen) == \
        "lesson-10s-model-b-5-december-2026-seeds-0-and-1"
    assert github_slug("DNA of order 2: `corpus.dna_order=2` (2.1 GHz)", seen) == "dna-of-order-2-corpusdna_order2-21-ghz"
    assert github_slug("Lesson 10's model B (5 December 2026, seeds 0 and 1)", seen).endswith("-1")


def test_every_named_section_exists():
    refs = _references()
    assert len(refs) >= 8, refs  # the lessons name several; finding none would mean the pattern broke
    headings = [h.lower() for h in _headings()]
    missing = [(str(f), name) for f, name in refs if not any(name.lower() in h for h in headings)]
    assert not missing, f"these name a section docs/experiments.md does not have: {missing}"


def test_index_links_every_section():
    text = EXPERIMENTS.read_text()
    seen, anchors = {}, {}
    for line in text.splitlines():
        if re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip()
            anchors[github_slug(title, seen)] = (line.startswith("## "), title)
    index = text[text.index("## Index"):text.index("\n## ", text.index("## Index") + 1)]
    linked = re.findall(r"\]\(#([^)]+)\)", index)
    assert not [a for a in linked if a not in anchors], "index links to no heading"
    sections = {a for a, (top, title) in anchors.items() if top and title != "Index"}
    assert sections - set(linked) == set(), f"sections missing from the index: {sorted(sections - set(linked))}"
