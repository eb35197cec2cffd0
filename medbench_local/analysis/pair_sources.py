"""Where the pairs that the read commands compare come from: the database, models.toml, and ``--models``.

Why one place: a 70B study runs one model at a time (``run --model A``, later ``run --model B``), so the database
may hold results of both models of a pair that no ``run --pair`` ever recorded. ``compare``, ``show``, ``report``,
``reproduce`` and ``export`` therefore all take their pairs from here, and every one of them says the same thing
about an unknown name. *Which evaluations* of a pair are compared is a different question, answered by
``analysis.pairing`` (same data, same task settings, same scoring mode, newest wins).

Sources, in order of precedence:

1. the database's ``pairs`` table (what ``run`` recorded: ``run --pair``, and ``run --model X`` for the
   models.toml pairs that contain X);
2. models.toml (``--config``, else found as ``run`` finds it: ``paths.find_config``); a read command works without
   one (database pairs only). A models.toml pair whose name the database already holds with *other members*
   is not used: **the database wins** (it is the record of what was run and must read the same on any machine,
   with any models.toml); ``conflicts`` names each such case in one line. A models.toml pair with the same two
   members as a pair already listed (under another name) is not listed twice;
3. ``--models BIO GEN``: any two models with results, paired ad hoc (named "BIO vs GEN"), or the listed pair
   when one already has exactly these members.

Without ``--pair``/``--models`` a read command shows every database pair and every models.toml pair of which at
least one model has results (the other is reported as "has not run it yet").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from ..config import Config, load_config
from ..errors import ConfigError, UserError
from ..paths import ENV_CONFIG, find_config
from ..store.queries import model_tasks
from ..store.queries import pairs as database_pair_rows
from ..tasks import task_ids

DATABASE = "database"
CONFIG = "models.toml"
AD_HOC = "--models"


@dataclass(frozen=True)
class PairSource:
    """A biomedical and a general model compared by the read commands, and where the pairing came from."""

    name: str
    biomedical: str
    general: str
    description: str = ""
    origin: str = DATABASE   # DATABASE, CONFIG or AD_HOC

    @property
    def members(self) -> tuple[str, str]:
        return (self.biomedical, self.general)


@dataclass(frozen=True)
class PairSelection:
    """The pairs a read command works on, plus what it must tell the user about how they were chosen."""

    pairs: list[PairSource]
    conflicts: list[str] = field(default_factory=list)  # models.toml pairs the database overrides, one line each


def ad_hoc_name(biomedical: str, general: str) -> str:
    return f"{biomedical} vs {general}"


def combine(database: Sequence[PairSource], config: Sequence[PairSource]
            ) -> tuple[list[PairSource], dict[str, str]]:
    """Database pairs, then the models.toml pairs that add something (pure; see the module docstring). Also, per
    pair name that both define with different members, the line that says the database's members are used."""
    combined = list(database)
    conflicts: dict[str, str] = {}
    by_name = {p.name: p for p in combined}
    for pair in config:
        known = by_name.get(pair.name)
        if known is not None:
            if known.members != pair.members:
                conflicts[pair.name] = (
                    f"pair '{pair.name}': the database's members ({known.biomedical} vs {known.general}) are used, "
                    f"not models.toml's ({pair.biomedical} vs {pair.general}); compare those with --models "
                    f"{pair.biomedical} {pair.general}")
            continue
        if any(p.members == pair.members for p in combined):
            continue
        combined.append(pair)
        by_name[pair.name] = pair
    return combined, conflicts


def read_pair_config(path: Path | None) -> Config | None:
    """The models.toml a read command takes pairs from: ``--config``, else the one ``run`` would find; None when
    there is none at all (read commands then use the database's pairs). A file the user named (``--config`` or
    ``$MEDBENCH_LOCAL_CONFIG``) must exist, and a broken models.toml is reported, as for ``run``."""
    try:
        found = find_config(path)
    except ConfigError:
        if path is not None or os.environ.get(ENV_CONFIG):
            raise
        return None
    config = load_config(found.path)
    return config


def config_pairs(config: Config | None) -> list[PairSource]:
    if config is None:
        return []
    return [PairSource(p.name, p.biomedical, p.general, p.description, CONFIG) for p in config.pairs.values()]


def database_pairs(db: sqlite_utils.Database) -> list[PairSource]:
    return [PairSource(row["name"], row["biomedical"], row["general"], row["description"] or "", DATABASE)
            for row in database_pair_rows(db)]


