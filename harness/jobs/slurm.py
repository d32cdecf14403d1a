"""The SLURM backend: a study's job graph as SLURM jobs and job arrays, through submitit.

``submit_study`` plans the study (:func:`harness.jobs.plan.plan_study`), leaves out what is done
or already queued, and submits the rest with the resources of a cluster profile
(:mod:`harness.cluster`):

- one SLURM job per :class:`~harness.jobs.plan.Job` (dataset preparation, one per (dataset,
  model, fold), the report); jobs with the same kind, the same resolved resources and the same
  unfinished dependencies go out together as one job array;
- dependencies as SLURM dependencies: a training after its dataset's preparation (and an UpKern
  kernel-5 run after the kernel-3 run of its dataset and fold) with ``afterok``, the report after
  every training with ``afterany`` (it reports failed cells instead of never running);
  ``--kill-on-invalid-dep`` so that the dependants of a failed job leave the queue;
- each SLURM job runs its job with ``python -m harness.jobs.worker`` under a submitit process
  (:class:`JobTask`). On SIGUSR2 (sent ``signal_delay_s`` before the time limit, or on
  preemption) submitit calls :meth:`JobTask.checkpoint`, which stops the worker and hands back
  the same task, and requeues the job; the new run resumes training from
  ``checkpoint_latest.pth``, written every epoch, so at most the epoch in flight is lost;
- every submission is recorded in ``work/jobs/<key>.json`` (:mod:`harness.jobs.tracking`), which
  makes a second ``submit`` skip what is done, pending or running.

submitit (1.5) is used as is; what it lacks and is done here: dependencies between its jobs,
grouping into arrays by resources, skip-done/skip-queued across separate submissions.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from submitit.helpers import Checkpointable, DelayedSubmission

from harness.cluster import ClusterProfile, Resources, load_cluster
from harness.io import write_json, write_text
from harness.jobs.plan import Job, job_status, plan_study
from harness.jobs.tracking import ACTIVE, queue_states, read_record, record_path, write_record


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
        env.setdefault("MEDNEXT_BENCH_THREADS", os.environ.get("SLURM_CPUS_PER_TASK")
                       or str(os.cpu_count() or 1))
        print(f"job {job.key} ({job.label}) attempt {self.attempt} on {socket.gethostname()}, "
              f"SLURM job {os.environ.get('SLURM_JOB_ID', '-')}", flush=True)
        _CHILD = subprocess.Popen([sys.executable, "-m", "harness.jobs.worker", str(job_file)],
                                  env=env, stdin=subprocess.DEVNULL, preexec_fn=_ignore_usr2)
        rc = _CHILD.wait()
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
    """SIGTERM the worker and reap it, SIGKILL after ``grace_s``.

    Runs inside a signal handler that may have interrupted ``Popen.wait()``, which holds the
    Popen's wait lock: so ``os.waitpid`` here, never ``Popen.wait``/``poll``.
    """
    child = _CHILD
    if child is None or child.returncode is not None:
        return
    try:
        os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while os.waitpid(child.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(child.pid, signal.SIGKILL)
                os.waitpid(child.pid, 0)
                break
            time.sleep(0.2)
    except (ProcessLookupError, ChildProcessError):
        pass                                  # already gone (and reaped)


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


# ---- choosing jobs ----------------------------------------------------------------------------

def select_jobs(jobs: list[Job], models=None, datasets=None, folds=None) -> list[Job]:
    """The train jobs matching every given filter, plus all they depend on, plus the report.

    ``datasets`` matches dataset (``phantom-btcv``) or task (``btcv``) names. The report, if any,
    keeps only the selected training jobs as dependencies. No filter: ``jobs`` unchanged.
    """
    if not (models or datasets or folds):
        return list(jobs)
    trains = [j for j in jobs if j.kind == "train"]
    for name, wanted, have in (
            ("model", models, {j.payload["spec"]["model"] for j in trains}),
            ("dataset", datasets, {j.payload["spec"][k] for j in trains for k in ("dataset", "task")}),
            ("fold", folds, {int(j.payload["spec"]["fold"]) for j in trains})):
        unknown = sorted(set(wanted or ()) - have, key=str)
        if unknown:
            raise ValueError(f"{name}(s) {unknown} not in this study; it has {sorted(have, key=str)}")

    def chosen(j: Job) -> bool:
        spec = j.payload["spec"]
        return ((not models or spec["model"] in models)
                and (not datasets or spec["dataset"] in datasets or spec["task"] in datasets)
                and (not folds or int(spec["fold"]) in {int(f) for f in folds}))

    by_key = {j.key: j for j in jobs}
    keep: set[str] = set()
    stack = [j.key for j in trains if chosen(j)]
    while stack:
        key = stack.pop()
        if key not in keep:
            keep.add(key)
            stack.extend(by_key[key].deps)
    out = []
    for j in jobs:
        if j.key in keep:
            out.append(j)
        elif j.kind == "report" and keep:
            out.append(Job(key=j.key, kind=j.kind, payload=j.payload, label=j.label,
                           deps=tuple(d for d in j.deps if d in keep)))
    return out


def job_resources(job: Job, cluster: ClusterProfile) -> Resources:
    if job.kind == "train":
        spec = job.payload["spec"]
        return cluster.resources_for("train", spec["model"], spec["dataset"], spec["task"])
    if job.kind == "prepare":
        return cluster.resources_for("prepare", None, job.payload.get("dataset"),
                                     job.payload.get("task"))
    return cluster.resources_for(job.kind)


# ---- submission -------------------------------------------------------------------------------

@dataclass
class Submission:
    """What :func:`submit_jobs` did. ``queued`` and ``submitted`` map job keys to SLURM ids."""

    cluster: str
    dry_run: bool = False
    done: list[str] = field(default_factory=list)
    queued: dict[str, str] = field(default_factory=dict)
    submitted: dict[str, str] = field(default_factory=dict)
    groups: list[dict] = field(default_factory=list)   # kind, keys, resources, dependency, job_id

    def __int__(self) -> int:
        """The command-line exit status: 0, everything is done, queued or submitted (a failed
        submission raises instead)."""
        return 0

    def summary(self) -> str:
        n = sum(len(g["keys"]) for g in self.groups)
        lines = [f"cluster {self.cluster}: "
                 + (f"dry run, {n} would be submitted" if self.dry_run else f"{n} submitted")
                 + f", {len(self.queued)} already queued or running, {len(self.done)} already done"]
        for g in self.groups:
            what = f"array of {len(g['keys'])}" if len(g["keys"]) > 1 else g["keys"][0]
            res = g["resources"]
            lines.append(f"  {g['job_id']:>8}  {g['kind']:<7} {what}  "
                         f"[{res.cpus} cpu, {res.gpus} gpu, {res.mem or 'default'} mem, "
                         f"{res.time_min} min]" + (f"  {g['dependency']}" if g["dependency"] else ""))
        return "\n".join(lines)


@contextlib.contextmanager
def client_environment(cluster: ClusterProfile):
    """SLURM_CONF of the profile for the sbatch/squeue/sacct that run inside the block."""
    env = cluster.client_env()
    old = os.environ.get("SLURM_CONF")
    if "SLURM_CONF" in env:
        os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    try:
        yield env
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def _dependency(dep_ids: list[str], after_any: bool, arrays: dict[str, set[str]]) -> str:
    """``afterok:12:13_0:13_1`` (``afterany`` for the report); a whole array by its root id."""
    ids, rest = [], set(dep_ids)
    for root, tasks in arrays.items():
        if tasks and tasks <= rest:
            ids.append(root)
            rest -= tasks
    ids += sorted(rest, key=lambda i: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", i)])
    return ("afterany:" if after_any else "afterok:") + ":".join(ids) if ids else ""


def submit_jobs(jobs: list[Job], cluster: ClusterProfile | str | None = None, *,
                dry_run: bool = False) -> Submission:
    """Submit every job that is neither done nor queued/running; see the module docstring."""
    cluster = load_cluster(cluster)
    by_key = {j.key: j for j in jobs}
    if len(by_key) != len(jobs):
        raise ValueError("job keys are not unique")
    for j in jobs:
        missing = [d for d in j.deps if d not in by_key]
        if missing:
            raise ValueError(f"job {j.key} depends on {missing}, which are not in the job list")
    sub = Submission(cluster=cluster.name, dry_run=dry_run)
    with client_environment(cluster) as env:
        status = {j.key: job_status(j) for j in jobs}
        recorded = {}
        for j in jobs:
            rec = read_record(j.work, j.key)
            if rec and rec.get("slurm", {}).get("job_id"):
                recorded[j.key] = rec["slurm"]["job_id"]
        states = queue_states(list(recorded.values()), env) if recorded else {}
        todo, will_run = [], set()
        for j in jobs:
            # A report made before some of its cells (re)run is stale once they end: it runs
            # again after them. Other done jobs stay done (their inputs are in their run id).
            stale = j.after_any and any(d in will_run for d in j.deps)
            if status[j.key] == "done" and not stale:
                sub.done.append(j.key)
                continue
            will_run.add(j.key)
            if states.get(recorded.get(j.key, "")) in ACTIVE:
                sub.queued[j.key] = recorded[j.key]
            else:
                todo.append(j)

        groups: dict[tuple, list[Job]] = {}
        for j in todo:
            res = job_resources(j, cluster)
            open_deps = tuple(sorted(d for d in j.deps if d in will_run))
            groups.setdefault((j.kind, res.signature(), open_deps, j.after_any), []).append(j)

        ids = dict(sub.queued)
        arrays: dict[str, set[str]] = {}
        # Groups in order of their first job: a valid order, since all jobs of a group share
        # their dependencies and those come before the group's first job in the plan.
        for (kind, _, open_deps, after_any), members in groups.items():
            res = job_resources(members[0], cluster)
            dep = _dependency([ids[d] for d in open_deps], after_any, arrays)
            group = {"kind": kind, "keys": [m.key for m in members], "resources": res,
                     "dependency": dep, "job_id": None}
            sub.groups.append(group)
            if dry_run:     # stand-in ids, so that the printed dependencies read as submitted
                group["job_id"] = f"g{len(sub.groups)}"
                fake = [group["job_id"]] if len(members) == 1 else \
                    [f"{group['job_id']}_{i}" for i in range(len(members))]
                ids.update({m.key: f for m, f in zip(members, fake)})
                if len(members) > 1:
                    arrays[group["job_id"]] = set(fake)
                continue
            submitted = _submit_group(members, res, dep, cluster)
            for m, sj in zip(members, submitted):
                ids[m.key] = sub.submitted[m.key] = sj.job_id
                write_record(m, {"job_id": sj.job_id, "cluster": cluster.name,
                                 "cluster_file": str(cluster.path) if cluster.path else None,
                                 "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                 "dependency": dep, "stdout": str(sj.paths.stdout),
                                 "stderr": str(sj.paths.stderr)})
            group["job_id"] = submitted[0].job_id.split("_")[0]
            if len(submitted) > 1:
                arrays[group["job_id"]] = {sj.job_id for sj in submitted}
    return sub


def _submit_group(members: list[Job], res: Resources, dependency: str,
                  cluster: ClusterProfile) -> list:
    from submitit import SlurmExecutor

    work = members[0].work
    folder = work / "jobs" / "slurm" / "%j"      # %j: for array tasks it is <array>_<task>
    executor = SlurmExecutor(folder=folder, max_num_timeout=cluster.max_requeues,
                             python=cluster.python)
    extra = {"kill-on-invalid-dep": "yes", **dict(res.sbatch)}
    params = dict(res.sbatch_parameters(), signal_delay_s=cluster.signal_delay_s,
                  setup=cluster.setup_lines(), array_parallelism=cluster.array_parallelism,
                  additional_parameters=extra,
                  job_name=(members[0].key if len(members) == 1
                            else f"{members[0].kind}[{len(members)}]")[:120])
    if dependency:
        params["dependency"] = dependency
    executor.update_parameters(**params)
    tasks = [JobTask(m.to_dict()) for m in members]
    if len(tasks) == 1:
        return [executor.submit(tasks[0])]
    with executor.batch():
        jobs = [executor.submit(t) for t in tasks]
    return jobs


def submit_study(study: str, profile: str, work: Path | str, data: Path | str | None = None,
                 cluster: ClusterProfile | str | None = None, *, models=None, datasets=None,
                 folds=None, dry_run: bool = False, results: Path | None = None,
                 echo: bool = True) -> Submission:
    """Plan ``study`` under ``profile`` and submit what is not done to ``cluster``.

    ``cluster`` is a profile name (``clusters/<name>.toml``), a path, or None for
    ``$MEDNEXT_BENCH_CLUSTER`` / ``local``. ``models``, ``datasets``, ``folds`` restrict the grid
    (see :func:`select_jobs`). ``echo`` prints :meth:`Submission.summary`.

    Example::

        sub = submit_study("table2", "paper", "work", "/data/converted", "mysite")
        print(sub.summary())
    """
    jobs = plan_study(study, profile, Path(work), Path(data) if data else None, results=results)
    sub = submit_jobs(select_jobs(jobs, models, datasets, folds), cluster, dry_run=dry_run)
    if echo:
        print(sub.summary(), flush=True)
    return sub


def wait_for(sub: Submission, cluster: ClusterProfile | str | None = None, *,
             timeout_s: float | None = None, poll_s: float = 10.0) -> dict[str, str]:
    """Block until no job of ``sub`` is pending or running; returns the last SLURM states."""
    cluster = load_cluster(cluster)
    ids = {**sub.queued, **sub.submitted}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with client_environment(cluster) as env:
        while True:
            states = queue_states(list(ids.values()), env)
            active = {k: states.get(i) for k, i in ids.items() if states.get(i) in ACTIVE}
            if not active:
                return {k: states.get(i, "UNKNOWN") for k, i in ids.items()}
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{len(active)} job(s) still pending or running after "
                                   f"{timeout_s:.0f} s: {sorted(active)[:5]}")
            time.sleep(poll_s)
