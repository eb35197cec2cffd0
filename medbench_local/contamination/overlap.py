"""Overlap of benchmark items with a corpus you have (a fine-tune's published instruction data): word n-grams,
normalised as lm-evaluation-harness's decontamination does, streamed into an on-disk index of hashes.

* **Normalisation** (``NORMALISATION``): lowercase; every character that is not a letter or digit becomes a
  space; whitespace runs fold to one; then split into words. So "Answer: B." and "answer b" are the same words.
* **n-grams**: n consecutive words (13 by default, lm-evaluation-harness's choice: long enough that a shared
  13-gram is almost never chance in natural text, short enough to survive reformatting).
* **Hashes**: each word's BLAKE2b (8 bytes), combined over the n-gram as a polynomial modulo 2^64 (computed with
  numpy, vectorised); a collision in 2^64 is negligible for any corpus that fits a disk.
* **Per item**: the share of its distinct n-grams found in the corpus, and the longest run of consecutive item
  n-grams found (a run of r n-grams is r + n - 1 words copied verbatim).

Paraphrase: a rewording that changes at least one word in every n consecutive words shares no n-gram; one that
keeps long stretches is found in proportion to them. Overlap finds copies, not paraphrases (docs/contamination.md
has the measurement).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..store.ngram_index import NgramIndex
from ..tasks.datafiles import parse_json

NORMALISATION = "lower-alnum-1"
DEFAULT_N = 13
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (the golden ratio's), for the polynomial
_BATCH_BYTES = 8 * 1024 * 1024
CORPUS_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".md", ".parquet")


def words(text: str) -> list[str]:
    return _NON_WORD.sub(" ", text.lower()).split()


class _WordHashes:
    """Stable 64-bit hashes of words (Python's own hash is salted per process), cached."""

    def __init__(self, limit: int = 2_000_000) -> None:
        self.cache: dict[str, int] = {}
        self.limit = limit

    def __call__(self, tokens: list[str]) -> np.ndarray:
        cache = self.cache
        out = np.empty(len(tokens), dtype=np.uint64)
        for i, word in enumerate(tokens):
            value = cache.get(word)
            if value is None:
                value = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
                if len(cache) < self.limit:
                    cache[word] = value
            out[i] = value
        return out


def ngram_hashes(text: str, n: int, word_hash: Callable[[list[str]], np.ndarray] | None = None) -> np.ndarray:
    """The text's n-gram hashes in order (as int64, SQLite's integer), empty when it has fewer than n words."""
    tokens = words(text)
    if len(tokens) < n:
        return np.zeros(0, dtype=np.int64)
    w = (word_hash or _WordHashes())(tokens)
    count = len(tokens) - n + 1
    acc = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            acc = acc * _MULTIPLIER + w[j:j + count]
    return acc.view(np.int64)


def longest_run(found: np.ndarray) -> int:
    """The longest run of True in a boolean array."""
    best = run = 0
    for hit in found.tolist():
        run = run + 1 if hit else 0
        best = max(best, run)
    return best


@dataclass(frozen=True)
class ItemOverlap:
    ngrams: int
    found: int
    longest_run: int

    @property
    def share(self) -> float:
        return self.found / self.ngrams if self.ngrams else 0.0


def item_overlap(index: NgramIndex, text: str, n: int) -> ItemOverlap:
    hashes = ngram_hashes(text, n)
    if hashes.size == 0:
        return ItemOverlap(0, 0, 0)
    present = index.contains(hashes.tolist())
    hits = np.array([h in present for h in hashes.tolist()], dtype=bool)
    distinct = set(hashes.tolist())
    return ItemOverlap(len(distinct), len(distinct & present), longest_run(hits))


# ---- reading a corpus, streaming


def corpus_files(paths: list[Path]) -> list[Path]:
    """The files of the corpus: each file given, and the files with a known suffix under each folder, sorted."""
    found: list[Path] = []
    for path in paths:
        path = Path(path).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path}: no such corpus file or folder")
    if not found:
        raise UserError(f"no corpus files ({', '.join(CORPUS_SUFFIXES)}) under {', '.join(map(str, paths))}")
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def documents(path: Path) -> Iterator[tuple[str, int]]:
    """(text, bytes consumed) per document of one corpus file: a JSONL line's strings joined, a CSV row's cells,
    a plain-text paragraph; Parquet row groups' string columns when pyarrow is installed."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet(path)
        return
    with open(path, "rb") as raw:
        if suffix in (".jsonl", ".json"):
            for number, line in enumerate(raw, start=1):
                text = line.decode("utf-8", errors="replace").strip()
                if text:
                    yield " \n ".join(_strings(parse_json(path, text, line=number))), len(line)
                else:
                    yield "", len(line)
        elif suffix in (".csv", ".tsv"):
            handle = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
            reader = csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            for row in reader:
                joined = " \n ".join(row)
                yield joined, len(joined.encode("utf-8")) + 1
        else:
            paragraph: list[str] = []
            size = 0
            for line in raw:
                size += len(line)
                text = line.decode("utf-8", errors="replace")
                if text.strip():
                    paragraph.append(text)
                    continue
                if paragraph:
                    yield "".join(paragraph), size
                    paragraph, size = [], 0
            if paragraph or size:
                yield "".join(paragraph), size


def _parquet(path: Path) -> Iterator[tuple[str, int]]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found]
    except ImportError:
        raise UserError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow), which is not installed") \
            from None
    table_file = pq.ParquetFile(path)
    share = path.stat().st_size // max(1, table_file.num_row_groups)
    for group in range(table_file.num_row_groups):
        columns = table_file.read_row_group(group).to_pydict()
        texts = [" \n ".join(str(v) for v in row if isinstance(v, str)) for row in zip(*columns.values())]
        yield "\n\n".join(texts), share


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def index_corpus(index: NgramIndex, files: list[Path], n: int, *, on_bytes: Callable[[int], None] = lambda b: None,
                 on_file: Callable[[Path, bool], None] = lambda p, skipped: None) -> None:
    """Stream every file not yet in the index into it (file by file; a file's mark is committed with its last
    rows, so an interruption redoes at most the file in flight)."""
    word_hash = _WordHashes()
    for path in files:
        sha = file_sha256(path)
        size = path.stat().st_size
        if index.has_file(sha):
            on_bytes(size)
            on_file(path, True)
            continue
        pending: list[np.ndarray] = []
        pending_bytes = 0
        count = 0
        for text, used in documents(path):
            hashes = ngram_hashes(text, n, word_hash)
            if hashes.size:
                pending.append(hashes)
                count += int(hashes.size)
            pending_bytes += used
            on_bytes(used)
            if pending_bytes >= _BATCH_BYTES:
                index.add(np.unique(np.concatenate(pending)).tolist())
                index.checkpoint()
                pending, pending_bytes = [], 0
        if pending:
            index.add(np.unique(np.concatenate(pending)).tolist())
        index.finish_file(sha, path.name, size, count)
        on_file(path, False)


def corpus_identity(index: NgramIndex, n: int) -> dict[str, Any]:
    """What the overlap numbers were measured against: the index's files (name, SHA-256, size), n and the
    normalisation."""
    return {"n": n, "normalisation": NORMALISATION,
            "files": [{"sha256": sha, "name": name, "size": size} for sha, name, size, _ in index.files()]}
