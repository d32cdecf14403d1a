"""The studies (grids) and profiles, declared once as data.

``table2.json`` and ``ablations.json`` list the datasets and the rows (registry model names, the
label and group the paper prints), ``table2-plus.json`` Table 2's rows and a group "Beyond the
paper" (nnU-Net ResEnc, MedNeXt-B + GRN); ``profiles.json`` says how each profile scales the
protocol (folds, epochs x iterations, patch and batch, phantom or real data). The launcher, the
collector, the SLURM backend and the reports all read these files through this module, so a cell
that is declared is either run, reported as missing, or reported as failed: never silently dropped.
The JSON files are package data, read through ``importlib.resources`` so that an installed wheel
finds them as well as a checkout does.

:func:`results_root` is where reports go (``$MEDNEXT_BENCH_RESULTS``, default ``./results``):
declared here, below both the jobs that launch a report and the report itself.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from harness.errors import UserError

STUDIES = ("table2", "ablations", "table2-plus")
RESULTS_ENV = "MEDNEXT_BENCH_RESULTS"


def results_root() -> Path:
    """The folder every report goes under (absolute): ``$MEDNEXT_BENCH_RESULTS`` or ``./results``.

    Example: with ``MEDNEXT_BENCH_RESULTS=/scratch/r`` the quick Table 2 report is written to
    ``/scratch/r/table2-quick``.
    """
    return Path(os.environ.get(RESULTS_ENV, "results")).resolve()


def _read_json(name: str) -> dict:
    return json.loads((files(__name__) / name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    data: str                      # "real" or "phantom"
    folds: tuple[int, ...]
    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    patch_3d: tuple[int, int, int]
    batch_3d: int
    patch_2d: tuple[int, int]
    batch_2d: int
    mirroring: bool
    phantom: dict | None           # {"cases": N, "size": S} for phantom data
    compile: bool = False          # torch.compile the network (harness.studies.options)
    precision: str = "amp"         # "amp" (nnU-Net's fp16 autocast on CUDA) | "fp32"

    def patch(self, dim: str) -> tuple[int, ...]:
        return self.patch_3d if dim == "3d" else self.patch_2d

    def batch(self, dim: str) -> int:
        return self.batch_3d if dim == "3d" else self.batch_2d

    def dataset_name(self, task: str) -> str:
        """The dataset this profile uses for a paper task: ``btcv`` or ``phantom-btcv``."""
        return task if self.data == "real" else f"phantom-{task}"

    def to_dict(self) -> dict:
        return {
            "name": self.name, "data": self.data, "folds": list(self.folds),
            "epochs": self.epochs, "iterations_per_epoch": self.iterations_per_epoch,
            "val_iterations_per_epoch": self.val_iterations_per_epoch,
            "patch_3d": list(self.patch_3d), "batch_3d": self.batch_3d,
            "patch_2d": list(self.patch_2d), "batch_2d": self.batch_2d,
            "mirroring": self.mirroring, "phantom": self.phantom,
            "compile": self.compile, "precision": self.precision,
        }


@dataclass(frozen=True)
class Row:
    model: str
    label: str
    group: str


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    datasets: tuple[str, ...]      # paper task names: btcv, amos22, kits19, brats21
    rows: tuple[Row, ...]
    paper_table: str               # stem of the transcribed table in harness/report/paper_tables/

    @property
    def models(self) -> tuple[str, ...]:
        """Distinct model names in row order (a model may appear in several rows)."""
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.setdefault(row.model, None)
        return tuple(seen)


@lru_cache(maxsize=None)
def _profiles() -> dict:
    return _read_json("profiles.json")


def profile_names() -> tuple[str, ...]:
    return tuple(_profiles())


def load_profile(name: str) -> Profile:
    profiles = _profiles()
    if name not in profiles:
        raise UserError(f"unknown profile {name!r}; known: {', '.join(profiles)}")
    p = profiles[name]
    return Profile(
        name=name, description=p["description"], data=p["data"], folds=tuple(p["folds"]),
        epochs=p["epochs"], iterations_per_epoch=p["iterations_per_epoch"],
        val_iterations_per_epoch=p["val_iterations_per_epoch"],
        patch_3d=tuple(p["patch_3d"]), batch_3d=p["batch_3d"],
        patch_2d=tuple(p["patch_2d"]), batch_2d=p["batch_2d"],
        mirroring=p["mirroring"], phantom=p["phantom"],
        compile=bool(p["compile"]), precision=str(p["precision"]),
    )


def load_study(name: str) -> Study:
    if name not in STUDIES:
        raise UserError(f"unknown study {name!r}; known: {', '.join(STUDIES)}")
    s = _read_json(f"{name}.json")
    return Study(
        name=s["name"], title=s["title"], datasets=tuple(s["datasets"]),
        rows=tuple(Row(**r) for r in s["rows"]), paper_table=s["paper_table"],
    )
