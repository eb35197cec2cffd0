"""Which biomedical evaluation is compared with which general one: the one pairing rule of every command.

Why a rule of its own: a comparison is only as honest as what it pairs. Taking "the newest evaluation of each
model" paired an evaluation on an edited data file with the other model's evaluation on the original file
(4 of 51 items in common, no note), and let a second data file hide the first comparison. The rule, used by
``compare``, ``show``, ``report``, ``reproduce`` and ``export --aggregate`` alike:

1. Per task, group each model's evaluations by data fingerprint (``settings.task.data_sha256``) and scoring mode
   (``run --scoring``: generated text, log-likelihood or constrained; a model is never compared with the other
   in another mode); one row group per (task, data, mode), labelled with the data file's name, a short hash and
   the mode unless it is generation. Nothing is hidden.
2. Within a group, pair a biomedical and a general evaluation only when their task settings are equal
   (everything in ``settings.task``: prompt hash, extraction version, shots, quirks, token budget, data hash).
   Several matching pairs (e.g. before and after ``rescore --extraction``): the newest pair wins, the others are
   listed as superseded.
3. Same data but no matching settings: not paired; a note names the differing setting keys.
4. The two models ran a task only on different data: not paired; a note says so and how to pair by item id
   anyway (``allow_different_data``: the newest evaluation of each side, rows marked as such).

The rule is a pure function of the evaluation records (``pair_task``), so it is tested without a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import sqlite_utils

from ..engine.server_build import concurrency_of
from ..store.queries import EvaluationRecord, evaluation_records, model_tasks
from ..tasks.loglik_scoring import scoring_mode
from .pair_sources import PairSource, database_pairs

ROLES = ("biomedical", "general")


@dataclass(frozen=True)
class DataLabel:
    """The data an evaluation ran on: the file's (or folder's) name and its fingerprint."""

    name: str
    sha256: str | None
    mode: str = "generate"   # the scoring mode of the evaluations in the group (tasks/loglik_scoring.py)

    @property
    def short(self) -> str:
        text = f"{self.name} {self.sha256[:8]}" if self.sha256 else self.name
        return text if self.mode == "generate" else f"{text} · {self.mode}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256}


def record_mode(record: EvaluationRecord) -> str:
    """The scoring mode of a stored evaluation (those stored before modes existed were generated)."""
    return scoring_mode(record.task_settings)


def data_label(record: EvaluationRecord) -> DataLabel:
    name = PurePath(record.data_path).name if record.data_path else "data of unknown name"
    return DataLabel(name, record.data_sha256, record_mode(record))


@dataclass(frozen=True)
class PairedEvaluations:
    """One row group: the biomedical and the general evaluation compared on one task and data."""

    task: str
    data: DataLabel                                  # the data both ran on (the biomedical side's if they differ)
    biomedical: str                                  # evaluation keys
    general: str
    superseded: tuple[tuple[str, str], ...] = ()     # older matching (biomedical, general) pairs, newest first
    general_data: DataLabel | None = None            # only when paired across different data, on request

    @property
    def different_data(self) -> bool:
        return self.general_data is not None

    @property
    def label(self) -> str:
        if self.general_data is None:
            return self.data.short
        return f"{self.data.short} ≠ {self.general_data.short}"


@dataclass(frozen=True)
class PairingNote:
    """Something the rule did not pair, in one line. ``refused``: pairing was possible only by relaxing the
    rule (different data or different task settings); compare exits 1 when that is all it could show."""

    task: str
    text: str
    refused: bool = False


def _differing_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def record_concurrency(record: EvaluationRecord) -> tuple[int, int | None]:
    """(max_concurrency, server slots) an evaluation ran with: (1, None) for in-process and concurrency 1."""
    found = record.settings.get("identity")
    inner = found.get("settings") if isinstance(found, dict) else None
    return concurrency_of(inner) if isinstance(inner, dict) else (1, None)


def concurrency_note(task: str, label: DataLabel, biomedical: EvaluationRecord,
                     general: EvaluationRecord) -> PairingNote | None:
    """One line when a pair mixes concurrency settings: at concurrency > 1 on a server with several slots,
    outputs are not reproducible item by item (engine/server_build.py), so the difference may be partly that."""
    bio, gen = record_concurrency(biomedical), record_concurrency(general)
    if bio == gen:
        return None

    def said(found: tuple[int, int | None]) -> str:
        return f"concurrency {found[0]}" + (f" on {found[1]} server slots" if found[1] is not None else "")

    return PairingNote(task, f"{task} on {label.short}: the pair mixes concurrency settings (biomedical "
                             f"{said(bio)}, general {said(gen)}); only concurrency 1 reproduces item by item "
                             "(docs/scale-out.md)")


def pair_task(task: str, biomedical: list[EvaluationRecord], general: list[EvaluationRecord], *,
              allow_different_data: bool = False) -> tuple[list[PairedEvaluations], list[PairingNote]]:
    """Apply the pairing rule to one task's evaluations of the two models (any order; newest groups first),
    scoring mode by scoring mode (generation first): evaluations of different modes never pair."""
    modes = sorted({record_mode(r) for r in (*biomedical, *general)}, key=lambda m: (m != "generate", m))
    groups: list[PairedEvaluations] = []
    notes: list[PairingNote] = []
    for mode in modes:
        found, said = _pair_one_mode(task, [r for r in biomedical if record_mode(r) == mode],
                                     [r for r in general if record_mode(r) == mode], allow_different_data)
        groups += found
        notes += said
    return groups, notes


def _pair_one_mode(task: str, biomedical: list[EvaluationRecord], general: list[EvaluationRecord],
                   allow_different_data: bool) -> tuple[list[PairedEvaluations], list[PairingNote]]:
    by_data: dict[str | None, dict[str, list[EvaluationRecord]]] = {}
    for role, records in zip(ROLES, (biomedical, general)):
        for record in sorted(records, key=lambda r: (r.recency, r.key), reverse=True):
            by_data.setdefault(record.data_sha256, {"biomedical": [], "general": []})[role].append(record)
    order = sorted(by_data, key=lambda sha: max(r.recency for side in by_data[sha].values() for r in side),
                   reverse=True)
    groups: list[PairedEvaluations] = []
    notes: list[PairingNote] = []
    only: dict[str, list[EvaluationRecord]] = {"biomedical": [], "general": []}  # newest per one-sided data
    for sha in order:
        bio, gen = by_data[sha]["biomedical"], by_data[sha]["general"]
        if not bio or not gen:
            only["biomedical" if bio else "general"].append((bio or gen)[0])
            continue
        label = data_label(bio[0])
        matches = [(b, g) for b in bio for g in gen if b.task_settings == g.task_settings]
        if not matches:
            keys = _differing_keys(bio[0].task_settings, gen[0].task_settings)
            notes.append(PairingNote(task, f"{task} on {label.short}: not paired, the task settings differ "
                                           f"({', '.join(keys)}); rerun one model with the other's settings",
                                     refused=True))
            continue
        matches.sort(key=lambda m: (max(m[0].recency, m[1].recency), min(m[0].recency, m[1].recency),
                                    m[0].key, m[1].key), reverse=True)
        (chosen_bio, chosen_gen), older = matches[0], matches[1:]
        groups.append(PairedEvaluations(task, label, chosen_bio.key, chosen_gen.key,
                                        tuple((b.key, g.key) for b, g in older)))
        mixed = concurrency_note(task, label, chosen_bio, chosen_gen)
        if mixed is not None:
            notes.append(mixed)
        in_a_match = {r.key for m in matches for r in m}
        for role, side, chosen in (("biomedical", bio, chosen_bio), ("general", gen, chosen_gen)):
            for record in side:
                if record.key not in in_a_match:
                    keys = _differing_keys(record.task_settings, chosen.task_settings)
                    notes.append(PairingNote(task, f"{task} on {label.short}: the {role} evaluation "
                                                   f"{record.key[:12]} has no counterpart with the same task "
                                                   f"settings (differs from the paired one in {', '.join(keys)})"))
    if only["biomedical"] and only["general"]:
        bio_rec, gen_rec = only["biomedical"][0], only["general"][0]
        bio_label, gen_label = data_label(bio_rec), data_label(gen_rec)
        if allow_different_data:
            groups.append(PairedEvaluations(task, bio_label, bio_rec.key, gen_rec.key, general_data=gen_label))
        else:
            notes.append(PairingNote(task, f"{task}: not paired, different data (biomedical on {bio_label.short}, "
                                           f"general on {gen_label.short}) — pass --allow-different-data to pair "
                                           "by item id anyway", refused=True))
        for role in ROLES:
            only[role] = only[role][1:]
    for role in ROLES:
        other = "general" if role == "biomedical" else "biomedical"
        for record in only[role]:
            notes.append(PairingNote(task, f"{task} on {data_label(record).short}: only the {role} model has "
                                           f"results on this data (the {other} model ran {task} on other data)"))
    return groups, notes


def pair_evaluations(db: sqlite_utils.Database, biomedical: str, general: str, task: str, *,
                     allow_different_data: bool = False) -> tuple[list[PairedEvaluations], list[PairingNote]]:
    """The pairing rule on the database: the row groups of one pair of models on one task, and the notes."""
    return pair_task(task, evaluation_records(db, biomedical, task), evaluation_records(db, general, task),
                     allow_different_data=allow_different_data)


def model_evaluations(db: sqlite_utils.Database, model_id: str, task: str,
                      pair_list: Sequence[PairSource] | None = None) -> list[tuple[str, DataLabel]]:
    """The evaluations that stand for one model on one task, one per data: those ``compare`` pairs when the
    model is part of a pair that ran the task, else its newest evaluation per data (for ``reproduce``).
    ``pair_list``: the pairs as the read command selected them (analysis.pair_sources); None: the database's."""
    chosen: dict[str, DataLabel] = {}
    for pair in database_pairs(db) if pair_list is None else pair_list:
        if model_id not in pair.members:
            continue
        groups, _ = pair_evaluations(db, pair.biomedical, pair.general, task)
        for group in groups:
            key = group.biomedical if pair.biomedical == model_id else group.general
            chosen.setdefault(key, group.data)
    covered = {label.sha256 for label in chosen.values()}
    for record in evaluation_records(db, model_id, task):  # newest first
        if record.data_sha256 not in covered:
            covered.add(record.data_sha256)
            chosen[record.key] = data_label(record)
    return list(chosen.items())


