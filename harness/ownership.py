"""What the harness created, and the rule that it deletes nothing else.

Every folder the harness creates and may later replace or remove (a converted or generated
dataset, a prepared data root, a work folder, a report folder) carries a small marker file,
``.mednext-bench.json``, written inside it before it becomes visible. A link the harness creates
gets a marker beside it (``.<name>.mednext-bench-link.json``) that records its target. Before
removing or replacing anything, the harness asks :func:`require_owned`: a path without its marker
is the user's, and the answer is an error that names it, never a deletion.

This is the whole of the data-safety rule for removals; writes of new files under the harness's
own folders need no marker (they are created by name, atomically, beside nothing of the user's).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from harness.errors import UserError

MARKER = ".mednext-bench.json"


def _link_marker(link: Path) -> Path:
    return link.parent / f".{link.name}.mednext-bench-link.json"


def mark_created(folder: str | os.PathLike, what: str) -> Path:
    """Write the marker into ``folder`` (which must exist): the harness made it, for ``what``."""
    folder = Path(folder)
    path = folder / MARKER
    path.write_text(json.dumps({"created_by": "mednext-bench", "what": what,
                                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "host": socket.gethostname()}, indent=2) + "\n")
    return path


def ensure_folder(folder: str | os.PathLike, what: str) -> Path:
    """Create ``folder`` (and parents) if missing, marking it when this call created it.

    An existing folder is used as it is, marked or not: using a folder is not deleting it.
    """
    folder = Path(folder)
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / MARKER).exists():
            mark_created(folder, what)
    return folder


def is_owned(path: str | os.PathLike) -> bool:
    """True if the harness created ``path`` (a marked folder, or a link whose marker names its
    current target)."""
    path = Path(path)
    if path.is_symlink():
        try:
            rec = json.loads(_link_marker(path).read_text())
        except (OSError, ValueError):
            return False
        return rec.get("target") == os.readlink(path)
    if path.is_dir():
        try:
            rec = json.loads((path / MARKER).read_text())
        except (OSError, ValueError):
            return False
        return rec.get("created_by") == "mednext-bench"
    return False


def require_owned(path: str | os.PathLike, action: str) -> None:
    """Raise :class:`UserError` unless ``path`` is absent or was created by the harness."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if not is_owned(path):
        kind = "link" if path.is_symlink() else ("folder" if path.is_dir() else "file")
        raise UserError(f"{path}: refusing to {action} this {kind}: mednext-bench did not create it "
                        f"(it has no {MARKER} marker); move it away or choose another location")


def make_link(link: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Create the symlink ``link -> target`` and its marker; an owned link is replaced."""
    link, target = Path(link), Path(target)
    if link.is_symlink() and os.readlink(link) == str(target) and is_owned(link):
        return link
    require_owned(link, "replace")
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        remove_owned(link, "replace")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=target.is_dir())
    _link_marker(link).write_text(json.dumps({"created_by": "mednext-bench",
                                              "target": str(target)}) + "\n")
    return link


def remove_owned(path: str | os.PathLike, action: str = "remove") -> None:
    """Remove ``path`` if the harness created it; a link is unlinked (its target is untouched).

    Raises :class:`UserError` for anything else: nothing the user made is ever deleted.
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    require_owned(path, action)
    if path.is_symlink():
        path.unlink()
        _link_marker(path).unlink(missing_ok=True)
    else:
        shutil.rmtree(path)
