"""``make bench-train``: nnU-Net style training speed through the real trainer, with and without
data loading.

The KiTS19 phantom is prepared once under the ``smoke`` profile (planned and preprocessed at 1 mm,
as every run; patch 32x64x64, batch 2, unless ``--patch`` / ``--batch`` say otherwise). Then, per
model, MedNeXt layout (``auto``: channels-last on the CPU, and ``channels_first``: the official
computation; other models have one) and mode, a fresh
:class:`~harness.nnunet.trainer.BenchTrainer` built by :func:`harness.nnunet.training.make_trainer`
trains ``--epochs`` epochs of ``--iterations`` iterations through nnU-Net's own ``run_training``
(one validation iteration and a checkpoint per epoch, as in every run; no UpKern initialisation).
Modes:

- ``loader``: nnU-Net's data loading and augmentation as configured (``nnUNet_n_proc_DA``
  background processes; the harness sets 0 on a CPU: augmentation in the training process);
- ``no_loader``: the loader's first batch is reused for every iteration: the step alone.

Per measurement (each in a subprocess of its own, under :mod:`harness.bench.watchdog`, which
stops it past ``--timeout`` or 90% of the available memory; a progress bar counts them):
``seconds_per_iteration`` and ``iterations_per_second`` over the epochs after the first (the first
sets kernels and the allocator up; with one epoch, that one), the first epoch's seconds,
``data_wait_share`` = 1 - (time in ``train_step``) / (time of the training loops), i.e. the share
waiting for ``next(dataloader)``, ``epoch_seconds`` (whole epochs: training, validation,
checkpoint), ``peak_mb``, the training process's peak resident memory (``VmHWM``), and
``group_peak_mb``, the highest sampled resident memory of its process group (loader processes
included, shared pages counted once per process). The measurements run one after the other, so the 1-minute load average
before and after each is recorded: on a shared machine a figure taken under load is slower.
Writes ``results/bench/train.csv``.

    python -m harness.bench.train                                   # MedNeXt-S k3, 5 x 3 iterations
    python -m harness.bench.train --models mednext-b-k5 nnunet --epochs 2 --iterations 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from harness.bench import Progress, watchdog, write_table

PROFILE = "smoke"
TASK = "kits19"
MODES = ("loader", "no_loader")
LAYOUTS = ("auto", "channels_first")
COLUMNS = ["model", "layout", "mode", "epochs", "iterations_per_epoch", "patch", "batch",
           "seconds_per_iteration", "iterations_per_second", "first_epoch_seconds",
           "data_wait_share", "epoch_seconds", "peak_mb", "group_peak_mb", "threads", "device",
           "torch", "load_before", "load_after", "status"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.bench.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mednext-s-k3"], help="registry names")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--iterations", type=int, default=3, help="training iterations per epoch")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS,
                   help="MedNeXt layouts to measure (other models: their only one)")
    p.add_argument("--patch", type=int, nargs=3, default=None,
                   help="3D training patch (default: the smoke profile's, 32 64 64)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the profile's, 2)")
    p.add_argument("--work", type=Path, default=Path("work"),
                   help="work folder: the phantom is prepared there as for any smoke run, the "
                        "benchmark trains in <work>/bench/train (default ./work)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    p.add_argument("--out", type=Path, default=None,
                   help="CSV (default results/bench/train.csv under $MEDNEXT_BENCH_RESULTS)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def prepare(work: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    """Prepare the phantom (once; skipped when done) and return its data root and each model's
    run spec with the benchmark's budget, patch and batch."""
    from harness.jobs.plan import execute, job_data_root, job_status, plan_cell

    specs, root = {}, None
    for model in args.models:
        jobs = plan_cell(TASK, model, 0, PROFILE, work)
        if root is None:
            if job_status(jobs[0]) != "done":
                print(f"preparing the {TASK} phantom in {work} ...", file=sys.stderr, flush=True)
                execute(jobs[0])
            root = job_data_root(jobs[0])
        spec = dict(jobs[-1].payload["spec"])
        prof = spec["profile"]
        spec["profile"] = {**prof, "epochs": args.epochs, "iterations_per_epoch": args.iterations,
                           "val_iterations_per_epoch": 1,
                           "patch": list(args.patch or prof["patch"]),
                           "batch": args.batch or prof["batch"]}
        spec["init"] = None      # a speed benchmark: no UpKern source run needed
        specs[model] = spec
    return root, specs


