"""A corpus as passages: read text, Markdown, HTML, CSV and JSONL files, split each document into passages.

Why words and not model tokens: the index is built once for every model that will ever use it, so its passages
cannot depend on one tokenizer; a word is a tokenizer-free stand-in (about 1.3 tokens of English). The prompt's
token budget is applied later, with the model's own tokenizer (retrieval/augment.py).

Why strict: a corpus is a hospital's own guidelines; a file that is not UTF-8, a JSONL line that is not an object,
an empty file, all stop the build with one line naming file, line and field, rather than indexing half a corpus
silently. Every file is read through the files gate (regular files only, a size limit before reading).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

from ..errors import DataError
from ..gates.files import read_input

#: What ``index build`` reads, by file name ending.
FORMATS: dict[str, str] = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html",
                           ".htm": "html", ".jsonl": "jsonl", ".csv": "csv", ".pdf": "pdf"}
MAX_FILE_BYTES = 256 * 1024 * 1024   # one corpus file; a guideline collection is megabytes
MAX_WORD_CHARS = 64                  # a longer "word" (a base64 blob, a minified line) is cut into pieces
MAX_DOCUMENT_ID = 200
_ID = re.compile(r"[^\s#]{1,200}")


@dataclass(frozen=True)
class Document:
    """One document of a corpus file: a whole text/Markdown/HTML file, one JSONL line, one CSV row."""

    id: str          # unique in the corpus: the JSONL/CSV 'id' field, else the file's stem (+ line or row)
    text: str
    where: str       # file:line, for messages


@dataclass(frozen=True)
class Passage:
    """A piece of a document as indexed. ``id`` is the document id, with ``#n`` when it has several pieces."""

    id: str
    document: str
    ordinal: int     # 1-based position in its document
    text: str
    words: int


@dataclass(frozen=True)
class Split:
    """How documents are cut into passages (recorded in the index and in every arm's identity)."""

    size: int = 120      # words per passage
    overlap: int = 20    # words shared by consecutive passages of one document

    def problem(self) -> str | None:
        if not 8 <= self.size <= 4096:
            return f"passage size {self.size} words: expected 8 to 4096"
        if not 0 <= self.overlap < self.size:
            return f"overlap {self.overlap} words: expected 0 or more and less than the passage size ({self.size})"
        return None


def words_of(text: str) -> list[str]:
    """Whitespace-separated words; a word longer than MAX_WORD_CHARS becomes several (so a huge line without
    spaces cannot make one passage larger than any prompt)."""
    found: list[str] = []
    for word in text.split():
        if len(word) <= MAX_WORD_CHARS:
            found.append(word)
        else:
            found.extend(word[i:i + MAX_WORD_CHARS] for i in range(0, len(word), MAX_WORD_CHARS))
    return found


def split_passages(document: Document, split: Split) -> list[Passage]:
    """Consecutive windows of ``split.size`` words, each starting ``size - overlap`` words after the one before;
    the last window ends at the document's end. A document of at most ``size`` words is one passage with the
    document's id; otherwise passage ids are ``<document>#1``, ``#2`` ... A document without words gives none."""
    words = words_of(document.text)
    if not words:
        return []
    if len(words) <= split.size:
        return [Passage(document.id, document.id, 1, " ".join(words), len(words))]
    stride = split.size - split.overlap
    starts = range(0, len(words) - split.overlap, stride)  # the last start + size reaches the end
    pieces = []
    for number, start in enumerate(starts, start=1):
        chunk = words[start:start + split.size]
        pieces.append(Passage(f"{document.id}#{number}", document.id, number, " ".join(chunk), len(chunk)))
    return pieces


class _TextOfHtml(HTMLParser):
    """The visible text of an HTML page: script and style left out, block elements on lines of their own."""

    BLOCKS: ClassVar[frozenset[str]] = frozenset({
        "p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "table", "ul", "ol",
        "pre", "blockquote", "dd", "dt"})
    HIDDEN: ClassVar[frozenset[str]] = frozenset({"script", "style", "template", "noscript", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """The text a reader sees in ``markup`` (stdlib html.parser; never raises on broken markup)."""
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    return "".join(parts for parts in parser.parts)


def _decoded(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start}); convert it to UTF-8",
                        line) from None
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise DataError(path, "holds NUL bytes: a binary file, not text", text[:text.index("\x00")].count("\n") + 1)
    if not text.strip():
        raise DataError(path, "empty: no text to index")
    return text


