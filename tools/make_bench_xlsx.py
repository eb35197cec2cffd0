#!/usr/bin/env python3
"""Build bench_data/meqsum/MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx from bench_source.json, byte for byte.

Why a generator: the synthetic MeQSum sample must be an .xlsx (the released format, read with openpyxl), but
a binary file cannot be reviewed. The readable source is ``bench_data/meqsum/bench_source.json``
(``{"sheet": ..., "columns": [...], "rows": [[...], ...]}``); this script turns it into the workbook.
openpyxl stamps the save time into docProps/core.xml and into every zip entry, so both are pinned here
(2019-06-03, the MeQSum release date; zip entries 1980-01-01) to make the output reproducible.

Usage (from the repository root)::

    .venv/bin/python tools/make_bench_xlsx.py            # rewrite the workbook
    .venv/bin/python tools/make_bench_xlsx.py --check    # exit 1 if the committed workbook is out of date
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench_data" / "meqsum" / "bench_source.json"
TARGET = ROOT / "bench_data" / "meqsum" / "MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx"
FIXED_TIME = datetime.datetime(2019, 6, 3, 0, 0, 0)
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def build(source: Path = SOURCE) -> bytes:
    """The workbook bytes for ``source`` (deterministic for a given openpyxl/zlib)."""
    import openpyxl

    spec = json.loads(source.read_text(encoding="utf-8"))
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = spec["sheet"]
    sheet.append(spec["columns"])
    for row in spec["rows"]:
        sheet.append(row)
    workbook.properties.creator = "medbench-local (synthetic bench data)"
    workbook.properties.created = FIXED_TIME
    buffer = io.BytesIO()
    workbook.save(buffer)
    stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = io.BytesIO()
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":  # openpyxl sets 'modified' to the save time
                data = re.sub(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)",
                              rb"\g<1>" + stamp.encode() + rb"\g<2>", data)
            entry = zipfile.ZipInfo(info.filename, date_time=ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, data)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed workbook")
    args = parser.parse_args(argv)
    data = build()
    if args.check:
        same = TARGET.exists() and TARGET.read_bytes() == data
        print(f"{TARGET.relative_to(ROOT)}: {'up to date' if same else 'OUT OF DATE (run without --check)'}")
        return 0 if same else 1
    TARGET.write_bytes(data)
    print(f"wrote {TARGET.relative_to(ROOT)} ({len(data)} bytes, {len(json.loads(SOURCE.read_text())['rows'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
