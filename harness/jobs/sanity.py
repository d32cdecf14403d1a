"""Learning sanity benchmark: does the harness learn? (``mednext-bench sanity``, ``make sanity``)

MedNeXt-S (kernel 3) and nnU-Net train on the KiTS19 phantom with the ``sanity`` profile, one
after the other so that each has the whole machine, and are scored on their fold-0 validation
cases like any run. The budget is the same *time* for both, five minutes of training on a 2-core
CPU, not the same number of iterations: an nnU-Net iteration costs about half a MedNeXt-S
iteration there (0.55 s vs 0.9 s at 32^3, batch 2), so nnU-Net gets ``EPOCHS_FACTOR`` times the
profile's epochs (its SGD with momentum 0.99 also needs about 150 iterations before its first
non-zero kidney Dice). The target: a validation kidney Dice of at least 0.85 with at most five
minutes of training each. It prints its figures and writes ``results/sanity.csv`` (model, kidney
Dice, training seconds, budget); it is a benchmark, not a test: a missed target is reported, not
raised.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.io import atomic_path

PROFILE = "sanity"
MODELS = ("mednext-s-k3", "nnunet")
EPOCHS_FACTOR = {"mednext-s-k3": 1, "nnunet": 2}    # equal training time on a 2-core CPU
TARGET_DICE = 0.85
TARGET_SECONDS = 300.0


def run_sanity(work: Path, results: Path) -> int:
    from dataclasses import replace

    from harness.jobs.local import run_jobs, summarize
    from harness.jobs.plan import make_prepare_job, make_train_job
    from harness.jobs.runs import run_chain
    from harness.studies import load_profile

    work = Path(work).resolve() / "sanity"      # its own phantom size: keep it apart
    base = load_profile(PROFILE)
    jobs = [make_prepare_job("kits19", base, work, None)]
    for model in MODELS:
        prof = replace(base, epochs=base.epochs * EPOCHS_FACTOR[model])
        jobs += [make_train_job(run, prof, work) for run in run_chain("kits19", model, 0, prof)]
    out = run_jobs(jobs, parallel=1)
    print(summarize(out, jobs))
    rows = []
    for job in jobs:
        if job.kind != "train":
            continue
        run_dir = work / "runs" / job.payload["run_id"]
        rows.append(_row(job.payload["spec"], run_dir))
    df = pd.DataFrame(rows)
    target = Path(results) / "sanity.csv"
    with atomic_path(target) as tmp:
        df.to_csv(tmp, index=False)
    with pd.option_context("display.width", 120):
        print(df.to_string(index=False))
    print(f"target: kidney Dice >= {TARGET_DICE} with <= {TARGET_SECONDS:.0f} s of training per "
          f"model; written to {target}")
    return 0 if out.ok else 1


def _row(spec: dict, run_dir: Path) -> dict:
    row = {"model": spec["model"], "kidney_dice": float("nan"), "training_seconds": float("nan"),
           "epochs": spec["profile"]["epochs"],
           "iterations_per_epoch": spec["profile"]["iterations_per_epoch"],
           "patch": "x".join(map(str, spec["profile"]["patch"])), "validation_cases": 0,
           "meets_target": False, "run_id": run_dir.name}
    try:
        rec = json.loads((run_dir / "run.json").read_text())
        row["training_seconds"] = float(rec["timings"]["train_seconds"])
        m = pd.read_csv(run_dir / "metrics.csv")
    except (OSError, KeyError, ValueError):
        return row
    kidney = m[(m["class"] == "kidney") & (m["metric"] == "dsc")]
    row["kidney_dice"] = round(float(kidney["value"].mean()), 4)
    row["validation_cases"] = int(kidney["case"].nunique())
    row["training_seconds"] = round(row["training_seconds"], 1)
    row["meets_target"] = bool(row["kidney_dice"] >= TARGET_DICE
                               and row["training_seconds"] <= TARGET_SECONDS)
    return row
