"""``models pull``: fetch each configured model on a connected (staging) machine and lock its exact bytes.

Hugging Face sources are downloaded with huggingface-hub into the standard HF cache (``HF_HOME``/``HF_HUB_CACHE``
are respected, so ``run`` finds the files there later without any network), at the pinned revision, or at the
commit already recorded in models.lock so that a second machine gets byte-identical files even when models.toml
says ``revision = "main"``. Package and local sources are not downloaded: they are only hashed and locked.

Only this module downloads. ``run`` never does (resolve.py looks in the local cache only). With
``HF_HUB_OFFLINE=1`` pull does not download either: it locks what the cache already holds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import HubSource, ModelSpec, PackageSource
from ..errors import ModelFileError, UserError
from ..gates.files import atomic_write, private_dir, read_input
from .hashing import cached_sha256
from .lock import LockEntry, source_fields, stale_reason
from .resolve import require

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Pulled:
    """The outcome for one model: its new lock entry, where the file is, and what was done."""

    entry: LockEntry
    path: Path
    action: str  # "downloaded", "already in the HF cache", "hashed"


def hub_offline() -> bool:
    """True when huggingface-hub is in offline mode (``HF_HUB_OFFLINE=1``): nothing may be downloaded."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The HF hub cache in use (``HF_HUB_CACHE``, else ``HF_HOME``/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def check_hub_reachable(timeout: float = 5.0) -> None:
    """Raise UserError (one line) unless a TCP connection to the Hub endpoint (or the proxy for it) opens.

    Why before any download: without a network, huggingface-hub's own failure comes after name lookups, retries
    and log lines per file; one quick probe turns that into one line that says what to do. The name lookup runs
    in a daemon thread because getaddrinfo has no timeout of its own."""
    import socket
    import threading
    import urllib.request
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    endpoint = str(constants.ENDPOINT)
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = None if urllib.request.proxy_bypass(host) else urllib.request.getproxies().get(parts.scheme)
    if proxy:
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 80
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout * 2)
    if outcome and outcome[0] is None:
        return
    error = outcome[0] if outcome else None
    if error is None:
        reason = f"no answer within {timeout * 2:.0f} s"
    elif isinstance(error, socket.gaierror):
        reason = f"cannot look up {host}"
    elif isinstance(error, ConnectionRefusedError):
        reason = f"connection to {host}:{port} refused"
    elif isinstance(error, (TimeoutError, socket.timeout)):
        reason = f"no answer from {host}:{port} within {timeout:.0f} s"
    else:
        reason = f"{host}:{port}: {getattr(error, 'strerror', None) or error}"
    via = f" via the proxy {proxy}" if proxy else ""
    raise UserError(f"cannot reach the Hugging Face Hub at {endpoint}{via} ({reason}); nothing was downloaded or "
                    "locked. On a machine without network, set HF_HUB_OFFLINE=1 to lock the files already in the "
                    "Hugging Face cache, or pull on a connected machine and carry the files with "
                    "'medbench-local bundle export'")


def pull_model(spec: ModelSpec, config_dir: Path, previous: LockEntry | None, *, update: bool = False,
               hasher: Callable[[Path], str] = cached_sha256) -> Pulled:
    """Fetch (hub) or locate (package, path) ``spec``'s file, hash it and return its lock entry.

    ``previous`` is the model's current models.lock entry: unless ``update`` is set, a hub download uses its
    commit, and a file whose hash differs from it is refused (nothing is locked). A ``sha256`` pinned in
    models.toml is always enforced. Raises ModelFileError/UserError with one clear line.
    """
    if previous is not None and stale_reason(previous, spec, config_dir) is not None:
        previous = None  # models.toml changed the source since: this is a new entry
    commit: str | None = None
    if isinstance(spec.source, HubSource):
        path, commit, action = _fetch_hub(spec, spec.source, None if update else previous)
    else:
        path, action = require(spec), "hashed"
    sha256 = hasher(path)
    _check_hash(spec, path, sha256, None if update else previous)
    if isinstance(spec.source, HubSource) and commit and not _COMMIT.match(spec.source.revision) \
            and commit != spec.source.revision:
        _write_ref(path, spec.source.revision, commit)  # only now: run looks up models.toml's revision
    entry: LockEntry = {**source_fields(spec, config_dir), "sha256": sha256, "size": path.stat().st_size}
    if commit is not None:
        entry["commit"] = commit
    if isinstance(spec.source, PackageSource):
        version = _package_version(spec.source.package)
        if version:
            entry["package_version"] = version
    return Pulled(entry, path, action)


