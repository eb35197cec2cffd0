"""``medbench-local models``: what models.toml defines and what each entry resolves to on this machine."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ..modelfiles.resolve import resolve
from .common import config_option, read_config, stdout


@click.group("models")
def models_group() -> None:
    """Inspect the models and pairs defined in models.toml."""


@models_group.command("list")
@config_option
def list_models(config_path: Path) -> None:
    """List models (role, source, prompt mode, whether the file is present) and pairs.

    Nothing is downloaded or hashed: Hugging Face sources are looked up in the local cache only.

    \b
    Example:
      medbench-local models list --config models.toml
    """
    config = read_config(config_path)
    table = Table(title=f"Models — {config.path}")
    for name in ("id", "role", "source", "mode", "n_ctx", "file"):
        table.add_column(name)
    for spec in config.models.values():
        found = resolve(spec)
        if found.path is not None:
            size = found.path.stat().st_size / 1e6
            status = f"[green]present[/green] {size:,.0f} MB\n[dim]{found.path}[/dim]"
        else:
            status = f"[yellow]missing[/yellow]\n[dim]{found.how}[/dim]"
        note = spec.extra.get("note", "")
        table.add_row(spec.id, spec.role, spec.source.describe() + (f"\n[dim]{note}[/dim]" if note else ""),
                      spec.prompt_mode, str(spec.n_ctx), status)
    stdout.print(table)
    pairs = Table(title="Pairs")
    for name in ("pair", "biomedical", "general", "description"):
        pairs.add_column(name)
    for pair in config.pairs.values():
        pairs.add_row(pair.name, pair.biomedical, pair.general, pair.description)
    stdout.print(pairs)
