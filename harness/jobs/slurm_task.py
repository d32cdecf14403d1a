"""What runs inside each SLURM job of the SLURM backend: :class:`JobTask`, a submitit
``Checkpointable`` that runs one :class:`~harness.jobs.plan.Job` and requeues itself on SIGUSR2.

SLURM sends SIGUSR2 ``signal_delay_s`` before the time limit (``--signal``), and on preemption;
submitit (1.5) then calls :meth:`JobTask.checkpoint`, saves the task it returns as the job's new
pickle and runs ``scontrol requeue``. The requeued job starts the task again, and the job resumes:
training from ``checkpoint_latest.pth`` (written every epoch by the trainer), anything else from
scratch (it is idempotent). At most the epoch in flight is lost.

submitit's own pattern is to checkpoint the callable's state; here the state is on disk already,
so the task only stops its worker and returns itself with the attempt counter raised.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from submitit.helpers import Checkpointable, DelayedSubmission

from harness.io import write_json, write_text
from harness.jobs.plan import Job, job_status
from harness.jobs.tracking import read_record, record_path
from harness.processes import spawn, sweep_group, usable_cpus


class JobTask(Checkpointable):
    """What runs inside a SLURM job: one :class:`Job`, resumable after a requeue.

    The job itself runs in a child process, ``python -m harness.jobs.worker JOB_FILE``: submitit
    installs Python signal handlers (SIGTERM ignored, SIGUSR2 = checkpoint and requeue) that
    processes *forked* from the job would inherit, and a forked pool worker that ignores the
    SIGTERM of ``Pool.terminate()`` hangs its parent for ever (nnU-Net forks such pools). The
    child ignores SIGUSR2, so only this process answers it: :meth:`checkpoint` stops the child
    (training state is on disk, ``checkpoint_latest.pth`` every epoch) and hands back the task.

    Example::

        task = JobTask(job.to_dict())
        task()                 # runs the job; raises unless it ends done
    """

    def __init__(self, job: dict, attempt: int = 1):
        Job.from_dict(job)                  # validate now, not on the node
        self.job, self.attempt = job, attempt

    def __call__(self) -> str:
        global _CHILD
        job = Job.from_dict(self.job)
        job_file = _job_file(job)
        env = dict(os.environ)
        # One torch thread per CPU SLURM gave the job (not the whole node); the worker applies it.
        env.setdefault("MEDNEXT_BENCH_THREADS", str(usable_cpus()))
        print(f"job {job.key} ({job.label}) attempt {self.attempt} on {socket.gethostname()}, "
              f"SLURM job {os.environ.get('SLURM_JOB_ID', '-')}", flush=True)
        # --wait-lock: if a launcher elsewhere (a local grid on the same folder) runs this job,
        # wait for it and find the job done rather than fail and cancel the dependants.
        _CHILD = spawn([sys.executable, "-m", "harness.jobs.worker", "--wait-lock", str(job_file)],
                       env=env, extra_preexec=_ignore_usr2)
        try:
            rc = _CHILD.wait()
            sweep_group(_CHILD.pid)
        except BaseException:
            # submitit gave up on a requeue (too many timeouts) or the job is going down:
            # the worker must not outlive this process.
            _stop_child(grace_s=30)
            raise
        finally:
            _CHILD = None
        status = job_status(job)
        if rc != 0 or status != "done":
            raise RuntimeError(f"job {job.key} failed: worker exit status {rc}, job status "
                               f"{status!r} (the worker's traceback is above)")
        return job.key

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """Called by submitit on SIGUSR2: stop the job, hand back the same task for the requeue."""
        # One checkpoint per attempt, even if the signal comes again while this one runs.
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        job = Job.from_dict(self.job)
        _stop_child()
        epochs = _epochs_done(job)
        print(f"job {job.key} signalled during attempt {self.attempt}"
              + (f" after {epochs} finished epochs" if epochs is not None else "")
              + ": requeueing; the next attempt resumes from its last checkpoint", flush=True)
        _note_requeue(job, self.attempt, epochs)
        return DelayedSubmission(JobTask(self.job, self.attempt + 1), *args, **kwargs)


_CHILD: subprocess.Popen | None = None     # the running worker of this SLURM job, if any


def _ignore_usr2() -> None:
    # In the child, before exec: SIG_IGN survives exec, so the worker (and what it starts) lets
    # the submitit process alone handle the checkpoint-and-requeue signal.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _stop_child(grace_s: float = 60.0) -> None:
    """SIGTERM the worker's process group and reap the worker, SIGKILL the group after ``grace_s``.

    Runs inside a signal handler that may have interrupted ``Popen.wait()``, which holds the
    Popen's wait lock: so ``os.waitpid`` here, never ``Popen.wait``/``poll``.
    """
    child = _CHILD
    if child is None or child.returncode is not None:
        return
    try:
        group = os.getpgid(child.pid) == child.pid     # a spawn()-ed worker leads its group
        kill = os.killpg if group else os.kill
        kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while os.waitpid(child.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                kill(child.pid, signal.SIGKILL)
                os.waitpid(child.pid, 0)
                break
            time.sleep(0.2)
    except (ProcessLookupError, ChildProcessError):
        return                                # already gone (and reaped)
    if group:
        sweep_group(child.pid)


def _job_file(job: Job) -> Path:
    """The job as a worker file beside this SLURM job's logs (one per SLURM job id)."""
    jid = os.environ.get("SLURM_ARRAY_JOB_ID")
    jid = f"{jid}_{os.environ['SLURM_ARRAY_TASK_ID']}" if jid else os.environ.get("SLURM_JOB_ID")
    folder = job.work / "jobs" / "slurm" / (jid or f"pid{os.getpid()}")
    return write_text(folder / "job.json", job.to_json())


def _epochs_done(job: Job) -> int | None:
    if job.kind != "train":
        return None
    path = job.work / "runs" / job.payload["run_id"] / "progress.csv"
    try:
        return max(0, len(path.read_text().strip().splitlines()) - 1)
    except OSError:
        return 0


def _note_requeue(job: Job, attempt: int, epochs: int | None) -> None:
    record = read_record(job.work, job.key)
    if not record or not record.get("slurm"):
        return
    record["slurm"].setdefault("requeues", []).append(
        {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "attempt": attempt, "epochs_done": epochs,
         "job_id": os.environ.get("SLURM_JOB_ID")})
    write_json(record_path(job.work, job.key), record)
