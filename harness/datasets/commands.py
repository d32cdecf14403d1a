"""``mednext-bench data ...``: convert a public download, make a phantom, check a raw dataset, write folds.

Thin over :mod:`harness.datasets`; images are only read (and SimpleITK imported) inside the
command functions. Errors are not caught here: a bad dataset or argument raises a
:class:`harness.errors.UserError` (``DatasetError`` is one), which ``mednext-bench`` prints as one
``error:`` line with exit status 2.
"""
from __future__ import annotations

import json
from pathlib import Path

TASK_CHOICES = ("btcv", "amos22", "kits19", "brats21")


def _raw_root(args) -> Path:
    return Path(args.out) if args.out else Path(args.work) / "nnUNet_raw"


def cmd_convert(args) -> int:
    from harness.datasets import convert
    print(convert(args.task, args.source, _raw_root(args), args.include_validation))
    return 0


def cmd_phantom(args) -> int:
    from harness.datasets import make_phantom
    print(make_phantom(args.task, _raw_root(args), args.cases, args.size, args.seed,
                       source_dir=args.keep_source, progress=True, quiet=False))
    return 0


def cmd_check(args) -> int:
    from harness.datasets import validate_raw
    summary = validate_raw(args.folder, progress=True)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(_format(summary))
    return 0


def _format(summary: dict) -> str:
    lines = [f"{summary['folder']}: {summary['cases']} cases, all checks passed",
             f"  shape (z, y, x): min {summary['shape_min']}  max {summary['shape_max']}",
             f"  spacing mm (z, y, x): min {summary['spacing_min']}  max {summary['spacing_max']}",
             "  voxels per label (cases containing it):"]
    for v, c in summary["voxels_per_label"].items():
        lines.append(f"    {v:>3} {summary['label_names'].get(v, ''):<28} {c:>12}  "
                     f"({summary['cases_per_label'].get(v, 0)} cases)")
    return "\n".join(lines)


def cmd_splits(args) -> int:
    from harness.datasets import make_splits, raw_case_ids, write_splits
    ids = raw_case_ids(args.folder)
    splits = make_splits(ids, args.folds, args.seed)
    out = Path(args.out) if args.out else Path(args.folder) / "splits_final.json"
    write_splits(out, splits)
    for k, fold in enumerate(splits):
        print(f"fold {k}: {len(fold['train'])} train, {len(fold['val'])} val: {', '.join(fold['val'])}")
    print(out)
    return 0


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="convert datasets, make phantoms, check raw data, write folds",
                                 description="Datasets in nnU-Net v2 raw format: the four paper tasks "
                                             "and their synthetic phantoms.")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    def out_options(p):
        p.add_argument("--out", help="nnU-Net raw root (default: WORK/nnUNet_raw)")
        p.add_argument("--work", default="work", help="work folder (default: ./work)")

    p = sub.add_parser("convert", help="public download -> nnU-Net raw dataset (validated first)")
    p.add_argument("task", choices=TASK_CHOICES)
    p.add_argument("source", help="the downloaded dataset folder")
    p.add_argument("--include-validation", action="store_true",
                   help="amos22: also convert imagesVa/labelsVa")
    out_options(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("phantom", help="write a deterministic synthetic dataset shaped like a task")
    p.add_argument("task", choices=TASK_CHOICES)
    p.add_argument("--cases", type=int, default=None, help="number of cases (default 12)")
    p.add_argument("--size", type=int, default=None, help="field of view in mm, ~voxels per axis at 1 mm (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-source", help="also keep the public-layout files in this folder")
    out_options(p)
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("check", help="validate an nnU-Net raw dataset folder; list every problem")
    p.add_argument("folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("splits", help="write the seeded k-fold split (nnU-Net splits_final.json)")
    p.add_argument("folder", help="an nnU-Net raw dataset folder")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--out", help="output file (default: FOLDER/splits_final.json)")
    p.set_defaults(func=cmd_splits)
