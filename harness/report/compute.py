"""Compute beside accuracy: what each model costs, as counted and as measured by its runs.

The paper reports no parameter counts, compute, memory, training or inference times (its
Table 1, left, gives only the MedNeXt configurations); nnU-Net Revisited (Isensee et al., MICCAI
2024) counts neglected compute among the pitfalls of segmentation benchmarks. One row per model,
in study order:

- ``params_m``, ``gmacs``: the network that predicts, counted at the paper's patch (128^3;
  TransUNet 512^2 slices) by ``harness.registry.compute_summary`` (or figures passed in);
- ``s_per_iter``: for each finished run, the median of its epochs' ``epoch_seconds`` (nnU-Net's
  epoch: the training iterations plus that epoch's validation iterations, so the validation
  share is included) divided by the training iterations per epoch; the model's value is the
  median over its runs;
- ``paper_fold_hours``: ``s_per_iter`` x the paper's iterations per fold (1000 epochs x 250) /
  3600 -- a projection, valid for the paper's patch and hardware only when the runs used them;
- ``peak_cuda_alloc_mib`` / ``peak_cuda_reserved_mib`` (runs on a GPU) and ``peak_rss_mib``
  (the job process: training, prediction and scoring): the maximum over runs and attempts;
- ``infer_s_per_case``: ``predict_seconds`` / validation cases per run, median over runs
  (sliding-window prediction of whole cases, reading and writing included).

Runs that are not ``done`` are left out; a model without one has empty cells. Where the runs
were measured (device, patch, batch) is part of the table, and ``compute_markdown`` says plainly
when the times are CPU times at a profile's patch rather than the paper's.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .runinfo import read_progress, records, run_dir
from .tables import md_frame

COLUMNS = ("model", "label", "params_m", "gmacs", "runs", "s_per_iter", "paper_fold_hours",
           "peak_cuda_alloc_mib", "peak_cuda_reserved_mib", "peak_rss_mib", "infer_s_per_case",
           "device", "patch", "batch")
MEMORY = {"peak_cuda_alloc_mib": "peak_cuda_mib", "peak_cuda_reserved_mib": "peak_cuda_reserved_mib",
          "peak_rss_mib": "peak_rss_mib"}


def paper_iterations() -> int:
    """Training iterations of one fold under the paper's protocol (profiles.json: 1000 x 250)."""
    from harness.studies import load_profile

    prof = load_profile("paper")
    return prof.epochs * prof.iterations_per_epoch


def paper_patches() -> set[str]:
    """The paper's patches as the table writes them: {"128x128x128", "512x512"}."""
    from harness.studies import load_profile

    prof = load_profile("paper")
    return {"x".join(map(str, p)) for p in (prof.patch_3d, prof.patch_2d)}


def model_compute(models: Sequence[str], compute: Mapping | Callable | None) -> tuple[dict, str]:
    """model -> {"params", "gmacs", ...} for ``models``, and a note naming the models that could
    not be counted. ``compute`` is a mapping (used as given), a callable, or None (the registry,
    which builds each network on the meta device: pass only the models that ran)."""
    if isinstance(compute, Mapping):
        return {m: compute[m] for m in models if m in compute}, ""
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


