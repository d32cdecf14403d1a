"""Stand-ins shared by tests: a raw dataset folder with stand-in files.

The fingerprint of a raw dataset reads bytes, not images, so planning a real-data grid needs only
``dataset.json`` and files of the right names.
"""
from __future__ import annotations

import json
from pathlib import Path


def fake_raw_dataset(root: Path, folder: str, cases=("case_00000", "case_00001"),
                     channels: int = 1) -> Path:
    d = Path(root) / folder
    (d / "imagesTr").mkdir(parents=True)
    (d / "labelsTr").mkdir()
    (d / "dataset.json").write_text(json.dumps({"name": folder, "file_ending": ".nii.gz"}))
    for c in cases:
        for ch in range(channels):
            (d / "imagesTr" / f"{c}_{ch:04d}.nii.gz").write_bytes(f"{c}/{ch}".encode() * 10)
        (d / "labelsTr" / f"{c}.nii.gz").write_bytes(c.encode())
    return d
