"""The Click command tree as the generated tests see it: every leaf command and its declaration (cli/declare.py).

Why a module of its own: the hostile-output, hostile-config and hostile-database tables are generated from it, so
a command added next year is attacked by all of them without anyone listing it.
"""

from __future__ import annotations

from collections.abc import Iterator

import click

from medbench_local.cli import main
from medbench_local.cli.declare import Declaration, declaration_of


def leaf_commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


COMMANDS: dict[str, click.Command] = dict(leaf_commands())


def declared(name: str) -> Declaration:
    found = declaration_of(COMMANDS[name])
    assert found is not None, f"'{name}' has no declaration"
    return found


def runnable() -> list[str]:
    """Commands with an example invocation, in name order."""
    return [name for name in sorted(COMMANDS) if (d := declaration_of(COMMANDS[name])) is not None and d.example]


def commands_that(*, reads: str | None = None, writes: str | None = None, placeholder: str | None = None
                  ) -> dict[str, tuple[str, ...]]:
    """name -> example, for the commands that declare reading/writing a class (and use ``placeholder``)."""
    chosen = {}
    for name in runnable():
        d = declared(name)
        if reads is not None and reads not in d.reads:
            continue
        if writes is not None and writes not in d.writes:
            continue
        if placeholder is not None and placeholder not in " ".join(d.example):
            continue
        chosen[name] = d.example
    return chosen
