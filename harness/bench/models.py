"""``make bench-models``: size, compute and training-step cost of every registered model.

Writes ``results/bench/models.csv`` (atomically; ``results`` = ``$MEDNEXT_BENCH_RESULTS`` or
``./results``) and prints it. Per model: parameters and GMACs
at the paper profile's patch (128^3; TransUNet a 512^2 slice; meta device, network as it predicts),
then one training step (forward + backward, in the configuration its recipe trains: deep
supervision as the recipe says) at a CPU-sized input (default 64^3 / 128^2, batch 1): seconds and
peak memory, for MedNeXt with and without activation checkpointing. Every step measurement runs in
its own subprocess so that its peak memory is its own (see ``harness.compute`` for how memory is
read). Networks that are identical (e.g. ``mednext-b-k3-2x`` and ``mednext-b-k3``) are measured once.

The whole run is bounded by ``--budget`` (default 25 minutes of step measurements; the sizes and
GMACs take seconds): the configurations the recipes train come first, then MedNeXt's other
checkpointing setting; each measurement may take what is left of the budget (at most
``--timeout``), and a row the budget did not reach says so in ``status``. A progress bar shows
the measurements done and the time spent. On this project's 2-core CPU machine (shared with
other jobs) the default run measured all 25 configurations in 4 minutes, MedNeXt on its
channels-last CPU path (``mednext.layout``); the budget bounds slower or busier machines.

    python -m harness.bench.models                       # everything, within the budget
    python -m harness.bench.models --models nnunet mednext-s-k3 --size 32 --out /tmp/m.csv
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from harness.bench import Progress

COLUMNS = ["model", "family", "dim", "params", "gmacs", "gmacs_patch", "step_input",
           "deep_supervision", "activation_checkpointing", "step_seconds", "first_step_seconds",
           "step_peak_mb", "process_peak_mb", "memory_method", "device", "threads", "torch", "status"]


def default_out() -> Path:
    """``results/bench/models.csv`` under ``$MEDNEXT_BENCH_RESULTS`` or ``./results``."""
    from harness.studies import results_root
    return results_root() / "bench" / "models.csv"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.bench.models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, help="registry names (default: all)")
    p.add_argument("--size", type=int, default=64, help="3D step input edge (default 64)")
    p.add_argument("--size-2d", type=int, default=128, help="2D step input edge (default 128)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=2,
                   help="steps per measurement; memory from the first, time = median of the rest")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: fp16 autocast, as trained)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    p.add_argument("--budget", type=float, default=1500,
                   help="seconds for all step measurements together (default 1500)")
    p.add_argument("--no-step", action="store_true", help="only parameters and GMACs")
    p.add_argument("--out", type=Path, default=None,
                   help="CSV to write (default: results/bench/models.csv, results = "
                        "$MEDNEXT_BENCH_RESULTS or ./results)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)   # one measurement, JSON in
    return p.parse_args(argv)


def _child(spec: dict) -> dict:
    """Runs in the subprocess: build one model on the device and measure one training step."""
    import torch

    from harness import registry
    from harness.compute import measure_step

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    patch = tuple(spec["patch"])
    torch.manual_seed(0)
    with torch.device(spec["device"]):
        model = registry.build_model(spec["model"], 1, 14, patch,
                                     activation_checkpointing=spec["checkpointing"])
    m = measure_step(model, (spec["batch"], 1) + patch, steps=spec["steps"],
                     amp=spec["device"].startswith("cuda"))
    return {**m.to_dict(), "threads": torch.get_num_threads(), "torch": torch.__version__}


def _measure(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "harness.bench.models", "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"failed: over {timeout:g} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"status": f"failed (exit {proc.returncode}): {tail}"}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "status": "ok"}


def _plan(args: argparse.Namespace, names: list[str]) -> tuple[list[dict], dict[str, dict], set]:
    """The rows (sizes filled in), the distinct step measurements they need by key, and the keys
    of the configurations the recipes train (measured first)."""
    from harness import registry

    rows, specs, first = [], {}, set()
    for name in names:
        entry = registry.get(name)
        summary = registry.compute_summary(name)
        recipe = entry.recipe()
        patch = (args.size,) * 3 if entry.dim == "3d" else (args.size_2d,) * 2
        variants = (False, True) if entry.family == "mednext" else (recipe.activation_checkpointing,)
        for ckpt in variants:
            row = {"model": name, "family": entry.family, "dim": entry.dim,
                   "params": summary["params"], "gmacs": round(summary["gmacs"], 2),
                   "gmacs_patch": "x".join(map(str, summary["patch"])),
                   "step_input": "x".join(map(str, (args.batch, 1) + patch)),
                   "deep_supervision": recipe.deep_supervision, "activation_checkpointing": ckpt,
                   "device": args.device}
            if args.no_step:
                rows.append({**row, "status": "not measured"})
                continue
            key = json.dumps([entry.builder, dict(entry.kwargs), ckpt, recipe.deep_supervision])
            rows.append({**row, "key": key})
            specs.setdefault(key, {
                "model": name, "patch": list(patch), "batch": args.batch, "steps": args.steps,
                "device": args.device, "threads": args.threads, "checkpointing": ckpt})
            if ckpt == recipe.activation_checkpointing:
                first.add(key)
    return rows, specs, first


def _measure_all(specs: dict[str, dict], first: set, args: argparse.Namespace) -> dict[str, dict]:
    """Every measurement in its own subprocess, within ``args.budget`` seconds in all: what the
    recipes train first, then MedNeXt's other checkpointing setting (each in registry order)."""
    order = sorted(specs, key=lambda k: k not in first)
    bar, start, done = Progress(len(order)), time.time(), {}
    for i, key in enumerate(order):
        spec = specs[key]
        label = f"{spec['model']} (checkpointing {spec['checkpointing']})"
        left = args.budget - (time.time() - start)
        if left <= 1:
            done[key] = {"status": f"skipped: the time budget of {args.budget:g} s was spent"}
            continue
        bar.show(i, label)
        m = _measure(spec, min(args.timeout, left))
        if m["status"].startswith("failed: over") and left < args.timeout:
            m = {"status": f"skipped: stopped when the time budget of {args.budget:g} s ran out"}
        done[key] = m
    bar.show(len(order), f"{time.time() - start:.0f} s of step measurements")
    return done


