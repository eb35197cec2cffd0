"""Hostile input, part 2 (issue 10, classes 6, 7, 8): numbers with limits, bounded parsing, prompt overrides.

Same pattern as test_hostile_input.py: every row is a ``run`` that must end with exactly one 'Error:' line
naming what is wrong, exit code 1, no traceback, and no database. FIFOs are watched: a writer thread waits for
a reader, so a FIFO that the command opens is noticed (and released) instead of hanging the suite. Property
tests (hypothesis) cover the whole classes behind the rows: any numeric value in models.toml, any prompt
override text, any damaged GGUF header.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medbench_local.config import INT32_MAX, load_config
from medbench_local.errors import ConfigError, DataError, ModelFileError
from medbench_local.modelfiles.gguf_header import MAX_ARRAY_ITEMS, MAX_STRING_BYTES, read_gguf_metadata
from medbench_local.tasks import get_task
from medbench_local.tasks.datafiles import MAX_CSV_FIELD, MAX_JSON_DEPTH
from medbench_local.tasks.mcq_data import load_mcq
from medbench_local.tasks.prompts import load_override

from .conftest import REPO, invoke
from .fifowatch import WATCHES, FifoWatch
from .test_hostile_input import GOOD_CASE, Case, line, model_file, with_data  # noqa: F401 (a fixture)

# ------------------------------------------------------------------------------------------- helpers




def config_with(work: Path, model: Path | str, body: str) -> Path:
    """models.toml with one model 'm'; ``body`` starts on line 4."""
    path = work / "models.toml"
    path.write_text(f'[models.m]\nrole = "general"\npath = "{model}"\n{body}\n', encoding="utf-8")
    return path


def with_settings(body: str) -> Callable[[Path, Path], list[str]]:
    def build(work: Path, model: Path) -> list[str]:
        return ["--config", str(config_with(work, model, body)), "--model", "m", "--task", "jama"]
    return build


def with_options(*options: str) -> Callable[[Path, Path], list[str]]:
    def build(work: Path, model: Path) -> list[str]:
        return ["--config", str(config_with(work, model, "")), "--model", "m", "--task", "jama", *options]
    return build


def with_prompts(text: str | bytes) -> Callable[[Path, Path], list[str]]:
    def build(work: Path, model: Path) -> list[str]:
        prompts = work / "prompts.toml"
        prompts.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return ["--config", str(config_with(work, model, "")), "--model", "m", "--task", "jama",
                "--prompts", str(prompts)]
    return build


def with_template(template: str) -> Callable[[Path, Path], list[str]]:
    return with_settings(f"chat_template = '''{template}'''")


def fifo_as(role: str) -> Callable[[Path, Path], list[str]]:
    def build(work: Path, model: Path) -> list[str]:
        fifo = work / {"data": "cases.jsonl", "prompts": "prompts.toml", "config": "fifo.toml",
                       "model": "model.gguf", "lock": "models.lock"}[role]
        WATCHES.append(FifoWatch(fifo))
        config = config_with(work, fifo if role == "model" else model, "")
        args = ["--config", str(fifo if role == "config" else config), "--model", "m", "--task", "jama"]
        return args + (["--data", str(fifo)] if role == "data" else ["--prompts", str(fifo)] if role == "prompts"
                       else [])
    return build


def socket_as_data(work: Path, model: Path) -> list[str]:
    here = os.getcwd()
    os.chdir(work)  # bind by a relative name: AF_UNIX paths are limited to ~100 characters
    try:
        server = socket.socket(socket.AF_UNIX)
        server.bind("cases.jsonl")
        server.close()
    finally:
        os.chdir(here)
    return ["--config", str(config_with(work, model, "")), "--model", "m", "--task", "jama", "--data",
            str(work / "cases.jsonl")]


def device_as_data(work: Path, model: Path) -> list[str]:
    return ["--config", str(config_with(work, model, "")), "--model", "m", "--task", "jama", "--data", "/dev/null"]


def cut_tensor_data(work: Path, model: Path) -> list[str]:
    """The whole header and most of the weights: what an interrupted copy leaves."""
    cut = work / "cut.gguf"
    with open(model, "rb") as source, open(cut, "wb") as target:
        target.write(source.read(model.stat().st_size - 4096))
    return ["--config", str(config_with(work, cut, "")), "--model", "m", "--task", "jama"]


def nested_lock(work: Path, model: Path) -> list[str]:
    (work / "models.lock").write_text('{"format": "medbench-local.models.lock", "models": '
                                      + "[" * 100_000 + "]" * 100_000 + "}")
    return ["--config", str(config_with(work, model, "")), "--model", "m", "--task", "jama"]


DEEP = "[" * 100_000 + "]" * 100_000

CASES = [
    # 6. numbers with limits (models.toml: file, line and key; CLI: the option)
    Case("n_ctx beyond the trained context", with_settings("n_ctx = 8193"),
         "n_ctx 8193 exceeds the context SmolLM2-135M-Instruct.Q4_1.gguf was trained with (8192 tokens"),
    Case("n_ctx beyond int32", with_settings("n_ctx = 4294967808"),
         f"models.toml:4: models.m.n_ctx: expected an integer >= 128 and <= {INT32_MAX}"),
    Case("n_ctx nan", with_settings("n_ctx = nan"), "models.toml:4: models.m.n_ctx: expected an integer"),
    Case("n_ctx inf", with_settings("n_ctx = inf"), "got inf (infinite)"),
    Case("n_ctx boolean", with_settings("n_ctx = true"), "got true (a boolean, not a number)"),
    Case("n_ctx float", with_settings("n_ctx = 4096.0"), "got 4096.0 (a float)"),
    Case("n_ctx negative", with_settings("n_ctx = -4096"), "models.toml:4: models.m.n_ctx"),
    Case("n_ctx huge integer", with_settings("n_ctx = 1" + "0" * 5000), "models.toml: TOML not readable"),
    Case("n_gpu_layers below -1", with_settings("n_gpu_layers = -2"), "models.m.n_gpu_layers: expected an integer"),
    Case("n_gpu_layers beyond int32", with_settings("n_gpu_layers = 2147483648"), "models.m.n_gpu_layers"),
    Case("main_gpu beyond the device count", with_settings("main_gpu = 16"), "models.m.main_gpu"),
    Case("tensor_split with inf", with_settings("tensor_split = [1, inf]"), "entry 2 is inf (infinite)"),
    Case("tensor_split with nan", with_settings("tensor_split = [nan]"), "entry 1 is nan (not a number)"),
    Case("tensor_split negative", with_settings("tensor_split = [3, -1]"), "entry 2 is -1"),
    Case("tensor_split boolean", with_settings("tensor_split = [true, 1]"), "entry 1 is true (a boolean"),
    Case("tensor_split all zero", with_settings("tensor_split = [0, 0]"), "all entries are 0"),
    Case("tensor_split too long", with_settings("tensor_split = [" + ", ".join(["1"] * 17) + "]"),
         "at most 16 devices"),
    Case("allow_context_beyond_trained not a boolean", with_settings('allow_context_beyond_trained = "yes"'),
         "models.m.allow_context_beyond_trained: expected true or false"),
    Case("n_ctx beyond memory", with_settings(f"n_ctx = {INT32_MAX}\nallow_context_beyond_trained = true\n"
                                              "n_gpu_layers = 0"), ": does not fit"),
    Case("--threads 0", with_options("--threads", "0"), "invalid value for '--threads'"),
    Case("--threads beyond 512", with_options("--threads", "513"), "invalid value for '--threads'"),
    Case("--batch-size 0", with_options("--batch-size", "0"), "invalid value for '--batch-size'"),
    Case("--batch-size beyond 65536", with_options("--batch-size", "65537"), "invalid value for '--batch-size'"),
    Case("--seed negative", with_options("--seed", "-1"), "invalid value for '--seed'"),
    Case("--seed 2**32-1 (llama.cpp's 'random')", with_options("--seed", str(2**32 - 1)),
         "invalid value for '--seed'"),
    # 7. bounded parsing
    Case("GGUF with its tensor data cut short", cut_tensor_data,
         "truncated GGUF file (its header declares tensor data"),
    Case("data file is a FIFO", fifo_as("data"), "not a regular file"),
    Case("prompts file is a FIFO", fifo_as("prompts"), "not a regular file"),
    Case("models.toml is a FIFO", fifo_as("config"), "not a regular file"),
    Case("model file is a FIFO", fifo_as("model"), "not a regular file"),
    Case("models.lock is a FIFO", fifo_as("lock"), "models.lock: not a regular file"),
    Case("data file is a socket", socket_as_data, "not a regular file"),
    Case("data file is a device", device_as_data, "/dev/null: not a regular file"),
    Case("data: JSON nested 100,000 deep", with_data(line()[:-2] + b', "extra": ' + DEEP.encode() + b"}\n"),
         ":1: JSON nested too deeply"),
    Case("data: JSON nested 65 deep", with_data(line()[:-2] + b', "extra": ' + b"[" * 65 + b"]" * 65 + b"}\n"),
         ":1: JSON nested too deeply"),
    Case("data: JSON integer of 5000 digits", with_data(b'{"id": 1' + b"0" * 5000 + b"}\n"), ":1: malformed JSON"),
    Case("data: CSV cell beyond the 16 MiB cap",
         with_data(b"id,case,question,A,B,answer\nx,\"" + b"a" * (MAX_CSV_FIELD + 1) + b"\",q,a,b,A\n", "cases.csv"),
         "malformed CSV (field larger than field limit"),
    Case("models.toml nested 100,000 deep", with_settings("stop = " + DEEP), "TOML not readable: values nested"),
    Case("models.lock nested 100,000 deep", nested_lock, "models.lock: cannot read the lock file (nested too deeply)"),
    # 8. prompt overrides (checked before the database or a model is touched)
    Case("prompt conversion", with_prompts('user = "{case!r} {question} {options}"'), "conversion or format spec"),
    Case("prompt format spec", with_prompts('user = "{case:>10}"'), "placeholder {case:>10} has a conversion"),
    Case("prompt positional field", with_prompts('user = "{0}"'), "positional placeholder {0}"),
    Case("prompt empty field", with_prompts('user = "{} {case}"'), "positional placeholder {}"),
    Case("prompt attribute access", with_prompts('user = "{case.__class__}"'), "attribute or index access"),
    Case("prompt index access", with_prompts('user = "{case[0]}"'), "attribute or index access"),
    Case("prompt unbalanced {", with_prompts('user = "{case"'), "unbalanced braces"),
    Case("prompt unbalanced }", with_prompts('user = "case}"'), "unbalanced braces"),
    Case("prompt unknown placeholder", with_prompts('user = "{patient}"'), "unknown placeholder {patient}"),
    Case("prompt placeholder in system", with_prompts('system = "Read {case}"'), "only filled in 'user'"),
    Case("prompt file too large", with_prompts('system = "' + "x" * 300_000 + '"'), "larger than the 262,144"),
    Case("prompt file nested deeply", with_prompts("system = " + DEEP), "nested too deeply"),
    Case("chat_template that does not compile", with_template("{% for %}"),
         "models.toml:4: models.m.chat_template: chat template does not compile"),
    Case("chat_template with a huge loop",
         with_template("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
         "exceeds the rendering"),
    Case("chat_template with a huge output", with_template("{% for i in range(100000) %}{{ messages }}{% endfor %}"),
         "asks for an output of"),
    Case("chat_template with a huge string", with_template("{{ 'x' * 1000000000 }}"), "asks for a repeated value"),
    Case("chat_template with a huge width", with_template("{{ 'x'|center(1000000000) }}"),
         "passes 1,000,000,000 to a call or filter"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_limits(case: Case, tmp_path: Path, model_file: Path,  # noqa: F811 (the fixture)
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    WATCHES.clear()
    db = tmp_path / "results.db"
    try:
        usage = case.name.startswith("--")  # a bad option value is a usage error: exit 2 (files: exit 1)
        result = invoke("run", *case.build(tmp_path, model_file), "--db", str(db), expect=2 if usage else 1)
    finally:
        opened = [watch.path.name for watch in WATCHES if watch.release()]
    assert opened == [], f"the command opened the FIFO {opened} for reading"
    error_lines = [text for text in result.output.splitlines() if text.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    assert case.expect.lower() in error_lines[0].lower(), result.output
    assert "Traceback" not in result.output
    assert not db.exists()


@pytest.mark.parametrize("args, option", [
    (("compare", "--resamples", "99"), "--resamples"),
    (("compare", "--resamples", "1000001"), "--resamples"),
    (("compare", "--seed", "-1"), "--seed"),
    (("compare", "--seed", str(2**32)), "--seed"),
    (("reproduce", "--resamples", "5"), "--resamples"),
])
def test_statistics_options_have_ranges(tmp_path: Path, args: tuple[str, ...], option: str) -> None:
    db = tmp_path / "results.db"
    result = invoke(*args, "--db", str(db), expect=2)  # a usage error, like every bad option value
    error_lines = [text for text in result.output.splitlines() if text.startswith("Error:")]
    assert len(error_lines) == 1 and error_lines[0].startswith(f"Error: Invalid value for '{option}': ")
    assert not db.exists()


# ------------------------------------------------------------------------------------------- 6: properties

NUMBER_KEYS = ("n_ctx", "n_gpu_layers", "main_gpu")
toml_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(alphabet="abc123 .-", max_size=5),
)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 0 else "-inf") if abs(value) == float("inf") \
            else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(NUMBER_KEYS + ("tensor_split",)), value=toml_numbers,
       split=st.lists(toml_numbers, max_size=18))
def test_any_numeric_setting_is_in_range_or_a_config_error_with_its_line(tmp_path: Path, key: str, value: object,
                                                                      split: list[object]) -> None:
    text = _toml(value) if key != "tensor_split" else "[" + ", ".join(_toml(v) for v in split) + "]"
    path = tmp_path / "models.toml"
    path.write_text(f'[models.m]\nrole = "general"\npath = "m.gguf"\n{key} = {text}\n', encoding="utf-8")
    try:
        spec = load_config(path).model("m")
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}:4: models.m.{key}: ") and "\n" not in str(exc)
        return
    if key == "tensor_split":
        assert spec.tensor_split and len(spec.tensor_split) <= 16 and any(x > 0 for x in spec.tensor_split)
        assert all(0 <= x < float("inf") for x in spec.tensor_split)
    else:
        number = getattr(spec, key)
        assert isinstance(number, int) and not isinstance(number, bool)
        assert {"n_ctx": 128, "n_gpu_layers": -1, "main_gpu": 0}[key] <= number <= INT32_MAX


# ------------------------------------------------------------------------------------------- 7: bounded parsing


def gguf(kvs: bytes = b"", kv_count: int = 0, tensors: bytes = b"", tensor_count: int = 0, data: bytes = b"",
         alignment: int = 32) -> bytes:
    """A GGUF v3 file: header, raw key/value bytes, raw tensor infos, padding, data."""
    head = b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count) + kvs + tensors
    if data:
        head += b"\0" * (-len(head) % alignment)
    return head + data


def gguf_string(text: str | bytes) -> bytes:
    raw = text if isinstance(text, bytes) else text.encode()
    return struct.pack("<Q", len(raw)) + raw


def kv_string(key: str, value: str) -> bytes:
    return gguf_string(key) + struct.pack("<I", 8) + gguf_string(value)


def tensor_info(name: str, dims: tuple[int, ...], kind: int, offset: int) -> bytes:
    return gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims) \
        + struct.pack("<IQ", kind, offset)


def test_gguf_tensor_data_length_is_checked_against_the_file_size(tmp_path: Path) -> None:
    # two F32 tensors of 4x8 (128 bytes each) and one Q4_0 row of 64 (2 blocks x 18 bytes)
    infos = tensor_info("a", (4, 8), 0, 0) + tensor_info("b", (4, 8), 0, 128) + tensor_info("c", (64,), 2, 256)
    whole = gguf(kv_string("general.architecture", "llama"), 1, infos, 3, b"\1" * (256 + 36))
    path = tmp_path / "m.gguf"
    path.write_bytes(whole)
    assert read_gguf_metadata(path)["gguf.tensor_data_end"] == len(whole)
    path.write_bytes(whole[:-1])
    with pytest.raises(ModelFileError, match=f"truncated GGUF file .*up to byte {len(whole):,}, but the file has "
                                             f"{len(whole) - 1:,} bytes"):
        read_gguf_metadata(path)


@pytest.mark.parametrize("content, reason", [
    (gguf(tensors=tensor_info("t", (4,), 0, 3), tensor_count=1), "not a multiple of the alignment"),
    (gguf(tensors=tensor_info("t", (1, 1, 1, 1, 1), 0, 0), tensor_count=1), "5 dimensions"),
    (gguf(tensors=tensor_info("t", (33,), 2, 0), tensor_count=1), "does not fit type 2's blocks"),
    (gguf(gguf_string("general.alignment") + struct.pack("<II", 4, 24), 1), "not a power of two"),
    (gguf(kv_count=65_537), "65,537 metadata entries, the limit is 65,536"),
    (gguf(tensor_count=2**40), "tensors, the limit is 65,536"),
    (gguf(struct.pack("<Q", 2**62), 1), "metadata key of"),
    (gguf(gguf_string("k") + struct.pack("<IQ", 8, MAX_STRING_BYTES + 1), 1), "string of 4,194,305 bytes"),
    (gguf(gguf_string("k") + struct.pack("<IIQ", 9, 0, MAX_ARRAY_ITEMS + 1), 1), "array of 16,777,217 items"),
    (gguf(gguf_string("k") + struct.pack("<IIQ", 9, 8, 3) + struct.pack("<Q", 2**60), 1), "string of"),
    (gguf(gguf_string("t") + struct.pack("<I", 2**31), 1), "corrupted GGUF metadata \\(value type"),
])
def test_gguf_limits_are_enforced(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=reason):
        read_gguf_metadata(path)


@pytest.mark.parametrize("array", [
    struct.pack("<IIQ", 9, 0, MAX_ARRAY_ITEMS),        # 16 MiB of uint8 declared, 0 present
    struct.pack("<IIQ", 9, 10, MAX_ARRAY_ITEMS),       # 128 MiB of uint64 declared
    struct.pack("<IQ", 8, MAX_STRING_BYTES),           # a 4 MiB string declared
], ids=["uint8-array", "uint64-array", "string"])
def test_gguf_lengths_are_checked_before_anything_is_allocated(tmp_path: Path, array: bytes) -> None:
    """Declared sizes within the limits but beyond the file: refused as truncated without reading them."""
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf(gguf_string("tokenizer.ggml.scores") + array, 1))
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="truncated GGUF file"):
            read_gguf_metadata(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"{peak:,} bytes allocated for a header of {path.stat().st_size} bytes"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_gguf_headers_are_one_model_file_error(tmp_path: Path, data: st.DataObject) -> None:
    infos = tensor_info("a", (4, 8), 0, 0) + tensor_info("b", (32,), 8, 128)
    whole = bytearray(gguf(kv_string("general.architecture", "llama") + kv_string("tokenizer.chat_template", "x"),
                           2, infos, 2, b"\1" * (128 + 34)))
    for _ in range(data.draw(st.integers(1, 6))):
        index = data.draw(st.integers(0, len(whole) - 1))
        whole[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(whole)))
    path = tmp_path / "m.gguf"
    path.write_bytes(bytes(whole[:cut]))
    try:
        metadata = read_gguf_metadata(path)
    except ModelFileError as exc:
        assert "\n" not in str(exc)
    else:
        assert metadata["gguf.tensor_data_end"] <= cut


def test_a_long_csv_cell_is_read_and_the_csv_limit_restored(tmp_path: Path) -> None:
    letter = "Discharge letter. " * 30_000  # 540 kB, beyond the csv module's default of 131,072
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["id", "case", "question", "A", "B", "answer"],
                                  ["c1", letter, "Diagnosis?", "MI", "PE", "A"]])
    path = tmp_path / "cases.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    default = csv.field_size_limit()
    items = load_mcq(path)
    assert items[0].payload["case"] == letter.strip()
    assert csv.field_size_limit() == default


@pytest.mark.parametrize("task_id, name", [
    ("medqa", "phrases_no_exclude_test.jsonl"), ("mednli", "mli_test_v1.jsonl"), ("longhealth", "benchmark_v5.json"),
    ("medisumcode", "medisumcode.json"), ("pubmedqa", "ori_pqal.json"),
])
def test_every_json_loader_refuses_deep_nesting_in_one_line(tmp_path: Path, task_id: str, name: str) -> None:
    path = tmp_path / name
    path.write_text('{"a": ' + DEEP + "}\n" if name.endswith(".jsonl") else "[" + DEEP + "]")
    with pytest.raises(DataError, match=f"JSON nested too deeply \\(more than {MAX_JSON_DEPTH} levels\\)"):
        get_task(task_id).load(path)


# ------------------------------------------------------------------------------------------- 8: prompt overrides

JAMA = get_task("jama").template


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.lists(st.sampled_from(list("{}!:.[]0rs>x ") + ["case", "question", "options", "zz"]),
                    max_size=14).map("".join))
def test_an_accepted_prompt_override_always_renders(tmp_path: Path, user: str) -> None:
    path = tmp_path / "prompts.toml"
    path.write_text(f"user = {json.dumps(user)}\n", encoding="utf-8")
    try:
        template = load_override(path, JAMA)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: user: ") and "\n" not in str(exc)
        return
    rendered = template.user.format(case="C", question="Q", options="O")
    assert isinstance(rendered, str) and template.fields() <= JAMA.fields()
