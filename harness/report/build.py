"""Build every report of a study from the stored per-case tables (no training, seconds).

``make_report(study, profile, work, out)`` collects the declared cells, aggregates them as the
paper does, adds bootstrap intervals, paired tests and ranks, renders the paper's table
(Table 2 or Table 1 right) with the paper's marks computed from our numbers, puts the paper's
own numbers beside ours, draws the figures and writes a header that states the protocol
(profile, data, folds, surface Dice convention, library versions, empty-mask counts).
"""
from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from harness.io import atomic_path, write_text
from harness.metrics.definitions import (AGGREGATION, COUNTS, DEFAULT_SDC, METRICS, SDC_CONVENTIONS,
                                        TOLERANCE_MM)
from harness.metrics.regions import paper_classes, task_of
from harness.studies import load_profile, load_study, results_root
from harness.studies.options import RunOptions

from . import aggregate, figures, paper, stats, tables
from .collect import collect

MARK_RULES = {
    "table2": "bold = MedNeXt cell >= best baseline of the column; underline = kernel 5 > "
              "kernel 3 of the same configuration.",
    "group-best": "bold = best of its comparison.",
}
LIBRARIES = ("surface-distance", "numpy", "scipy", "pandas", "SimpleITK", "matplotlib", "nnunetv2")


def metric_info() -> pd.DataFrame:
    """The metadata of every stored quantity, written beside the numbers it describes."""
    rows = [{"metric": m.name, "label": m.label, "unit": m.unit,
             "display_scale": m.scale, "higher_is_better": m.higher_is_better, "best": m.best,
             "one_empty": "0" if m.one_empty == "zero" else "image diagonal (mm)",
             "both_empty": "NaN, excluded (variant nan-as-best: best)",
             "aggregation": AGGREGATION, "description": m.description} for m in METRICS.values()]
    rows += [{"metric": k, "label": k, "unit": "mm^3" if k.startswith("vol") else "voxels",
              "description": v, "aggregation": "not aggregated"} for k, v in COUNTS.items()]
    return pd.DataFrame(rows)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _csv(path: Path, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


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


def header_text(study, prof, cells: pd.DataFrame, per_case: pd.DataFrame, sdc: str,
                n_boot: int, seed: int, options: RunOptions | None = None) -> str:
    counts = aggregate.empty_counts(per_case) if len(per_case) else pd.DataFrame()
    states = cells["state"].value_counts().to_dict()
    lines = [
        f"# {study.title}",
        "",
        f"- Profile: **{prof.name}** ({prof.description}) -- data: **{prof.data}**"
        + (" (phantoms: synthetic volumes, numbers say nothing about the paper's datasets)"
           if prof.data == "phantom" else ""),
        "- Data (every cell of a dataset comes from runs on this one version of it; "
        "fingerprint = SHA-256 of dataset.json and every image and label file): "
        + _data_text(cells),
        f"- Folds: {', '.join(map(str, prof.folds))} (validation cases pooled over folds); "
        f"epochs {prof.epochs} x {prof.iterations_per_epoch} iterations",
        "- Options: " + "; ".join((options or RunOptions()).describe(prof)),
        f"- Cells: {len(cells)} declared; " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())),
        f"- DSC: volumetric Dice. SDC shown: **{sdc}** = {SDC_CONVENTIONS[sdc]}; "
        f"tolerance {TOLERANCE_MM} (DeepMind surface-distance surfels; the other convention is "
        "in scores.csv and in the report)",
        f"- Aggregation: {AGGREGATION}. AVG = mean over datasets, empty when one is missing.",
        "- Empty masks: both empty -> NaN, excluded (variant `nan-as-best`: counted as 1 / 0 mm); "
        "one empty -> 0 for DSC and SDC, image diagonal in mm for HD95",
        f"- Intervals: 95% percentile bootstrap over cases, {n_boot} resamples, seed {seed}; "
        "paired two-sided Wilcoxon signed-rank, Holm within dataset x metric x comparison",
        "- Libraries: " + ", ".join(f"{n} {_version(n)}" for n in LIBRARIES),
    ]
    if len(counts):
        lines.append("- (case, class) pairs touched by each empty-mask rule, all classes:")
        for r in counts.itertuples(index=False):
            lines.append(f"  - {r.dataset}: {r.pairs} pairs; both empty (NaN) {r.both_empty}; "
                         f"reference empty only {r.ref_empty_only}; prediction empty only "
                         f"{r.pred_empty_only}")
    return "\n".join(lines) + "\n"


def _data_text(cells: pd.DataFrame) -> str:
    if "data_fingerprint" not in cells.columns or cells.empty:
        return "none declared"
    parts = []
    for dataset, g in cells.groupby("dataset", sort=False):
        fps = sorted({str(f)[:12] for f in g["data_fingerprint"] if isinstance(f, str) and f})
        parts.append(f"{dataset} {', '.join(fps) if fps else 'not planned in this work folder'}")
    return "; ".join(parts)


