"""The short subset of the fault benchmark (``make bench-faults`` runs all of it, several trials
each): two launchers on one grid, a full disk during a checkpoint write, malformed inputs.

The kill-and-resume faults have their own tests (tests/test_harness_e2e.py: SIGKILL mid-epoch;
tests/test_harness_checkpoints.py: a corrupt latest checkpoint; tests/test_data_safety.py: the
data-loss defect), so they are not repeated here.
"""
from __future__ import annotations

import pytest

from harness.bench.faults import COLUMNS, FAULTS, run_faults


@pytest.mark.parametrize("fault", ["two-launchers", "disk-full", "malformed-input"])
def test_fault_is_survived(fault, smoke_work, tmp_path):
    (row,) = run_faults([fault], trials=1, seed=3, root=tmp_path, progress=False,
                        prepared_work=smoke_work)
    assert set(row) == set(COLUMNS)
    assert row["passed"] == row["trials"] == 1, row["details"]
    assert row["data_lost_files"] == 0
    if fault == "disk-full":
        assert row["work_lost_epochs"] <= 1


def test_unknown_fault_is_a_user_error():
    with pytest.raises(ValueError, match="unknown fault"):
        run_faults(["cosmic-ray"], trials=1)
    assert len(FAULTS) == 7
