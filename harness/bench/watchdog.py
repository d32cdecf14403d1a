"""One measurement in a child process, under a memory and a time watchdog.

A benchmark that may not fit the machine runs each measurement as a child
(:func:`run_child`): the child announces what it is doing and what it measured as marked JSON
lines on its stdout (:func:`phase`, :func:`report`, :func:`finish`, :func:`fail`); the parent
samples the resident set size of the child's whole process group (the child and anything it
starts, e.g. nnU-Net's augmentation workers; memory they share is counted once per process, so
the figure errs high) every ``poll_s`` seconds and stops the group (``harness.processes``:
SIGTERM, then SIGKILL) when it passes ``max_rss_bytes`` or when the child runs past
``timeout_s``. Either way the parent gets a :class:`ChildResult` whose ``status`` says what
happened and in which phase, and the figures reported before it happened: a benchmark row, never
a crash of the benchmark.
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

MARK = "@@bench-event "
GIB = 2 ** 30


_current = {"phase": "start-up"}


def phase(name: str) -> None:
    """In the child: announce the phase now running (named in a status if the child is stopped)."""
    _current["phase"] = name
    _emit({"phase": name})


def current_phase() -> str:
    """In the child: the phase last announced."""
    return _current["phase"]


def report(**values) -> None:
    """In the child: figures measured so far (merged into ``ChildResult.values``)."""
    _emit({"values": values})


def finish() -> None:
    """In the child: the measurement is complete."""
    _emit({"done": True})


def fail(status: str) -> None:
    """In the child: the measurement ended with ``status`` (e.g. a CUDA out-of-memory error)."""
    _emit({"status": status})


def _emit(event: dict) -> None:
    print(MARK + json.dumps(event), flush=True)


def group_rss_bytes(pgid: int) -> int:
    """Resident set size summed over the processes of process group ``pgid`` (Linux ``/proc``)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            if int(fields[2]) != pgid:          # fields after the name: state, ppid, pgrp, ...
                continue
            with open(f"/proc/{entry.name}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue                            # the process ended meanwhile
    return total


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (what may be allocated without swapping), or None."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


@dataclass
class ChildResult:
    """``status``: ``ok``; ``does not fit: ...``; ``did not finish: ...``; ``failed ...``."""

    status: str
    phase: str
    values: dict = field(default_factory=dict)
    peak_rss_bytes: int = 0         # the highest sample of the group's RSS
    seconds: float = 0.0
    output_tail: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_child(cmd: Sequence[str], *, max_rss_bytes: int, timeout_s: float, poll_s: float = 0.2,
              env: dict | None = None) -> ChildResult:
    """Run ``cmd`` (a child speaking this module's events) under the watchdog; see the docstring."""
    from harness.processes import spawn, stop_group, sweep_group

    state = {"phase": "start-up", "values": {}, "done": False, "status": None}
    tail: collections.deque = collections.deque(maxlen=20)
    proc = spawn(cmd, stdout=subprocess.PIPE, env=env)

    def read():
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                event = json.loads(line[len(MARK):]) if line.startswith(MARK) else None
            except ValueError:                  # cut short by a kill
                event = None
            if not isinstance(event, dict):
                tail.append(line)
                continue
            state["phase"] = event.get("phase", state["phase"])
            state["values"].update(event.get("values", {}))
            state["done"] = state["done"] or event.get("done", False)
            state["status"] = event.get("status", state["status"])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    start, peak, stopped = time.monotonic(), 0, None
    try:
        while proc.poll() is None:
            rss = group_rss_bytes(proc.pid)
            peak = max(peak, rss)
            if rss > max_rss_bytes:
                stopped = f"does not fit: RSS > {max_rss_bytes / GIB:.3g} GiB at {state['phase']}"
            elif time.monotonic() - start > timeout_s:
                stopped = f"did not finish: over {timeout_s:g} s at {state['phase']}"
            if stopped:
                stop_group(proc, grace_s=5)
                break
            time.sleep(poll_s)
    except BaseException:                       # Ctrl-C: take the child with us
        stop_group(proc, grace_s=5)
        raise
    rc = proc.wait()
    sweep_group(proc.pid)                       # workers the child left behind
    reader.join(timeout=10)
    seconds = time.monotonic() - start
    if stopped:
        status = stopped
    elif state["status"]:
        status = state["status"]
    elif rc != 0:
        last = next((t for t in reversed(tail) if t.strip()), "(no output)")
        how = f"killed by signal {-rc}" if rc < 0 else f"exit {rc}"
        status = f"failed ({how}) at {state['phase']}: {last.strip()}"
    elif not state["done"]:
        status = f"failed: ended without a result at {state['phase']}"
    else:
        status = "ok"
    return ChildResult(status=status, phase=state["phase"], values=state["values"],
                       peak_rss_bytes=peak, seconds=seconds, output_tail=list(tail))
