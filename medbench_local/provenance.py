"""What a result records about where it came from: the evaluation key, the run record (package versions, the
source revision), built here once.

Why a module of its own, below the runner: ``run`` writes these with every evaluation and run record, and
``rescore`` (analysis/rescore.py) must write exactly the same ones for the evaluations it derives, so that a
later ``run`` of the same command finds them. Both import them from here; before, analysis imported the runner
while the runner imported analysis (tests/test_layering.py keeps the packages acyclic).
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .tasks.base import canonical_json, sha256_text
from .version import __version__

RECORDED_PACKAGES = ("llama-cpp-python", "sqlite-utils", "rapidfuzz", "click", "rich", "huggingface-hub", "jinja2",
                     "rouge-score", "simple-icd-10-cm", "openpyxl", "numpy", "torch", "transformers", "scispacy")


def evaluation_key(engine_identity: dict[str, Any], task_settings: dict[str, Any]) -> str:
    """The key of an evaluation: everything that decides its outputs (the engine's identity) and its scores (the
    task's settings), hashed canonically, so equal inputs find their stored results and nothing else does."""
    return sha256_text(canonical_json({"engine": engine_identity, "task": task_settings}))


def run_record(command: list[str], settings: dict[str, Any], build: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
    """A ``runs`` row: the command line, the versions of medbench-local, Python and the platform, the llama.cpp
    build when the run loads models (``build``: engine.runtime.build_info()), the source revision, the package
    versions that can change a number, and the run's own ``settings``. ``run`` and ``rescore`` both record
    one."""
    record: dict[str, Any] = {"command": command, "medbench_version": __version__,
                              "python_version": sys.version.split()[0], "platform": platform.platform()}
    if build is not None:
        record.update({"llama_cpp_version": build["llama_cpp_python"], "llama_system_info": build["system_info"],
                       "gpu_offload_supported": int(build["gpu_offload"])})
    record.update({"git_revision": git_revision(), "packages": package_versions(), "settings": settings})
    return record


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that can change a number (and this package's own), for the run record."""
    versions = {"medbench-local": __version__}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision() -> str | None:
    """The source revision of this medbench-local checkout (with '-dirty' when modified), if it is one."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("-dirty" if dirty else "")) if rev else None
