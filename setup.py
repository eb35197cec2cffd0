"""Build step that ships the demo ``models.toml`` and the ``bench_data/`` samples inside the wheel.

Why here: both stay at the top of the repository (the project layout), outside the ``medbench_local`` package, so
plain package data cannot reach them and a symlink is not portable. This ``build_py`` copies them into the build as
``medbench_local/_bundled/``, where ``medbench_local.paths`` finds them with importlib.resources once installed
from a wheel (``pip install medbench-local`` anywhere, no repository needed). An editable install skips the copy:
``medbench_local.paths`` then reads the checkout's own files. All metadata lives in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("models.toml", "bench_data")
BUNDLE = Path("medbench_local") / "_bundled"


class BuildPyWithSamples(build_py):
    """The usual build_py, plus a copy of SHIPPED into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / BUNDLE
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in SHIPPED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.idx"))
            else:
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildPyWithSamples})
