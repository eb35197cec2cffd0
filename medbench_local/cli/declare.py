"""What each command reads and writes, declared where the command is defined, so that the gates apply to it by
construction and the tests can attack every command without knowing it.

Why: a hospital's review reads the Guarantees table as a promise about the whole tool, including commands
written next year. So a command does not pass paths around as plain strings:

* its path options use the types below: :class:`DatabasePath` and :class:`InputPath` remember the file as an
  input of this command the moment Click parses it (``gates/files.py``), so an output of the same command can
  never replace it, whatever order the command does its work in; :class:`OutputPath` targets are checked by
  the files gate before the command body runs (after every input option is known) and again when written;
* the command itself carries a :class:`Declaration` (``@declare(...)``): which classes of hostile input it
  takes (``database``, ``config``, ``data``, ``prompts``, ``archive``, ``output``, ``network`` ...) and one
  valid invocation with placeholders (``{db}``, ``{config}``, ``{out}`` ...). ``tests/test_gates.py`` walks
  the Click tree: a command without a declaration, or with a path option of another type, fails; every
  declared class is attacked with its hostile set through the example invocation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from ..gates.files import check_output_place, check_output_target, remember_database, remember_input

#: The classes of hostile input a command can declare, and what each stands for.
CLASSES: dict[str, str] = {
    "database": "a results database it opens (FIFO, device, foreign, damaged, deep JSON, bad UTF-8, older, "
                "read-only media)",
    "config": "a models.toml it reads",
    "data": "task data files",
    "prompts": "a prompt override file",
    "lock": "a models.lock",
    "model": "GGUF model files",
    "archive": "a bundle folder or tar it reads",
    "output": "a file or folder it writes (-o, OUT, a bundle, metadata)",
    "network": "an OpenAI-compatible server it talks to",
    "index": "a retrieval index it reads (made by 'index build')",
}

CommandT = TypeVar("CommandT", bound=click.Command)


@dataclass(frozen=True)
class Declaration:
    """What a command reads and writes. ``example``: a valid invocation (without the program name) in which
    ``{db}``, ``{config}``, ``{out}``, ``{data}``, ``{prompts}``, ``{archive}`` and ``{folder}`` stand for files
    the tests provide and ``{task}`` for a task whose sample data they hold (task ids live in tasks/ only); an empty example marks a command the generated tests cannot run alone (it says why in
    ``untested_because``)."""

    reads: frozenset[str]
    writes: frozenset[str]
    example: tuple[str, ...]
    untested_because: str = ""
    checklist: bool = False  # reports problems as a checklist (doctor), not as one error line


def declare(*, reads: tuple[str, ...] = (), writes: tuple[str, ...] = (), example: tuple[str, ...] = (),
            untested_because: str = "", checklist: bool = False) -> Callable[[CommandT], CommandT]:
    """Attach a :class:`Declaration` to a Click command (put it above ``@click.command``)."""
    unknown = [name for name in (*reads, *writes) if name not in CLASSES]
    if unknown:
        raise ValueError(f"unknown input/output classes {unknown}; known: {sorted(CLASSES)}")
    if not example and not untested_because:
        raise ValueError("give an example invocation, or say why the command cannot be run alone")

    def attach(command: CommandT) -> CommandT:
        command.declaration = Declaration(frozenset(reads), frozenset(writes),  # type: ignore[attr-defined]
                                          tuple(example), untested_because, checklist)
        original = command.invoke

        def invoke(ctx: click.Context) -> Any:
            _check_outputs(ctx)
            return original(ctx)

        command.invoke = invoke  # type: ignore[method-assign]
        return command

    return attach


def declaration_of(command: click.Command) -> Declaration | None:
    return getattr(command, "declaration", None)


def _check_outputs(ctx: click.Context) -> None:
    """Every output option's target against every input option, before the command body does any work."""
    for param in ctx.command.params:
        if not isinstance(param.type, OutputPath):
            continue
        value = ctx.params.get(param.name or "")
        for path in value if isinstance(value, (tuple, list)) else (value,):
            if path is None:
                continue
            if param.type.folder:
                check_output_place(path)  # a folder (or bundle) the command creates, with its parents
            else:
                check_output_target(path, updating=param.type.updating)


class DatabasePath(click.Path):
    """A results database option (``--db``, ``merge``'s inputs): remembered as an input with its companion
    files (``-wal``, ``-shm``, ``-journal``, ``-claims``) as soon as it is parsed."""

    name = "database"

    def __init__(self, *, writes: bool = False) -> None:
        super().__init__(dir_okay=False, path_type=Path)
        self.writes = writes

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        remember_database(path)
        return path


class InputPath(click.Path):
    """A file (or folder) the command reads (config, data, prompts, a bundle): remembered as an input when
    parsed. ``kind`` is the declared class it belongs to (see :data:`CLASSES`)."""

    name = "input"

    def __init__(self, kind: str, *, dir_okay: bool = False, file_okay: bool = True, exists: bool = False) -> None:
        if kind not in CLASSES:
            raise ValueError(f"unknown input class {kind!r}")
        super().__init__(dir_okay=dir_okay, file_okay=file_okay, exists=exists, path_type=Path)
        self.kind = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        remember_input(path)
        return path


class OutputPath(click.Path):
    """A file (``file``), a folder (``folder``) or either, that the command writes; checked by the files gate
    before the command runs. ``updating``: the command rewrites a file it also reads (allowed for that file)."""

    name = "output"

    def __init__(self, *, file: bool = True, folder: bool = False, updating: bool = False) -> None:
        super().__init__(dir_okay=folder, file_okay=file, path_type=Path)
        self.file = file
        self.folder = folder
        self.updating = updating
