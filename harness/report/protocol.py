"""Rows outside the identical protocol: marked in every table, counted at their own patch.

Every row of a study trains under one protocol (the paper's 1 mm spacing, the profile's patch and
batch, the same preprocessing and folds) except a model whose registry entry names an nnU-Net
planner (``nnunet-resenc-l-native``: ``nnUNetPlannerResEncL``). It trains with the spacing, patch
and batch that planner chooses for each dataset, and answers another question: what the
recommended baseline reaches when it plans itself (nnU-Net Revisited, Isensee et al., MICCAI 2024,
reports its presets so). A report keeps it beside the others but marks it everywhere: its label
carries :data:`MARK` in every table, figure and CSV, the footnote under the table and in the header
says what the mark means, ``cells.csv`` has a ``protocol`` column, and its parameters and GMACs
are those of its runs at the patch they were planned with (``run.json`` ``configuration``), not
a count at the paper's 128^3.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .runinfo import records

MARK = "†"
IDENTICAL = "identical"


def own_plans(expected: Sequence[Mapping]) -> dict[str, dict]:
    """model -> its planner (``{"planner", "plans_name", "configuration"}``) for the declared
    cells that train with one (``harness.studies.runs.expected_runs``: key ``plans``)."""
    return {c["model"]: dict(c["plans"]) for c in expected if c.get("plans")}


def marked_study(study, own: Mapping[str, Mapping]):
    """``study`` with :data:`MARK` after the label of each row in ``own``."""
    rows = tuple(dataclasses.replace(r, label=f"{r.label} {MARK}") if r.model in own else r
                 for r in study.rows)
    return dataclasses.replace(study, rows=rows)


def protocol_of(model: str, own: Mapping[str, Mapping]) -> str:
    """``identical``, or ``own plans: <planner> <configuration>``."""
    p = own.get(model)
    return f"own plans: {p['planner']} {p['configuration']}" if p else IDENTICAL


def footnote(own: Mapping[str, Mapping], labels: Mapping[str, str]) -> str:
    """What the mark means, one sentence per marked model ('' when none is marked)."""
    out = []
    for model, p in own.items():
        out.append(f"{MARK} {labels.get(model, model)} ({model}): outside the identical protocol. "
                   f"It trains with what {p['planner']} plans for each dataset itself "
                   f"(configuration {p['configuration']}: its own spacing, patch and batch, "
                   "nnU-Net's preprocessing at that spacing; same folds, same evaluation at "
                   "the original spacing). It answers what the recommended baseline reaches when "
                   "it plans itself, not how it compares under the paper's protocol; its "
                   "parameters and GMACs are counted at its planned patch.")
    return " ".join(out)


def planned_counts(expected: Sequence[Mapping], work: str | Path,
                   own: Mapping[str, Mapping]) -> dict[str, dict]:
    """model -> {"params", "gmacs", "patch"} for the models in ``own``: the median over their
    finished runs of what each recorded for its planned patch (``run.json``
    ``configuration.network``); a model without such a run is absent."""
    found: dict[str, list[dict]] = {m: [] for m in own}
    for cell, rec in records([c for c in expected if c["model"] in own], work, status="done"):
        net = (rec.get("configuration") or {}).get("network")
        if net and net.get("params") is not None and net.get("gmacs") is not None:
            found[cell["model"]].append(net)
    out = {}
    for model, nets in found.items():
        if nets:
            out[model] = {"params": float(np.median([n["params"] for n in nets])),
                          "gmacs": float(np.median([n["gmacs"] for n in nets])),
                          "patch": "; ".join(sorted({"x".join(map(str, n["patch"])) for n in nets}))}
    return out