def pairing_columns(db: sqlite_utils.Database, pair_list: Sequence[PairSource] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """Per evaluation key, how the pairing rule used it (for ``export --aggregate``): its data (name, SHA-256),
    and per pair whether ``compare`` shows it ("compared", with the counterpart), lists it as "superseded", or
    does not use it ("not compared")."""
    columns: dict[str, dict[str, Any]] = {}
    ran = model_tasks(db)
    for model_id, task in ran:
        for record in evaluation_records(db, model_id, task):
            label = data_label(record)
            columns[record.key] = {"data_name": label.name, "data_sha256": label.sha256, "pair": None,
                                   "paired_with": None, "pairing": "not compared"}
    for pair in database_pairs(db) if pair_list is None else pair_list:
        tasks = {t for m, t in ran if m == pair.biomedical} & {t for m, t in ran if m == pair.general}
        for task in sorted(tasks):
            groups, _ = pair_evaluations(db, pair.biomedical, pair.general, task)
            for group in groups:
                for status, (bio, gen) in [("compared", (group.biomedical, group.general))] + \
                        [("superseded", older) for older in group.superseded]:
                    for key, other in ((bio, gen), (gen, bio)):
                        if columns.get(key, {}).get("pairing") != "compared":
                            columns.setdefault(key, {}).update(pair=pair.name, paired_with=other, pairing=status)
    return columns
