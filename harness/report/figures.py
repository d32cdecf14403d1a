"""Report figures (matplotlib, Agg backend; each saved as PNG and PDF).

- per-case DSC box plots, one panel per dataset, one box per model (class-averaged per case);
- per-class heat map of the mean DSC (model x class), one panel per dataset;
- accuracy against compute: AVG DSC against parameters and GMACs (values from
  ``harness.registry.compute_summary``, or injected);
- training curves from each run's ``progress.csv`` (train/validation loss, pseudo Dice);
- the Pareto figure: mean DSC against GMACs and against projected training hours, with the
  front of the models that no other beats on both (``compute``);
- rank stability: a blob plot of each method's rank over case resamples (``ranking``).
Beyond the paper, which shows none of these (MedNeXt Fig. 1 plots no accuracy-compute trade-off).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    from harness.io import atomic_path

    fig.tight_layout()      # once here, not bbox_inches="tight" (an extra draw per file)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        with atomic_path(out_dir / f"{stem}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=100)
        paths.append(out_dir / f"{stem}.{ext}")
    _plt().close(fig)
    return paths


def case_boxplots(case_values: pd.DataFrame, models: Sequence[str], labels: Mapping[str, str],
                  datasets: Sequence[str], out_dir: Path, metric_label: str = "DSC") -> list[Path]:
    """``case_values``: (dataset, model, case, value) in fractions."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        sub = case_values[case_values["dataset"] == dataset]
        present = [m for m in models if m in set(sub["model"])]
        data = [sub.loc[sub["model"] == m, "value"].dropna().to_numpy() * 100 for m in present]
        if data:
            ax.boxplot(data, showfliers=True, flierprops={"markersize": 2})
            ax.set_xticks(range(1, len(present) + 1), [labels.get(m, m) for m in present],
                          rotation=70, fontsize=7)
        else:
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(dataset)
        ax.set_ylabel(f"per-case {metric_label} (%)")
    return _save(fig, out_dir, f"boxplot_{metric_label.lower()}")


def class_heatmap(means: pd.DataFrame, models: Sequence[str], labels: Mapping[str, str],
                  datasets: Sequence[str], out_dir: Path, metric_label: str = "DSC") -> list[Path]:
    """``means``: (dataset, model, class, mean) in fractions."""
    plt = _plt()
    fig, axes = plt.subplots(len(datasets), 1, figsize=(11, 3.0 + 0.25 * len(models)) if len(datasets) == 1
                             else (11, (1.2 + 0.25 * len(models)) * len(datasets)), squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets):
        sub = means[means["dataset"] == dataset]
        grid = sub.pivot_table(index="model", columns="class", values="mean", aggfunc="first")
        classes = list(dict.fromkeys(sub["class"]))
        rows = [m for m in models if m in grid.index]
        if not rows:
            ax.text(0.5, 0.5, f"{dataset}: no runs", ha="center", va="center", transform=ax.transAxes)
            ax.axis("off")
            continue
        grid = grid.loc[rows, classes] * 100
        im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=0, vmax=100)
        ax.set_yticks(range(len(rows)), [labels.get(m, m) for m in rows], fontsize=7)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{dataset}: mean {metric_label} per class (%)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02)
    return _save(fig, out_dir, f"heatmap_{metric_label.lower()}")


