"""The secrets gate: an API key never reaches a terminal, a log or a database.

Why a register and not only patterns: a server that echoes what it received (a proxy's error page, a debug
handler, a 400 that quotes the request) can put the key anywhere in its text, with or without the word
``Bearer`` in front of it. So the served engine registers the key's value the moment it reads it
(``register``), and ``redact`` removes every registered value, plus anything that looks like an
``Authorization`` header or a ``Bearer`` token, from a text. ``redact`` is applied at the three exits, by
construction rather than by each message's author:

* the CLI's error line (``cli/__init__.py``) and every untrusted text it prints (``cli/safe_text.plain``);
* what is stored: ``generations.error`` and ``scores.detail`` (``store/writer.py``); exports read those;
* the served engine's own error messages (``engine/http.py``), before they are cut to length, so that a key
  cut in half at the cut is not left behind as a prefix.

A key that could not travel in an HTTP header as it is (whitespace such as a trailing newline from ``echo``
into a file, control or non-ASCII characters) is refused by ``require_header_safe`` with a line that does not
show it: httpx would otherwise quote the whole header value, key included, in its own error.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

from ..errors import UserError

MARK = "[redacted]"
_MIN_SECRET = 4  # shorter values would blank ordinary words; no real API key is this short

_lock = threading.RLock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

# ``Authorization: <anything up to the end of the line or the quoted value>`` in header, JSON, Python repr and
# query-string spellings; ``Bearer <token>`` anywhere (a token stops at whitespace, a quote or a bracket, so that
# a text already redacted stays as it is).
_AUTHORIZATION = re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n]*")
_BEARER = re.compile(r"(?i)(\bbearer\b\s*[:=]?\s*)[^\s\"',;{}\[\]():=][^\s\"',;{}\[\]()]*")


class SecretRefused(UserError):
    """A secret that cannot be used as it is; the message never contains the secret."""


def _variants(value: str) -> set[str]:
    """The spellings a server may echo a secret in: as is, stripped, JSON-escaped, URL-encoded."""
    found = set()
    for text in (value, value.strip()):
        if len(text) < _MIN_SECRET:
            continue
        found.update({text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1],
                      quote(text, safe=""), text.replace("/", "\\/")})
    return {v for v in found if len(v) >= _MIN_SECRET}


def register(value: str) -> None:
    """Remember ``value`` (an API key) for the rest of the process: ``redact`` removes it from any text."""
    global _pattern
    variants = _variants(value)
    if not variants:
        return
    with _lock:
        if variants <= _secrets:
            return
        _secrets.update(variants)
        # longest first, so that a key that contains another registered key is removed whole
        _pattern = re.compile("|".join(re.escape(v) for v in sorted(_secrets, key=len, reverse=True)))


@contextmanager
def isolated() -> Iterator[None]:
    """Secrets registered inside the block are forgotten after it (tests that register throwaway values must
    not blank the text of the tests after them; a real process never forgets a key)."""
    global _pattern
    with _lock:
        saved, saved_pattern = set(_secrets), _pattern
    try:
        yield
    finally:
        with _lock:
            _secrets.clear()
            _secrets.update(saved)
            _pattern = saved_pattern


def registered() -> bool:
    """Whether any secret is registered in this process (tests and diagnostics)."""
    return bool(_secrets)


def redact_registered(text: str) -> str:
    """``text`` with the registered secrets' values replaced (no patterns: safe for any text shown)."""
    pattern = _pattern
    return pattern.sub(MARK, text) if pattern is not None and text else text


def redact(text: str) -> str:
    """``text`` without any registered secret, ``Authorization`` value or ``Bearer`` token."""
    if not text:
        return text
    text = redact_registered(text)
    text = _AUTHORIZATION.sub(lambda m: m.group(1) + MARK, text)
    return _BEARER.sub(lambda m: m.group(1) + MARK, text)


def header_problem(value: str) -> str | None:
    """What makes ``value`` unusable in an HTTP header as it is, in words that do not show it; None if fine.
    Allowed: printable ASCII without spaces (every API key scheme in use)."""
    for position, char in enumerate(value, start=1):
        code = ord(char)
        where = f"character {position} of {len(value)}"
        if char.isspace():
            trailing = " (a trailing newline or space, e.g. from echo into a file?)" if not value[position:].strip() \
                else ""
            return f"it contains whitespace at {where}{trailing}"
        if code < 0x20 or code == 0x7F:
            return f"it contains a control character at {where}"
        if code > 0x7E:
            return f"it contains a non-ASCII character at {where}"
    return None


def require_header_safe(value: str, where: str) -> str:
    """``value`` when it can be sent as a ``Bearer`` token as it is; else a one-line ``SecretRefused`` naming
    ``where`` it came from (e.g. "$MEDBENCH_API_KEY") and the problem, never the value. The value is
    registered either way, so that no later message can show it."""
    register(value)
    problem = header_problem(value)
    if problem:
        raise SecretRefused(f"the API key in {where} is refused: {problem}; the key is not shown. Set it "
                            "again without it (e.g. export VAR=\"$(tr -d '[:space:]' < keyfile)\")")
    return value
