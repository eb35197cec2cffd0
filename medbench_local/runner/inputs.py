"""What a run evaluates: the models with their roles, each task's data parsed and fingerprinted, then this
``--shard``'s items and the ``--limit`` sample of them."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import ModelSpec
from ..errors import UserError
from ..tasks.base import Item, TaskBase, TaskData, sha256_text
from .fingerprint import data_fingerprint
from .legacy import legacy_data_fingerprint


@dataclass(frozen=True)
class ModelRole:
    spec: ModelSpec
    role: str


@dataclass(frozen=True)
class LoadedTask:
    task: TaskBase
    data_path: Path
    data: TaskData
    data_sha256: str = ""  # of the data file(s) as read: part of the evaluation identity
    legacy_data_sha256: str = ""  # the fingerprint older versions computed (to resume their evaluations)
    items_total: int = 0          # items in the data before --limit

    @property
    def items(self) -> list[Item]:
        return self.data.items


LIMIT_MODES = ("random", "first")


def load_tasks(task_paths: list[tuple[TaskBase, Path]], limit: int | float | None, *, limit_mode: str = "random",
               seed: int = 1234, shard: Shard | None = None) -> list[LoadedTask]:
    """Parse every task's data (absolute, resolved paths: items record "<abs path>:<line>" as their source),
    fingerprint it, keep this ``--shard``'s items, then apply ``--limit`` within the shard
    (see ``sample_items``)."""
    loaded = []
    for task, given in task_paths:
        path = Path(given).expanduser().resolve()
        data = task.load(path)
        fingerprint = data_fingerprint(path)
        items = shard_items(data.items, shard, task.id) if shard is not None else data.items
        items = sample_items(items, limit, limit_mode, seed=seed, task_id=task.id, data_sha256=fingerprint)
        legacy = legacy_data_fingerprint(path, fingerprint) if path.is_file() else fingerprint
        loaded.append(LoadedTask(task, path, replace(data, items=items), fingerprint, legacy, len(data.items)))
    return loaded


def limit_count(limit: int | float, total: int) -> int:
    """How many items ``--limit`` asks for: N, or a fraction in (0, 1) of ``total`` rounded up (lm-eval style)."""
    if isinstance(limit, float) and not limit.is_integer():
        if not 0.0 < limit < 1.0:
            raise ValueError(f"a fractional limit must lie in (0, 1), got {limit}")
        return math.ceil(limit * total)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return int(limit)


def sample_items(items: list[Item], limit: int | float | None, mode: str, *, seed: int, task_id: str,
                 data_sha256: str) -> list[Item]:
    """The items a ``--limit`` run evaluates, in file order.

    Why random by default: data files are often sorted (PubMedQA's ground truth lists its 276 "yes" answers
    first, so the first N <= 276 items let "always A" score 100%). The sample is the first N items of a
    permutation that depends only on (seed, task id, data fingerprint, item id): both models of a pair, a
    resumed run and a later larger --limit see the same items, and a larger limit is a superset of a smaller
    one. The permutation orders items by SHA-256, not by a library RNG, so it never changes between versions.
    """
    if limit is None:
        return list(items)
    if mode not in LIMIT_MODES:
        raise ValueError(f"limit mode must be one of {', '.join(LIMIT_MODES)}, got {mode!r}")
    count = limit_count(limit, len(items))
    if mode == "first":
        return list(items[:count])
    rank = sorted(range(len(items)), key=lambda i: sha256_text(f"{seed}\0{task_id}\0{data_sha256}\0{items[i].id}"))
    chosen = set(rank[:count])
    return [item for i, item in enumerate(items) if i in chosen]


@dataclass(frozen=True)
class Shard:
    """``run --shard K/N``: this process evaluates shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


_SHARD = re.compile(r"^\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*$")


def parse_shard(text: str) -> Shard:
    """``K/N`` with 1 <= K <= N, else one line saying what is expected (and how to feed a 0-based Slurm array).

    Why 1-based only: Slurm arrays start wherever ``--array`` says (often 0), and a silent off-by-one would
    skip one shard and evaluate another twice; accepting exactly one convention makes the mistake loud.
    """
    match = _SHARD.match(text)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise UserError(f"--shard: expected K/N with 1 <= K <= N (e.g. 2/8), got {text!r}; for a Slurm array "
                        "numbered from 0 use --shard $((SLURM_ARRAY_TASK_ID+1))/N, N the full array size")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_of(task_id: str, item_id: str, count: int) -> int:
    """The shard (1..count) of an item: the first 8 bytes of SHA-256("<task>\\0<item id>") as a big-endian
    number, mod count, + 1.

    Why a hash of the task and item id only: an item's shard never depends on the other items, so shards stay
    the same when a data file grows or is reordered, every machine computes the same split without talking to
    the others, and the N shards together are exactly the data (each item in one shard).
    """
    digest = hashlib.sha256(f"{task_id}\0{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def shard_items(items: list[Item], shard: Shard, task_id: str) -> list[Item]:
    """The items of ``shard``, in file order."""
    return [item for item in items if shard_of(task_id, item.id, shard.count) == shard.index]
