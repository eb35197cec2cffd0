"""The probe of a pair, end to end: load the task's items and controls, run each model of the pair over every
text (one model loaded at a time), then compute the pair's shifts from the stored rows.

Why here and not in the command: ``cli/contamination.py`` only turns options into this call and the result into
a table; everything that decides a number lives below the command line, as for ``run``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from ..config import Config
from ..errors import UserError
from ..runner.checks import locate_models, require_decoding
from ..runner.fingerprint import data_fingerprint
from ..runner.inputs import LoadedTask, ModelRole
from ..store import contamination as stored
from ..tasks.base import Item, TaskBase
from .probe import ProbeSettings, ProbeText, probe_model, probe_texts
from .summary import SignalShift, pair_shifts


@dataclass
class TaskProbe:
    """One task's texts for the probe, and after it, the pair's shifts."""

    loaded: LoadedTask
    texts: list[ProbeText]
    settings: ProbeSettings
    keys: dict[str, str] = field(default_factory=dict)  # role -> probe key
    shifts: list[SignalShift] = field(default_factory=list)

    @property
    def unchanged_controls(self) -> int:
        """Rewritten controls that read exactly like their original: they carry no evidence."""
        if self.settings.control != "rewrite":
            return 0
        originals = {t.item_id: t.text for t in self.texts if t.variant == "original"}
        return sum(1 for t in self.texts if t.variant == "control" and originals.get(t.item_id) == t.text)


def control_items(task: TaskBase, path: Path | None) -> tuple[list[Item] | None, str]:
    """The user's own control items (read by the task's own loader, so the same format) and the control kind."""
    if path is None:
        return None, "rewrite"
    resolved = Path(path).expanduser().resolve()
    data = task.load(resolved)
    if not data.items:
        raise UserError(f"{path}: no items to use as the control")
    return data.items, f"file:{data_fingerprint(resolved)}"


def prepare(loaded: LoadedTask, control: Path | None, *, k: float, seed: int) -> TaskProbe:
    items, kind = control_items(loaded.task, control)
    settings = ProbeSettings(k=k, seed=seed, control=kind)
    return TaskProbe(loaded, probe_texts(loaded.items, items, seed), settings)


def check_models(config: Config, models: list[ModelRole], allow_cpu: bool) -> dict[str, Path]:
    """In-process models only (the probe needs every position's logits, which a served API does not return);
    files located and checked, and this llama.cpp build decoding here, before a database is touched."""
    served = [m.spec.id for m in models if m.spec.served is not None]
    if served:
        raise UserError(f"model '{served[0]}' is served (engine = \"openai\"): the contamination probe needs every "
                        "position's logits, which only an in-process GGUF model gives; point models.toml at its GGUF")
    paths = locate_models(models, allow_cpu, config)
    require_decoding(models, paths)
    return paths


def run_pair(db: sqlite_utils.Database, pair: str, models: list[ModelRole], paths: dict[str, Path],
             probes: list[TaskProbe], load: Callable[[ModelRole, Path], object],
             advance: Callable[[bool], None]) -> None:
    """Each model once over every task's texts (stored as it goes), then each task's shifts."""
    for entry in models:
        engine = load(entry, paths[entry.spec.id])
        try:
            for probe in probes:
                probe.keys[entry.role] = probe_model(db, engine, role=entry.role, pair=pair,  # type: ignore[arg-type]
                                                     task=probe.loaded.task.id, texts=probe.texts,
                                                     settings=probe.settings, advance=advance)
        finally:
            engine.close()  # type: ignore[attr-defined]


def summarize(db: sqlite_utils.Database, probes: list[TaskProbe], *, resamples: int, seed: int) -> None:
    for probe in probes:
        bio = stored.read_signals(db, probe.keys["biomedical"])
        gen = stored.read_signals(db, probe.keys["general"])
        wanted = {(t.variant, t.item_id) for t in probe.texts}
        bio = {k: v for k, v in bio.items() if k in wanted}
        gen = {k: v for k, v in gen.items() if k in wanted}
        probe.shifts = pair_shifts(bio, gen, paired=probe.settings.control == "rewrite", resamples=resamples,
                                   seed=seed)
