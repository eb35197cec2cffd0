"""``medbench-local bundle``: carry models, data and assets to an air-gapped machine, verified end to end."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..airgap import select_models
from ..airgap.bundle import Reporter, export_bundle, import_bundle, verify_bundle
from ..config import read_config
from ..units import count, human_size
from .common import config_option, stderr, stdout
from .declare import InputPath, OutputPath, declare
from .safe_text import literal


class _Bar(Reporter):
    """One transient byte-progress bar per file (only on a terminal: logs stay clean)."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=30), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=stderr, transient=True,
                                 disable=not stderr.is_terminal)
        self.task: TaskID | None = None

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, label: str, total: int) -> None:
        # a member name comes from the bundle: shown literally (never as rich markup or terminal controls)
        self.task = self.progress.add_task(literal(label if len(label) <= 48 else "…" + label[-47:], one_line=True),
                                           total=total)

    def advance(self, size: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, advance=size)

    def end(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


def _size(n: int) -> str:
    return human_size(n)


@click.group("bundle")
def bundle_group() -> None:
    """Move models, task data and metric assets to an air-gapped machine (export, verify, import)."""


@declare(reads=("config", "model", "data"), writes=("output",),
         example=("bundle", "export", "{folder}", "--model", "smollm2-135m-instruct", "--data", "{data}",
                  "--config", "{config}"))
@bundle_group.command("export")
@click.argument("path", type=OutputPath(folder=True))
@click.option("--pair", "pairs", multiple=True, metavar="NAME", help="Bundle both models of a pair (repeatable).")
@click.option("--model", "model_ids", multiple=True, metavar="ID", help="Bundle one model (repeatable).")
@click.option("--data", multiple=True, type=InputPath("data", dir_okay=True, exists=True), metavar="FILE_OR_DIR",
              help="Task data to carry, stored as data/<name> (repeatable).")
@click.option("--asset", "assets", multiple=True, type=InputPath("data", dir_okay=True, exists=True), metavar="PATH",
              help="Metric asset to carry (BERTScore / UMLS folder, ...), stored as assets/<name> (repeatable).")
@click.option("--tar", "as_tar", is_flag=True, help="Write one uncompressed .tar file instead of a folder.")
@config_option
def export_command(path: Path, pairs: tuple[str, ...], model_ids: tuple[str, ...], data: tuple[Path, ...],
                   assets: tuple[Path, ...], as_tar: bool, config_path: Path) -> None:
    """Write a bundle: GGUF files, data, assets, a rewritten models.toml, models.lock and MANIFEST.json.

    PATH is a new folder (or, with --tar, a new .tar file). The bundle's models.toml points every model to
    its bundled file (path = "models/<file>", sha256 filled in); MANIFEST.json lists every file's relative
    path, size and SHA-256. Model files are checked against models.lock while they are copied.

    \b
    Examples:
      medbench-local bundle export /media/usb/medbench --pair openbiollm-8b \\
          --data ~/cases/jama.csv
      medbench-local bundle export transfer/bundle --pair demo \\
          --data bench_data/jama --tar
    """
    config = read_config(config_path)
    specs = select_models(config, pairs, model_ids)
    with _Bar() as bar:
        summary = export_bundle(config, specs, pairs, data, assets, path, as_tar=as_tar, reporter=bar)
    stdout.print(f"[green]✓[/green] Bundle written: {literal(summary.path)} ({count(summary.files, 'file')} + "
                 f"MANIFEST.json, {_size(summary.total_bytes)})", soft_wrap=True)
    for mid, name in sorted(summary.models.items()):
        stdout.print(f"  {literal(mid)}: {literal(name)}", soft_wrap=True)
    stdout.print(f"Check a copy with: medbench-local bundle verify {literal(summary.path)}", soft_wrap=True)
    stdout.print(f"Install it with:   medbench-local bundle import {literal(summary.path)} --to DIR", soft_wrap=True)


@declare(reads=("archive",), example=("bundle", "verify", "{archive}"))
@bundle_group.command("verify")
@click.argument("path", type=InputPath("archive", dir_okay=True))
def verify_command(path: Path) -> None:
    """Check every file of a bundle (folder or .tar) against its MANIFEST.json, without installing it.

    Use it on the copy you are about to carry (USB disk, transfer share). Exit code 1 on any mismatch.

    \b
    Example:
      medbench-local bundle verify /media/usb/medbench-2026-11
    """
    with _Bar() as bar:
        manifest = verify_bundle(path, bar)
    files = manifest["files"]
    stdout.print(f"[green]✓[/green] {literal(path)}: all {count(len(files), 'file')} listed in MANIFEST.json match "
                 f"({_size(sum(f['size'] for f in files))})", soft_wrap=True)


@declare(reads=("archive",), writes=("output",), example=("bundle", "import", "{archive}", "--to", "{folder}"))
@bundle_group.command("import")
@click.argument("path", type=InputPath("archive", dir_okay=True))
@click.option("--to", "dest", required=True, type=OutputPath(file=False, folder=True), metavar="DIR",
              help="Where to install the bundle: a new (or empty) folder.")
def import_command(path: Path, dest: Path) -> None:
    """Verify a bundle file by file against MANIFEST.json, then install it into DIR in one step.

    Every file is copied into a temporary folder beside DIR while it is hashed; only if all files match the
    manifest (and no unlisted file is present) is the folder renamed to DIR. On any mismatch nothing is
    installed and every bad file is listed.

    \b
    Example:
      medbench-local bundle import /media/usb/medbench \\
          --to /opt/medbench/bundle-2026-11
    """
    with _Bar() as bar:
        summary = import_bundle(path, dest, bar)
    for folder in summary.cleaned:
        stdout.print(f"Removed {literal(folder)}: the staging folder of an earlier import that was interrupted",
                     soft_wrap=True)
    stdout.print(f"[green]✓[/green] All {count(summary.files, 'file')} listed in MANIFEST.json verified; installed "
                 f"in {literal(summary.path)}", soft_wrap=True)
    config = summary.path / "models.toml"
    if config.is_file():
        stdout.print("Next:", soft_wrap=True)
        stdout.print(f"  medbench-local doctor --config {literal(config)} --offline", soft_wrap=True)
        stdout.print(f"  medbench-local run --config {literal(config)} --model ID --task TASK --data "
                     f"{literal(summary.path / 'data')}/<name>", soft_wrap=True)
