"""The job graph of a study: what has to run, in which order, and whether it already ran.

A study (``table2``, ``ablations``) under a profile (``paper``, ``quick``, ``smoke``) becomes a list
of :class:`Job` in topological order:

- ``prepare:<dataset>-<fingerprint>`` -- one version of a dataset's data into its own data root
  ``work/datasets/<dataset>-<fingerprint>/`` (phantom generated, or real data linked from
  ``--data`` and used in place, never copied, moved or deleted), validated, planned once with
  nnU-Net v2 and the protocol imposed (1 mm isotropic), preprocessed once, ``splits_final.json``
  written. Every model of the dataset shares it.
- ``prepare:<dataset>-<fingerprint>-<plans name>`` -- only for a model that trains with what an
  nnU-Net planner plans itself (``nnunet-resenc-l-native``): that planner's plans and
  preprocessing in the same data root, after the dataset's own prepare job.
- ``train:<run_id>``     -- one cell (dataset, model, fold): train, predict the fold's validation
  cases in original geometry, per-case metrics. Depends on its ``prepare`` job and, for UpKern and
  "continue" runs, on the ``train`` job of the run it starts from (same dataset, fold, profile).
- ``report:<study>-<profile><suffix>`` -- the reports in ``results/<study>-<profile><suffix>/``
  (the suffix names the options that differ from the paper's protocol,
  :meth:`harness.studies.options.RunOptions.suffix`; empty under the defaults). It lists every
  train job in ``deps`` but, unlike the others, it runs once they have *ended*, whatever their
  outcome (``Job.after_any``): the report names failed and missing cells instead of vanishing.

Backends (``harness.jobs.local``, ``harness.jobs.slurm``) only need this module: ``plan_study`` to
get the graph, ``job_status`` to skip finished work, and ``execute`` (in a fresh process, through
``python -m harness.jobs.worker JOB_JSON_FILE``) to do one job. ``execute`` is idempotent: a done
job returns at once, an interrupted train job resumes from ``checkpoint_latest.pth`` (this is how a
SLURM requeue resumes), so backends may re-run anything that is not ``done``.

One job runs in one process at a time: ``execute`` holds the job's OS lock
(:mod:`harness.jobs.locks`, ``work/locks/<job>.lock``) for the whole job and decides what to do
only once it holds it. A job whose lock another process holds reads as ``running``, wherever that
process runs; one whose ``run.json`` says running but whose lock is free was killed, and reads as
``pending`` (executing it resumes it).

This follows the paper's protocol (Sect. 3.1) as a graph; the paper has no such layer.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError
from harness.jobs.files import lock_path, log_path, run_status, safe_name  # noqa: F401 (API)
from harness.jobs.locks import JobLock, is_locked
from harness.ownership import ensure_folder
from harness.studies import load_profile, load_study, results_root
from harness.studies.options import RunOptions
from harness.studies.runs import (PlannedRun, data_root, recorded_sources, resolve_sources,
                                  run_chain, run_plan)

KINDS = ("prepare", "train", "report")
STATUSES = ("done", "failed", "running", "pending")


@dataclass(frozen=True)
class Job:
    """One unit of work, JSON-serialisable so that any backend can ship it to another process.

    Args:
        key: unique and stable: ``"prepare:<dataset>-<fingerprint12>"``, ``"train:<run_id>"``,
            ``"report:<study>-<profile>"``.
        kind: ``"prepare"`` | ``"train"`` | ``"report"``.
        payload: everything :func:`execute` needs (JSON types only, absolute ``work`` folder).
        deps: keys of jobs that must have finished successfully first (for a ``report`` job: that
            must have ended, see :attr:`after_any`).
        label: for humans, e.g. ``"phantom-btcv / mednext-s-k5 / fold 0"``.

    Example::

        Job(key="prepare:phantom-btcv-3f2a9c01d4e5", kind="prepare", payload={"work": "/abs/work", ...},
            deps=(), label="phantom-btcv / prepare")
    """

    key: str
    kind: str
    payload: dict = field(hash=False, compare=True)
    deps: tuple[str, ...] = ()
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Job kind {self.kind!r} is not one of {KINDS}")
        if not self.key.startswith(self.kind + ":"):
            raise ValueError(f"Job key {self.key!r} must start with {self.kind + ':'!r}")
        if not isinstance(self.payload, dict) or "work" not in self.payload:
            raise ValueError(f"Job {self.key!r}: payload must be a dict with an absolute 'work'")
        if not Path(self.payload["work"]).is_absolute():
            raise ValueError(f"Job {self.key!r}: work folder {self.payload['work']!r} is not absolute")
        if isinstance(self.deps, list):
            object.__setattr__(self, "deps", tuple(self.deps))

    @property
    def after_any(self) -> bool:
        """True for jobs that run after their deps end, failed or not (the report)."""
        return self.kind == "report"

    @property
    def work(self) -> Path:
        return Path(self.payload["work"])

    def to_dict(self) -> dict:
        return {"key": self.key, "kind": self.kind, "payload": self.payload,
                "deps": list(self.deps), "label": self.label}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        return cls(key=d["key"], kind=d["kind"], payload=d["payload"],
                   deps=tuple(d.get("deps", ())), label=d.get("label", ""))

    @classmethod
    def from_json(cls, text: str) -> "Job":
        return cls.from_dict(json.loads(text))


class JobBusy(RuntimeError):
    """The job's lock is held by another process: it is running elsewhere."""


