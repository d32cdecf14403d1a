"""The fingerprint of a raw dataset: what a run trained on, as one hash.

A run's identity must change when its data change (a re-conversion, a corrected label, an added
case), and must not change when the same data move to another folder. The fingerprint is the
SHA-256 of the canonical JSON of ``dataset.json`` (without the converter's ``conversion`` record,
which holds paths and times) and of every file under ``imagesTr`` and ``labelsTr``: relative
path, size and the SHA-256 of its content. Hashing a large dataset takes a while (about a
gigabyte per second and core), so the hashes are kept in a cache file outside the dataset (the
user's data folder is only read), keyed by each file's size and modification time: a second
fingerprint of unchanged data costs one ``stat`` per file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from harness.errors import UserError
from harness.io import write_json

SUBFOLDERS = ("imagesTr", "labelsTr")
CHUNK = 1 << 22


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                return h.hexdigest()
            h.update(block)


def _files(folder: Path) -> list[tuple[str, os.stat_result]]:
    out = []
    for sub in SUBFOLDERS:
        root = folder / sub
        if not root.is_dir():
            continue
        for dirpath, _, names in os.walk(root, followlinks=True):
            for name in names:
                path = Path(dirpath) / name
                out.append((str(path.relative_to(folder)), path.stat()))
    return sorted(out)


def _cache_path(cache_dir: Path, folder: Path) -> Path:
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    return cache_dir / f"{folder.name}-{key}.json"


def dataset_fingerprint(folder: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> dict:
    """``{"fingerprint", "folder", "file_count", "bytes", "cases"}`` of the raw dataset ``folder``.

    ``cache_dir`` keeps the per-file hashes between calls (see the module docstring). Raises
    :class:`~harness.errors.UserError` when the folder or its ``dataset.json`` is missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"dataset folder {folder} not found (convert the download first with "
                        f"`mednext-bench data convert`, into the folder given as --data)")
    try:
        dj = json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder / 'dataset.json'}: unreadable ({exc})") from None
    dj.pop("conversion", None)
    cache_file = _cache_path(Path(cache_dir), folder) if cache_dir else None
    cached: dict = {}
    if cache_file is not None:
        try:
            cached = json.loads(cache_file.read_text()).get("files", {})
        except (OSError, ValueError):
            cached = {}
    files, entries, total = {}, [], 0
    for rel, st in _files(folder):
        old = cached.get(rel)
        if old and old[0] == st.st_size and old[1] == st.st_mtime_ns:
            digest = old[2]
        else:
            digest = _sha256(folder / rel)
        files[rel] = [st.st_size, st.st_mtime_ns, digest]
        entries.append([rel, st.st_size, digest])
        total += st.st_size
    content = json.dumps({"dataset_json": dj, "files": entries}, sort_keys=True,
                         separators=(",", ":"))
    out = {"fingerprint": hashlib.sha256(content.encode()).hexdigest(), "folder": folder.name,
           "file_count": len(entries), "bytes": total,
           "cases": sum(1 for rel, _, _ in entries if rel.startswith("labelsTr/"))}
    if cache_file is not None and files != cached:
        write_json(cache_file, {**out, "path": str(folder.resolve()), "files": files})
    return out
