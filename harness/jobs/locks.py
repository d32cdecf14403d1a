"""Job locks: one OS lock per job, so that a job runs in one process at a time, anywhere.

Two launchers on one grid (two ``make reproduce-table2``, or a local grid beside a SLURM one on a
shared folder) must train each run once. Whether a job is running is decided by its lock file
``work/locks/<job>.lock``, never by a process id (those are host-local): the worker takes the lock
before it looks at the job's state and holds it until the job ends. POSIX record locks
(``fcntl.lockf``) are used because the kernel releases them when the holding process dies, even by
SIGKILL, they are not inherited by forked children (an orphaned augmentation worker cannot keep
a dead job locked), and NFS (v4, or v3 with lockd) carries them between hosts. The lock files
stay: removing a lock file while another process waits on it would let two processes in.

Caveat of POSIX locks: they are per process, so two threads of one process do not exclude each
other; every worker is its own process.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path


_HELD: dict[Path, "JobLock"] = {}      # locks this process holds, by resolved path


class JobLock:
    """The lock of one job. Usage::

        lock = JobLock(path)
        if not lock.acquire(wait=False):
            ...   # another process runs the job
        try: ...
        finally: lock.release()
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)

    def acquire(self, wait: bool = False, poll_s: float = 2.0, on_wait=None) -> bool:
        """Take the lock; with ``wait`` block until it is free (``on_wait()`` is called once
        when the wait starts). Returns False only without ``wait``, when it is held elsewhere."""
        if self._fd is not None:
            return True
        fd = self._open()
        told = False
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    os.close(fd)
                    raise
                if not wait:
                    os.close(fd)
                    return False
                if not told and on_wait is not None:
                    on_wait()
                    told = True
                time.sleep(poll_s)
                continue
            self._fd = fd
            _HELD[self.path.resolve()] = self
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return True

    def release(self) -> None:
        if self._fd is None:
            return
        _HELD.pop(self.path.resolve(), None)
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "JobLock":
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(path: str | os.PathLike) -> bool:
    """True if another process holds the lock at ``path`` (a missing file is not locked).

    A lock this process holds reads as not locked (it is not held by *another* process), and
    is answered without touching the file: closing any descriptor of a locked file would drop
    this process's POSIX lock on it.
    """
    path = Path(path)
    if path.resolve() in _HELD:
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return True
        raise
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
