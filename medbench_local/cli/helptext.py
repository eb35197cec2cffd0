"""``--help`` that never splits a word: Click wraps the prose to the terminal (at most 80 columns), but its
wrapper (Python's textwrap) also breaks words at hyphens ("case-" / "challenge", "--allow-" /
"different-data"), which cuts option names and file names in two. :class:`WholeWordsContext` renders help
with that turned off; :func:`use_everywhere` gives it to every command of the CLI.

Docstrings therefore hold no hard line breaks that matter: paragraphs are re-wrapped by Click; only ``\\b``
blocks (examples) keep their lines, and those are written to fit 80 columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

try:  # Click's own wrapper (counts visible characters); present since Click 8.0
    from click import _textwrap
except ImportError:  # pragma: no cover - a Click without it wraps as it always did
    _textwrap = None  # type: ignore[assignment]


@contextmanager
def whole_words() -> Iterator[None]:
    """While help is rendered: Click's text wrapper breaks lines only at spaces (never at a hyphen, never
    inside a word longer than the line)."""
    if _textwrap is None:
        yield
        return
    original = _textwrap.TextWrapper

    class WholeWords(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.break_on_hyphens = False
            self.break_long_words = False

    _textwrap.TextWrapper = WholeWords  # type: ignore[misc]
    try:
        yield
    finally:
        _textwrap.TextWrapper = original  # type: ignore[misc]


class WholeWordsContext(click.Context):
    """A Click context whose help text keeps every word whole."""

    def get_help(self) -> str:
        with whole_words():
            return super().get_help()


def first_sentence(text: str) -> str:
    """The first sentence of a command's help: what a group's command list shows, whole (Click would cut it
    to the width, "… (or...")."""
    paragraph = " ".join(text.split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[:end + 1]


def use_everywhere(command: click.Command) -> None:
    """Give ``command`` and every command below it the whole-word help, and a short help that is a whole
    sentence (wrapped in a group's list, not cut)."""
    command.context_class = WholeWordsContext
    if command.short_help is None and command.help:
        command.short_help = first_sentence(command.help)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            use_everywhere(sub)
