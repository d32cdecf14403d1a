"""Checkpoints of a run (harness.nnunet.checkpoints and the trainer): every file the trainer
writes reads through the weights-only reader; resume falls back from a bad latest to the previous
checkpoint with a note, or starts afresh naming both; stale temporaries (and only they) are
removed; a full disk is a clear error that leaves the checkpoints on disk untouched."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import harness.io as hio
from harness.bench.faults import FullDisk
from harness.jobs.plan import plan_cell
from harness.nnunet.checkpoints import (FINAL, LATEST, PREVIOUS, CheckpointWriteError,
                                        remove_stale_temporaries, resume_point, write_checkpoint)
from mednext.checkpoint import read_checkpoint


def _spec(work, **profile):
    job = plan_cell("kits19", "nnunet", 0, "smoke", work)[-1]
    spec = json.loads(json.dumps(job.payload["spec"]))
    spec["profile"].update(profile)
    return spec


def _resumable(epoch: int) -> dict:
    return {"network_weights": {"w": torch.full((2,), float(epoch))}, "optimizer_state": {"state": {}},
            "logging": {"train_losses": [0.5] * epoch}, "_best_ema": 0.1, "current_epoch": epoch}




class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def interrupted_run(smoke_work, smoke_root, tmp_path_factory):
    """A 3-epoch run (one iteration each) stopped at the start of epoch 2's training, with a
    copy of every checkpoint file the trainer wrote and the folder listing after each write."""
    from harness.nnunet import trainer as trainer_mod
    from harness.nnunet.env import configure
    from harness.nnunet.training import train

    configure(smoke_root)
    spec = _spec(smoke_work, epochs=3, iterations_per_epoch=1)
    root = tmp_path_factory.mktemp("interrupted")
    run_dir, copies = root / "run", root / "copies"
    copies.mkdir()
    listings = []
    real = trainer_mod.write_checkpoint

    def recording(checkpoint, target, **kw):
        real(checkpoint, target, **kw)
        shutil.copy(target, copies / f"{len(listings)}_{Path(target).name}")
        listings.append(sorted(p.name for p in Path(target).parent.glob("checkpoint_*")))

    def stop_at_epoch_2(phase, done, total):
        if phase == "train" and done == 3:
            raise Stop

    mp = pytest.MonkeyPatch()
    mp.setattr(trainer_mod, "write_checkpoint", recording)
    try:
        with pytest.raises(Stop):
            train(spec, run_dir, smoke_work, stop_at_epoch_2)
    finally:
        mp.undo()
    return spec, run_dir, copies, listings


def test_trainer_keeps_latest_and_previous_and_each_file_reads_weights_only(interrupted_run):
    spec, run_dir, copies, listings = interrupted_run
    assert listings == [[LATEST], [LATEST, PREVIOUS]]
    for n, path in enumerate(sorted(copies.iterdir())):
        ckpt = read_checkpoint(path)
        assert ckpt["current_epoch"] == n + 1 and ckpt["optimizer_state"]["state"]
        assert ckpt["init_args"]["device"] == torch.device("cpu")
        assert ckpt["init_args"]["plans"]["configurations"]
        assert isinstance(ckpt["logging"]["train_losses"][0], float)       # plain, not numpy
        # plain types: torch's own weights-only load needs no allow-list either
        torch.load(path, map_location="cpu", weights_only=True)
    assert read_checkpoint(run_dir / LATEST)["current_epoch"] == 2
    assert read_checkpoint(run_dir / PREVIOUS)["current_epoch"] == 1


def test_a_truncated_latest_resumes_from_previous_and_the_end_leaves_only_final(
        interrupted_run, smoke_work, tmp_path):
    from harness.nnunet.training import train

    spec, run_dir, _, _ = interrupted_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    data = (run / LATEST).read_bytes()
    (run / LATEST).write_bytes(data[: len(data) // 2])
    stale = run / ".checkpoint_latest.pth.abcd1234.tmp"
    stale.write_bytes(data[:100])
    info = train(spec, run, smoke_work)
    assert not stale.exists()
    note = info["resume_note"]
    assert f"{run / LATEST} is unreadable (truncated or corrupt" in note
    assert f"resuming from {PREVIOUS} at epoch 1" in note
    assert info["resumed_from_epoch"] == 1 and info["epochs"] == 3
    assert note in (run / "training_log.txt").read_text()
    names = sorted(p.name for p in run.iterdir() if p.name.startswith(("checkpoint", ".checkpoint")))
    assert names == ["checkpoint_final.pth"]
    final = read_checkpoint(run / "checkpoint_final.pth")
    assert final["current_epoch"] == 3 and final["optimizer_state"] is None
    assert len(final["logging"]["train_losses"]) == 3


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_resume_point_falls_back_to_previous(tmp_path, damage):
    torch.save(_resumable(3), tmp_path / PREVIOUS)
    torch.save(_resumable(4), tmp_path / LATEST)
    if damage == "random":
        (tmp_path / LATEST).write_bytes(os.urandom(4096))
    else:
        data = (tmp_path / LATEST).read_bytes()
        (tmp_path / LATEST).write_bytes(data[: len(data) - 40])
    ckpt, source, note = resume_point(tmp_path)
    assert source == PREVIOUS and ckpt["current_epoch"] == 3
    assert LATEST in note and "unreadable (truncated or corrupt" in note
    assert f"resuming from {PREVIOUS} at epoch 3" in note
    assert not (tmp_path / LATEST).exists()       # so the next write cannot rotate it over previous


def test_resume_point_uses_latest_and_refuses_a_non_resumable_one(tmp_path):
    torch.save(_resumable(3), tmp_path / PREVIOUS)
    torch.save(_resumable(4), tmp_path / LATEST)
    ckpt, source, note = resume_point(tmp_path)
    assert (source, ckpt["current_epoch"], note) == (LATEST, 4, None)
    torch.save({**_resumable(4), "optimizer_state": None}, tmp_path / LATEST)
    ckpt, source, note = resume_point(tmp_path)
    assert source == PREVIOUS and "lacks ['optimizer_state']" in note
    assert resume_point(tmp_path / "empty") == (None, None, None)


def test_both_checkpoints_bad_is_a_fresh_start_naming_both(tmp_path):
    (tmp_path / LATEST).write_bytes(b"")
    (tmp_path / PREVIOUS).write_bytes(os.urandom(1000))
    ckpt, source, note = resume_point(tmp_path)
    assert ckpt is None and source is None
    assert f"{tmp_path / LATEST} is unreadable" in note and f"{tmp_path / PREVIOUS} is unreadable" in note
    assert note.endswith("starting afresh")


def test_only_stale_checkpoint_temporaries_are_removed(tmp_path):
    stale = [".checkpoint_latest.pth.k2_x9qab.tmp", ".checkpoint_final.pth.00000000.tmp.pth"]
    kept = ["notes.txt", "checkpoint_latest.pth", ".checkpoint_latest.pth.backup",
            ".progress.json.abcd1234.tmp", ".checkpoint_latest.pth.abcd1234.tmp.old",
            "checkpoint_latest.pth.abcd1234.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_a_full_disk_is_a_clear_error_and_touches_nothing(tmp_path, monkeypatch):
    torch.save(_resumable(3), tmp_path / PREVIOUS)
    torch.save(_resumable(4), tmp_path / LATEST)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(hio, "open_for_write", lambda p: FullDisk(p, 300))
    big = {**_resumable(5), "network_weights": {"w": torch.zeros(10_000)}}
    with pytest.raises(CheckpointWriteError) as err:
        write_checkpoint(big, tmp_path / LATEST, keep_previous=True,
                         intact="the earlier checkpoint checkpoint_latest.pth (resumes at epoch 4) "
                                "is intact")
    msg = str(err.value)
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert f"cannot write checkpoint {tmp_path / LATEST}: No space left on device" in msg
    assert " free on the file system of " in msg and "(resumes at epoch 4) is intact" in msg
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_trainer_names_the_intact_checkpoint_when_the_disk_is_full(
        smoke_work, smoke_root, tmp_path, monkeypatch):
    from harness.nnunet.env import configure
    from harness.nnunet.training import make_trainer

    configure(smoke_root)
    run = tmp_path / "run"
    tr = make_trainer(_spec(smoke_work), run)
    tr.initialize()
    tr.current_epoch = 2
    tr.save_checkpoint(str(run / LATEST))
    assert tr.checkpoint_on_disk == (LATEST, 3)
    before = (run / LATEST).read_bytes()
    monkeypatch.setattr(hio, "open_for_write", lambda p: FullDisk(p, 10_000))
    tr.current_epoch = 3
    with pytest.raises(CheckpointWriteError, match=r"checkpoint_latest\.pth: No space left on device"
                       r".*the earlier checkpoint checkpoint_latest\.pth \(resumes at epoch 3\) "
                       r"is intact"):
        tr.save_checkpoint(str(run / LATEST))
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == [LATEST]
    assert (run / LATEST).read_bytes() == before


def test_a_finished_run_drops_resume_files_a_kill_left(tmp_path):
    """Killed between writing checkpoint_final.pth and removing the resume files: the next
    attempt trains nothing and removes them (they are the run's own files)."""
    from harness.nnunet.training import train

    run = tmp_path / "run"
    run.mkdir()
    for name in (FINAL, LATEST, PREVIOUS, "notes.txt"):
        (run / name).write_bytes(b"x")
    info = train({}, run, tmp_path)
    assert info["trained"] is False
    assert sorted(p.name for p in run.iterdir()) == sorted([FINAL, "notes.txt"])
