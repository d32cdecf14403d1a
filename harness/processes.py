"""Processes: how many CPUs this process may use, and jobs that leave no orphans behind.

``usable_cpus`` counts what the scheduler grants, not the node: the CPU affinity mask
(``os.sched_getaffinity``, which taskset, cgroups' cpusets and SLURM's binding set), SLURM's
``SLURM_CPUS_PER_TASK`` and a cgroup v2 CPU quota (``cpu.max``), whichever is smallest.

``spawn`` starts a job in its own session (so its process group holds the job and everything it
starts, augmentation workers included) that receives SIGTERM if the launcher dies
(``PR_SET_PDEATHSIG`` on Linux); ``stop_group`` ends a whole group, SIGTERM first, SIGKILL after a
grace period, and ``sweep_group`` kills what is left of a group after its leader ended.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Sequence

EXIT_BUSY = 75      # EX_TEMPFAIL: the job's lock is held by another process; try again later


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by a cgroup v2 quota of this process (``cpu.max``), or None."""
    try:
        rel = next((line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                    if line.startswith("0::")), None)
    except OSError:
        return None
    if rel is None:
        return None
    folder = root / rel.strip().lstrip("/")
    best = None
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max":
                n = int(quota) / int(period)
                best = n if best is None else min(best, n)
        except (OSError, ValueError):
            pass
        if folder == root or root not in folder.parents:
            return best
        folder = folder.parent


def usable_cpus() -> int:
    """CPUs this process may use (at least 1); see the module docstring."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        n = min(n, int(slurm))
    quota = _cgroup_quota()
    if quota:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the launcher dies (Linux), SIGUSR2 left as is."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)       # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(cmd: Sequence[str], *, stdout: IO | int | None = None, env: dict | None = None,
          extra_preexec=None) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new session (its own process group), stdin closed."""
    def preexec():
        _die_with_parent()
        if extra_preexec is not None:
            extra_preexec()

    return subprocess.Popen(list(cmd), stdout=stdout,
                            stderr=subprocess.STDOUT if stdout is not None else None,
                            env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=preexec)


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def sweep_group(pgid: int) -> None:
    """SIGKILL whatever is left of the process group ``pgid`` (its leader has ended)."""
    _signal_group(pgid, signal.SIGKILL)


def stop_group(proc: subprocess.Popen, grace_s: float = 30.0) -> int | None:
    """SIGTERM the group of ``proc`` (a :func:`spawn`-ed leader), wait up to ``grace_s``, then
    SIGKILL the group; returns the leader's exit status."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    sweep_group(pgid)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return None


class Terminated(BaseException):
    """SIGTERM arrived (the launcher or SLURM stops the job): unwind, record, exit."""


_FORK_HOOK = []


def _default_sigterm_in_child() -> None:
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def raise_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` in this process (the main thread), once.

    A process forked from this one (a ``multiprocessing`` fork pool, an augmentation worker)
    gets SIGTERM's default action back: ``Pool.terminate`` stops its workers with SIGTERM, and
    a worker that raised instead could swallow it, go on with SIGTERM ignored, and block its
    parent's ``join`` for ever (a prepare job hung that way)."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)
    if not _FORK_HOOK:
        os.register_at_fork(after_in_child=_default_sigterm_in_child)
        _FORK_HOOK.append(True)
