"""The confusion matrix of answer extraction on the labelled set (tests/data/extraction_labelled.jsonl).

Prints, as markdown, how the bench read each row (per method) against the human label, the number of rows by
origin and the failure counts; docs/extraction-labels.md shows this output, and
tests/test_extraction_labelled.py checks that the pasted copy is current. ``--rows`` also lists every row
where the reading is not the label (missed answers included), for review.

    PYTHONPATH=$PWD .venv/bin/python tools/extraction_confusion.py [--rows]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.extraction_labels import load_rows, read, report, verdict


def main(argv: list[str]) -> None:
    rows = load_rows()
    print(report(rows))
    if "--rows" in argv:
        for row in rows:
            reading = read(row)
            found = verdict(row["label"], reading)
            if found not in ("same", "agrees"):
                print(f"\n{row['id']} [{found}] label {row['label']}, read {reading.letter} ({reading.method}: "
                      f"{reading.detail})\n  {row['answer_prefix'] + row['output']!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
