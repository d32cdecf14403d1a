"""The ``train:<run_id>`` job: train one cell, predict its validation cases, score them.

``work/runs/<run_id>/`` receives ``run.json`` (spec and provenance, one entry per attempt, kept
current), ``progress.csv``, the checkpoints, ``predictions/<case>.nii.gz`` (the fold's validation
cases at their original geometry, paper Sect. 3.1) and ``metrics.csv`` (the long per-case table of
``harness.metrics``). ``progress.json`` (phase, step, total) lets a launcher draw a bar for the run.

Idempotent: a done run returns at once; an interrupted one resumes training from its last
checkpoint, predicts the cases it has no prediction of yet (each is written atomically) and
scores again; a failed one is retried the same way. The caller holds the run's lock
(:func:`harness.jobs.plan.execute`), so no other process works on the run meanwhile.
"""
from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

from harness.errors import UserError
from harness.io import write_json
from harness.jobs.files import run_status
from harness.processes import Terminated
from harness.provenance import RunRecord
from harness.studies.runs import RunSpec, data_root

HEARTBEAT_S = 30.0


class ProgressFile:
    """``progress.json``: what the run is doing now, for a bar drawn by another process."""

    def __init__(self, path: Path, min_interval: float = 0.5):
        self.path, self.min_interval, self._last = Path(path), min_interval, 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.time()
        if done < total and now - self._last < self.min_interval:
            return
        self._last = now
        write_json(self.path, {"phase": phase, "done": int(done), "total": int(total), "time": now})


def _validation_cases(pre: Path, fold: int) -> list[str]:
    path = pre / "splits_final.json"
    splits = json.loads(path.read_text())
    if fold >= len(splits):
        raise ValueError(f"{path} has {len(splits)} folds; fold {fold} does not exist")
    return list(splits[fold]["val"])


def _check_prepared(root: Path, spec: RunSpec) -> None:
    """The data root must hold the data this run's id names (its fingerprint), prepared for
    every training target of the dataset (BraTS21: labels and regions)."""
    from harness.datasets import task_spec
    from harness.jobs.prepare import is_prepared, read_stamp

    stamp = read_stamp(root, spec.data["folder"])
    if not is_prepared(stamp, spec.data, task_spec(spec.dataset)):
        raise UserError(f"{spec.dataset} (data {spec.data['fingerprint'][:12]}) is not prepared in "
                        f"{root}: run its prepare job first (`mednext-bench run` or `train` do)")
    plans = spec.profile.get("plans")
    if plans:
        from harness.jobs.prepare import is_native_prepared, read_native_stamp
        stamp = read_native_stamp(root, spec.data["folder"], plans)
        if not is_native_prepared(stamp, spec.data, task_spec(spec.dataset), plans):
            raise UserError(f"{spec.dataset} (data {spec.data['fingerprint'][:12]}) is not planned "
                            f"by {plans['planner']} in {root}: run its prepare job first "
                            "(`mednext-bench run` or `train` do)")


def _planned_network(spec: RunSpec, configuration: dict) -> dict:
    """For a run with a planner's configuration: the predicting network's parameters and GMACs
    at the planned patch and spacing (``harness.registry.compute_summary``)."""
    from harness import registry
    from harness.datasets import task_spec

    ds = task_spec(spec.dataset)
    return registry.compute_summary(spec.model, ds.num_channels,
                                    ds.num_outputs(spec.settings.get("brats_target")),
                                    configuration["patch"], configuration["spacing"])


def _merged_training(attempts: list[dict], current: dict) -> dict:
    """What the run's training did over all its attempts."""
    infos = [a.get("training") or {} for a in attempts[:-1]] + [current]
    last = next((i for i in reversed(infos) if i.get("epochs") is not None), {})
    return {"epochs": last.get("epochs"), "parameters": last.get("parameters"),
            "init_from": next((i["init_from"] for i in infos if i.get("init_from")), None),
            "resumed_from_epochs": [i["resumed_from_epoch"] for i in infos
                                    if i.get("resumed_from_epoch") is not None],
            "attempts_that_trained": sum(1 for i in infos if i.get("trained")),
            "nonfinite_steps_skipped": sum((i.get("execution") or {}).get("nonfinite_steps_skipped", 0)
                                           for i in infos)}


