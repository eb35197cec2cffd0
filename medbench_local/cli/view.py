"""``medbench-local view``: browse a results database in Datasette, on this machine only.

Why Datasette: readers want to filter, facet and drill down from a score to the item, the prompt and both
outputs, not only read the tables ``compare`` prints. Datasette does that for any SQLite file; we add what it
cannot know: what every table and column means, and the questions people ask first, as canned queries
(store/catalog.py). It is an optional extra (``pip install 'medbench-local[view]'``).

Safety: bound to 127.0.0.1 (results may contain patient text), nothing fetched from the network, and the
database opened read-only: Datasette's read connections use SQLite's ``mode=ro``, which still sees rows a
running ``run`` commits (WAL), unlike ``--immutable``, which would freeze the first view of the file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import click

from ..errors import UserError
from ..store import open_database
from ..store.catalog import datasette_metadata
from ..store.queries import view_names
from ..store.views import VIEWS
from .common import db_option, stderr, stdout
from .declare import declare

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


def datasette_command(db_path: Path, metadata: Path, port: int, open_browser: bool) -> list[str]:
    """The Datasette command line: loopback only, the database in its default read-only mode (not
    --immutable: that would not see a running 'run'), and a query time limit fit for large studies."""
    return [sys.executable, "-m", "datasette", "serve", str(db_path), "--host", "127.0.0.1", "--port", str(port),
            "--metadata", str(metadata), "--setting", "sql_time_limit_ms", "20000"] \
        + (["--open"] if open_browser else [])


def _check_database(db_path: Path) -> None:
    """The file must be a medbench-local database; an older one gets its views added when it is writable."""
    db = open_database(db_path, create=False)
    try:
        present = view_names(db)
    finally:
        db.conn.close()
    missing = [name for name in VIEWS if name not in present]
    if missing:
        stderr.print(f"[yellow]{db_path} has no {' or '.join(missing)} view[/yellow] (an older, read-only "
                     "database): the canned queries that use them will fail; open a writable copy to add them.")


@declare(reads=("database",), writes=("output",), example=("view", "--db", "{db}", "--metadata-out", "{out}"))
@click.command("view")
@db_option
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="Port on 127.0.0.1 (0: any free port; Datasette prints the address).")
@click.option("--open/--no-open", "open_browser", default=None,
              help="Open a web browser on the page. Default: open one, except on headless machines (no display, "
                   "an SSH session, or output not to a terminal).")
@click.option("--metadata-out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the Datasette metadata (table and column descriptions, canned queries) to FILE as JSON "
                   "and exit without starting Datasette (e.g. for 'datasette serve study.db --metadata FILE').")
def view_command(db_path: Path, port: int, open_browser: bool | None, metadata_out: Path | None) -> None:
    """Browse a results database in Datasette: tables, views and canned queries, read-only, on 127.0.0.1.

    Every table and column is explained on its page. The database menu has canned queries: scores per
    evaluation, the items a pair disagrees on (side by side), outcomes per model and task, the slowest items,
    and the truncated, unparseable and failed items. Filter and facet any table, or write SQL; the item_results
    and paired_items views join everything per item. Needs the optional extra: pip install
    'medbench-local[view]'. Ctrl-C stops the server.

    \b
    Examples:
      medbench-local view --db study.db
      medbench-local view --db study.db --port 8080 --no-open      # on a server: ssh -L 8080:127.0.0.1:8080
      medbench-local view --db study.db --metadata-out metadata.json
    """
    _check_database(db_path)
    metadata = datasette_metadata(db_path.stem, f"medbench-local results: {db_path.name}")
    if metadata_out is not None:
        try:
            metadata_out.write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"{metadata_out}: cannot write ({exc.strerror})") from None
        stdout.print(f"Wrote Datasette metadata for {db_path} to {metadata_out}")
        return
    if not datasette_installed():
        raise UserError(f"Datasette is not installed; install the optional extra: {INSTALL_HINT}")
    if open_browser is None:
        open_browser = not looks_headless()
    with tempfile.TemporaryDirectory(prefix="medbench-view-") as folder:
        meta_file = Path(folder) / "metadata.json"
        meta_file.write_text(json.dumps(metadata), encoding="utf-8")
        where = f"http://127.0.0.1:{port}/" if port else "127.0.0.1 (a free port, shown below)"
        stderr.print(f"Serving {db_path} read-only at {where} with Datasette. Ctrl-C stops it.", soft_wrap=True)
        code = _serve(datasette_command(db_path, meta_file, port, open_browser))
    if code:
        raise click.exceptions.Exit(code)


def _serve(command: list[str]) -> int:
    """Run Datasette until it exits; Ctrl-C or SIGTERM sent to us stops it too (never leave a server behind)."""
    process = subprocess.Popen(command)

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
