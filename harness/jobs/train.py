"""The ``train:<run_id>`` job: train one cell, predict its validation cases, score them.

``work/runs/<run_id>/`` receives ``run.json`` (spec and provenance, kept current), ``progress.csv``,
the checkpoints, ``predictions/<case>.nii.gz`` (the fold's validation cases at their original
geometry, paper Sect. 3.1) and ``metrics.csv`` (the long per-case table of ``harness.metrics``).
``progress.json`` (phase, step, total) lets a launcher draw a bar for the run.

Idempotent: a done run returns at once; an interrupted one resumes training from its last
checkpoint and then predicts and scores again; a failed one is retried the same way.
"""
from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

from harness.io import write_json
from harness.provenance import RunRecord, run_id
from harness.jobs.runs import run_status


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


def _validation_cases(work: Path, folder: str, fold: int) -> list[str]:
    path = work / "nnUNet_preprocessed" / folder / "splits_final.json"
    splits = json.loads(path.read_text())
    if fold >= len(splits):
        raise ValueError(f"{path} has {len(splits)} folds; fold {fold} does not exist")
    return list(splits[fold]["val"])


def train_job(payload: dict) -> None:
    """Execute a ``train`` job (see the module docstring)."""
    from harness import registry
    from harness.datasets import task_spec
    from harness.nnunet.env import configure

    work = Path(payload["work"])
    spec, rid = payload["spec"], payload["run_id"]
    if run_id(spec) != rid:
        raise ValueError(f"job payload: run_id {rid!r} is not the hash of its spec ({run_id(spec)!r})")
    run_dir = work / "runs" / rid
    if run_status(run_dir) == "done":
        return
    configure(work)
    run_dir.mkdir(parents=True, exist_ok=True)
    entry = registry.get(spec["model"])
    rec = RunRecord(run_dir, spec, rid, extra={
        "label": f"{spec['dataset']} / {spec['model']} / fold {spec['fold']}",
        "model_entry": entry.to_dict()})
    rec.start()
    progress = ProgressFile(run_dir / "progress.json")
    timings: dict[str, float] = {}
    try:
        from harness.nnunet.inference import build_predictor, case_files, load_weights, predict_cases
        from harness.nnunet.training import load_plans, train

        t0 = time.time()
        info = train(spec, run_dir, work, progress)
        timings["train_seconds"] = round(time.time() - t0, 2)
        rec.update(training=info)

        t0 = time.time()
        ds = task_spec(spec["dataset"])
        raw = work / "nnUNet_raw" / ds.folder
        cases = _validation_cases(work, ds.folder, int(spec["fold"]))
        plans, cfg, dataset_json = load_plans(spec)
        predictor = build_predictor(spec, plans, cfg, dataset_json,
                                    [load_weights(run_dir / "checkpoint_final.pth")])
        files = case_files(raw / "imagesTr", dataset_json["file_ending"], ds.num_channels, cases)
        predict_cases(predictor, files, run_dir / "predictions", progress)
        timings["predict_seconds"] = round(time.time() - t0, 2)

        t0 = time.time()
        from harness.metrics.evaluate import evaluate_run
        evaluate_run(raw / "labelsTr", run_dir / "predictions", cases, spec["dataset"],
                     {"run_id": rid, "dataset": spec["dataset"], "model": spec["model"],
                      "fold": int(spec["fold"])},
                     run_dir / "metrics.csv",
                     workers=1 if spec["profile"]["data"] == "phantom" else None)
        timings["evaluate_seconds"] = round(time.time() - t0, 2)
        rec.finish("done", validation_cases=cases, timings=timings)
    except BaseException as exc:
        rec.finish("failed", error=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc(limit=20), timings=timings)
        raise
