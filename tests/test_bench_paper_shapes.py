"""``make bench-paper-shapes`` end to end at tiny shapes, and its watchdog.

The benchmark runs as the user runs it (``main``), with the real trainer and predictor in child
processes, on shapes small enough for a 2-core CPU: one MedNeXt entry and the 2D entry with the
CPU default (windows sampled, prediction projected), nnU-Net with the full prediction (the CUDA
default), and the rows an entry gets when it does not fit or overruns its budget.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from harness.bench import paper_shapes, watchdog

# One torch thread: on a shared 2-core machine two threads that wait for each other can make a
# step 10-25 times slower when another process holds a core.
TINY = ["--patch-3d", "32", "32", "32", "--batch-3d", "2", "--patch-2d", "32", "32",
        "--batch-2d", "2", "--case-size", "40", "40", "16", "--case-spacing", "0.8", "0.8", "2.5",
        "--threads", "1"]
POSITIVE = ["step_seconds", "batch_seconds", "first_iteration_seconds", "seconds_per_iteration",
            "fold_hours_projected", "train_peak_rss_gib", "windows_total", "windows_measured",
            "pass_seconds", "window_seconds", "preprocess_seconds", "export_seconds",
            "prediction_seconds", "predict_peak_rss_gib", "rss_limit_gib"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("paper-shapes-work")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == paper_shapes.COLUMNS
        return list(reader)


def _no_leftovers(out: Path, work: Path) -> None:
    assert [p.name for p in out.parent.iterdir()] == [out.name]      # no temporary CSV
    assert not [p for p in (work / "bench" / "paper_shapes").iterdir()
                if p.name.startswith(".")]                            # scratch removed


def test_sampled_prediction_on_cpu(work, tmp_path):
    out = tmp_path / "out" / "paper_shapes.csv"
    rc = paper_shapes.main(["--models", "mednext-s-k3", "transunet", "--work", str(work),
                            "--iterations", "2", "--out", str(out), *TINY])
    assert rc == 0
    rows = {r["model"]: r for r in _rows(out)}
    assert list(rows) == ["mednext-s-k3", "transunet"]
    for model, r in rows.items():
        assert r["status"] == "ok", (model, r["status"])
        for column in POSITIVE:
            assert float(r[column]) > 0, (model, column, r[column])
        assert r["prediction_mode"] == "projected" and r["device"] == "cpu"
        assert r["threads"] == r["predict_threads"] == "1"
        assert int(r["iterations"]) == 2
        assert int(r["windows_measured"]) == 1 < int(r["windows_total"])
        # the formulas of the module docstring, from the rounded columns
        spi = float(r["seconds_per_iteration"])
        assert spi == pytest.approx(float(r["step_seconds"]) + float(r["batch_seconds"]), abs=2e-3)
        assert float(r["fold_hours_projected"]) == pytest.approx(250_000 * spi / 3600, abs=0.2)
        projected = (float(r["preprocess_seconds"]) + float(r["fixed_seconds"])
                     + float(r["export_seconds"]) + int(r["windows_total"])
                     * (float(r["window_seconds"]) + (int(r["mirror_passes"]) - 1)
                        * float(r["pass_seconds"])))
        assert float(r["prediction_seconds"]) == pytest.approx(projected, rel=0.01, abs=0.1)
    m, t = rows["mednext-s-k3"], rows["transunet"]
    assert (m["dim"], m["patch"], m["batch"], m["deep_supervision"]) == ("3d", "32x32x32", "2", "True")
    assert (t["dim"], t["patch"], t["batch"]) == ("2d", "32x32", "2")
    assert (m["mirror_passes"], t["mirror_passes"]) == ("8", "4")
    # 2D: one window per slice of the resampled volume (40 x 40 x 16 at 0.8/2.5 mm -> 32 x 32 x 40)
    assert m["resampled_size_xyz"] == t["resampled_size_xyz"] == "32x32x40"
    assert int(t["windows_total"]) == 40
    _no_leftovers(out, work)


def test_full_prediction_and_a_failed_start_leaves_the_old_csv(work, tmp_path):
    out = tmp_path / "paper_shapes.csv"
    rc = paper_shapes.main(["--models", "nnunet", "--work", str(work), "--iterations", "1",
                            "--prediction", "full", "--out", str(out), *TINY])
    assert rc == 0
    (r,) = _rows(out)
    assert r["status"] == "ok" and r["prediction_mode"] == "measured"
    assert r["windows_measured"] == r["windows_total"] and int(r["windows_total"]) >= 2
    assert r["fixed_seconds"] == "" and r["pass_seconds"] == ""      # nothing projected
    for column in ("seconds_per_iteration", "preprocess_seconds", "export_seconds",
                   "window_seconds", "prediction_seconds", "predict_peak_rss_gib"):
        assert float(r[column]) > 0, column
    assert float(r["prediction_seconds"]) >= float(r["preprocess_seconds"]) + float(r["export_seconds"])
    before = out.read_bytes()
    assert paper_shapes.main(["--models", "no-such-model", "--out", str(out), *TINY]) == 2
    assert out.read_bytes() == before
    _no_leftovers(out, work)


def test_an_entry_that_does_not_fit_or_overruns_becomes_a_row(work, tmp_path):
    out = tmp_path / "paper_shapes.csv"
    rc = paper_shapes.main(["--models", "transunet", "--work", str(work), "--max-rss-gib", "0.05",
                            "--out", str(out), *TINY])
    assert rc == 0                                    # a result, not a crash
    (r,) = _rows(out)
    assert r["train_status"].startswith("does not fit: RSS > 0.05 GiB at ")
    assert "does not fit: RSS > 0.05 GiB" in r["predict_status"]      # the case child: stopped
    assert r["status"].startswith("train: does not fit") and "prediction: " in r["status"]
    assert r["seconds_per_iteration"] == r["prediction_seconds"] == ""
    rc = paper_shapes.main(["--models", "transunet", "--work", str(work), "--prediction", "full",
                            "--train-budget", "1", "--predict-budget", "1", "--out", str(out),
                            *TINY])
    assert rc == 0
    (r,) = _rows(out)
    assert r["train_status"].startswith("did not finish: over 1 s at ")
    assert r["predict_status"].startswith("did not finish: over 1 s at ")
    _no_leftovers(out, work)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", "from harness.bench import watchdog as w\n" + code]


def test_watchdog_statuses():
    ok = watchdog.run_child(_py("w.phase('a'); w.report(x=1); w.report(y=[2]); w.finish()"),
                            max_rss_bytes=2 * watchdog.GIB, timeout_s=60)
    assert (ok.status, ok.values, ok.phase) == ("ok", {"x": 1, "y": [2]}, "a")
    big = watchdog.run_child(
        _py("w.phase('filling'); w.report(x=1)\nimport time\nb = bytearray(400 * 2**20)\n"
            "time.sleep(60)"), max_rss_bytes=200 * 2**20, timeout_s=60, poll_s=0.05)
    assert big.status == "does not fit: RSS > 0.195 GiB at filling" and big.values == {"x": 1}
    assert big.seconds < 30
    slow = watchdog.run_child(_py("w.phase('waiting')\nimport time; time.sleep(60)"),
                              max_rss_bytes=2 * watchdog.GIB, timeout_s=1)
    assert slow.status == "did not finish: over 1 s at waiting"
    crash = watchdog.run_child(_py("w.phase('here')\nraise SystemExit('boom')"),
                               max_rss_bytes=2 * watchdog.GIB, timeout_s=60)
    assert crash.status == "failed (exit 1) at here: boom"
    silent = watchdog.run_child(_py("w.phase('there')"), max_rss_bytes=2 * watchdog.GIB,
                                timeout_s=60)
    assert silent.status == "failed: ended without a result at there"
    told = watchdog.run_child(_py("w.fail('does not fit: CUDA out of memory at x')"),
                              max_rss_bytes=2 * watchdog.GIB, timeout_s=60)
    assert told.status == "does not fit: CUDA out of memory at x"
