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
* :func:`json_text` for JSON printed for programs (``--json``): strict JSON (no ``NaN``/``Infinity``, which
  most parsers refuse: such numbers become ``null``), and inside strings the characters :func:`plain` shows as
  escapes are JSON escapes (``\u202e``, ``\u009b``), so the JSON means the same and shows nothing hidden when
  it reaches a terminal.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

from ..gates.secrets import redact_registered

# Invisible characters that reorder or hide the text around them (the "Trojan Source" set).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _visible(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def plain(text: object, *, one_line: bool = False) -> str:
    """``text`` with control characters (ESC, CR, BEL, DEL, C1, ...), bidi controls and lone surrogates shown
    as escapes, and without any API key this process has read (gates/secrets.py: a server's text can echo it)."""
    value = redact_registered(str(text))
    keep = "\t" if one_line else "\n\t"
    if value.isprintable() and not _BIDI_CONTROLS.intersection(value):
        return value  # the common case, fast
    return "".join(
        char if char in keep or (unicodedata.category(char) not in ("Cc", "Cs") and char not in _BIDI_CONTROLS)
        else _visible(char)
        for char in value)


# rich's markup: a "[" that opens something tag-like (rich.markup's own pattern), and "[" with the backslashes
# before it.
_TAG_LIKE = re.compile(r"\[[a-z#/@][^[]*?]")
_BRACKET = re.compile(r"(\\*)\[")
_TRAILING_BACKSLASHES = re.compile(r"(\\+)$")
# An empty style: renders nothing, and ends a text so that its last character cannot combine with the markup
# after it (a trailing backslash would escape the next tag, a trailing "[" could open one).
_END = "[dim][/]"


def _escape_bracket(match: re.Match[str]) -> str:
    backslashes = len(match.group(1))
    if _TAG_LIKE.match(match.string, match.end() - 1):
        return "\\" * (2 * backslashes + 1) + "["  # rich shows k of 2k+1 backslashes and then the "[" itself
    return "\\" * (backslashes + 1) + "["  # rich shows k of k+1 backslashes before a "[" that opens nothing


def literal(text: object, *, one_line: bool = False) -> str:
    """``text`` ready to be placed inside a rich markup string: shown exactly, never styled or swallowed.

    Why not just ``rich.markup.escape``: rich reads backslashes before any "[" as escapes (a model output
    "\\[" lost its backslash), and a text ending in a backslash escapes the tag that follows it in the markup
    (``[dim]...\\[/dim]``). Every "[" gets the backslashes rich needs to show it and those before it, and a text
    ending in backslashes or holding a "[" is closed by an empty style, so nothing after it can change how it
    reads."""
    value = _BRACKET.sub(_escape_bracket, plain(text, one_line=one_line))
    value = _TRAILING_BACKSLASHES.sub(lambda m: m.group(1) * 2 + _END, value)
    # a "[" without its "]" could pair with a "]" in the markup after it: end such a text too
    return value + _END if "[" in value and not value.endswith(_END) else value


# Characters json.dumps(ensure_ascii=False) leaves as they are but a terminal acts on or hides: DEL, the C1
# controls (0x9b is a one-byte CSI), the bidi controls and lone surrogates (never valid in UTF-8 output).
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in
                 [0x7F, *range(0x80, 0xA0), *map(ord, _BIDI_CONTROLS), *range(0xD800, 0xE000)]}


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (recursive: the values come from stored JSON,
    whose depth the stored-values gate bounds)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(inner) for inner in value]
    return value


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as strict JSON text for a program to read: non-finite numbers as null, hidden and control
    characters escaped."""
    text = json.dumps(_finite(value), indent=indent, ensure_ascii=False, allow_nan=False)
    return text.translate(_JSON_ESCAPES)
