"""nnU-Net v2's process environment: folders, worker counts, device, and in-process pools.

nnU-Net v2 (2.8.1) reads its folders from environment variables at use time
(``nnunetv2.paths._EnvPath``) and its default pool size once, at import
(``nnunetv2.configuration.default_num_processes``), so :func:`configure` must run before the
first ``import nnunetv2`` of a process for the pool size to apply; the folders may change later.

On a CPU, ``nnUNet_n_proc_DA=0`` (augmentation in the training process) is faster than a
background augmenter that competes for the cores; planning needs it >= 1 (it sets torch's thread
count from it), hence :func:`planning_threads`. nnU-Net's fingerprinting and preprocessing start
``spawn`` pools; on a few small cases the interpreter start-up of a spawned worker (about 10 s on
2 cores) costs more than the work, so :func:`in_process_pools` lets nnU-Net's own code run its
pool in threads of this process instead (``multiprocessing.dummy``, same ``Pool`` interface).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.dummy
import os
from pathlib import Path
from typing import Iterator


def configure(work: str | os.PathLike) -> dict[str, str]:
    """Point nnU-Net at ``work`` (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``):
    the harness passes the data root of one dataset version (``work/datasets/<dataset>-<fp>``).
    ``nnUNet_compile`` is set off whatever the user exported (compile is a run setting).

    Worker counts keep a value the user exported; otherwise CPU machines get 0 augmentation
    workers and pools of 1, GPU machines nnU-Net's own defaults (12 augmentation workers, pools
    of 8) capped at the CPUs this process may use (``harness.processes.usable_cpus``: affinity,
    SLURM's allocation, cgroup quota), where nnU-Net would count the node's cores.
    """
    work = Path(work).resolve()
    env = {"nnUNet_raw": str(work / "nnUNet_raw"),
           "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
           "nnUNet_results": str(work / "nnUNet_results")}
    os.environ.update(env)
    # torch.compile is a setting of the run (harness.studies.options), decided by the trainer and
    # the predictor from the run spec; nnU-Net's own switch must not change it unrecorded.
    os.environ["nnUNet_compile"] = "f"
    os.environ.setdefault("nnUNet_wandb_enabled", "0")
    if not _has_cuda():
        os.environ.setdefault("nnUNet_n_proc_DA", "0")
        os.environ.setdefault("nnUNet_def_n_proc", "1")
    else:
        from harness.processes import usable_cpus
        os.environ.setdefault("nnUNet_n_proc_DA", str(min(12, usable_cpus())))
        os.environ.setdefault("nnUNet_def_n_proc", str(min(8, usable_cpus())))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
    return env


def _has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def device():
    """``cuda`` when there is a GPU (mixed precision then follows nnU-Net), else ``cpu``."""
    import torch
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@contextlib.contextmanager
def planning_threads() -> Iterator[None]:
    """nnU-Net's planner calls ``torch.set_num_threads(nnUNet_n_proc_DA)``: 0 would crash it."""
    old = os.environ.get("nnUNet_n_proc_DA")
    if old is not None and int(old) < 1:
        os.environ["nnUNet_n_proc_DA"] = "1"
    try:
        yield
    finally:
        if old is not None:
            os.environ["nnUNet_n_proc_DA"] = old


class _ThreadContext:
    """What ``multiprocessing.get_context("spawn")`` offers nnU-Net, but backed by threads."""

    Pool = staticmethod(multiprocessing.dummy.Pool)

    def __getattr__(self, name):
        return getattr(multiprocessing.get_context("spawn"), name)


class _MultiprocessingInThreads:
    def get_context(self, method=None):
        return _ThreadContext()

    def __getattr__(self, name):
        return getattr(multiprocessing, name)


# nnU-Net lists a raw dataset's files with a *fork* pool of 12 (``create_lists_from_splitted_dataset_
# folder``, called by the fingerprint extractor and the preprocessor). Forking a process that runs
# other threads (torch's, the job's) can leave a child blocked for ever on a lock another thread
# held at the fork, and ``Pool.terminate`` then waits on it: a prepare job hung that way. The work
# is a regular-expression filter of file names, so it runs in threads too.
FORK_POOL_MODULE = "nnunetv2.utilities.utils"


@contextlib.contextmanager
def in_process_pools(*module_names: str) -> Iterator[None]:
    """Run the ``spawn`` pools of the named nnU-Net modules, and nnU-Net's fork pool of file
    listing (:data:`FORK_POOL_MODULE`), in threads of this process."""
    import importlib

    saved = []
    for name in module_names:
        mod = importlib.import_module(name)
        saved.append((mod, "multiprocessing", mod.multiprocessing))
        mod.multiprocessing = _MultiprocessingInThreads()
    listing = importlib.import_module(FORK_POOL_MODULE)
    saved.append((listing, "Pool", listing.Pool))
    listing.Pool = multiprocessing.dummy.Pool
    try:
        yield
    finally:
        for mod, attr, orig in reversed(saved):
            setattr(mod, attr, orig)

