"""The package's import graph has no cycles (imports under ``TYPE_CHECKING`` included): every module can
be read knowing only the modules below it."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import geopatra

PACKAGE = Path(geopatra.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """geopatra module -> the geopatra modules it imports (``from a.b import c`` counts as a.b.c when
    that is a module, else as a.b)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("geopatra"):
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in paths else node.module
                            for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("geopatra")}
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "geopatra.models.sgdml.kernel" in graph["geopatra.models.sgdml.model"]  # the graph is read
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_a_cycle_is_detected() -> None:
    graph = import_graph() | {"geopatra.units": {"geopatra.cli"}}  # cli imports (indirectly) units
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError:
        return
    raise AssertionError("an import cycle went unnoticed")
