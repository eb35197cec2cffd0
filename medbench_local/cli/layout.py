"""Tables and prose on the terminal that never split a word, a number or a hash.

Why: rich fits a table to the console by folding cells inside words ("accurac|y", "e86b5d|1c") or by cutting
them ("gemma3…"), and when the output is a file or a pipe it assumes 80 columns. A reader copies a hash, greps a
model id, reads a number: each must stay whole. So every table the CLI prints goes through :func:`print_table`,
which tries, in this order, until the table fits the width:

1. the table as it is, each column at least as wide as its longest word (a cell wraps only between words);
2. its headers abbreviated word by word (:data:`ABBREVIATIONS`; a line under the table names those used);
3. long labels (model ids, data files: the columns marked ``legend``) replaced by keys ``#1``, ``#2`` … that a
   legend under the table spells out;
4. stacked: one block per record, one field per line.

The width is the terminal's, or ``COLUMNS`` when it is set. When the output is not a terminal (a file, a pipe)
and ``COLUMNS`` is not set, a table gets the full line it needs and prose is not wrapped: a file has no width.
Prose (notes, warnings, the lines of ``runs`` and ``models list``) is wrapped between words, with a hanging
indent, by :func:`print_prose`; a word longer than the line gets a line of its own, whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment, Segments
from rich.table import Table
from rich.text import Text

# Header words and their short forms, used only when a table does not fit the width with its full headers (step
# 2 above), and only for a column whose header, not its cells, makes it wide. A table that uses one says so in a
# line under it ("Abbreviated: bio = biomedical, ..."); the README lists them all.
ABBREVIATIONS: dict[str, str] = {
    "biomedical": "bio",
    "general": "gen",
    "published": "pub.",
    "unparseable": "unpars.",
    "truncated": "trunc.",
    "conflict": "confl.",
    "correct": "corr.",
    "verdict": "verd.",
    "metric": "met.",
    "study": "st.",
    "discordant": "disc.",
}
# A word and the spaces after it: lines break only before a word.
_WORD = re.compile(r"\S+\s*")
# A label line longer than this (in terminal cells) moves to the legend in step 3; shorter ones (every task id)
# stay in the table.
LEGEND_KEEP = 16

Cell = str | Text  # a str is rich markup (database text in it already passed safe_text.literal)


class Output(Console):
    """rich's Console that reads ``COLUMNS`` at each print (rich reads it once, when the console is made, which
    is at import time here) and knows whether its width is a real limit (:func:`line_width`)."""

    def __init__(self, *args: Any, width: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, width=width, **kwargs)
        self._width = width  # rich's size property reads COLUMNS itself when no width was given
        self.fixed_width = width


def line_width(console: Console) -> int | None:
    """The width output must fit: a width given to the console, ``COLUMNS``, the terminal's; None when the
    output is not a terminal and nothing else says (a file or a pipe: the full line)."""
    if not isinstance(console, Output):
        return console.width
    if console.fixed_width is not None:
        return console.fixed_width
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return console.width if console.is_terminal else None


@dataclass(frozen=True)
class Column:
    """A table column: its header, how its cells are aligned, and whether long values may move to a legend."""

    header: str
    justify: Literal["left", "right", "center"] = "left"
    legend: bool = False


@dataclass
class Layout:
    """How a table is printed at a width (the outcome of :func:`fit`)."""

    stacked: bool
    headers: list[str]
    widths: list[int]                       # content width of each column (empty when stacked)
    cells: list[list[Text]]
    legend: list[tuple[str, Text]] = field(default_factory=list)         # key, the value it stands for
    abbreviations: list[tuple[str, str]] = field(default_factory=list)   # short, full


def as_text(cell: Cell) -> Text:
    """A cell as rich Text (a str is read as markup)."""
    return cell.copy() if isinstance(cell, Text) else Text.from_markup(cell)


def longest_word(text: str) -> int:
    """The width of the longest whitespace-separated word: the least a column can be without splitting it."""
    return max((cell_len(word) for word in text.split()), default=0)


def widest_line(text: str) -> int:
    return max((cell_len(line) for line in text.split("\n")), default=0)


def overhead(columns: int) -> int:
    """Columns of a rich Table that are not content: a border between and around columns, one space padding
    each side."""
    return 3 * columns + 1


def _minimums(headers: Sequence[str], cells: Sequence[Sequence[Text]]) -> list[int]:
    return [max([longest_word(header), 1] + [longest_word(row[i].plain) for row in cells])
            for i, header in enumerate(headers)]


def _naturals(headers: Sequence[str], cells: Sequence[Sequence[Text]]) -> list[int]:
    return [max([widest_line(header), 1] + [widest_line(row[i].plain) for row in cells])
            for i, header in enumerate(headers)]


def _distribute(minimums: list[int], naturals: list[int], available: int) -> list[int]:
    """Column widths between each column's minimum and natural width, spare columns going first to those that
    lack the most."""
    widths = list(minimums)
    spare = available - sum(widths)
    while spare > 0:
        lacking = sorted((i for i in range(len(widths)) if widths[i] < naturals[i]),
                         key=lambda i: widths[i] - naturals[i])
        if not lacking:
            break
        for i in lacking:
            if spare == 0:
                break
            widths[i] += 1
            spare -= 1
    return widths


def _with_legend(column: int, cells: list[list[Text]], legend: list[tuple[str, Text]]) -> list[list[Text]]:
    """``cells`` with each long line of ``column`` (a model id, a data file with its hash) replaced by a key that
    ``legend`` spells out (the same text, the same key); short lines (a task name) stay."""
    keys = {value.plain: key for key, value in legend}
    out = []
    for row in cells:
        lines = []
        for line in row[column].split("\n"):
            if cell_len(line.plain) > LEGEND_KEEP:
                if line.plain not in keys:
                    keys[line.plain] = f"#{len(legend) + 1}"
                    legend.append((keys[line.plain], line))
                line = Text(keys[line.plain])
            lines.append(line)
        out.append([*row[:column], Text("\n").join(lines), *row[column + 1:]])
    return out


def _abbreviated(headers: Sequence[str], cells: Sequence[Sequence[Text]]) -> tuple[list[str], list[tuple[str, str]]]:
    """Headers abbreviated where the header, not the cells, makes the column wide; and the (short, full) words
    used."""
    short, used = [], set()
    for i, header in enumerate(headers):
        widest_cell = max((longest_word(row[i].plain) for row in cells), default=0)
        if longest_word(header) >= widest_cell:
            header = " ".join(ABBREVIATIONS.get(word, word) for word in header.split(" "))
            used |= {(ABBREVIATIONS[word], word) for word in headers[i].split(" ") if word in ABBREVIATIONS}
        short.append(header)
    return short, sorted(used, key=lambda pair: pair[1])


def fit(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int | None) -> Layout:
    """The first of the four layouts (module docstring) in which no word is split at ``width`` (None: any
    width, the table as it is)."""
    cells = [[as_text(cell) for cell in row] for row in rows]
    full = [column.header for column in columns]
    if width is None:
        return Layout(False, full, _naturals(full, cells), cells)
    room = width - overhead(len(columns))

    def fits(headers: list[str], body: list[list[Text]]) -> list[int] | None:
        minimums = _minimums(headers, body)
        return _distribute(minimums, _naturals(headers, body), room) if sum(minimums) <= room else None

    widths = fits(full, cells)
    if widths is not None:
        return Layout(False, full, widths, cells)
    short, used = _abbreviated(full, cells)
    widths = fits(short, cells)
    if widths is not None:
        return Layout(False, short, widths, cells, abbreviations=used)
    legend: list[tuple[str, Text]] = []
    body = cells
    for index in sorted((i for i, column in enumerate(columns) if column.legend),
                        key=lambda i: -_minimums(full, cells)[i]):
        body = _with_legend(index, body, legend)
        short, used = _abbreviated(full, body)
        widths = fits(short, body)
        if widths is not None:
            return Layout(False, short, widths, body, legend, used)
    return Layout(True, full, [], cells)


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Cell]], *,
                title: Cell | None = None, heading: int = 1, show_lines: bool = False,
                notes: Sequence[Cell] = ()) -> None:
    """Print a table that never splits a word (module docstring): ``title`` above it, ``notes`` under it, both
    as wrapped prose. ``heading``: when stacked, how many leading columns name each block."""
    width = line_width(console)
    if title is not None:
        print_prose(console, title)
    layout = fit(columns, rows, width)
    if layout.stacked:
        _print_stacked(console, layout, heading)
    else:
        table = Table(show_lines=show_lines)
        for column, header, column_width in zip(columns, layout.headers, layout.widths):
            table.add_column(header, justify=column.justify, width=column_width)
        for row in layout.cells:
            table.add_row(*row)
        _emit(console, table, sum(layout.widths) + overhead(len(columns)))
        for key, value in layout.legend:
            print_prose(console, Text(f"{key}  ") + value, hanging=" " * (len(key) + 2))
        if layout.abbreviations:
            print_prose(console, Text("Abbreviated: " + ", ".join(f"{short} = {full}"
                                                                  for short, full in layout.abbreviations),
                                      style="dim"))
    for note in notes:
        print_prose(console, note)


def _emit(console: Console, renderable: Table, width: int) -> None:
    """Print ``renderable`` at ``width`` even when that is wider than the console (a file gets the full line)."""
    options = console.options.update_width(width)
    segments: list[Segment] = []
    for line in console.render_lines(renderable, options, pad=False):
        segments += [*line, Segment.line()]
    console.print(Segments(segments), soft_wrap=True, end="")


def _one_line(text: Text, separator: str = " ") -> Text:
    return Text(separator).join(part for part in text.split("\n") if part.plain)


def _print_stacked(console: Console, layout: Layout, heading: int) -> None:
    """One block per record: its first ``heading`` cells in bold, then one "header  value" line per field."""
    label = max((cell_len(h) for h in layout.headers[heading:]), default=0)
    for row in layout.cells:
        console.print()
        title = Text(" · ").join(_one_line(cell, " · ") for cell in row[:heading])
        title.stylize("bold")
        print_prose(console, title)
        for header, cell in zip(layout.headers[heading:], row[heading:]):
            print_prose(console, Text("  " + header.ljust(label) + "  ") + _one_line(cell),
                        hanging=" " * (label + 4))
    console.print()


def print_heading(console: Console, text: Cell) -> None:
    """A rule with ``text`` in it; when ``text`` does not fit in a rule (rich would cut it), the rule and then
    ``text`` as prose."""
    title = as_text(text)
    if cell_len(title.plain) + 6 <= console.width:
        console.rule(title)
    else:
        console.rule()
        print_prose(console, title)


def print_prose(console: Console, text: Cell, *, indent: str = "", hanging: str = "  ",
                style: str | None = None) -> None:
    """``text`` (markup, or Text) wrapped between words to the line width, continuation lines indented by
    ``hanging``; not wrapped at all when the output has no width (a file). A word longer than the line keeps
    a line of its own, whole."""
    value = Text(indent) + as_text(text)
    if style:
        value.stylize(style)
    width = line_width(console)
    if width is None:
        console.print(value, soft_wrap=True)
        return
    if width - cell_len(hanging) < 20:  # a line too narrow for an indent: none
        hanging = ""
    for number, line in enumerate(_wrap(value, width, width - cell_len(hanging))):
        console.print(line if number == 0 else Text(hanging) + line, soft_wrap=True)


def _wrap(text: Text, first: int, rest: int) -> list[Text]:
    """``text`` broken between words into lines of at most ``first`` cells, then ``rest`` cells (the room
    beside a hanging indent); a longer word gets a line of its own. Each newline in ``text`` starts a line."""
    lines: list[Text] = []
    for paragraph in text.split("\n", allow_blank=True):
        plain = paragraph.plain
        offsets: list[int] = []
        width = first if not lines else rest
        used = cell_len(plain) - cell_len(plain.lstrip())  # a leading indent stays on the first line
        alone = True  # a line's first word stays on it, however long
        for word in _WORD.finditer(plain):
            if not alone and used + cell_len(word.group().rstrip()) > width:
                offsets.append(word.start())
                used, width = 0, rest
            used += cell_len(word.group())
            alone = False
        for line in paragraph.divide(offsets):
            line.rstrip()
            lines.append(line)
    return lines
