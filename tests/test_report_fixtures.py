"""Synthetic per-case tables and run folders for the report tests (helpers only, no tests)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from harness.metrics.evaluate import COLUMNS
from harness.metrics.regions import regions_for, task_of


def per_case_table(run_id: str, dataset: str, model: str, fold: int, cases, level: float,
                   rng: np.random.Generator, both_empty: tuple = (), pred_empty: tuple = ()) -> pd.DataFrame:
    """A metrics.csv-like table: values around ``level``; chosen (case, class) pairs empty."""
    rows = []
    for case in cases:
        for region in regions_for(dataset):
            key = (case, region.name)
            be, pe = key in both_empty, key in pred_empty
            noise = float(rng.normal(0, 0.02))
            vals = {"dsc": level + noise, "nsd_phys": level + 0.01 + noise,
                    "nsd_mednext_code": level + 0.02 + noise, "hd95": 5.0 - 10 * noise,
                    "tp": 100.0, "fp": 5.0, "fn": 5.0, "vol_ref_mm3": 105.0, "vol_pred_mm3": 105.0}
            if be:
                vals.update(dsc=np.nan, nsd_phys=np.nan, nsd_mednext_code=np.nan, hd95=np.nan)
            elif pe:
                vals.update(dsc=0.0, nsd_phys=0.0, nsd_mednext_code=0.0, hd95=300.0)
            for metric, value in vals.items():
                rows.append({"run_id": run_id, "dataset": dataset, "task": task_of(dataset),
                             "model": model, "fold": fold, "case": case, "class": region.name,
                             "metric": metric, "value": value, "ref_empty": be,
                             "pred_empty": be or pe, "spacing_0": 1.0, "spacing_1": 1.0,
                             "spacing_2": 1.0})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_run(work: Path, cell: dict, status: str, table: pd.DataFrame | None = None,
              error: str = "", progress: pd.DataFrame | None = None, spec: dict | None = None) -> None:
    """A run folder; ``spec`` (e.g. ``{"recipe": ..., "settings": ...}``) goes to run.json."""
    run_dir = Path(work) / "runs" / cell["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    rec = {"status": status, "error": error, **cell, **({"spec": spec} if spec else {})}
    (run_dir / "run.json").write_text(json.dumps(rec))
    if table is not None:
        table.to_csv(run_dir / "metrics.csv", index=False)
    if progress is not None:
        progress.to_csv(run_dir / "progress.csv", index=False)


def declared_recipe(model: str, dataset: str, recipe: str = "paper") -> dict:
    """What the registry declares for (model, dataset), as a cell or a run spec carries it."""
    from harness import registry

    return registry.get(model).recipe(recipe, dataset).to_dict()


SMOKE_SETTINGS = {"compile": False, "precision": "amp"}


def declared_plans(model: str) -> dict | None:
    """The planner a model trains with instead of the protocol's plans (None: the protocol)."""
    from harness import registry

    plans = registry.get(model).plans
    return dict(plans) if plans else None


def expected_cells(datasets, models, folds) -> list[dict]:
    """Declared cells with their resolved recipe, settings and plans (as ``expected_runs``)."""
    return [{"run_id": f"{d}-{m}-f{f}", "dataset": d, "task": task_of(d), "model": m, "fold": f,
             "recipe": declared_recipe(m, d),
             "settings": {**SMOKE_SETTINGS, **({"brats_target": "labels"} if "brats21" in d else {})},
             "plans": declared_plans(m)}
            for d in datasets for m in models for f in folds]
