"""A llama.cpp build that crashes on this CPU is "Not ready" in doctor and one line in run, before anything is
created (issue 20, point 1). The child process is replaced by one that dies the way a native build does on a
VM that advertises AMX without enabling it (SIGILL, SIGSEGV); the real child runs in the e2e tests."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from medbench_local.engine import selftest
from medbench_local.engine.cpu_flags import cpu_flags, portable_cmake_args, rebuild_command

from .conftest import REPO, invoke


def crashing_child(signum: int):  # type: ignore[no-untyped-def]
    return lambda model: [sys.executable, "-c", f"import os; os.kill(os.getpid(), {signum})"]


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder without a remembered success, so that the probe really runs."""
    home = tmp_path / "home"
    monkeypatch.setenv("MEDBENCH_LOCAL_HOME", str(home))
    return home


@pytest.mark.parametrize("signum", [signal.SIGILL, signal.SIGSEGV, signal.SIGBUS])
def test_doctor_says_not_ready_with_the_rebuild_command_when_decoding_crashes(
        signum: int, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch, in_repo: Path) -> None:
    monkeypatch.setattr(selftest, "probe_command", crashing_child(signum))
    result = invoke("doctor", "--model", "smollm2-135m-instruct", "--offline", expect=1)
    line = next(line for line in result.output.splitlines() if "llama.cpp crashed" in line)
    assert signal.Signals(signum).name in line and "rebuild it for this CPU" in line
    assert rebuild_command() in line.replace("\n", "")
    assert "Not ready" in result.output and "Ready." not in result.output


def test_run_refuses_before_creating_anything_when_decoding_crashes(fresh_cache: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     in_repo: Path) -> None:
    monkeypatch.setattr(selftest, "probe_command", crashing_child(signal.SIGILL))
    db = tmp_path / "results.db"
    result = invoke("run", "--pair", "demo", "--task", "jama", "--db", str(db), expect=1)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "SIGILL" in errors[0] and "pip install --force-reinstall" in errors[0]
    assert not db.exists() and list(tmp_path.glob("results.db*")) == []


def test_a_failure_is_never_remembered_and_a_success_is(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    calls: list[Path] = []

    def counting(command):  # type: ignore[no-untyped-def]
        def make(path: Path) -> list[str]:
            calls.append(path)
            return command(path)
        return make

    crash = selftest.check_decoding(model, fresh_cache, command=counting(crashing_child(signal.SIGSEGV)))
    assert not crash.ok and "SIGSEGV" in crash.detail and crash.rebuild
    ok = selftest.check_decoding(model, fresh_cache, command=counting(lambda m: [sys.executable, "-c", "pass"]))
    assert ok.ok and not ok.cached
    again = selftest.check_decoding(model, fresh_cache, command=counting(crashing_child(signal.SIGSEGV)))
    assert again.ok and again.cached and len(calls) == 2  # the success was remembered for this build
    failing = selftest.check_decoding(model, tmp_path / "other", command=lambda m: [sys.executable, "-c",
                                                                                  "import sys; sys.exit(3)"])
    assert not failing.ok and "exit code 3" in failing.detail and not failing.rebuild


CPUINFO = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2 amx_tile amx_int8 avx512f avx512cd " \
          "avx512vl avx512dq avx512bw avx512_vnni\n"


def test_the_portable_build_keeps_what_the_cpu_lists_and_never_amx_or_native() -> None:
    args = portable_cmake_args(cpu_flags(CPUINFO), machine="x86_64").split()
    assert args[0] == "-DGGML_NATIVE=OFF"
    assert {"-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON"} <= set(args)
    assert not [a for a in args if "AMX" in a or "BF16" in a or "VBMI" in a]
    assert portable_cmake_args({"avx2"}, machine="aarch64") == "-DGGML_NATIVE=OFF"


@pytest.mark.e2e
def test_the_real_child_decodes_with_the_demo_model(tmp_path: Path) -> None:
    from medbench_local.config import load_config
    from medbench_local.modelfiles.resolve import resolve

    model = resolve(load_config(REPO / "models.toml").model("smollm2-135m-instruct")).path
    if model is None:
        pytest.skip("the demo model is not installed")
    verdict = selftest.check_decoding(model, tmp_path)
    assert verdict.ok and not verdict.cached, verdict.detail


@pytest.mark.parametrize(("version", "tested"), [("0.3.36", True), ("0.3.99", True), ("0.3.35", False),
                                                 ("0.4.0", False), ("1.0", False), ("not-a-version", False)])
def test_the_tested_llama_cpp_range(version: str, tested: bool) -> None:
    from medbench_local.engine.runtime import tested_version

    assert tested_version(version) is tested


def test_doctor_warns_when_llama_cpp_is_outside_the_tested_range(monkeypatch: pytest.MonkeyPatch,
                                                                  in_repo: Path) -> None:
    from medbench_local.engine import runtime

    real = runtime.build_info()
    monkeypatch.setattr(runtime, "build_info", lambda: {**real, "llama_cpp_python": "0.4.2"})
    result = invoke("doctor", "--model", "smollm2-135m-instruct", "--offline", expect=None)
    line = next(line for line in result.output.splitlines() if "llama-cpp-python 0.4.2" in line)
    assert line.startswith("!") and "outside the tested range >=0.3.36,<0.4" in " ".join(result.output.split())
