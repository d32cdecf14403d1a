"""A wheel (non-editable) install builds every report: the package data travel with it.

The wheel is built offline from a copy of the sources (so the checkout gets no ``build/`` or
``*.egg-info`` folders), unpacked into a folder, and imported from there by a subprocess that
runs outside the repository: nothing can be read through a path relative to the checkout. The
reports are built over a small synthetic work folder, with the declared cells and the compute
figures passed in, so the subprocess needs neither ``harness.jobs`` nor the model registry.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report_fixtures import expected_cells, per_case_table, write_run

from harness.studies import load_study

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "mednext", "baselines", "harness")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", "-q", "-w", str(dist), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = dist.glob("mednext_bench-*.whl")
    return path


def test_the_wheel_holds_the_package_data_and_no_tests(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for data in ("harness/report/paper_tables/table2.csv", "harness/report/paper_tables/table1_right.csv",
                 "harness/studies/table2.json", "harness/studies/ablations.json",
                 "harness/studies/table2-plus.json", "harness/studies/profiles.json"):
        assert data in names, data
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n or "conftest" in n]
    assert {n.split("/")[0] for n in names if not n.startswith("mednext_bench-")} == \
        {"mednext", "baselines", "harness"}


def _work_folder(work: Path) -> dict:
    """A few finished runs per study (fold 0); the other declared cells are missing."""
    rng = np.random.default_rng(0)
    plan = {}
    for study, ran in (("table2", ("nnunet", "mednext-s-k3")), ("ablations", ("nnunet", "mednext-b-k3"))):
        st = load_study(study)
        datasets = [f"phantom-{t}" for t in st.datasets]
        cells = expected_cells(datasets, st.models, [0])
        for cell in cells:
            if cell["model"] in ran and cell["dataset"] in datasets[:2]:
                table = per_case_table(cell["run_id"], cell["dataset"], cell["model"], 0,
                                       [f"case_{j}" for j in range(4)], 0.8, rng)
                progress = pd.DataFrame({"epoch": [0, 1], "train_loss": [1.0, 0.8],
                                         "val_loss": [1.1, 0.9], "pseudo_dice": [0.2, 0.4],
                                         "lr": [1e-3, 5e-4], "epoch_seconds": [3, 3]})
                write_run(work, cell, "done", table, progress=progress)
        compute = {m: {"params": 1e6 * (i + 1), "gmacs": 10.0 * (i + 1)} for i, m in enumerate(st.models)}
        plan[study] = {"expected": cells, "compute": compute}
    return plan


SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import harness
    from harness.report.build import make_report

    site, work, results = map(Path, sys.argv[1:4])
    assert Path(harness.__file__).resolve().is_relative_to(site.resolve()), harness.__file__
    plan = json.loads((work / "plan.json").read_text())
    for study, p in plan.items():
        make_report(study, "smoke", work, results / study, expected=p["expected"],
                    compute=p["compute"], with_figures=True)
    print(json.dumps({"harness": harness.__file__,
                      "jobs_imported": "harness.jobs" in sys.modules,
                      "registry_imported": "harness.registry" in sys.modules}))
""")


def test_a_wheel_install_builds_every_report(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work, results, outside = tmp_path / "work", tmp_path / "results", tmp_path / "elsewhere"
    outside.mkdir()
    work.mkdir()
    (work / "plan.json").write_text(json.dumps(_work_folder(work)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(site), str(work), str(results)],
                          cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(info["harness"]).resolve().is_relative_to(site.resolve())
    assert not info["jobs_imported"] and not info["registry_imported"]

    t2, ab = results / "table2", results / "ablations"
    for path in [t2 / f"table2.{ext}" for ext in ("md", "csv", "tex")] + [
            t2 / "table2_vs_paper.csv", t2 / "report.md", t2 / "figures" / "boxplot_dsc.png",
            ab / "report.md", ab / "table1_right_vs_paper.csv"] + [
            ab / f"table1_right.{ext}" for ext in ("md", "csv", "tex")]:
        assert path.is_file() and path.stat().st_size > 0, path
    cmp = pd.read_csv(t2 / "table2_vs_paper.csv")
    nn = cmp[(cmp["model"] == "nnunet") & (cmp["dataset"] == "btcv") & (cmp["metric"] == "DSC")]
    assert nn["paper"].tolist() == [83.56] and not np.isnan(nn["ours"].iloc[0])
    assert cmp["paper"].notna().all()
    assert pd.read_csv(ab / "table1_right_vs_paper.csv")["paper"].notna().all()
    assert "| phantom-kits19 | nnunet | 0 | missing |" in (t2 / "report.md").read_text()
