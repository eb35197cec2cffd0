"""Air-gapped workflow: carry models and data to a machine without network (bundle), check it (doctor), and
prove that nothing reaches the network (netguard). Downloading and locking live in ``modelfiles.pull``/``lock``."""

from __future__ import annotations

from ..config import Config, ModelSpec
from ..errors import UserError


def select_models(config: Config, pairs: tuple[str, ...] = (), model_ids: tuple[str, ...] = (), *,
                  default_all: bool = False) -> list[ModelSpec]:
    """The models named by ``--pair``/``--model`` (in that order, without duplicates); all models when none is
    named and ``default_all`` is set, else a UserError."""
    chosen: dict[str, ModelSpec] = {}
    for name in pairs:
        pair = config.pair(name)
        for mid in (pair.biomedical, pair.general):
            chosen.setdefault(mid, config.model(mid))
    for mid in model_ids:
        chosen.setdefault(mid, config.model(mid))
    if not chosen:
        if default_all:
            return list(config.models.values())
        raise UserError("no model selected: name models or use --pair NAME (see 'medbench-local models list')")
    return list(chosen.values())
