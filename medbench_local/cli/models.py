"""``medbench-local models``: what models.toml defines and what each entry resolves to on this machine."""

from __future__ import annotations

from pathlib import Path

import click

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
    stdout.print(f"[bold]Models[/bold] in {config.path}")
    for spec in config.models.values():
        found = resolve(spec)
        if found.path is not None:
            status = f"[green]present[/green], {found.path.stat().st_size / 1e6:,.0f} MB: {found.path}"
        else:
            status = f"[yellow]missing[/yellow]: {found.how}"
        stdout.print(f"\n[bold]{spec.id}[/bold]  {spec.role} · {spec.prompt_mode} prompt · n_ctx {spec.n_ctx}")
        stdout.print(f"  source: {spec.source.describe()}", soft_wrap=True)
        stdout.print(f"  file:   {status}", soft_wrap=True)
        if spec.extra.get("note"):
            stdout.print(f"  [dim]note:   {spec.extra['note']}[/dim]", soft_wrap=True)
    stdout.print()
    stdout.print("[bold]Pairs[/bold] (biomedical vs general)")
    for pair in config.pairs.values():
        stdout.print(f"  [bold]{pair.name}[/bold]: {pair.biomedical} vs {pair.general}"
                     + (f"  [dim]{pair.description}[/dim]" if pair.description else ""))
