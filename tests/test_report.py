"""Collector, aggregation and statistics on small synthetic tables with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_report_fixtures import expected_cells, per_case_table, write_run

from harness.report import aggregate, stats
from harness.report.collect import collect


def _rows(dataset, model, fold, values: dict, metric="dsc", both_empty=()):
    """values: {(case, class): value}; NaN marks a both-empty pair."""
    return pd.DataFrame([{"run_id": f"{model}-{fold}", "dataset": dataset, "model": model,
                          "fold": fold, "case": c, "class": k, "metric": metric, "value": v,
                          "ref_empty": (c, k) in both_empty, "pred_empty": (c, k) in both_empty}
                         for (c, k), v in values.items()])


@pytest.fixture
def kits():
    # Two folds; tumour of case a is empty in both masks (NaN). The composite is not a paper class.
    f0 = _rows("kits19", "m", 0, {("a", "kidney"): 1.0, ("a", "tumour"): np.nan,
                                  ("a", "kidney+tumour"): 0.9}, both_empty={("a", "tumour")})
    f1 = _rows("kits19", "m", 1, {("b", "kidney"): 0.5, ("b", "tumour"): 0.2, ("b", "kidney+tumour"): 0.9,
                                  ("c", "kidney"): 0.0, ("c", "tumour"): 0.4, ("c", "kidney+tumour"): 0.9})
    return pd.concat([f0, f1], ignore_index=True)


# --- aggregation ------------------------------------------------------------------------------
def test_paper_aggregation_pools_folds_then_classes(kits):
    s = aggregate.dataset_scores(kits, "dsc")
    # kidney mean over pooled cases (1 + .5 + 0)/3 = .5; tumour nanmean (.2 + .4)/2 = .3 -> .4.
    assert s["score"].iloc[0] == pytest.approx(0.4)
    assert s["n_cases"].iloc[0] == 3 and s["n_folds"].iloc[0] == 2
    # Mean of fold means would differ: fold 0 -> 1.0, fold 1 -> (.25 + .3)/2 = .275.
    best = aggregate.dataset_scores(kits, "dsc", "nan-as-best")["score"].iloc[0]
    assert best == pytest.approx((0.5 + (1.0 + 0.2 + 0.4) / 3) / 2)


def test_case_means_and_class_means(kits):
    cm = aggregate.case_means(kits, "dsc").set_index("case")["value"]
    assert cm.to_dict() == pytest.approx({"a": 1.0, "b": 0.35, "c": 0.2})
    means = aggregate.class_means(kits, "dsc").set_index("class")
    assert means.loc["tumour", "mean"] == pytest.approx(0.3) and means.loc["tumour", "n_nan"] == 1
    assert means.loc["kidney+tumour", "mean"] == pytest.approx(0.9)   # reported per class only
    m = aggregate.class_matrix(kits, "kits19", "m", "dsc")
    assert list(m.columns) == ["kidney", "tumour"] and list(m.index) == ["a", "b", "c"]
    assert aggregate.score_from_matrix(m.to_numpy()) == pytest.approx(0.4)


def test_wide_scores_avg_is_nan_when_a_dataset_is_missing():
    scores = pd.DataFrame([
        {"dataset": "btcv", "model": "a", "metric": "DSC", "score": 0.8},
        {"dataset": "amos22", "model": "a", "metric": "DSC", "score": 0.6},
        {"dataset": "btcv", "model": "b", "metric": "DSC", "score": 0.9},
    ])
    w = aggregate.wide_scores(scores, ["a", "b"], ["btcv", "amos22"], ["DSC"])
    assert w.loc["a", ("avg", "DSC")] == pytest.approx(0.7)
    assert math.isnan(w.loc["b", ("avg", "DSC")])


def test_empty_counts_and_bad_variant(kits):
    c = aggregate.empty_counts(kits).set_index("dataset")
    assert c.loc["kits19", "both_empty"] == 1 and c.loc["kits19", "pairs"] == 9
    with pytest.raises(ValueError, match="variant"):
        aggregate.select(kits, "dsc", "nan-as-zero")
    with pytest.raises(ValueError, match="metric"):
        aggregate.select(kits, "iou")


# --- statistics -------------------------------------------------------------------------------
def test_holm_known_values():
    adj = stats.holm([0.01, 0.04, 0.03, np.nan])
    np.testing.assert_allclose(adj[:3], [0.03, 0.06, 0.06])
    assert math.isnan(adj[3])


def test_bootstrap_equals_an_explicit_resampling_loop():
    rng = np.random.default_rng(1)
    m = rng.uniform(0.5, 1.0, size=(17, 3))
    m[2, 1] = np.nan
    lo, hi = stats.bootstrap_ci(m, n_boot=1000, seed=5)
    idx = np.random.default_rng(5).integers(0, 17, size=(1000, 17))
    boot = [aggregate.score_from_matrix(m[i]) for i in idx]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])), abs=1e-12)
    assert lo < aggregate.score_from_matrix(m) < hi
    assert stats.bootstrap_ci(np.full((5, 2), 0.7)) == pytest.approx((0.7, 0.7))
    with pytest.raises(ValueError, match="n_boot"):
        stats.bootstrap_ci(m, n_boot=100)


def test_wilcoxon_matches_scipy_and_handles_ties():
    from scipy.stats import wilcoxon

    a = np.array([0.8, 0.7, 0.9, 0.85, 0.6, 0.75, 0.95, np.nan])
    b = np.array([0.7, 0.72, 0.8, 0.8, 0.55, 0.7, 0.9, 0.5])
    r = stats.wilcoxon_paired(a, b)
    ref = wilcoxon(a[:7] - b[:7])
    assert r["n"] == 7 and r["p"] == pytest.approx(ref.pvalue)
    assert r["median_diff"] == pytest.approx(np.median(a[:7] - b[:7]))
    assert stats.wilcoxon_paired(a[:7], a[:7])["p"] == 1.0


def test_paired_tests_pick_the_best_baseline_and_correct_within_family():
    rng = np.random.default_rng(0)
    cases = [f"c{i}" for i in range(25)]
    base = rng.uniform(0.6, 0.8, 25)
    level = {"nnunet": 0.0, "unetr": 0.05, "new": 0.08}
    cv = pd.DataFrame([{"dataset": "btcv", "model": m, "case": c, "value": v + off + rng.normal(0, 0.01)}
                       for m, off in level.items() for c, v in zip(cases, base)])
    sc = cv.groupby(["dataset", "model"], as_index=False)["value"].mean().rename(columns={"value": "score"})
    t = stats.paired_tests(cv, sc, "dsc", ["unetr", "new"], ["nnunet", "unetr"], True)
    vs_best = t[t["comparison"] == "vs best baseline"]
    assert set(vs_best["against"]) == {"unetr"} and list(vs_best["model"]) == ["new"]
    vs_nn = t[t["comparison"] == "vs nnU-Net"].set_index("model")
    assert vs_nn.loc["new", "median_diff"] == pytest.approx(0.08, abs=0.01)
    np.testing.assert_allclose(vs_nn["p_holm"], stats.holm(vs_nn["p"].to_numpy()))
    assert vs_nn["significant"].all()


def test_mean_ranks():
    w = pd.DataFrame({"btcv": [0.8, 0.9, 0.7], "amos22": [0.9, 0.8, 0.7]}, index=["a", "b", "c"])
    r = stats.mean_ranks(w, higher_is_better=True)
    assert r.to_dict() == {"a": 1.5, "b": 1.5, "c": 3.0}
    assert stats.mean_ranks(w, higher_is_better=False)["c"] == 1.0


# --- the collector ----------------------------------------------------------------------------
def test_collector_lists_every_cell_state(tmp_path):
    cells = expected_cells(["phantom-kits19"], ["nnunet", "unetr", "transbts", "nnformer", "3d-uxnet",
                                                "swin-unetr"], [0])
    rng = np.random.default_rng(0)
    ok, failed, running, no_csv, wrong, _missing = cells
    write_run(tmp_path, ok, "done",
              per_case_table(ok["run_id"], "phantom-kits19", "nnunet", 0, ["a", "b"], 0.8, rng))
    write_run(tmp_path, failed, "failed", error="RuntimeError: out of memory")
    write_run(tmp_path, running, "running")
    write_run(tmp_path, no_csv, "done")
    write_run(tmp_path, wrong, "done",
              per_case_table("other", "phantom-kits19", "nnformer", 0, ["a"], 0.8, rng))
    col = collect(cells, tmp_path)
    states = col.cells.set_index("model")["state"].to_dict()
    assert states == {"nnunet": "ok", "unetr": "failed", "transbts": "running",
                      "nnformer": "no-metrics", "3d-uxnet": "no-metrics", "swin-unetr": "missing"}
    assert len(col.cells) == len(cells) and len(col.problems) == 5
    detail = col.cells.set_index("model")["detail"]
    assert "out of memory" in detail["unetr"] and "not found" in detail["nnformer"]
    assert "run ids" in detail["3d-uxnet"]
    assert set(col.per_case["model"]) == {"nnunet"}


def test_collector_refuses_a_case_scored_in_two_folds(tmp_path):
    cells = expected_cells(["phantom-kits19"], ["nnunet"], [0, 1])
    rng = np.random.default_rng(0)
    for c in cells:
        write_run(tmp_path, c, "done",
                  per_case_table(c["run_id"], "phantom-kits19", "nnunet", c["fold"], ["a"], 0.8, rng))
    with pytest.raises(ValueError, match="more than one fold"):
        collect(cells, tmp_path)
