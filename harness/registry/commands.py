"""``mednext-bench models``: the registry as a table (or JSON), counted on the meta device.

For each model: family, 2D/3D, parameters and GMACs at 1 input channel and 14 classes at the
paper profile's patch (128^3; TransUNet one 512^2 slice; network as it predicts, deep supervision
off), optimizer, learning rate and deep supervision of the chosen recipe. Nothing is allocated or
computed, so it runs in seconds on a CPU.
"""
from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list the registered models: parameters, GMACs, recipe",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print JSON (one object per model)")
    p.add_argument("--recipe", default="paper", choices=("paper", "official-code"),
                   help="which recipe's optimizer and learning rate to show (default: paper)")
    p.add_argument("--dataset", default=None,
                   help="apply this dataset's recipe overrides (e.g. kits19: MedNeXt k5 lr 1e-4)")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=14)
    p.add_argument("models", nargs="*", help="model names (default: all)")
    p.set_defaults(func=run)


def rows(models: list[str], recipe: str, dataset: str | None, in_channels: int,
         num_classes: int) -> list[dict]:
    from harness import registry

    out = []
    for name in models:
        entry = registry.get(name)
        r = entry.recipe(recipe, dataset)
        summary = registry.compute_summary(name, in_channels, num_classes)
        out.append({
            "name": name, "family": entry.family, "dim": entry.dim.upper(),
            "params": summary["params"], "gmacs": round(summary["gmacs"], 1),
            "patch": summary["patch"], "optimizer": r.optimizer, "lr": r.lr,
            "deep_supervision": r.deep_supervision,
            "activation_checkpointing": r.activation_checkpointing,
            "init": f"{entry.init['mode']} from {entry.init['from']}" if entry.init else "",
            "plans": dict(entry.plans) if entry.plans else None,
        })
    return out


def format_table(table: list[dict]) -> str:
    header = ["model", "family", "dim", "params", "GMACs", "patch", "optimizer", "lr", "DS",
              "init / plans"]
    lines = [[r["name"], r["family"], r["dim"], f"{r['params'] / 1e6:.2f}M", f"{r['gmacs']:.1f}",
              "x".join(map(str, r["patch"])), r["optimizer"], f"{r['lr']:g}",
              "yes" if r["deep_supervision"] else "no",
              r["init"] or (f"own plans: {r['plans']['planner']}" if r.get("plans") else "")]
             for r in table]
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(header)]
    numeric = {3, 4, 7}
    fmt = lambda row: "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines])


def run(args) -> int:
    from harness import registry

    models = args.models or registry.names()
    # an unknown name or a bad count raises UserError: mednext-bench prints it and exits 2
    table = rows(models, args.recipe, args.dataset, args.in_channels, args.num_classes)
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print(format_table(table))
        print(f"\nparameters and GMACs at {args.in_channels} input channel(s), {args.num_classes} "
              f"classes, batch 1, network as it predicts (deep supervision off); recipe "
              f"{args.recipe!r}{f' on {args.dataset}' if args.dataset else ''}")
        if any(r["plans"] for r in table):
            print("own plans: trained at the spacing, patch and batch that planner chooses for "
                  "each dataset (outside the identical protocol); counted here at 128^3, 1 mm")
    return 0
