"""Blanking: a library module's source with the bodies of some functions replaced by a docstring and
`raise NotImplementedError(...)`.

The module is parsed with `ast` to find each function's body (its first and last line); every other line
of the file, comments included, is copied as it is. So a workspace is always made from the library as it
stands, and the blanked bodies leave no trace in it.
"""
from __future__ import annotations

import ast
import textwrap


def _indent(text, prefix):
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(True))


def blank_body(exercise, docstring, indent):
    """The lines that replace a function's body: the docstring, then the raise."""
    doc = docstring.strip("\n")
    quoted = '"""' + doc.replace('"""', r'\"\"\"') + '"""'
    message = f"exercise {exercise.id}: {exercise.task} ({exercise.function} in {exercise.module}.py)"
    return _indent(quoted, indent) + "\n" + f"{indent}raise NotImplementedError({message!r})\n"


def blank_source(source, exercises, header=""):
    """source: a module's text; exercises: the Exercise entries of top-level functions to blank. Returns
    the text with those functions' bodies replaced, `header` (comment lines) put on top."""
    tree = ast.parse(source)
    defs = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    lines = source.splitlines(True)
    spans = []
    for ex in exercises:
        node = defs.get(ex.function)
        if node is None:
            raise ValueError(f"exercise {ex.id}: no top-level function {ex.function!r} in {ex.module}.py")
        first = node.body[0]
        start = first.lineno - 1  # the body's first line (0-based), the library's docstring included
        if first.lineno == node.lineno:  # a one-line def: "def f(x): return x"
            raise ValueError(f"exercise {ex.id}: {ex.function}'s body shares its line with the def")
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        spans.append((start, node.end_lineno, blank_body(ex, textwrap.dedent(ex.doc), indent)))
    for start, end, text in sorted(spans, reverse=True):  # from the bottom, so earlier line numbers hold
        lines[start:end] = [text]
    return header + "".join(lines)
