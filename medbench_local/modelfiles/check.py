"""Pre-flight checks of one model file, run before anything is written.

Why a separate step: a wrong file (hash mismatch), a broken GGUF, or a chat model without a chat template
must be reported as one clear line *before* a run record is written or a model is loaded, so that bad input
never leaves traces in the results database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ModelSpec
from ..engine.base import Prompt
from ..engine.prompt_format import TemplateRenderError, render_chat
from ..errors import ModelFileError, UserError
from .gguf_header import read_gguf_metadata
from .hashing import cached_sha256


def check_model_file(spec: ModelSpec, path: Path) -> tuple[str, dict[str, Any]]:
    """Return (sha256, GGUF metadata) of a usable file, or raise a one-line error saying what is wrong."""
    metadata = read_gguf_metadata(path)
    sha256 = cached_sha256(path)
    if spec.sha256 and spec.sha256 != sha256:
        raise ModelFileError(f"model '{spec.id}': {path} has SHA-256 {sha256[:12]}…, but models.toml pins "
                             f"{spec.sha256[:12]}…; the file changed or is corrupted")
    if spec.prompt_mode == "chat":
        template = spec.chat_template or metadata.get("tokenizer.chat_template")
        if not isinstance(template, str):
            raise UserError(f"model '{spec.id}': prompt_mode is 'chat' but {path.name} has no chat template; "
                            "set prompt_mode = \"base\" or chat_template = \"...\" in models.toml")
        try:  # a template that cannot render a two-turn prompt would fail on every item
            render_chat(template, Prompt(system="system", user="question", answer_prefix="Answer:"))
        except TemplateRenderError as exc:
            raise UserError(f"model '{spec.id}': {exc}") from None
    return sha256, metadata
