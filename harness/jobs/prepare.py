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

BraTS21 is prepared for both training targets (labels, the default, and regions): the job is
shared by every run of the dataset, and the region data cost no second preprocessing
(:mod:`harness.nnunet.plans`). The ``dataset.json`` of each target is derived from the raw one
(``TaskSpec.target_dataset_json``), which is only read: a BraTS21 conversion of an earlier version
(region form) works as it is, a foreign label map stops the job asking to re-convert.

``splits_final.json`` comes from ``harness.datasets.make_splits`` (nnU-Net's seeded 5-fold rule),
so nnU-Net and every other model read the same split. A stamp,
``nnUNet_preprocessed/<Dataset>/bench_prepare.json``, is written last and records the data block
(with its fingerprint), both plans files and the preprocessed data folder of each target; the job
is done when the stamp names the fingerprint asked for, the 2D plans (a root prepared before
those existed is prepared again) and every target of the task (:func:`is_prepared`).

A model that trains with what an nnU-Net planner plans itself (``nnunet-resenc-l-native``) needs
that planner's plans and preprocessing too: the job ``prepare:<dataset>-<fingerprint12>-<plans
name>`` (payload ``plans``), after the dataset's own prepare job, in the same data root
(:func:`harness.nnunet.plans.plan_native`). Only studies with such a model plan it. Its stamp,
``bench_prepare_<plans name>.json``, records the data block, the planner and what it planned
(spacing, patch, batch, data folder per target).
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


def prepared_targets(spec) -> dict[str, str]:
    """The preprocessed data folder of each training target the task is prepared for."""
    from harness.nnunet.plans import data_identifier
    return {t: data_identifier(t) for t in spec.targets}


def is_prepared(stamp: dict | None, data: dict, spec) -> bool:
    """Whether a stamp records ``data`` (its fingerprint) prepared, with the 2D plans, for every
    target of ``spec``. A stamp of an earlier version names no targets: it prepared labels only, and a BraTS21 root
    it stamped (preprocessed from the region form) is prepared again."""
    if (stamp is None or stamp.get("data", {}).get("fingerprint") != data["fingerprint"]
            or "plans_2d" not in stamp):
        return False
    from harness.nnunet.plans import DATA_IDENTIFIER
    return stamp.get("preprocessed", {"labels": DATA_IDENTIFIER}) == prepared_targets(spec)


def native_stamp_name(plans: dict) -> str:
    return f"bench_prepare_{plans['plans_name']}.json"


def read_native_stamp(root: Path, folder: str, plans: dict) -> dict | None:
    """The stamp of a planner's preparation in a data root, or None."""
    try:
        return json.loads((Path(root) / "nnUNet_preprocessed" / folder
                           / native_stamp_name(plans)).read_text())
    except (OSError, ValueError):
        return None


def is_native_prepared(stamp: dict | None, data: dict, spec, plans: dict) -> bool:
    """Whether a planner's stamp records ``data`` planned by ``plans`` for every target."""
    if stamp is None or stamp.get("data", {}).get("fingerprint") != data["fingerprint"]:
        return False
    if {k: stamp.get(k) for k in plans} != dict(plans):
        return False
    from harness.nnunet.plans import data_identifier
    base = stamp.get("planned", {}).get("data_identifier")
    return bool(base) and stamp.get("preprocessed") == {t: data_identifier(t, base)
                                                        for t in spec.targets}


def prepare_status(payload: dict) -> str:
    spec, root, _, _ = _paths(payload)
    if payload.get("plans"):
        stamp = read_native_stamp(root, spec.folder, payload["plans"])
        return "done" if is_native_prepared(stamp, payload["data"], spec, payload["plans"]) \
            else "pending"
    stamp = read_stamp(root, spec.folder)
    return "done" if is_prepared(stamp, payload["data"], spec) else "pending"


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


def prepare_native(payload: dict) -> None:
    """Execute a planner's ``prepare`` job (idempotent; the caller holds the job's lock)."""
    from harness.nnunet.env import configure
    from harness.nnunet.plans import data_identifier, plan_native

    if prepare_status(payload) == "done":
        return
    spec, root, raw, pre = _paths(payload)
    if not is_prepared(read_stamp(root, spec.folder), payload["data"], spec):
        raise UserError(f"{payload['dataset']} (data {payload['data']['fingerprint'][:12]}) is not "
                        f"prepared in {root}: its prepare job runs before {payload['plans']['planner']}'s")
    plans = payload["plans"]
    print(f"planning {payload['dataset']} with {plans['planner']} in {root}", flush=True)
    configure(root)
    raw_json = json.loads((raw / "dataset.json").read_text())
    jsons = {t: spec.target_dataset_json(raw_json, t) for t in spec.targets}
    planned = plan_native(spec.dataset_id, spec.folder, plans, jsons)
    write_json(pre / native_stamp_name(plans), {
        "dataset": spec.name, "folder": spec.folder, "data": payload["data"], **plans,
        "planned": planned,
        "preprocessed": {t: data_identifier(t, planned["data_identifier"]) for t in spec.targets}})


def prepare_dataset(payload: dict) -> None:
    """Execute a ``prepare`` job (idempotent; the caller holds the job's lock); with ``plans``
    in the payload, a planner's preparation (:func:`prepare_native`)."""
    from harness.datasets import make_splits, validate_raw, write_splits
    from harness.nnunet.env import configure

    if payload.get("plans"):
        return prepare_native(payload)
    if prepare_status(payload) == "done":
        return
    spec, root, raw, pre = _paths(payload)
    print(f"preparing {payload['dataset']} in {root}", flush=True)
    ensure_folder(root, f"prepared data of {payload['dataset']}")
    configure(root)
    _place_raw(payload, spec, root, raw)
    summary = validate_raw(raw, spec.name)
    raw_json = json.loads((raw / "dataset.json").read_text())
    jsons = {t: spec.target_dataset_json(raw_json, t) for t in spec.targets}

    from harness.nnunet.plans import PLANS_2D_NAME, plan_and_preprocess
    plans_path = plan_and_preprocess(spec.dataset_id, spec.folder, jsons)

    ending = raw_json["file_ending"]
    cases = sorted(p.name[: -len(ending)] for p in (raw / "labelsTr").glob(f"*{ending}"))
    write_splits(pre / "splits_final.json", make_splits(cases, n_folds=5, seed=12345))
    write_json(pre / STAMP, {"dataset": spec.name, "folder": spec.folder, "data": payload["data"],
                             "source_path": payload.get("source_path"), "cases": cases,
                             "plans": str(plans_path),
                             "plans_2d": str(plans_path.with_name(f"{PLANS_2D_NAME}.json")),
                             "preprocessed": prepared_targets(spec),
                             "summary": summary})
