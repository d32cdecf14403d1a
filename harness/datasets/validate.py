"""Checks on every case of a dataset, before a conversion writes anything and on a raw folder.

Per case: each file exists and is a readable 3D single-component NIfTI; every channel is present;
channels and label agree in shape, spacing, origin and direction (tolerances in
:mod:`harness.datasets.nifti`); the image has no NaN/Inf and is not constant (empty); label values
are integers inside the label map. Problems are collected, never raised one by one, so a user sees
all of them at once (:class:`DatasetError`). nnU-Net's ``verify_dataset_integrity`` makes similar
checks but stops at the first failure and needs nnU-Net's environment; this runs on the public
download before conversion as well.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.datasets import nifti
from harness.datasets.errors import DatasetError, Problem
from harness.datasets.spec import TaskSpec, task_spec


@dataclass
class CaseFiles:
    """The files of one case: one per channel (``None`` if not found) and the label."""

    case: str
    channels: list[Path | None]
    label: Path | None
    channel_names: list[str] = field(default_factory=list)


def _name(path: Path | None, root: Path | None) -> str:
    if path is None:
        return "-"
    try:
        return str(path.relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def check_headers(case: CaseFiles, root: Path | None = None) -> tuple[list[Problem], nifti.Geometry | None]:
    """Existence, readability and geometry agreement of one case's files (headers only)."""
    problems: list[Problem] = []
    geos: list[tuple[Path, nifti.Geometry]] = []
    files = [(p, case.channel_names[i] if i < len(case.channel_names) else f"channel {i}")
             for i, p in enumerate(case.channels)] + [(case.label, "label")]
    for path, role in files:
        if path is None or not Path(path).is_file():
            problems.append(Problem(case.case, _name(path, root) if path else f"<{role}>",
                                    f"missing {role} file", "a file", "no file"))
            continue
        try:
            geo = nifti.read_geometry(path)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            problems.append(Problem(case.case, _name(path, root), f"unreadable {role} ({first})",
                                    "a readable NIfTI", "unreadable"))
            continue
        if len(geo.size) != 3:
            problems.append(Problem(case.case, _name(path, root), f"{role} is not 3D", "3 dimensions",
                                    f"{len(geo.size)}"))
            continue
        if geo.components != 1:
            problems.append(Problem(case.case, _name(path, root), f"{role} has several components",
                                    "1 component", str(geo.components)))
            continue
        geos.append((Path(path), geo))
    if not geos:
        return problems, None
    ref_path, ref = geos[0]
    for path, geo in geos[1:]:
        for what, expected, found in ref.differences(geo):
            problems.append(Problem(case.case, _name(path, root),
                                    f"{what} differs from {_name(ref_path, root)}", expected, found))
    return problems, ref


def check_image_values(case: str, arr: np.ndarray, where: str, nonfinite: int = 0) -> list[Problem]:
    """No NaN/Inf (``nonfinite``: the count stored on disk, see :func:`nifti.count_nonfinite`),
    not constant."""
    problems = []
    if arr.size == 0:
        return [Problem(case, where, "image is empty", "at least one voxel", "0 voxels")]
    if np.issubdtype(arr.dtype, np.floating):
        nonfinite = max(nonfinite, int(np.count_nonzero(~np.isfinite(arr))))
    if nonfinite:
        return [Problem(case, where, "image has NaN/Inf voxels", "0", str(nonfinite))]
    lo, hi = arr.min(), arr.max()
    if lo == hi:
        problems.append(Problem(case, where, "image is empty (constant)", "varying intensities",
                                f"every voxel = {lo}"))
    return problems


