"""The software stacks a report's runs trained on, and the known regressions they carry.

Every attempt of a run records its stack in ``run.json`` (``harness.provenance.software_stack``:
python, torch, CUDA, cuDNN as torch reports it (an int, 91500 for 9.15.0), nnU-Net v2, MONAI,
device and driver). ``stack_table`` lists the distinct stacks with the number of runs that used
each (a resumed run that changed stack counts for both). ``KNOWN_REGRESSIONS`` holds the
regressions a reader of times (and, through them, of budgets) must know about, as data with
their sources; a stack that matches one is warned about in the report. A regression applies only
to a stack that ran on a GPU (a driver recorded): they are cuDNN regressions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from .runinfo import records
from .tables import md_frame

FIELDS = ("python", "torch", "cuda", "cudnn", "nnunetv2", "monai", "device", "driver")


@dataclass(frozen=True)
class Regression:
    """A stack that is known to misbehave: torch releases (the part before ``+``) and the cuDNN
    versions (torch's int; ``cudnn_below`` None: no upper bound) it applies to."""
    key: str
    torch: tuple[str, ...]
    cudnn_min: int
    cudnn_below: int | None
    effect: str
    sources: str

    def applies(self, stack: Mapping) -> bool:
        cudnn = stack.get("cudnn")
        if stack.get("driver") in (None, "") or not isinstance(cudnn, int):
            return False
        release = str(stack.get("torch") or "").split("+")[0]
        return (release in self.torch and cudnn >= self.cudnn_min
                and (self.cudnn_below is None or cudnn < self.cudnn_below))


_CONV3D = ("3D convolutions under AMP (fp16/bf16) about 4x slower than on torch 2.8.0, reported "
           "with nnU-Net and a conv3d micro-benchmark: torch 2.9 stopped using cuDNN for 3D "
           "convolutions with kernels larger than 1 in half precision when cuDNN is 9.8 or newer "
           "(a workaround for a broken cuDNN kernel); training times of such runs are not "
           "comparable with other stacks. Use torch 2.8, or cuDNN 9.15 or newer with torch 2.9.1.")
_CONV3D_SOURCES = ("pytorch/pytorch issue #166122 (\"4x performance regression for 3D convs with "
                   "AMP on torch 2.9.0\", 2025-10-23; closed); the cuDNN guard: pytorch/pytorch "
                   "pull request #163581 (cuDNN >= 9.8, no upper bound, as in 2.9.0); a bound below "
                   "cuDNN 9.15 proposed in pull request #166480; for 2.9.1 the maintainers' advice "
                   "to install cuDNN 9.15+ (issue #166643, comment of 2025-11-11), and 2.9.1 "
                   "re-enabling cuDNN 3D convolutions from cuDNN 9.15 as reported downstream "
                   "(nvidia-cosmos/cosmos-predict2.5 pull request #147)")
KNOWN_REGRESSIONS: tuple[Regression, ...] = (
    Regression("torch-2.9.0-conv3d-amp", ("2.9.0",), 90800, None, _CONV3D, _CONV3D_SOURCES),
    Regression("torch-2.9.1-conv3d-amp", ("2.9.1",), 90800, 91500, _CONV3D, _CONV3D_SOURCES),
)


def cudnn_text(version) -> str:
    """torch's cuDNN int as a version: 91500 -> 9.15.0, 8902 -> 8.9.2 (before 9: major x 1000)."""
    if not isinstance(version, int) or isinstance(version, bool):
        return "–" if version is None else str(version)
    major, rest = divmod(version, 10000) if version >= 90000 else divmod(version, 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def warnings_for(stack: Mapping, known: Sequence[Regression] = KNOWN_REGRESSIONS) -> list[Regression]:
    return [r for r in known if r.applies(stack)]


def stack_table(expected: Sequence[Mapping], work: str | Path,
                known: Sequence[Regression] = KNOWN_REGRESSIONS) -> pd.DataFrame:
    """One row per distinct stack of the declared cells' runs (any status), with ``runs`` (how
    many runs used it) and ``warnings`` (keys of the regressions it matches)."""
    counts: dict[tuple, set[str]] = {}
    for cell, rec in records(expected, work):
        for attempt in rec.get("attempts") or []:
            stack = attempt.get("stack")
            if isinstance(stack, dict):
                key = tuple(stack.get(k) for k in FIELDS)
                counts.setdefault(key, set()).add(str(cell["run_id"]))
    rows = []
    for key, runs in counts.items():
        stack = dict(zip(FIELDS, key))
        rows.append({**stack, "cudnn_version": cudnn_text(stack["cudnn"]), "runs": len(runs),
                     "warnings": ";".join(r.key for r in warnings_for(stack, known))})
    out = pd.DataFrame(rows, columns=list(FIELDS) + ["cudnn_version", "runs", "warnings"])
    out["cudnn"] = pd.to_numeric(out["cudnn"], errors="coerce").astype("Int64")   # 91500, not 91500.0
    return out.sort_values("runs", ascending=False, kind="stable").reset_index(drop=True)


def stack_markdown(table: pd.DataFrame, known: Sequence[Regression] = KNOWN_REGRESSIONS) -> str:
    if table.empty:
        return "No run recorded its software stack.\n"
    view = table.drop(columns=["cudnn"]).rename(columns={"cudnn_version": "cudnn"})
    view = view[["runs"] + list(FIELDS) + ["warnings"]]
    lines = [md_frame(view)]
    by_key = {r.key: r for r in known}
    hit = [k for ws in table["warnings"] for k in str(ws).split(";") if k]
    for key in dict.fromkeys(hit):
        r = by_key[key]
        n = int(table.loc[table["warnings"].str.split(";").map(lambda ks: key in ks), "runs"].sum())
        lines.append(f"> **Warning ({key}, {n} runs)**: torch {'/'.join(r.torch)} with cuDNN "
                     f"{cudnn_text(r.cudnn_min)}"
                     + (f" to below {cudnn_text(r.cudnn_below)}" if r.cudnn_below else " or newer")
                     + f": {r.effect} Sources: {r.sources}.\n")
    if not hit:
        lines.append("No stack matches a known regression (checked: "
                     + ", ".join(r.key for r in known) + ").\n")
    return "\n".join(lines)
