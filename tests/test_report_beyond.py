"""The report beyond the paper: compute table, Pareto front, dataset suitability, rank
stability, reproduction band and software stacks, on small hand-made inputs."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from test_report_fixtures import per_case_table

from harness.report import compute, ranking, stack, suitability

STACK = {"python": "3.12.3", "torch": "2.9.0+cu128", "cuda": "12.8", "cudnn": 91400,
         "nnunetv2": "2.8.1", "monai": "1.6.1", "device": "NVIDIA H200", "driver": "580.65"}


def _run(work, run_id, *, status="done", epoch_seconds=None, iters=4, gpu=True, predict=10.0,
         cases=5, rss=1000.0, cuda=(2000.0, 3000.0), stack_=None):
    folder = work / "runs" / run_id
    folder.mkdir(parents=True)
    attempt = {"peak_rss_mib": rss, "stack": stack_ or STACK,
               "training": {"execution": {"device": "cuda:0" if gpu else "cpu"}}}
    if gpu:
        attempt.update(peak_cuda_mib=cuda[0], peak_cuda_reserved_mib=cuda[1])
    rec = {"status": status, "spec": {"profile": {"iterations_per_epoch": iters,
                                                  "patch": [32, 64, 64], "batch": 2}},
           "timings": {"train_seconds": 100.0, "predict_seconds": predict},
           "validation_cases": [f"c{i}" for i in range(cases)],
           "device": {"type": "cuda", "name": "NVIDIA H200"} if gpu else {"type": "cpu"},
           "attempts": [attempt]}
    (folder / "run.json").write_text(json.dumps(rec))
    if epoch_seconds is not None:
        pd.DataFrame({"epoch": range(len(epoch_seconds)), "epoch_seconds": epoch_seconds}).to_csv(
            folder / "progress.csv", index=False)
    return {"run_id": run_id, "dataset": "btcv", "task": "btcv", "fold": 0}


def test_compute_table_from_run_folders(tmp_path):
    cells = [
        {**_run(tmp_path, "a0", epoch_seconds=[20, 4, 4.4], cuda=(2000, 3000)), "model": "a"},
        {**_run(tmp_path, "a1", epoch_seconds=[8, 8, 8], predict=30, cuda=(2500, 2800)), "model": "a"},
        {**_run(tmp_path, "a2", status="failed", epoch_seconds=[100]), "model": "a"},   # left out
        {**_run(tmp_path, "b0", gpu=False, epoch_seconds=None, rss=5000), "model": "b"},
        {"run_id": "never", "dataset": "btcv", "task": "btcv", "fold": 0, "model": "c"},
        {"run_id": None, "dataset": "btcv", "task": "btcv", "fold": 1, "model": "c"},
    ]
    counted = {"a": {"params": 5_500_000, "gmacs": 128.0}, "b": {"params": 31e6, "gmacs": 478.0}}
    t = compute.compute_table(cells, tmp_path, ["a", "b", "c"], {"a": "A"}, counted, 250).set_index("model")
    assert list(t.index) == ["a", "b", "c"] and t.loc["a", "label"] == "A"
    # per run: median epoch / iterations (4.4 / 4 and 8 / 4); the model: median over runs
    assert t.loc["a", "s_per_iter"] == pytest.approx((1.1 + 2.0) / 2)
    assert t.loc["a", "paper_fold_hours"] == pytest.approx(1.55 * 250_000 / 3600)
    assert t.loc["a", "runs"] == 2 and t.loc["a", "params_m"] == pytest.approx(5.5)
    assert (t.loc["a", "peak_cuda_alloc_mib"], t.loc["a", "peak_cuda_reserved_mib"]) == (2500, 3000)
    assert t.loc["a", "infer_s_per_case"] == pytest.approx((2.0 + 6.0) / 2)
    assert t.loc["a", "device"] == "cuda: NVIDIA H200" and t.loc["a", "patch"] == "32x64x64"
    # a CPU run without progress.csv: no time, RSS but no CUDA memory
    assert math.isnan(t.loc["b", "s_per_iter"]) and math.isnan(t.loc["b", "peak_cuda_alloc_mib"])
    assert t.loc["b", "peak_rss_mib"] == 5000 and t.loc["b", "device"].startswith("cpu")
    # never ran: empty cells, not a crash
    assert t.loc["c", "runs"] == 0 and t.loc["c", ["s_per_iter", "gmacs", "peak_rss_mib"]].isna().all()
    md = compute.compute_markdown(t.reset_index(), {"AVG DSC against GMACs": ["A"]})
    assert "**These are CPU times at the profile's patch, not the paper's 128^3" in md
    assert "Pareto front of AVG DSC against GMACs (no other model" in md and "first: A." in md
    assert "250,000 iterations" in md


def test_gpu_times_at_another_patch_are_said_to_be_so(tmp_path):
    cells = [{**_run(tmp_path, "a0", epoch_seconds=[4, 4]), "model": "a"}]
    md = compute.compute_markdown(compute.compute_table(cells, tmp_path, ["a"], {}, {}, 250))
    assert "CPU times" not in md and "not the paper's 128^3" in md and "NVIDIA H200" in md


def test_pareto_front_on_a_hand_made_example():
    cost = [1.0, 2.0, 2.0, 3.0, 4.0, np.nan, 0.5]
    score = [70.0, 80.0, 75.0, 80.0, 90.0, 99.0, 60.0]
    # 2 is beaten by 1 (same cost, higher score), 3 by 1 (cheaper, same score); 5 has no cost
    assert compute.pareto_front(cost, score).tolist() == [True, True, False, False, True, False, True]
    assert compute.pareto_front([1, 1], [5, 5]).tolist() == [True, True]      # equal points stay


def _scores_and_folds(levels, fold_noise, ci_width, folds=5, seed=0):
    rng = np.random.default_rng(seed)
    scores, fold_rows = [], []
    for m, level in levels.items():
        per_fold = level + rng.normal(0, fold_noise, folds)
        for f, v in enumerate(per_fold):
            fold_rows.append({"dataset": "d", "model": m, "fold": f, "score": v})
        scores.append({"dataset": "d", "model": m, "score": per_fold.mean(),
                       "ci_lo": per_fold.mean() - ci_width / 2, "ci_hi": per_fold.mean() + ci_width / 2})
    return pd.DataFrame(scores), pd.DataFrame(fold_rows)


def test_suitability_verdicts_on_constructed_data():
    models = ["m1", "m2", "m3", "m4"]
    big = _scores_and_folds(dict(zip(models, [0.70, 0.75, 0.80, 0.85])), 0.005, 0.01)
    small = _scores_and_folds(dict(zip(models, [0.800, 0.801, 0.802, 0.803])), 0.03, 0.08, seed=1)
    s = pd.concat([big[0], small[0].assign(dataset="e")])
    f = pd.concat([big[1], small[1].assign(dataset="e")])
    t = suitability.suitability(s, f, ["d", "e", "none"], models).set_index("dataset")
    assert t.loc["d", "verdict"] == suitability.SEPARATES and t.loc["d", "ratio"] > 2
    assert t.loc["e", "verdict"] == suitability.DOES_NOT and t.loc["e", "ratio"] < 2
    assert t.loc["d", "folds"] == 5 and t.loc["d", "boot_se"] == pytest.approx(1 / 3.919928, rel=1e-5)
    assert t.loc["d", "noise"] == max(t.loc["d", "fold_se"], t.loc["d", "boot_se"])
    assert t.loc["none", "verdict"].startswith("undecided")
    assert "separates methods** when the standard deviation" in suitability.suitability_markdown(t.reset_index())


def test_rank_frequencies_sum_to_one_and_a_dominant_method_ranks_first():
    rng = np.random.default_rng(0)
    cube = 0.7 + 0.05 * rng.standard_normal((4, 30, 3))
    cube[2] += 0.2                                           # method 2 dominates
    cube[0, 3, 1] = np.nan                                   # a both-empty pair
    observed, freq, ranks = ranking.rank_frequencies(cube, n_boot=1000, seed=0)
    assert freq.shape == (4, 4) and np.allclose(freq.sum(axis=1), 1.0)
    assert observed[2] == 1 and freq[2, 0] > 0.99 and ranks.shape == (1000, 4)
    again = ranking.rank_frequencies(cube, n_boot=1000, seed=0)[1]
    assert np.array_equal(freq, again)                       # seeded


def test_rank_stability_on_per_case_tables():
    rng = np.random.default_rng(3)
    cases = [f"c{i}" for i in range(12)]
    tables = [per_case_table(f"r-{m}", "phantom-kits19", m, 0, cases, level, rng)
              for m, level in (("a", 0.6), ("b", 0.9), ("c", 0.61))]
    tables.append(per_case_table("r-d", "phantom-kits19", "d", 0, cases[:6], 0.7, rng))  # lacks cases
    per_case = pd.concat(tables, ignore_index=True)
    t, left = ranking.rank_stability(per_case, ["phantom-kits19"], ["a", "b", "c", "d"], {"b": "B"})
    assert left == {"phantom-kits19": ["d"]}
    sums = t.groupby("model")["frequency"].sum()
    assert np.allclose(sums, 1.0) and set(sums.index) == {"a", "b", "c"}
    first = t[(t["model"] == "b") & (t["rank"] == 1)]
    assert first["frequency"].iloc[0] > 0.99 and first["observed_rank"].iloc[0] == 1
    md = ranking.rank_markdown(t, left, {"b": "B", "d": "D"}, 1000, 0)
    assert "B is ranked first in 100.0% of resamples" in md and "Not ranked" in md and "D" in md


def test_reproduction_band_inside_and_outside():
    cmp = pd.DataFrame([
        {"model": "m", "label": "M", "group": "G", "dataset": "btcv", "metric": "DSC",
         "column": "DSC", "ours_metric": "dsc", "ours": 80.0, "paper": 80.5},
        {"model": "m", "label": "M", "group": "G", "dataset": "amos22", "metric": "DSC",
         "column": "DSC", "ours_metric": "dsc", "ours": 80.0, "paper": 85.0},
        {"model": "m", "label": "M", "group": "G", "dataset": "kits19", "metric": "DSC",
         "column": "DSC", "ours_metric": "dsc", "ours": 80.0, "paper": 80.1},     # one fold only
        {"model": "m", "label": "M", "group": "G", "dataset": "avg", "metric": "DSC",
         "column": "DSC", "ours_metric": "dsc", "ours": 80.0, "paper": 80.0}])    # no band for AVG
    per_fold = [0.79, 0.80, 0.81, 0.80, 0.80]                  # SD 0.707 points, k = 5
    folds = pd.DataFrame([{"dataset": d, "model": "m", "fold": i, "metric": "dsc", "score": v}
                          for d in ("btcv", "amos22") for i, v in enumerate(per_fold)]
                         + [{"dataset": "kits19", "model": "m", "fold": 0, "metric": "dsc", "score": 0.8}])
    t = suitability.reproduction(cmp, folds).set_index("dataset")
    half = 2.776445 * np.std(np.array(per_fold) * 100, ddof=1) / np.sqrt(5)
    assert list(t.index) == ["btcv", "amos22", "kits19"]
    assert t.loc["btcv", "half_width"] == pytest.approx(half, rel=1e-5)
    assert t.loc["btcv", "inside"] is True and t.loc["amos22", "inside"] is False
    assert t.loc["kits19", "inside"] is None and t.loc["kits19", "folds"] == 1
    md = suitability.reproduction_markdown(t.reset_index())
    assert "1 of 2 cells with a fold band lie inside it; 1 cells have none." in md
    assert "Åkesson" in md and "nnU-Net Revisited" in md
    assert t["inside_published"].isna().all()        # no published bands passed


def test_published_band_from_the_same_labs_reruns():
    """nnU-Net Revisited re-ran five Table 2 methods on BTCV and BraTS21 (same cases): the
    published band of a dataset is the largest |re-run - paper| there; AMOS22 (other cases) and
    KiTS19 (not re-run) get none; surface Dice gets none."""
    from harness.report.paper import load_paper_table, load_rerun_table

    diffs = suitability.published_differences(load_paper_table("table2"), load_rerun_table())
    assert len(diffs) == 15 and set(diffs["model"]) == {"nnunet", "mednext-l-k3", "mednext-l-k5",
                                                         "swin-unetr", "nnformer"}
    row = diffs.set_index(["model", "dataset"]).loc[("nnunet", "btcv")]
    assert (row["paper"], row["rerun"]) == (83.56, 83.08) and row["diff"] == pytest.approx(-0.48)
    bands = suitability.published_bands(diffs)
    # BTCV: SwinUNETR 78.89 vs 80.95; BraTS21: MedNeXt-L k3 91.35 vs 91.57 (nnFormer 90.22 vs 90.42)
    assert bands == pytest.approx({("btcv", "DSC"): 2.06, ("brats21", "DSC"): 0.22})
    cmp = pd.DataFrame([
        {"model": "m", "label": "M", "group": "G", "dataset": d, "metric": metric,
         "column": metric, "ours_metric": "dsc", "ours": ours, "paper": 90.0}
        for d, metric, ours in (("btcv", "DSC", 88.5), ("brats21", "DSC", 89.0),
                                ("brats21", "SDC", 90.0), ("amos22", "DSC", 90.0))])
    t = suitability.reproduction(cmp, pd.DataFrame(columns=["dataset", "model", "fold", "metric",
                                                            "score"]), published=bands)
    assert t["inside_published"].tolist() == [True, False, None, None]
    assert t.loc[0, "published_lo"] == pytest.approx(90.0 - 2.06)
    md = suitability.reproduction_markdown(t, diffs)
    assert "1 of 2 cells with a published band lie inside it; 2 cells have none." in md
    assert "| swin-unetr | btcv | 80.95 | 78.89 | -2.06 | 30 | yes |" in md


def test_stack_listing_and_known_regressions(tmp_path):
    new = {**STACK, "torch": "2.13.0+cu130", "cudnn": 91500}
    cells = [{**_run(tmp_path, f"r{i}", stack_=STACK), "model": "a"} for i in range(3)]
    cells += [{**_run(tmp_path, "n0", stack_=new), "model": "b"}]
    t = stack.stack_table(cells, tmp_path)
    assert t["runs"].tolist() == [3, 1]
    old = t.iloc[0]
    assert old["torch"] == "2.9.0+cu128" and old["cudnn"] == 91400 and old["cudnn_version"] == "9.14.0"
    assert old["warnings"] == "torch-2.9.0-conv3d-amp" and t.iloc[1]["warnings"] == ""
    md = stack.stack_markdown(t)
    assert "**Warning (torch-2.9.0-conv3d-amp, 3 runs)**" in md and "issue #166122" in md
    only_new = stack.stack_markdown(t.iloc[[1]])
    assert "Warning" not in only_new and "No stack matches a known regression" in only_new
    assert stack.warnings_for({**STACK, "torch": "2.9.1", "cudnn": 91300})
    assert not stack.warnings_for({**STACK, "torch": "2.9.1", "cudnn": 91500})
    assert not stack.warnings_for({**STACK, "driver": None})          # no GPU: not a cuDNN issue
    assert stack.cudnn_text(91500) == "9.15.0" and stack.cudnn_text(8902) == "8.9.2"
