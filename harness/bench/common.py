"""What the ``make bench-*`` scripts share: CSV text from rows, a progress bar on stderr, and one
measurement run in a subprocess of its own (so that its peak memory is its own), JSON in and out.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """The rows as CSV with exactly ``columns`` (missing values empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buf.getvalue()


class Progress:
    """A progress bar on stderr: ``[#####.....] 3/10 12 s  label``; redrawn in place on a
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


def run_child(module: str, spec: dict, timeout: float, show_stderr: bool = False) -> dict:
    """Run ``python -m module --child JSON`` and return the JSON its last stdout line holds, with
    ``status`` "ok"; on a failure or after ``timeout`` seconds (the child is killed) only a
    ``status`` that says why. ``show_stderr``: the child's stderr goes to this one's (progress)."""
    cmd = [sys.executable, "-m", module, "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout,
                              stderr=None if show_stderr else subprocess.PIPE)
    except subprocess.TimeoutExpired:
        return {"status": f"failed: over {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = "see the output above" if show_stderr else \
            (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"status": f"failed (exit {proc.returncode}): {tail}"}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "status": "ok"}