def index_jobs(jobs: list[Job]) -> dict[str, Job]:
    """Jobs by key, checking that keys are unique and every dependency is in the plan."""
    by_key = {j.key: j for j in jobs}
    if len(by_key) != len(jobs):
        raise ValueError("job keys are not unique")
    for j in jobs:
        missing = [d for d in j.deps if d not in by_key]
        if missing:
            raise ValueError(f"job {j.key} depends on {missing}, which are not in the plan")
    return by_key


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
            raise UserError(f"{name}(s) {unknown} not in this study; it has {sorted(have, key=str)}")

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


def _tasks(study_datasets, prof, datasets) -> list[str]:
    """The study's tasks, restricted to ``datasets`` (task or dataset names) when given."""
    if not datasets:
        return list(study_datasets)
    names = {t: {t, prof.dataset_name(t)} for t in study_datasets}
    unknown = sorted(set(datasets) - set().union(*names.values()))
    if unknown:
        raise UserError(f"dataset(s) {unknown} not in this study; it has "
                        f"{sorted(prof.dataset_name(t) for t in study_datasets)}")
    return [t for t in study_datasets if names[t] & set(datasets)]


def plan_study(study: str, profile: str, work: Path, data: Path | None = None, *,
               results: Path | None = None, datasets=None,
               options: RunOptions | None = None) -> list[Job]:
    """The jobs of ``study`` under ``profile``, in topological order (deps always come first).

    ``data`` is the folder of converted raw datasets (``Dataset501_BTCV`` ...) for real-data
    profiles: each dataset is fingerprinted (cached; the first time reads every file once) and
    its fingerprint is part of every run id. Phantom profiles generate their data and ignore it.
    ``datasets`` restricts the plan to those tasks (only they need to exist). ``results``
    defaults to :func:`harness.studies.results_root`. ``options`` (recipe, BraTS target, compile,
    precision) default to the paper's protocol and the profile's settings.
    """
    st, prof = load_study(study), load_profile(profile)
    options = (options or RunOptions()).resolved(prof)
    name = options.report_name(study, prof)
    work = Path(work).resolve()
    if prof.data == "real" and data is None:
        raise UserError(f"profile {profile!r} trains on real data: pass --data DIR "
                        "(a folder of converted nnU-Net raw datasets)")
    tasks = _tasks(st.datasets, prof, datasets)
    ensure_folder(work, "work folder")
    sources = resolve_sources(tasks, prof, work, data if prof.data == "real" else None)
    results_dir = (Path(results).resolve() if results else results_root()) / name

    jobs = [make_prepare_job(t, prof, work, sources[t], data) for t in tasks]
    train_keys: list[str] = []
    sub = dataclasses.replace(st, datasets=tuple(tasks))
    runs = run_plan(sub, prof, sources, options)
    jobs += _planner_jobs(runs, prof, work, sources, data)
    for run in runs:  # UpKern/continue sources come first
        jobs.append(make_train_job(run, prof, work))
        train_keys.append(jobs[-1].key)
    report_sources = {**recorded_sources(st.datasets, prof, work), **sources}
    jobs.append(Job(
        key=f"report:{name}", kind="report",
        payload={"work": str(work), "study": study, "profile": profile,
                 "results": str(results_dir), "sources": report_sources,
                 "options": options.to_dict()},
        deps=tuple(train_keys), label=f"{study} / {profile}{options.suffix(prof)} / report"))
    return jobs


def plan_cell(task: str, model: str, fold: int, profile: str, work: Path,
              data: Path | None = None, options: RunOptions | None = None) -> list[Job]:
    """The jobs of one cell alone: its dataset's prepare job, the runs it starts from, the run."""
    prof = load_profile(profile)
    work = Path(work).resolve()
    if prof.data == "real" and data is None:
        raise UserError(f"profile {profile!r} trains on real data: pass --data DIR")
    ensure_folder(work, "work folder")
    source = resolve_sources([task], prof, work, data if prof.data == "real" else None)[task]
    runs = run_chain(task, model, fold, prof, source, options)
    return [make_prepare_job(task, prof, work, source, data)] + \
        _planner_jobs(runs, prof, work, {task: source}, data) + \
        [make_train_job(run, prof, work) for run in runs]