class _Repeat:
    """An endless loader that yields one batch again and again (mode ``no_loader``)."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        return self

    def __next__(self):
        return self.batch


def _child(job: dict) -> None:
    """Runs in the subprocess: train one configuration, time it and report the figures
    (:mod:`harness.bench.watchdog` events)."""
    import torch

    from harness.compute import peak_rss_bytes
    from harness.nnunet.env import configure
    from harness.nnunet.training import make_trainer
    from harness.nnunet.trainer import unwrap

    watchdog.phase("set-up")
    configure(Path(job["root"]))
    run_dir = Path(job["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)
    prof = job["spec"]["profile"]
    trainer = make_trainer(job["spec"], run_dir)
    trainer.initialize()
    net = unwrap(trainer.network)
    if hasattr(net, "layout"):
        net.layout = job["layout"]
    loops, steps, epochs, real = [], [], [], {}

    def timed(method, record):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                record(t0, time.perf_counter())
        return wrapper

    def epoch_start(*args):
        watchdog.phase(f"epoch {len(epochs)}")
        epochs.append([time.perf_counter(), None])
        loops.append([time.perf_counter(), None])
        steps.append(0.0)
        return start_train(*args)

    def epoch_train_end(*args):
        loops[-1][1] = time.perf_counter()
        return end_train(*args)

    def add_step(t0, t1):
        steps[-1] += t1 - t0

    start_train, end_train = trainer.on_train_epoch_start, trainer.on_train_epoch_end
    trainer.on_train_epoch_start, trainer.on_train_epoch_end = epoch_start, epoch_train_end
    trainer.train_step = timed(trainer.train_step, add_step)
    trainer.on_epoch_end = timed(trainer.on_epoch_end, lambda t0, t1: epochs[-1].__setitem__(1, t1))
    if job["mode"] == "no_loader":
        get_loaders = trainer.get_dataloaders

        def one_batch_loaders():
            train, val = get_loaders()
            real["train"] = train
            return _Repeat(next(train)), val
        trainer.get_dataloaders = one_batch_loaders
    trainer.run_training()
    if hasattr(real.get("train"), "_finish"):
        real["train"]._finish()                   # the loader processes nnU-Net would have ended
    steady = slice(1, None) if len(loops) > 1 else slice(None)
    loop_s = sum(b - a for a, b in loops[steady])
    iterations = prof["iterations_per_epoch"] * len(loops[steady])
    peak = peak_rss_bytes()
    watchdog.report(seconds_per_iteration=loop_s / iterations,
                    iterations_per_second=iterations / loop_s,
                    first_epoch_seconds=epochs[0][1] - epochs[0][0],
                    data_wait_share=max(0.0, 1 - sum(steps[steady]) / loop_s),
                    epoch_seconds=sum(b - a for a, b in epochs) / len(epochs),
                    peak_mb=round(peak / 2 ** 20, 1) if peak else "",
                    threads=torch.get_num_threads(),
                    device=str(trainer.device), torch=torch.__version__)
    watchdog.finish()


def bench(args: argparse.Namespace) -> list[dict]:
    from harness import registry
    from harness.errors import UserError

    for name in args.models:
        if registry.get(name).plans:             # unknown names fail before any work too
            raise UserError(f"{name} trains at the patch and batch its planner chooses per "
                            "dataset; bench-train times every model at one patch and batch")
    work = Path(args.work).resolve()
    root, specs = prepare(work, args)
    run_dir = work / "bench" / "train"
    limit = int(0.9 * (watchdog.available_memory_bytes() or 24 * watchdog.GIB))
    todo = [(model, layout, mode) for model in args.models
            for layout in (args.layouts if registry.get(model).family == "mednext" else ["-"])
            for mode in args.modes]
    bar, rows = Progress(len(todo)), []
    for i, (model, layout, mode) in enumerate(todo):
        spec = specs[model]
        bar.show(i, f"{model} {layout} {mode}: {args.epochs} epochs x {args.iterations} "
                    f"iterations")
        load_before = os.getloadavg()[0]
        job = {"spec": spec, "root": str(root), "layout": layout, "mode": mode,
               "run_dir": str(run_dir)}
        res = watchdog.run_child([sys.executable, "-m", "harness.bench.train", "--child",
                                  json.dumps(job)], max_rss_bytes=limit, timeout_s=args.timeout)
        rows.append({"model": model, "layout": layout, "mode": mode, "epochs": args.epochs,
                     "iterations_per_epoch": args.iterations,
                     "patch": "x".join(map(str, spec["profile"]["patch"])),
                     "batch": spec["profile"]["batch"],
                     **{k: _round(v) for k, v in res.values.items()},
                     "group_peak_mb": round(res.peak_rss_bytes / 2 ** 20, 1),
                     "load_before": round(load_before, 2),
                     "load_after": round(os.getloadavg()[0], 2), "status": res.status})
    bar.show(len(todo), "done")
    shutil.rmtree(run_dir, ignore_errors=True)
    return rows


def _round(v):
    return round(v, 4) if isinstance(v, float) else v


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        _child(json.loads(args.child))
        return 0
    if min(args.epochs, args.iterations, args.batch or 1, *(args.patch or [1])) < 1:
        raise SystemExit("--epochs, --iterations, --batch and --patch must be positive")
    from harness.errors import UserError
    from harness.studies import results_root

    try:
        rows = bench(args)
    except (UserError, ValueError) as e:
        print(f"bench-train: {e}", file=sys.stderr)
        return 2
    write_table(rows, COLUMNS, args.out or results_root() / "bench" / "train.csv")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