def _num(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _device(rec: dict) -> tuple[bool, str]:
    """(ran on a GPU, "cuda: <name>" or "cpu: <processor>") of one run."""
    dev = rec.get("device") or {}
    attempts = rec.get("attempts") or []
    trained_on = [str(((a.get("training") or {}).get("execution") or {}).get("device") or "")
                  for a in attempts]
    gpu = dev.get("type") == "cuda" or any(d.startswith("cuda") for d in trained_on)
    stacks = [a.get("stack") or {} for a in attempts]
    name = dev.get("name") or next((s.get("device") for s in reversed(stacks) if s.get("device")), "")
    kind = "cuda" if gpu else "cpu"
    return gpu, f"{kind}: {name}" if name and name != kind else kind


def run_measures(rec: dict, progress: pd.DataFrame | None, iterations_per_epoch: int) -> dict:
    """The measured figures of one finished run (NaN where it did not record them).

    ``iterations_per_epoch`` is used when the run's spec lacks its profile (older run folders).
    """
    prof = (rec.get("spec") or {}).get("profile") or {}
    iters = int(prof.get("iterations_per_epoch") or iterations_per_epoch)
    s_iter = math.nan
    if progress is not None and "epoch_seconds" in progress:
        secs = pd.to_numeric(progress["epoch_seconds"], errors="coerce").dropna()
        if len(secs):
            s_iter = float(secs.median()) / iters
    cases = rec.get("validation_cases") or []
    predict = _num((rec.get("timings") or {}).get("predict_seconds"))
    attempts = rec.get("attempts") or []
    gpu, device = _device(rec)
    # what it trained with (run.json ``configuration``; older runs: the profile's patch)
    trained = rec.get("configuration") or prof
    out = {"s_per_iter": s_iter, "infer_s_per_case": predict / len(cases) if cases else math.nan,
           "gpu": gpu, "device": device,
           "patch": "x".join(map(str, trained["patch"])) if trained.get("patch") else "",
           "batch": trained.get("batch")}
    for column, key in MEMORY.items():
        values = [_num(a.get(key)) for a in attempts] + [_num(rec.get(key))]
        values = [v for v in values if not math.isnan(v)]
        out[column] = max(values) if values else math.nan
    return out


def _joined(values) -> str:
    return "; ".join(sorted({str(v) for v in values if v not in ("", None)}))


def compute_table(expected: Sequence[Mapping], work: str | Path, models: Sequence[str],
                  labels: Mapping[str, str], counted: Mapping[str, Mapping],
                  iterations_per_epoch: int, notes: list[str] | None = None) -> pd.DataFrame:
    """One row per model of ``models`` (see the module docstring); ``counted``: model ->
    {"params", "gmacs"}. An unreadable ``progress.csv`` is named in ``notes``."""
    per_model: dict[str, list[dict]] = {m: [] for m in models}
    for cell, rec in records(expected, work, status="done"):
        if cell["model"] not in per_model:
            continue
        folder = run_dir(cell, work)
        try:
            progress = read_progress(folder)
        except (OSError, ValueError) as exc:
            progress = None
            if notes is not None:
                notes.append(f"{folder / 'progress.csv'}: unreadable ({exc})")
        per_model[cell["model"]].append(run_measures(rec, progress, iterations_per_epoch))
    hours = paper_iterations() / 3600.0
    rows = []
    for m in models:
        runs = pd.DataFrame(per_model[m])
        c = counted.get(m) or {}
        row = {"model": m, "label": labels.get(m, m),
               "params_m": _num(c.get("params")) / 1e6, "gmacs": _num(c.get("gmacs")),
               "runs": len(runs)}
        if len(runs):
            row.update({"s_per_iter": runs["s_per_iter"].median(),
                        "infer_s_per_case": runs["infer_s_per_case"].median(),
                        **{k: runs[k].max() for k in MEMORY},
                        "device": _joined(runs["device"]), "patch": _joined(runs["patch"]),
                        "batch": _joined(runs["batch"])})
            row["paper_fold_hours"] = row["s_per_iter"] * hours
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def pareto_front(cost: Sequence[float], score: Sequence[float]) -> np.ndarray:
    """True for the points no other point dominates (cost as low and score as high, one of
    them strictly); points with a NaN are never on the front. Equal points are both kept."""
    c, s = np.asarray(cost, dtype=float), np.asarray(score, dtype=float)
    ok = ~(np.isnan(c) | np.isnan(s))
    front = np.zeros(c.shape, bool)
    for i in np.flatnonzero(ok):
        others = ok & (c <= c[i]) & (s >= s[i]) & ((c < c[i]) | (s > s[i]))
        front[i] = not others.any()
    return front


def front_members(table: pd.DataFrame, score: Mapping[str, float], cost: str) -> list[str]:
    """Labels of the models on the Pareto front of ``score`` (model -> DSC) against ``cost``,
    cheapest first."""
    t = table.assign(score=table["model"].map(score).astype(float))
    on = pareto_front(t[cost], t["score"])
    return list(t[on].sort_values(cost)["label"])


def _fmt(v, digits: int) -> str:
    return "–" if pd.isna(v) else f"{v:,.{digits}f}"


def compute_markdown(table: pd.DataFrame, fronts: Mapping[str, list[str]] | None = None,
                     footnote: str = "") -> str:
    """The table with its units, and where and how the times were measured; ``fronts``: what
    was plotted ("AVG DSC against GMACs") -> the labels on its Pareto front; ``footnote``: the
    rows outside the identical protocol (:mod:`harness.report.protocol`)."""
    view = pd.DataFrame({
        "Network": table["label"], "Params (M)": table["params_m"].map(lambda v: _fmt(v, 2)),
        "GMACs": table["gmacs"].map(lambda v: _fmt(v, 1)), "Runs": table["runs"],
        "s / iteration": table["s_per_iter"].map(lambda v: _fmt(v, 3)),
        "h / paper fold": table["paper_fold_hours"].map(lambda v: _fmt(v, 1)),
        "Peak CUDA alloc. (MiB)": table["peak_cuda_alloc_mib"].map(lambda v: _fmt(v, 0)),
        "Peak CUDA reserved (MiB)": table["peak_cuda_reserved_mib"].map(lambda v: _fmt(v, 0)),
        "Peak RSS (MiB)": table["peak_rss_mib"].map(lambda v: _fmt(v, 0)),
        "Inference s / case": table["infer_s_per_case"].map(lambda v: _fmt(v, 2)),
        "Device": [d if isinstance(d, str) else "" for d in table["device"]], "Patch (batch)": [
            f"{p} ({b})" if isinstance(p, str) and p else "" for p, b in zip(table["patch"], table["batch"])]})
    lines = [md_frame(view), _where(table), "",
             f"Parameters and GMACs: the predicting network (deep supervision off, batch 1) at the "
             f"paper's patch (128^3; TransUNet 512^2). s / iteration: per finished run the median "
             f"epoch time (training iterations plus that epoch's validation iterations, as "
             f"nnU-Net times an epoch) over the training iterations per epoch, then the median "
             f"over runs. h / paper fold = {paper_iterations():,} iterations x s / iteration / "
             f"3600. Peak memory: maximum over runs and attempts (CUDA: allocated and reserved "
             f"by torch; RSS: the job process, which also predicted and scored). Inference: "
             f"prediction seconds over validation cases, median over runs. Empty: no finished run."]
    if footnote:
        lines += ["", footnote]
    for cost, names in (fronts or {}).items():
        lines.append(f"\nPareto front of {cost} (no other model has a higher DSC at no higher "
                     "cost), cheapest first: "
                     + (", ".join(names) if names else "no model with both figures") + ".")
    return "\n".join(lines) + "\n"


def _where(table: pd.DataFrame) -> str:
    """Where the times were measured, said plainly (CPU times are not the paper's)."""
    devices = _joined(d for ds in table["device"].dropna() for d in str(ds).split("; "))
    patches = _joined(p for ps in table["patch"].dropna() for p in str(ps).split("; "))
    if not devices:
        return "\nNo finished run recorded a measurement: times and memory are empty."
    text = f"\nMeasured on {devices}, at the patch {patches or 'unknown'}."
    if "cpu" in {d.split(":")[0] for d in devices.split("; ")}:
        text += (" **These are CPU times at the profile's patch, not the paper's 128^3 on a "
                 "GPU**: the projected hours compare the models with each other on this machine; "
                 "they are not what a paper fold costs.")
    elif patches and not set(patches.split("; ")) <= paper_patches():
        text += (" The patch is the profile's, not the paper's 128^3: the projected hours assume "
                 "an iteration at the paper's patch costs the same, which it does not.")
    return text
