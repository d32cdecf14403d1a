"""``make bench-fastpath``: MedNeXt's channels-last path (``mednext.layout``) against the official
layer order and against MONAI's MedNeXt, side by side in one process.

Per model (default MedNeXt-S k3 and MedNeXt-B k5; input 1x1x64^3, 14 classes, deep supervision on
and activation checkpointing as the recipe trains) three implementations are timed:

- ``monai``: ``monai.networks.nets.mednext.create_mednext``, an independent implementation of the
  same architecture. Where its weights convert (MedNeXt-S: ``mednext.load_checkpoint``) all three
  share them and their outputs are compared. MONAI's MedNeXt-B gives its down blocks the
  expansion ratio of the stage they leave, not of the stage they enter (specs/mednext.md e): its
  weights do not convert and it does a little less work than the official B, so a speed-up over
  it understates the one over the official code.
- ``channels_first``: this project's MedNeXt in the official layer order and memory layout; its
  outputs are bit-exact with the official code's, its speed equal to it (README).
- ``channels_last``: the same network and weights with ``layout="channels_last"``.

A ``train`` step is forward, a scalar loss over all outputs, backward and ``zero_grad``; an
``infer`` step a forward under ``torch.no_grad``. After one warm-up step each, every repeat times
the implementations one after the other (interleaved), so that load from other processes falls on
all of them alike; the figures are medians over the repeats, with the process's CPU seconds beside
the wall seconds (less sensitive to other processes) and the load average before and after.
``speedup_*`` = median seconds of the baseline / median seconds of the row; the ``geomean`` rows
hold the geometric mean over the models. Outputs are compared on one input in training mode:
``max_abs_diff`` against ``channels_first``, ``output_scale`` the largest output magnitude.

    python -m harness.bench.fastpath                      # -> results/bench/fastpath.csv
    python -m harness.bench.fastpath --models mednext-s-k3 --size 32 --repeats 3 --modes train
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from harness.bench import Progress, write_table

MODELS = ("mednext-s-k3", "mednext-b-k5")
IMPLEMENTATIONS = ("monai", "channels_first", "channels_last")
MODES = ("train", "infer")
COLUMNS = ["model", "implementation", "mode", "input", "threads", "repeats", "median_s", "min_s",
           "max_s", "cpu_median_s", "speedup_vs_monai", "speedup_vs_channels_first",
           "max_abs_diff", "output_scale", "load_before", "load_after", "torch", "note"]


def default_out() -> Path:
    from harness.studies import results_root
    return results_root() / "bench" / "fastpath.csv"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.bench.fastpath", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), help="MedNeXt registry names")
    p.add_argument("--size", type=int, default=64, help="input edge (default 64)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per implementation")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--out", type=Path, default=None,
                   help="CSV (default results/bench/fastpath.csv under $MEDNEXT_BENCH_RESULTS)")
    return p.parse_args(argv)


def build(name: str, patch: tuple[int, ...]) -> tuple[dict[str, nn.Module], str]:
    """The three implementations of registry model ``name`` (same weights where they convert)
    and a note on what differs."""
    from monai.networks.nets.mednext import create_mednext as monai_create

    from harness import registry
    from mednext import load_checkpoint

    entry = registry.get(name)
    if entry.family != "mednext":
        raise ValueError(f"{name} is not a MedNeXt entry")
    extra = sorted(set(entry.kwargs) - {"size", "kernel_size", "dim"})
    if extra:
        raise ValueError(f"{name} changes {extra}: MONAI has no counterpart to measure against")
    torch.manual_seed(0)
    monai = monai_create(entry.kwargs["size"], spatial_dims=3, in_channels=1, out_channels=14,
                         kernel_size=entry.kwargs["kernel_size"], deep_supervision=True)
    ours = registry.build_model(name, 1, 14, patch, deep_supervision=True)
    note = "weights shared with monai"
    try:
        load_checkpoint(ours, monai.state_dict())
    except ValueError as e:
        note = f"monai weights do not convert ({str(e).splitlines()[0][:120]}); its own weights"
    fast = registry.build_model(name, 1, 14, patch, deep_supervision=True)
    fast.load_state_dict(ours.state_dict())
    ours.layout, fast.layout = "channels_first", "channels_last"
    return {"monai": monai.train(), "channels_first": ours.train(),
            "channels_last": fast.train()}, note


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    out = model(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def step(model: nn.Module, x: torch.Tensor, mode: str) -> tuple[float, float]:
    """Wall and CPU seconds of one step."""
    wall, cpu = time.perf_counter(), time.process_time()
    if mode == "train":
        sum(o.float().mean() for o in _outputs(model, x)).backward()
        model.zero_grad(set_to_none=True)
    else:
        with torch.no_grad():
            _outputs(model, x)
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(models: dict[str, nn.Module], x: torch.Tensor, shared: bool) -> dict[str, tuple]:
    """(max |output - channels_first output|, output scale) per implementation."""
    with torch.no_grad():
        outs = {k: _outputs(m, x) for k, m in models.items()}
    ref = outs["channels_first"]
    scale = max(o.abs().max().item() for o in ref)
    found = {}
    for impl, out in outs.items():
        if impl == "monai" and not shared:
            found[impl] = ("", "")
            continue
        found[impl] = (max((a - b).abs().max().item() for a, b in zip(ref, out)), scale)
    return found


def bench_model(name: str, args: argparse.Namespace) -> list[dict]:
    patch = (args.size,) * 3
    models, note = build(name, patch)
    x = torch.randn((args.batch, 1) + patch, generator=torch.Generator().manual_seed(0))
    diffs = compare(models, x, shared=note.startswith("weights shared"))
    rows = []
    for mode in args.modes:
        load_before = os.getloadavg()[0]
        for impl, model in models.items():       # warm-up: one-off kernel and allocator set-up
            step(model, x, mode)
        times = {impl: [] for impl in models}
        bar = Progress(args.repeats * len(models))
        for r in range(args.repeats):
            for i, (impl, model) in enumerate(models.items()):
                bar.show(r * len(models) + i, f"{name} {mode} {impl}")
                times[impl].append(step(model, x, mode))
        bar.show(args.repeats * len(models), f"{name} {mode}")
        load_after = os.getloadavg()[0]
        medians = {impl: statistics.median(w for w, _ in t) for impl, t in times.items()}
        for impl, t in times.items():
            wall = [w for w, _ in t]
            rows.append({
                "model": name, "implementation": impl, "mode": mode,
                "input": "x".join(map(str, x.shape)), "threads": torch.get_num_threads(),
                "repeats": args.repeats, "median_s": round(medians[impl], 3),
                "min_s": round(min(wall), 3), "max_s": round(max(wall), 3),
                "cpu_median_s": round(statistics.median(c for _, c in t), 3),
                "speedup_vs_monai": round(medians["monai"] / medians[impl], 3),
                "speedup_vs_channels_first": round(medians["channels_first"] / medians[impl], 3),
                "max_abs_diff": _fmt(diffs[impl][0]), "output_scale": _fmt(diffs[impl][1]),
                "load_before": round(load_before, 2), "load_after": round(load_after, 2),
                "torch": torch.__version__, "note": note if impl == "monai" else ""})
    return rows


def _fmt(v) -> str:
    return v if v == "" else f"{v:.3g}"


def geomean_rows(rows: list[dict]) -> list[dict]:
    """Geometric mean over the models of each implementation's speed-ups, per mode."""
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        for impl in IMPLEMENTATIONS:
            sel = [r for r in rows if r["mode"] == mode and r["implementation"] == impl]
            if not sel:
                continue
            g = {c: round(math.exp(statistics.fmean(math.log(r[c]) for r in sel)), 3)
                 for c in ("speedup_vs_monai", "speedup_vs_channels_first")}
            out.append({"model": "geomean", "implementation": impl, "mode": mode, **g,
                        "note": "geometric mean over " + " ".join(r["model"] for r in sel)})
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if min(args.size, args.batch, args.threads, args.repeats) < 1 or args.size % 16:
        raise SystemExit("--batch, --threads and --repeats must be positive, --size a multiple "
                         "of 16")
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        try:
            rows += bench_model(name, args)
        except ValueError as e:
            print(f"bench-fastpath: {e}", file=sys.stderr)
            return 2
    rows += geomean_rows(rows)
    write_table(rows, COLUMNS, args.out or default_out())
    for r in rows:
        if r["implementation"] == "channels_last":
            print(f"{r['model']:14s} {r['mode']:5s} channels_last: x{r['speedup_vs_monai']} vs "
                  f"monai, x{r['speedup_vs_channels_first']} vs channels_first"
                  + (f" ({r['median_s']} s/step, max |diff| {r['max_abs_diff']} at output "
                     f"scale {r['output_scale']})" if r["model"] != "geomean" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
