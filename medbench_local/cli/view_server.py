"""The Datasette process of ``medbench-local view``: ``python -m medbench_local.cli.view_server PORT ARGS...``.

Why a launcher of our own instead of ``python -m datasette serve``: the guard (``view_guard.py``: Host check,
token, cookie) must be installed in this process and only here, not as a plugin every Datasette on the machine
would load, and without writing code files to a plugins folder. It registers the guard as Datasette's
``asgi_wrapper`` hook, then runs Datasette's own ``serve`` command with ARGS and ``--host 127.0.0.1 --port
PORT``. The token comes in the environment (``MEDBENCH_VIEW_TOKEN``), which other accounts cannot read, and is
removed from it at once; without one this refuses to serve anything.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

from .view_guard import TOKEN_ENV, Guard

PLUGIN_NAME = "medbench_local_view_guard"


def _plugin(token: str, port: int) -> types.ModuleType:
    """A plugin module made here (Datasette lists plugins by module name), with the guard as its
    ``asgi_wrapper`` hook: registered in this process only."""
    from datasette import hookimpl

    plugin = types.ModuleType(PLUGIN_NAME, "medbench-local view: Host check, token and cookie (view_guard.py)")

    @hookimpl
    def asgi_wrapper(datasette: Any) -> Any:
        def wrap(app: Any) -> Any:
            return Guard(app, token=token, port=port)

        return wrap

    plugin.asgi_wrapper = asgi_wrapper  # type: ignore[attr-defined]
    return plugin


def main(argv: list[str]) -> int:
    token = os.environ.pop(TOKEN_ENV, "")
    if len(argv) < 1 or not argv[0].isdigit() or len(token) < 32:
        sys.stderr.write("medbench-local view: this process is started by 'medbench-local view' only\n")
        return 2
    port = int(argv[0])

    from datasette.cli import cli
    from datasette.plugins import pm

    pm.register(_plugin(token, port), name=PLUGIN_NAME)
    cli.main(args=["serve", *argv[1:], "--host", "127.0.0.1", "--port", str(port)], prog_name="datasette",
             standalone_mode=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
