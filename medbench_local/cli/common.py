"""Options and helpers shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..config import Config, load_config
from ..errors import UserError
from ..paths import find_config

DEFAULT_DB = "results.db"

# No highlighting and no ":emoji:" codes: text from outside must print exactly as it is (see safe_text.py).
stdout = Console(highlight=False, emoji=False)
stderr = Console(stderr=True, highlight=False, emoji=False)


def config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--config; None when not given, so that read_config() can look in the usual places."""
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="The models and pairs registry. Default: $MEDBENCH_LOCAL_CONFIG, else ./models.toml, else "
             "~/.config/medbench-local/models.toml, else the demo config shipped with medbench-local.")(fn)


def db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--db for the commands that read a results database."""
    return click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DB,
                        show_default=True, help="SQLite results database written by 'run'.")(fn)


def read_config(path: Path | None) -> Config:
    """Load --config, or the first models.toml found in the usual places (paths.find_config); the result
    says where it came from (``Config.origin``)."""
    found = find_config(path)
    return replace(load_config(found.path), origin=found.origin)


def match_data(task_ids: tuple[str, ...], data: tuple[str, ...]) -> dict[str, Path]:
    """--data values per task: 'TASK=PATH', or a bare PATH when exactly one --task is given."""
    explicit: dict[str, Path] = {}
    bare: list[Path] = []
    for value in data:
        name, sep, path = value.partition("=")
        if sep and name in task_ids:
            explicit[name] = Path(path).expanduser()
        else:
            bare.append(Path(value).expanduser())
    if bare and len(task_ids) != 1:
        raise UserError("with several --task options (or none), give --data as TASK=PATH "
                        "(e.g. --task jama --data jama=cases.csv)")
    if bare:
        explicit[task_ids[0]] = bare[0]
    return explicit
