"""models.toml: the shipped file parses, and every kind of mistake is one line with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from medbench_local.config import HubSource, PackageSource, load_config
from medbench_local.errors import ConfigError

from .conftest import REPO, invoke

GOOD_MODEL = 'role = "general"\npath = "m.gguf"\n'


def test_shipped_models_toml_has_demo_and_study_pairs() -> None:
    config = load_config(REPO / "models.toml")
    assert set(config.pairs) >= {"demo", "openbiollm-8b", "openbiollm-70b", "biomistral-7b", "meditron-7b",
                                 "meditron-70b"}
    demo = config.pair("demo")
    assert isinstance(config.model(demo.biomedical).source, PackageSource)
    assert config.model(demo.general).prompt_mode == "base"
    for pair in config.pairs.values():
        if config.model(pair.biomedical).is_arm or config.model(pair.general).is_arm:
            continue  # a pair with a retrieval arm compares it with anything, its own model too (docs/retrieval.md)
        assert config.model(pair.biomedical).role == "biomedical"
        assert config.model(pair.general).role == "general"
    hub = [m for m in config.models.values() if isinstance(m.source, HubSource)]
    assert len(hub) == 10 and all(m.source.revision for m in hub)


CASES = [
    # (toml text, expected line, expected fragments)
    ('[models.a]\nrole = "general"\npath = \n', None, ["TOML syntax error", "line 3"]),
    (f'[models.a]\n{GOOD_MODEL}n_gpu_layer = 3\n', 4, ["models.a.n_gpu_layer", "unknown key"]),
    ('[models.a]\npath = "m.gguf"\n', 1, ["models.a", "missing required key 'role'"]),
    ('[models.a]\nrole = "medical"\npath = "m.gguf"\n', 2, ["models.a.role", "biomedical, general"]),
    ('[models.a]\nrole = "general"\n', 1, ["needs exactly one source"]),
    ('[models.a]\nrole = "general"\npath = "x"\nrepo = "o/n"\n', 1, ["found path, repo"]),
    ('[models.a]\nrole = "general"\nrepo = "o/n"\nfile = "f.gguf"\n', 1, ["missing required key 'revision'"]),
    ('[models.a]\nrole = "general"\nrepo = "noslash"\nfile = "f"\nrevision = "r"\n', 3, ["models.a.repo",
                                                                                       "owner/name"]),
    (f'[models.a]\n{GOOD_MODEL}n_ctx = "big"\n', 4, ["models.a.n_ctx", "integer"]),
    (f'[models.a]\n{GOOD_MODEL}sha256 = "abc"\n', 4, ["models.a.sha256", "64 hexadecimal"]),
    (f'[models.a]\n{GOOD_MODEL}prompt_mode = "instruct"\n', 4, ["prompt_mode", "chat, base"]),
    (f'[models.a]\n{GOOD_MODEL}stop = "x"\n', 4, ["models.a.stop", "list"]),
    (f'[models.a]\n{GOOD_MODEL}\n[pairs.p]\nbiomedical = "zzz"\ngeneral = "a"\n', 6,
     ["pairs.p.biomedical", "unknown model 'zzz'"]),
    (f'[models.a]\n{GOOD_MODEL}\n[pairs.p]\nbiomedical = "a"\ngeneral = "a"\n', 6,
     ["pairs.p.biomedical", "has role 'general'"]),
    (f'[models.a]\n{GOOD_MODEL}\n[models.a]\n{GOOD_MODEL}', None, ["TOML syntax error", "line 5"]),
    (f'[model.a]\n{GOOD_MODEL}', 1, [": model: unknown top-level key"]),
    (f'[models.a]\n{GOOD_MODEL}\n[pairs.p]\ngeneral = "a"\n', 5, ["pairs.p", "missing required key 'biomedical'"]),
]


@pytest.mark.parametrize(("text", "line", "fragments"), CASES)
def test_config_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int | None,
                                              fragments: list[str]) -> None:
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path) + (f":{line}:" if line else ":")), message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message


def test_missing_and_non_utf8_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "models.toml"
    bad.write_bytes(b'[models.a]\nrole = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.a]\n{GOOD_MODEL}')
    assert load_config(path).model("a").source.path == tmp_path / "m.gguf"  # type: ignore[union-attr]


def test_cli_reports_config_error_as_one_line_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.a]\n{GOOD_MODEL}colour = "blue"\n')
    result = invoke("models", "list", "--config", str(path), expect=1)
    assert result.output.strip().splitlines() == [f"Error: {path}:4: models.a.colour: unknown key "
                                                  + result.output.split("unknown key ", 1)[1].strip()]
    assert "Traceback" not in result.output