def _problems_text(cells: pd.DataFrame) -> str:
    bad = cells[cells["state"] != "ok"]
    if bad.empty:
        return "All declared cells are present.\n"
    lines = ["| Dataset | Model | Fold | State | Run | Detail |", "|:--|:--|--:|:--|:--|:--|"]
    for r in bad.itertuples(index=False):
        detail = str(r.detail).replace("|", "/").replace("\n", " ")[:160]
        lines.append(f"| {r.dataset} | {r.model} | {r.fold} | {r.state} | {r.run_id} | {detail} |")
    return "\n".join(lines) + "\n"


def _compute_figures(models, compute: Mapping | Callable | None) -> tuple[dict, str]:
    if isinstance(compute, Mapping):
        return dict(compute), ""
    if compute is None:
        try:
            from harness.registry import compute_summary as compute
        except ImportError as exc:
            return {}, f"compute figures unavailable: {exc}"
    out, errors = {}, []
    for m in models:
        try:
            out[m] = compute(m)
        except Exception as exc:       # a model the registry cannot count is named, not fatal
            errors.append(f"{m}: {type(exc).__name__}: {exc}")
    return out, "; ".join(errors)


def _figures(per_case: pd.DataFrame, cells: pd.DataFrame, work: Path, fig_dir: Path, models,
             labels: Mapping[str, str], tasks, avg: Mapping[str, float],
             compute: Mapping | Callable | None, notes: list[str]) -> list[Path]:
    """All figures; problems that do not stop the report (a model without compute figures, an
    unreadable progress.csv) are appended to ``notes``."""
    by_task = {"dataset": lambda d: d["dataset"].map(task_of)}
    written = figures.case_boxplots(aggregate.case_means(per_case, "dsc").assign(**by_task),
                                    models, labels, tasks, fig_dir)
    pcm = (aggregate.class_means(per_case, "dsc").assign(**by_task) if len(per_case)
           else pd.DataFrame(columns=["dataset", "model", "class", "mean"]))
    written += figures.class_heatmap(pcm, models, labels, tasks, fig_dir)
    # Only models with an AVG score are plotted: count only those (the registry builds each).
    comp, note = _compute_figures([m for m in models if not np.isnan(avg.get(m, np.nan))], compute)
    if note:
        notes.append(note)
    written += figures.compute_plot(avg, comp, labels, fig_dir)
    progress = {}
    for r in cells.itertuples(index=False):
        path = work / "runs" / str(r.run_id) / "progress.csv"
        if path.is_file():
            try:
                progress[(task_of(r.dataset), r.model, int(r.fold))] = pd.read_csv(path)
            except (OSError, ValueError) as exc:
                notes.append(f"{path}: unreadable ({exc})")
    written += figures.training_curves(progress, labels, tasks, fig_dir)
    return written


