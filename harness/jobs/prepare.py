"""The ``prepare:<dataset>`` job: raw data in place, validated, planned, preprocessed, split.

Once per dataset and work folder, shared by every model and fold (paper Sect. 3.1: one
preprocessing, one split). Phantom profiles generate their dataset (seeded, so every machine gets
the same cases); real-data profiles link ``--data DIR/<DatasetNNN_Name>`` into ``nnUNet_raw``.
``splits_final.json`` comes from ``harness.datasets.make_splits`` (nnU-Net's seeded 5-fold rule),
so nnU-Net and every other model read the same split.

A stamp, ``nnUNet_preprocessed/<Dataset>/bench_prepare.json``, is written last and records where
the data came from; the job is done when the stamp matches what the profile asks for. If it does
not (another phantom size, another data folder) the dataset is prepared again from scratch:
finished runs are unaffected, their ids include the phantom settings.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.io import write_json
from harness.jobs.runs import PHANTOM_SEED
from harness.studies import load_profile

STAMP = "bench_prepare.json"


def _source(payload: dict) -> dict:
    prof = load_profile(payload["profile"])
    if prof.data == "phantom":
        from harness.datasets.phantom import GENERATOR_VERSION
        return {"phantom": {"cases": int(prof.phantom["cases"]), "size": int(prof.phantom["size"]),
                            "seed": PHANTOM_SEED, "generator": GENERATOR_VERSION}}
    if not payload.get("data"):
        raise ValueError(f"dataset {payload['dataset']}: profile {payload['profile']!r} needs "
                         "--data DIR (a folder of converted nnU-Net raw datasets)")
    return {"data": str(Path(payload["data"]).resolve())}


def _paths(payload: dict) -> tuple:
    from harness.datasets import task_spec
    spec = task_spec(payload["dataset"])
    work = Path(payload["work"])
    return spec, work / "nnUNet_raw" / spec.folder, work / "nnUNet_preprocessed" / spec.folder


def prepare_status(payload: dict) -> str:
    _, _, pre = _paths(payload)
    try:
        stamp = json.loads((pre / STAMP).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return "pending"
    return "done" if stamp.get("source") == _source(payload) else "pending"


def _place_raw(payload: dict, source: dict, spec, raw: Path) -> None:
    if raw.is_symlink():
        raw.unlink()
    elif raw.exists():
        shutil.rmtree(raw)
    raw.parent.mkdir(parents=True, exist_ok=True)
    if "phantom" in source:
        from harness.datasets import make_phantom
        ph = source["phantom"]
        make_phantom(spec.name, raw.parent, cases=ph["cases"], size=ph["size"], seed=ph["seed"])
        if not raw.is_dir():
            raise FileNotFoundError(f"make_phantom({spec.name!r}) did not create {raw}")
    else:
        src = Path(source["data"]) / spec.folder
        if not src.is_dir():
            raise FileNotFoundError(f"real dataset {spec.name}: {src} not found (convert it first "
                                    f"with `mednext-bench data convert`, into --data {source['data']})")
        raw.symlink_to(src, target_is_directory=True)


def prepare_dataset(payload: dict) -> None:
    """Execute a ``prepare`` job (idempotent)."""
    from harness.datasets import make_splits, validate_raw, write_splits
    from harness.nnunet.env import configure

    if prepare_status(payload) == "done":
        return
    configure(payload["work"])
    source = _source(payload)
    spec, raw, pre = _paths(payload)
    if pre.exists():
        shutil.rmtree(pre)       # stale plans/preprocessing of another source
    _place_raw(payload, source, spec, raw)
    summary = validate_raw(raw, spec.name)

    from harness.nnunet.plans import plan_and_preprocess
    plans_path = plan_and_preprocess(spec.dataset_id, spec.folder)

    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    cases = sorted(p.name[: -len(ending)] for p in (raw / "labelsTr").glob(f"*{ending}"))
    write_splits(pre / "splits_final.json", make_splits(cases, n_folds=5, seed=12345))
    write_json(pre / STAMP, {"dataset": spec.name, "folder": spec.folder, "source": source,
                             "cases": cases, "plans": str(plans_path), "summary": summary})