def train_job(payload: dict) -> None:
    """Execute a ``train`` job (see the module docstring)."""
    from harness import registry
    from harness.datasets import task_spec
    from harness.nnunet.env import configure

    work = Path(payload["work"])
    spec, rid = RunSpec.from_dict(payload["spec"]), payload["run_id"]
    if spec.run_id != rid:
        raise ValueError(f"job payload: run_id {rid!r} is not the hash of its spec ({spec.run_id!r})")
    run_dir = work / "runs" / rid
    if run_status(work, rid) == "done":
        return
    root = data_root(work, spec.dataset, spec.data)
    _check_prepared(root, spec)
    configure(root)
    run_dir.mkdir(parents=True, exist_ok=True)
    entry = registry.get(spec.model)
    rec = RunRecord(run_dir, spec.to_dict(), rid, extra={
        "label": f"{spec.dataset} / {spec.model} / fold {spec.fold}",
        "model_entry": entry.to_dict()})
    rec.start()
    progress = ProgressFile(run_dir / "progress.json")
    timings: dict[str, float] = {}
    info: dict = {}
    plain = spec.to_dict()
    t_train = time.time()
    last_beat = [t_train]

    def on_progress(phase: str, done: int, total: int) -> None:
        progress(phase, done, total)
        now = time.time()
        if phase == "train" and (now - last_beat[0] >= HEARTBEAT_S or done == total):
            last_beat[0] = now
            rec.heartbeat(timings={"train_seconds": round(now - t_train, 2)})

    try:
        from harness.nnunet.inference import build_predictor, case_files, load_weights, predict_cases
        from harness.nnunet.training import load_plans, train, trained_configuration

        info = train(plain, run_dir, work, on_progress)
        timings["train_seconds"] = round(time.time() - t_train, 2)
        rec.heartbeat(training=info, timings=dict(timings))

        t0 = time.time()
        ds = task_spec(spec.dataset)
        raw = root / "nnUNet_raw" / ds.folder
        cases = _validation_cases(root / "nnUNet_preprocessed" / ds.folder, spec.fold)
        plans, cfg, dataset_json = load_plans(plain)
        configuration = trained_configuration(plans, cfg)
        if spec.profile.get("plans"):
            configuration["network"] = _planned_network(spec, configuration)
        rec.update(configuration=configuration)
        ending = dataset_json["file_ending"]
        todo = [c for c in cases if not (run_dir / "predictions" / f"{c}{ending}").is_file()]
        if todo:
            predictor = build_predictor(plain, plans, cfg, dataset_json,
                                        [load_weights(run_dir / "checkpoint_final.pth")])
            files = case_files(raw / "imagesTr", ending, ds.num_channels, todo)
            predict_cases(predictor, files, run_dir / "predictions", progress)
        timings["predict_seconds"] = round(time.time() - t0, 2)

        t0 = time.time()
        from harness.metrics.evaluate import evaluate_run
        evaluate_run(raw / "labelsTr", run_dir / "predictions", cases, spec.dataset,
                     {"run_id": rid, "dataset": spec.dataset, "model": spec.model,
                      "fold": int(spec.fold)},
                     run_dir / "metrics.csv",
                     workers=1 if spec.data["source"] == "phantom" else None)
        timings["evaluate_seconds"] = round(time.time() - t0, 2)
        rec.update(validation_cases=cases,
                   training=_merged_training(rec.data["attempts"], info))
        rec.finish("done", training=info, timings=timings)
    except BaseException as exc:
        if not info:        # stopped while training: the time was spent all the same
            timings["train_seconds"] = round(time.time() - t_train, 2)
        if isinstance(exc, (KeyboardInterrupt, Terminated)):
            rec.finish("interrupted", reason=f"{type(exc).__name__}: {exc}".rstrip(": "),
                       training=info or None, timings=timings)
            raise
        rec.finish("failed", error=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc(limit=20), training=info or None,
                   timings=timings)
        raise
