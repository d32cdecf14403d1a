"""AMOS22 (abdominal multi-organ, CT + MRI): the public download layout; the paper's CT cases.

Layout (Zenodo record 7262581): ``imagesTr``, ``labelsTr``, ``imagesVa``, ``labelsVa``,
``imagesTs`` of ``amos_XXXX.nii.gz`` + ``dataset.json`` (labels ``{"0": "background", "1":
"spleen", ... "15": "prostate/uterus"}``). A case is CT iff its id is < 500 (AMOS readme); the MRI
cases (5xx) are skipped. ``imagesTr`` holds 200 CT cases (the paper's set); with
``include_validation`` the labelled validation split (100 CT) is added. Case ids are global
across splits; converted ids stay ``amos_XXXX``. nnU-Net's own AMOS script uses a reorienting
reader; here every output is reoriented to LPS by the converter, which has the same purpose.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from harness.datasets import nifti
from harness.datasets.errors import Problem
from harness.datasets.spec import AMOS_15
from harness.datasets.validate import CaseFiles

_CASE = re.compile(r"^amos_(\d{4})\.nii\.gz$")
CT_MAX_ID = 499
_SOURCE_NAMES = ("background", "spleen", "right kidney", "left kidney", "gall bladder", "esophagus",
                 "liver", "stomach", "arota", "postcava", "pancreas", "right adrenal gland",
                 "left adrenal gland", "duodenum", "bladder", "prostate/uterus")
MRI_PHANTOM_ID = "0540"


def _root(source: Path) -> Path:
    return source / "amos22" if (source / "amos22" / "imagesTr").is_dir() else source


def discover(source: Path, include_validation: bool = False):
    """CT cases of ``imagesTr``/``labelsTr`` (+ ``imagesVa``/``labelsVa``); MRI cases are skipped."""
    root = _root(source)
    problems: list[Problem] = []
    dj_path = root / "dataset.json"
    if dj_path.is_file():
        try:
            labels = json.loads(dj_path.read_text()).get("labels", {})
            keys = sorted(int(k) for k in labels)
        except (json.JSONDecodeError, ValueError, AttributeError) as err:
            problems.append(Problem("-", "dataset.json", f"unreadable label map ({err})",
                                    "the AMOS label map", "unreadable"))
        else:
            if keys != list(range(len(AMOS_15) + 1)):
                problems.append(Problem("-", "dataset.json", "label map is not AMOS22's",
                                        f"keys 0..{len(AMOS_15)}", f"{keys}"))
    splits = [("imagesTr", "labelsTr")] + ([("imagesVa", "labelsVa")] if include_validation else [])
    cases, skipped, seen = [], [], {}
    for img_dir, lab_dir in splits:
        if not (root / img_dir).is_dir():
            problems.append(Problem("-", img_dir, "folder not found", f"{root / img_dir}", "none"))
            continue
        for p in sorted((root / img_dir).iterdir()):
            m = _CASE.match(p.name)
            if not m:
                continue
            if int(m.group(1)) > CT_MAX_ID:
                skipped.append(f"amos_{m.group(1)} (MRI)")
                continue
            cid = f"amos_{m.group(1)}"
            if cid in seen:
                problems.append(Problem(cid, f"{img_dir}/{p.name}", "case id in two splits",
                                        "unique ids", f"also in {seen[cid]}"))
                continue
            seen[cid] = img_dir
            cases.append(CaseFiles(cid, [p], root / lab_dir / p.name, ["CT"]))
    return cases, skipped, problems


def phantom_source_ids(n: int) -> list[str]:
    return [f"{i:04d}" for i in range(1, n + 1)]


def write_source_case(root: Path, source_id: str, images: list, label, split: str = "Tr") -> None:
    nifti.write(images[0], root / f"images{split}" / f"amos_{source_id}.nii.gz")
    nifti.write(label, root / f"labels{split}" / f"amos_{source_id}.nii.gz")


def write_source_index(root: Path, source_ids: list[str], va_ids=()) -> None:
    """An AMOS-style ``dataset.json`` listing every case written (CT and MRI)."""
    from harness.io import write_json
    entry = lambda s, i: {"image": f"./images{s}/amos_{i}.nii.gz", "label": f"./labels{s}/amos_{i}.nii.gz"}
    write_json(root / "dataset.json", {
        "name": "AMOS phantom", "description": "synthetic stand-in in the AMOS22 layout",
        "labels": {str(i): n for i, n in enumerate(_SOURCE_NAMES)},
        "numTraining": len(source_ids), "numValidation": len(va_ids),
        "training": [entry("Tr", i) for i in source_ids],
        "validation": [entry("Va", i) for i in va_ids]})
