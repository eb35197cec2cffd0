"""Prompt templates as data, with a user override file.

Why data and not code: the study's prompts cannot be copied, and users rightly want to test their own
wording. A template is three strings; its SHA-256 is recorded with every evaluation, so results from two
wordings are never mixed. Override file (TOML), any subset of the keys::

    system = "You are ..."
    user = "Case:\\n{case}\\n..."
    answer_prefix = "The answer is"

Why validated up front: ``user`` is filled in with ``str.format`` for every item, which also understands
conversions (``{case!r}``), format specs (``{case:>10}``), positional fields (``{0}``, ``{}``) and attribute or
index access (``{case.x}``, ``{case[0]}``). Any of those would fail (or, worse, render something unintended)
in the middle of a run; so the override file is checked before a database or a model is touched: only the
task's own named placeholders, written plainly, balanced braces (``{{`` and ``}}`` for literal ones), and at
most ``MAX_PROMPT_FILE_BYTES``. ``system`` and ``answer_prefix`` are used as written (braces there are literal),
so a task placeholder in them is refused as a likely mistake.
"""

from __future__ import annotations

import re
import string
import sys
from dataclasses import dataclass, replace
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import ConfigError
from ..gates.files import read_input
from .values import canonical_json, sha256_text

MAX_PROMPT_FILE_BYTES = 256 * 1024  # a prompt override is a few KB; few-shot examples come from the data
_PLAIN_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class PromptTemplate:
    system: str
    user: str
    answer_prefix: str = ""

    @property
    def sha256(self) -> str:
        return sha256_text(canonical_json({"system": self.system, "user": self.user,
                                           "answer_prefix": self.answer_prefix}))

    def fields(self) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(self.user) if name}


def load_override(path: Path, base: PromptTemplate) -> PromptTemplate:
    """Apply a TOML override file to ``base``; every problem is a ConfigError naming the file and key."""
    path = Path(path)
    raw = _read_override(path)
    allowed = {"system", "user", "answer_prefix"}
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(path, key, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        if not isinstance(value, str):
            raise ConfigError(path, key, f"expected a string, got {value!r}")
    template = replace(base, **{key: str(value) for key, value in raw.items()})
    check_user_template(path, template.user, base.fields())
    for key in ("system", "answer_prefix"):
        for name in sorted(base.fields()):
            if "{" + name + "}" in getattr(template, key):
                raise ConfigError(path, key, f"{{{name}}} is only filled in 'user'; '{key}' is used as written")
    return template


def _read_override(path: Path) -> dict[str, object]:
    """Parse the file through the files gate: non-regular files (a FIFO would block) and oversized ones are
    refused before they are read."""
    raw = read_input(path, lambda reason: ConfigError(path, None, reason), max_bytes=MAX_PROMPT_FILE_BYTES)
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"cannot parse prompt file: {exc}") from None
    except RecursionError:
        raise ConfigError(path, None, "cannot parse prompt file: values nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise ConfigError(path, None, f"cannot parse prompt file: {str(exc).splitlines()[0][:200]}") from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read the prompt file ({exc.strerror})") from None


def check_user_template(path: Path, text: str, placeholders: set[str]) -> None:
    """ConfigError unless every ``{...}`` in ``text`` is one of ``placeholders``, written plainly."""
    available = ", ".join("{" + f + "}" for f in sorted(placeholders)) or "none"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:  # "Single '}' encountered", "expected '}' before end of string"
        raise ConfigError(path, "user", f"unbalanced braces ({exc}); write {{{{ and }}}} for literal braces") \
            from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name == "" or name.isdigit():
            raise ConfigError(path, "user", f"positional placeholder {shown}: use a named one ({available})")
        if not _PLAIN_FIELD.match(name):
            raise ConfigError(path, "user", f"placeholder {shown} uses attribute or index access; use a plain "
                                            f"name ({available})")
        if name not in placeholders:
            raise ConfigError(path, "user", f"unknown placeholder {{{name}}} (available: {available})")
        if conversion or spec:
            raise ConfigError(path, "user", f"placeholder {shown} has a conversion or format spec; write "
                                            f"{{{name}}} only")
