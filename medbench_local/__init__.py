"""medbench-local: does a biomedical fine-tune beat its general-purpose base, measured locally?

The package is organised along the data flow (README "Layout"):
models.toml -> ``config`` -> ``tasks`` (dataset + prompt builder + scorer) -> ``engine`` (llama.cpp)
-> ``metrics`` (pure scoring functions) -> ``store`` (SQLite) -> ``analysis`` (the read side) -> ``cli``.

The Python API (api.py; the CLI calls the same functions)::

    import medbench_local as mb
    run = mb.evaluate(tasks=["jama"], pairs=["demo"], limit=5, db="results.db")
    mb.compare("results.db").records()      # compare --json's rows
    mb.results("results.db").to_pandas()    # export's rows, as a DataFrame (pandas optional)

Why the API is imported on first use: ``import medbench_local`` (done by every submodule's import) stays cheap
and imports nothing of llama.cpp, sqlite-utils or rich until a script asks for an evaluation.
"""

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .api import Comparison, Records, RunResult, compare, evaluate, results

__all__ = ["Comparison", "Records", "RunResult", "__version__", "compare", "evaluate", "results"]

_API = frozenset({"Comparison", "Records", "RunResult", "compare", "evaluate", "results"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'medbench_local' has no attribute {name!r}")
