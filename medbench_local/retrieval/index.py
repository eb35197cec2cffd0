"""Building and opening a retrieval index: one SQLite file with the passages, an FTS5 index ranked by BM25, the
corpus files' SHA-256 and the settings (SQL: store/retrieval_index.py).

Why an identity of the content, not of the file's bytes: what decides an arm's prompts is which passages the
index holds and how it ranks them, so the identity that goes into every evaluation key is SHA-256 over the
settings and every passage (id and text) in order. Rebuilding the same corpus with the same settings gives the
same identity (a run resumes); any changed passage, file or setting gives another (results never mix). It is
recomputed from the passages whenever an index is opened for a run, so an edited index cannot pass for the one
the results were made with. ``index info`` also prints the file's own SHA-256 (for ``sha256sum`` and bundles).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import DataError, StoreError
from ..gates.files import atomic_path, open_input
from ..store import retrieval_index as sql
from ..store.database import open_index_for_building
from ..store.readonly import open_index
from ..version import __version__
from .passages import Passage, Split, corpus_files, read_corpus_file, split_passages

#: progress(file name, files done, files in all) while building
Progress = Callable[[str, int, int], None]


def settings_of(split: Split) -> dict[str, Any]:
    """What the index records of how it was built (and what its identity covers besides the passages)."""
    return {"passage_words": split.size, "overlap_words": split.overlap, "tokenizer": sql.TOKENIZER,
            "ranking": "bm25", "format": sql.INDEX_FORMAT}


def content_identity(settings: dict[str, Any], passages: Iterable[tuple[str, str]]) -> str:
    """SHA-256 over the settings and every ``(passage id, text)`` in order (see the module docstring)."""
    digest = hashlib.sha256()
    for key in sorted(settings):
        digest.update(f"{key}={settings[key]}\n".encode())
    for passage_id, text in passages:
        digest.update(passage_id.encode("utf-8", "replace") + b"\0" + text.encode("utf-8", "replace") + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class BuildSummary:
    path: Path
    files: int
    documents: int
    passages: int
    identity: str


def _source_name(file: Path, given: list[Path]) -> str:
    """How a corpus file is recorded: its path inside the folder given, or its name when given itself (never the
    absolute path of the machine it was built on)."""
    for root in given:
        if root.is_dir():
            try:
                return file.relative_to(root).as_posix()
            except ValueError:
                continue
    return file.name


def build_index(corpus: list[Path], out: Path, split: Split, progress: Progress | None = None) -> BuildSummary:
    """Read every corpus file, split it into passages and write the index to ``out``, atomically: it is built in
    a private scratch file beside ``out`` and renamed over it only when complete (Ctrl-C or an error leaves
    ``out`` as it was). DataError names the file, line and field of the first problem."""
    problem = split.problem()
    if problem:
        raise DataError(out, problem)
    files = corpus_files(corpus)
    settings = settings_of(split)
    digest_rows: list[tuple[str, str]] = []
    documents = 0
    with atomic_path(out, protect=files) as scratch:
        conn = open_index_for_building(scratch)
        try:
            sql.create_schema(conn)
            seen: dict[str, str] = {}
            for number, file in enumerate(files, start=1):
                if progress is not None:
                    progress(file.name, number - 1, len(files))
                read = read_corpus_file(file)
                pieces: list[Passage] = []
                for document in read.documents:
                    if document.id in seen:
                        raise DataError(document.where, f"document id '{document.id}' is also at {seen[document.id]}; "
                                                        "ids must be unique in a corpus")
                    seen[document.id] = document.where
                    pieces.extend(split_passages(document, split))
                source = sql.add_source(conn, _source_name(file, corpus), read.sha256, read.size_bytes)
                sql.add_passages(conn, source, len(read.documents),
                                 ((p.id, p.document, p.ordinal, p.text, p.words) for p in pieces))
                digest_rows.extend((p.id, p.text) for p in pieces)
                documents += len(read.documents)
            if not digest_rows:
                raise DataError(corpus[0], "the corpus holds no words: nothing to index")
            identity = content_identity(settings, digest_rows)
            sql.set_meta(conn, {"format": sql.INDEX_FORMAT, "settings": settings, "content_sha256": identity,
                                "documents": documents, "passages": len(digest_rows),
                                "built_with": f"medbench-local {__version__}",
                                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            sql.finish(conn)
        finally:
            conn.close()
        if progress is not None:
            progress("", len(files), len(files))
    return BuildSummary(out, len(files), documents, len(digest_rows), identity)


@dataclass(frozen=True)
class Hit:
    """One retrieved passage: its id, document, text and BM25 score (higher is better)."""

    id: str
    document: str
    text: str
    score: float


class RetrievalIndex:
    """An index opened read-only for searching. Queries are serialised (a served run retrieves from worker
    threads; one SQLite connection must not run two statements at once)."""

    def __init__(self, path: Path, *, verify: bool = True) -> None:
        self.path = Path(path)
        self._conn = open_index(self.path)
        self._lock = threading.Lock()
        try:
            self.meta = sql.meta(self._conn, str(self.path))
            settings = self.meta.get("settings")
            identity = self.meta.get("content_sha256")
            if not isinstance(settings, dict) or not isinstance(identity, str):
                raise StoreError(f"{self.path}: damaged retrieval index (no settings or identity recorded)")
            self.settings: dict[str, Any] = settings
            self.identity: str = identity
            if verify:
                self.verify()
        except BaseException:
            self._conn.close()
            raise

    def verify(self) -> None:
        """Recompute the content identity from the passages; StoreError when it differs from the recorded one."""
        try:
            found = content_identity(self.settings, sql.passage_rows(self._conn))
        except sqlite3.DatabaseError as exc:  # a damaged page: one line
            raise StoreError(f"{self.path}: damaged retrieval index ({exc})") from None
        if found != self.identity:
            raise StoreError(f"{self.path}: retrieval index changed after it was built (its passages hash to "
                             f"{found[:12]}…, it records {self.identity[:12]}…); build it again")

    def search(self, match: str, k: int) -> list[Hit]:
        with self._lock:
            try:
                rows = sql.search(self._conn, match, k)
            except sqlite3.DatabaseError as exc:  # a damaged index
                raise StoreError(f"{self.path}: cannot search the retrieval index ({exc})") from None
        return [Hit(pid, doc, text, -score) for pid, doc, text, score in rows]

    def sources(self) -> list[dict[str, Any]]:
        with self._lock:
            return sql.sources(self._conn)

    def passages(self, ids: list[str]) -> dict[str, str]:
        with self._lock:
            return sql.passages_by_id(self._conn, ids)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RetrievalIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_sha256(path: Path) -> str:
    """The index file's own SHA-256 (``sha256sum``), read in blocks through a regular-file check."""
    digest = hashlib.sha256()
    with open_input(path, lambda reason: StoreError(f"{path}: {reason}")) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
