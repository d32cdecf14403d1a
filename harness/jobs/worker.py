"""Run one job in a fresh process: ``python -m harness.jobs.worker JOB_JSON_FILE``.

The local backend starts one worker per job (a crash of one model cannot take the grid down), and
the SLURM backend runs the same command inside each SLURM job. Exit status 0 when the job is done,
1 when it raised (the traceback goes to stderr, and for a train run into its ``run.json``), 2 for
a bad job file.

Environment: ``MEDNEXT_BENCH_THREADS`` caps torch's threads (the local backend sets it when it
runs several jobs side by side); nnU-Net's variables are set by the job from its work folder.
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m harness.jobs.worker JOB_JSON_FILE", file=sys.stderr)
        return 2
    from harness.jobs.plan import Job, execute

    path = Path(argv[0])
    try:
        job = Job.from_json(path.read_text())
    except (OSError, ValueError, KeyError) as exc:
        print(f"{path}: not a job file ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    threads = _threads()
    if threads:
        import torch
        torch.set_num_threads(threads)
    print(f"job {job.key} ({job.label}) pid {os.getpid()}", flush=True)
    try:
        execute(job)
    except BaseException as exc:    # noqa: BLE001 -- report everything, then fail
        traceback.print_exc()
        print(f"job {job.key} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    print(f"job {job.key} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
