"""Where medbench-local finds its files: the user's models.toml, and the demo models.toml and ``bench_data``
samples that ship with it.

Why one module: a wheel installed in a fresh virtualenv has no repository around it, so ``./models.toml`` and
``./bench_data/<task>`` cannot be the only places we look. Every command resolves them here, in one documented
order, and says which one it used (``models list`` prints it, ``run`` records it), so a number is always
traceable to the file that produced it.

The shipped files live in the repository at ``models.toml`` and ``bench_data/`` (the project layout) and are
copied into the wheel as ``medbench_local/_bundled/`` by ``setup.py``'s build step. An editable install or a
source checkout has no ``_bundled`` folder: the checkout's own files are used instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ConfigError

CONFIG_NAME = "models.toml"
ENV_CONFIG = "MEDBENCH_LOCAL_CONFIG"
APP_NAME = "medbench-local"
BUNDLE_DIR = "_bundled"      # inside the installed package (wheel builds only)
SAMPLES_DIR = "bench_data"

# How a config was found, in the order they are tried.
FROM_OPTION = "--config"
FROM_ENV = ENV_CONFIG
FROM_CWD = "working directory"
FROM_USER = "user config"
FROM_PACKAGE = "demo config shipped with medbench-local"


@dataclass(frozen=True)
class Found:
    """A file we located, and which rule found it (shown to the user, recorded in runs)."""

    path: Path
    origin: str

    def describe(self) -> str:
        return f"{self.path} ({self.origin})"


def shipped_root() -> Path | None:
    """The folder holding the shipped ``models.toml`` and ``bench_data/``: the installed package's ``_bundled``
    folder, else the source checkout this module was imported from; None when neither is there."""
    bundled = resources.files(__package__ or "medbench_local").joinpath(BUNDLE_DIR)
    if isinstance(bundled, Path) and (bundled / CONFIG_NAME).is_file():
        return bundled
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / CONFIG_NAME).is_file() and (checkout / SAMPLES_DIR).is_dir() \
            and (checkout / "pyproject.toml").is_file():
        return checkout
    return None


def is_shipped(path: Path) -> bool:
    """True when ``path`` lies inside the shipped files of an installed package (read-only for the user)."""
    root = shipped_root()
    if root is None or root.name != BUNDLE_DIR:
        return False
    try:
        Path(path).resolve().relative_to(root)
    except ValueError:
        return False
    return True


def user_config_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """The per-user configuration folder, as platformdirs would choose it (without the dependency):
    ``$XDG_CONFIG_HOME/medbench-local`` when set, else ``%APPDATA%`` on Windows,
    ``~/Library/Application Support`` on macOS and ``~/.config`` elsewhere."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    home = Path(env.get("HOME") or Path.home())
    if env.get("XDG_CONFIG_HOME"):
        base = Path(env["XDG_CONFIG_HOME"])
    elif platform.startswith("win") and env.get("APPDATA"):
        base = Path(env["APPDATA"])
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = home / ".config"
    return base / APP_NAME


def find_config(explicit: Path | None = None, environ: Mapping[str, str] | None = None,
                cwd: Path | None = None) -> Found:
    """The models.toml to use: ``--config``, else ``$MEDBENCH_LOCAL_CONFIG``, else ``./models.toml``, else the
    user config folder's ``models.toml``, else the shipped demo config. A path the user named explicitly must
    exist (ConfigError otherwise): falling through to another file would silently run other models."""
    env = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    for value, origin in ((explicit, FROM_OPTION), (env.get(ENV_CONFIG) or None, FROM_ENV)):
        if value is not None:
            path = Path(value).expanduser()
            path = path if path.is_absolute() else cwd / path
            if not path.exists():
                raise ConfigError(path, None, f"file not found (given by {origin})")
            if not path.is_file():  # a FIFO or device would block or stream forever: never opened
                raise ConfigError(path, None, f"not a regular file (given by {origin})")
            return Found(path, origin)
    for path, origin in ((cwd / CONFIG_NAME, FROM_CWD), (user_config_dir(env) / CONFIG_NAME, FROM_USER)):
        if path.is_file():
            return Found(path, origin)
    root = shipped_root()
    if root is None:
        raise ConfigError(CONFIG_NAME, None, f"no models.toml found: pass --config, set {ENV_CONFIG}, or create "
                                             f"{user_config_dir(env) / CONFIG_NAME}")
    return Found(root / CONFIG_NAME, FROM_PACKAGE)


def default_data(task_id: str, cwd: Path | None = None) -> Found | None:
    """A task's data when no ``--data`` is given: ``./bench_data/<task>`` when present (a checkout, or the
    user's own copy), else the shipped sample. Absolute, so runs record where the items came from."""
    cwd = Path.cwd() if cwd is None else cwd
    local = cwd / SAMPLES_DIR / task_id
    if local.exists():
        return Found(local.resolve(), f"sample in ./{SAMPLES_DIR}")
    root = shipped_root()
    if root is not None and (root / SAMPLES_DIR / task_id).exists():
        return Found(root / SAMPLES_DIR / task_id, "sample shipped with medbench-local")
    return None


def lock_beside(config_path: Path) -> Path:
    """Where models.lock goes for a models.toml: beside it, except for the shipped demo config (inside the
    installed package, which the user should not write into), whose lock lives in the user config folder."""
    if is_shipped(config_path):
        return user_config_dir() / "models.lock"
    return Path(config_path).parent / "models.lock"
