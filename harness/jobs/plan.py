"""The job graph of a study: what has to run, in which order, and whether it already ran.

A study (``table2``, ``ablations``) under a profile (``paper``, ``quick``, ``smoke``) becomes a list
of :class:`Job` in topological order:

- ``prepare:<dataset>``  -- raw data into ``work/nnUNet_raw`` (phantom generated, or linked from
  ``--data``), validated, planned once with nnU-Net v2 and the protocol imposed (1 mm isotropic),
  preprocessed once, ``splits_final.json`` written. Every model of the dataset shares it.
- ``train:<run_id>``     -- one cell (dataset, model, fold): train, predict the fold's validation
  cases in original geometry, per-case metrics. Depends on its ``prepare`` job and, for UpKern and
  "continue" runs, on the ``train`` job of the run it starts from (same dataset, fold, profile).
- ``report:<study>-<profile>`` -- the reports in ``results/<study>-<profile>/``. It lists every
  train job in ``deps`` but, unlike the others, it runs once they have *ended*, whatever their
  outcome (``Job.after_any``): the report names failed and missing cells instead of vanishing.

Backends (``harness.jobs.local``, ``harness.jobs.slurm``) only need this module: ``plan_study`` to
get the graph, ``job_status`` to skip finished work, and ``execute`` (in a fresh process, through
``python -m harness.jobs.worker JOB_JSON_FILE``) to do one job. ``execute`` is idempotent: a done
job returns at once, an interrupted train job resumes from ``checkpoint_latest.pth`` (this is how a
SLURM requeue resumes), so backends may re-run anything that is not ``done``.

This follows the paper's protocol (Sect. 3.1) as a graph; the paper has no such layer.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.studies import load_profile, load_study

KINDS = ("prepare", "train", "report")
STATUSES = ("done", "failed", "running", "pending")


@dataclass(frozen=True)
class Job:
    """One unit of work, JSON-serialisable so that any backend can ship it to another process.

    Args:
        key: unique and stable: ``"prepare:<dataset>"``, ``"train:<run_id>"``,
            ``"report:<study>-<profile>"``.
        kind: ``"prepare"`` | ``"train"`` | ``"report"``.
        payload: everything :func:`execute` needs (JSON types only, absolute ``work`` folder).
        deps: keys of jobs that must have finished successfully first (for a ``report`` job: that
            must have ended, see :attr:`after_any`).
        label: for humans, e.g. ``"phantom-btcv / mednext-s-k5 / fold 0"``.

    Example::

        Job(key="prepare:phantom-btcv", kind="prepare", payload={"work": "/abs/work", ...},
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


def default_results_root() -> Path:
    """Where reports go: ``$MEDNEXT_BENCH_RESULTS`` or ``./results``."""
    return Path(os.environ.get("MEDNEXT_BENCH_RESULTS", "results")).resolve()


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


def plan_study(study: str, profile: str, work: Path, data: Path | None = None, *,
               results: Path | None = None) -> list[Job]:
    """The jobs of ``study`` under ``profile``, in topological order (deps always come first).

    ``data`` is the folder of converted raw datasets (``Dataset501_BTCV`` ...) for real-data
    profiles; phantom profiles generate their data and ignore it. ``results`` defaults to
    :func:`default_results_root`.
    """
    from harness.jobs.runs import run_plan

    st, prof = load_study(study), load_profile(profile)
    work = Path(work).resolve()
    if prof.data == "real" and data is None:
        raise ValueError(f"profile {profile!r} trains on real data: pass --data DIR "
                         "(a folder of converted nnU-Net raw datasets)")
    data_abs = str(Path(data).resolve()) if (data is not None and prof.data == "real") else None
    results_dir = (Path(results).resolve() if results else default_results_root()) / f"{study}-{profile}"

    jobs = [make_prepare_job(task, prof, work, data_abs) for task in st.datasets]
    train_keys: list[str] = []
    for run in run_plan(st, prof):       # sources of UpKern/continue come before their users
        jobs.append(make_train_job(run, prof, work))
        train_keys.append(jobs[-1].key)
    jobs.append(Job(
        key=f"report:{study}-{profile}", kind="report",
        payload={"work": str(work), "study": study, "profile": profile,
                 "results": str(results_dir)},
        deps=tuple(train_keys), label=f"{study} / {profile} / report"))
    return jobs


def plan_cell(task: str, model: str, fold: int, profile: str, work: Path,
              data: Path | None = None) -> list[Job]:
    """The jobs of one cell alone: its dataset's prepare job, the runs it starts from, the run."""
    from harness.jobs.runs import run_chain

    prof = load_profile(profile)
    work = Path(work).resolve()
    if prof.data == "real" and data is None:
        raise ValueError(f"profile {profile!r} trains on real data: pass --data DIR")
    data_abs = str(Path(data).resolve()) if (data is not None and prof.data == "real") else None
    return [make_prepare_job(task, prof, work, data_abs)] + \
        [make_train_job(run, prof, work) for run in run_chain(task, model, fold, prof)]


def make_prepare_job(task: str, prof, work: Path, data_abs: str | None) -> Job:
    """The ``prepare`` job of ``task``'s dataset under the profile ``prof`` (a ``Profile``)."""
    dataset = prof.dataset_name(task)
    return Job(key=f"prepare:{dataset}", kind="prepare",
               payload={"work": str(work), "data": data_abs, "dataset": dataset, "task": task,
                        "profile": prof.name},
               deps=(), label=f"{dataset} / prepare")


def make_train_job(run: dict, prof, work: Path) -> Job:
    """The ``train`` job of one run (a dict of ``runs.run_plan`` / ``runs.run_chain``)."""
    deps = [f"prepare:{run['dataset']}"]
    if run["spec"]["init"] is not None:
        deps.append(f"train:{run['spec']['init']['run_id']}")
    return Job(key=f"train:{run['run_id']}", kind="train",
               payload={"work": str(work), "run_id": run["run_id"], "spec": run["spec"],
                        "profile": prof.name, "in_study": run["in_study"]},
               deps=tuple(deps), label=f"{run['dataset']} / {run['model']} / fold {run['fold']}")


def expected_runs(study: str, profile: str, work: Path) -> list[dict]:
    """The cells a study declares under a profile: one dict per (dataset, model, fold).

    Keys: ``run_id``, ``dataset``, ``task``, ``model``, ``fold``, ``run_dir`` (absolute). Only the
    study's own rows (a k3 source run that the study does not list is not a cell of it).
    """
    from harness.jobs.runs import run_plan

    work = Path(work).resolve()
    out = []
    for run in run_plan(load_study(study), load_profile(profile)):
        if not run["in_study"]:
            continue
        out.append({"run_id": run["run_id"], "dataset": run["dataset"], "task": run["task"],
                    "model": run["model"], "fold": run["fold"],
                    "run_dir": str(work / "runs" / run["run_id"])})
    return out


def execute(job: Job) -> None:
    """Do ``job`` in the current process. Returns at once if it is done; raises on failure.

    Call it under ``if __name__ == "__main__":`` (nnU-Net's pools use spawn): the worker does.
    """
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


def job_status(job: Job) -> str:
    """``"done"`` | ``"failed"`` | ``"running"`` | ``"pending"``, read from the work folder.

    A train run whose ``run.json`` says "running" but whose process is gone (same host, dead pid:
    it was killed) reads as ``"pending"``: executing it again resumes it.
    """
    if job.kind == "prepare":
        from harness.jobs.prepare import prepare_status
        return prepare_status(job.payload)
    if job.kind == "train":
        from harness.jobs.runs import run_status
        return run_status(Path(job.payload["work"]) / "runs" / job.payload["run_id"])
    from harness.jobs.reporting import report_status
    return report_status(job.payload)
