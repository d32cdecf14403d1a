"""Nothing the user gave is ever deleted or overwritten (harness.ownership, prepare, convert).

The regression of the data-loss defect: a dataset converted into ``WORK/nnUNet_raw`` (the
default of ``data convert``) and then trained with ``--data WORK/nnUNet_raw --work WORK`` was
deleted by the preparation, which then reported it as missing. Now it is linked and used in place.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.ownership import MARKER, ensure_folder, is_owned, make_link, remove_owned, require_owned


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_only_marked_folders_and_links_are_removed(tmp_path):
    mine = ensure_folder(tmp_path / "made", "test")
    assert (mine / MARKER).is_file() and is_owned(mine)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "scan.nii.gz").write_bytes(b"precious")
    with pytest.raises(UserError, match=r"theirs: refusing to remove this folder.*did not create"):
        remove_owned(theirs)
    assert (theirs / "scan.nii.gz").read_bytes() == b"precious"
    assert ensure_folder(theirs, "test") == theirs and not (theirs / MARKER).exists()
    # a link the harness made is replaced or removed, its target never touched
    link = make_link(tmp_path / "link", theirs)
    assert is_owned(link)
    make_link(link, mine)
    assert link.resolve() == mine.resolve()
    remove_owned(link)
    assert not link.exists() and (theirs / "scan.nii.gz").is_file() and mine.is_dir()
    # a link of the user's is not the harness's, even with the same name
    user_link = tmp_path / "user_link"
    user_link.symlink_to(theirs)
    with pytest.raises(UserError, match="refusing to replace this link"):
        make_link(user_link, mine)
    remove_owned(mine)
    assert not mine.exists()
    require_owned(tmp_path / "absent", "remove")          # nothing there: nothing to refuse


def test_convert_never_replaces_a_folder_it_did_not_make(tmp_path):
    from harness.datasets import convert
    from harness.datasets.phantom import write_phantom_source

    src = tmp_path / "src"
    write_phantom_source("kits19", src, 5, 32, 0, False)
    out = tmp_path / "raw" / "Dataset503_KiTS19"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="refusing to replace"):
        convert("kits19", src, tmp_path / "raw", quiet=True, progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (out / "notes.txt").unlink()
    out.rmdir()
    made = convert("kits19", src, tmp_path / "raw", quiet=True, progress=False)
    assert is_owned(made)


def test_training_on_data_converted_into_the_work_folder_keeps_it(tmp_path):
    """The defect as a user met it, through the command line."""
    work = tmp_path / "W"
    src = tmp_path / "kits19-download"
    r = cli("data", "phantom", "kits19", "--cases", 5, "--size", 32, "--keep-source", src,
            "--work", tmp_path / "scratch")
    assert r.returncode == 0, r.stderr
    r = cli("data", "convert", "kits19", src, "--work", work)
    assert r.returncode == 0, r.stderr
    data = work / "nnUNet_raw" / "Dataset503_KiTS19"
    before = tree_digest(data)
    assert len([k for k in before if k.startswith("imagesTr/")]) == 5

    r = cli("train", "--dataset", "kits19", "--model", "nnunet", "--fold", 0, "--profile", "check",
            "--data", work / "nnUNet_raw", "--work", work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 ran" in r.stdout or "2 ran" in r.stdout
    assert tree_digest(data) == before                  # not one file deleted or changed
    links = list((work / "datasets").glob("kits19-*/nnUNet_raw/Dataset503_KiTS19"))
    assert len(links) == 1 and links[0].is_symlink() and links[0].resolve() == data.resolve()
    # a second time: nothing to do, nothing touched
    r = cli("train", "--dataset", "kits19", "--model", "nnunet", "--fold", 0, "--profile", "check",
            "--data", work / "nnUNet_raw", "--work", work)
    assert r.returncode == 0 and "0 ran, 2 already done" in r.stdout, r.stdout + r.stderr
    assert tree_digest(data) == before
