"""``medbench-local view``: browse a results database in Datasette, on this machine only, for this user only.

Why Datasette: readers want to filter, facet and drill down from a score to the item, the prompt and both
outputs, not only read the tables ``compare`` prints. Datasette does that for any SQLite file; we add what it
cannot know: what every table and column means, and the questions people ask first, as canned queries
(store/catalog.py). It is an optional extra (``pip install 'medbench-local[view]'``).

Safety (results may contain patient text):

* **Only this user's browser**: Datasette runs behind ``view_guard.py`` (installed by ``view_server.py`` in the
  Datasette process only): requests must name the address served in their Host header (no DNS rebinding) and
  carry the random token of the printed URL, or the cookie it sets (other accounts on a shared machine reach
  127.0.0.1 too). The token goes to Datasette in its environment, never on a command line.
* **Loopback only**, nothing fetched from the network.
* **Strictly read-only**: the check opens the database with ``store/readonly.py`` (``mode=ro``, never a
  migration; an older database is served as it is, without the canned queries it cannot answer), and
  Datasette reads it with SQLite's ``mode=ro``, which still sees rows a running ``run`` commits (WAL). Where
  its folder cannot be written (read-only media, another account's folder), nothing can be writing it and
  ``mode=ro`` could not open a WAL database, so Datasette opens it ``--immutable`` instead.
* **A port in use** is found before anything starts (we bind it ourselves first): one line, exit 1.
"""

from __future__ import annotations

import errno
import html
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Mapping
from pathlib import Path

import click

from ..errors import UserError
from ..gates.files import atomic_write, private_temporary_folder
from ..store.catalog import datasette_metadata
from ..store.database import reading
from ..store.queries import reads_file
from ..store.readonly import stored_names
from ..store.views import VIEWS, stored_view_metrics
from .common import db_option, stderr, stdout
from .declare import OutputPath, declare
from .safe_text import plain
from .view_guard import TOKEN_ENV

INSTALL_HINT = "pip install 'medbench-local[view]'"


def datasette_installed() -> bool:
    return importlib.util.find_spec("datasette") is not None


def looks_headless(environ: Mapping[str, str] | None = None, platform: str | None = None,
                   interactive: bool | None = None) -> bool:
    """True where opening a browser makes no sense: no terminal (CI, a pipe), an SSH session, or a Linux/BSD
    machine without a graphical display."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    interactive = sys.stdout.isatty() if interactive is None else interactive
    if not interactive or env.get("SSH_CONNECTION") or env.get("SSH_TTY"):
        return True
    if platform.startswith(("win", "darwin", "cygwin")):
        return False
    return not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def datasette_command(db_path: Path, metadata: Path, port: int, *, frozen: bool) -> list[str]:
    """The Datasette command line (``view_server.py`` adds ``--host 127.0.0.1 --port PORT`` and the guard): the
    database read-only (``mode=ro``, or ``--immutable`` where nothing can write it) and a query time limit fit
    for large studies. No ``--open``: Datasette would open the address without the token."""
    path = str(db_path.absolute())  # never read as an option, whatever the name
    database = ["--immutable", path] if frozen else [path]
    return [sys.executable, "-m", "medbench_local.cli.view_server", str(port), *database,
            "--metadata", str(metadata), "--setting", "sql_time_limit_ms", "20000"]


def immutable(db_path: Path) -> bool:
    """Whether Datasette opens the database ``--immutable``: where its folder cannot be written and no unmerged
    WAL lies beside it. Nothing can be writing there, and ``mode=ro`` could not even open a WAL database (SQLite
    would have to create its ``-shm`` index). Elsewhere ``mode=ro``, which sees what a running ``run`` commits.
    The same rule as the read-only check's (store/readonly.py), so both open the file the same way."""
    path = db_path.absolute()
    if os.access(path.parent, os.W_OK):
        return False
    try:
        return path.with_name(path.name + "-wal").stat().st_size == 0
    except OSError:
        return True


def _stored_names(db_path: Path) -> tuple[set[str], bool, tuple[str, ...] | None]:
    """The tables and views of the file as Datasette will read it, whether it is older than today's schema, and
    the metric columns of its views (None without them).

    Through the read gate (``store.database.reading``), as every read command: only a regular medbench-local
    database, never migrated, and damage (schema, stored values) is one line before anything is served. An older
    database is read there through a temporary upgraded copy, which has today's views whatever the file has, so
    the names come from the file itself (``stored_names``); the copy keeps the views the file has (the metric
    columns are then the file's: store.views.stored_view_metrics)."""
    with reading(db_path) as db:
        metrics = stored_view_metrics(db)
        if reads_file(db, db_path):
            return set(db.table_names()) | set(db.view_names()), False, metrics
    return stored_names(db_path), True, metrics


def _check_database(db_path: Path) -> tuple[set[str], tuple[str, ...] | None]:
    """The tables and views of a medbench-local database, opened strictly read-only (never migrated), and the
    metric columns of its views; an older database, or one without the result views, is said in one line and
    served as it is."""
    present, older, metrics = _stored_names(db_path)
    missing = [name for name in VIEWS if name not in present]
    if missing:
        what = f"{'an older database' if older else 'a database'} without the {' and '.join(missing)} " \
            f"view{'s' if len(missing) > 1 else ''}"
        stderr.print(f"{plain(db_path, one_line=True)}: {what}; served as it is (read-only, never upgraded), "
                     "without the canned queries that need today's result views.", markup=False, soft_wrap=True)
    return present, metrics