def document_id(value: object, path: Path, line: int, field: str) -> str:
    """An id from the file: a string or integer of 1-200 characters without spaces or '#'."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(path, f"expected a string or integer id, got {type(value).__name__}", line, field)
    text = str(value)
    if not _ID.fullmatch(text):
        shown = repr(text[:60]) + ("..." if len(text) > 60 else "")
        raise DataError(path, f"id {shown}: expected 1-{MAX_DOCUMENT_ID} characters without spaces or '#'",
                        line, field)
    return text


def file_format(path: Path) -> str:
    """How a corpus file is read, by its ending; DataError for an ending index does not read."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(path, f"unknown file type '{path.suffix or '(none)'}': index reads "
                              f"{', '.join(sorted(FORMATS))}")
    return kind


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus as read: its documents, and the SHA-256 and size of its bytes (recorded)."""

    documents: list[Document]
    sha256: str
    size_bytes: int


def read_corpus_file(path: Path) -> CorpusFile:
    """A corpus file's documents and identity; DataError (one line: file, line, field) for anything unreadable."""
    file_format(path)  # an unknown ending is refused before a byte is read
    data = read_input(path, lambda reason: DataError(path, reason), max_bytes=MAX_FILE_BYTES)
    return CorpusFile(read_documents(path, data), hashlib.sha256(data).hexdigest(), len(data))


def read_documents(path: Path, data: bytes) -> list[Document]:
    """The documents of one corpus file's bytes ``data`` (read through the files gate by the caller)."""
    kind = file_format(path)
    stem = path.stem
    if kind == "pdf":
        return [Document(stem, pdf_text(path, data), str(path))]
    text = _decoded(path, data)
    if kind in ("text", "markdown"):
        return [Document(stem, text, str(path))]
    if kind == "html":
        return [Document(stem, html_text(text), str(path))]
    if kind == "jsonl":
        return list(_jsonl(path, text, stem))
    return list(_csv(path, text, stem))


def pdf_text(path: Path, data: bytes) -> str:
    """The text of a PDF's pages, in order, through pypdf when it is installed (the optional ``pdf`` extra):
    a guideline collection is often PDF, but a PDF parser is a large dependency most users never need. Without
    it, or for a PDF it cannot read, one line naming the file; a PDF without a text layer (a scan) is refused too,
    since it would index as nothing."""
    try:
        import pypdf
    except ImportError:
        raise DataError(path, "reading PDF needs pypdf, which is not installed (pip install "
                              "'medbench-local[pdf]'), or convert the file to text first") from None
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:  # whatever a damaged or hostile PDF makes the parser raise
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DataError(path, f"not a readable PDF ({reason})") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise DataError(path, "the PDF has no text layer (a scan?); run OCR first or give its text")
    return text


def _jsonl(path: Path, text: str, stem: str) -> Iterator[Document]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "values nested too deeply"
            raise DataError(path, f"not a JSON line ({reason})", number) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object per line, got {type(record).__name__}", number)
        body = record.get("text")
        if not isinstance(body, str):
            raise DataError(path, "missing" if body is None else f"expected a string, got {type(body).__name__}",
                            number, "text")
        ident = document_id(record["id"], path, number, "id") if "id" in record else f"{stem}:{number}"
        yield Document(ident, body, f"{path}:{number}")


def _csv(path: Path, text: str, stem: str) -> Iterator[Document]:
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise DataError(path, f"not readable as CSV ({exc})") from None
    for number, row in enumerate(rows, start=2):
        cells = {str(k): (v if isinstance(v, str) else "") for k, v in row.items() if k is not None}
        body = cells.get("text") or " ".join(f"{k}: {v}" for k, v in cells.items() if k != "id" and v)
        ident = document_id(cells["id"], path, number, "id") if cells.get("id") else f"{stem}:{number}"
        yield Document(ident, body, f"{path}:{number}")


def corpus_files(paths: list[Path]) -> list[Path]:
    """The files of the corpus: each file given, and the readable files (by ending) inside each folder given, in
    name order; a folder without any is an error."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix.lower() in FORMATS and p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not inside:
                raise DataError(path, f"no corpus files in this folder (index reads {', '.join(sorted(FORMATS))})")
            found.extend(inside)
        elif not path.exists() and not path.is_symlink():  # said as what it is, before its ending is judged
            raise DataError(path, "no such corpus file or folder")
        else:
            found.append(path)
    return found
