"""A small, dependency-free reader for the header of a GGUF file.

Why our own: we must say "this is not a GGUF file" or "this GGUF is truncated" in one clear line *before*
llama.cpp is asked to load it (llama.cpp prints to stderr and raises a bare ValueError), and we want the chat
template, architecture and quantization for ``models list`` without loading gigabytes of weights.
The key/value metadata is read; large arrays (the tokenizer vocabulary) are skipped and reported by length
only. The tensor descriptions are read but not kept: from their types, shapes and offsets we know where the
tensor data must end, so a file that was cut short (an interrupted copy) is refused here.

Why bounded: the header is input from outside. Every length in it (string, array, counts) is read first and
checked against the limits below *before* anything of that size is read or allocated, and nothing is read
past the end of the file; a header beyond the limits is reported as corrupted.
"""

from __future__ import annotations

import os
import stat
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ModelFileError
from ..gates.files import remember_input

GGUF_MAGIC = b"GGUF"
_SCALARS: dict[int, str] = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# Documented limits (README "Guarantees"): far above any real model, far below what a corrupted length asks for.
MAX_KV_COUNT = 65_536                  # metadata entries (real files: 20-60)
MAX_TENSOR_COUNT = 65_536              # tensors (a 70B model: ~720; MoE files with merged experts: ~1,100)
MAX_KEY_BYTES = 4_096                  # one metadata key
MAX_STRING_BYTES = 4 * 1024 * 1024     # one string value (a chat template is a few KB)
MAX_ARRAY_ITEMS = 1 << 24              # one array (vocabularies: up to ~260k tokens, merges ~500k)
MAX_HEADER_BYTES = 512 * 1024 * 1024   # metadata + tensor descriptions together (real files: a few MB)
MAX_TENSOR_DIMS = 4                    # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32                 # GGUF_DEFAULT_ALIGNMENT, unless general.alignment says otherwise

# ggml tensor types: (elements per block, bytes per block). Used to compute how many bytes each tensor needs.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18), 42: (64, 18),
}

# llama.cpp's enum llama_ftype (general.file_type) -> the usual quantization name.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}


