"""Benchmarks: speed and size figures printed by `make bench-*` (never asserted in tests), and
what their scripts share: :func:`write_table` and a :class:`Progress` bar."""
from __future__ import annotations

import csv
import io
import os
import sys
import time
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


class Progress:
    """A progress bar on stderr: ``[#####.....] 3/10  12 s  label``; redrawn in place on a
    terminal, one line per step otherwise (logs)."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.width, self.start = max(1, total), width, time.time()
        self.tty = sys.stderr.isatty()

    def show(self, done: int, label: str = "") -> None:
        filled = self.width * min(done, self.total) // self.total
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                f"{time.time() - self.start:5.0f} s  {label}")
        if self.tty:
            print(f"\r{line:<100}", end="" if done < self.total else "\n", file=sys.stderr,
                  flush=True)
        else:
            print(line, file=sys.stderr, flush=True)
