"""Tables and prose never split a word, a number or a hash (issue 20.3), at 80 and 120 columns and without a
terminal, for every command that prints a table or wrapped lines, on a study database with long model ids,
long data file names, long metric names and hashes (tests/synthetic.py).

Two checks per output: every value the command must show appears whole (each of its words on one line), and
every word printed at a width is a word the command prints at full width (a legend key, an abbreviation from
the documented table, or a word of those lines excepted), so that a piece of a split word ("accurac", "y",
"e86b5d") or a cut one ("gemma3…") fails wherever it is. Lines fit the width unless a single word is longer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from medbench_local.cli import main
from medbench_local.cli.layout import ABBREVIATIONS, LEGEND_KEEP, Column, Output, fit, line_width, print_prose

from .synthetic import STUDY_BIO, STUDY_GEN, STUDY_PAIR, build_study_db, study_tasks

WIDTHS = [80, 120, None]  # None: no COLUMNS and not a terminal (a file or a pipe)
BOX = "│┃║|┏┓┗┛┡┩┠┨╇╈━─┼┬┴╭╮╰╯┳┻├┤└┘┌┐"
KEY = re.compile(r"#\d+")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tables")
    db = build_study_db(folder / "study.db")
    model_dir = folder / "models" / "clinical-large-language-models" / "quantized-gguf-files"
    model_dir.mkdir(parents=True)
    (model_dir / f"{STUDY_BIO}.gguf").write_bytes(b"GGUF" + bytes(60))
    config = folder / "models.toml"
    config.write_text(
        f'[models."{STUDY_BIO}"]\nrole = "biomedical"\npath = "models/clinical-large-language-models/'
        f'quantized-gguf-files/{STUDY_BIO}.gguf"\nnote = "a biomedical fine-tune of a general model, quantized '
        f'with an importance matrix"\n\n[models."{STUDY_GEN}"]\nrole = "general"\npath = "/srv/models/missing/'
        f'{STUDY_GEN}.gguf"\n\n[pairs."{STUDY_PAIR}"]\nbiomedical = "{STUDY_BIO}"\ngeneral = "{STUDY_GEN}"\n'
        'description = "the study pair with its long names"\n', encoding="utf-8")
    return {"db": db, "config": config}


def _run(args: list[str], width: int | None) -> str:
    env = {"COLUMNS": str(width) if width else None, "LINES": None, "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _words(output: str) -> list[str]:
    return [w for w in re.split(rf"[\s{BOX}]+", output) if w]


def _compare_values(db: Path) -> list[str]:
    """What compare must show whole: names, data files and hashes, metrics, numbers, verdicts, p-values."""
    rows = json.loads(_run(["compare", "--db", str(db), "--json", "--resamples", "200"], None))
    values = [STUDY_PAIR, STUDY_BIO, STUDY_GEN]
    for row in rows:
        values += [row["task"], row["metric"], str(row["n"]), row["data"]["name"], row["data"]["sha256"][:8],
                   f"{100 * row['biomedical']['score']:.1f}", f"{100 * row['general']['score']:.1f}",
                   f"{100 * row['delta']['score']:+.1f}", row["verdict"]]
    return values


def _runs_values(db: Path) -> list[str]:
    return [STUDY_BIO, STUDY_GEN, STUDY_PAIR] + [f"/srv/clinical-data/{t.data_name}" for t in study_tasks()]


# command -> (arguments, values that must appear whole); {db} and {config} are filled in
COMMANDS = {
    "compare": (["compare", "--db", "{db}", "--resamples", "200"], _compare_values),
    "reproduce": (["reproduce", "--db", "{db}", "--resamples", "200", "--as", f"{STUDY_BIO}=Llama3-OpenBioLLM-70B",
                   "--as", f"{STUDY_GEN}=Meta-Llama-3-70B-Instruct"],
                  lambda db: [STUDY_BIO, STUDY_GEN, STUDY_PAIR, "Llama3-OpenBioLLM-70B", "Meta-Llama-3-70B-Instruct",
                              "e86b5d1c", "02a6c95e", "7f3c1e0d", "reproduced", "published"]
                  + [t.data_name for t in study_tasks()]),
    "show": (["show", "--db", "{db}", "--pair", STUDY_PAIR, "--task", "jama,mednli", "--limit", "2"],
             lambda db: [STUDY_PAIR, "jama_clinical_challenge_cases_2024_revised.jsonl", "e86b5d1c",
                         "biomedical", "general", "jama-0000"]),
    "runs": (["runs", "--db", "{db}"], _runs_values),
    "models list": (["models", "list", "--config", "{config}"],
                    lambda db: [STUDY_BIO, STUDY_GEN, STUDY_PAIR, "quantized-gguf-files", "importance"]),
    "tasks list": (["tasks", "list"], lambda db: ["problem_summary", "mmlu_medical", "accuracy"]),
}


def assert_whole(output: str, values: Iterable[str]) -> None:
    """Each word of each value is one word of the output: not split across lines, not cut."""
    words = set(_words(output))
    for value in values:
        for token in value.split():
            assert any(token in word for word in words), f"{token!r} is not printed whole:\n{output}"


def assert_no_pieces(output: str, reference: str) -> None:
    """Every word of ``output`` is a word of ``reference`` (the same command at full width), a legend key, or
    a word of a legend or abbreviation line: a piece of a split word is none of these."""
    known = set(_words(reference)) | set(ABBREVIATIONS.values())
    extra = {w for line in output.splitlines() if line.startswith(("Abbreviated:", "#")) for w in _words(line)}
    pieces = [w for w in _words(output) if w not in known and w not in extra and not KEY.fullmatch(w)]
    assert not pieces, f"pieces of words: {pieces}\n{output}"
    assert "…" not in output.replace("…", "", reference.count("…"))


def assert_fits(output: str, width: int) -> None:
    for line in output.splitlines():
        assert cell_len(line) <= width or len(line.split()) == 1, f"{cell_len(line)} > {width}: {line!r}"


@pytest.mark.parametrize("width", WIDTHS, ids=lambda w: f"width-{w or 'file'}")
@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_word_number_or_hash_is_split(study: dict[str, Path], command: str, width: int | None) -> None:
    template, values = COMMANDS[command]
    args = [a.format(db=study["db"], config=study["config"]) for a in template]
    output = _run(args, width)
    assert_whole(output, values(study["db"]))
    reference = _run(args, None)
    assert_no_pieces(output, reference)
    if width is not None:
        assert_fits(output, width)


def test_without_a_terminal_tables_take_the_full_line(study: dict[str, Path]) -> None:
    """Piped to a file, compare's table is not squeezed to 80 columns: one row per line, the full label."""
    output = _run(["compare", "--db", str(study["db"]), "--resamples", "200"], None)
    header = next(line for line in output.splitlines() if "task · data" in line)
    assert cell_len(header) > 120 and "verdict" in header and "biomedical" in header
    assert any("jama_clinical_challenge_cases_2024_revised.jsonl e86b5d1c" in line for line in output.splitlines())


