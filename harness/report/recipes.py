"""The training recipe of every model of a report, as run.

The paper states only part of each model's recipe (Sect. 3.1: optimizer and learning rate); the
rest comes from the nnU-Net framework, and the official MedNeXt code differs from the text for
four baselines (``harness.registry.recipes``). A report therefore says what its runs used: for
each declared cell the recipe (optimizer, learning rate, weight decay, momentum, AdamW epsilon,
poly exponent, gradient clip, deep supervision, activation checkpointing) and the settings
(precision, compile, BraTS21 target) are read from ``work/runs/<run_id>/run.json`` (``spec`` ->
``recipe`` and ``settings``) when the run exists. A cell without one shows what it would run
with, marked "declared, not run": the recipe its declaration carries (``recipe`` / ``settings``
keys of the cell), else the registry's resolution of the chosen recipe for its dataset.

``recipe_table`` gives one row per (model, dataset) and set of values (folds that agree are
merged), for ``recipes.csv``; ``recipe_markdown`` one row per model, a value that differs between
datasets written as "1e-3 (KiTS19: 1e-4)".
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from .runinfo import read_record, run_dir
from .tables import DATASET_LABELS, md_frame

FIELDS = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "eps", "poly_exponent",
          "grad_clip", "deep_supervision", "activation_checkpointing")
SETTINGS = ("precision", "compile", "brats_target")
AS_RUN, DECLARED = "run.json", "declared, not run"
COLUMNS = ("recipe", "model", "label", "dataset", "task", "source", "folds") + FIELDS + SETTINGS


def _run_spec(record: dict | None) -> dict | None:
    """The spec of a ``run.json`` record when it records a recipe, else None."""
    spec = (record or {}).get("spec")
    return spec if isinstance(spec, dict) and isinstance(spec.get("recipe"), dict) else None


def _registry_recipe(recipe: str) -> Callable[[str, str], dict]:
    def resolve(model: str, dataset: str) -> dict:
        from harness import registry
        return registry.get(model).recipe(recipe, dataset).to_dict()
    return resolve


def recipe_table(expected: Sequence[Mapping], work: str | Path, options,
                 labels: Mapping[str, str] | None = None,
                 declared: Callable[[str, str], dict] | None = None) -> pd.DataFrame:
    """The recipe and settings of every declared cell (see the module docstring).

    ``options``: the report's resolved :class:`~harness.studies.options.RunOptions`;
    ``declared(model, dataset)`` -> recipe dict for cells that never ran and carry none
    (default: the registry under ``options.recipe``).
    """
    from harness.studies.runs import run_settings

    declared = declared or _registry_recipe(options.recipe)
    labels = labels or {}
    rows: dict[tuple, dict] = {}
    for cell in expected:
        model, dataset = cell["model"], cell["dataset"]
        task = cell.get("task", dataset)
        spec = _run_spec(read_record(run_dir(cell, work)))
        if spec is not None:
            recipe, settings, source = spec["recipe"], spec.get("settings") or {}, AS_RUN
        else:
            recipe, settings, source = cell.get("recipe"), cell.get("settings"), DECLARED
            if recipe is None:
                try:
                    recipe = declared(model, dataset)
                except Exception as exc:     # named in the table, not fatal to the report
                    recipe, source = {}, f"unknown ({type(exc).__name__}: {exc})"
            if settings is None:
                settings = run_settings(task, options)
        row = {"recipe": options.recipe, "model": model, "label": labels.get(model, model),
               "dataset": dataset, "task": task, "source": source, "folds": [],
               **{k: recipe.get(k) for k in FIELDS}, **{k: settings.get(k) for k in SETTINGS}}
        # Folds that ran with the same values are one row (None is a value: AdamW's momentum).
        key = tuple(repr(v) for k, v in row.items() if k != "folds")
        rows.setdefault(key, row)["folds"].append(int(cell["fold"]))
    out = [{**r, "folds": ";".join(map(str, sorted(set(r["folds"]))))} for r in rows.values()]
    return pd.DataFrame(out, columns=list(COLUMNS))


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _num(v) -> str:
    """1e-3, 2.5e-3, 0.01, 0.99, 12 (a learning rate reads as the paper writes it)."""
    if _missing(v):
        return "–"
    v = float(v)
    if v != 0 and abs(v) < 0.01:
        mantissa, exponent = f"{v:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{v:g}"


def _yes(v) -> str:
    return "–" if _missing(v) else ("yes" if bool(v) else "no")


def _display(r) -> dict:
    if r.optimizer == "adamw":
        opt = f"AdamW (eps {_num(r.eps)})"
    elif r.optimizer == "sgd":
        opt = "SGD, Nesterov" if r.nesterov else "SGD"
    else:
        opt = "?" if _missing(r.optimizer) else str(r.optimizer)
    run = "–" if _missing(r.precision) else f"{r.precision}, compile {'on' if r.compile else 'off'}"
    return {"Optimizer": opt, "LR": _num(r.lr), "Weight decay": _num(r.weight_decay),
            "Momentum": _num(r.momentum), "Schedule": f"poly {_num(r.poly_exponent)}",
            "Grad clip": _num(r.grad_clip), "Deep sup.": _yes(r.deep_supervision),
            "Act. ckpt": _yes(r.activation_checkpointing), "Precision": run}


def _merge(per_dataset: Mapping[str, str]) -> str:
    """One value, or the most common one and the datasets that differ from it."""
    values = list(per_dataset.values())
    if len(set(values)) <= 1:
        return values[0] if values else "–"
    common = max(dict.fromkeys(values), key=values.count)
    other = ", ".join(f"{DATASET_LABELS.get(d, d)}: {v}" for d, v in per_dataset.items() if v != common)
    return f"{common} ({other})"


def recipe_markdown(table: pd.DataFrame, models: Sequence[str]) -> str:
    """One row per model in ``models`` order (see ``_merge`` for values that differ per dataset)."""
    if table.empty:
        return "No cells declared.\n"
    rows = []
    for model in models:
        sub = table[table["model"] == model]
        if sub.empty:
            continue
        shown: dict[str, dict[str, list[str]]] = {}
        for r in sub.itertuples(index=False):
            for col, text in {**_display(r), "Source": r.source}.items():
                texts = shown.setdefault(col, {}).setdefault(r.task, [])
                if text not in texts:
                    texts.append(text)
        row = {"Model": model, "Network": sub["label"].iloc[0]}
        row.update({col: _merge({t: " / ".join(v) for t, v in per.items()})
                    for col, per in shown.items()})
        rows.append(row)
    return md_frame(pd.DataFrame(rows))
