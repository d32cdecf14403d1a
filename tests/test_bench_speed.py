"""The speed benchmarks write their CSVs: ``bench-fastpath`` (three MedNeXt implementations side by
side, outputs compared), ``bench-train`` (the real trainer, with and without data loading) on
tiny budgets, and ``bench-models`` within its time budget, saying per row what it skipped."""
from __future__ import annotations

import csv
import io

from harness.bench import fastpath, models, train


def read(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_bench_fastpath_compares_and_times_the_three_implementations(tmp_path):
    out = tmp_path / "fastpath.csv"
    assert fastpath.main(["--models", "mednext-s-k3", "--size", "32", "--repeats", "1",
                          "--modes", "train", "--threads", "1", "--out", str(out)]) == 0
    rows = read(out)
    assert list(rows[0]) == fastpath.COLUMNS
    assert [(r["model"], r["implementation"]) for r in rows] == [
        ("mednext-s-k3", "monai"), ("mednext-s-k3", "channels_first"),
        ("mednext-s-k3", "channels_last"), ("geomean", "monai"), ("geomean", "channels_first"),
        ("geomean", "channels_last")]
    monai, first, last = rows[:3]
    assert monai["note"] == "weights shared with monai"
    assert float(monai["max_abs_diff"]) == 0.0        # the official layer order: bit-exact
    assert float(last["max_abs_diff"]) <= 1e-4 * max(1.0, float(last["output_scale"]))
    assert all(float(r["median_s"]) > 0 and r["input"] == "1x1x32x32x32" for r in rows[:3])
    assert float(first["speedup_vs_channels_first"]) == 1.0
    assert rows[5]["speedup_vs_monai"] == last["speedup_vs_monai"]    # one model: its own figure
    assert fastpath.main(["--models", "nnunet", "--size", "32", "--out", str(out)]) == 2


def test_bench_train_writes_its_csv(smoke_work, tmp_path):
    """Two one-iteration epochs per mode through the real trainer, on the prepared phantom."""
    out = tmp_path / "train.csv"
    rc = train.main(["--models", "mednext-s-k3", "--layouts", "auto", "--epochs", "2",
                     "--iterations", "1", "--patch", "32", "32", "32", "--batch", "1",
                     "--work", str(smoke_work), "--out", str(out)])
    rows = read(out)
    assert rc == 0, rows
    assert list(rows[0]) == train.COLUMNS
    assert [(r["layout"], r["mode"]) for r in rows] == [("auto", "loader"), ("auto", "no_loader")]
    for r in rows:
        assert r["status"] == "ok" and r["patch"] == "32x32x32" and r["batch"] == "1"
        assert float(r["seconds_per_iteration"]) > 0 and float(r["iterations_per_second"]) > 0
        assert 0 <= float(r["data_wait_share"]) < 1
        assert float(r["peak_mb"]) > 0 and float(r["group_peak_mb"]) > 0     # sampled
        assert float(r["epoch_seconds"]) >= float(r["seconds_per_iteration"])
    assert not (smoke_work / "bench" / "train").exists()


def test_bench_models_keeps_to_its_time_budget_and_says_what_it_skipped(tmp_path):
    out = tmp_path / "models.csv"
    # the first measurement (a 128^3 step, a subprocess that imports torch) outlives 2 s
    rc = models.main(["--models", "nnunet", "mednext-s-k3", "--size", "128", "--steps", "1",
                      "--threads", "1", "--budget", "2", "--out", str(out)])
    rows = read(out)
    assert rc == 0, rows
    assert [(r["model"], r["activation_checkpointing"]) for r in rows] == [
        ("nnunet", "False"), ("mednext-s-k3", "False"), ("mednext-s-k3", "True")]
    assert rows[0]["status"] == "skipped: stopped when the time budget of 2 s ran out"
    assert all(r["status"] == "skipped: the time budget of 2 s was spent" for r in rows[1:])
    assert all(r["params"] and r["gmacs"] for r in rows)      # sizes are always there


def test_bench_train_refuses_a_model_with_its_own_plans(tmp_path, capsys):
    """Its patch and batch come from its planner per dataset, not from the benchmark's."""
    rc = train.main(["--models", "nnunet-resenc-l-native", "--work", str(tmp_path / "work"),
                     "--out", str(tmp_path / "t.csv")])
    assert rc == 2 and "trains at the patch and batch its planner chooses" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists() and not (tmp_path / "work").exists()
