"""A small, dependency-free reader for the metadata header of a GGUF file.

Why our own: we must say "this is not a GGUF file" or "this GGUF is truncated" in one clear line *before*
llama.cpp is asked to load it (llama.cpp prints to stderr and raises a bare ValueError), and we want the chat
template, architecture and quantization for ``models list`` without loading gigabytes of weights.
Only the key/value metadata is read; tensors are never touched. Large arrays (the tokenizer vocabulary) are
skipped and reported by length only.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ModelFileError

GGUF_MAGIC = b"GGUF"
_SCALARS: dict[int, str] = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 64 * 1024 * 1024  # a chat template is a few KB; anything near this is corruption

# llama.cpp's enum llama_ftype (general.file_type) -> the usual quantization name.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}


class _Reader:
    def __init__(self, handle: BinaryIO, path: Path):
        self.handle, self.path = handle, path

    def read(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise ModelFileError(f"{self.path}: truncated GGUF file (metadata header ends early)")
        return data

    def scalar(self, kind: int) -> Any:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        (length,) = struct.unpack("<Q", self.read(8))
        if length > _MAX_STRING:
            raise ModelFileError(f"{self.path}: corrupted GGUF metadata (string of {length} bytes)")
        return self.read(length).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(kind)
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = struct.unpack("<IQ", self.read(12))
            if item_kind in _SCALARS:
                size = struct.calcsize(_SCALARS[item_kind])
                if count * size > 1 << 34:
                    raise ModelFileError(f"{self.path}: corrupted GGUF metadata (array of {count} items)")
                self.read(size * count)
            elif item_kind == _STRING:
                for _ in range(count):
                    self.string()
            else:
                raise ModelFileError(f"{self.path}: corrupted GGUF metadata (array item type {item_kind})")
            return {"array_length": count}
        raise ModelFileError(f"{self.path}: corrupted GGUF metadata (value type {kind})")


def read_gguf_metadata(path: Path | str) -> dict[str, Any]:
    """Return the GGUF key/value metadata (arrays summarised). Raises ModelFileError with a clear reason.

    Parsing walks the whole vocabulary (~0.3 s for 50k tokens) and a run asks twice per model (pre-flight,
    then the engine), so results are cached per (path, size, mtime): a changed file is read again.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, expected a .gguf file")
    stat = path.stat()
    return dict(_read_cached(str(path), stat.st_size, stat.st_mtime_ns))


@lru_cache(maxsize=32)
def _read_cached(path_text: str, size: int, mtime_ns: int) -> dict[str, Any]:
    path = Path(path_text)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot open model file ({exc.strerror})") from None
    with handle:
        head = handle.read(4)
        if len(head) == 0:
            raise ModelFileError(f"{path}: empty file, expected a GGUF model")
        if head != GGUF_MAGIC:
            raise ModelFileError(f"{path}: not a GGUF file (starts with {head!r}, expected b'GGUF')")
        reader = _Reader(handle, path)
        version = reader.scalar(4)
        if version not in (2, 3):
            raise ModelFileError(f"{path}: unsupported GGUF version {version} (expected 2 or 3)")
        tensor_count, kv_count = struct.unpack("<QQ", reader.read(16))
        if kv_count > 100_000:
            raise ModelFileError(f"{path}: corrupted GGUF header ({kv_count} metadata entries)")
        metadata: dict[str, Any] = {"gguf.version": version, "gguf.tensor_count": tensor_count}
        for _ in range(kv_count):
            key = reader.string()
            (kind,) = struct.unpack("<I", reader.read(4))
            metadata[key] = reader.value(kind)
        return metadata


def summarize(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata we record with every run: enough to tell two model files apart by eye."""
    arch = metadata.get("general.architecture")
    file_type = metadata.get("general.file_type")
    return {
        "architecture": arch,
        "name": metadata.get("general.name"),
        "quantization": FILE_TYPES.get(file_type, str(file_type)) if file_type is not None else None,
        "context_length": metadata.get(f"{arch}.context_length") if arch else None,
        "block_count": metadata.get(f"{arch}.block_count") if arch else None,
        "has_chat_template": isinstance(metadata.get("tokenizer.chat_template"), str),
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "add_bos_token": metadata.get("tokenizer.ggml.add_bos_token"),
        "split_count": metadata.get("split.count"),
    }