# ------------------------------------------------------------------------------ the layout steps, one by one

COLUMNS_SPEC = [Column("task · data", legend=True), Column("metric"), Column("biomedical", "right"),
                Column("verdict")]
ROWS = [["jama\n" + "x" * 40 + ".jsonl e86b5d1c", "bertscore_precision", "71.7\n[59–81]",
         "no significant difference"], ["mednli\n" + "y" * 30 + ".jsonl 02a6c95e", "accuracy", "33.3", "x"]]


@pytest.mark.parametrize("width,expected", [(None, "as is"), (200, "as is"), (97, "abbreviated"), (99, "as is"),
                                            (70, "legend"), (50, "stacked")])
def test_each_step_is_taken_only_when_the_one_before_does_not_fit(width: int | None, expected: str) -> None:
    layout = fit(COLUMNS_SPEC, ROWS, width)
    step = ("stacked" if layout.stacked else "legend" if layout.legend else
            "abbreviated" if layout.abbreviations else "as is")
    assert step == expected
    if not layout.stacked and width is not None:
        assert sum(layout.widths) + 3 * len(layout.widths) + 1 <= width
        for i, column_width in enumerate(layout.widths):  # no word is wider than its column
            words = layout.headers[i].split() + [w for row in layout.cells for w in row[i].plain.split()]
            assert all(cell_len(word) <= column_width for word in words)
    if layout.legend:
        assert all(cell_len(value.plain) > LEGEND_KEEP for _, value in layout.legend)
        assert [row[0].plain.split("\n")[0] for row in layout.cells] == ["jama", "mednli"]  # short lines stay
    if layout.abbreviations:
        assert ("bio", "biomedical") in layout.abbreviations and "bio" in layout.headers
        assert "metric" in layout.headers  # its cells make it wide, not its header: not abbreviated


@pytest.mark.parametrize("width", [20, 33, 61, 80])
def test_prose_wraps_between_words_with_a_hanging_indent(width: int) -> None:
    console = Console(width=width, file=open("/dev/null", "w"), record=True)
    text = ("run " + "a" * 70 + " then some short words, e86b5d1c8094029c and 12.5% of 1,000 items, "
            "a path /srv/clinical-data/jama_clinical_challenge_cases_2024_revised.jsonl ends it")
    print_prose(console, Text(text), hanging="    ")
    lines = console.export_text().splitlines()
    assert " ".join(" ".join(lines).split()) == text
    assert all(line.startswith("    ") for line in lines[1:]) or width < 24  # narrower: no indent
    for line in lines:
        assert cell_len(line) <= width or len(line.split()) == 1


def test_columns_is_read_at_each_print_and_a_file_has_no_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "64")
    console = Output(file=open("/dev/null", "w"))
    assert line_width(console) == 64
    monkeypatch.setenv("COLUMNS", "97")
    assert line_width(console) == 97
    monkeypatch.delenv("COLUMNS")
    assert line_width(console) is None  # not a terminal: the full line
    assert line_width(Output(width=50, file=open("/dev/null", "w"))) == 50
