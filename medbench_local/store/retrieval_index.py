"""The SQL of a retrieval index: one SQLite file holding the passages, SQLite's own full-text index over them
(FTS5, ranked with its built-in BM25), the corpus files with their SHA-256 and the settings it was built with.

Why FTS5: it ships inside every SQLite Python links against, so retrieval needs no service and no extra
package, and the whole index is one file that can be hashed, copied into an air-gapped bundle and opened
read-only. The connections are opened by the database gate (``database.open_index_for_building`` and
``readonly.open_index``); this module only speaks SQL to them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import StoreError
from ..gates.stored import DamagedValue, load_json

INDEX_FORMAT = "medbench-local-retrieval-1"
#: porter stemming over unicode61 words (case- and accent-folded): "infarction" finds "infarctions"
TOKENIZER = "porter unicode61 remove_diacritics 2"
TABLES = ("meta", "sources", "passages", "passages_fts")


def create_schema(conn: sqlite3.Connection) -> None:
    """The empty tables of a new index (in the scratch file it is built in)."""
    conn.execute("create table meta (key text primary key, value text not null)")
    conn.execute("create table sources (id integer primary key, name text not null, sha256 text not null, "
                 "size_bytes integer not null, documents integer not null, passages integer not null)")
    conn.execute("create table passages (rowid integer primary key, id text not null unique, "
                 "document text not null, ordinal integer not null, source_id integer not null "
                 "references sources(id), text text not null, words integer not null)")
    conn.execute(f"create virtual table passages_fts using fts5(text, content='passages', content_rowid='rowid', "
                 f"tokenize='{TOKENIZER}')")


def add_source(conn: sqlite3.Connection, name: str, sha256: str, size_bytes: int) -> int:
    cursor = conn.execute("insert into sources (name, sha256, size_bytes, documents, passages) values (?,?,?,0,0)",
                          (name, sha256, size_bytes))
    return int(cursor.lastrowid or 0)


def passage_exists(conn: sqlite3.Connection, passage_id: str) -> bool:
    return conn.execute("select 1 from passages where id = ?", (passage_id,)).fetchone() is not None


def add_passages(conn: sqlite3.Connection, source_id: int, documents: int,
                 rows: Iterable[tuple[str, str, int, str, int]]) -> int:
    """Insert ``(id, document, ordinal, text, words)`` rows of one source and their full-text entries."""
    added = 0
    for passage_id, document, ordinal, text, words in rows:
        cursor = conn.execute("insert into passages (id, document, ordinal, source_id, text, words) "
                              "values (?,?,?,?,?,?)", (passage_id, document, ordinal, source_id, text, words))
        conn.execute("insert into passages_fts (rowid, text) values (?, ?)", (cursor.lastrowid, text))
        added += 1
    conn.execute("update sources set documents = ?, passages = ? where id = ?", (documents, added, source_id))
    return added


def set_meta(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    for key, value in values.items():
        conn.execute("insert or replace into meta (key, value) values (?, ?)", (key, json.dumps(value)))


def finish(conn: sqlite3.Connection) -> None:
    """Merge the full-text index's segments (smaller file, faster queries) and commit."""
    conn.execute("insert into passages_fts (passages_fts) values ('optimize')")
    conn.commit()


def meta(conn: sqlite3.Connection, path: str) -> dict[str, Any]:
    """The settings an index records; StoreError when the file is not one of our indexes."""
    try:
        names = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
        if not set(TABLES) <= names:
            raise StoreError(f"{path}: not a medbench-local retrieval index (missing tables: "
                             f"{', '.join(sorted(set(TABLES) - names))}); build one with 'medbench-local index build'")
        values: dict[str, Any] = {}
        for key, value in conn.execute("select key, value from meta"):
            values[str(key)] = load_json(value, "meta", "value", key)
    except DamagedValue as exc:
        raise StoreError(f"{path}: damaged retrieval index: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot read the retrieval index ({exc})") from None
    if values.get("format") != INDEX_FORMAT:
        raise StoreError(f"{path}: not a retrieval index of this medbench-local (format "
                         f"{str(values.get('format'))[:60]!r}, expected {INDEX_FORMAT!r})")
    return values


def sources(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [{"name": name, "sha256": sha, "size_bytes": size, "documents": docs, "passages": count}
            for name, sha, size, docs, count in
            conn.execute("select name, sha256, size_bytes, documents, passages from sources order by id")]


def passage_rows(conn: sqlite3.Connection) -> Iterator[tuple[str, str]]:
    """``(id, text)`` of every passage in insertion order: what the index's content identity is computed over."""
    yield from conn.execute("select id, text from passages order by rowid")


def search(conn: sqlite3.Connection, match: str, k: int) -> list[tuple[str, str, str, float]]:
    """The ``k`` best passages for an FTS5 ``match`` expression: ``(id, document, text, bm25)``, best first
    (FTS5's bm25() is lower for better matches; ties by insertion order, so results are reproducible)."""
    if not match:
        return []
    return [(str(pid), str(doc), str(text), float(score)) for pid, doc, text, score in conn.execute(
        "select p.id, p.document, p.text, bm25(passages_fts) as score from passages_fts "
        "join passages p on p.rowid = passages_fts.rowid where passages_fts match ? "
        "order by score, p.rowid limit ?", (match, k))]


def passages_by_id(conn: sqlite3.Connection, ids: list[str]) -> dict[str, str]:
    """The text of each listed passage that the index holds (``show`` prints them beside answers)."""
    found: dict[str, str] = {}
    for passage_id in ids:
        row = conn.execute("select text from passages where id = ?", (passage_id,)).fetchone()
        if row is not None:
            found[passage_id] = str(row[0])
    return found
