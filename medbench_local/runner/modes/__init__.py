"""The scoring modes, one module each: how an item's answer is obtained and scored (context.ScoringMode).

A new mode is one module here (a ``ScoringMode`` subclass) and one line in ``MODES``, plus ``SCORING`` when
``run --scoring`` should offer it (and, for a served model, what its server must support:
engine/openai_compat.py ``require_capabilities``).
"""

from __future__ import annotations

from ..context import ScoringMode
from .constrained import Constrained
from .generate import Generate
from .loglik import Loglik

#: name -> strategy, in the order messages list them.
MODES: dict[str, ScoringMode] = {mode.name: mode for mode in (Generate(), Loglik(), Constrained())}

#: ``run --scoring`` values, in the order ``--help`` lists them -> the modes each stands for: every mode, and
#: ``both`` (generate and loglik, stored as two evaluations of the same items).
SCORING: dict[str, tuple[str, ...]] = {"generate": ("generate",), "loglik": ("loglik",),
                                       "both": ("generate", "loglik"), "constrained": ("constrained",)}


def scoring_modes(scoring: str) -> tuple[str, ...]:
    """The modes a ``--scoring`` value stands for (a bare mode name stands for itself)."""
    return SCORING.get(scoring, (scoring,))
