"""Dataset facts (names, ids, folders, labels, regions, outputs) and the seeded 5-fold split."""
from __future__ import annotations

import json

import pytest

from harness.datasets import (TASKS, check_splits, make_splits, read_splits, task_spec,
                              write_splits)

FOLDERS = {"btcv": "Dataset501_BTCV", "amos22": "Dataset502_AMOS22", "kits19": "Dataset503_KiTS19",
           "brats21": "Dataset504_BraTS21", "phantom-btcv": "Dataset901_PhantomBTCV",
           "phantom-amos22": "Dataset902_PhantomAMOS22", "phantom-kits19": "Dataset903_PhantomKiTS19",
           "phantom-brats21": "Dataset904_PhantomBraTS21"}


@pytest.mark.parametrize("name,folder", sorted(FOLDERS.items()))
def test_names_ids_and_folders_follow_the_contract(name, folder):
    spec = task_spec(name)
    assert spec.folder == folder
    assert spec.dataset_id == int(folder[7:10])
    assert spec.name == name and spec.task == name.replace("phantom-", "")
    assert spec.phantom == name.startswith("phantom-")
    assert task_spec(folder) is spec and task_spec(name.upper()) is spec
    assert set(TASKS) == set(FOLDERS)


def test_label_maps_and_outputs():
    btcv, amos, kits, brats = (task_spec(t) for t in ("btcv", "amos22", "kits19", "brats21"))
    assert btcv.labels["spleen"] == 1 and btcv.labels["left_adrenal_gland"] == 13
    assert btcv.labels["portal_and_splenic_vein"] == 10 and btcv.num_classes == 14
    assert amos.labels["postcava"] == 9 and amos.labels["prostate_uterus"] == 15 and amos.num_classes == 16
    assert dict(kits.labels) == {"background": 0, "kidney": 1, "tumor": 2} and kits.num_classes == 3
    assert [s.channels for s in (btcv, amos, kits)] == [("CT",)] * 3
    assert brats.channels == ("FLAIR", "T1", "T1ce", "T2")
    assert brats.num_classes == 4  # softmax over background + three tumour labels (official code)
    assert brats.num_outputs("regions") == 3 and brats.num_outputs() == brats.num_outputs("labels") == 4
    assert brats.regions == (("whole_tumor", (1, 2, 3)), ("tumor_core", (2, 3)), ("enhancing_tumor", (3,)))
    assert dict(brats.source_label_map) == {0: 0, 2: 1, 1: 2, 4: 3}
    assert kits.eval_classes == (("kidney", (1,)), ("tumor", (2,)))
    assert task_spec("phantom-brats21").regions == brats.regions
    assert brats.targets == ("labels", "regions") and kits.targets == ("labels",)
    assert kits.num_outputs() == 3
    with pytest.raises(ValueError, match="trains on labels, not 'regions'"):
        kits.num_outputs("regions")


BRATS_LABELS = {"background": 0, "edema": 1, "necrosis": 2, "enhancing_tumor": 3}
BRATS_REGIONS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}


def test_brats_dataset_json_holds_the_plain_tumour_labels():
    dj = task_spec("brats21").dataset_json(7)
    assert dj["labels"] == BRATS_LABELS and list(dj["labels"]) == list(BRATS_LABELS)
    assert "regions_class_order" not in dj
    assert dj["channel_names"] == {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
    assert dj["numTraining"] == 7 and dj["file_ending"] == ".nii.gz"
    assert task_spec("brats21").value_names == {0: "background", 1: "edema", 2: "necrosis",
                                                3: "enhancing_tumor"}
    json.dumps(dj)


@pytest.mark.parametrize("on_disk", [BRATS_LABELS, BRATS_REGIONS], ids=["labels", "older-regions"])
def test_each_target_derives_its_dataset_json_from_either_form_on_disk(on_disk):
    brats = task_spec("phantom-brats21")
    disk = {**brats.dataset_json(5), "labels": dict(on_disk)}
    if on_disk is BRATS_REGIONS:                  # what the converter wrote before
        disk["regions_class_order"] = [1, 2, 3]
    before = json.loads(json.dumps(disk))
    labels, regions = brats.target_dataset_json(disk), brats.target_dataset_json(disk, "regions")
    assert labels["labels"] == BRATS_LABELS and "regions_class_order" not in labels
    assert regions["labels"] == BRATS_REGIONS and regions["regions_class_order"] == [1, 2, 3]
    assert brats.target_dataset_json(disk, "labels") == labels
    assert {k: v for k, v in regions.items() if k not in ("labels", "regions_class_order")} == \
        {k: v for k, v in before.items() if k not in ("labels", "regions_class_order")}
    assert disk == before                                           # the input is not changed


def test_a_foreign_label_map_asks_to_reconvert_and_other_tasks_pass_through():
    brats = task_spec("brats21")
    public = {"background": 0, "NCR": 1, "ED": 2, "ET": 4}
    with pytest.raises(ValueError, match=r"re-convert .*`mednext-bench data convert brats21") as err:
        brats.target_dataset_json({"labels": public})
    assert "\n" not in str(err.value)
    kits = task_spec("kits19").dataset_json(3)
    assert task_spec("kits19").target_dataset_json(kits) == kits
    with pytest.raises(ValueError, match="regions"):
        task_spec("kits19").target_dataset_json(kits, "regions")


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="'lits'"):
        task_spec("lits")