class _Reader:
    """Reads forward through the header; every read or skip is checked against the file size and the header
    limit first, so a corrupted length can neither allocate nor seek beyond the file."""

    def __init__(self, handle: BinaryIO, path: Path, file_size: int):
        self.handle, self.path, self.file_size = handle, path, file_size
        self.position = handle.tell()

    def corrupted(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: corrupted GGUF metadata ({what})")

    def _reserve(self, size: int) -> None:
        end = self.position + size
        if end > self.file_size:
            raise ModelFileError(f"{self.path}: truncated GGUF file (metadata header ends early)")
        if end > MAX_HEADER_BYTES:
            raise self.corrupted(f"header larger than the {MAX_HEADER_BYTES:,}-byte limit")
        self.position = end

    def read(self, size: int) -> bytes:
        self._reserve(size)
        data = self.handle.read(size)
        if len(data) != size:  # the file shrank while we read it
            raise ModelFileError(f"{self.path}: truncated GGUF file (metadata header ends early)")
        return data

    def skip(self, size: int) -> None:
        self._reserve(size)
        self.handle.seek(self.position)

    def scalar(self, kind: int) -> Any:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def length(self, limit: int, what: str) -> int:
        (length,) = struct.unpack("<Q", self.read(8))
        if length > limit:
            raise self.corrupted(f"{what} of {length:,} bytes, the limit is {limit:,}")
        return length

    def string(self, limit: int = MAX_STRING_BYTES, what: str = "string") -> str:
        return self.read(self.length(limit, what)).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(kind)
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = struct.unpack("<IQ", self.read(12))
            if count > MAX_ARRAY_ITEMS:
                raise self.corrupted(f"array of {count:,} items, the limit is {MAX_ARRAY_ITEMS:,}")
            if item_kind in _SCALARS:
                self.skip(struct.calcsize(_SCALARS[item_kind]) * count)
            elif item_kind == _STRING:
                for _ in range(count):
                    self.skip(self.length(MAX_STRING_BYTES, "string"))
            else:
                raise ModelFileError(f"{self.path}: corrupted GGUF metadata (array item type {item_kind})")
            return {"array_length": count}
        raise ModelFileError(f"{self.path}: corrupted GGUF metadata (value type {kind})")


def read_gguf_metadata(path: Path | str) -> dict[str, Any]:
    """Return the GGUF key/value metadata (arrays summarised). Raises ModelFileError with a clear reason.

    Parsing walks the whole vocabulary and a run asks twice per model (pre-flight, then the engine), so
    results are cached per (path, size, mtime): a changed file is read again. Only regular files are opened:
    a FIFO or device given as a model would block or never end.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ModelFileError(f"{path}: is a directory, expected a .gguf file")
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(f"{path}: not a regular file (a pipe, socket or device), expected a .gguf file")
    remember_input(path)  # no output of this command may replace a model file (gates/files.py)
    return dict(_read_cached(str(path), info.st_size, info.st_mtime_ns))


@lru_cache(maxsize=32)
def _read_cached(path_text: str, size: int, mtime_ns: int) -> dict[str, Any]:
    path = Path(path_text)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot open model file ({exc.strerror})") from None
    with handle:
        file_size = os.fstat(handle.fileno()).st_size
        head = handle.read(4)
        if len(head) == 0:
            raise ModelFileError(f"{path}: empty file, expected a GGUF model")
        if head != GGUF_MAGIC:
            raise ModelFileError(f"{path}: not a GGUF file (starts with {head!r}, expected b'GGUF')")
        reader = _Reader(handle, path, file_size)
        version = reader.scalar(4)
        if version not in (2, 3):
            raise ModelFileError(f"{path}: unsupported GGUF version {version} (expected 2 or 3)")
        tensor_count, kv_count = struct.unpack("<QQ", reader.read(16))
        if kv_count > MAX_KV_COUNT:
            raise reader.corrupted(f"{kv_count:,} metadata entries, the limit is {MAX_KV_COUNT:,}")
        if tensor_count > MAX_TENSOR_COUNT:
            raise reader.corrupted(f"{tensor_count:,} tensors, the limit is {MAX_TENSOR_COUNT:,}")
        metadata: dict[str, Any] = {"gguf.version": version, "gguf.tensor_count": tensor_count}
        for _ in range(kv_count):
            key = reader.string(MAX_KEY_BYTES, "metadata key")
            (kind,) = struct.unpack("<I", reader.read(4))
            metadata[key] = reader.value(kind)
        data_end = _tensor_data_end(reader, tensor_count, metadata)
        if data_end > file_size:
            raise ModelFileError(f"{path}: truncated GGUF file (its header declares tensor data up to byte "
                                 f"{data_end:,}, but the file has {file_size:,} bytes: an interrupted copy or "
                                 "download; copy or pull it again)")
        metadata["gguf.tensor_data_end"] = data_end
        return metadata


def _tensor_data_end(reader: _Reader, tensor_count: int, metadata: dict[str, Any]) -> int:
    """Read the tensor descriptions; return the byte offset at which the last tensor's data ends.

    Each description is: name, number of dimensions, the dimensions, ggml type, offset (relative to the data
    section, which starts at the next multiple of ``general.alignment`` after the descriptions). Tensors of a
    type this table does not know (a newer llama.cpp) count with their offset only.
    """
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 \
            or alignment & (alignment - 1):
        raise reader.corrupted(f"general.alignment {alignment!r} is not a power of two")
    relative_end = 0
    for _ in range(tensor_count):
        reader.skip(reader.length(MAX_KEY_BYTES, "tensor name"))
        (n_dims,) = struct.unpack("<I", reader.read(4))
        if n_dims > MAX_TENSOR_DIMS:
            raise reader.corrupted(f"a tensor with {n_dims} dimensions, at most {MAX_TENSOR_DIMS} exist")
        dims = struct.unpack(f"<{n_dims}Q", reader.read(8 * n_dims))
        kind, offset = struct.unpack("<IQ", reader.read(12))
        if offset % alignment:
            raise reader.corrupted(f"tensor offset {offset} is not a multiple of the alignment {alignment}")
        size = 0
        if kind in GGML_TYPE_SIZES and dims:
            block_elements, block_bytes = GGML_TYPE_SIZES[kind]
            if dims[0] % block_elements:
                raise reader.corrupted(f"a tensor row of {dims[0]} elements does not fit type {kind}'s blocks of "
                                       f"{block_elements}")
            size = dims[0] // block_elements * block_bytes
            for dim in dims[1:]:
                size *= dim
        relative_end = max(relative_end, offset + size)
    if relative_end == 0:  # no tensor data (a vocabulary-only file): nothing follows, not even padding
        return reader.position
    data_start = -(-reader.position // alignment) * alignment
    return data_start + relative_end


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
