"""``mednext-bench data phantom | check | splits | convert`` through their argument parser."""
from __future__ import annotations

import argparse
import json

import pytest

from harness.datasets import DatasetError, commands, make_splits, raw_case_ids


def run(argv):
    parser = argparse.ArgumentParser(prog="mednext-bench")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_phantom_check_and_splits(tmp_path, capsys):
    raw = tmp_path / "raw"
    assert run(["data", "phantom", "kits19", "--cases", "5", "--size", "24", "--out", str(raw)]) == 0
    folder = raw / "Dataset903_PhantomKiTS19"
    printed = capsys.readouterr().out
    assert "5 cases" in printed and "tumor" in printed and str(folder) in printed

    assert run(["data", "check", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cases"] == 5

    out = tmp_path / "pre" / "splits_final.json"
    assert run(["data", "splits", str(folder), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == make_splits(raw_case_ids(folder))

    (folder / "labelsTr" / "case_00001.nii.gz").write_bytes(b"broken")
    with pytest.raises(DatasetError) as info:          # the CLI prints it and exits 2
        run(["data", "check", str(folder)])
    assert "case case_00001: labelsTr/case_00001.nii.gz: unreadable label" in str(info.value)
    assert "\n" not in str(info.value)                  # one problem, one line


def test_work_folder_default_and_convert_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(["data", "phantom", "btcv", "--cases", "2", "--size", "20"]) == 0
    assert (tmp_path / "work" / "nnUNet_raw" / "Dataset901_PhantomBTCV" / "dataset.json").is_file()
    with pytest.raises(DatasetError, match="source folder not found"):
        run(["data", "convert", "brats21", str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        run(["data", "convert", "lits", str(tmp_path)])
