"""Where things live (issue 12), checked by scanning the source, so that a violation fails here instead of
spreading through the package:

* SQL only in store/: a query written elsewhere spreads the schema across the package.
* The package's parts import each other in one direction only. Each subpackage (engine/, modelfiles/, ...) and
  each top-level module (config.py, runner.py, ...) is one node; every import is an edge, wherever it is
  written: at module level, inside a function or method (the "lazy" imports that hid the old cycles), under
  ``if TYPE_CHECKING``, relative or absolute. (a) The whole graph has no cycle: not only among engine,
  modelfiles, prompting, tasks, store, metrics and analysis, which issue 12 names, but among all nodes, because
  a cycle through config.py or runner.py (engine -> config -> engine, analysis -> runner -> analysis, both
  found on the way) ties the packages on it together just the same. None is left. (b) ``MAY_IMPORT``: what
  each layer may import; a new dependency is a line added there on purpose, an upward import fails. Issue 21
  gave the top rooms rows too: the read side (analysis/, and report/ above it) never reaches the runner or an
  engine's loader, the runner never the commands, and only ``cli`` (``TOP``, with the entry point) may import
  anything below it; so a command stays a translation of options into calls of the rooms below. (c) The same
  holds module by module: no two modules of the package import each other, not even within one subpackage
  (the tasks/ circle base -> datafiles -> base, base -> prompts -> base was the last). Not seen:
  ``importlib.import_module`` with a computed name (only tasks/registry.py uses it, for its own modules).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "medbench_local"
SQL = re.compile(r"^\s*(select\b.*\bfrom\b|insert (or \w+ )?into\b|update \w+ set\b|delete from\b|"
                 r"create (unique )?(table|view|index)\b|drop (table|view|index)\b|alter table\b|pragma \w+)",
                 re.IGNORECASE | re.DOTALL)
DATABASE_CALLS = {"execute", "executemany", "executescript", "query"}


def _offences(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
            found.append(f"{node.lineno}: SQL text {node.value[:40]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in DATABASE_CALLS and isinstance(node.func.value, (ast.Attribute, ast.Name)) \
                and getattr(node.func.value, "attr", getattr(node.func.value, "id", "")) in ("conn", "db"):
            found.append(f"{node.lineno}: database call .{node.func.attr}()")
    return found


def test_sql_runs_only_in_store() -> None:
    offending = [f"{path.relative_to(PACKAGE)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
                 if path.relative_to(PACKAGE).parts[0] != "store" for line in _offences(path)]
    assert not offending, "\n".join(offending)


def test_the_scan_finds_sql_where_it_is() -> None:
    """The scan is not vacuous: it finds the queries in store/ itself."""
    assert any(_offences(path) for path in (PACKAGE / "store").glob("*.py"))


# --------------------------------------------------------------------------------------------- import layering

INIT = "medbench_local"  # the package's own __init__.py (which offers the Python API: top of the house)

#: node -> the nodes it may import. Read bottom-up: prompting knows only errors; config validates chat
#: templates with prompting; modelfiles checks files against config and renders a probe prompt; engine runs
#: what modelfiles checked; tasks build prompts and score with metrics; store records tasks' results; analysis
#: reads the store (the read side's one room: pairing, paired statistics, published numbers, disagreements,
#: export rows, reproduce); report presents what analysis computed; runner assembles and runs evaluations;
#: airgap moves files to an offline machine; contamination (beside the runner, whose model checks it reuses)
#: probes a pair's models on a task's own text; cli (TOP) turns options into calls of any of them.
MAY_IMPORT: dict[str, frozenset[str]] = {name: frozenset(allowed) for name, allowed in {
    "version": (),
    "errors": (),
    "data": (),  # the shipped CSVs' package
    "units": (),
    "signals": (),
    "paths": ("errors", "gates"),
    "gates": ("errors",),
    "item_pool": ("errors", "gates"),
    "prompting": ("errors", "gates"),
    "metrics": ("errors", "gates"),
    "config": ("errors", "gates", "paths", "prompting"),
    "modelfiles": ("errors", "gates", "paths", "config", "prompting"),
    "engine": ("errors", "gates", "config", "prompting", "modelfiles"),
    "tasks": ("errors", "paths", "gates", "units", "prompting", "engine", "metrics"),
    "store": ("errors", "gates", "engine", "tasks"),
    "provenance": ("version", "gates", "tasks"),
    "retrieval": ("version", "errors", "gates", "prompting", "store"),  # issue 23: the index reads and writes via store
    "analysis": ("version", "errors", "gates", "paths", "config", "engine", "metrics", "tasks", "store", "provenance",
                 "retrieval"),
    "report": ("version", "gates", "tasks", "store", "analysis"),
    "runner": ("version", "errors", "gates", "paths", "signals", "item_pool", "prompting", "config", "modelfiles",
               "engine", "tasks", "store", "provenance", "analysis", "retrieval"),
    "contamination": ("version", "errors", "gates", "paths", "config", "modelfiles", "engine", "tasks", "store",
                      "analysis", "runner"),
    "airgap": ("version", "errors", "gates", "units", "paths", "prompting", "metrics", "config", "modelfiles",
               "engine", "tasks"),
}.items()}
#: the top: the entry point, the commands, the Python API they call (api.py) and the package's ``__init__``,
#: which offers that API (``medbench_local.evaluate``); nothing below imports them.
TOP = frozenset({"__main__", "cli", "api", INIT})
READ_SIDE = ("analysis", "report")
ISSUE_12 = ("engine", "modelfiles", "prompting", "tasks", "store", "metrics", "analysis")


def _node(package_dir: Path, dotted: str) -> str | None:
    """The node a dotted module name inside the package belongs to; None outside the package."""
    parts = dotted.split(".")
    if parts[0] != package_dir.name:
        return None
    if len(parts) == 1:
        return INIT
    top = package_dir / parts[1]
    return parts[1] if top.is_dir() or top.with_suffix(".py").is_file() else INIT  # else a name in __init__


def _imported_modules(node: ast.Import | ast.ImportFrom, package: str) -> Iterator[str]:
    """Dotted names an import statement reaches; ``package`` is the importing module's package."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.level:
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        stem = ".".join(base + ([node.module] if node.module else []))
    else:
        stem = node.module or ""
    # ``from pkg import name``: the submodule pkg.name where it is one, else a name in pkg (both map to the node
    # of the first component below the package, see _node)
    yield from (f"{stem}.{alias.name}" for alias in node.names)


