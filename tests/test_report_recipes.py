"""The recipe table of a report: run.json first, then the declaration, then the registry."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.report import recipes
from harness.studies import load_profile
from harness.studies.options import RunOptions


def _cell(model, dataset, fold=0, run_id=None, **extra):
    return {"run_id": run_id, "dataset": dataset, "task": dataset.removeprefix("phantom-"),
            "model": model, "fold": fold, **extra}


def _run(work, run_id, recipe, settings):
    (work / "runs" / run_id).mkdir(parents=True)
    (work / "runs" / run_id / "run.json").write_text(
        json.dumps({"status": "done", "spec": {"recipe": recipe, "settings": settings}}))


def test_cells_without_a_run_or_a_declaration_follow_the_registry(tmp_path):
    options = RunOptions(recipe="official-code").resolved(load_profile("smoke"))
    cells = [_cell("swin-unetr", "brats21"), _cell("mednext-b-k5", "kits19"), _cell("no-such-model", "btcv")]
    t = recipes.recipe_table(cells, tmp_path, options).set_index("model")
    assert set(t["recipe"]) == {"official-code"}
    assert t.loc["swin-unetr", "lr"] == 1e-4 and t.loc["swin-unetr", "brats_target"] == "labels"
    assert t.loc["swin-unetr", "source"] == "declared, not run"
    assert t.loc["mednext-b-k5", "lr"] == 1e-3             # official code: no KiTS19 override
    assert t.loc["mednext-b-k5", "precision"] == "amp" and not t.loc["mednext-b-k5", "compile"]
    assert t.loc["no-such-model", "source"].startswith("unknown (UserError: unknown model")


def test_run_json_wins_and_folds_that_agree_are_one_row(tmp_path):
    options = RunOptions().resolved(load_profile("smoke"))
    sgd = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5,
           "eps": None, "poly_exponent": 0.9, "grad_clip": 12.0, "deep_supervision": True,
           "activation_checkpointing": False}
    settings = {"compile": False, "precision": "amp"}
    for fold, lr in ((0, 0.01), (1, 0.01), (2, 0.005)):
        _run(tmp_path, f"r{fold}", {**sgd, "lr": lr}, settings)
    declared = {**sgd, "lr": 0.5}
    cells = [_cell("nnunet", "btcv", f, f"r{f}", recipe=declared) for f in range(3)]
    cells.append(_cell("nnunet", "btcv", 3, "never-ran", recipe=declared, settings=settings))
    t = recipes.recipe_table(cells, tmp_path, options, {"nnunet": "nnUNet"})
    assert t[["folds", "lr", "source"]].values.tolist() == [
        ["0;1", 0.01, "run.json"], ["2", 0.005, "run.json"], ["3", 0.5, "declared, not run"]]
    assert set(t["label"]) == {"nnUNet"}
    md = recipes.recipe_markdown(t, ["nnunet", "absent"])
    assert "| nnunet | nnUNet | SGD, Nesterov | 0.01 / 5e-3 / 0.5 |" in md
    assert "run.json / declared, not run" in md and "absent" not in md


def test_values_that_differ_per_dataset_are_named():
    rows = [{"model": "m", "label": "M", "task": t, "source": "run.json", "optimizer": "adamw",
             "lr": lr, "momentum": None, "nesterov": False, "weight_decay": 3e-5, "eps": 1e-4,
             "poly_exponent": 0.9, "grad_clip": 12.0, "deep_supervision": True,
             "activation_checkpointing": False, "precision": "amp", "compile": False}
            for t, lr in (("btcv", 1e-3), ("amos22", 1e-3), ("kits19", 1e-4), ("brats21", 2.5e-3))]
    md = recipes.recipe_markdown(pd.DataFrame(rows), ["m"])
    assert "| 1e-3 (KiTS19: 1e-4, BraTS21: 2.5e-3) |" in md
    empty = pd.DataFrame(columns=list(recipes.COLUMNS))
    assert recipes.recipe_markdown(empty, ["m"]) == "No cells declared.\n"


@pytest.mark.parametrize("value, text", [(1e-3, "1e-3"), (2.5e-3, "2.5e-3"), (3e-5, "3e-5"),
                                         (0.01, "0.01"), (0.99, "0.99"), (12.0, "12"), (None, "–")])
def test_numbers_read_as_the_paper_writes_them(value, text):
    assert recipes._num(value) == text
