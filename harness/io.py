"""Atomic, durable file writes: every file that another step reads appears complete or not at all.

A writer fills a temporary sibling (same folder, so the final ``os.replace`` is a rename on one
file system) and renames it into place; on any error the temporary is removed and the old file,
if any, is left untouched. The temporary is fsynced before the rename and the folder after it,
so that a power loss or a killed node cannot leave a renamed but empty file behind (on ext4 and
XFS a rename without the fsync may reach the disk before the data does).

:func:`open_for_write` is the one place where binary files that other steps read are opened for
writing (checkpoints, the text and JSON files of :func:`write_text` / :func:`write_json`). It is
a seam on purpose: a test or a fault benchmark replaces it (``monkeypatch.setattr(harness.io,
"open_for_write", ...)``) to return a file object that fails, e.g. with ``ENOSPC`` after N
bytes, and so exercises the disk-full paths without a small file system. Callers must look it up
on the module at call time (``harness.io.open_for_write(path)``), never import the name.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


def open_for_write(path: str | os.PathLike) -> IO[bytes]:
    """Open ``path`` for writing in binary mode (truncating it); the write seam, see the module
    docstring. Returns a binary file object that supports ``write``, ``flush``, ``fileno`` and
    ``close`` and works as a context manager."""
    return open(path, "wb")


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (renames, new and removed files) to the disk. A no-op where
    folders cannot be opened (Windows)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (files first, each folder after its entries)."""
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(folder, name)
            if not os.path.islink(p):
                fsync_file(p)
        fsync_dir(folder)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    Use it for writers that want a file name (``df.to_csv``, SimpleITK)::

        with atomic_path(out / "metrics.csv") as tmp:
            df.to_csv(tmp, index=False)

    The temporary is fsynced before the rename, the folder after it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes),
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, through :func:`open_for_write`."""
    with atomic_path(path) as tmp:
        with open_for_write(tmp) as f:
            f.write(text.encode("utf-8"))
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, **kwargs: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    kwargs.setdefault("indent", 2)
    return write_text(path, json.dumps(obj, **kwargs) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it becomes ``path`` only if the block succeeds.

    An existing ``path`` is replaced (removed, then the new folder renamed in). On error the
    temporary folder is removed, so ``path`` never exists half-written. Every file and folder of
    the new tree is fsynced before the rename, the parent folder after it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)