def prepare_key(dataset: str, source: dict, plans: dict | None = None) -> str:
    key = f"prepare:{dataset}-{source['fingerprint'][:12]}"
    return f"{key}-{plans['plans_name']}" if plans else key


def make_prepare_job(task: str, prof, work: Path, source: dict, data: Path | None = None,
                     plans: dict | None = None) -> Job:
    """The ``prepare`` job of ``task``'s dataset (``source``: its data block) under ``prof``;
    with ``plans`` (a registry entry's planner), that planner's preparation, after the first."""
    dataset = prof.dataset_name(task)
    path = str((Path(data) / source["folder"]).resolve()) if source["source"] == "real" else None
    payload = {"work": str(work), "dataset": dataset, "task": task,
               "profile": prof.name, "data": source, "source_path": path}
    if plans:
        return Job(key=prepare_key(dataset, source, plans), kind="prepare",
                   payload={**payload, "plans": dict(plans)},
                   deps=(prepare_key(dataset, source),),
                   label=f"{dataset} / prepare {plans['planner']}")
    return Job(key=prepare_key(dataset, source), kind="prepare", payload=payload,
               deps=(), label=f"{dataset} / prepare")


def _planner_jobs(runs, prof, work: Path, sources, data: Path | None) -> list[Job]:
    """One planner ``prepare`` job per (dataset, planner) that ``runs`` train with."""
    out: dict[str, Job] = {}
    for run in runs:
        plans = run.spec.profile.get("plans")
        if plans:
            job = make_prepare_job(run.spec.task, prof, work, sources[run.spec.task], data, plans)
            out.setdefault(job.key, job)
    return list(out.values())


def make_train_job(run: PlannedRun, prof, work: Path) -> Job:
    """The ``train`` job of one planned run (``harness.studies.runs.run_plan`` / ``run_chain``)."""
    spec = run.spec
    deps = [prepare_key(spec.dataset, spec.data)]
    if spec.profile.get("plans"):
        deps.append(prepare_key(spec.dataset, spec.data, spec.profile["plans"]))
    if spec.init is not None:
        deps.append(f"train:{spec.init['run_id']}")
    return Job(key=f"train:{spec.run_id}", kind="train",
               payload={"work": str(work), "run_id": spec.run_id, "spec": spec.to_dict(),
                        "profile": prof.name, "in_study": run.in_study},
               deps=tuple(deps), label=f"{spec.dataset} / {spec.model} / fold {spec.fold}")


def job_data_root(job: Job) -> Path:
    """The data root a prepare or train job works in."""
    if job.kind == "prepare":
        return data_root(job.work, job.payload["dataset"], job.payload["data"])
    spec = job.payload["spec"]
    return data_root(job.work, spec["dataset"], spec["data"])


def execute(job: Job, *, wait_lock: bool = False) -> None:
    """Do ``job`` in the current process, holding its lock. Returns at once if it is done;
    raises on failure, and :class:`JobBusy` when another process holds the lock (unless
    ``wait_lock``, which waits for it, then finds the job done or takes it over).

    Call it under ``if __name__ == "__main__":`` (nnU-Net's pools use spawn): the worker does.
    """
    lock = JobLock(lock_path(job.work, job.key))

    def waiting():
        print(f"job {job.key} is running in another process: waiting for {lock.path}", flush=True)

    if not lock.acquire(wait=wait_lock, on_wait=waiting):
        raise JobBusy(f"job {job.key} is running in another process (lock {lock.path} is held)")
    try:
        if job.kind == "prepare":
            from harness.jobs.prepare import prepare_dataset
            prepare_dataset(job.payload)
        elif job.kind == "train":
            from harness.jobs.train import train_job
            train_job(job.payload)
        elif job.kind == "report":
            from harness.jobs.reporting import report_job
            report_job(job.payload)
        else:  # unreachable: Job validates kind
            raise ValueError(f"unknown job kind {job.kind!r}")
    finally:
        lock.release()


def job_status(job: Job) -> str:
    """``"done"`` | ``"failed"`` | ``"running"`` | ``"pending"``, read from the work folder."""
    if job.kind == "train":
        return run_status(job.work, job.payload["run_id"])
    if is_locked(lock_path(job.work, job.key)):
        return "running"
    if job.kind == "prepare":
        from harness.jobs.prepare import prepare_status
        return prepare_status(job.payload)
    from harness.jobs.reporting import report_status
    return report_status(job.payload)