def _check_hash(spec: ModelSpec, path: Path, sha256: str, previous: LockEntry | None) -> None:
    if spec.sha256 and spec.sha256 != sha256:
        raise ModelFileError(f"model '{spec.id}': {path} has SHA-256 {sha256}, but models.toml pins {spec.sha256}; "
                             "nothing was locked (fix or remove the 'sha256' pin if the new file is intended)")
    if previous is not None and previous.get("sha256") != sha256:
        where = f" (commit {previous['commit']})" if previous.get("commit") else ""
        raise ModelFileError(f"model '{spec.id}': {path} has SHA-256 {sha256}, but models.lock has "
                             f"{previous.get('sha256')}{where}; the file changed upstream or is corrupted, nothing "
                             f"was locked (if the new file is intended: medbench-local models pull --update {spec.id})")
    blob = Path(os.path.realpath(path)).name  # HF cache blobs of LFS files are named by their SHA-256
    if isinstance(spec.source, HubSource) and _SHA256.match(blob) and blob != sha256:
        raise ModelFileError(f"model '{spec.id}': download corrupted: the Hub says SHA-256 {blob} but the file in "
                             f"the cache has {sha256}; delete {os.path.realpath(path)} and pull again")


def _fetch_hub(spec: ModelSpec, source: HubSource, previous: LockEntry | None) -> tuple[Path, str | None, str]:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    locked_commit = previous.get("commit") if previous else None
    revision = locked_commit if isinstance(locked_commit, str) and _COMMIT.match(locked_commit) else source.revision
    offline = hub_offline()
    cached = try_to_load_from_cache(repo_id=source.repo, filename=source.file, revision=revision)
    try:
        path = Path(hf_hub_download(repo_id=source.repo, filename=source.file, revision=revision,
                                    local_files_only=offline))
    except Exception as exc:
        raise UserError(hub_error_message(spec, source, revision, exc, offline)) from None
    commit = _commit_of(path) or (revision if _COMMIT.match(revision) else None)
    already = isinstance(cached, str) and os.path.realpath(cached) == os.path.realpath(path)
    action = "already in the HF cache" if already else "downloaded"
    return path, commit, action


def _commit_of(path: Path) -> str | None:
    """``…/models--owner--name/snapshots/<commit>/<file>`` -> commit."""
    parts = path.parts
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "snapshots" and _COMMIT.match(parts[index + 1]):
            return parts[index + 1]
    return None


def _write_ref(path: Path, revision: str, commit: str) -> None:
    parts = path.parts
    index = max(i for i, part in enumerate(parts) if part == "snapshots")
    ref = Path(*parts[:index]) / "refs" / revision
    try:
        if ref.is_file() and read_input(ref, OSError, max_bytes=4096).decode("utf-8", "replace").strip() == commit:
            return
        private_dir(ref.parent, parents=True)
        atomic_write(ref, commit, updating=True)
    except OSError as exc:
        raise UserError(f"cannot record revision '{revision}' -> {commit} in the HF cache ({ref}: {exc.strerror})") \
            from None


def _package_version(package: str) -> str | None:
    import importlib.metadata

    try:
        dists = importlib.metadata.packages_distributions().get(package) or []
        return importlib.metadata.version(dists[0]) if dists else None
    except Exception:
        return None


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a hub error, looking through the exception chain (the hub wraps 403 in a cache miss)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
        current = current.__cause__ or current.__context__
    return None


def hub_error_message(spec: ModelSpec, source: HubSource, revision: str, exc: BaseException, offline: bool) -> str:
    """Turn a huggingface-hub exception into one line that says what to do."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"model '{spec.id}': {source.repo}/{source.file}@{revision}"
    page = f"https://huggingface.co/{source.repo}"
    licence = f" ({spec.extra['licence']})" if spec.extra.get("licence") else ""
    token_steps = ("create a read token at https://huggingface.co/settings/tokens and run 'hf auth login' "
                   "(or export HF_TOKEN=...), then pull again")
    status = _http_status(exc)
    if isinstance(exc, GatedRepoError):
        return (f"{what}: the repository is gated: its licence{licence} must be accepted before download. "
                f"Log in on {page} with your account, accept the licence, {token_steps}")
    if status == 403:
        return (f"{what}: access denied (HTTP 403). Your token lacks access: accept the licence{licence} on "
                f"{page} with the same account (a fine-grained token also needs 'read access to public gated "
                f"repositories'), or {token_steps}")
    if isinstance(exc, RepositoryNotFoundError) or status == 401:
        return (f"{what}: repository not found, or it is private/gated and no valid token was sent (HTTP "
                f"{status or 404}). Check 'repo' in models.toml; for a gated or private repository accept its "
                f"licence on {page} and {token_steps}")
    if isinstance(exc, RevisionNotFoundError):
        return f"{what}: revision '{revision}' does not exist in {source.repo}; check 'revision' in models.toml"
    if isinstance(exc, LocalEntryNotFoundError):
        if offline:
            return (f"{what}: not in the Hugging Face cache ({hub_cache_dir()}) and HF_HUB_OFFLINE is set, so "
                    "nothing was downloaded; pull on a connected machine and carry the files with "
                    "'medbench-local bundle export'")
        return (f"{what}: cannot reach the Hub and the file is not in the cache ({hub_cache_dir()}); check the "
                "connection, proxy (HTTPS_PROXY) and HF_ENDPOINT")
    if isinstance(exc, EntryNotFoundError):
        return f"{what}: no file '{source.file}' in {source.repo} at revision '{revision}'; check 'file' in models.toml"
    if isinstance(exc, OSError) and not hasattr(exc, "response"):
        return f"{what}: cannot write to the HF cache {hub_cache_dir()} ({exc})"
    return f"{what}: download failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