def bench(args: argparse.Namespace) -> list[dict]:
    from harness import registry

    names = args.models or registry.names()
    for name in names:
        registry.get(name)                       # unknown names fail before any work
    rows, specs, first = _plan(args, names)
    done = _measure_all(specs, first, args) if specs else {}
    mb = lambda b: round(b / 2**20, 1) if isinstance(b, (int, float)) else ""
    out = []
    for row in rows:
        if "key" not in row:
            out.append(row)
            continue
        m = done[row.pop("key")]
        out.append({**row, "step_seconds": round(m["seconds"], 3) if "seconds" in m else "",
                    "first_step_seconds": round(m["first_seconds"], 3) if "first_seconds" in m else "",
                    "step_peak_mb": mb(m.get("peak_bytes")),
                    "process_peak_mb": mb(m.get("process_peak_bytes")),
                    "memory_method": m.get("memory_method", ""), "threads": m.get("threads", ""),
                    "torch": m.get("torch", ""), "status": m["status"]})
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    if min(args.size, args.size_2d, args.batch, args.steps) < 1 or args.budget <= 0:
        raise SystemExit("--size, --size-2d, --batch, --steps and --budget must be positive")
    from harness.bench import write_table

    try:
        rows = bench(args)
    except ValueError as e:
        print(f"bench-models: {e}", file=sys.stderr)
        return 2
    write_table(rows, COLUMNS, args.out or default_out())
    # a row the budget did not reach is reported, not an error
    return 0 if all(r["status"] in ("ok", "not measured") or r["status"].startswith("skipped")
                    for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
