"""Build every report of a study from the stored per-case tables (no training, seconds).

``make_report(study, profile, work, out)`` collects the declared cells, aggregates them as the
paper does, adds bootstrap intervals, paired tests and ranks, renders the paper's table
(Table 2 or Table 1 right) with the paper's marks computed from our numbers, puts the paper's
own numbers beside ours, lists each model's training recipe as run, draws the figures and writes
a header that states the protocol (``header``).

Surface Dice appears in both conventions in every table, test and rank, each under its label
(``SDC (1 mm)``: header spacing; ``SDC (1 voxel)``: spacing (1,1,1), what the official MedNeXt
evaluation computed). The comparison with the paper uses the 1-voxel values, the convention of
the paper's SDC numbers (``harness.metrics.definitions.PAPER_SDC``). Every CSV is long, with
``metric`` and ``convention`` columns where a metric appears, and names the recipe.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from harness.io import write_text
from harness.metrics.definitions import METRICS, PAPER_SDC
from harness.metrics.regions import paper_classes, task_of
from harness.studies import load_profile, load_study, results_root
from harness.studies.options import RunOptions

from . import aggregate, figures, paper, protocol, recipes, stats, tables
from .beyond import beyond_paper, counted_models
from .beyond import write_csv as _csv
from .collect import collect
from .compute import model_compute
from .header import header_text, metric_info, problems_text, sdc_lines
from .runinfo import read_progress

MARK_RULES = {
    "table2": "bold = MedNeXt cell >= best baseline of the column; underline = kernel 5 > "
              "kernel 3 of the same configuration.",
    "group-best": "bold = best of its comparison.",
}
# The table's columns per dataset: DSC, then surface Dice in both conventions.
TABLE_METRICS = ("dsc", "nsd_phys", "nsd_mednext_code")
# Our column compared with each of the paper's metrics (its SDC is a 1-voxel SDC).
PAPER_COLUMNS = {METRICS["dsc"].label: "DSC", METRICS[PAPER_SDC].label: "SDC"}


def _with_convention(df: pd.DataFrame, column: str = "metric") -> pd.DataFrame:
    """``df`` with a ``convention`` column after ``column`` (a metric key; empty for DSC, HD95)."""
    out = df.copy()
    out.insert(out.columns.get_loc(column) + 1, "convention",
               out[column].map(lambda m: METRICS[m].convention if m in METRICS else ""))
    return out


def score_table(per_case: pd.DataFrame, metrics: Sequence[str], n_boot: int, seed: int,
                variants: Sequence[str] = aggregate.VARIANTS,
                ci_variants: Sequence[str] = ("nan-excluded",)) -> pd.DataFrame:
    """(dataset, task, model, metric, variant, score, ci_lo, ci_hi, n_cases, n_folds) for all cells.

    Intervals are computed for ``ci_variants`` only (the others get NaN) to keep reports fast.
    """
    rows = []
    for metric in metrics:
        for variant in variants:
            sub = aggregate.select(per_case, metric, variant)
            for (dataset, model), g in sub.groupby(["dataset", "model"], sort=False):
                m = aggregate.to_matrix(g, paper_classes(dataset))
                lo, hi = (stats.bootstrap_ci(m, n_boot=n_boot, seed=seed) if variant in ci_variants
                          else (np.nan, np.nan))
                rows.append({"dataset": dataset, "task": task_of(dataset), "model": model,
                             "metric": metric, "variant": variant,
                             "score": aggregate.score_from_matrix(m), "ci_lo": lo, "ci_hi": hi,
                             "n_cases": int(m.shape[0]), "n_folds": int(g["fold"].nunique())})
    return pd.DataFrame(rows, columns=["dataset", "task", "model", "metric", "variant", "score",
                                       "ci_lo", "ci_hi", "n_cases", "n_folds"])


def _wide(scores: pd.DataFrame, models, tasks, labels: Mapping[str, str], value: str) -> pd.DataFrame:
    """model x (task, label) from the long scores (``labels``: metric -> column label)."""
    sub = scores[scores["metric"].isin(labels)].assign(
        dataset=lambda d: d["task"], metric=lambda d: d["metric"].map(labels))
    return aggregate.wide_scores(sub, models, tasks, list(labels.values()), value=value)


def _figures(per_case: pd.DataFrame, cells: pd.DataFrame, work: Path, fig_dir: Path, models,
             labels: Mapping[str, str], tasks, avg: Mapping[str, float],
             counted: Mapping[str, Mapping], notes: list[str]) -> list[Path]:
    """The paper-side figures; problems that do not stop the report (an unreadable
    progress.csv) are appended to ``notes``."""
    by_task = {"dataset": lambda d: d["dataset"].map(task_of)}
    written = figures.case_boxplots(aggregate.case_means(per_case, "dsc").assign(**by_task),
                                    models, labels, tasks, fig_dir)
    pcm = (aggregate.class_means(per_case, "dsc").assign(**by_task) if len(per_case)
           else pd.DataFrame(columns=["dataset", "model", "class", "mean"]))
    written += figures.class_heatmap(pcm, models, labels, tasks, fig_dir)
    written += figures.compute_plot(avg, counted, labels, fig_dir)
    progress = {}
    for r in cells.itertuples(index=False):
        folder = work / "runs" / str(r.run_id)
        try:
            df = read_progress(folder)
        except (OSError, ValueError) as exc:
            notes.append(f"{folder / 'progress.csv'}: unreadable ({exc})")
            continue
        if df is not None:
            progress[(task_of(r.dataset), r.model, int(r.fold))] = df
    written += figures.training_curves(progress, labels, tasks, fig_dir)
    return written


def make_report(study: str, profile: str, work: str | Path = "work", out: str | Path | None = None,
                *, n_boot: int = stats.DEFAULT_BOOT, seed: int = stats.DEFAULT_SEED,
                expected: Sequence[dict] | None = None, compute: Mapping | Callable | None = None,
                paper_root: str | Path | None = None, with_figures: bool = True,
                options: RunOptions | None = None) -> dict:
    """Write every report of ``study``/``profile`` (under ``options``, default the paper's
    protocol) into ``out``.

    ``out`` defaults to ``results_root() / "<study>-<profile><suffix>"`` (``$MEDNEXT_BENCH_RESULTS``
    or ``./results``, see :func:`harness.studies.results_root`; the suffix names the options that
    differ from the defaults, :meth:`RunOptions.suffix`).

    ``expected`` (the declared cells) defaults to ``harness.studies.runs.expected_runs``; ``compute``
    (model -> {"params", "gmacs"}) to ``harness.registry.compute_summary``. A declared cell may
    carry its resolved ``recipe`` and ``settings`` (shown for a cell that never ran; otherwise the
    registry resolves them). Returns the paths written, the collection and the timings.
    """
    t0 = time.perf_counter()
    st, prof = load_study(study), load_profile(profile)
    work = Path(work)
    options = (options or RunOptions()).resolved(prof)
    out = Path(out) if out is not None else results_root() / options.report_name(study, prof)
    if expected is None:
        from harness.studies.runs import expected_runs
        expected = expected_runs(study, profile, work, options=options)
    col = collect(expected, work)
    own = protocol.own_plans(expected)      # rows outside the identical protocol, marked
    own_note = protocol.footnote(own, {r.model: r.label for r in st.rows})
    st = protocol.marked_study(st, own)
    per_case = col.per_case
    cells = col.cells.assign(protocol=col.cells["model"].map(lambda m: protocol.protocol_of(m, own)))
    models, tasks = list(st.models), list(st.datasets)
    labels = {}
    for r in st.rows:
        labels.setdefault(r.model, r.label)
    # Figures need one name per model: a label shared by two models (MedNeXt-S with kernel 3
    # and 5) falls back to the model name.
    shared = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
    printed, labels = labels, {m: (m if lab in shared else lab) for m, lab in labels.items()}
    written: list[Path] = []

    def tagged(df: pd.DataFrame) -> pd.DataFrame:     # every result CSV names its recipe
        return df.assign(recipe=options.recipe)

    scores = _with_convention(score_table(per_case, list(METRICS), n_boot, seed))
    main = scores[scores["variant"] == "nan-excluded"]
    shown = {m: METRICS[m].label for m in TABLE_METRICS}
    marks = "table2" if st.paper_table == "table2" else "group-best"

    def table_of(value: str, caption: str = "") -> tables.Table:
        w = _wide(main, models, tasks, shown, value)
        if value != "score":    # a mean of interval bounds is no interval: AVG gets none
            w.loc[:, [c for c in w.columns if c[0] == "avg"]] = np.nan
        return tables.build_table(st.paper_table, st.rows, w, tasks, caption, marks,
                                  metrics=tuple(shown.values()), with_avg=st.paper_table == "table2")

    sdc_note = (f"{shown['nsd_phys']}: header spacing, tolerance 1 mm; {shown[PAPER_SDC]}: "
                "spacing (1,1,1), tolerance 1, as the official MedNeXt evaluation computed it "
                "(the convention of the paper's SDC numbers)")
    table = table_of("score", f"{st.title} [ours; recipe {options.recipe}; {prof.name} profile, "
                              f"{prof.data} data]. {sdc_note}.")
    lo, hi = (table_of(v).values for v in ("ci_lo", "ci_hi"))
    wide = _wide(main, models, tasks, shown, "score")
    by_label = {lab: m for m, lab in shown.items()}
    long = tables.to_long(table)
    long.insert(long.columns.get_loc("column") + 1, "metric", long["column"].map(by_label))
    long = _with_convention(long).assign(ci_lo=lo.to_numpy().ravel().round(4),
                                         ci_hi=hi.to_numpy().ravel().round(4))

    stem = out / st.paper_table
    sdc_md = "".join(f"- {line}\n" for line in sdc_lines()) + (f"- {own_note}\n" if own_note else "")
    tex_table = dataclasses.replace(table, caption=f"{table.caption} {own_note}".strip())
    written += [write_text(stem.with_suffix(".md"), tables.to_markdown(table) + "\n" + sdc_md),
                write_text(stem.with_suffix(".tex"), tables.to_latex(tex_table)),
                _csv(stem.with_suffix(".csv"), tagged(long))]
    cmp = paper.compare(table, lo, hi, paper.load_paper_table(st.paper_table, paper_root),
                        columns=PAPER_COLUMNS)
    cmp.insert(cmp.columns.get_loc("column") + 1, "ours_metric", cmp["column"].map(by_label))
    cmp = _with_convention(cmp, "ours_metric")
    written.append(_csv(out / f"{st.paper_table}_vs_paper.csv", tagged(cmp)))

    tests, ranks = [], []
    baselines = [r.model for r in st.rows if r.group in tables.BASELINE_GROUPS]
    for metric, label in shown.items():
        cv = aggregate.case_means(per_case, metric).assign(dataset=lambda d: d["dataset"].map(task_of))
        sc = main[main["metric"] == metric].assign(dataset=lambda d: d["task"])
        tests.append(stats.paired_tests(cv, sc, metric, models, baselines,
                                        METRICS[metric].higher_is_better))
        r = stats.mean_ranks(wide.xs(label, axis=1, level="metric").drop(columns="avg"),
                             METRICS[metric].higher_is_better)
        ranks.append(pd.DataFrame({"model": r.index, "label": r.index.map(labels),
                                   "metric": metric, "mean_rank": r.to_numpy()}))
    tests_df = _with_convention(pd.concat(tests, ignore_index=True))
    ranks_df = _with_convention(pd.concat(ranks, ignore_index=True))
    per_class = (_with_convention(pd.concat([aggregate.class_means(per_case, m).assign(metric=m)
                                             for m in METRICS], ignore_index=True))
                 if len(per_case) else pd.DataFrame())
    rec = recipes.recipe_table(expected, work, options, printed)
    written += [_csv(out / "scores.csv", tagged(scores)), _csv(out / "tests.csv", tagged(tests_df)),
                _csv(out / "ranks.csv", tagged(ranks_df)),
                _csv(out / "per_class.csv", tagged(per_class)),
                _csv(out / "cells.csv", tagged(cells)), _csv(out / "recipes.csv", rec),
                _csv(out / "metric_info.csv", metric_info())]

    notes: list[str] = []
    # a model with its own plans is counted at the patch its runs were planned with, never at
    # the paper's 128^3 (the registry's count)
    counted, note = model_compute([m for m in counted_models(models, cells, compute)
                                   if m not in own or isinstance(compute, Mapping)], compute)
    counted = {**counted, **protocol.planned_counts(expected, work, own)}
    if note:
        notes.append(note)
    if with_figures:
        avg = wide[("avg", "DSC")].to_dict()
        written += _figures(per_case, cells, work, out / "figures", models, labels, tasks, avg,
                            counted, notes)
    extra, sections, beyond = beyond_paper(
        expected=expected, work=work, out=out, per_case=per_case, cells=cells, main=main,
        wide=wide, cmp=cmp, models=models, labels=labels, tasks=tasks, counted=counted,
        iterations_per_epoch=prof.iterations_per_epoch, recipe=options.recipe, n_boot=n_boot,
        seed=seed, with_figures=with_figures, notes=notes, footnote=own_note)
    written += extra

    header = header_text(st, prof, cells, per_case, n_boot, seed, options)
    if own_note:
        header += f"- Rows outside the identical protocol: {own_note}\n"
    rank_view = (ranks_df.pivot(index="model", columns="metric", values="mean_rank")
                 .reindex(index=models, columns=list(shown)).round(2).rename(columns=shown))
    rank_view.insert(0, "label", rank_view.index.map(labels))
    body = [header, "## " + st.title, "", tables.to_markdown(table),
            "Marks computed from our numbers at two decimals, each column on its own (so each "
            "surface Dice convention separately): " + MARK_RULES[marks], "", sdc_md,
            f"## Training recipes (recipe: {options.recipe})", "",
            "As run: read from each run's run.json; a model with cells that never ran shows what "
            "they would run with (\"declared, not run\"). Values that differ between datasets "
            "are listed after the common one.", "", recipes.recipe_markdown(rec, models),
            "## Paired tests (per-case class means; median difference, Holm-adjusted p; * p < 0.05)",
            "", _tests_markdown(tests_df, labels),
            "## Beside the paper (percent; CI = our 95% bootstrap interval)", "",
            f"The paper's SDC cells are compared with our {shown[PAPER_SDC]} values, the "
            "convention the paper's numbers were computed in (the official evaluation passed "
            f"spacing [1,1,1]); our {shown['nsd_phys']} values have no printed counterpart. "
            "DSC has no convention.", "",
            paper.comparison_markdown(cmp), "## Mean rank over datasets (1 = best)", "",
            tables.md_frame(rank_view.rename_axis("model").reset_index()), "",
            *sections, "## Missing and failed cells", "", problems_text(cells)]
    if notes:
        body += ["## Notes", ""] + [f"- {n}" for n in notes]
    written += [write_text(out / "header.md", header), write_text(out / "report.md", "\n".join(body) + "\n")]
    return {"out": out, "written": written, "collection": col, "scores": scores, "table": table,
            "comparison": cmp, "tests": tests_df, "ranks": ranks_df, "recipes": rec, **beyond,
            "seconds": round(time.perf_counter() - t0, 2)}


def _tests_markdown(tests: pd.DataFrame, labels: Mapping[str, str]) -> str:
    if tests.empty:
        return "No pairs to test.\n"
    out = []
    for kind, g in tests.groupby("comparison", sort=False):
        g = g.assign(col=g["dataset"] + " " + g["metric"].map(lambda m: METRICS[m].label),
                     cell=[f"{100 * d:+.2f} (p={p:.2g}){'*' if s else ''}" if not np.isnan(p) else "–"
                           for d, p, s in zip(g["median_diff"], g["p_holm"], g["significant"])])
        wide = g.pivot_table(index="model", columns="col", values="cell", aggfunc="first", sort=False)
        against = ", ".join(f"{d}: {labels.get(a, a)}" for d, a in
                            g.drop_duplicates("dataset")[["dataset", "against"]].itertuples(index=False))
        out.append(f"**{kind}** ({against})\n")
        named = wide.rename(index=lambda m: labels.get(m, m)).rename_axis("model").reset_index()
        out.append(tables.md_frame(named))
    return "\n".join(out)
