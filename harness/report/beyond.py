"""The report's sections beyond the paper: compute beside accuracy, whether each dataset can rank
methods, the reproduction band of each paper cell, and the software stacks of the runs.

``beyond_paper`` writes ``compute.csv``/``.md``, ``suitability.csv``, ``rank_stability.csv``/
``.md``, ``reproduction.csv``/``.md``, ``published_reruns.csv``, ``stacks.csv`` and the figures
``pareto`` and ``rank_stability``, and returns the Markdown sections of ``report.md``. The rules each section
applies are stated in it (modules ``compute``, ``suitability``, ``ranking``, ``stack``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from harness.io import atomic_path, write_text
from harness.metrics.definitions import METRICS, PAPER_SDC

from . import aggregate, compute, figures, ranking, stack, suitability


def write_csv(path: Path, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def _mean_dsc(wide: pd.DataFrame, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """AVG DSC per model when any model has one, else each dataset's DSC (row title -> scores)."""
    label = METRICS["dsc"].label
    avg = wide[("avg", label)]
    if avg.notna().any():
        return {"AVG": avg.to_dict()}
    return {t: wide[(t, label)].to_dict() for t in tasks if wide[(t, label)].notna().any()}


def beyond_paper(*, expected: Sequence[Mapping], work: Path, out: Path, per_case: pd.DataFrame,
                 cells: pd.DataFrame, main: pd.DataFrame, wide: pd.DataFrame, cmp: pd.DataFrame,
                 models: Sequence[str], labels: Mapping[str, str], tasks: Sequence[str],
                 counted: Mapping[str, Mapping], iterations_per_epoch: int, recipe: str,
                 n_boot: int, seed: int, with_figures: bool, notes: list[str],
                 footnote: str = "") -> tuple[list[Path], list[str], dict]:
    """Write the files named in the module docstring; return (paths, sections, tables).

    ``main``: the nan-excluded rows of the report's scores; ``wide``: model x (task, label);
    ``cmp``: the comparison with the paper (with ``ours_metric``); ``counted``: model ->
    {"params", "gmacs"}; problems that do not stop the report go to ``notes``; ``footnote``: what
    the mark of rows outside the identical protocol means (:mod:`harness.report.protocol`).
    """
    written: list[Path] = []
    fig_dir = out / "figures"

    def tagged(df: pd.DataFrame) -> pd.DataFrame:         # rounded, and naming the recipe
        return df.round(4).assign(recipe=recipe)

    # 1. compute beside accuracy, and the Pareto figure
    comp = compute.compute_table(expected, work, models, labels, counted, iterations_per_epoch, notes)
    dsc = _mean_dsc(wide, tasks)
    costs = {"GMACs at the paper's patch" + (" (marked rows: at their planned patch)" if footnote
                                             else ""): "gmacs",
             "projected training hours per paper fold": "paper_fold_hours"}
    fronts = {f"{title} DSC against {name}": compute.front_members(comp, score, col)
              for title, score in dsc.items() for name, col in costs.items()}
    comp_md = compute.compute_markdown(comp, fronts, footnote)
    written += [write_csv(out / "compute.csv", tagged(comp)), write_text(out / "compute.md", comp_md)]
    if with_figures:
        by_model = comp.set_index("model")
        written += figures.pareto_plot(dsc, {name: by_model[col].to_dict() for name, col in costs.items()},
                                       labels, fig_dir)

    # 2. can each dataset rank methods: suitability and rank stability
    by_task = dict(zip(cells["dataset"], cells["task"]))
    folds = pd.concat([aggregate.fold_scores(per_case, m) for m in ("dsc", PAPER_SDC)],
                      ignore_index=True).assign(dataset=lambda d: d["dataset"].map(by_task))
    scores = main[main["metric"] == "dsc"].assign(dataset=lambda d: d["task"])
    suit = suitability.suitability(scores, folds[folds["metric"] == "dsc"], tasks, models)
    datasets = sorted(dict.fromkeys(cells["dataset"]),
                      key=lambda d: list(tasks).index(by_task[d]) if by_task[d] in tasks else len(tasks))
    ranks, left = ranking.rank_stability(per_case, datasets, models, labels, n_boot, seed)
    rank_md = ranking.rank_markdown(ranks, left, labels, n_boot, seed)
    written += [write_csv(out / "suitability.csv", tagged(suit)),
                write_csv(out / "rank_stability.csv", tagged(ranks)),
                write_text(out / "rank_stability.md", rank_md)]
    if with_figures:
        written += figures.rank_blobs(ranks, fig_dir)

    # 3. reproduction band of each paper cell
    from .paper import load_paper_table, load_rerun_table
    published = suitability.published_differences(load_paper_table("table2"), load_rerun_table())
    rep = suitability.reproduction(cmp, folds, published=suitability.published_bands(published))
    rep_md = suitability.reproduction_markdown(rep, published)
    written += [write_csv(out / "reproduction.csv", tagged(rep)),
                write_csv(out / "published_reruns.csv", published),
                write_text(out / "reproduction.md", rep_md)]

    # 4. software stacks
    stacks = stack.stack_table(expected, work)
    written.append(write_csv(out / "stacks.csv", tagged(stacks)))

    sections = [
        "## Compute beside accuracy (compute.csv)", "", comp_md,
        "## Can each dataset rank methods?", "",
        "### Dataset suitability (suitability.csv)", "", suitability.suitability_markdown(suit),
        "### Rank stability over case resamples (rank_stability.csv, figures/rank_stability)", "",
        rank_md,
        "## Reproduction band of each paper cell (reproduction.csv)", "", rep_md,
        "## Software stacks of the runs (stacks.csv)", "",
        "Distinct stacks recorded by the runs' attempts (run.json), with the runs that used each; "
        "known regressions are checked as data with their sources.", "",
        stack.stack_markdown(stacks)]
    return written, sections, {"compute": comp, "suitability": suit, "rank_stability": ranks,
                               "reproduction": rep, "stacks": stacks}


def counted_models(models: Sequence[str], cells: pd.DataFrame, compute_source) -> list[str]:
    """The models whose networks are counted: all of them when the figures are given as a
    mapping; else those with a finished cell (a report of cells that never ran builds nothing)."""
    if isinstance(compute_source, Mapping):
        return list(models)
    ran = set(cells.loc[cells["state"] == "ok", "model"])
    return [m for m in models if m in ran]

