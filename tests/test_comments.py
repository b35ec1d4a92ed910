"""Comments and docstrings say what the code is, not how it got there: git keeps the history.

Every comment (``#``) and docstring (any string statement: module, class, function and
attribute docstrings) of the segshift package, its packaged YAML and the tests is read as text
(nothing is imported but ``segshift`` itself, to find the package) and searched for
:data:`HISTORY`: issue numbers and phrases that narrate a change. String values the code uses
(messages, help texts) are not read. A match fails the test with its file and line; rewrite it
to say what the code does or accepts (an older file format it reads is "a checkpoint without
``monitor``", not "checkpoints from before the monitor was kept").
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import segshift

SRC = Path(segshift.__file__).resolve().parent
TESTS = Path(__file__).resolve().parent

HISTORY = re.compile(
    r"\bissues? ?#?\d+"  # issue 19, issues 15, issue #4
    r"|\bas before\b"
    r"|\bformerly\b|\bformer name\b"
    r"|\bno longer\b"
    r"|\bused to (?:be|fail|have)\b"
    r"|\brenamed from\b|\bits old name\b"
    r"|\b(?:earlier|older|previous) versions?\b"
    r"|\bfrom before (?:it|the|this|that|\w+ (?:was|were|had))\b"
    r"|\bprevious (?:formulation|behaviou?r|implementation|code)\b"
    r"|\bold code\b"
    r"|\(new\)",
    re.IGNORECASE,
)
"""History narration: issue numbers, "as before", "formerly", "no longer", "used to be", "renamed
from", "earlier versions", "(new)"... Each alternative is narrow enough that no sentence
describing what the code does today matches it ("the seed used to split" does not)."""

PENDING: frozenset[tuple[str, str]] = frozenset(
    {
        ("src/segshift/inference/predictor.py", "former name"),
    }
)
"""Matches still to be rewritten: (file, text of the line it is on). Remove an entry with its
line; one whose line no longer matches fails the test, so the list never hides a new one."""


def _comments_and_docstrings(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every comment and docstring of a Python file, or every comment of a YAML file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".yaml":
        for n, line in enumerate(text.splitlines(), start=1):
            m = re.search(r"(?:^|\s)#(.*)$", line)
            if m:
                yield n, m.group(1)
        return
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for k, line in enumerate(node.value.value.splitlines()):
                yield node.lineno + k, line


def history(root: Path, name: str) -> list[tuple[str, int, str]]:
    """``(file, line, matched text)`` for every :data:`HISTORY` match under ``root``, files named ``name/...``."""
    out = []
    for path in sorted([*root.rglob("*.py"), *root.rglob("*.yaml")]):
        if path.resolve() == Path(__file__).resolve():
            continue
        rel = f"{name}/{path.relative_to(root).as_posix()}"
        for line, text in _comments_and_docstrings(path):
            if HISTORY.search(text):
                out.append((rel, line, text.strip()))
    return out


def test_no_comment_or_docstring_narrates_history():
    found = history(SRC, "src/segshift") + history(TESTS, "tests")
    new = [f"{f}:{n}: {text}" for f, n, text in found if not any(f == pf and p in text for pf, p in PENDING)]
    assert not new, "comments and docstrings that narrate history (say what the code is instead):\n  " + "\n  ".join(new)
    gone = sorted(p for p in PENDING if not any(f == p[0] and p[1] in text for f, _, text in found))
    assert not gone, f"rewritten, remove from PENDING: {gone}"


def test_the_phrases_match_narration_and_not_descriptions():
    narration = [
        "``translate`` is its former name.",
        "# {} in checkpoints from before it was kept",
        "source-only 0.784 before issue 15 (one pass per domain)",
        "Suites without ``inits:`` train every row from scratch, as before.",
        "the adanet row used to fail at its first step",
        "acc_<D>: its name in runs of earlier versions",
        "blood (no longer the brightest tissue)",
        "# runs from before identities were recorded: paths only",
    ]
    description = [
        "the seed used to split the cases",
        "the previous checkpoint is kept until the new one is written",
        "a file older than its data is drawn again",
        "a new GAN loss is one entry there",
        "the staging folder it was renamed to",
        "stops the run before the first validation",
        "the version 2 layout of results.json",
    ]
    assert all(HISTORY.search(s) for s in narration), [s for s in narration if not HISTORY.search(s)]
    assert not any(HISTORY.search(s) for s in description), [s for s in description if HISTORY.search(s)]
