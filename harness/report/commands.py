"""``mednext-bench report``: rebuild a study's tables, comparison and figures from stored tables."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from harness.studies import STUDIES
    from harness.studies.options import add_arguments as add_options

    p = subparsers.add_parser(
        "report", help="rebuild the reports of a study from the stored per-case tables",
        description="Collect every declared cell of STUDY under PROFILE from WORK/runs, aggregate "
                    "as the paper (pooled CV, per-class mean, mean over classes), add bootstrap "
                    "intervals and paired tests, and write tables (md/csv/tex; surface Dice at "
                    "1 mm and at 1 voxel, the paper's convention), the comparison with the paper, "
                    "each model's recipe as run and figures into OUT. Missing and failed cells "
                    "are listed.")
    p.add_argument("--study", required=True, choices=STUDIES)
    p.add_argument("--profile", required=True, help="paper | quick | smoke")
    p.add_argument("--work", default="work", help="work folder (default ./work)")
    p.add_argument("--out", default=None,
                   help="output folder (default $MEDNEXT_BENCH_RESULTS/<study>-<profile>[-options], "
                        "$MEDNEXT_BENCH_RESULTS defaulting to ./results)")
    # Gone: every table carries both surface Dice conventions. Kept hidden to say so clearly.
    p.add_argument("--sdc", default=None, help=argparse.SUPPRESS)
    add_options(p)
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (>= 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from harness.errors import UserError
    from harness.report.build import make_report
    from harness.studies.options import from_args

    if args.sdc is not None:
        raise UserError("--sdc is no longer an option: every report shows surface Dice in both "
                        "conventions, SDC (1 mm) and SDC (1 voxel), and compares the paper's SDC "
                        "with SDC (1 voxel), the convention of its numbers")
    from harness.report.stats import MIN_BOOT
    if args.boot < MIN_BOOT:
        raise UserError(f"--boot {args.boot}: a 95% bootstrap interval needs at least {MIN_BOOT} "
                        "resamples")
    res = make_report(args.study, args.profile, args.work, args.out,
                      n_boot=args.boot, seed=args.seed, with_figures=not args.no_figures,
                      options=from_args(args))
    cells = res["collection"].cells
    bad = cells[cells["state"] != "ok"]
    print(f"report written to {res['out']} in {res['seconds']} s: {len(cells)} cells, "
          f"{len(cells) - len(bad)} ok, {len(bad)} missing or failed")
    for r in bad.itertuples(index=False):
        print(f"  {r.state:10s} {r.dataset} / {r.model} / fold {r.fold} ({r.run_id}) {r.detail}")
    return 0
