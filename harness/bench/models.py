"""``make bench-models``: size, compute and training-step cost of every registered model.

Writes ``results/bench/models.csv`` (atomically; ``results`` = ``$MEDNEXT_BENCH_RESULTS`` or
``./results``) and prints it. Per model: parameters and GMACs
at the paper profile's patch (128^3; TransUNet a 512^2 slice; meta device, network as it predicts),
then one training step (forward + backward, in the configuration its recipe trains: deep
supervision as the recipe says) at a CPU-sized input (default 64^3 / 128^2, batch 1): seconds and
peak memory, for MedNeXt with and without activation checkpointing. Every step measurement runs in
its own subprocess so that its peak memory is its own (see ``harness.compute`` for how memory is
read). Networks that are identical (e.g. ``mednext-b-k3-2x`` and ``mednext-b-k3``) are measured once.

    python -m harness.bench.models                       # everything (long on a 2-core CPU)
    python -m harness.bench.models --models nnunet mednext-s-k3 --size 32 --out /tmp/m.csv
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = ["model", "family", "dim", "params", "gmacs", "gmacs_patch", "step_input",
           "deep_supervision", "activation_checkpointing", "step_seconds", "first_step_seconds",
           "step_peak_mb", "process_peak_mb", "memory_method", "device", "threads", "torch", "status"]


def default_out() -> Path:
    """``results/bench/models.csv`` under ``$MEDNEXT_BENCH_RESULTS`` or ``./results``."""
    return Path(os.environ.get("MEDNEXT_BENCH_RESULTS", "results")) / "bench" / "models.csv"


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
    p.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
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


def bench(args: argparse.Namespace) -> list[dict]:
    from harness import registry

    names = args.models or registry.names()
    for name in names:
        registry.get(name)                       # unknown names fail before any work
    rows, done = [], {}
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
            if key not in done:
                t0 = time.time()
                print(f"measuring {name} (checkpointing {ckpt}) at {row['step_input']} ...",
                      file=sys.stderr, flush=True)
                done[key] = _measure({"model": name, "patch": list(patch), "batch": args.batch,
                                      "steps": args.steps, "device": args.device,
                                      "threads": args.threads, "checkpointing": ckpt},
                                     args.timeout)
                print(f"  {done[key]['status']} ({time.time() - t0:.0f} s)", file=sys.stderr)
            m = done[key]
            mb = lambda b: round(b / 2**20, 1) if isinstance(b, (int, float)) else ""
            rows.append({**row, "step_seconds": round(m["seconds"], 3) if "seconds" in m else "",
                         "first_step_seconds": round(m["first_seconds"], 3) if "first_seconds" in m else "",
                         "step_peak_mb": mb(m.get("peak_bytes")),
                         "process_peak_mb": mb(m.get("process_peak_bytes")),
                         "memory_method": m.get("memory_method", ""), "threads": m.get("threads", ""),
                         "torch": m.get("torch", ""), "status": m["status"]})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    if args.size < 1 or args.size_2d < 1 or args.batch < 1 or args.steps < 1:
        raise SystemExit("--size, --size-2d, --batch and --steps must be positive")
    from harness.bench import write_table

    try:
        rows = bench(args)
    except ValueError as e:
        print(f"bench-models: {e}", file=sys.stderr)
        return 2
    write_table(rows, COLUMNS, args.out or default_out())
    return 0 if all(r["status"] in ("ok", "not measured") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
