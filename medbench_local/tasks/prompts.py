"""Prompt templates as data, with a user override file.

Why data and not code: the study's prompts cannot be copied, and users rightly want to test their own
wording. A template is three strings; its SHA-256 is recorded with every evaluation, so results from two
wordings are never mixed. Override file (TOML), any subset of the keys::

    system = "You are ..."
    user = "Case:\\n{case}\\n..."
    answer_prefix = "The answer is"
"""

from __future__ import annotations

import string
import sys
from dataclasses import dataclass, replace
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import ConfigError
from .base import canonical_json, sha256_text


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
    """Apply a TOML override file to ``base``; unknown keys and unknown {fields} are errors."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, None, "prompt file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"cannot parse prompt file: {exc}") from None
    allowed = {"system", "user", "answer_prefix"}
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(path, key, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        if not isinstance(value, str):
            raise ConfigError(path, key, f"expected a string, got {value!r}")
    template = replace(base, **raw)
    unknown = template.fields() - base.fields()
    if unknown:
        raise ConfigError(path, "user", f"unknown placeholder {{{sorted(unknown)[0]}}} "
                          f"(available: {', '.join('{' + f + '}' for f in sorted(base.fields()))})")
    return template
