"""``make_report`` and ``mednext-bench report`` end to end on synthetic run folders."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
from test_report_fixtures import declared_recipe, expected_cells, per_case_table, write_run

from harness.report.build import make_report
from harness.studies import load_study


@pytest.fixture(scope="module")
def table2_report(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    st = load_study("table2")
    datasets = [f"phantom-{t}" for t in st.datasets]
    cells = expected_cells(datasets, st.models, [0])
    rng = np.random.default_rng(0)
    ran = {"nnunet", "unetr", "transunet", "mednext-s-k3", "mednext-s-k5"}   # the rest: missing
    for cell in cells:
        if cell["model"] not in ran:
            continue
        if cell["model"] == "unetr" and cell["dataset"] == "phantom-brats21":
            write_run(work, cell, "failed", error="RuntimeError: CUDA out of memory")
            continue
        if cell["model"] == "transunet" and cell["dataset"] == "phantom-kits19":
            continue                                          # never ran: missing
        level = 0.7 + 0.01 * st.models.index(cell["model"])
        cases = [f"case_{j:03d}" for j in range(8)]
        table = per_case_table(cell["run_id"], cell["dataset"], cell["model"], 0, cases, level, rng,
                               both_empty={("case_000", "gallbladder")},
                               pred_empty={("case_001", "tumour")})
        progress = pd.DataFrame({"epoch": [0, 1], "train_loss": [1.0, 0.8], "val_loss": [1.1, 0.9],
                                 "pseudo_dice": [0.2, 0.4], "lr": [1e-3, 5e-4], "epoch_seconds": [3, 3]})
        # run.json records the recipe as run: MedNeXt's as declared, nnU-Net's with a learning
        # rate no declaration has (the report must show the run's, not the registry's); the
        # other runs record none (older run folders), and show as declared.
        spec = None
        if cell["model"].startswith("mednext"):
            spec = {"recipe": declared_recipe(cell["model"], cell["dataset"]), "settings": cell["settings"]}
        elif cell["model"] == "nnunet":
            spec = {"recipe": {**declared_recipe("nnunet", cell["dataset"]), "lr": 0.02},
                    "settings": {**cell["settings"], "precision": "fp32"}}
        write_run(work, cell, "done", table, progress=progress, spec=spec)
    compute = {m: {"params": 1e6 * (i + 1), "gmacs": 10.0 * (i + 1)} for i, m in enumerate(st.models)}
    out = tmp_path_factory.mktemp("results") / "table2-smoke"
    return make_report("table2", "smoke", work, out, expected=cells, compute=compute), out


def test_report_files_and_header(table2_report):
    res, out = table2_report
    for name in ("table2.md", "table2.csv", "table2.tex", "table2_vs_paper.csv", "scores.csv",
                 "tests.csv", "ranks.csv", "per_class.csv", "cells.csv", "header.md", "report.md",
                 "metric_info.csv", "recipes.csv", "compute.csv", "compute.md", "suitability.csv",
                 "rank_stability.csv", "rank_stability.md", "reproduction.csv", "reproduction.md",
                 "stacks.csv"):
        assert (out / name).is_file(), name
    for stem in ("boxplot_dsc", "heatmap_dsc", "accuracy_vs_compute", "training_curves", "pareto",
                 "rank_stability"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{stem}.{ext}").stat().st_size > 1000
    header = (out / "header.md").read_text()
    assert "smoke" in header and "phantom" in header and "Folds: 0" in header
    assert "tolerance 1.0" in header and "surface-distance 0.1" in header
    # Both surface Dice conventions by their labels, and the one the paper's numbers use.
    assert "**SDC (1 mm)** (`nsd_phys`)" in header and "**SDC (1 voxel)** (`nsd_mednext_code`)" in header
    assert "the paper's SDC numbers are **SDC (1 voxel)** values" in header and "[1,1,1]" in header
    assert "- Recipe: **paper**" in header and "- Options: recipe: paper;" in header
    # 5 models ran on BTCV (8 cases x 13 organs, one both-empty pair each); 4 on KiTS19.
    assert "phantom-btcv: 520 pairs; both empty (NaN) 5;" in header
    assert "phantom-kits19: 96 pairs; both empty (NaN) 0; reference empty only 0; " \
           "prediction empty only 4" in header


def test_report_names_missing_and_failed_cells(table2_report):
    res, out = table2_report
    report = (out / "report.md").read_text()
    assert "| phantom-brats21 | unetr | 0 | failed |" in report and "CUDA out of memory" in report
    assert "| phantom-kits19 | transunet | 0 | missing |" in report
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 60 and (cells["state"] == "ok").sum() == 18
    assert (cells["state"] == "missing").sum() == 41 and (cells["state"] == "failed").sum() == 1


def test_report_sections_beyond_the_paper(table2_report):
    res, out = table2_report
    comp = pd.read_csv(out / "compute.csv").set_index("model")
    assert list(comp.index) == list(load_study("table2").models) and set(comp["recipe"]) == {"paper"}
    # progress.csv: 3 s epochs of the smoke profile's 1 iteration (run.json records no profile)
    assert comp.loc["nnunet", "s_per_iter"] == 3.0 and comp.loc["nnunet", "runs"] == 4
    assert comp.loc["nnunet", "paper_fold_hours"] == pytest.approx(3.0 * 250_000 / 3600, abs=1e-3)
    assert comp.loc["mednext-b-k3", "runs"] == 0 and np.isnan(comp.loc["mednext-b-k3", "s_per_iter"])
    assert comp.loc["mednext-b-k3", "gmacs"] == 90.0           # counted figures of a model not run
    suit = pd.read_csv(out / "suitability.csv")
    assert suit["dataset"].tolist() == ["btcv", "amos22", "kits19", "brats21"]
    ranks = pd.read_csv(out / "rank_stability.csv")
    assert np.allclose(ranks.groupby(["task", "model"])["frequency"].sum(), 1.0)
    assert set(ranks.loc[ranks["task"] == "kits19", "model"]) == {"nnunet", "unetr", "mednext-s-k3",
                                                                  "mednext-s-k5"}
    rep = pd.read_csv(out / "reproduction.csv")
    assert (rep["dataset"] != "avg").all() and rep["half_width"].isna().all()     # one fold: no band
    report = (out / "report.md").read_text()
    for heading in ("## Compute beside accuracy", "### Dataset suitability", "### Rank stability",
                    "## Reproduction band", "## Software stacks"):
        assert heading in report, heading
    assert "No run recorded its software stack." in report
    assert set(res["compute"]["model"]) == set(comp.index)


def _read(path):
    """A report CSV; an empty convention (DSC, HD95) reads as "" rather than NaN."""
    df = pd.read_csv(path)
    return df.fillna({"convention": ""}) if "convention" in df else df


def _score(res, model, task, metric):
    sc = res["scores"]
    return sc[(sc["model"] == model) & (sc["task"] == task) & (sc["metric"] == metric)
              & (sc["variant"] == "nan-excluded")].iloc[0]


def test_report_numbers_follow_the_tables(table2_report):
    res, out = table2_report
    t = _read(out / "table2.csv")
    cell = t.set_index(["model", "dataset", "metric"])
    s = _score(res, "nnunet", "btcv", "dsc")
    assert cell.loc[("nnunet", "btcv", "dsc"), "value"] == pytest.approx(100 * s["score"], abs=1e-3)
    assert cell.loc[("nnunet", "btcv", "dsc"), "ci_lo"] == pytest.approx(100 * s["ci_lo"], abs=1e-3)
    assert s["ci_lo"] <= s["score"] <= s["ci_hi"] and s["n_cases"] == 8
    # UNETR lacks BraTS21 and TransUNet lacks KiTS19: their AVG is empty, not a mean over three.
    assert np.isnan(cell.loc[("unetr", "avg", "dsc"), "value"])
    assert np.isnan(cell.loc[("transunet", "avg", "nsd_mednext_code"), "value"])
    assert set(t["recipe"]) == {"paper"}
    cmp = pd.read_csv(out / "table2_vs_paper.csv")
    assert len(cmp) == 15 * 10
    r = cmp[(cmp["model"] == "nnunet") & (cmp["dataset"] == "btcv") & (cmp["metric"] == "DSC")].iloc[0]
    assert r["paper"] == 83.56 and r["diff"] == pytest.approx(r["ours"] - 83.56)
    tests = pd.read_csv(out / "tests.csv")
    assert {"vs nnU-Net", "vs best baseline"} == set(tests["comparison"])
    assert (tests["p_holm"].dropna() >= tests["p"].dropna().loc[tests["p_holm"].dropna().index]).all()


def test_every_table_carries_both_surface_dice_conventions(table2_report):
    res, out = table2_report
    t = _read(out / "table2.csv")
    labelled = t.drop_duplicates("metric").set_index("metric")
    assert labelled.loc["nsd_phys", ["column", "convention"]].tolist() == ["SDC (1 mm)", "1 mm"]
    assert labelled.loc["nsd_mednext_code", ["column", "convention"]].tolist() == ["SDC (1 voxel)", "1 voxel"]
    assert labelled.loc["dsc", "convention"] == ""
    cell = t.set_index(["model", "dataset", "metric"])["value"]
    for metric in ("nsd_phys", "nsd_mednext_code"):
        assert cell[("nnunet", "kits19", metric)] == pytest.approx(
            100 * _score(res, "nnunet", "kits19", metric)["score"], abs=1e-3)
    md, tex = (out / "table2.md").read_text(), (out / "table2.tex").read_text()
    for text in (md, tex):
        assert "BTCV" in text and "SDC (1 mm)" in text and "SDC (1 voxel)" in text
    assert "| BTCV DSC | BTCV SDC (1 mm) | BTCV SDC (1 voxel) |" in md
    assert "**SDC (1 voxel)** (`nsd_mednext_code`)" in md           # defined under the table
    for name, column in (("tests.csv", "metric"), ("ranks.csv", "metric"), ("scores.csv", "metric"),
                         ("per_class.csv", "metric")):
        df = _read(out / name)
        pairs = set(zip(df[column], df["convention"]))
        assert {("nsd_phys", "1 mm"), ("nsd_mednext_code", "1 voxel"), ("dsc", "")} <= pairs, name
    report = (out / "report.md").read_text()
    assert "| model | label | DSC | SDC (1 mm) | SDC (1 voxel) |" in report           # ranks
    assert "btcv SDC (1 mm)" in report and "btcv SDC (1 voxel)" in report           # tests


def test_the_paper_is_compared_in_its_own_surface_dice_convention(table2_report):
    res, out = table2_report
    cmp = _read(out / "table2_vs_paper.csv")
    assert set(zip(cmp["metric"], cmp["ours_metric"], cmp["convention"])) == {
        ("DSC", "dsc", ""), ("SDC", "nsd_mednext_code", "1 voxel")}
    r = cmp[(cmp["model"] == "nnunet") & (cmp["dataset"] == "kits19") & (cmp["metric"] == "SDC")].iloc[0]
    vox = _score(res, "nnunet", "kits19", "nsd_mednext_code")
    assert r["ours"] == pytest.approx(100 * vox["score"]) and r["paper"] == 86.88
    assert r["ci_lo"] == pytest.approx(100 * vox["ci_lo"])
    # The fixture's 1 mm values are 1 point lower: the comparison did not use them.
    assert abs(r["ours"] - 100 * _score(res, "nnunet", "kits19", "nsd_phys")["score"]) > 0.5
    report = (out / "report.md").read_text()
    assert "compared with our SDC (1 voxel) values" in report
    assert "| nnUNet | Baselines | kits19 | SDC | SDC (1 voxel) |" in report


def test_cli_report_on_the_declared_grid(tmp_path, capsys):
    from harness.studies.runs import expected_runs
    from harness.report import commands

    work = tmp_path / "work"
    cells = expected_runs("ablations", "smoke", work)
    rng = np.random.default_rng(1)
    for cell in cells[:-1]:                                  # the last declared cell never ran
        write_run(work, cell, "done", per_case_table(cell["run_id"], cell["dataset"], cell["model"],
                                                     cell["fold"], ["a", "b", "c"], 0.8, rng))
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["report", "--study", "ablations", "--profile", "smoke", "--work", str(work),
                              "--out", str(tmp_path / "out"), "--no-figures"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"{len(cells)} cells, {len(cells) - 1} ok, 1 missing" in printed and cells[-1]["run_id"] in printed
    md = (tmp_path / "out" / "table1_right.md").read_text()
    assert "SDC (1 mm)" in md and "SDC (1 voxel)" in md and "Standard Up and Downsampling" in md
    assert "recipe paper" in (tmp_path / "out" / "table1_right.tex").read_text()
    header = (tmp_path / "out" / "header.md").read_text()
    for cell in cells:                       # the report names the data version of every dataset
        assert f"{cell['dataset']} {cell['data_fingerprint'][:12]}" in header
    assert (tmp_path / "out" / "table1_right.tex").is_file()


def test_results_root_follows_the_environment(tmp_path, monkeypatch):
    from harness.studies import results_root

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEDNEXT_BENCH_RESULTS", raising=False)
    assert results_root() == tmp_path.resolve() / "results"
    monkeypatch.setenv("MEDNEXT_BENCH_RESULTS", "elsewhere/r")
    assert results_root() == tmp_path.resolve() / "elsewhere" / "r" and results_root().is_absolute()


def test_report_without_out_goes_under_the_results_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDNEXT_BENCH_RESULTS", str(tmp_path / "r"))
    cells = expected_cells(["phantom-btcv"], ["nnunet"], [0])
    res = make_report("ablations", "smoke", tmp_path / "work", expected=cells, compute={},
                      with_figures=False)
    assert res["out"] == tmp_path / "r" / "ablations-smoke"
    assert (tmp_path / "r" / "ablations-smoke" / "report.md").is_file()


def test_cli_ablations_report_with_no_runs_lists_every_cell_as_missing(tmp_path, monkeypatch, capsys):
    """``make report`` runs this after Table 2; a work folder without ablation runs is no error."""
    from harness import cli
    from harness.studies.runs import expected_runs

    monkeypatch.setenv("MEDNEXT_BENCH_RESULTS", str(tmp_path / "r"))
    work = tmp_path / "work"
    cells = expected_runs("ablations", "quick", work)
    assert cli.main(["report", "--study", "ablations", "--profile", "quick", "--work", str(work)]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "r" / "ablations-quick"
    assert f"report written to {out}" in printed
    assert f"{len(cells)} cells, 0 ok, {len(cells)} missing" in printed
    report = (out / "report.md").read_text()
    assert all(f"| {c['dataset']} | {c['model']} | {c['fold']} | missing | {c['run_id']} |" in report
               for c in cells)
    for name in ("table1_right.md", "table1_right.csv", "table1_right.tex", "table1_right_vs_paper.csv",
                 "cells.csv", "figures/boxplot_dsc.png"):
        assert (out / name).is_file(), name


def test_cli_refuses_the_old_sdc_flag(tmp_path, capsys):
    from harness import cli

    rc = cli.main(["report", "--study", "ablations", "--profile", "smoke", "--work", str(tmp_path),
                   "--no-figures", "--sdc", "nsd_phys"])
    err = capsys.readouterr().err
    assert rc == 2 and "--sdc is no longer an option" in err and "SDC (1 voxel)" in err
    assert not (tmp_path / "runs").exists()


def test_recipes_as_run_and_as_declared(table2_report):
    res, out = table2_report
    rec = pd.read_csv(out / "recipes.csv").set_index(["model", "task"])
    assert set(rec["recipe"]) == {"paper"}
    # As run: nnU-Net's run.json has its own learning rate and precision, not the registry's.
    nn = rec.loc[("nnunet", "btcv")]
    assert nn["source"] == "run.json" and nn["lr"] == 0.02 and nn["precision"] == "fp32"
    assert nn["optimizer"] == "sgd" and nn["momentum"] == 0.99 and bool(nn["deep_supervision"])
    assert rec.loc[("mednext-s-k5", "kits19"), "lr"] == 1e-4
    assert rec.loc[("mednext-s-k5", "kits19"), "source"] == "run.json"
    # A failed run without a recorded recipe, and cells that never ran: declared.
    assert rec.loc[("unetr", "brats21"), "source"] == "declared, not run"
    assert rec.loc[("unetr", "brats21"), "brats_target"] == "labels"
    l5 = rec.loc["mednext-l-k5"]
    assert set(l5["source"]) == {"declared, not run"} and l5.loc["kits19", "lr"] == 1e-4
    assert l5.loc["btcv", "lr"] == 1e-3 and bool(l5.loc["btcv", "activation_checkpointing"])
    report = (out / "report.md").read_text()
    assert "## Training recipes (recipe: paper)" in report
    assert ("| mednext-l-k5 | MedNeXt-L | AdamW (eps 1e-4) | 1e-3 (KiTS19: 1e-4) | 3e-5 | – | poly 0.9 "
            "| 12 | yes | yes | amp, compile off | declared, not run |") in report
    assert "| nnunet | nnUNet | SGD, Nesterov | 0.02 | 3e-5 | 0.99 | poly 0.9 | 12 | yes | no | " \
           "fp32, compile off | run.json |" in report
    # Every result CSV names the recipe; the LaTeX caption too.
    for name in ("table2.csv", "table2_vs_paper.csv", "scores.csv", "tests.csv", "ranks.csv",
                 "per_class.csv", "cells.csv", "recipes.csv"):
        assert set(pd.read_csv(out / name)["recipe"]) == {"paper"}, name
    assert "recipe paper" in (out / "table2.tex").read_text()