def compute_plot(avg: Mapping[str, float], compute: Mapping[str, Mapping], labels: Mapping[str, str],
                 out_dir: Path, metric_label: str = "DSC") -> list[Path]:
    """AVG score (fractions) against parameters (millions) and GMACs; ``compute[m]`` has both."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    models = [m for m in avg if m in compute and not np.isnan(avg[m])]
    for ax, key, xlabel in ((axes[0], "params", "parameters (M)"), (axes[1], "gmacs", "GMACs")):
        for m in models:
            x = compute[m][key] / (1e6 if key == "params" else 1.0)
            ax.scatter(x, avg[m] * 100, s=18)
            ax.annotate(labels.get(m, m), (x, avg[m] * 100), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"AVG {metric_label} (%)")
    if not models:
        axes[0].text(0.5, 0.5, "no runs with compute figures", ha="center", va="center",
                     transform=axes[0].transAxes)
    return _save(fig, out_dir, "accuracy_vs_compute")


def training_curves(progress: Mapping[tuple[str, str, int], pd.DataFrame], labels: Mapping[str, str],
                    datasets: Sequence[str], out_dir: Path) -> list[Path]:
    """``progress[(dataset, model, fold)]``: a ``progress.csv`` frame (epoch, train_loss, ...)."""
    plt = _plt()
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.2 * len(datasets)), squeeze=False)
    colours: dict[str, str] = {}
    for row, dataset in zip(axes, datasets):
        named: set[str] = set()
        for (d, model, fold), df in sorted(progress.items()):
            if d != dataset or "epoch" not in df:
                continue
            # One colour and one legend entry per model; its folds share them.
            colour = colours.setdefault(model, f"C{len(colours) % 10}")
            name = None if model in named else labels.get(model, model)
            named.add(model)
            if "train_loss" in df:
                row[0].plot(df["epoch"], df["train_loss"], "-", lw=0.8, color=colour, label=name)
            if "val_loss" in df:
                row[0].plot(df["epoch"], df["val_loss"], "--", lw=0.8, color=colour)
            if "pseudo_dice" in df:
                row[1].plot(df["epoch"], df["pseudo_dice"], lw=0.8, color=colour)
        row[0].set_title(f"{dataset}: loss (solid train, dashed validation)", fontsize=9)
        row[1].set_title(f"{dataset}: pseudo Dice", fontsize=9)
        for ax in row:
            ax.set_xlabel("epoch")
        if row[0].get_legend_handles_labels()[0]:
            row[0].legend(fontsize=5, ncol=2)
    return _save(fig, out_dir, "training_curves")


def pareto_plot(scores: Mapping[str, Mapping[str, float]], costs: Mapping[str, Mapping[str, float]],
                labels: Mapping[str, str], out_dir: Path, metric_label: str = "DSC") -> list[Path]:
    """Mean score against each cost, one labelled point per model, the Pareto front (highest
    score for the cost) drawn as a staircase. ``scores``: row title (AVG, or a dataset) ->
    model -> score in fractions; ``costs``: axis label -> model -> cost."""
    from .compute import pareto_front

    plt = _plt()
    rows = dict(scores) or {"no runs": {}}
    fig, axes = plt.subplots(len(rows), len(costs), figsize=(5.2 * len(costs), 4.2 * len(rows)),
                             squeeze=False)
    for ax_row, (title, score) in zip(axes, rows.items()):
        for ax, (xlabel, cost) in zip(ax_row, costs.items()):
            models = [m for m in score if np.isfinite(score[m]) and np.isfinite(cost.get(m, np.nan))]
            x = np.array([cost[m] for m in models], float)
            y = np.array([score[m] * 100 for m in models], float)
            front = pareto_front(x, y)
            ax.scatter(x, y, s=20, c=["C3" if f else "C0" for f in front], zorder=3)
            for m, xi, yi in zip(models, x, y):
                ax.annotate(labels.get(m, m), (xi, yi), fontsize=6, xytext=(3, 2),
                            textcoords="offset points")
            if front.any():
                order = np.argsort(x[front])
                ax.step(x[front][order], y[front][order], where="post", color="C3", lw=1,
                        label="Pareto front")
                ax.legend(fontsize=7, loc="lower right")
            else:
                ax.text(0.5, 0.5, "no model with both figures", ha="center", va="center",
                        transform=ax.transAxes)
            if len(x) and (x > 0).all():
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{title} {metric_label} (%)")
    return _save(fig, out_dir, "pareto")


def rank_blobs(stability: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Blob plot per dataset (challengeR): x = method in observed rank order, y = rank, blob
    area = how often the method held that rank over the resamples; black cross = median rank,
    line = the 95% interval of its ranks. ``stability``: ``ranking.rank_stability``'s table."""
    plt = _plt()
    tasks = list(dict.fromkeys(stability["task"])) or ["no runs"]
    ncols = min(2, len(tasks))
    nrows = -(-len(tasks) // ncols)
    width = max(4.5, 0.4 * stability["model"].nunique() + 1.5)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 4.4 * nrows), squeeze=False)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    for ax, task in zip(axes.ravel(), tasks):
        g = stability[stability["task"] == task]
        if g.empty:
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
            continue
        order = (g.drop_duplicates("model").sort_values(["observed_rank", "label"])[["model", "label"]])
        for i, (model, _) in enumerate(order.itertuples(index=False)):
            r = g[g["model"] == model].sort_values("rank")
            ax.scatter(np.full(len(r), i), r["rank"], s=300 * r["frequency"], color="C0", alpha=0.6)
            cum = r["frequency"].cumsum().to_numpy()
            lo, hi = (int(r["rank"].iloc[min(np.searchsorted(cum, q - 1e-12), len(r) - 1)])
                      for q in (0.025, 0.975))
            ax.plot([i, i], [lo, hi], color="k", lw=0.8)
            ax.scatter([i], [r["median_rank"].iloc[0]], marker="x", color="k", s=18, zorder=3)
        ax.set_xticks(range(len(order)), order["label"], rotation=70, fontsize=7)
        ax.set_ylim(len(order) + 0.5, 0.5)
        ax.set_ylabel("rank (1 = best)")
        ax.set_title(f"{task}: rank over case resamples", fontsize=9)
    return _save(fig, out_dir, "rank_stability")
