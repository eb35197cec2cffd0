"""How counts and sizes are written in everything a user reads: one place, so that every command says "1 item"
(not "1 items") and every size is in binary units (KiB/MiB/GiB, as llama.cpp and ``doctor`` report memory)."""

from __future__ import annotations

KiB = 1024
MiB = 1024 ** 2
GiB = 1024 ** 3

_IRREGULAR = {"entry": "entries", "this": "these", "was": "were", "is": "are", "has": "have"}


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``noun`` as it agrees with ``count``: 'item' for 1, else 'items' (``many``, or a known irregular form)."""
    if count == 1:
        return noun
    return many or _IRREGULAR.get(noun) or noun + "s"


def count(number: int, noun: str, many: str | None = None) -> str:
    """'1 item', '0 items', '1,234 items'."""
    return f"{number:,} {plural(number, noun, many)}"


def human_size(size: int | float) -> str:
    """A size in binary units: '512 bytes', '3.0 KiB', '135.2 MiB', '4.92 GiB' (never MB/GB, which are 1000-based)."""
    if size >= GiB:
        return f"{size / GiB:,.2f} GiB"
    if size >= MiB:
        return f"{size / MiB:,.1f} MiB"
    if size >= KiB:
        return f"{size / KiB:,.1f} KiB"
    return count(int(size), "byte")