def import_graph(package_dir: Path) -> dict[str, dict[str, list[str]]]:
    """node -> imported node -> where ("path:line"), for every import anywhere in the package's source."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = (package_dir.name, *path.relative_to(package_dir).with_suffix("").parts)
        package = ".".join(parts[:-1])
        source = parts[1] if len(parts) > 2 or parts[-1] != "__init__" else INIT
        edges = graph.setdefault(source, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = {_node(package_dir, name) for name in _imported_modules(node, package)}
            for target in sorted(targets - {None, source}):  # type: ignore[type-var]
                edges.setdefault(target, []).append(f"{path.relative_to(package_dir.parent)}:{node.lineno}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _describe(graph: dict[str, dict[str, list[str]]], component: list[str]) -> str:
    edges = [f"  {a} -> {b}: {', '.join(graph[a][b])}" for a in component for b in sorted(graph.get(a, {}))
             if b in component]
    return f"cycle among {', '.join(component)}:\n" + "\n".join(edges)


def test_the_packages_import_each_other_in_one_direction_only() -> None:
    graph = import_graph(PACKAGE)
    found = cycles(graph)
    assert not found, "\n".join(_describe(graph, component) for component in found)


def against_the_table(graph: dict[str, dict[str, list[str]]]) -> list[str]:
    """Every import of ``graph`` that its source's MAY_IMPORT row does not allow, as "source -> target: where"."""
    return [f"{source} -> {target}: {', '.join(where)}" for source, allowed in MAY_IMPORT.items()
            for target, where in sorted(graph.get(source, {}).items()) if target not in allowed]


