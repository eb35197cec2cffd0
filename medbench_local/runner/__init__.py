"""Orchestration of a run: validate everything, then for each model: load once, run every task, store per item.

Order matters for the guarantees:
1. All task data is parsed and every model file located and its GGUF header read *before* the database is
   touched, so bad input never leaves a half-written run behind (plan.py assembles a run in that order).
2. Each model is loaded once per run and used for all tasks (execute.py).
3. Each item is committed on its own (generation + score in one transaction); a rerun of the same command
   computes the same evaluation key and skips what is done. A first Ctrl-C finishes the item in flight and
   stops; a second one aborts at once (the in-flight item is then lost, nothing else) (evaluation.py).
4. Each scoring mode (``generate``, ``loglik``, ``constrained``: one module each in modes/) is its own
   evaluation of the same items: the mode is part of the task settings, hence of the evaluation key. Items run
   in the order the task loaded them; tasks put items that share a prompt prefix next to each other, and the
   engine keeps that prefix in its KV cache when it provably does not change outputs.

The rooms: inputs.py (data, --limit, --shard), fingerprint.py (the data's identity), checks.py (model files,
the llama.cpp build, served models, a model file changed under its id), plan.py (a run assembled from what was
asked), context.py (the values one run and one evaluation pass around, and what a scoring mode implements),
execute.py (the run), evaluation.py (one evaluation's item loop), modes/ (one strategy per scoring mode),
legacy.py (what databases of older versions need: kept out of the item loop).
"""

from __future__ import annotations

from ..provenance import evaluation_key
from .checks import (
                     check_model_history,
                     check_scoring,
                     check_served,
                     locate_models,
                     require_decoding,
                     served_template_path,
)
from .context import EngineFactory, Reporter, RunOptions, RunSummary
from .execute import default_engine, engine_identity, execute, run_record
from .fingerprint import data_fingerprint
from .inputs import (
                     LIMIT_MODES,
                     LoadedTask,
                     ModelRole,
                     Shard,
                     limit_count,
                     load_tasks,
                     parse_shard,
                     sample_items,
                     shard_items,
                     shard_of,
)
from .legacy import legacy_data_fingerprint

__all__ = ["LIMIT_MODES", "EngineFactory", "LoadedTask", "ModelRole", "Reporter", "RunOptions", "RunSummary",
           "Shard", "check_model_history", "check_scoring", "check_served", "data_fingerprint", "default_engine",
           "engine_identity", "evaluation_key", "execute", "legacy_data_fingerprint", "limit_count", "load_tasks",
           "locate_models", "parse_shard", "require_decoding", "run_record", "sample_items", "served_template_path",
           "shard_items", "shard_of"]
