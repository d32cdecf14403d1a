"""The learning sanity benchmark's plan and its CSV rows (the benchmark itself is `make sanity`)."""
from __future__ import annotations

import json
import math

import pandas as pd

from harness.bench import sanity
from harness.studies import load_profile


def test_sanity_trains_both_models_on_the_kits19_phantom_with_equal_time_budgets(tmp_path):
    jobs = sanity.sanity_jobs(tmp_path)
    assert [j.kind for j in jobs] == ["prepare", "train", "train"]
    base = load_profile("sanity")
    trains = {j.payload["spec"]["model"]: j for j in jobs if j.kind == "train"}
    assert set(trains) == set(sanity.MODELS) == {"mednext-s-k3", "nnunet"}
    for model, job in trains.items():
        spec = job.payload["spec"]
        assert spec["dataset"] == "phantom-kits19" and spec["fold"] == 0
        assert spec["init"] is None
        assert spec["profile"]["epochs"] == base.epochs * sanity.EPOCHS_FACTOR[model]
        assert job.deps == (jobs[0].key,)
    assert sanity.EPOCHS_FACTOR["nnunet"] > sanity.EPOCHS_FACTOR["mednext-s-k3"]


def _fake_run(run_dir, train_seconds, kidney):
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(
        {"status": "done", "timings": {"train_seconds": train_seconds, "predict_seconds": 12.5}}))
    rows = []
    for case, value in kidney.items():
        for cls, v in (("kidney", value), ("tumour", 0.5), ("kidney+tumour", 0.8)):
            rows.append({"case": case, "class": cls, "metric": "dsc", "value": v})
            rows.append({"case": case, "class": cls, "metric": "hd95", "value": 3.0})
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)


def test_sanity_row_reads_dice_and_time_and_judges_the_target(tmp_path):
    spec = sanity.sanity_jobs(tmp_path)[1].payload["spec"]
    iterations = spec["profile"]["epochs"] * spec["profile"]["iterations_per_epoch"]

    _fake_run(tmp_path / "ok", 200.0, {"case_00001": 0.9, "case_00002": 0.86})
    row = sanity.sanity_row(spec, tmp_path / "ok")
    assert row["kidney_dice"] == 0.88 and row["tumour_dice"] == 0.5
    assert row["kidney_tumour_dice"] == 0.8 and row["validation_cases"] == 2
    assert row["training_seconds"] == 200.0 and row["meets_target"] is True
    assert row["seconds_per_iteration"] == round(200.0 / iterations, 3)
    assert list(row) == list(sanity.COLUMNS)

    _fake_run(tmp_path / "slow", 301.0, {"case_00001": 0.95})
    assert sanity.sanity_row(spec, tmp_path / "slow")["meets_target"] is False
    _fake_run(tmp_path / "poor", 100.0, {"case_00001": 0.84})
    assert sanity.sanity_row(spec, tmp_path / "poor")["meets_target"] is False
    _fake_run(tmp_path / "just-under", 100.0, {"case_00001": 0.849996})
    under = sanity.sanity_row(spec, tmp_path / "just-under")
    assert under["kidney_dice"] == 0.85 and under["meets_target"] is False

    missing = sanity.sanity_row(spec, tmp_path / "never-ran")
    assert math.isnan(missing["kidney_dice"]) and missing["meets_target"] is False
    assert missing["validation_cases"] == 0