def test_split_of_a_fixed_id_list_is_pinned():
    ids = [f"case_{i:05d}" for i in range(12)]
    vals = [f["val"] for f in make_splits(list(reversed(ids)))]
    assert vals == [["case_00000", "case_00003", "case_00008"],
                    ["case_00007", "case_00010", "case_00011"],
                    ["case_00006", "case_00009"], ["case_00001", "case_00004"],
                    ["case_00002", "case_00005"]]
    assert [f["val"] for f in make_splits([f"c{i}" for i in range(7)], n_folds=3, seed=0)] == \
        [["c1", "c2", "c6"], ["c0", "c3"], ["c4", "c5"]]


@pytest.mark.parametrize("n", [5, 12, 30, 31])
def test_split_is_disjoint_covering_and_80_20(n):
    ids = [f"id{i:03d}" for i in range(n)]
    splits = make_splits(ids)
    check_splits(splits, ids)
    assert sorted(c for f in splits for c in f["val"]) == ids
    for f in splits:
        assert not set(f["train"]) & set(f["val"]) and sorted(f["train"] + f["val"]) == ids
        assert abs(len(f["val"]) - n / 5) < 1
    assert make_splits(ids) == splits and make_splits(ids, seed=1) != splits


def test_split_equals_nnunet_kfold_convention():
    from sklearn.model_selection import KFold as kfold   # a dev dependency: never skipped
    ids = sorted(f"x{i}" for i in range(23))
    ref = [{"train": [ids[i] for i in tr], "val": [ids[i] for i in va]}
           for tr, va in kfold(5, shuffle=True, random_state=12345).split(ids)]
    assert make_splits(ids) == ref


@pytest.mark.parametrize("kwargs,match", [
    ({"case_ids": ["a", "b", "a", "c", "d", "e"]}, "duplicates"),
    ({"case_ids": ["a", "b", "c"]}, "at least 5 cases"),
    ({"case_ids": list("abcdef"), "n_folds": 1}, "n_folds"),
    ({"case_ids": list("abcdef"), "seed": -1}, "seed"),
])
def test_split_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_splits(**kwargs)


def test_write_and_read_splits(tmp_path):
    ids = [f"c{i}" for i in range(6)]
    path = write_splits(tmp_path / "pre" / "splits_final.json", make_splits(ids))
    assert json.loads(path.read_text()) == make_splits(ids)
    assert read_splits(path, ids) == make_splits(ids)
    assert [p.name for p in path.parent.iterdir()] == ["splits_final.json"]  # no temporary left
    with pytest.raises(ValueError, match="both in train and val"):
        write_splits(tmp_path / "bad.json", [{"train": ["a", "b"], "val": ["b"]}])
    assert not (tmp_path / "bad.json").exists()
    (tmp_path / "x.json").write_text('[{"train": ["a"], "val": ["b"]}]')
    with pytest.raises(ValueError, match="x.json.*missing"):
        read_splits(tmp_path / "x.json", ["a", "b", "c"])


def test_public_api_stays_callable_after_every_submodule_is_imported():
    import importlib

    import harness.datasets as ds
    for mod in ("conversion", "phantom", "validate", "splits", "nifti", "commands", "btcv", "amos22",
                "kits19", "brats21"):
        importlib.import_module(f"harness.datasets.{mod}")
    for name in ("convert", "make_phantom", "validate_raw", "make_splits", "write_splits", "task_spec"):
        assert callable(getattr(ds, name)), name
