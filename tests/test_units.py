"""Counts and sizes as users read them (medbench_local/units.py), and that the code uses them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medbench_local.units import GiB, KiB, MiB, count, human_size, plural

PACKAGE = Path(__file__).resolve().parent.parent / "medbench_local"


@pytest.mark.parametrize(("number", "noun", "expected"), [
    (0, "item", "0 items"), (1, "item", "1 item"), (2, "item", "2 items"), (1, "error", "1 error"),
    (3, "error", "3 errors"), (1, "entry", "1 entry"), (2, "entry", "2 entries"), (1234, "row", "1,234 rows"),
    (1, "byte", "1 byte")])
def test_count_agrees_in_number(number: int, noun: str, expected: str) -> None:
    assert count(number, noun) == expected


@given(st.integers(min_value=0, max_value=10**6))
def test_only_one_is_singular(number: int) -> None:
    assert (plural(number, "item") == "item") == (number == 1)


@pytest.mark.parametrize(("size", "expected"), [
    (0, "0 bytes"), (1, "1 byte"), (1023, "1,023 bytes"), (KiB, "1.0 KiB"), (int(1.5 * MiB), "1.5 MiB"),
    (GiB, "1.00 GiB"), (5 * GiB + GiB // 2, "5.50 GiB")])
def test_sizes_are_binary_units(size: int, expected: str) -> None:
    assert human_size(size) == expected


# Formatting a size in decimal units (MB/GB/KB, or dividing by 1e6/1e9) is the other unit system.
DECIMAL_UNITS = re.compile(r"\d\s?(?:KB|MB|GB|TB)\b|\}\s?(?:KB|MB|GB|TB)\b")
ALLOWED: set[str] = set()


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # f"{x / 1e6:,.0f} MB": the unit follows a formatted value
            text = "".join("{}" if isinstance(v, ast.FormattedValue) else str(v.value) for v in node.values)
            found.append((node.lineno, text))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value in (1e6, 1e9, 1e12):
            found.append((node.lineno, "} MB (division by a power of 1000)"))
    return found


def test_every_size_shown_uses_binary_units() -> None:
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name in ALLOWED:
            continue
        for line, text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            if DECIMAL_UNITS.search(text):
                offending.append(f"{name}:{line}: {text[:60]}")
    assert not offending, "\n".join(offending)
