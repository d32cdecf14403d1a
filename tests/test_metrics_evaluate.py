"""``evaluate_run``: the long per-case table of one run, from NIfTI files."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.metrics import COLUMNS, dice, evaluate_run, hd95, surface_dice, write_nifti

META = {"run_id": "r1", "dataset": "phantom-kits19", "model": "nnunet", "fold": 2}
SPACING = (2.0, 0.8, 0.7)


def _case(shape=(12, 20, 18)):
    ref = np.zeros(shape, np.uint8)
    ref[3:9, 4:14, 5:14] = 1
    ref[5:7, 7:10, 7:10] = 2
    return ref


@pytest.fixture
def folders(tmp_path):
    ref_dir, pred_dir = tmp_path / "labelsTr", tmp_path / "predictions"
    ref = _case()
    preds = {
        "c0": ref.copy(),                           # perfect
        "c1": np.roll(ref, 1, axis=0),              # shifted one slice (2 mm)
        "c2": np.where(ref == 2, 1, ref),           # tumour missed
    }
    for case, pred in preds.items():
        write_nifti(ref_dir / f"{case}.nii.gz", ref, SPACING)
        write_nifti(pred_dir / f"{case}.nii.gz", pred.astype(np.uint8), SPACING)
    return ref_dir, pred_dir, ref, preds


def test_long_table_values_and_flags(folders, tmp_path):
    ref_dir, pred_dir, ref, preds = folders
    out = tmp_path / "run" / "metrics.csv"
    df = evaluate_run(ref_dir, pred_dir, ["c0", "c1", "c2"], "phantom-kits19", META, out, workers=1)
    assert list(df.columns) == list(COLUMNS)
    back = pd.read_csv(out)
    assert list(back.columns) == list(COLUMNS) and len(back) == len(df) == 3 * 3 * 9
    assert set(back["run_id"]) == {"r1"} and set(back["fold"]) == {2} and set(back["task"]) == {"kits19"}
    v = df.set_index(["case", "class", "metric"])["value"]
    assert v[("c0", "kidney", "dsc")] == 1.0 and v[("c0", "tumour", "nsd_phys")] == 1.0
    kid_ref, kid_pred = ref == 1, preds["c1"] == 1
    assert v[("c1", "kidney", "dsc")] == pytest.approx(dice(kid_ref, kid_pred))
    assert v[("c1", "kidney", "hd95")] == pytest.approx(hd95(kid_ref, kid_pred, SPACING))
    assert v[("c1", "kidney", "nsd_phys")] == pytest.approx(surface_dice(kid_ref, kid_pred, SPACING, 1.0))
    # One voxel in "MedNeXt code" units is within its tolerance; 2 mm is not within 1 mm.
    assert v[("c1", "tumour", "nsd_mednext_code")] == 1.0
    assert v[("c1", "tumour", "nsd_phys")] < 1.0
    # The tumour of c2 is missed: 0 for the overlaps, image diagonal for HD95, flags set.
    diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(ref.shape, SPACING)))
    assert v[("c2", "tumour", "dsc")] == 0.0 and v[("c2", "tumour", "nsd_phys")] == 0.0
    assert v[("c2", "tumour", "hd95")] == pytest.approx(diag)
    row = df[(df["case"] == "c2") & (df["class"] == "tumour")].iloc[0]
    assert bool(row["pred_empty"]) and not bool(row["ref_empty"])
    # Counts and volumes.
    n = int((ref == 2).sum())
    assert v[("c2", "tumour", "fn")] == n and v[("c2", "tumour", "tp")] == 0
    assert v[("c0", "tumour", "vol_ref_mm3")] == pytest.approx(n * np.prod(SPACING), rel=1e-6)
    assert v[("c2", "kidney+tumour", "dsc")] == 1.0       # the official composite is unaffected
    assert tuple(df[["spacing_0", "spacing_1", "spacing_2"]].iloc[0]) == pytest.approx(SPACING)


def test_parallel_equals_serial(folders, tmp_path):
    ref_dir, pred_dir, _, _ = folders
    a = evaluate_run(ref_dir, pred_dir, ["c0", "c1", "c2"], "kits19", META, tmp_path / "a.csv", workers=1)
    b = evaluate_run(ref_dir, pred_dir, ["c0", "c1", "c2"], "kits19", META, tmp_path / "b.csv", workers=2)
    pd.testing.assert_frame_equal(a, b)


def test_both_empty_region_is_nan(tmp_path):
    ref = np.zeros((6, 8, 8), np.uint8)
    ref[1:4, 2:5, 2:5] = 1                       # kidney only, no tumour anywhere
    write_nifti(tmp_path / "r" / "x.nii.gz", ref, (1, 1, 1))
    write_nifti(tmp_path / "p" / "x.nii.gz", ref, (1, 1, 1))
    df = evaluate_run(tmp_path / "r", tmp_path / "p", ["x"], "kits19", META, tmp_path / "m.csv", workers=1)
    t = df[df["class"] == "tumour"].set_index("metric")
    assert all(math.isnan(t.loc[m, "value"]) for m in ("dsc", "nsd_phys", "nsd_mednext_code", "hd95"))
    assert t["ref_empty"].all() and t["pred_empty"].all()


def test_bad_inputs_name_the_case_and_file(folders, tmp_path):
    ref_dir, pred_dir, ref, _ = folders
    with pytest.raises(FileNotFoundError, match="of case 'c9' not found.*c9.nii.gz"):
        evaluate_run(ref_dir, pred_dir, ["c0", "c9"], "kits19", META, tmp_path / "m.csv")
    write_nifti(pred_dir / "c0.nii.gz", ref[:, :-1], SPACING)
    with pytest.raises(ValueError, match="case 'c0'.*shape"):
        evaluate_run(ref_dir, pred_dir, ["c0"], "kits19", META, tmp_path / "m.csv", workers=1)
    write_nifti(pred_dir / "c0.nii.gz", ref, (1.0, 0.8, 0.7))
    with pytest.raises(ValueError, match="case 'c0'.*spacing"):
        evaluate_run(ref_dir, pred_dir, ["c0"], "kits19", META, tmp_path / "m.csv", workers=1)
    write_nifti(pred_dir / "c0.nii.gz", (ref * 3).astype(np.uint8), SPACING)
    with pytest.raises(ValueError, match="prediction of case 'c0'.*label values"):
        evaluate_run(ref_dir, pred_dir, ["c0"], "kits19", META, tmp_path / "m.csv", workers=1)
    assert not (tmp_path / "m.csv").exists()
    with pytest.raises(ValueError, match="run metadata lacks"):
        evaluate_run(ref_dir, pred_dir, ["c1"], "kits19", {"run_id": "x"}, tmp_path / "m.csv")
    with pytest.raises(ValueError, match="unknown dataset"):
        evaluate_run(ref_dir, pred_dir, ["c1"], "lits", META, tmp_path / "m.csv")


IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("field, ref_value, pred_value", [
    ("origin", (10.0, -5.0, 3.0), (10.0, -5.0, 3.5)),                     # shifted 0.5 mm in z
    ("direction", IDENTITY, (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)),   # x flipped
])
def test_a_prediction_off_the_reference_grid_is_refused(tmp_path, field, ref_value, pred_value):
    ref = _case()
    ref_path, pred_path = tmp_path / "ref" / "c0.nii.gz", tmp_path / "pred" / "c0.nii.gz"
    write_nifti(ref_path, ref, SPACING, **{field: ref_value})
    write_nifti(pred_path, ref, SPACING, **{field: pred_value})
    with pytest.raises(ValueError) as err:
        evaluate_run(ref_path.parent, pred_path.parent, ["c0"], "kits19", META,
                     tmp_path / "m.csv", workers=1)
    msg = str(err.value)
    assert msg.startswith(f"case 'c0': prediction {pred_path} has {field} (")
    assert f"reference {ref_path} has (" in msg
    fmt = lambda v: "(" + ", ".join(f"{x + 0.0:.6g}" for x in v) + ")"      # noqa: E731
    assert fmt(pred_value) in msg and fmt(ref_value) in msg
    # within the tolerance of the dataset validation it is scored
    near = tuple(v + 1e-5 for v in ref_value)
    write_nifti(pred_path, ref, SPACING, **{field: near})
    df = evaluate_run(ref_path.parent, pred_path.parent, ["c0"], "kits19", META,
                      tmp_path / "m.csv", workers=1)
    assert (df[df["metric"] == "dsc"]["value"] == 1.0).all()


def test_geometry_tolerances_match_the_dataset_validation():
    from harness.datasets import nifti
    from harness.metrics import definitions

    assert definitions.ORIGIN_ATOL == nifti.ORIGIN_ATOL
    assert definitions.DIRECTION_ATOL == nifti.DIRECTION_ATOL
