"""The study ``table2-plus`` (Table 2 and three rows beyond the paper): its declaration, its plan,
its report on synthetic run folders, its marks (the paper's, and the mark of the row outside the
identical protocol), and the derived MedNeXt-B + GRN count."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_report_fixtures import expected_cells, per_case_table, write_run

import mednext
from harness import registry
from harness.compute import count_parameters, empty_init
from harness.jobs.plan import plan_study
from harness.report import tables
from harness.report.build import make_report
from harness.studies import STUDIES, load_study

NEW = {"nnunet-resenc": "nnU-Net ResEnc", "nnunet-resenc-l-native": "nnU-Net ResEnc L (own plans)",
       "mednext-b-k3-grn": "MedNeXt-B + GRN"}
NATIVE = "nnunet-resenc-l-native"
GROUP = "Beyond the paper"


def test_table2_plus_is_table2_with_three_rows_beyond_the_paper():
    assert "table2-plus" in STUDIES
    plus, t2 = load_study("table2-plus"), load_study("table2")
    assert plus.name == "table2-plus" and plus.paper_table == "table2"
    assert plus.datasets == t2.datasets
    assert plus.rows[:len(t2.rows)] == t2.rows
    assert [(r.model, r.label, r.group) for r in plus.rows[len(t2.rows):]] == \
        [(m, lab, GROUP) for m, lab in NEW.items()]
    assert set(plus.models) <= set(registry.names())


def test_table2_plus_quick_plan_has_every_row_on_every_phantom(tmp_path):
    jobs = plan_study("table2-plus", "quick", tmp_path / "work")
    trains = [j for j in jobs if j.kind == "train"]
    assert len(trains) == 18 * 4
    assert {j.payload["spec"]["model"] for j in trains} >= set(NEW)
    # the planner's own preparation: one job per dataset, after the dataset's, before its runs
    keys = [j.key for j in jobs]
    planner = [j for j in jobs if j.kind == "prepare" and j.payload.get("plans")]
    assert len(planner) == 4
    for job in planner:
        assert job.key.endswith("-nnUNetResEncUNetLPlans") and len(job.deps) == 1
        assert keys.index(job.deps[0]) < keys.index(job.key)
    for j in trains:
        own = [d for d in j.deps if d in {p.key for p in planner}]
        assert len(own) == (j.payload["spec"]["model"] == NATIVE)
        assert all(keys.index(d) < keys.index(j.key) for d in j.deps)
    assert jobs[-1].kind == "report" and jobs[-1].payload["results"].endswith("table2-plus-quick")
    # the cells Table 2 shares are the same runs (same ids): a table2 grid already run is reused
    t2 = {j.payload["run_id"] for j in plan_study("table2", "quick", tmp_path / "work") if j.kind == "train"}
    assert t2 <= {j.payload["run_id"] for j in trains}


def test_grn_count_is_the_b_k3_count_plus_two_expanded_widths_per_grn_block():
    v = mednext.get_variant("B")
    c, exp, blocks = v.n_channels, v.exp_r, v.block_counts
    width = [c * 2 ** min(i, 8 - i) for i in range(9)]          # stage widths 32 .. 512 .. 32
    plain = sum(2 * blocks[i] * exp[i] * width[i] for i in range(9))
    downs = sum(2 * exp[i + 1] * c * 2 ** i for i in (1, 2, 3))  # down_0 carries no GRN
    ups = sum(2 * exp[8 - i] * c * 2 ** (i + 1) for i in range(4))
    assert (plain, downs, ups) == (22_528, 3_584, 7_168)
    grn, base = registry.get("mednext-b-k3-grn"), registry.get("mednext-b-k3")
    for key in ("params", "params_deep_supervision"):
        assert grn.reference_params[key] - base.reference_params[key] == plain + downs + ups
    with empty_init():
        with_grn = count_parameters(registry.build_model("mednext-b-k3-grn", 1, 14, (128,) * 3,
                                                         deep_supervision=False))
        without = count_parameters(registry.build_model("mednext-b-k3", 1, 14, (128,) * 3,
                                                        deep_supervision=False))
    assert with_grn - without == 33_280
    assert grn.recipe() == base.recipe() and grn.kwargs["grn"] is True


def test_marks_of_the_new_group_under_both_rules():
    """Table 2's rule: the paper's rows are marked as in Table 2, a row beyond the paper is bold
    when it reaches the best of the paper's baselines and never underlined; the group rule:
    best of its group."""
    plus, t2 = load_study("table2-plus"), load_study("table2")
    cols = pd.MultiIndex.from_product([["btcv"], ["DSC"]])
    wide = pd.DataFrame({m: 0.70 + 0.01 * i for i, m in enumerate(plus.models)}, index=cols).T
    wide.loc["nnunet"] = 0.80                              # best baseline
    wide.loc["nnunet-resenc"], wide.loc["mednext-b-k3-grn"] = 0.81, 0.79
    wide.loc[NATIVE] = 0.82
    c = ("btcv", "DSC")
    marked = tables.build_table("table2", plus.rows, wide, ["btcv"], "t", "table2")
    paper_rows = tables.build_table("table2", t2.rows, wide.loc[list(t2.models)], ["btcv"], "t", "table2")
    n = len(t2.rows)
    pd.testing.assert_frame_equal(marked.bold.iloc[:n], paper_rows.bold)
    pd.testing.assert_frame_equal(marked.underline.iloc[:n], paper_rows.underline)
    assert marked.bold[c].iloc[n:].tolist() == [True, True, False]
    assert not marked.underline.iloc[n:].to_numpy().any()
    best = tables.build_table("table2", plus.rows, wide, ["btcv"], "t", "group-best")
    assert best.bold[c].iloc[n:].tolist() == [False, True, False]
    assert "| nnU-Net ResEnc | Beyond the paper | **81.00** |" in tables.to_markdown(marked)


# the planned network of each dataset (params, GMACs, patch) as its run.json would record it
PLANNED = {"btcv": (20e6, 100.0, [64, 160, 160]), "amos22": (30e6, 300.0, [64, 192, 160]),
           "kits19": (40e6, 200.0, [96, 160, 160]), "brats21": (50e6, 400.0, [128, 160, 112])}


def _record_configuration(work, cell, planned):
    import json
    path = work / "runs" / cell["run_id"] / "run.json"
    rec = json.loads(path.read_text())
    params, gmacs, patch = planned
    rec["configuration"] = {"plans_name": "nnUNetResEncUNetLPlans", "configuration": "bench_native",
                            "patch": patch, "batch": 2, "spacing": [1.0, 0.8, 0.8],
                            "network": {"params": params, "gmacs": gmacs, "patch": patch}}
    path.write_text(json.dumps(rec))


@pytest.fixture(scope="module")
def plus_report(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    st = load_study("table2-plus")
    cells = expected_cells([f"phantom-{t}" for t in st.datasets], st.models, [0])
    rng = np.random.default_rng(0)
    ran = {"nnunet", "unetr", "mednext-b-k3", "mednext-b-k5", *NEW}     # the rest: missing
    for cell in cells:
        if cell["model"] in ran:
            level = 0.7 + 0.01 * st.models.index(cell["model"])
            table = per_case_table(cell["run_id"], cell["dataset"], cell["model"], 0,
                                   [f"case_{j:03d}" for j in range(6)], level, rng)
            write_run(work, cell, "done", table)
            if cell["model"] == NATIVE:     # what a run with a planner's configuration records
                _record_configuration(work, cell, PLANNED[cell["task"]])
    compute = {m: {"params": 1e6 * (i + 1), "gmacs": 10.0 * (i + 1)} for i, m in enumerate(st.models)}
    out = tmp_path_factory.mktemp("results") / "table2-plus-smoke"
    return make_report("table2-plus", "smoke", work, out, expected=cells, compute=compute), out


def test_report_renders_the_rows_beyond_the_paper(plus_report):
    res, out = plus_report
    md, tex = (out / "table2.md").read_text(), (out / "table2.tex").read_text()
    assert md.index("| MedNeXt-L |") < md.index(f"| nnU-Net ResEnc | {GROUP} |") \
        < md.index("| nnU-Net ResEnc L (own plans) † |  |") < md.index("| MedNeXt-B + GRN |  |")
    assert f"nnU-Net ResEnc & {GROUP} & " in tex and "MedNeXt-B + GRN &  & " in tex
    assert "nnU-Net ResEnc L (own plans) † &  & " in tex
    t = pd.read_csv(out / "table2.csv")
    sc = res["scores"]
    for model in NEW:
        got = t[(t["model"] == model) & (t["dataset"] == "btcv") & (t["metric"] == "dsc")]
        want = sc[(sc["model"] == model) & (sc["task"] == "btcv") & (sc["metric"] == "dsc")
                  & (sc["variant"] == "nan-excluded")]
        assert got["group"].item() == GROUP
        assert got["value"].item() == pytest.approx(100 * want["score"].item(), abs=1e-3)
    cmp = pd.read_csv(out / "table2_vs_paper.csv")
    assert cmp[cmp["model"].isin(NEW)]["paper"].isna().all()          # the paper has no such rows
    assert cmp[cmp["model"] == "nnunet"]["paper"].notna().all()
    tests = pd.read_csv(out / "tests.csv")
    vs = tests[(tests["model"] == "nnunet-resenc") & (tests["comparison"] == "vs nnU-Net")]
    assert set(vs["dataset"]) == {"btcv", "amos22", "kits19", "brats21"}
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 18 * 4 and (cells["state"] == "ok").sum() == 7 * 4
    assert (out / "figures" / "boxplot_dsc.png").is_file()


def test_the_row_with_its_own_plans_is_marked_in_every_report(plus_report):
    """Outside the identical protocol: the mark on its label in every table and CSV, the
    footnote under the table, in the LaTeX caption, the header and the compute section; its
    protocol in cells.csv; its size counted at its planned patches, not at 128^3."""
    res, out = plus_report
    note = "outside the identical protocol"
    md, tex, report = ((out / n).read_text() for n in ("table2.md", "table2.tex", "report.md"))
    assert f"- † nnU-Net ResEnc L (own plans) ({NATIVE}): {note}" in md
    assert "nnUNetPlannerResEncL" in md and r"\caption{" in tex and note in tex
    assert f"Rows outside the identical protocol: † nnU-Net ResEnc L (own plans) ({NATIVE})" \
        in (out / "header.md").read_text()
    assert report.count(f"({NATIVE}): {note}") >= 3           # header, under the table, compute
    for name in ("table2.csv", "compute.csv", "ranks.csv"):
        labels = pd.read_csv(out / name).set_index("model")["label"]
        assert set(labels[labels.index == NATIVE]) == {"nnU-Net ResEnc L (own plans) †"}
        assert not labels[labels.index != NATIVE].str.contains("†").any()
    cells = pd.read_csv(out / "cells.csv")
    assert set(cells.loc[cells["model"] == NATIVE, "protocol"]) == \
        {"own plans: nnUNetPlannerResEncL 3d_fullres"}
    assert set(cells.loc[cells["model"] != NATIVE, "protocol"]) == {"identical"}
    comp = pd.read_csv(out / "compute.csv").set_index("model")
    # the median over its runs of what each recorded, not the count passed for 128^3
    assert comp.loc[NATIVE, "params_m"] == pytest.approx(35.0)
    assert comp.loc[NATIVE, "gmacs"] == pytest.approx(250.0)
    assert comp.loc["nnunet-resenc", "gmacs"] == pytest.approx(10.0 * (1 + load_study("table2-plus").models.index("nnunet-resenc")))
    assert set(comp.loc[NATIVE, "patch"].split("; ")) == {"x".join(map(str, p)) for _, _, p in PLANNED.values()}


def test_report_and_run_commands_accept_table2_plus():
    import argparse

    from harness.jobs import commands as jobs_commands
    from harness.report import commands as report_commands

    for module, argv in ((report_commands, ["report", "--study", "table2-plus", "--profile", "quick"]),
                         (jobs_commands, ["run", "--study", "table2-plus"])):
        parser = argparse.ArgumentParser()
        module.register(parser.add_subparsers())
        assert parser.parse_args(argv).study == "table2-plus"
