"""Errors that are the user's to fix, shown as one clear line instead of a traceback.

Why a single base class: the CLI catches ``UserError`` at the top and prints ``str(error)``; everything
else is a bug and keeps its traceback. Each subclass knows *where* the problem is (file, line, key) so the
message can point at it.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input or environment; the message is the whole story."""


def _location(path: Path | str, line: int | None) -> str:
    return f"{path}:{line}" if line else f"{path}"


class ConfigError(UserError):
    """models.toml (or another config file) is malformed: names the file, line when known, and key."""

    def __init__(self, path: Path | str, key: str | None, message: str, line: int | None = None):
        self.path, self.key, self.line = str(path), key, line
        where = _location(path, line)
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class DataError(UserError):
    """A dataset file is missing or malformed: names the file, line (or row) and field."""

    def __init__(self, path: Path | str, message: str, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = str(path), line, field
        where = _location(path, line)
        super().__init__(f"{where}: field '{field}': {message}" if field else f"{where}: {message}")


class ModelFileError(UserError):
    """A model file is missing, unreadable or not a GGUF file."""


class StoreError(UserError):
    """The results database cannot be used (newer schema, not a database, read-only, ...)."""