def models_with_results(db: sqlite_utils.Database) -> list[str]:
    return list(dict.fromkeys(model for model, _ in model_tasks(db)))


def tasks_with_results(db: sqlite_utils.Database) -> list[str]:
    return sorted({task for _, task in model_tasks(db)})


def _names(values: Iterable[str]) -> str:
    listed = ", ".join(values)
    return listed or "none"


def check_models(db: sqlite_utils.Database, model_ids: Iterable[str], where: str) -> None:
    """Every named model must have results here (else one line naming the models that have)."""
    have = models_with_results(db)
    for model in model_ids:
        if model not in have:
            raise UserError(f"no results of a model '{model}' in {where} (models with results: {_names(have)})")


def check_tasks(db: sqlite_utils.Database, tasks: Iterable[str], where: str) -> None:
    """Every named task must be a task this version knows and have results here (one line naming them)."""
    known = task_ids()
    have = tasks_with_results(db)
    for task in tasks:
        if task not in known:
            raise UserError(f"unknown task '{task}' (known: {_names(known)}); see 'medbench-local tasks list'")
        if task not in have:
            raise UserError(f"no results for task '{task}' in {where} (tasks with results: {_names(have)})")


def select_pairs(db: sqlite_utils.Database, config: Config | None, pair_filter: Sequence[str] = (),
                 models: Sequence[str] = (), where: str = "the database") -> PairSelection:
    """The pairs a read command works on (see the module docstring); an unknown pair or model is one line.

    ``pair_filter``: pair names (database or models.toml); ``models``: empty or exactly (BIO, GEN). With either,
    only those pairs; without, every pair of which at least one model has results here.
    """
    listed, conflicts = combine(database_pairs(db), config_pairs(config))
    ran = set(models_with_results(db))
    chosen: list[PairSource] = []
    if models:
        if len(models) != 2 or models[0] == models[1]:
            raise UserError("--models takes two different model ids, biomedical first (e.g. --models "
                            "smollm2-135m-instruct gemma3-270m)")
        check_models(db, models, where)
        bio, gen = models
        chosen.append(next((p for p in listed if p.members == (bio, gen)),
                           PairSource(ad_hoc_name(bio, gen), bio, gen, "paired with --models", AD_HOC)))
    for name in pair_filter:
        pair = next((p for p in listed if p.name == name), None)
        if pair is None:
            in_db = [p.name for p in listed if p.origin == DATABASE]
            in_config = [p.name for p in listed if p.origin == CONFIG]
            raise UserError(f"unknown pair '{name}' (in {where}: {_names(in_db)}; in models.toml: "
                            f"{_names(in_config)}); or pair any two models with --models BIO GEN")
        if not ran & set(pair.members):
            raise UserError(f"pair '{name}' has no results in {where}: neither {pair.biomedical} nor "
                            f"{pair.general} has run (models with results: {_names(sorted(ran))})")
        if pair not in chosen:
            chosen.append(pair)
    if not models and not pair_filter:
        chosen = [p for p in listed if p.origin == DATABASE
                  or ran & set(p.members) and not _arm_not_ready(config, p, ran)]
    return PairSelection(chosen, [conflicts[p.name] for p in chosen if p.name in conflicts])


def _arm_not_ready(config: Config | None, pair: PairSource, ran: set[str]) -> bool:
    """A models.toml pair with a retrieval arm that has no results and whose index is not built here: left out
    unless named (its arm cannot have run yet; 'doctor' lists it), so the demo pair's comparison is not followed
    by lines about the demo arms nobody has built an index for."""
    if config is None:
        return False
    for model_id in pair.members:
        spec = config.models.get(model_id)
        if model_id not in ran and spec is not None and spec.retrieval is not None \
                and not spec.retrieval.index.is_file():
            return True
    return False


def selected_pairs(db: sqlite_utils.Database, db_path: Path, config_path: Path | None,
                   pair_filter: Sequence[str] = (), model_pair: tuple[str, str] | None = None,
                   task_ids: Sequence[str] = ()) -> PairSelection:
    """The pairs of a read command or API call (database ∪ models.toml ∪ an ad-hoc model pair), after checking
    every name it was given: an unknown pair, model or task is one line naming what exists, never an empty table."""
    where = str(db_path)
    selection = select_pairs(db, read_pair_config(config_path), pair_filter, model_pair or (), where)
    check_tasks(db, task_ids, where)
    return selection

