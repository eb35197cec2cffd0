"""Untrusted text on the terminal: printed literally, never interpreted.

Model outputs, item ids, pair and model names read from a database, and file content quoted in error messages
come from outside. Printed as is they could (1) be taken for rich markup (``[/INST]`` is a closing tag: rich
raises, ``[bold]`` vanishes and restyles the rest), (2) carry terminal escape sequences (``ESC]52`` writes the
clipboard, ``ESC[2J`` clears the screen, a carriage return overprints a line), or (3) reorder what is shown
with bidirectional-override characters. Every such text goes through one of two functions:

* :func:`plain` for text printed without markup (``click.echo``, error lines, Markdown): control and bidi
  characters become visible escapes (``\\x1b``, ``\\u202e``); newlines and tabs stay unless ``one_line``.
* :func:`literal` for text placed inside rich markup: :func:`plain`, then rich's markup escaping, so every
  ``[`` and ``]`` prints as itself.
"""

from __future__ import annotations

import unicodedata

from rich.markup import escape as _escape_markup

# Invisible characters that reorder or hide the text around them (the "Trojan Source" set).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _visible(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def plain(text: object, *, one_line: bool = False) -> str:
    """``text`` with control characters (ESC, CR, BEL, DEL, C1, ...), bidi controls and lone surrogates shown
    as escapes."""
    value = str(text)
    keep = "\t" if one_line else "\n\t"
    if value.isprintable() and not _BIDI_CONTROLS.intersection(value):
        return value  # the common case, fast
    return "".join(
        char if char in keep or (unicodedata.category(char) not in ("Cc", "Cs") and char not in _BIDI_CONTROLS)
        else _visible(char)
        for char in value)


def literal(text: object, *, one_line: bool = False) -> str:
    """``text`` ready to be placed inside a rich markup string: shown exactly, never styled or swallowed."""
    return _escape_markup(plain(text, one_line=one_line))
