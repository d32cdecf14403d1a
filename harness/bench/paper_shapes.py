"""``make bench-paper-shapes``: every Table 2 entry at the paper's shapes, through the real trainer
and the real predictor: time per iteration, peak memory, and the prediction of one abdomen-sized
case, with the hours one paper fold would take.

Writes ``results/bench/paper_shapes.csv`` (atomically; ``results`` = ``$MEDNEXT_BENCH_RESULTS`` or
``./results``; ``--out`` overrides) and prints one line per entry and phase. Each phase of each
entry runs in its own child process under a memory and time watchdog
(:mod:`harness.bench.watchdog`): an entry that does not fit (process-group RSS above
``--max-rss-gib``, default 90 % of the memory available at the start) or overruns its phase's
budget becomes a row that says so and in which phase. The same script runs unchanged on CUDA.

Training (the entry's run spec: registry recipe with its optimizer, deep-supervision loss,
gradient clipping, activation checkpointing; the paper profile's patch and batch, 128^3 x 2, or
512^2 x 14 for the 2D TransUNet): ``harness.nnunet.training.make_trainer`` builds the
BenchTrainer on a tiny BTCV phantom prepared like any run's data (nnU-Net's loader pads its cases
to the patch, so the batch has the paper's shape; the content does not change the cost).
``on_train_start`` (network, optimizer, loss, data loaders) is set-up, not timed. Then up to
``--iterations`` iterations, each ``next(dataloader_train)`` (``batch_seconds``) and
``trainer.train_step`` (``step_seconds``: forward, loss, backward, clipping, optimizer step;
mixed precision on CUDA as the trainer does it); another iteration starts only while the
phase's budget (``--train-budget``, counted from the child's start) leaves room for one more.

Prediction: nnU-Net's predictor as ``harness.nnunet.inference.build_predictor`` builds it (50 %
overlap, Gaussian weighting, mirroring as the paper profile: on), the network as built (random
weights: the cost does not depend on them), on one case: the BTCV phantom
(``harness.datasets.phantom_abdomen``) rendered at the case's in-plane field of view and
resampled (linear) to ``--case-size`` voxels at ``--case-spacing`` mm, default 512 x 512 x 200 at
0.8 x 0.8 x 2.5 mm (x, y, z): a BTCV-like abdominal CT, 410 x 410 x 500 voxels at 1 mm.

* ``full`` (default on CUDA): ``harness.nnunet.inference.predict_cases`` on the case -- nnU-Net's
  preprocessing (crop, CT normalisation, resampling to 1 mm), every window with every mirror
  pass, export (logits resampled back, argmax, written). ``prediction_seconds`` is measured;
  ``window_seconds`` is the window loop's time / N (every mirror pass included).
* ``sampled`` (default on CPU, where every window of every entry would take days): the
  preprocessing and the export are measured once, in their own child, by ``predict_cases`` with
  the window loop replaced by zero logits of the right shape (network-independent: the same
  figures serve every entry; the all-background segmentation it writes compresses better than
  a real one, the only difference). Per entry, the predictor's own window loop
  (``predict_logits_from_preprocessed_data`` on the preprocessed case) runs twice without
  mirroring: on no window (``fixed_seconds``: result arrays, padding, Gaussian, normalisation)
  and on ``--windows`` n of the case's N windows, spread over the volume. Then
  ``window_seconds`` = (loop time - fixed_seconds) / n, at least ``pass_seconds`` (window copy,
  one network pass, Gaussian weighting, accumulation), ``pass_seconds`` = median time of one
  network pass, and

      prediction_seconds = preprocess_seconds + fixed_seconds + export_seconds
                           + N x (window_seconds + (mirror_passes - 1) x pass_seconds)

  with mirror_passes = 8 in 3D, 4 in 2D (mirroring on), 1 (off). ``prediction_mode`` says
  ``projected`` and ``windows_measured`` / ``windows_total`` say from how many windows.
  On a CPU nnU-Net runs the window loop with ``min(nnUNet_def_n_proc, torch threads)`` threads
  (one, as the harness configures a CPU machine): ``predict_threads``.

Figures:
* ``step_seconds``, ``batch_seconds``: median over the iterations after the first (the first
  alone when only one ran); ``first_iteration_seconds``: step + batch of the first.
* ``seconds_per_iteration`` = step_seconds + batch_seconds where the loader runs in the training
  process (``nnUNet_n_proc_DA=0``, the harness's CPU setting), step_seconds otherwise (worker
  processes prepare the batches meanwhile; assumed to keep up).
* ``fold_hours_projected`` = 1000 x 250 x seconds_per_iteration / 3600 (the paper profile's
  epochs x iterations per epoch; the 50 validation iterations per epoch, checkpoints and the final
  validation are left out).
* memory: ``train_peak_rss_gib`` / ``predict_peak_rss_gib`` the child's peak resident set
  (``VmHWM``: model, optimizer, data, everything); on CUDA ``torch.cuda.max_memory_allocated`` /
  ``max_memory_reserved`` since the timed part began (the model already resident).
  ``case_peak_rss_gib`` (sampled): the watchdog's highest sample of the case child (preprocessing
  and export). A case child stopped in the export still leaves the preprocessed case: the
  entries' windows are measured, ``prediction_seconds`` stays empty and the status says why.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from harness.bench import watchdog

TASK = "btcv"
PHANTOM = {"cases": 5, "size": 32}      # the tiny training data: 5 cases for the 5-fold split
COLUMNS = [
    "model", "dim", "patch", "batch", "deep_supervision", "activation_checkpointing", "device",
    "threads", "torch", "iterations", "step_seconds", "batch_seconds", "first_iteration_seconds",
    "seconds_per_iteration", "fold_hours_projected", "train_peak_rss_gib",
    "train_cuda_allocated_gib", "train_cuda_reserved_gib", "case_size_xyz", "case_spacing_xyz_mm",
    "resampled_size_xyz", "prediction_mode", "windows_total", "windows_measured", "mirror_passes",
    "predict_threads", "pass_seconds", "window_seconds", "fixed_seconds", "preprocess_seconds",
    "export_seconds", "prediction_seconds", "predict_peak_rss_gib", "predict_cuda_allocated_gib",
    "predict_cuda_reserved_gib", "case_peak_rss_gib", "rss_limit_gib", "train_status",
    "predict_status", "status"]
CPU_DEFAULTS = {"iterations": 3, "train_budget": 210.0, "predict_budget": 120.0,
                "case_budget": 600.0}
CUDA_DEFAULTS = {"iterations": 10, "train_budget": 1200.0, "predict_budget": 3600.0,
                 "case_budget": 600.0}


def default_out() -> Path:
    from harness.studies import results_root
    return results_root() / "bench" / "paper_shapes.csv"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.bench.paper_shapes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, help="default: the table2 study's models")
    p.add_argument("--out", type=Path, default=None, help="CSV (default results/bench/paper_shapes.csv)")
    p.add_argument("--work", type=Path, default=Path("work"), help="work folder (data, scratch)")
    p.add_argument("--patch-3d", nargs=3, type=int, default=None, help="default: paper, 128^3")
    p.add_argument("--batch-3d", type=int, default=None, help="default: paper, 2")
    p.add_argument("--patch-2d", nargs=2, type=int, default=None, help="default: paper, 512^2")
    p.add_argument("--batch-2d", type=int, default=None, help="default: paper, 14")
    p.add_argument("--case-size", nargs=3, type=int, default=[512, 512, 200], metavar=("X", "Y", "Z"))
    p.add_argument("--case-spacing", nargs=3, type=float, default=[0.8, 0.8, 2.5],
                   metavar=("X", "Y", "Z"), help="mm (default 0.8 0.8 2.5)")
    p.add_argument("--prediction", choices=("auto", "full", "sampled"), default="auto",
                   help="auto: full on CUDA, sampled on CPU")
    p.add_argument("--windows", type=int, default=1, help="windows timed per entry (sampled)")
    p.add_argument("--iterations", type=int, default=None, help="most iterations (CPU 3, CUDA 10)")
    p.add_argument("--train-budget", type=float, default=None, help="s per training child (CPU 210)")
    p.add_argument("--predict-budget", type=float, default=None, help="s per prediction child (CPU 120)")
    p.add_argument("--case-budget", type=float, default=None,
                   help="s for the case's preprocessing and export (sampled; default 600)")
    p.add_argument("--max-rss-gib", type=float, default=None,
                   help="stop a child above this RSS (default: 90%% of MemAvailable at the start)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    given = [args.windows, args.batch_3d, args.batch_2d, args.iterations, *(args.patch_3d or []),
             *(args.patch_2d or []), *args.case_size, *args.case_spacing, args.train_budget,
             args.predict_budget, args.case_budget, args.max_rss_gib, args.threads]
    if any(v is not None and v <= 0 for v in given):
        p.error("sizes, spacings, batches, iterations, windows, budgets, --max-rss-gib and "
                "--threads must be positive")
    return args


# ---- parent ------------------------------------------------------------------------------

def shapes_profile(args):
    """The paper profile with its patch and batch (or the ones given), on the tiny phantom."""
    from harness.studies import load_profile
    paper = load_profile("paper")
    return replace(paper, name="paper-shapes", data="phantom", phantom=dict(PHANTOM), folds=(0,),
                   patch_3d=tuple(args.patch_3d or paper.patch_3d),
                   batch_3d=args.batch_3d or paper.batch_3d,
                   patch_2d=tuple(args.patch_2d or paper.patch_2d),
                   batch_2d=args.batch_2d or paper.batch_2d)


def prepare_data(work: Path, profile) -> Path:
    """Prepare the tiny phantom like any run's data (idempotent); returns its data root."""
    from harness.jobs.plan import execute, job_data_root, make_prepare_job
    from harness.studies.runs import phantom_data

    job = make_prepare_job(TASK, profile, work, phantom_data(TASK, profile))
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):            # nnU-Net's planner talks a lot
            execute(job, wait_lock=True)
    except BaseException:
        print(out.getvalue(), file=sys.stderr)
        raise
    return job_data_root(job)


