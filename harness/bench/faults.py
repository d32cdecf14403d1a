"""Fault benchmark: ``make bench-faults`` -> ``results/bench/faults.csv``.

The job layer promises that a killed or doubled launch loses at most an epoch and trains nothing
twice, that a bad checkpoint or a full disk costs no finished work, and that nothing the user gave
is ever deleted. This benchmark breaks real runs (the KiTS19 phantom, smoke-sized, through the
same worker processes and command line a user runs) at random points and checks the promise
after each. One row per fault:

- ``sigkill-training``: SIGKILL to the whole job at a random training iteration, then a re-run.
- ``sigkill-checkpoint-write``: SIGKILL while a checkpoint is being written (the temporary file
  exists), then a re-run.
- ``corrupt-checkpoint``: the run is killed, its ``checkpoint_latest.pth`` truncated at a random
  byte or overwritten with random bytes, then a re-run (it must resume from
  ``checkpoint_previous.pth`` and say so).
- ``disk-full``: the checkpoint write of a random epoch fails with ``ENOSPC`` (injected at
  ``harness.io.open_for_write``, the one seam every checkpoint write goes through); the run must
  fail with a clear error, keep its previous checkpoint intact, and resume once space is back.
- ``two-launchers``: two ``mednext-bench run`` of one small grid on one fresh work folder, the
  second started after a random delay; every run must be trained by exactly one process.
- ``data-loss``: data converted into ``WORK/nnUNet_raw`` and trained from there (the reported
  defect), from a relative ``--data``, through a symlinked ``--data``; plus a conversion onto a
  folder of the user's. Not one of the user's files may change.
- ``malformed-input``: a conversion of a download with one case broken (NaN voxels, a label
  outside the label map, a geometry mismatch, a missing channel) must end with exit status 2,
  one ``error:`` line naming the case and the file, and nothing written.

Columns: fault, trials, passed, work_lost_epochs (the most any trial lost: iterations done
before the fault but not kept, in epochs; empty where no training is involved), data_lost_files
(user files changed or deleted, all trials), seconds, details (per-trial notes of failures and
what was observed, e.g. how many kills landed inside a checkpoint write).

Usage: ``python -m harness.bench.faults [--faults a,b] [--trials N] [--seed S] [--out CSV]``.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

EPOCHS, ITERATIONS = 3, 4          # per faulted run: short, but every epoch writes a checkpoint
COLUMNS = ("fault", "trials", "passed", "work_lost_epochs", "data_lost_files", "seconds", "details")


@dataclass
class Trial:
    passed: bool
    lost_epochs: float | None = None
    data_lost: int = 0
    note: str = ""


@dataclass
class Bench:
    """Shared state: a scratch folder and a prepared smoke KiTS19 phantom every trial links."""

    root: Path
    rng: random.Random
    base_work: Path | None = None
    counter: list = field(default_factory=lambda: [0])
    trial: int = 0              # the index of the trial of the current fault (variants cycle)

    def fresh_work(self, share_data: bool = True) -> Path:
        self.counter[0] += 1
        work = self.root / f"trial-{self.counter[0]:03d}"
        work.mkdir(parents=True)
        if share_data:
            (work / "datasets").symlink_to(self.prepared() / "datasets", target_is_directory=True)
        return work

    def prepared(self) -> Path:
        if self.base_work is None:
            from harness.jobs.plan import execute, plan_cell
            self.base_work = self.root / "base"
            self.base_work.mkdir(parents=True, exist_ok=True)
            with open(self.base_work / "prepare.log", "w") as log, \
                    contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                execute(plan_cell("kits19", "nnunet", 0, "smoke", self.base_work)[0])
        return self.base_work


# ---- helpers -------------------------------------------------------------------------------

def _py(*args: str, cwd: Path | None = None, env: dict | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _lost_files(before: dict[str, str], folder: Path) -> int:
    after = _digest(folder) if folder.is_dir() else {}
    return sum(1 for k, v in before.items() if after.get(k) != v)


def train_job(work: Path, fold: int = 0):
    """A smoke nnU-Net run of EPOCHS x ITERATIONS on the shared phantom, as a job file."""
    from harness.io import write_text
    from harness.jobs.plan import Job, plan_cell
    from harness.studies.runs import RunSpec

    base = plan_cell("kits19", "nnunet", fold, "smoke", work)[-1]
    spec = RunSpec.from_dict(base.payload["spec"])
    spec = spec.replace(profile={**spec.profile, "epochs": EPOCHS, "iterations_per_epoch": ITERATIONS})
    job = Job(f"train:{spec.run_id}", "train",
              {**base.payload, "spec": spec.to_dict(), "run_id": spec.run_id}, base.deps, base.label)
    path = write_text(work / "jobs" / "bench" / f"{spec.run_id}.json", job.to_json())
    return job, path, work / "runs" / spec.run_id


def _worker(job_file: Path, log: Path, prelude: str = "") -> subprocess.Popen:
    from harness.processes import spawn
    code = (f"import sys\n{prelude}\nfrom harness.jobs.worker import main\n"
            f"sys.exit(main([{str(job_file)!r}]))\n")
    return spawn([sys.executable, "-c", code], stdout=open(log, "a"))


def _progress(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def _train_until(proc: subprocess.Popen, run_dir: Path, target: int) -> int | None:
    """Wait until the run has done ``target`` training iterations; the count seen, or None if
    the process ended first."""
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        p = _progress(run_dir)
        if p.get("phase") == "train" and p.get("done", 0) >= target:
            return int(p["done"])
        time.sleep(0.01)
    return None


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _checkpointed_epoch(run_dir: Path) -> int:
    """The epoch a resume starts at: latest if it reads, else previous, else 0."""
    from mednext import read_checkpoint
    for name in ("checkpoint_latest.pth", "checkpoint_previous.pth"):
        try:
            return int(read_checkpoint(run_dir / name)["current_epoch"])
        except (OSError, ValueError, KeyError):
            continue
    return 0


def _resume_and_check(job, job_file: Path, run_dir: Path, done_at_fault: int,
                      expect_epoch: int | None = None, expect_note: str | None = None,
                      max_lost: float = 1.0) -> Trial:
    """Re-run the job; check it completes, repeats no kept epoch, loses at most ``max_lost``
    epochs (one for a kill: the epoch in flight)."""
    from harness.jobs.plan import job_status
    from harness.nnunet.checkpoints import CHECKPOINT_TMP

    kept = _checkpointed_epoch(run_dir) if expect_epoch is None else expect_epoch
    r = _py("-m", "harness.jobs.worker", str(job_file))
    rec = json.loads((run_dir / "run.json").read_text())
    problems = []
    if r.returncode != 0 or job_status(job) != "done":
        problems.append(f"resume failed (exit {r.returncode}): {r.stderr.strip()[-300:]}")
    last = (rec["attempts"][-1].get("training") or {})
    resumed = last.get("resumed_from_epoch")
    if resumed != (kept or None) and not (kept == 0 and resumed is None):
        problems.append(f"resumed from epoch {resumed}, {kept} were kept")
    import pandas as pd
    try:
        epochs = list(pd.read_csv(run_dir / "progress.csv")["epoch"])
    except (OSError, ValueError, KeyError):
        epochs = []
    if epochs != list(range(EPOCHS)):
        problems.append(f"progress.csv epochs {epochs}")
    leftovers = [p.name for p in run_dir.iterdir() if CHECKPOINT_TMP.fullmatch(p.name)]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    if expect_note and expect_note not in (last.get("resume_note") or ""):
        problems.append(f"no resume note naming {expect_note!r}: {last.get('resume_note')!r}")
    lost = max(0, done_at_fault - kept * ITERATIONS) / ITERATIONS
    if lost > max_lost:
        problems.append(f"lost {lost:.2f} epochs (at most {max_lost:g} allowed)")
    return Trial(not problems, lost, 0, "; ".join(problems))


# ---- faults ------------------------------------------------------------------------------

def sigkill_training(b: Bench) -> Trial:
    work = b.fresh_work()
    job, job_file, run_dir = train_job(work)
    target = b.rng.randint(1, EPOCHS * ITERATIONS - 1)
    proc = _worker(job_file, work / "first.log")
    done = _train_until(proc, run_dir, target)
    if done is None or proc.poll() is not None:
        return Trial(False, note=f"the run ended before iteration {target}")
    _kill_group(proc)
    t = _resume_and_check(job, job_file, run_dir, done)
    t.note = f"killed after iteration {done}" + (f": {t.note}" if t.note else "")
    return t


def sigkill_checkpoint_write(b: Bench) -> Trial:
    from harness.nnunet.checkpoints import CHECKPOINT_TMP

    work = b.fresh_work()
    job, job_file, run_dir = train_job(work)
    epoch = b.rng.randint(1, EPOCHS - 1)        # the checkpoint written at the end of this epoch
    proc = _worker(job_file, work / "first.log")
    hit, done = False, 0
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        p = _progress(run_dir)
        if p.get("phase") == "train" and p.get("done", 0) >= epoch * ITERATIONS:
            try:
                names = os.listdir(run_dir)
            except OSError:
                names = []
            if any(CHECKPOINT_TMP.fullmatch(n) for n in names):
                done, hit = epoch * ITERATIONS, True
                break
            if p.get("done", 0) > epoch * ITERATIONS:   # missed this write: kill now anyway
                done = p["done"]
                break
        time.sleep(0.001)
    if proc.poll() is not None:
        return Trial(False, note="the run ended before the kill")
    _kill_group(proc)
    t = _resume_and_check(job, job_file, run_dir, done)
    t.note = ("inside a checkpoint write" if hit else f"after iteration {done} (write missed)") + \
        (f": {t.note}" if t.note else "")
    return t


def corrupt_checkpoint(b: Bench) -> Trial:
    work = b.fresh_work()
    job, job_file, run_dir = train_job(work)
    proc = _worker(job_file, work / "first.log")
    target = (EPOCHS - 1) * ITERATIONS + 1       # both generations exist: latest and previous
    done = _train_until(proc, run_dir, target)
    if done is None or proc.poll() is not None:
        return Trial(False, note="the run ended before the fault")
    _kill_group(proc)
    latest = run_dir / "checkpoint_latest.pth"
    if not (run_dir / "checkpoint_previous.pth").is_file():
        return Trial(False, note="no checkpoint_previous.pth after two epochs")
    previous_epoch = _checkpointed_epoch_of(run_dir / "checkpoint_previous.pth")
    data = latest.read_bytes()
    how = b.rng.choice(["truncated", "random bytes"])
    if how == "truncated":
        latest.write_bytes(data[: b.rng.randint(0, len(data) - 1)])
    else:
        start = b.rng.randint(0, max(0, len(data) - 4096))
        latest.write_bytes(data[:start] + os.urandom(4096) + data[start + 4096:])
    # the epoch of the corrupt checkpoint is lost with it: one epoch more than a kill
    t = _resume_and_check(job, job_file, run_dir, done, expect_epoch=previous_epoch,
                          expect_note="checkpoint_previous.pth", max_lost=2.0)
    t.note = f"latest {how}" + (f": {t.note}" if t.note else "")
    return t


def _checkpointed_epoch_of(path: Path) -> int:
    from mednext import read_checkpoint
    return int(read_checkpoint(path)["current_epoch"])


class FullDisk(io.FileIO):
    """A file that accepts ``limit`` bytes and then fails as a full disk does (``ENOSPC``):
    what ``harness.io.open_for_write`` returns when a test or this benchmark injects the fault."""

    def __init__(self, path, limit: int = 0):
        super().__init__(path, "wb")
        self.limit, self.written = limit, 0

    def write(self, b):
        if self.written + len(b) > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(b)
        return super().write(b)


# Run inside the worker process: the nth checkpoint write (latest or final) meets a full disk.
_ENOSPC_PRELUDE = """
import harness.io as _hio
from harness.bench.faults import FullDisk
_state = {{"n": 0}}
_plain = _hio.open_for_write
def _open(path):
    name = str(path).rsplit("/", 1)[-1]
    if name.startswith((".checkpoint_latest.pth.", ".checkpoint_final.pth.")):
        _state["n"] += 1
        if _state["n"] == {nth}:
            return FullDisk(path)
    return _plain(path)
