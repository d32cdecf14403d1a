"""Benchmarks: speed and size figures printed by `make bench-*` (never asserted in tests)."""
from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import Sequence


def write_table(rows: Sequence[dict], columns: Sequence[str], out: Path) -> str:
    """Write ``rows`` as CSV (``columns`` in order, a missing value empty) to ``out`` atomically,
    print the table, say on stderr where it went; returns the CSV text."""
    from harness.io import write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    text = buf.getvalue()
    write_text(out, text)
    print(text, end="")
    print(f"wrote {os.fspath(out)}", file=sys.stderr)
    return text
