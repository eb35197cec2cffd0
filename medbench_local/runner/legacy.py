"""What databases written by older medbench-local versions need from a run, kept out of the item loop.

Two things changed under stored evaluations, and a run must still find what older versions stored:

* **The data fingerprint.** Older versions fingerprinted a single data file as SHA-256 over (file name, file
  SHA-256); today it is the file's own SHA-256 (inputs.py). ``load_tasks`` computes both once per task; an
  evaluation stored under the old fingerprint is continued under its old key instead of starting anew
  (``continue_older``).
* **The answer extraction.** Items scored by an older extraction can be re-scored without generating
  (``rescore --extraction``); a ``generate`` evaluation that would regenerate them says so first
  (``note_older_extraction``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlite_utils

from ..analysis.rescore import older_extraction_items
from ..modelfiles.hashing import sha256_file
from ..provenance import evaluation_key
from ..store import queries
from .fingerprint import folder_fingerprint


def legacy_data_fingerprint(path: Path, file_sha256: str | None = None) -> str:
    """The fingerprint of medbench-local before the file's own SHA-256 was used: for a single file SHA-256 over
    (file name, file SHA-256); folders unchanged. Only to find evaluations an older version stored.
    ``file_sha256``: the file's SHA-256 when already known (large files are read once)."""
    if path.is_file():
        digest = hashlib.sha256()
        digest.update(path.name.encode() + b"\0")
        digest.update((file_sha256 or sha256_file(path)).encode() + b"\0")
        return digest.hexdigest()
    return folder_fingerprint(path)


def data_variants(task_settings: dict[str, Any], data_sha256: str, legacy_data_sha256: str
                  ) -> list[dict[str, Any]]:
    """The task settings under the current data fingerprint and, for databases of older versions, the legacy one."""
    if not legacy_data_sha256 or legacy_data_sha256 == data_sha256:
        return [task_settings]
    return [task_settings, {**task_settings, "data_sha256": legacy_data_sha256}]


def continue_older(db: sqlite_utils.Database, key: str, identity: dict[str, Any], task_settings: dict[str, Any],
                   data_sha256: str, legacy_data_sha256: str, label: str, note: Callable[[str], None]
                   ) -> tuple[str, dict[str, Any]]:
    """(key, task settings) to continue in: an evaluation stored by an older version under the legacy data
    fingerprint when there is one and none under the current key, else the current ones. ``label``: "model ·
    task", for the ``note`` that says so."""
    if not legacy_data_sha256 or legacy_data_sha256 == data_sha256 or queries.evaluation_exists(db, key):
        return key, task_settings
    legacy_settings = {**task_settings, "data_sha256": legacy_data_sha256}
    legacy_key = evaluation_key(identity, legacy_settings)
    if not queries.evaluation_exists(db, legacy_key):
        return key, task_settings
    note(f"{label}: continuing evaluation {legacy_key[:12]}, stored by an older medbench-local under its data "
         "fingerprint (file name + content; now the file's own SHA-256)")
    return legacy_key, legacy_settings


def note_older_extraction(db: sqlite_utils.Database, key: str, model_id: str, task_id: str,
                          identity: dict[str, Any], variants: list[dict[str, Any]], note: Callable[[str], None]
                          ) -> None:
    """Before a new ``generate`` evaluation: say how many items of this model and task an older extraction
    scored, which ``rescore --extraction`` re-scores without generating them again."""
    if queries.evaluation_exists(db, key):
        return
    older = max(older_extraction_items(db, model_id, task_id, identity, variant) for variant in variants)
    if older:
        note(f"{older} items of {model_id}·{task_id} were scored with an older extraction; "
             f"`medbench-local rescore --extraction --db {queries.database_path(db)}` re-scores them "
             "without regenerating")
