"""The on-disk n-gram index of a corpus (``contamination --corpus ... --index PATH``): hashed word n-grams in a
SQLite table without rowids (one B-tree keyed by the 64-bit hash), and the corpus files it holds with their
SHA-256.

Why SQLite and not a set in memory: a corpus larger than memory (a fine-tune's published instruction data runs to
gigabytes) streams through in batches, and the index is reusable across tasks and runs. Why resumable per file:
a file's mark is written in the same transaction as its last batch, so an interrupted build redoes at most the
file in flight (its rows already inserted are ignored the second time).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from .database import INDEX_MARK, open_ngram_index

_LOOKUP = 500  # hashes per membership query (below SQLite's bound on host parameters)


class NgramIndex:
    def __init__(self, path: Path, *, n: int, normalisation: str) -> None:
        from ..errors import StoreError

        self.path = path
        self.conn = open_ngram_index(path)
        self.conn.execute(f"create table if not exists {INDEX_MARK} (key text primary key, value text)")
        self.conn.execute("create table if not exists files (sha256 text primary key, name text, size integer, "
                          "ngrams integer)")
        self.conn.execute("create table if not exists ngrams (hash integer primary key) without rowid")
        self.conn.commit()
        meta = dict(self.conn.execute(f"select key, value from {INDEX_MARK}").fetchall())
        wanted = {"n": str(n), "normalisation": normalisation}
        if not meta:
            self.conn.executemany(f"insert into {INDEX_MARK} (key, value) values (?, ?)", wanted.items())
            self.conn.commit()
        elif meta != wanted:
            self.conn.close()
            raise StoreError(f"{path}: this index holds n-grams of n={meta.get('n')} ({meta.get('normalisation')}); "
                             f"asked for n={n} ({normalisation}): choose another --index")

    def has_file(self, sha256: str) -> bool:
        return self.conn.execute("select 1 from files where sha256 = ?", (sha256,)).fetchone() is not None

    def add(self, hashes: Iterable[int]) -> None:
        """Insert a batch (uncommitted: ``finish_file`` or ``checkpoint`` commits)."""
        self.conn.executemany("insert or ignore into ngrams (hash) values (?)", ((h,) for h in hashes))

    def checkpoint(self) -> None:
        self.conn.commit()

    def finish_file(self, sha256: str, name: str, size: int, ngrams: int) -> None:
        self.conn.execute("insert or replace into files (sha256, name, size, ngrams) values (?, ?, ?, ?)",
                          (sha256, name, size, ngrams))
        self.conn.commit()

    def files(self) -> list[tuple[str, str, int, int]]:
        return [tuple(row) for row in self.conn.execute("select sha256, name, size, ngrams from files order by sha256")]

    def contains(self, hashes: Sequence[int]) -> set[int]:
        """The hashes of ``hashes`` that the index holds."""
        found: set[int] = set()
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), _LOOKUP):
            part = unique[start:start + _LOOKUP]
            marks = ", ".join("?" for _ in part)
            found.update(h for (h,) in self.conn.execute(f"select hash from ngrams where hash in ({marks})", part))
        return found

    def close(self) -> None:
        try:
            self.conn.commit()
            self.conn.execute("pragma wal_checkpoint(truncate)")
        except sqlite3.Error:
            pass
        self.conn.close()
