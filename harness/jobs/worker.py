"""Run one job in a fresh process: ``python -m harness.jobs.worker [--wait-lock] JOB_JSON_FILE``.

The local backend starts one worker per job (a crash of one model cannot take the grid down), and
the SLURM backend runs the same command inside each SLURM job. Exit status 0 when the job is done,
1 when it raised (the traceback goes to stderr, and for a train run into its ``run.json``), 2 for
a bad job file, 75 (``harness.processes.EXIT_BUSY``) when another process holds the job's lock
(the local backend then waits for that process instead), 130/143 when interrupted by SIGINT /
SIGTERM (a train run records the attempt as interrupted and resumes next time). With
``--wait-lock`` (SLURM) the worker waits for the lock instead, then finds the job done or takes
it over.

Environment: ``MEDNEXT_BENCH_THREADS`` caps torch's threads (the local backend sets it when it
runs several jobs side by side, the SLURM backend from the CPUs of the allocation); nnU-Net's
variables are set by the job from its data root.
"""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path


def _threads() -> int | None:
    value = os.environ.get("MEDNEXT_BENCH_THREADS")
    if not value:
        return None
    n = int(value)
    if n < 1:
        raise ValueError(f"MEDNEXT_BENCH_THREADS must be >= 1, got {value!r}")
    # nnU-Net sizes its pools and prediction threads from this; set before it is imported.
    os.environ.setdefault("nnUNet_def_n_proc", str(n))
    return n


def _stop_own_group() -> None:
    """On SIGTERM, pass it on to what this worker started (augmentation workers), if the worker
    leads its own process group (as the launchers start it); never to a shell's group."""
    import signal
    if os.getpgrp() == os.getpid():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            os.killpg(os.getpid(), signal.SIGTERM)
        except ProcessLookupError:
            pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wait_lock = "--wait-lock" in argv
    argv = [a for a in argv if a != "--wait-lock"]
    if len(argv) != 1:
        print("usage: python -m harness.jobs.worker [--wait-lock] JOB_JSON_FILE", file=sys.stderr)
        return 2
    from harness.jobs.plan import Job, JobBusy, execute
    from harness.processes import EXIT_BUSY, Terminated, raise_on_sigterm

    path = Path(argv[0])
    try:
        job = Job.from_json(path.read_text())
    except (OSError, ValueError, KeyError) as exc:
        print(f"{path}: not a job file ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    raise_on_sigterm()
    threads = _threads()
    if threads:
        import torch
        torch.set_num_threads(threads)
    print(f"job {job.key} ({job.label}) pid {os.getpid()}", flush=True)
    try:
        execute(job, wait_lock=wait_lock)
    except JobBusy as exc:
        print(f"job {job.key} BUSY: {exc}", flush=True)
        return EXIT_BUSY
    except BaseException as exc:    # noqa: BLE001 -- report everything, then fail
        traceback.print_exc()
        print(f"job {job.key} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if isinstance(exc, KeyboardInterrupt):
            return 130
        if isinstance(exc, Terminated):
            _stop_own_group()
            return 143
        return 1
    print(f"job {job.key} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