def test_each_lower_layer_imports_only_what_its_row_allows() -> None:
    graph = import_graph(PACKAGE)
    unplaced = sorted(set(graph) - set(MAY_IMPORT) - TOP)
    assert not unplaced, f"new parts of the package, give them a row in MAY_IMPORT (or add them to TOP): {unplaced}"
    offending = against_the_table(graph)
    assert not offending, "imports against the layering (tests/test_layering.py MAY_IMPORT):\n" + "\n".join(offending)


@pytest.mark.parametrize("source, target", [
    ("analysis", "runner"), ("analysis", "cli"), ("report", "runner"), ("report", "engine"), ("runner", "cli"),
    ("runner", "report"), ("store", "analysis"), ("tasks", "store"), ("metrics", "tasks"), ("airgap", "store"),
])
def test_the_table_refuses_an_import_against_the_rooms(source: str, target: str) -> None:
    """Not vacuous: the real package's graph with one import added against the rooms fails the check."""
    graph = import_graph(PACKAGE)
    broken = {**graph, source: {**graph.get(source, {}), target: ["medbench_local/added.py:1"]}}
    assert f"{source} -> {target}: medbench_local/added.py:1" in against_the_table(broken)


def test_the_table_itself_has_one_direction_and_keeps_the_issue_12_rules() -> None:
    """The allowed directions cannot themselves form a cycle, every issue-12 package has a row, and the rules
    the issue names hold in the table: nothing below the engines imports them."""
    table = {source: {target: ["MAY_IMPORT"] for target in allowed} for source, allowed in MAY_IMPORT.items()}
    assert not cycles(table)
    assert set(ISSUE_12) <= set(MAY_IMPORT)
    assert set().union(*MAY_IMPORT.values()) <= set(MAY_IMPORT), "a row allows a part that has no row itself"
    for lower in ("prompting", "modelfiles", "config", "metrics"):
        assert "engine" not in MAY_IMPORT[lower] and not MAY_IMPORT[lower] & TOP, lower
    assert "tasks" not in MAY_IMPORT["metrics"] and "analysis" not in MAY_IMPORT["store"]
    for reader in READ_SIDE:  # issue 21: the read side never runs a model nor reaches a command
        assert not MAY_IMPORT[reader] & ({"runner", "modelfiles", "signals", "item_pool", "airgap"} | TOP), reader
    assert not MAY_IMPORT["runner"] & ({"report"} | TOP)


# --------------------------------------------------------------------------------- module by module (issue 21)


def _module_of(package_dir: Path, dotted: str) -> str | None:
    """The module of the package a dotted name reaches (``pkg.a.b`` -> ``pkg.a.b`` when it is a module or
    package, else the longest prefix that is: ``from .x import name``); None outside the package."""
    parts = dotted.split(".")
    if parts[0] != package_dir.name:
        return None
    while len(parts) > 1:
        path = package_dir.parent.joinpath(*parts)
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return parts[0]


def module_graph(package_dir: Path) -> dict[str, dict[str, list[str]]]:
    """module -> imported module -> where ("path:line"): every import anywhere, as ``import_graph`` counts them, at
    the granularity of modules (a package's ``__init__`` is the package's own name)."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = (package_dir.name, *path.relative_to(package_dir).with_suffix("").parts)
        source = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = ".".join(parts[:-1])
        edges = graph.setdefault(source, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in {_module_of(package_dir, name) for name in _imported_modules(node, package)}:
                    if target is not None and target != source:
                        edges.setdefault(target, []).append(f"{path.relative_to(package_dir.parent)}:{node.lineno}")
    return graph


def test_no_two_modules_import_each_other() -> None:
    """Not even inside one subpackage: the tasks/ circle (base -> datafiles -> base, base -> prompts -> base) is
    gone since the values that flow between a task's stages live in tasks/values.py, below all three."""
    graph = module_graph(PACKAGE)
    found = cycles(graph)
    assert not found, "\n".join(_describe(graph, component) for component in found)


def test_the_module_scan_finds_a_circle_inside_a_subpackage(tmp_path: Path) -> None:
    """The shape tasks/ had: two modules of one package importing each other, one of them lazily."""
    package = _fake_package(tmp_path, "engine/kv.py", "from .base import Prompt\n")
    (package / "engine" / "base.py").write_text("def plan():\n    from .kv import reuse\n")
    graph = module_graph(package)
    assert cycles(graph) == [["medbench_local.engine.base", "medbench_local.engine.kv"]]
    assert "medbench_local/engine/base.py:2" in _describe(graph, cycles(graph)[0])
    assert not cycles(import_graph(package))  # invisible to the package-level graph: why this test exists


