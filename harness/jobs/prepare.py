"""The ``prepare:<dataset>-<fingerprint>`` job: raw data in place, validated, planned,
preprocessed, split.

Once per version of a dataset and work folder, shared by every model and fold (paper Sect. 3.1:
one preprocessing, one split). Each version (a phantom size, a real dataset's content
fingerprint) has its own data root ``work/datasets/<dataset>-<fingerprint12>/`` with nnU-Net's
``nnUNet_raw`` and ``nnUNet_preprocessed`` inside, so two versions never share or replace each
other's files, and nothing of the user's is ever in the way:

- phantom profiles generate their dataset into the data root (seeded, so every machine gets the
  same cases);
- real-data profiles link the converted dataset (``--data DIR/<DatasetNNN_Name>``) into the data
  root and use it in place: the data are only read, never copied, moved or deleted. If the
  folder given already is the place the link would point from, it is used as it is. Its content
  fingerprint must still be the one the plan was made with (the data may not change between
  planning and preparing).

``splits_final.json`` comes from ``harness.datasets.make_splits`` (nnU-Net's seeded 5-fold rule),
so nnU-Net and every other model read the same split. A stamp,
``nnUNet_preprocessed/<Dataset>/bench_prepare.json``, is written last and records the data block
(with its fingerprint) and both plans files; the job is done when the stamp's fingerprint is the
one asked for and it names the 2D plans (a root prepared before those existed is prepared again).
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.errors import UserError
from harness.io import write_json
from harness.ownership import ensure_folder, make_link
from harness.studies.runs import data_root

STAMP = "bench_prepare.json"


def _paths(payload: dict) -> tuple:
    from harness.datasets import task_spec
    spec = task_spec(payload["dataset"])
    root = data_root(payload["work"], payload["dataset"], payload["data"])
    return spec, root, root / "nnUNet_raw" / spec.folder, root / "nnUNet_preprocessed" / spec.folder


def read_stamp(root: Path, folder: str) -> dict | None:
    """The prepare stamp of a data root, or None when it is not (completely) prepared."""
    try:
        return json.loads((Path(root) / "nnUNet_preprocessed" / folder / STAMP).read_text())
    except (OSError, ValueError):
        return None


def prepare_status(payload: dict) -> str:
    spec, root, _, _ = _paths(payload)
    stamp = read_stamp(root, spec.folder)
    ok = (stamp is not None and "plans_2d" in stamp
          and stamp.get("data", {}).get("fingerprint") == payload["data"]["fingerprint"])
    return "done" if ok else "pending"


def _place_raw(payload: dict, spec, root: Path, raw: Path) -> None:
    data = payload["data"]
    if data["source"] == "phantom":
        from harness.datasets import make_phantom
        ph = data["phantom"]
        made = make_phantom(spec.name, raw.parent, cases=ph["cases"], size=ph["size"], seed=ph["seed"])
        if made != raw or not raw.is_dir():
            raise FileNotFoundError(f"make_phantom({spec.name!r}) did not create {raw}")
        return
    from harness.datasets.fingerprint import dataset_fingerprint

    src = Path(payload["source_path"])
    fp = dataset_fingerprint(src, Path(payload["work"]) / "datasets" / "fingerprints")
    if fp["fingerprint"] != data["fingerprint"]:
        raise UserError(f"real dataset {spec.name}: the content of {src} changed after this grid "
                        f"was planned (fingerprint {fp['fingerprint'][:12]}, planned "
                        f"{data['fingerprint'][:12]}): start the run again to plan it anew")
    if raw.exists() and raw.resolve() == src.resolve():
        return                                     # already the place it would be linked from
    make_link(raw, src)


def prepare_dataset(payload: dict) -> None:
    """Execute a ``prepare`` job (idempotent; the caller holds the job's lock)."""
    from harness.datasets import make_splits, validate_raw, write_splits
    from harness.nnunet.env import configure

    if prepare_status(payload) == "done":
        return
    spec, root, raw, pre = _paths(payload)
    print(f"preparing {payload['dataset']} in {root}", flush=True)
    ensure_folder(root, f"prepared data of {payload['dataset']}")
    configure(root)
    _place_raw(payload, spec, root, raw)
    summary = validate_raw(raw, spec.name)

    from harness.nnunet.plans import PLANS_2D_NAME, plan_and_preprocess
    plans_path = plan_and_preprocess(spec.dataset_id, spec.folder)

    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    cases = sorted(p.name[: -len(ending)] for p in (raw / "labelsTr").glob(f"*{ending}"))
    write_splits(pre / "splits_final.json", make_splits(cases, n_folds=5, seed=12345))
    write_json(pre / STAMP, {"dataset": spec.name, "folder": spec.folder, "data": payload["data"],
                             "source_path": payload.get("source_path"), "cases": cases,
                             "plans": str(plans_path),
                             "plans_2d": str(plans_path.with_name(f"{PLANS_2D_NAME}.json")),
                             "summary": summary})
