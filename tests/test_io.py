"""harness.io: atomic writes fsync the data before the rename and the folder after it; the write
seam ``open_for_write`` is where text and JSON files are opened; a failed write leaves nothing."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

import harness.io as hio
from harness.bench.faults import FullDisk

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(),
                                reason="names fsynced descriptors through /proc")


@pytest.fixture
def events(monkeypatch):
    """Record fsync (by the path of the descriptor) and os.replace calls, in order."""
    log: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        log.append(("replace", f"{os.fspath(src)} -> {os.fspath(dst)}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


def test_write_json_fsyncs_file_then_renames_then_fsyncs_folder(tmp_path, events):
    target = tmp_path / "out" / "a.json"
    hio.write_json(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}
    kinds = [k for k, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    tmp_name = events[0][1]
    assert Path(tmp_name).parent == target.parent and Path(tmp_name).name.startswith(".a.json.")
    assert events[1][1] == f"{tmp_name} -> {target}"
    assert events[2][1] == str(target.parent)
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_atomic_dir_fsyncs_the_whole_tree_before_the_rename_and_the_parent_after(tmp_path, events):
    target = tmp_path / "ds"
    (target).mkdir()
    (target / "old.txt").write_text("old")          # replaced as a whole
    with hio.atomic_dir(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
        (tmp / "a.txt").write_text("a")
        tmp_root = str(tmp)
    rename = next(i for i, (k, _) in enumerate(events) if k == "replace")
    before = {p for k, p in events[:rename] if k == "fsync"}
    assert before == {f"{tmp_root}/a.txt", f"{tmp_root}/sub/b.txt", f"{tmp_root}/sub", tmp_root}
    assert [p for k, p in events[:rename] if k == "fsync"].index(f"{tmp_root}/sub/b.txt") < \
        [p for k, p in events[:rename] if k == "fsync"].index(f"{tmp_root}/sub")
    assert events[rename + 1:] == [("fsync", str(tmp_path))]
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "sub"]




def test_the_write_seam_injects_enospc_and_nothing_is_left(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    hio.write_json(target, {"v": "old"})
    monkeypatch.setattr(hio, "open_for_write", lambda p: FullDisk(p, 4))
    with pytest.raises(OSError) as err:
        hio.write_json(target, {"v": "new" * 10})
    assert err.value.errno == errno.ENOSPC
    assert json.loads(target.read_text()) == {"v": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