def make_report(study: str, profile: str, work: str | Path = "work", out: str | Path | None = None,
                *, sdc: str = DEFAULT_SDC, n_boot: int = stats.DEFAULT_BOOT, seed: int = stats.DEFAULT_SEED,
                expected: Sequence[dict] | None = None, compute: Mapping | Callable | None = None,
                paper_root: str | Path | None = None, with_figures: bool = True,
                options: RunOptions | None = None) -> dict:
    """Write every report of ``study``/``profile`` (under ``options``, default the paper's
    protocol) into ``out``.

    ``out`` defaults to ``results_root() / "<study>-<profile><suffix>"`` (``$MEDNEXT_BENCH_RESULTS``
    or ``./results``, see :func:`harness.studies.results_root`; the suffix names the options that
    differ from the defaults, :meth:`RunOptions.suffix`).

    ``expected`` (the declared cells) defaults to ``harness.studies.runs.expected_runs``; ``compute``
    (model -> {"params", "gmacs"}) to ``harness.registry.compute_summary``. Returns the paths
    written, the collection and the timings.
    """
    t0 = time.perf_counter()
    if sdc not in SDC_CONVENTIONS:
        raise ValueError(f"unknown surface Dice convention {sdc!r}; known: {', '.join(SDC_CONVENTIONS)}")
    st, prof = load_study(study), load_profile(profile)
    work = Path(work)
    options = (options or RunOptions()).resolved(prof)
    out = (Path(out) if out is not None
           else results_root() / f"{study}-{profile}{options.suffix(prof)}")
    if expected is None:
        from harness.studies.runs import expected_runs
        expected = expected_runs(study, profile, work, options=options)
    col = collect(expected, work)
    per_case, cells = col.per_case, col.cells
    models, tasks = list(st.models), list(st.datasets)
    labels = {}
    for r in st.rows:
        labels.setdefault(r.model, r.label)
    # Figures need one name per model: a label shared by two models (MedNeXt-S with kernel 3
    # and 5) falls back to the model name.
    shared = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
    labels = {m: (m if lab in shared else lab) for m, lab in labels.items()}
    other_sdc = next(k for k in SDC_CONVENTIONS if k != sdc)
    written: list[Path] = []

    scores = score_table(per_case, list(METRICS), n_boot, seed)
    main = scores[scores["variant"] == "nan-excluded"]
    shown = {"dsc": "DSC", sdc: "SDC"}
    marks = "table2" if study == "table2" else "group-best"

    def table_of(value: str, sdc_key: str, caption: str) -> tables.Table:
        w = _wide(main, models, tasks, {"dsc": "DSC", sdc_key: "SDC"}, value)
        if value != "score":    # a mean of interval bounds is no interval: AVG gets none
            w.loc[:, [c for c in w.columns if c[0] == "avg"]] = np.nan
        return tables.build_table(st.paper_table, st.rows, w, tasks, caption, marks,
                                  with_avg=study == "table2")

    table = table_of("score", sdc, f"{st.title} [ours; SDC = {sdc}; {prof.name} profile, "
                                   f"{prof.data} data]")
    lo, hi = (table_of(v, sdc, "").values for v in ("ci_lo", "ci_hi"))
    alt = table_of("score", other_sdc, f"Same table with SDC = {other_sdc}")
    wide = _wide(main, models, tasks, shown, "score")

    stem = out / st.paper_table
    written += [write_text(stem.with_suffix(".md"), table.caption + "\n\n" + tables.to_markdown(table)),
                write_text(stem.with_suffix(".tex"), tables.to_latex(table)),
                _csv(stem.with_suffix(".csv"), tables.to_frame(table).assign(sdc=sdc))]
    cmp = paper.compare(table, lo, hi, paper.load_paper_table(st.paper_table, paper_root))
    written.append(_csv(out / f"{st.paper_table}_vs_paper.csv", cmp.assign(sdc=sdc)))

    tests, ranks = [], {}
    baselines = [r.model for r in st.rows if r.group in tables.BASELINE_GROUPS]
    for metric, label in shown.items():
        cv = aggregate.case_means(per_case, metric).assign(dataset=lambda d: d["dataset"].map(task_of))
        sc = main[main["metric"] == metric].assign(dataset=lambda d: d["task"])
        tests.append(stats.paired_tests(cv, sc, metric, models, baselines,
                                        METRICS[metric].higher_is_better))
        ranks[label] = stats.mean_ranks(wide.xs(label, axis=1, level="metric").drop(columns="avg"),
                                        METRICS[metric].higher_is_better)
    tests_df = pd.concat(tests, ignore_index=True)
    ranks_df = pd.DataFrame(ranks).rename_axis("model").reset_index()
    ranks_df.insert(1, "label", ranks_df["model"].map(labels))
    per_class = pd.concat([aggregate.class_means(per_case, m).assign(metric=m) for m in METRICS],
                          ignore_index=True) if len(per_case) else pd.DataFrame()
    written += [_csv(out / "scores.csv", scores), _csv(out / "tests.csv", tests_df),
                _csv(out / "ranks.csv", ranks_df), _csv(out / "per_class.csv", per_class),
                _csv(out / "cells.csv", cells), _csv(out / "metric_info.csv", metric_info())]

    notes: list[str] = []
    if with_figures:
        avg = wide[("avg", "DSC")].to_dict()
        written += _figures(per_case, cells, work, out / "figures", models, labels, tasks, avg,
                            compute, notes)

    header = header_text(st, prof, cells, per_case, sdc, n_boot, seed, options)
    body = [header, "## " + st.title, "", tables.to_markdown(table),
            "Marks computed from our numbers at two decimals: " + MARK_RULES[marks],
            "", "## Same table, other surface Dice convention", "", tables.to_markdown(alt),
            "## Paired tests (per-case class means; median difference, Holm-adjusted p; * p < 0.05)",
            "", _tests_markdown(tests_df, labels),
            "## Beside the paper (percent; CI = our 95% bootstrap interval)", "",
            paper.comparison_markdown(cmp), "## Mean rank over datasets (1 = best)", "",
            _md_frame(ranks_df.round(2)),
            "", "## Missing and failed cells", "", _problems_text(cells)]
    if notes:
        body += ["## Notes", ""] + [f"- {n}" for n in notes]
    written += [write_text(out / "header.md", header), write_text(out / "report.md", "\n".join(body) + "\n")]
    return {"out": out, "written": written, "collection": col, "scores": scores, "table": table,
            "comparison": cmp, "tests": tests_df, "ranks": ranks_df,
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
        out.append(_md_frame(named))
    return "\n".join(out)


def _md_frame(df: pd.DataFrame) -> str:
    """A plain Markdown table (pandas' ``to_markdown`` needs ``tabulate``, not a dependency)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("--:" if pd.api.types.is_numeric_dtype(df[c]) else ":--" for c in df.columns) + "|"
    body = ["| " + " | ".join("–" if pd.isna(v) else str(v) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, rule] + body) + "\n"
