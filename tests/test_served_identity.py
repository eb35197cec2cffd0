"""Identity of served results (issue 24, item 4): a placeholder server build never identifies an evaluation, and
a concurrency above 1 is part of the identity while concurrency-1 identities stay as they were (old databases
resume). Against the fake servers of test_served.py; the repeatability claim itself is tested against a real
llama-server in test_served_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medbench_local.analysis.pairing import DataLabel, concurrency_note, pair_task
from medbench_local.engine.openai_compat import OpenAICompatEngine, probe_server, require_capabilities
from medbench_local.engine.server_build import is_placeholder
from medbench_local.errors import ConfigError, UserError
from medbench_local.runner import engine_identity
from medbench_local.store.queries import EvaluationRecord
from tests.test_served import FakeServer, served_spec

PLACEHOLDERS = ["b0-unknown", "B0-UNKNOWN", "b0-1a2b3c4", "b0", "b7000-unknown", "unknown", "", "  "]
REAL = ["b9999-abc", "b1-0f3e2d1", "0.9.1", "0.3.36", "v0.10.0rc1", "b10000-def"]
# the output settings a concurrency-1 served evaluation had before this rule: its key must not change
SETTINGS_BEFORE = {"engine", "server_kind", "server_build", "weights", "n_ctx", "seed", "temperature", "sampler",
                   "request_sampling", "prompt_sent_as", "truncation", "prompt_mode", "model_stop"}


class BuildServer(FakeServer):
    """A llama-server fake that reports a chosen build and slot count in /props."""

    def __init__(self, build: str, slots: int | None = None) -> None:
        super().__init__("llama-server", n_ctx=256)
        self.build, self.slots = build, slots

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/props":
            props: dict[str, Any] = {"build_info": self.build, "default_generation_settings": {"n_ctx": 256}}
            if self.slots is not None:
                props["total_slots"] = self.slots
            return httpx.Response(200, json=props)
        return super().__call__(request)


def served_engine(tmp_path: Path, server: FakeServer, **extra: Any) -> OpenAICompatEngine:
    from medbench_local.engine.http import ServerClient

    spec = served_spec(tmp_path, **extra)
    return OpenAICompatEngine(spec, None, client=ServerClient(spec.served.base_url, retries=0,
                                                              transport=httpx.MockTransport(server)))


@pytest.mark.parametrize("build", PLACEHOLDERS)
def test_placeholder_builds_are_recognised(build: str) -> None:
    assert is_placeholder(build)


@pytest.mark.parametrize("build", REAL)
def test_real_builds_are_not_placeholders(build: str) -> None:
    assert not is_placeholder(build)


@given(st.integers(1, 10 ** 6), st.text("0123456789abcdef", min_size=1, max_size=12))
def test_every_numbered_build_with_a_commit_is_real(number: int, commit: str) -> None:
    assert not is_placeholder(f"b{number}-{commit}")


@pytest.mark.parametrize("build", ["b0-unknown", "b0-abc", "unknown"])
def test_a_placeholder_build_without_a_stand_in_is_refused_in_one_line_naming_model_and_fields(
        tmp_path: Path, build: str) -> None:
    server = BuildServer(build)
    spec = served_spec(tmp_path)
    from medbench_local.engine.http import ServerClient

    client = ServerClient(spec.served.base_url, retries=0, transport=httpx.MockTransport(server))
    for attempt in (lambda: require_capabilities(spec, probe_server(spec, client), ("generate",), client),
                    lambda: served_engine(tmp_path, server)):
        with pytest.raises(UserError) as refused:
            attempt()
        message = str(refused.value)
        assert "\n" not in message and "'served'" in message
        assert "server_binary" in message and "server_build" in message


def test_the_binary_hash_identifies_a_placeholder_build_and_differs_between_builds(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "llama-server", tmp_path / "b" / "llama-server"
    for path, content in ((first, b"\x7fELF build one"), (second, b"\x7fELF build two")):
        path.parent.mkdir()
        path.write_bytes(content)
    one = engine_identity(served_engine(tmp_path, BuildServer("b0-unknown"), server_binary=str(first)))
    again = engine_identity(served_engine(tmp_path, BuildServer("b0-unknown"), server_binary=str(first)))
    two = engine_identity(served_engine(tmp_path, BuildServer("b0-unknown"), server_binary=str(second)))
    assert one == again and one != two
    assert "unknown" not in str(one["settings"]["server_build"])
    assert one["settings"]["server_build"].startswith("sha256:")


def test_a_relative_server_binary_is_read_beside_models_toml_and_a_missing_one_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "llama-server").write_bytes(b"binary")
    found = engine_identity(served_engine(tmp_path, BuildServer("b0-unknown"), server_binary="llama-server"))
    assert found["settings"]["server_build"].startswith("sha256:")
    with pytest.raises(UserError) as refused:
        served_engine(tmp_path, BuildServer("b0-unknown"), server_binary="nowhere/llama-server")
    assert "\n" not in str(refused.value) and "server_binary" in str(refused.value)


def test_a_declared_build_identifies_a_placeholder_build(tmp_path: Path) -> None:
    one = engine_identity(served_engine(tmp_path, BuildServer("b0-unknown"), server_build="llama.cpp 1a2b3c"))
    two = engine_identity(served_engine(tmp_path, BuildServer("b0-unknown"), server_build="llama.cpp 4d5e6f"))
    assert one != two and one["settings"]["server_build"] == "llama.cpp 1a2b3c"


def test_a_real_build_keeps_its_identity_whatever_stands_in(tmp_path: Path) -> None:
    (tmp_path / "llama-server").write_bytes(b"binary")
    plain = engine_identity(served_engine(tmp_path, BuildServer("b9999-abc")))
    declared = engine_identity(served_engine(tmp_path, BuildServer("b9999-abc"), server_build="x",
                                             server_binary="llama-server"))
    assert plain == declared and plain["settings"]["server_build"] == "b9999-abc"


@pytest.mark.parametrize("value", ["unknown", "b0-unknown", "x" * 201, "tab\there"])
def test_a_declared_build_that_is_itself_a_placeholder_is_a_config_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        served_spec(tmp_path, server_build=value)
    assert "server_build" in str(refused.value) and "\n" not in str(refused.value)


def test_concurrency_one_keeps_the_identity_evaluations_had_before(tmp_path: Path) -> None:
    found = engine_identity(served_engine(tmp_path, BuildServer("b9999-abc", slots=4)))
    assert set(found["settings"]) == SETTINGS_BEFORE


@pytest.mark.parametrize("slots", [None, 1, 4])
def test_concurrency_above_one_and_the_slot_count_are_identity(tmp_path: Path, slots: int | None) -> None:
    one = engine_identity(served_engine(tmp_path, BuildServer("b9999-abc", slots=slots)))
    four = engine_identity(served_engine(tmp_path, BuildServer("b9999-abc", slots=slots), max_concurrency=4))
    eight = engine_identity(served_engine(tmp_path, BuildServer("b9999-abc", slots=slots), max_concurrency=8))
    assert len({str(one), str(four), str(eight)}) == 3
    assert four["settings"]["concurrency"] == {"max_concurrency": 4, "server_slots": slots}
    other_slots = engine_identity(served_engine(tmp_path, BuildServer("b9999-abc", slots=(slots or 1) + 1),
                                                max_concurrency=4))
    assert other_slots != four


def record(key: str, concurrency: int | None, slots: int | None = None) -> EvaluationRecord:
    settings: dict[str, Any] = {"engine": "openai"}
    if concurrency is not None:
        settings["concurrency"] = {"max_concurrency": concurrency, "server_slots": slots}
    return EvaluationRecord(key, "m", "medqa", {"task": {"data_sha256": "d"}, "identity": {"settings": settings}},
                            ("2026", "2026"), "medqa.jsonl")


@pytest.mark.parametrize("bio,gen,mixed", [
    ((None, None), (None, None), False), ((4, 4), (4, 4), False), ((None, None), (4, 4), True),
    ((4, 4), (4, 1), True), ((2, None), (8, None), True)])
def test_compare_says_in_one_line_when_a_pair_mixes_concurrency(bio: tuple[Any, Any], gen: tuple[Any, Any],
                                                                mixed: bool) -> None:
    groups, notes = pair_task("medqa", [record("b", *bio)], [record("g", *gen)])
    assert len(groups) == 1
    said = [note for note in notes if "concurrency" in note.text]
    assert len(said) == (1 if mixed else 0)
    if mixed:
        assert "\n" not in said[0].text and not said[0].refused
    assert (concurrency_note("medqa", DataLabel("x", "d"), record("b", *bio), record("g", *gen)) is None) \
        == (not mixed)
