"""Where things live: SQL only in store/ (issue 12). A scan of the source, so a new query written elsewhere
fails here instead of spreading the schema across the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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
