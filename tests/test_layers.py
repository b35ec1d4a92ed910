"""The package's layers import only downward: a check over the import graph of the segshift package.

Every module is parsed (nothing is imported), and each import of ``segshift.X...`` (at module
level, inside a function or under ``TYPE_CHECKING`` alike) is mapped to the top-level packages of
the importer and the imported. An import from a higher layer fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import segshift

SRC = Path(segshift.__file__).resolve().parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "__main__"),
    ("report",),
    ("bench",),
    ("perf",),
    ("inference",),
    ("metrics",),
    ("engine",),
    ("methods",),
    ("data",),
    ("transforms",),
    ("nets", "losses"),
    ("utils", "errors", "__init__", "configs"),
)
"""Highest first: a module may import from its own layer and from the layers below it.
``__main__`` is the CLI's entry point; ``perf`` (speed and profiling) times what inference and the engine run;
``__init__`` (the version) and ``configs`` (packaged YAML) sit at the bottom."""

RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}

KNOWN_UPWARD: frozenset[tuple[str, str]] = frozenset()
"""Upward imports that exist today and are still to be removed: (importer, imported module).
Empty this list as they go; any upward import not in it fails the test."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def _layer(module: str) -> str:
    """The layer of ``segshift.X[.y...]``: ``X``; ``__init__`` for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(name: str) -> bool:
    return (SRC / name).is_dir() or (SRC / f"{name}.py").is_file()


def _imports(path: Path, module: str) -> set[str]:
    """The ``segshift`` modules (or names in them) that ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name == "segshift" or a.name.startswith("segshift."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == "segshift":  # `from segshift import nets, __version__`: a module, or a name of the package
                out.update(f"segshift.{a.name}" if _is_module(a.name) else "segshift" for a in node.names)
            elif target.startswith("segshift."):
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    """Every module of src/segshift and the segshift modules it imports."""
    graph = {}
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        graph[module] = _imports(path, module)
    return graph


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs where the imported module lies in a higher layer than the importer."""
    return {(src, dst) for src, targets in graph.items() for dst in targets if RANK[_layer(dst)] < RANK[_layer(src)]}


def test_every_package_has_a_layer():
    packages = {_layer(m) for m in import_graph()}
    assert packages <= set(RANK), f"packages without a layer in LAYERS: {sorted(packages - set(RANK))}"


def test_no_new_upward_import():
    found = upward_imports(import_graph())
    new = sorted(found - KNOWN_UPWARD)
    order = " -> ".join(", ".join(names) for names in LAYERS)
    assert not new, (
        f"imports from a higher layer (order: {order}):\n  "
        + "\n  ".join(f"{a} imports {b}" for a, b in new)
        + "\nknown, still to be removed:\n  "
        + "\n  ".join(f"{a} imports {b}" for a, b in sorted(KNOWN_UPWARD))
    )


def test_known_upward_imports_still_exist():
    # a removed upward import must leave KNOWN_UPWARD too, so the list never hides a new one
    gone = sorted(KNOWN_UPWARD - upward_imports(import_graph()))
    assert not gone, f"no longer imported, remove from KNOWN_UPWARD: {gone}"


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from segshift.report.figures import f\n", "segshift.bench.demo", {"segshift.report.figures"}),
        ("def f():\n    import segshift.engine.trainer\n", "segshift.methods.x", {"segshift.engine.trainer"}),
        ("from segshift import nets, errors, __version__\n", "segshift.data.x", {"segshift.nets", "segshift.errors", "segshift"}),
        ("if TYPE_CHECKING:\n    from segshift.cli.main import app\n", "segshift.utils.x", {"segshift.cli.main"}),
        ("import numpy\nfrom torch import nn\n", "segshift.nets.x", set()),
    ],
)
def test_imports_are_found_wherever_they_are(tmp_path, source, module, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _imports(path, module) == expected


def test_an_upward_import_is_reported():
    graph = {"segshift.transforms.preprocess": {"segshift.data.volume"}, "segshift.data.volume": {"segshift.errors"}}
    assert upward_imports(graph) == {("segshift.transforms.preprocess", "segshift.data.volume")}
