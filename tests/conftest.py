"""Test session settings: nnU-Net's environment, fixed before anything imports ``nnunetv2``.

nnU-Net reads its worker counts at import time and its folders from the environment; the tests
use no augmentation workers and pools of one (the CPU recipe of specs/environment.md), never
compile, never log to wandb, and put every nnU-Net folder and every report under a temporary
folder of the session, so nothing is written into the checkout or the user's folders. Tests that
train use their own work folder on top (``--work``); these are only the fallbacks.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="mednext-bench-tests-"))

for _key, _value in {
    "nnUNet_n_proc_DA": "0",
    "nnUNet_def_n_proc": "1",
    "nnUNet_compile": "f",
    "nnUNet_wandb_enabled": "0",
    "nnUNet_raw": str(_SESSION_DIR / "nnUNet_raw"),
    "nnUNet_preprocessed": str(_SESSION_DIR / "nnUNet_preprocessed"),
    "nnUNet_results": str(_SESSION_DIR / "nnUNet_results"),
    "MEDNEXT_BENCH_RESULTS": str(_SESSION_DIR / "results"),
}.items():
    os.environ[_key] = _value


def pytest_sessionfinish(session, exitstatus):
    import shutil
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


import pytest  # noqa: E402  (after the environment is fixed)


@pytest.fixture(scope="session")
def smoke_work(tmp_path_factory):
    """A work folder with the KiTS19 phantom prepared under the smoke profile (planned,
    preprocessed at 1 mm, split): what the harness tests train on."""
    from harness.jobs.plan import execute, job_status, plan_cell

    work = tmp_path_factory.mktemp("harness-work")
    prepare = plan_cell("kits19", "nnunet", 0, "smoke", work)[0]
    execute(prepare)
    assert job_status(prepare) == "done"
    return work


@pytest.fixture(scope="session")
def smoke_root(smoke_work):
    """The data root of that prepared phantom (``nnUNet_raw``, ``nnUNet_preprocessed``)."""
    from harness.jobs.plan import job_data_root, plan_cell

    return job_data_root(plan_cell("kits19", "nnunet", 0, "smoke", smoke_work)[0])


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny-tensor tests: they gain nothing from more,
    and on a 2-core machine more threads only contend (the previous setting is restored)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