_hio.open_for_write = _open
"""


def disk_full(b: Bench) -> Trial:
    from harness.jobs.plan import job_status

    work = b.fresh_work()
    job, job_file, run_dir = train_job(work)
    nth = b.rng.randint(1, EPOCHS)       # the checkpoint of epoch nth - 1; EPOCHS: the final one
    target = "checkpoint_final.pth" if nth == EPOCHS else "checkpoint_latest.pth"
    proc = _worker(job_file, work / "first.log", _ENOSPC_PRELUDE.format(nth=nth))
    rc = proc.wait(timeout=600)
    problems = []
    rec = json.loads((run_dir / "run.json").read_text())
    error = rec.get("error") or ""
    if rc == 0 or job_status(job) != "failed":
        problems.append(f"exit {rc}, status {job_status(job)}: the fault went unnoticed")
    if "No space left on device" not in error or target not in error:
        problems.append(f"unclear error: {error[:200]!r}")
    kept = _checkpointed_epoch(run_dir)
    if kept != nth - 1:
        problems.append(f"the intact checkpoint resumes at epoch {kept}, expected {nth - 1}")
    t = _resume_and_check(job, job_file, run_dir, nth * ITERATIONS)
    t.passed = t.passed and not problems
    t.note = f"ENOSPC writing {target} of epoch {nth - 1}" + \
        ("; " + "; ".join(problems) if problems else "") + (f"; {t.note}" if t.note else "")
    return t


def two_launchers(b: Bench, models: str = "nnunet,mednext-s-k3") -> Trial:
    work = b.fresh_work(share_data=False)      # both must also prepare the data only once
    args = ["-m", "harness.cli", "run", "--study", "table2", "--profile", "smoke", "--models", models,
            "--datasets", "kits19", "--work", str(work), "--results", str(work / "results"),
            "--jobs", "1"]
    from harness.processes import spawn
    first = spawn([sys.executable, *args], stdout=open(work / "launcher1.log", "w"))
    delay = b.rng.uniform(0.0, 3.0)
    time.sleep(delay)
    second = spawn([sys.executable, *args], stdout=open(work / "launcher2.log", "w"))
    rcs = [first.wait(timeout=1800), second.wait(timeout=1800)]
    problems = [f"launcher {i + 1} exited {rc}" for i, rc in enumerate(rcs) if rc != 0]
    attempts = {}
    for rj in (work / "runs").glob("*/run.json"):
        rec = json.loads(rj.read_text())
        trained = [a for a in rec["attempts"] if (a.get("training") or {}).get("trained")]
        attempts[rj.parent.name] = (len(rec["attempts"]), len(trained))
    expected = len(models.split(","))
    if len(attempts) != expected:
        problems.append(f"{len(attempts)} runs, expected {expected}")
    twice = {k: v for k, v in attempts.items() if v != (1, 1)}
    if twice:
        problems.append(f"runs with several attempts or trainings: {twice}")
    logs = "".join(p.read_text(errors="replace") for p in (work / "logs").glob("prepare_*.log"))
    prepared = logs.count("preparing ")
    if prepared != 1:
        problems.append(f"the dataset was prepared {prepared} times")
    note = (f"second launcher {delay:.1f} s later: {len(attempts)} runs, each trained by one "
            f"process; data prepared {prepared} time(s)")
    return Trial(not problems, None, 0, note + ("; " + "; ".join(problems) if problems else ""))


def data_loss(b: Bench) -> Trial:
    variants = ["converted into the work folder", "relative --data", "symlinked --data",
                "conversion onto a user folder"]
    variant = variants[b.trial % len(variants)]
    work = b.fresh_work(share_data=False)
    src = work / "kits19-download"
    r = _py("-m", "harness.cli", "data", "phantom", "kits19", "--cases", "5", "--size", "32",
            "--keep-source", str(src), "--work", str(work / "scratch"))
    if r.returncode != 0:
        return Trial(False, note=f"phantom: {r.stderr[-300:]}")
    if variant == "conversion onto a user folder":
        user = work / "mine" / "Dataset503_KiTS19"
        (user / "imagesTr").mkdir(parents=True)
        (user / "imagesTr" / "scan_0000.nii.gz").write_bytes(os.urandom(1000))
        (user / "notes.txt").write_text("my annotations")
        before = _digest(user)
        r = _py("-m", "harness.cli", "data", "convert", "kits19", str(src), "--out", str(work / "mine"))
        lost = _lost_files(before, user)
        ok = r.returncode == 2 and "refusing to replace" in r.stderr and not lost
        return Trial(ok, None, lost, f"{variant}: exit {r.returncode}, {lost} files lost"
                     + ("" if ok else f"; {r.stderr.strip()[-200:]}"))
    r = _py("-m", "harness.cli", "data", "convert", "kits19", str(src), "--work", str(work))
    data = work / "nnUNet_raw" / "Dataset503_KiTS19"
    if r.returncode != 0:
        return Trial(False, note=f"convert: {r.stderr[-300:]}")
    before = _digest(data)
    cwd, data_arg = None, str(work / "nnUNet_raw")
    if variant == "relative --data":
        cwd, data_arg = work, "nnUNet_raw"
    elif variant == "symlinked --data":
        (work / "link").symlink_to(work / "nnUNet_raw", target_is_directory=True)
        data_arg = str(work / "link")
    r = _py("-m", "harness.cli", "train", "--dataset", "kits19", "--model", "nnunet", "--fold", "0",
            "--profile", "check", "--data", data_arg, "--work", str(work), cwd=cwd)
    lost = _lost_files(before, data)
    ok = r.returncode == 0 and lost == 0
    return Trial(ok, None, lost, f"{variant}: exit {r.returncode}, {lost} of {len(before)} files "
                 "changed or lost" + ("" if r.returncode == 0 else f"; {r.stdout[-300:]}"))


def malformed_input(b: Bench) -> Trial:
    import numpy as np
    import SimpleITK as sitk

    from harness.datasets.phantom import write_phantom_source

    kinds = ["NaN voxels", "label outside the label map", "geometry mismatch", "missing channel"]
    kind = kinds[b.trial % len(kinds)]
    work = b.fresh_work(share_data=False)
    task = "brats21" if kind == "missing channel" else "kits19"
    src = work / "download"
    write_phantom_source(task, src, 5, 24, b.rng.randint(0, 999), False)
    i = b.rng.randint(0, 4)
    if task == "kits19":
        case = f"case_{i:05d}"
        path = src / "data" / case / ("segmentation.nii.gz" if "label" in kind else "imaging.nii.gz")
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)
        if kind == "NaN voxels":
            arr = arr.astype(np.float32)
            arr.flat[b.rng.randrange(arr.size)] = np.nan
        elif "label" in kind:
            arr = arr.copy()
            arr.flat[b.rng.randrange(arr.size)] = 7
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(img)
        if kind == "geometry mismatch":
            out.SetOrigin(tuple(o + 5.0 for o in img.GetOrigin()))
        sitk.WriteImage(out, str(path), True)
    else:
        case_dir = sorted(p for p in src.iterdir() if p.is_dir())[i]
        case = case_dir.name
        path = next(case_dir.glob("*_t2.nii.gz"))
        path.unlink()
    out_root = work / "raw"
    r = _py("-m", "harness.cli", "data", "convert", task, str(src), "--out", str(out_root))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    written = list(out_root.iterdir()) if out_root.exists() else []
    problems = []
    if r.returncode != 2:
        problems.append(f"exit {r.returncode}")
    if len(lines) != 1 or not lines[0].startswith("mednext-bench: error:"):
        problems.append(f"{len(lines)} stderr lines: {r.stderr.strip()[-300:]!r}")
    elif case not in lines[0] or path.name not in lines[0]:
        problems.append(f"the error does not name case {case} and file {path.name}: {lines[0]!r}")
    if written:
        problems.append(f"written: {[p.name for p in written]}")
    return Trial(not problems, None, 0, f"{kind} in {case}" + (": " + "; ".join(problems)
                                                              if problems else ""))


FAULTS = {
    "sigkill-training": sigkill_training,
    "sigkill-checkpoint-write": sigkill_checkpoint_write,
    "corrupt-checkpoint": corrupt_checkpoint,
    "disk-full": disk_full,
    "two-launchers": two_launchers,
    "data-loss": data_loss,
    "malformed-input": malformed_input,
}
DEFAULT_TRIALS = {"two-launchers": 3, "data-loss": 4, "malformed-input": 4}


def run_faults(names=None, trials: int | None = None, seed: int = 0,
               root: Path | None = None, progress: bool = True,
               prepared_work: Path | None = None) -> list[dict]:
    """Run each fault ``trials`` times (default 5; 3-4 for the slower ones); one row per fault.

    ``prepared_work``: a work folder whose smoke KiTS19 phantom is already prepared (the trials
    link its data instead of preparing their own).
    """
    names = list(names or FAULTS)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        from harness.errors import UserError
        raise UserError(f"unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")
    rows = []
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mednext-faults-")))
        bench = Bench(Path(root), random.Random(seed), Path(prepared_work) if prepared_work else None)
        for name in names:
            n = trials or DEFAULT_TRIALS.get(name, 5)
            t0 = time.time()
            results = []
            for k in range(n):
                bench.trial = k
                try:
                    results.append(FAULTS[name](bench))
                except Exception as exc:        # a crash of the benchmark itself is a failed trial
                    results.append(Trial(False, note=f"{type(exc).__name__}: {exc}"))
                if progress:
                    r = results[-1]
                    print(f"{name} {k + 1}/{n}: {'pass' if r.passed else 'FAIL'}  {r.note}", flush=True)
            lost = [r.lost_epochs for r in results if r.lost_epochs is not None]
            rows.append({"fault": name, "trials": n, "passed": sum(r.passed for r in results),
                         "work_lost_epochs": round(max(lost), 2) if lost else None,
                         "data_lost_files": sum(r.data_lost for r in results),
                         "seconds": round(time.time() - t0, 1),
                         "details": " | ".join(r.note for r in results if r.note)})
    return rows


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from harness.io import atomic_path
    from harness.studies import results_root

    p = argparse.ArgumentParser(prog="python -m harness.bench.faults",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", default=None, help=f"comma-separated (default all: {', '.join(FAULTS)})")
    p.add_argument("--trials", type=int, default=None, help="trials per fault (default 5, 3-4 for slow ones)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="CSV (default results/bench/faults.csv under $MEDNEXT_BENCH_RESULTS)")
    args = p.parse_args(argv)
    os.environ.setdefault("MEDNEXT_BENCH_THREADS", "1")
    rows = run_faults(args.faults.split(",") if args.faults else None, args.trials, args.seed)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    out = args.out or results_root() / "bench" / "faults.csv"
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(df.drop(columns=["details"]).to_string(index=False))
    print(f"written to {out}")
    return 0 if all(r["passed"] == r["trials"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
