"""The ``-claims`` file beside a database: shared by concurrent runs, removed by the last one to finish
(issue 20, point 7: no leftover ``-claims`` files after a finished run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from medbench_local.store.claims import ItemClaims, claims_path

from .conftest import REPO

CHILD = """
import sys
from medbench_local.store.claims import ItemClaims
claims = ItemClaims(sys.argv[1])
assert claims.active
with claims.hold("evaluation", "item") as mine:
    print("held" if mine else "busy")
claims.close()
"""


def _child(db: Path) -> str:
    done = subprocess.run([sys.executable, "-c", CHILD, str(db)], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=True)
    return done.stdout.strip()


def test_the_last_run_to_close_removes_the_claims_file_and_not_before(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    ours = ItemClaims(db)
    assert ours.active and claims_path(db).exists()
    with ours.hold("evaluation", "item") as mine:
        assert mine
        assert _child(db) == "busy"  # another process sees our claim ...
    assert _child(db) == "held"  # ... and, once released, can claim the item itself
    assert claims_path(db).exists(), "a run that finished while another one uses the file must not remove it"
    ours.close()
    assert not claims_path(db).exists()
    _child(db)  # a run alone: it creates the file and removes it when it closes
    assert not claims_path(db).exists()