def label_counts(arr: np.ndarray) -> dict[int, int]:
    """Voxels per label value (``arr`` must hold non-negative integers)."""
    flat = arr.ravel()
    if flat.dtype.kind in "ui" and flat.size and flat.min() >= 0 and flat.max() < 65536:
        counts = np.bincount(flat.astype(np.int64, copy=False))
        return {int(v): int(c) for v, c in enumerate(counts) if c}
    values, counts = np.unique(flat, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def check_label_values(case: str, arr: np.ndarray, allowed, where: str,
                       nonfinite: int = 0) -> tuple[list[Problem], dict]:
    """Label voxels must be integers within ``allowed``; returns problems and the per-value counts."""
    if nonfinite:
        return [Problem(case, where, "label has NaN/Inf voxels", "integers", f"{nonfinite} NaN/Inf")], {}
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            return [Problem(case, where, "label has NaN/Inf voxels", "integers", "NaN/Inf")], {}
        if not np.array_equal(arr, np.round(arr)):
            return [Problem(case, where, "label has non-integer values", "integers",
                            "fractional values")], {}
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        return [Problem(case, where, "label has negative values", "values in "
                        f"{sorted(allowed)}", f"min {arr.min()}")], {}
    counts = label_counts(arr)
    extra = sorted(set(counts) - set(allowed))
    if extra:
        return [Problem(case, where, "label values outside the label map",
                        f"values in {sorted(allowed)}", f"{extra}")], counts
    return [], counts


class Summary:
    """Cases, shapes, spacing range and voxels per label, accumulated case by case."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.cases: list[str] = []
        self.shapes: list[tuple[int, ...]] = []
        self.spacings: list[tuple[float, ...]] = []
        self.voxels: dict[int, int] = {v: 0 for v in spec.label_values}
        self.cases_with: dict[int, int] = {v: 0 for v in spec.label_values}

    def add(self, case: str, geo: nifti.Geometry, counts: dict[int, int]) -> None:
        self.cases.append(case)
        self.shapes.append(geo.shape)
        self.spacings.append(geo.array_spacing)
        for v, c in counts.items():
            self.voxels[v] = self.voxels.get(v, 0) + c
            self.cases_with[v] = self.cases_with.get(v, 0) + (c > 0)

    def to_dict(self) -> dict:
        names = self.spec.value_names if self.spec.labels else {}
        shp = np.array(self.shapes) if self.shapes else np.zeros((0, 3))
        spc = np.array(self.spacings) if self.spacings else np.zeros((0, 3))
        return {
            "dataset": self.spec.name, "folder": self.spec.folder, "cases": len(self.cases),
            "case_ids": list(self.cases), "axis_order": "z, y, x (numpy array order)",
            "shape_min": shp.min(0).tolist() if len(shp) else [],
            "shape_max": shp.max(0).tolist() if len(shp) else [],
            "spacing_min": spc.min(0).round(4).tolist() if len(spc) else [],
            "spacing_max": spc.max(0).round(4).tolist() if len(spc) else [],
            "voxels_per_label": {str(v): c for v, c in sorted(self.voxels.items())},
            "cases_per_label": {str(v): c for v, c in sorted(self.cases_with.items())},
            "label_names": {str(v): n for v, n in sorted(names.items())},
        }

    def format(self) -> str:
        d = self.to_dict()
        lines = [f"{d['folder']}: {d['cases']} cases",
                 f"  shape (z, y, x): min {d['shape_min']}  max {d['shape_max']}",
                 f"  spacing mm (z, y, x): min {d['spacing_min']}  max {d['spacing_max']}",
                 "  voxels per label (cases containing it):"]
        for v, c in d["voxels_per_label"].items():
            lines.append(f"    {v:>3} {d['label_names'].get(v, ''):<28} {c:>12}  "
                         f"({d['cases_per_label'][v]} cases)")
        return "\n".join(lines)


def raw_cases(folder: str | os.PathLike) -> tuple[dict, list[CaseFiles], list[Problem]]:
    """``dataset.json``, the cases of ``labelsTr`` with their channel files, and layout problems."""
    folder = Path(folder)
    problems: list[Problem] = []
    dj_path = folder / "dataset.json"
    try:
        dj = json.loads(dj_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(str(folder), [Problem("-", "dataset.json", f"unreadable ({err})",
                                                 "a JSON file", "unreadable")]) from err
    missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending") if k not in dj]
    if missing:
        raise DatasetError(str(folder), [Problem("-", "dataset.json", "missing keys",
                                                 "channel_names, labels, numTraining, file_ending",
                                                 f"missing {missing}")])
    ending = dj["file_ending"]
    names = [dj["channel_names"][k] for k in sorted(dj["channel_names"], key=int)]
    labels_dir, images_dir = folder / "labelsTr", folder / "imagesTr"
    ids = sorted(p.name[: -len(ending)] for p in labels_dir.glob(f"*{ending}")) if labels_dir.is_dir() else []
    cases = [CaseFiles(cid, [images_dir / f"{cid}_{i:04d}{ending}" for i in range(len(names))],
                       labels_dir / f"{cid}{ending}", names) for cid in ids]
    known = {f"{c}_{i:04d}{ending}" for c in ids for i in range(len(names))}
    if images_dir.is_dir():
        for p in sorted(images_dir.glob(f"*{ending}")):
            if p.name not in known:
                problems.append(Problem(re.sub(r"_\d{4}$", "", p.name[: -len(ending)]), _name(p, folder),
                                        "image without a label or channel index out of range",
                                        f"a label in labelsTr and channel < {len(names)}", p.name))
    if dj["numTraining"] != len(ids):
        problems.append(Problem("-", "dataset.json", "numTraining disagrees with labelsTr",
                                str(len(ids)), str(dj["numTraining"])))
    if not ids:
        problems.append(Problem("-", "labelsTr", "no cases", "at least one label file", "none"))
    return dj, cases, problems


def allowed_values_from_labels(labels: dict) -> set[int]:
    values: set[int] = set()
    for v in labels.values():
        values.update(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
    return values


def validate_raw(folder: str | os.PathLike, task: str | None = None, progress: bool = False) -> dict:
    """Check an nnU-Net raw dataset; raise :class:`DatasetError` listing every problem, else summarise.

    ``task`` (a dataset name) is guessed from the folder name when omitted; it only selects the
    label names of the summary, the checks read ``dataset.json``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(str(folder), [Problem("-", str(folder), "not a folder", "a folder", "none")])
    dj, cases, problems = raw_cases(folder)
    spec = task_spec(task) if task else _spec_for_folder(folder.name)
    allowed = allowed_values_from_labels(dj["labels"])
    summary = Summary(spec)
    for case in _progress(cases, progress, f"check {folder.name}"):
        found, geo = check_headers(case, folder)
        problems += found
        if found or geo is None:
            continue
        case_problems, counts = check_case_values(case, allowed, folder)
        problems += case_problems
        if not case_problems:
            summary.add(case.case, geo, counts)
    if problems:
        raise DatasetError(str(folder), problems)
    return summary.to_dict()


def check_case_values(case: CaseFiles, allowed, root: Path | None,
                      label_map: dict | None = None):
    """Read the voxels of one case and check them; returns (problems, label counts).

    With ``label_map`` the counts are reported in mapped (converted) values.
    """
    problems = []
    for i, path in enumerate(case.channels):
        arr = nifti.to_array(nifti.read(path))
        problems += check_image_values(case.case, arr, _name(path, root), nifti.count_nonfinite(path))
    lab = nifti.to_array(nifti.read(case.label))
    found, counts = check_label_values(case.case, lab, allowed, _name(case.label, root),
                                       nifti.count_nonfinite(case.label))
    problems += found
    if label_map and not found:
        counts = {label_map[v]: c for v, c in counts.items()}
    return problems, counts


def _spec_for_folder(name: str) -> TaskSpec:
    try:
        return task_spec(name)
    except ValueError:
        return TaskSpec(task="unknown", name=name, dataset_id=0, folder=name, title=name,
                        modality="", channels=(), source_channels=(), label_pairs=(), regions=(),
                        label_values=(), source_label_map={}, num_classes=0, phantom=False,
                        licence="", source_layout="")


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="case", leave=False, disable=None)  # no bar off a terminal