# Every way an import can be written, and the node it must be counted for. The importer is
# medbench_local/modelfiles/check.py unless the case says otherwise (a top-level module: runner.py).
IMPORT_STYLES = [
    ("module level, relative", "modelfiles/check.py", "from ..engine.base import Prompt\n", "engine"),
    ("module level, absolute", "modelfiles/check.py", "import medbench_local.engine.runtime\n", "engine"),
    ("absolute from-import", "modelfiles/check.py", "from medbench_local.engine import runtime\n", "engine"),
    ("submodule named in a package from-import", "modelfiles/check.py", "from .. import engine\n", "engine"),
    ("submodule named in an absolute from-import", "modelfiles/check.py", "from medbench_local import airgap\n",
     "airgap"),
    ("a name from the package's __init__", "modelfiles/check.py", "from .. import __version__\n", INIT),
    ("lazy, inside a function", "modelfiles/check.py",
     "def check():\n    from ..airgap.doctor import gpu_memory\n    return gpu_memory\n", "airgap"),
    ("lazy, inside a method", "modelfiles/check.py",
     "class C:\n    def m(self):\n        import medbench_local.engine.llama as llama\n", "engine"),
    ("typing only", "modelfiles/check.py",
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..engine.base import Prompt\n", "engine"),
    ("inside try", "modelfiles/check.py", "try:\n    from ..engine import kv\nexcept ImportError:\n    pass\n",
     "engine"),
    ("deeper relative level", "modelfiles/sub/deep.py", "from ...engine import kv\n", "engine"),
    ("top-level module, relative", "runner.py", "from .engine.base import Prompt\n", "engine"),
    ("top-level module, sibling module", "runner.py", "from . import config\n", "config"),
    ("package __init__", "modelfiles/__init__.py", "from ..config import ModelSpec\n", "config"),
]


def _fake_package(root: Path, importer: str, code: str) -> Path:
    package = root / "medbench_local"
    for folder in ("engine", "airgap", "modelfiles/sub"):
        (package / folder).mkdir(parents=True, exist_ok=True)
        (package / folder / "__init__.py").touch()
    for module in ("__init__.py", "config.py", "runner.py", "engine/base.py", "engine/kv.py", "engine/llama.py",
                   "engine/runtime.py", "airgap/doctor.py"):
        (package / module).touch()
    (package / importer).write_text(code)
    return package


@pytest.mark.parametrize("importer, code, expected", [case[1:] for case in IMPORT_STYLES],
                         ids=[case[0] for case in IMPORT_STYLES])
def test_the_scan_counts_every_way_of_writing_an_import(tmp_path: Path, importer: str, code: str,
                                                        expected: str) -> None:
    graph = import_graph(_fake_package(tmp_path, importer, code))
    source = importer.split("/")[0].removesuffix(".py")
    assert set(graph[source]) == {expected}, graph[source]


def test_a_cycle_closed_by_a_lazy_import_is_found(tmp_path: Path) -> None:
    """The shape issue 12 had: engine imports modelfiles at module level, modelfiles imports engine inside a
    function (so Python never complained at import time)."""
    package = _fake_package(tmp_path, "modelfiles/check.py",
                            "def check():\n    from ..engine.runtime import build_info\n")
    (package / "engine" / "llama.py").write_text("from ..modelfiles.check import check\n")
    graph = import_graph(package)
    assert cycles(graph) == [["engine", "modelfiles"]]
    assert "modelfiles/check.py:2" in _describe(graph, ["engine", "modelfiles"])


def test_the_scan_sees_the_real_package() -> None:
    """Not vacuous on the real source: the known downward edges are there."""
    graph = import_graph(PACKAGE)
    assert {"modelfiles", "prompting"} <= set(graph["engine"]) and "prompting" in graph["modelfiles"]
    assert {"engine", "metrics", "prompting"} <= set(graph["tasks"]) and "store" in graph["analysis"]
