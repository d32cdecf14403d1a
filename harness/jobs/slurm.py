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
  (:mod:`harness.jobs.slurm_task`). On SIGUSR2 (sent ``signal_delay_s`` before the time limit,
  or on preemption) the task stops the worker, hands itself back and the job is requeued; the
  new run resumes training from ``checkpoint_latest.pth``, written every epoch, so at most the
  epoch in flight is lost;
- every submission is recorded in ``work/jobs/<key>.json`` (:mod:`harness.jobs.tracking`), which
  makes a second ``submit`` skip what is done, pending or running.

submitit (1.5) is used as is; what it lacks and is done here: dependencies between its jobs,
grouping into arrays by resources, skip-done/skip-queued across separate submissions.
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.cluster import ClusterProfile, Resources, check_script_value, load_cluster
from harness.jobs.plan import Job, index_jobs, job_status, plan_study, select_jobs
from harness.jobs.slurm_task import JobTask
from harness.jobs.tracking import ACTIVE, queue_states, read_record, write_record


# ---- resources --------------------------------------------------------------------------------

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
    index_jobs(jobs)  # unique keys, closed dependencies
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
    for key in ("job_name", "dependency"):
        if key in params:
            check_script_value(params[key], key.replace("_", " "), str(work / "jobs"))
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
    jobs = plan_study(study, profile, Path(work), Path(data) if data else None, results=results,
                      datasets=datasets)
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
