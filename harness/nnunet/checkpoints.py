"""The checkpoint files of a run folder: durable writes in two generations, and what to resume from.

nnU-Net writes ``checkpoint_latest.pth`` in place with ``torch.save(obj, path)``: a kill, a node
failure or a full disk during that write leaves a truncated latest and nothing to resume from,
and a full disk surfaces as an internal error of torch's zip writer. Here instead
(:func:`write_checkpoint`):

1. the new checkpoint is written to a temporary name in the run folder (:data:`CHECKPOINT_TMP`)
   through a file object from ``harness.io.open_for_write`` (the write seam, where tests and
   fault benchmarks inject ``ENOSPC``), then fsynced;
2. the existing ``checkpoint_latest.pth`` is renamed to ``checkpoint_previous.pth``;
3. the temporary is renamed to ``checkpoint_latest.pth`` and the folder fsynced.

So at every instant a complete latest or a complete previous exists. A write that fails with an
``OSError`` removes its temporary, leaves latest and previous untouched, and raises
:class:`CheckpointWriteError` naming the file, the reason, the free space and the checkpoint that
is still intact.

:func:`resume_point` picks what a re-run resumes from: the latest if it reads (through
``mednext.read_checkpoint``, weights-only) and has the keys of a resumable checkpoint, else the
previous, with a note naming both files and the reason. :func:`remove_stale_temporaries` removes
what a killed write left behind, and only that. :func:`network_weights` reads the weights of a
finished run (prediction, UpKern). :func:`plain_numbers` turns the numpy values nnU-Net keeps in
a checkpoint (log, ``_best_ema``) into Python numbers, so that the weights-only reader takes the
file with any numpy version.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from harness import io as harness_io

LATEST, PREVIOUS, FINAL = "checkpoint_latest.pth", "checkpoint_previous.pth", "checkpoint_final.pth"
# Temporary names of checkpoint writes: ``tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")``
# (8 random characters); the optional ``.pth`` is the suffix that earlier versions of this
# project gave them (``harness.io.atomic_path``). Only files matching this are removed as stale.
CHECKPOINT_TMP = re.compile(r"\.checkpoint_(latest|final)\.pth\.[a-z0-9_]{8}\.tmp(\.pth)?")
# What a checkpoint needs for a resume (nnU-Net's load_checkpoint reads these).
RESUME_KEYS = ("network_weights", "optimizer_state", "logging", "_best_ema", "current_epoch")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. the disk is full). No temporary file is left and
    the checkpoints already on disk are untouched; ``errno`` is that of the failed write."""


def plain_numbers(obj):
    """Numpy scalars and arrays as Python numbers and lists, recursively (numpy 2 pickles its
    scalars under module names numpy 1 lacks, and the weights-only reader refuses them)."""
    if isinstance(obj, dict):
        return {k: plain_numbers(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain_numbers(v) for v in obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    return obj

def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``: torch.save reports a failed ``write`` of its file object as a
    RuntimeError whose context is the OSError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def write_checkpoint(checkpoint: dict, target: str | os.PathLike, keep_previous: bool,
                     intact: str) -> None:
    """Write ``checkpoint`` to ``target`` durably (steps in the module docstring).

    Args:
        checkpoint: what ``torch.save`` stores.
        target: the checkpoint file (``<run>/checkpoint_latest.pth`` ...).
        keep_previous: an existing ``target`` becomes ``checkpoint_previous.pth`` (the rotation
            of the latest checkpoint); otherwise it is replaced.
        intact: what stays valid if this write fails, for the error message (e.g. "the earlier
            checkpoint checkpoint_latest.pth (resumes at epoch 3) is intact").

    Raises:
        CheckpointWriteError: the write failed with an ``OSError`` (``ENOSPC``, ``EIO`` ...).
    """
    target = Path(target)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        with harness_io.open_for_write(tmp) as f:
            torch.save(checkpoint, f)
        harness_io.fsync_file(tmp)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        err = _os_error(exc)
        if err is None:
            raise
        try:
            free = f"{_size(shutil.disk_usage(folder).free)} free"
        except OSError:
            free = "free space unknown"
        raise CheckpointWriteError(
            err.errno or errno.EIO,
            f"cannot write checkpoint {target}: {err.strerror or err} ({free} on the file "
            f"system of {folder}); {intact}") from exc
    if keep_previous and target.exists():
        os.replace(target, folder / PREVIOUS)
    os.replace(tmp, target)
    harness_io.fsync_dir(folder)


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary checkpoint files that a killed write left in ``run_dir`` (names
    matching :data:`CHECKPOINT_TMP`, nothing else); returns them."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    stale = sorted(p for p in run_dir.iterdir() if CHECKPOINT_TMP.fullmatch(p.name) and p.is_file())
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def network_weights(path: str | os.PathLike) -> dict:
    """The ``network_weights`` of a checkpoint of this project's trainer, read weights-only."""
    from mednext.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("network_weights"), dict):
        raise ValueError(f"checkpoint {path} holds no 'network_weights' dict: not a checkpoint of "
                         f"this project's trainer")
    return ckpt["network_weights"]


def _read_resumable(path: Path) -> tuple[dict | None, str]:
    """``(checkpoint, "")`` if ``path`` can be resumed from, else ``(None, why not)``."""
    from mednext.checkpoint import read_checkpoint

    try:
        ckpt = read_checkpoint(path)
    except (ValueError, OSError) as exc:
        return None, str(exc)
    if not isinstance(ckpt, dict):
        return None, f"checkpoint {path} holds a {type(ckpt).__name__}, not a checkpoint dict"
    # _best_ema may be None (nnU-Net's value before the first epoch); the others may not
    missing = [k for k in RESUME_KEYS if k not in ckpt or (ckpt[k] is None and k != "_best_ema")]
    if missing:
        return None, (f"checkpoint {path} lacks {missing}: not a resumable checkpoint of this "
                      f"project's trainer")
    return ckpt, ""


def resume_point(run_dir: str | os.PathLike) -> tuple[dict | None, str | None, str | None]:
    """What a re-run of the run in ``run_dir`` resumes from: ``(checkpoint, file name, note)``.

    The latest checkpoint if it reads and has :data:`RESUME_KEYS`; else the previous one, and an
    unusable latest is removed (the next write would otherwise rename it over the good previous);
    else ``(None, None, note)``: a fresh start. ``note`` (``None`` when the latest was used, or
    when there was nothing to resume from) names the files and why each was passed over.
    """
    run_dir = Path(run_dir)
    latest, previous = run_dir / LATEST, run_dir / PREVIOUS
    if not latest.exists() and not previous.exists():
        return None, None, None
    ckpt, why_latest = _read_resumable(latest) if latest.exists() else (None, f"{LATEST} is missing")
    if ckpt is not None:
        return ckpt, LATEST, None
    if not previous.exists():
        return None, None, f"{why_latest}; there is no {PREVIOUS}: starting afresh"
    ckpt, why_previous = _read_resumable(previous)
    if ckpt is None:
        return None, None, (f"{why_latest}; {why_previous}; neither {LATEST} nor {PREVIOUS} can be "
                            f"resumed from: starting afresh")
    note = f"{why_latest}; resuming from {PREVIOUS} at epoch {int(ckpt['current_epoch'])}"
    if latest.exists():
        latest.unlink()
        harness_io.fsync_dir(run_dir)
        note += f" (the unusable {LATEST} is removed)"
    return ckpt, PREVIOUS, note
