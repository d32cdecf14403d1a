"""How ``mednext-bench`` reports failures: a user's mistake is one ``error:`` line and exit 2;
an internal error is one line, exit 1, and the traceback in a log file.

The dataset cases convert a phantom's public-layout source after breaking one case in one way
each; nothing may be left behind (no dataset folder, no temporary folder).
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from harness import cli
from harness.datasets import DatasetError, Problem, make_phantom
from harness.errors import UserError

PREFIX = "mednext-bench: error: "


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Public-layout sources of two tiny phantoms (KiTS19 one channel, BraTS21 four)."""
    root = tmp_path_factory.mktemp("sources")
    for task in ("kits19", "brats21"):
        make_phantom(task, root / "raw", cases=2, size=16, source_dir=root / task)
    return root


def _rewrite(path, change):
    """Read ``path``, let ``change(array, image)`` return a new image, write it back."""
    img = sitk.ReadImage(str(path))
    sitk.WriteImage(change(sitk.GetArrayFromImage(img), img), str(path), True)


def _nan_voxels(arr, img):
    arr = arr.astype(np.float32)
    arr.flat[:3] = np.nan
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def _foreign_label(arr, img):
    arr = arr.copy()
    arr.flat[0] = 5                                # KiTS19 labels are 0, 1, 2
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def _other_spacing(arr, img):
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    out.SetSpacing(tuple(s * 1.5 for s in img.GetSpacing()))
    return out


KITS_CASE = "case_00001"
BROKEN = {
    # kind: (task, file to break relative to the source, change or None to delete, words expected)
    "nan": ("kits19", f"data/{KITS_CASE}/imaging.nii.gz", _nan_voxels, "NaN/Inf"),
    "label value": ("kits19", f"data/{KITS_CASE}/segmentation.nii.gz", _foreign_label,
                    "label values outside the label map"),
    "geometry": ("kits19", f"data/{KITS_CASE}/imaging.nii.gz", _other_spacing, "spacing differs"),
    "missing channel": ("brats21", "BraTS2021_00001/BraTS2021_00001_t1ce.nii.gz", None,
                        "missing T1ce file"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_case_is_one_error_line_exit_2_and_nothing_written(sources, tmp_path, capsys, kind):
    task, rel, change, what = BROKEN[kind]
    src = tmp_path / "src"
    shutil.copytree(sources / task, src)
    if change is None:
        (src / rel).unlink()
    else:
        _rewrite(src / rel, change)
    raw, work = tmp_path / "raw", tmp_path / "work"
    rc = cli.main(["data", "convert", task, str(src), "--out", str(raw), "--work", str(work)])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert rc == 2 and len(lines) == 1, captured.err
    line = lines[0]
    case = rel.split("/")[1] if task == "kits19" else rel.split("/")[0]
    assert line.startswith(PREFIX) and f"case {case}: " in line and what in line, line
    named = "segmentation.nii.gz" if kind == "geometry" else rel     # geometry: the label is compared
    assert named in line and line.endswith("; nothing was written"), line
    assert not raw.exists() or list(raw.iterdir()) == []            # no dataset, no temporary folder
    assert not (work / "logs").exists()                              # a user error leaves no log


def test_a_dataset_error_with_several_problems_lists_them_indented():
    err = DatasetError("src", [Problem("a", "a.nii.gz", "missing label file", "a file", "no file"),
                               Problem("b", "b.nii.gz", "image is empty (constant)")],
                       "nothing was written")
    assert isinstance(err, UserError)
    lines = cli.format_user_error(err).splitlines()
    assert lines[0] == PREFIX + "src: 2 problems; nothing was written"
    assert lines[1:] == ["    - case a: a.nii.gz: missing label file (expected a file, found no file)",
                         "    - case b: b.nii.gz: image is empty (constant)"]
    one = DatasetError("src", [Problem("a", "a.nii.gz", "missing label file", "a file", "no file")],
                       "nothing was written")
    assert str(one) == ("src: case a: a.nii.gz: missing label file (expected a file, found no file); "
                        "nothing was written")


@pytest.mark.parametrize("argv,words", [
    (["models", "no-such-model"], "unknown model 'no-such-model'; known: mednext-s-k3"),
    (["report", "--study", "table2", "--profile", "no-such-profile", "--no-figures"],
     "unknown profile 'no-such-profile'; known: paper"),
    (["report", "--study", "table2", "--profile", "smoke", "--boot", "100", "--no-figures"],
     "--boot 100: a 95% bootstrap interval needs at least 1000 resamples"),
])
def test_unknown_names_are_user_errors(argv, words, tmp_path, capsys):
    rc = cli.main(argv + (["--work", str(tmp_path)] if argv[0] == "report" else []))
    captured = capsys.readouterr()
    assert rc == 2 and captured.err.splitlines() == [captured.err.strip()]
    assert captured.err.startswith(PREFIX) and words in captured.err


def test_an_internal_error_is_one_line_exit_1_with_the_traceback_in_the_work_logs(
        tmp_path, capsys, monkeypatch):
    import harness.datasets

    def broken(*args, **kwargs):
        raise RuntimeError("the converter broke\nsecond line")

    monkeypatch.setattr(harness.datasets, "convert", broken)
    work = tmp_path / "work"
    rc = cli.main(["data", "convert", "kits19", str(tmp_path), "--work", str(work)])
    err = capsys.readouterr().err
    logs = list((work / "logs").glob("cli-*.log"))
    assert rc == 1 and len(logs) == 1
    assert err == (f"mednext-bench: internal error: RuntimeError: the converter broke "
                   f"(traceback in {logs[0]})\n")
    assert logs[0].name.startswith("cli-") and logs[0].name.endswith(f"-{os.getpid()}.log")
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text and "second line" in text


def test_an_internal_error_without_a_work_folder_logs_to_the_temporary_folder(
        tmp_path, capsys, monkeypatch):
    import tempfile

    import harness.datasets

    def broken(*args, **kwargs):
        raise KeyError("lost")

    monkeypatch.setattr(harness.datasets, "validate_raw", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main(["data", "check", str(tmp_path)]) == 1
    logs = list((tmp_path / "mednext-bench").glob("cli-*.log"))
    assert len(logs) == 1 and "KeyError: 'lost'" in logs[0].read_text()
    assert capsys.readouterr().err.startswith("mednext-bench: internal error: KeyError: 'lost' (traceback in ")


def test_interrupt_exits_130(capsys, monkeypatch):
    import harness.datasets

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.datasets, "validate_raw", interrupted)
    assert cli.main(["data", "check", "anywhere"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
