"""The package's import graph: the layers of docs/architecture.md, and no cycle.

``lint-imports`` (run by scripts/test.sh) checks the layer contract of pyproject.toml;
this test runs it too, so a plain ``pytest`` catches an import that points up, and adds
what a layers contract cannot say: no two modules import each other, even inside a layer
and even lazily or for type checking only.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.processes import REPO

grimp = pytest.importorskip("grimp", reason="import-linter (the test extra) is not installed")


def strongly_connected(graph: object) -> list[list[str]]:
    """Tarjan's algorithm over the graph's modules: every component of more than one
    module is a cycle."""
    modules = sorted(graph.modules)  # type: ignore[attr-defined]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):  # type: ignore[attr-defined]
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = grimp.build_graph("filelayer", include_external_packages=False)
    # The package root re-exports the API (ArchiveStore, FileDataLayer, the errors); the
    # CLI reads its __version__. That edge to the root is the public surface, not a layer.
    for child in sorted(graph.find_children("filelayer") | {"filelayer.cli"}):
        if graph.direct_import_exists(importer=child, imported="filelayer"):
            graph.remove_import(importer=child, imported="filelayer")
    assert strongly_connected(graph) == []


def test_the_layer_contract_holds() -> None:
    pytest.importorskip("importlinter")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; "
            "lint_imports_command(['--no-cache'])",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
