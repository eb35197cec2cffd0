"""``medbench-local doctor``: a preflight checklist before a run, with proof of no network access (--offline)."""

from __future__ import annotations

from pathlib import Path

import click

from ..airgap.doctor import FAIL, OK, WARN, run_doctor
from ..errors import UserError
from ..paths import find_config
from .common import config_option, match_data, split_commas, stdout
from .declare import InputPath, declare

_MARKS = {OK: "[green]✓[/green]", WARN: "[yellow]![/yellow]", FAIL: "[red]✗[/red]"}


@declare(reads=("config", "model", "data"), example=("doctor", "--config", "{config}", "--offline", "--asset", "{data}"),
         checklist=True)
@click.command("doctor")
@click.option("--pair", "pairs", multiple=True, metavar="NAME", help="Check both models of a pair (repeatable).")
@click.option("--model", "model_ids", multiple=True, metavar="ID", help="Check one model (repeatable).")
@click.option("--task", "task_ids", multiple=True, metavar="TASK[,TASK...]", callback=split_commas,
              help="Check that a task's data loads (repeatable, or comma-separated).")
@click.option("--data", multiple=True, metavar="[TASK=]PATH",
              help="Dataset file or folder for --task. Default: ./bench_data/<task>, else the shipped sample.")
@click.option("--asset", "assets", multiple=True, type=InputPath("data", dir_okay=True), metavar="PATH",
              help="A metric asset that must be present (BERTScore or UMLS folder, ...; repeatable).")
@click.option("--offline", is_flag=True,
              help="Run every check under a network guard and report any attempted network access "
                   "(use it on the air-gapped machine).")
@click.option("--load", is_flag=True,
              help="Also load each model with llama.cpp and generate one token (slow for large models).")
@config_option
@click.pass_context
def doctor_command(ctx: click.Context, pairs: tuple[str, ...], model_ids: tuple[str, ...],
                   task_ids: tuple[str, ...], data: tuple[str, ...], assets: tuple[Path, ...], offline: bool,
                   load: bool, config_path: Path) -> None:
    """Check that this machine can run the evaluation: models, hashes, memory, GPU, data, network.

    One line per check: ✓ fine, ! worth a look, ✗ will fail. Without --pair/--model every model of
    models.toml that is on this machine is checked: local paths always, Hugging Face files when they are in
    the cache, packages when installed (the others are listed as not here; name one to require it). Model
    hashes are compared with models.lock (or the sha256 pinned in models.toml) using the hash cache; 'models
    verify' re-reads every byte. Memory needs are an estimate (weights = file size, plus the KV cache for
    n_ctx). A served model (engine = "openai") is checked by asking its server: reachable, the model name
    served, the API key accepted, tokenizer, grammar, context size; --offline then allows exactly its host.
    Nothing is written to any results database.
    Exit code 0 when nothing failed, 1 otherwise.

    \b
    Examples:
      medbench-local doctor
      medbench-local doctor --offline
      medbench-local doctor --pair openbiollm-8b --task jama \\
          --data jama=/data/jama.csv --offline
      medbench-local doctor --config /opt/bundle/models.toml \\
          --model llama3-8b-instruct --load
    """
    if data and not task_ids:
        raise UserError("--data needs --task (e.g. --task jama --data cases.csv)")
    try:
        found = find_config(config_path)
        config_file, origin = found.path, found.origin
    except UserError:  # a named file that is missing: the checklist's 'config' line says so
        config_file, origin = config_path or Path("models.toml"), ""
    report = run_doctor(config_file, config_origin=origin, pairs=pairs, model_ids=model_ids,
                        tasks=[(t, match_data(task_ids, data).get(t)) for t in task_ids],
                        assets=assets, offline=offline, load=load)
    stdout.print(f"[bold]medbench-local doctor[/bold]{' (offline)' if offline else ''}")
    for check in report.checks:
        stdout.print(f"{_MARKS[check.status]} [bold]{check.subject}[/bold]: {check.message}", soft_wrap=True)
    fails, warns, oks = report.count(FAIL), report.count(WARN), report.count(OK)
    stdout.print()
    if report.ok:
        stdout.print(f"[bold green]Ready.[/bold green] {oks} checks passed"
                     + (f", {warns} warning{'s' if warns != 1 else ''} (!) to read" if warns else "") + ".")
    else:
        stdout.print(f"[bold red]Not ready:[/bold red] {fails} check{'s' if fails != 1 else ''} failed (✗), "
                     f"{warns} warning{'s' if warns != 1 else ''}, {oks} passed.")
        ctx.exit(1)