def reserve_port(port: int) -> int:
    """The port to serve on, checked by binding 127.0.0.1:PORT ourselves first (SO_REUSEADDR, as Uvicorn does),
    so that a port in use is one line before anything starts; 0 picks a free port now, so that the printed
    address is exact."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            reason = "in use" if exc.errno == errno.EADDRINUSE else f"not available ({exc.strerror or exc})"
            raise UserError(f"127.0.0.1:{port} is {reason}; choose another port with --port "
                            "(--port 0: any free port)") from None
        return int(probe.getsockname()[1])


@declare(reads=("database",), writes=("output",), example=("view", "--db", "{db}", "--metadata-out", "{out}"))
@click.command("view")
@db_option
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--open/--no-open", "open_browser", default=None,
              help="Open a web browser on the page. Default: open one, except on headless machines (no display, "
                   "an SSH session, or output not to a terminal).")
@click.option("--metadata-out", type=OutputPath(), metavar="FILE",
              help="Write the Datasette metadata (table and column descriptions, canned queries) to FILE as JSON "
                   "and exit without starting Datasette (e.g. for 'datasette serve study.db --metadata FILE').")
def view_command(db_path: Path, port: int, open_browser: bool | None, metadata_out: Path | None) -> None:
    """Browse a results database in Datasette: tables, views and canned queries, read-only, on 127.0.0.1.

    Every table and column is explained on its page. The front page lists canned queries: scores per
    evaluation, the items a pair disagrees on (side by side), outcomes per model and task, the slowest items,
    and the truncated, unparseable and failed items. Filter and facet any table, or write SQL; the item_results
    and paired_items views join everything per item. Only the address printed at the start opens it (it
    carries a key for this session, like Jupyter's). Needs the optional extra: pip install
    'medbench-local[view]'. Ctrl-C stops the server.

    \b
    Examples:
      medbench-local view --db study.db
      medbench-local view --db study.db --port 8080 --no-open      # on a server: ssh -L 8080:127.0.0.1:8080
      medbench-local view --db study.db --metadata-out metadata.json
    """
    present, metrics = _check_database(db_path)
    metadata = datasette_metadata(db_path.stem, f"medbench-local results: {db_path.name}", present, metrics)
    if metadata_out is not None:
        atomic_write(metadata_out, json.dumps(metadata, indent=2, ensure_ascii=False) + "\n")
        stdout.print(f"Wrote Datasette metadata for {plain(db_path, one_line=True)} to "
                     f"{plain(metadata_out, one_line=True)}", markup=False, soft_wrap=True)
        return
    if not datasette_installed():
        raise UserError(f"Datasette is not installed; install the optional extra: {INSTALL_HINT}")
    port = reserve_port(port)
    if open_browser is None:
        open_browser = not looks_headless()
    token = secrets.token_urlsafe(32)
    url = f"http://127.0.0.1:{port}/?token={token}"
    with private_temporary_folder("medbench-view-") as folder:  # 0700: this account only
        meta_file = atomic_write(folder / "metadata.json", json.dumps(metadata))
        opener = _redirect_file(folder, url) if open_browser else None
        frozen = immutable(db_path)
        mode = "read-only (immutable: its folder cannot be written)" if frozen else "read-only"
        stderr.print(f"Serving {plain(db_path, one_line=True)} {mode} with Datasette. Open this address (it holds "
                     "this session's key: do not share it):", markup=False, soft_wrap=True)
        stderr.print(f"  {url}", markup=False, soft_wrap=True)
        stderr.print("Ctrl-C stops it.", markup=False)
        command = datasette_command(db_path, meta_file, port, frozen=frozen)
        code = _serve(command, {**os.environ, TOKEN_ENV: token}, port, opener)
    if code:
        raise click.exceptions.Exit(code)


def _redirect_file(folder: Path, url: str) -> Path:
    """A page that sends the browser to ``url``: the browser is opened on this file, not on the URL, so that
    the token never appears in the browser's command line (Jupyter's way). Owner-only, in our private folder."""
    url = html.escape(url, quote=True)
    page = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={url}">'
            f'<title>medbench-local view</title></head><body><a href="{url}">Open the results</a></body></html>')
    return atomic_write(folder / "open.html", page)


def _open_when_served(process: subprocess.Popen[bytes], port: int, page: Path) -> None:
    """Open the browser once Datasette accepts connections (not before: the page would fail), or never if it
    stops first."""
    while process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.1)
            continue
        webbrowser.open(page.as_uri())
        return


def _serve(command: list[str], env: Mapping[str, str], port: int, opener: Path | None) -> int:
    """Run Datasette until it exits; Ctrl-C or SIGTERM sent to us stops it too (never leave a server behind)."""
    process = subprocess.Popen(command, env=dict(env))
    if opener is not None:
        threading.Thread(target=_open_when_served, args=(process, port, opener), daemon=True).start()

    def forward(signum: int, frame: object) -> None:
        process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait()
    except KeyboardInterrupt:  # a terminal's Ctrl-C reached Datasette as well; a SIGINT sent to us alone did not
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        return 0 if code in (0, -signal.SIGINT, 128 + signal.SIGINT) else code
    finally:
        signal.signal(signal.SIGTERM, previous)