def make_case(folder: Path, size_xyz, spacing_xyz, seed: int = 0) -> Path:
    """The abdomen-sized phantom case (``case_0000.nii.gz``), made once per size and spacing."""
    import numpy as np
    from scipy import ndimage

    from harness.datasets import nifti, phantom_abdomen
    from harness.datasets.phantom import GENERATOR_VERSION

    tag = "x".join(map(str, size_xyz)) + "-" + "x".join(f"{s:g}" for s in spacing_xyz)
    path = folder / f"case-{tag}-g{GENERATOR_VERSION}" / "case_0000.nii.gz"
    if path.is_file():
        return path
    shape_zyx = tuple(int(n) for n in size_xyz[::-1])
    fov = max(16, round(max(n * s for n, s in zip(size_xyz[:2], spacing_xyz[:2]))))
    # the renderer itself: phantom.render_case caps the field of view at 128 mm (training cases)
    image = phantom_abdomen.render(TASK, np.random.default_rng([seed, 512]), fov, 0)[0]
    factors = [n / m for n, m in zip(shape_zyx, image.shape)]
    image = ndimage.zoom(image.astype(np.float32), factors, order=1, mode="nearest")
    image = np.round(image[tuple(slice(0, n) for n in shape_zyx)]).astype(np.int16)
    if image.shape != shape_zyx:
        raise RuntimeError(f"case resampled to {image.shape}, not {shape_zyx}")
    nifti.write(nifti.from_array(image, spacing=tuple(spacing_xyz), origin=(0.0, 0.0, 0.0),
                                 direction=np.eye(3)), path)
    return path


