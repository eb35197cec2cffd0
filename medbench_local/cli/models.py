"""``medbench-local models``: what models.toml defines and what each entry resolves to on this machine
(``list``), fetching and locking the files (``pull``), and checking them against the lock (``verify``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from ..airgap import select_models
from ..config import HubSource, ModelSpec, read_config
from ..errors import UserError
from ..gates.files import private_dir
from ..modelfiles.hashing import cached_sha256
from ..modelfiles.lock import LockEntry, hash_file, lock_path, read_lock, write_lock
from ..modelfiles.pull import check_hub_reachable, hub_cache_dir, hub_offline, pull_model
from ..modelfiles.resolve import resolve
from ..modelfiles.verdict import LOCK_MISMATCH, MISSING, PIN_MISMATCH, SIZE, STALE_LOCK, verify
from ..units import count, human_size
from .common import config_option, stderr, stdout
from .declare import declare
from .layout import print_prose
from .safe_text import literal


@click.group("models")
def models_group() -> None:
    """Inspect the models and pairs in models.toml; pull them into models.lock and verify them."""


@declare(reads=("config", "model"), example=("models", "list", "--config", "{config}"))
@models_group.command("list")
@config_option
def list_models(config_path: Path) -> None:
    """List models (role, source, prompt mode, whether the file is present), retrieval arms (their model, index and
    settings) and pairs.

    Nothing is downloaded or hashed: Hugging Face sources are looked up in the local cache only.

    \b
    Example:
      medbench-local models list --config models.toml
    """
    config = read_config(config_path)
    print_prose(stdout, f"[bold]Models[/bold] in {literal(config.path)} [dim](found as: {config.origin})[/dim]")
    for spec in config.models.values():
        found = resolve(spec)
        if found.path is not None:
            status = f"[green]present[/green], {human_size(found.path.stat().st_size)}: {literal(found.path)}"
        else:
            status = f"[yellow]missing[/yellow]: {literal(found.how)}"
        stdout.print()
        print_prose(stdout, f"[bold]{literal(spec.id)}[/bold]  {spec.role} · {spec.prompt_mode} prompt · "
                            f"n_ctx {spec.n_ctx}")
        print_prose(stdout, f"  source: {literal(spec.source.describe())}", hanging=" " * 10)
        print_prose(stdout, f"  file:   {status}", hanging=" " * 10)
        if spec.retrieval is not None:  # an arm ([arms.NAME], docs/retrieval.md)
            r = spec.retrieval
            there = "[green]present[/green]" if r.index.is_file() else \
                "[yellow]missing[/yellow] (medbench-local index build ... --out it)"
            print_prose(stdout, f"  arm:    {literal(spec.base or '')} + passages from {literal(r.index)} ({there}); "
                                f"k {r.k}, query {r.query}, placement {r.placement}, order {r.order}, "
                                f"passage budget {r.passage_budget} tokens", hanging=" " * 10)
        if spec.extra.get("note"):
            print_prose(stdout, f"  [dim]note:   {literal(spec.extra['note'])}[/dim]", hanging=" " * 10)
    stdout.print()
    stdout.print("[bold]Pairs[/bold] (biomedical vs general)")
    for pair in config.pairs.values():
        print_prose(stdout, f"  [bold]{literal(pair.name)}[/bold]: {literal(pair.biomedical)} vs "
                            f"{literal(pair.general)}" + (f"  [dim]{literal(pair.description)}[/dim]"
                                                           if pair.description else ""), hanging=" " * 4)


def _size(n: int) -> str:
    return human_size(n)


def _hash_with_status(path: Path) -> str:
    with stderr.status(f"SHA-256 of {path.name} ({_size(path.stat().st_size)}) …"):
        return cached_sha256(path)


@declare(reads=("config", "lock", "model"), writes=("lock",), example=("models", "pull", "smollm2-135m-instruct", "--config", "{config}"))
@models_group.command("pull")
@click.argument("model_ids", nargs=-1, metavar="[MODEL]...")
@click.option("--pair", "pairs", multiple=True, metavar="NAME", help="Both models of a pair (repeatable).")
@click.option("--all", "all_models", is_flag=True, help="Every model in models.toml.")
@click.option("--update", is_flag=True,
              help="Re-resolve revisions that are branches and accept files whose hash differs from models.lock "
                   "(rewrites their entries). Without it, pull reproduces exactly what models.lock records.")
@config_option
@click.pass_context
def pull_models(ctx: click.Context, model_ids: tuple[str, ...], pairs: tuple[str, ...], all_models: bool,
                update: bool, config_path: Path) -> None:
    """Download models into the Hugging Face cache and record their exact bytes in models.lock.

    Hugging Face sources are fetched with huggingface-hub at the revision pinned in models.toml (or at the
    commit models.lock already records) into the standard HF cache (HF_HOME / HF_HUB_CACHE). Package and
    local sources are only hashed. For each model, models.lock (JSON, beside models.toml) records repository,
    file, requested revision, resolved commit, SHA-256 and size; commit it with models.toml so that another
    machine pulls byte-identical files. With HF_HUB_OFFLINE=1 nothing is downloaded: files already in the
    cache are hashed and locked. When the Hub cannot be reached (no network), pull stops at once with one
    line and changes nothing. 'run' never downloads.

    \b
    Examples:
      medbench-local models pull --pair openbiollm-8b
      medbench-local models pull smollm2-135m-instruct gemma3-270m
      # a model under a gated upstream licence:
      HF_TOKEN=hf_... medbench-local models pull llama3-8b-instruct
    """
    config = read_config(config_path)
    specs = list(config.models.values()) if all_models else select_models(config, pairs, model_ids)
    target = lock_path(config)
    entries = read_lock(target)
    if hub_offline():
        stderr.print("[yellow]HF_HUB_OFFLINE is set:[/yellow] nothing will be downloaded; files already in the "
                     f"Hugging Face cache ({hub_cache_dir()}) are hashed and locked.")
    elif any(isinstance(spec.source, HubSource) for spec in specs):
        check_hub_reachable()
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()  # failures become our one line per model, not retry chatter
    private_dir(target.parent, parents=True)  # the user config folder, for the shipped demo config
    failures: list[str] = []
    for spec in specs:
        stderr.print(f"[bold]{literal(spec.id)}[/bold]: {literal(spec.source.describe())}", soft_wrap=True)
        try:
            pulled = pull_model(spec, config.path.parent, entries.get(spec.id), update=update,
                                hasher=_hash_with_status)
        except UserError as exc:
            stdout.print(f"[red]✗[/red] {literal(exc)}", soft_wrap=True)
            failures.append(spec.id)
            continue
        entries[spec.id] = pulled.entry
        write_lock(target, {k: v for k, v in entries.items() if k in config.models})
        commit = f", commit {pulled.entry['commit'][:12]}" if pulled.entry.get("commit") else ""
        stdout.print(f"[green]✓[/green] {spec.id}: {pulled.action} ({_size(pulled.entry['size'])}{commit}), "
                     f"sha256 {pulled.entry['sha256']}", soft_wrap=True)
        stdout.print(f"  [dim]{literal(pulled.path)}[/dim]", soft_wrap=True)
    done = len(specs) - len(failures)
    stdout.print(f"{done} of {count(len(specs), 'model')} locked in {literal(target)}" if done else "Nothing was locked.")
    if failures:
        stdout.print(f"[red]Failed:[/red] {', '.join(failures)}")
        ctx.exit(1)


@declare(reads=("config", "lock", "model"), example=("models", "verify", "--config", "{config}"))
@models_group.command("verify")
@click.argument("model_ids", nargs=-1, metavar="[MODEL]...")
@click.option("--pair", "pairs", multiple=True, metavar="NAME", help="Both models of a pair (repeatable).")
@click.option("--cached", is_flag=True,
              help="Trust the hash cache (device, inode, size, mtime, ctime) instead of re-reading every byte. "
                   "Quick, and it notices any rewrite of the file, but not corruption below the file system "
                   "(bit rot, a failing disk).")
@config_option
@click.pass_context
def verify_models(ctx: click.Context, model_ids: tuple[str, ...], pairs: tuple[str, ...], cached: bool,
                  config_path: Path) -> None:
    """Re-hash model files and compare them with models.lock (or models.toml's sha256 pins); exit 1 on a mismatch.

    By default every byte is read again (the cache that speeds up 'run' is bypassed), because the point is to
    detect corruption. A model without a models.lock entry is checked against the 'sha256' pinned in
    models.toml. Without MODEL or --pair: every model that models.lock records, and every pinned model whose
    file is on this machine (a retrieval arm's file is its model's, verified once).

    \b
    Examples:
      medbench-local models verify
      medbench-local models verify --pair openbiollm-8b
    """
    config = read_config(config_path)
    entries = read_lock(lock_path(config))
    if model_ids or pairs:
        specs = select_models(config, pairs, model_ids)
    else:
        specs = [spec for mid, spec in config.models.items() if spec.retrieval is None  # an arm's file is its model's
                 and (mid in entries or (spec.sha256 and resolve(spec).path is not None))]
        if not specs:
            raise UserError(f"{lock_path(config)}: no locked models to verify, and no model pinned with 'sha256' "
                            "in models.toml is on this machine; run 'medbench-local models pull' first (or "
                            "import a bundle)")
    failures: list[str] = []
    for spec in specs:
        problem = _verify_one(spec, entries.get(spec.id), config.path.parent, cached)
        if problem:
            failures.append(spec.id)
            stdout.print(f"[red]✗[/red] {literal(spec.id)}: {literal(problem)}", soft_wrap=True)
    ok = len(specs) - len(failures)
    how = "hash cache" if cached else "full re-hash"
    against = "models.lock" if all(spec.id in entries for spec in specs) else "models.lock or their sha256 pins"
    if failures:
        stdout.print(f"[red]{len(failures)} of {count(len(specs), 'model')} do not match {against}[/red] ({how}): "
                     f"{', '.join(failures)}")
        ctx.exit(1)
    matched = f"All {count(ok, 'model')} match" if ok != 1 else "1 model matches"
    stdout.print(f"[green]{matched} {against}[/green] ({how}).")


def _rehash(model_id: str) -> Callable[[Path], str]:
    """A full re-hash of every byte, with a progress bar on a terminal."""
    def digest(path: Path) -> str:
        with Progress(TextColumn(f"[bold]{model_id}[/bold]"), BarColumn(bar_width=30), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=stderr, transient=True,
                      disable=not stderr.is_terminal) as progress:
            bar = progress.add_task("hash", total=path.stat().st_size)
            return hash_file(path, lambda n: progress.update(bar, advance=n))
    return digest


def _verify_one(spec: ModelSpec, entry: LockEntry | None, config_dir: Path, cached: bool) -> str | None:
    """The shared verdict (``modelfiles.verdict.verify``), phrased as one ✓/✗ row; the problem, or None."""
    if entry is None and not spec.sha256:
        return ("nothing to verify against: not in models.lock and no 'sha256' pin in models.toml; run "
                f"'medbench-local models pull {spec.id}'")
    verdict = verify(spec, entry, config_dir, digest=cached_sha256 if cached else _rehash(spec.id))
    path, size, digest, expected = verdict.path, verdict.size or 0, verdict.sha256, verdict.expected
    if verdict.problem == STALE_LOCK:
        return f"{verdict.detail}; run 'medbench-local models pull {spec.id}'"
    if verdict.problem == MISSING:
        return verdict.detail
    if verdict.problem == SIZE:
        locked = verdict.lock["size"] if verdict.lock is not None else 0
        return (f"{path} has {size:,} bytes but models.lock says {locked:,}: the file is truncated or was "
                "replaced; pull it again (or re-import the bundle)")
    if verdict.problem == PIN_MISMATCH and verdict.lock is not None:
        return f"SHA-256 {digest} matches models.lock but not the sha256 pinned in models.toml ({spec.sha256})"
    if verdict.problem in (LOCK_MISMATCH, PIN_MISMATCH):
        reference = "models.lock" if verdict.reference == "models.lock" else "the sha256 pinned in models.toml"
        return (f"SHA-256 mismatch: {path} has {digest}, {reference} has {expected}: the file is corrupted "
                "or was replaced; pull it again (or re-import the bundle)")
    reference = "models.lock" if verdict.reference == "models.lock" else "the sha256 pinned in models.toml"
    assert digest is not None
    stdout.print(f"[green]✓[/green] {spec.id}: sha256 {digest[:16]}… matches {reference} ({_size(size)})",
                 soft_wrap=True)
    return None
