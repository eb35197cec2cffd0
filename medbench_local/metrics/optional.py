"""What the optional heavy metrics (BERTScore, UMLS-F1) share: the notice that one cannot run here.

Why an exception and not a silent zero: a summary scored without BERTScore must say so, and a missing
model folder must never turn into a BERTScore of 0 that ends up in a comparison. Callers catch
``MetricUnavailable`` once, print ``str(exc)`` (one line, e.g. ``BERTScore skipped: MEDBENCH_BERTSCORE_SCIBERT
is not set ...``) and go on with the metrics they have. It is a ``UserError``, so where nobody catches it the
CLI shows the same line instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import UserError

__all__ = ["MetricUnavailable", "missing_modules", "env_path"]


class MetricUnavailable(UserError):
    """An optional metric cannot run here (extra not installed, local model not configured or broken)."""

    def __init__(self, metric: str, reason: str):
        self.metric, self.reason = metric, reason
        super().__init__(f"{metric} skipped: {reason}")


def missing_modules(*names: str) -> list[str]:
    """The top-level modules among ``names`` that are not importable (checked without importing them)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def env_path(name: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The path in environment variable ``name`` (``~`` expanded), or None when unset or blank."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return Path(value).expanduser() if value else None
