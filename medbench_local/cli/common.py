"""Options and helpers shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .declare import DatabasePath, InputPath
from .layout import Output

DEFAULT_DB = "results.db"

# No highlighting and no ":emoji:" codes: text from outside must print exactly as it is (see safe_text.py).
# Output: tables and prose never split a word; a file or pipe gets full lines (layout.py).
stdout = Output(highlight=False, emoji=False)
stderr = Output(stderr=True, highlight=False, emoji=False)


def config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--config; None when not given, so that read_config() can look in the usual places."""
    return click.option(
        "--config", "config_path", type=InputPath("config"), default=None,
        help="The models and pairs registry. Default: $MEDBENCH_LOCAL_CONFIG, else ./models.toml, else "
             "~/.config/medbench-local/models.toml, else the demo config shipped with medbench-local.")(fn)


def db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--db for the commands that read a results database."""
    return click.option("--db", "db_path", type=DatabasePath(), default=DEFAULT_DB,
                        show_default=True, help="SQLite results database written by 'run'.")(fn)


def match_data(task_ids: tuple[str, ...], data: tuple[str, ...]) -> dict[str, Path]:
    """--data values per task: 'TASK=PATH', or a bare PATH when exactly one --task is given.

    ``NAME=PATH`` where NAME is a task id is always read as a task assignment (a file whose own name holds a '='
    is taken as a bare path only when it exists as given): ``--task jama --data mednli=x.jsonl`` is an error
    naming the tasks, never a path called "mednli=x.jsonl"."""
    from ..tasks import task_ids as known_tasks

    explicit: dict[str, Path] = {}
    bare: list[Path] = []
    for value in data:
        name, sep, path = value.partition("=")
        if sep and name in task_ids:
            explicit[name] = Path(path).expanduser()
        elif sep and name in known_tasks() and not Path(value).expanduser().exists():
            raise click.UsageError(f"--data {value}: task '{name}' is not among --task "
                                   f"({', '.join(task_ids) or 'none given'}); add --task {name} or drop this --data")
        else:
            bare.append(Path(value).expanduser())
    if bare and len(task_ids) != 1:
        raise click.UsageError("with several --task options (or none), give --data as TASK=PATH "
                               "(e.g. --task jama --data jama=cases.csv)")
    if len(bare) > 1:
        raise click.UsageError(f"--data given {len(bare)} times for the one task '{task_ids[0]}'; give one path")
    if bare:
        explicit[task_ids[0]] = bare[0]
    return explicit


def split_commas(ctx: click.Context | None, param: click.Parameter | None, value: tuple[str, ...] | None
                 ) -> tuple[str, ...]:
    """A repeatable option that also takes comma lists, as lm-eval users type them: ``--task mednli,meqsum
    --task jama`` -> (mednli, meqsum, jama), in order, each once. An empty name (``a,,b``) is refused."""
    names: list[str] = []
    for text in value or ():
        for part in text.split(","):
            name = part.strip()
            if not name:
                raise click.BadParameter(f"empty name in '{text}' (give names separated by commas)",
                                         ctx=ctx, param=param)
            if len(name.split()) > 1:
                option = param.opts[0] if param is not None else "--task"
                raise click.BadParameter(f"'{text}' holds several names; separate them with commas: "
                                         f"{option} {','.join(name.split())}", ctx=ctx, param=param)
            if name not in names:
                names.append(name)
    return tuple(names)


def task_option(help_text: str, required: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--task for every command that takes tasks: repeatable and comma lists (``--task mednli,meqsum``)."""
    return click.option("--task", "--tasks", "task_ids", multiple=True, required=required, metavar="TASK[,TASK...]",
                        callback=split_commas, help=help_text)


def pair_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--pair, --models and --config: which pairs a read command works on (analysis/pair_sources.py)."""
    fn = click.option(
        "--config", "config_path", type=InputPath("config"), default=None,
        help="models.toml whose pairs are used besides the database's (default: found as 'run' finds it; "
             "none is fine: then the database's pairs). Where both name a pair with other members, the "
             "database's are used.")(fn)
    fn = click.option(
        "--models", "model_pair", nargs=2, metavar="BIO GEN", default=None,
        help="Pair any two models with results ad hoc, biomedical first (e.g. --models "
             "smollm2-135m-instruct gemma3-270m); run one at a time with 'run --model'.")(fn)
    return click.option(
        "--pair", "pair_filter", multiple=True, metavar="NAME[,NAME...]", callback=split_commas,
        help="Only these pairs (repeatable, or comma-separated): pairs recorded in the database or defined in "
             "models.toml.")(fn)