def bench(args: argparse.Namespace) -> list[dict]:
    import torch

    from harness import registry
    from harness.ownership import ensure_folder
    from harness.studies import load_study
    from harness.studies.runs import run_spec

    names = args.models or list(load_study("table2").models)
    for name in names:
        registry.get(name)                       # unknown names fail before any work
    cuda = torch.cuda.is_available()
    for key, value in (CUDA_DEFAULTS if cuda else CPU_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    mode = args.prediction if args.prediction != "auto" else ("full" if cuda else "sampled")
    limit = int(args.max_rss_gib * watchdog.GIB) if args.max_rss_gib else \
        int(0.9 * (watchdog.available_memory_bytes() or 24 * watchdog.GIB))
    work = Path(args.work).resolve()
    ensure_folder(work, "work folder")
    profile = shapes_profile(args)
    print("preparing the phantom training data ...", file=sys.stderr, flush=True)
    root = prepare_data(work, profile)
    folder = work / "bench" / "paper_shapes"
    print("making the case ...", file=sys.stderr, flush=True)
    case = make_case(folder, args.case_size, args.case_spacing)
    common = {"root": str(root), "case": str(case), "threads": args.threads, "mode": mode,
              "windows": args.windows, "iterations": args.iterations,
              "train_budget": args.train_budget}
    spec_of = lambda model: run_spec(TASK, model, 0, profile).to_dict()    # noqa: E731
    base = {"device": "cuda" if cuda else "cpu", "rss_limit_gib": round(limit / watchdog.GIB, 2),
            "case_size_xyz": "x".join(map(str, args.case_size)),
            "case_spacing_xyz_mm": "x".join(f"{s:g}" for s in args.case_spacing),
            "prediction_mode": "measured" if mode == "full" else "projected"}
    rows = []
    with tempfile.TemporaryDirectory(prefix=".scratch-", dir=folder) as scratch:
        def child(phase, model, timeout, **extra):
            payload = {**common, **extra, "phase": phase, "spec": spec_of(model),
                       "scratch": str(Path(scratch) / f"{phase}-{model}"), "t0": time.time()}
            cmd = [sys.executable, "-m", "harness.bench.paper_shapes", "--child", json.dumps(payload)]
            return watchdog.run_child(cmd, max_rss_bytes=limit, timeout_s=timeout)

        shared, common_npy = None, str(Path(scratch) / "case.npy")
        if mode == "sampled":
            print("measuring preprocessing and export of the case ...", file=sys.stderr, flush=True)
            shared = child("case", "nnunet", args.case_budget, npy=common_npy)
            print(f"  case: {shared.status} ({shared.seconds:.0f} s)", file=sys.stderr, flush=True)
        for i, name in enumerate(names, 1):
            entry = registry.get(name)
            recipe = entry.recipe()
            row = {**base, "model": name, "dim": entry.dim,
                   "patch": "x".join(map(str, profile.patch(entry.dim))),
                   "batch": profile.batch(entry.dim), "deep_supervision": recipe.deep_supervision,
                   "activation_checkpointing": recipe.activation_checkpointing}
            train = child("train", name, args.train_budget)
            row.update(train_figures(train))
            _progress(i, len(names), name, "train", train, row)
            if shared is not None and not Path(common_npy).is_file():
                predict = watchdog.ChildResult(status=f"case: {shared.status}", phase="case")
            else:                            # the windows are measured even if the export failed
                predict = child("predict", name, args.predict_budget, npy=common_npy)
            row.update(predict_figures(predict, shared))
            _progress(i, len(names), name, "predict", predict, row)
            rows.append(row)
    return rows


def _progress(i: int, n: int, name: str, phase: str, res, figures: dict) -> None:
    key, unit = {"train": ("seconds_per_iteration", "s/iteration"),
                 "predict": ("prediction_seconds", "s prediction")}[phase]
    figure = f"{figures[key]:g} {unit}, " if isinstance(figures.get(key), float) else ""
    print(f"[{i}/{n}] {name} {phase}: {res.status} ({figure}child {res.seconds:.0f} s, "
          f"peak RSS {res.peak_rss_bytes / watchdog.GIB:.1f} GiB)", file=sys.stderr, flush=True)


def _median_after_first(values: list) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def train_figures(res) -> dict:
    """The training columns of a row from the training child's result (formulas: docstring)."""
    from harness.studies import load_profile

    v = res.values
    out = {"train_status": res.status, "threads": v.get("threads", ""), "torch": v.get("torch", ""),
           **_memory_columns("train", v)}
    steps, batches = v.get("step_times", []), v.get("batch_times", [])
    if not steps:
        return out
    paper = load_profile("paper")
    step, batch = _median_after_first(steps), _median_after_first(batches)
    per_iteration = step + batch if v.get("loader_in_process") else step
    out.update(iterations=len(steps), step_seconds=round(step, 3), batch_seconds=round(batch, 3),
               first_iteration_seconds=round(steps[0] + batches[0], 3),
               seconds_per_iteration=round(per_iteration, 3),
               fold_hours_projected=round(
                   paper.epochs * paper.iterations_per_epoch * per_iteration / 3600, 1))
    return out


def predict_figures(res, shared) -> dict:
    """The prediction columns of a row: measured (full) or projected (sampled; docstring)."""
    v = {**(shared.values if shared is not None else {}), **res.values}
    status = res.status
    if shared is not None and not shared.ok and res.ok:
        status = f"case: {shared.status}"     # windows measured; the case's export was not
    out = {"predict_status": status, **_memory_columns("predict", v)}
    if shared is not None:
        out["case_peak_rss_gib"] = round(shared.peak_rss_bytes / watchdog.GIB, 2)
    for key in ("resampled_size_xyz", "windows_total", "windows_measured", "mirror_passes",
                "predict_threads", "pass_seconds", "window_seconds", "fixed_seconds",
                "preprocess_seconds", "export_seconds", "prediction_seconds"):
        if key in v:
            out[key] = round(v[key], 3) if isinstance(v[key], float) else v[key]
    if shared is not None and shared.ok and res.ok:
        projected = (v["preprocess_seconds"] + v["fixed_seconds"] + v["export_seconds"]
                     + v["windows_total"] * (v["window_seconds"]
                                             + (v["mirror_passes"] - 1) * v["pass_seconds"]))
        out["prediction_seconds"] = round(projected, 1)
    return out


def _memory_columns(phase: str, v: dict) -> dict:
    out = {}
    for key in ("peak_rss", "cuda_allocated", "cuda_reserved"):
        if v.get(key) is not None:
            out[f"{phase}_{key}_gib"] = round(v[key] / watchdog.GIB, 2)
    return out


def row_status(row: dict) -> str:
    bad = [f"{phase}: {row[key]}" for phase, key in (("train", "train_status"),
                                                      ("prediction", "predict_status"))
           if row.get(key) != "ok"]
    return "ok" if not bad else "; ".join(bad)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        from harness.bench.paper_shapes_child import run
        return run(json.loads(args.child))
    from harness.bench import write_table
    from harness.errors import UserError

    try:
        rows = bench(args)
    except UserError as e:
        print(f"bench-paper-shapes: {e}", file=sys.stderr)
        return 2
    rows = [{**row, "status": row_status(row)} for row in rows]
    write_table(rows, COLUMNS, args.out or default_out())
    # not fitting or overrunning a budget is a result; a child that crashed is not
    return 1 if any("failed" in r["status"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
