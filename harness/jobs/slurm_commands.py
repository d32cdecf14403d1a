"""CLI: ``mednext-bench submit | status`` (thin over :mod:`harness.jobs.slurm` and ``tracking``).

``submit`` sends a study's jobs to SLURM (or, with ``--backend local``, runs them here), skipping
what is done, pending or running; ``status`` prints every job of a study as done, running,
pending or failed with its SLURM job id, log and last error line (for either backend).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def _folds(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"folds must be integers, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    from harness.studies import STUDIES, profile_names

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--study", required=True, choices=STUDIES)
        p.add_argument("--profile", default="quick", choices=profile_names(),
                       help="budget and data (default quick)")
        p.add_argument("--work", type=Path, default=Path("work"), help="work folder (default ./work)")
        p.add_argument("--data", type=Path, default=None,
                       help="folder of converted raw datasets, for real-data profiles")
        p.add_argument("--cluster", default=None,
                       help="cluster profile: a name in clusters/ or a .toml path "
                            "(default $MEDNEXT_BENCH_CLUSTER or local)")
        p.add_argument("--models", type=_csv, default=None, help="only these models (a,b,...)")
        p.add_argument("--datasets", type=_csv, default=None,
                       help="only these datasets or tasks (btcv,phantom-kits19,...)")
        p.add_argument("--folds", type=_folds, default=None, help="only these folds (0,1,...)")

    p = sub.add_parser("submit", help="submit a study to SLURM: one job per (dataset, model, fold)")
    common(p)
    p.add_argument("--backend", default="slurm", choices=("slurm", "local"),
                   help="slurm (default) or local: run the same jobs on this machine")
    p.add_argument("--results", type=Path, default=None,
                   help="where reports go (default ./results or $MEDNEXT_BENCH_RESULTS)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the arrays, resources and dependencies without submitting")
    p.add_argument("--wait", action="store_true", help="return when every job has ended")
    p.add_argument("--jobs", "-j", type=int, default=1, help="local backend: jobs side by side")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="every job of a study: done, running, pending or failed")
    common(p)
    p.add_argument("--json", action="store_true", help="one JSON object per job instead of a table")
    p.set_defaults(func=cmd_status)


def _jobs(args, results: Path | None = None):
    from harness.jobs.plan import plan_study
    from harness.jobs.slurm import select_jobs

    jobs = plan_study(args.study, args.profile, args.work, args.data, results=results)
    return select_jobs(jobs, args.models, args.datasets, args.folds)


def cmd_submit(args) -> int:
    if args.backend == "local":
        from harness.jobs.local import run_jobs, summarize
        jobs = _jobs(args, args.results)
        out = run_jobs(jobs, parallel=args.jobs)
        print(summarize(out, jobs))
        return 0 if out.ok else 1
    from harness.jobs.slurm import submit_jobs, wait_for
    from harness.jobs.tracking import cell_statuses

    jobs = _jobs(args, args.results)
    sub = submit_jobs(jobs, args.cluster, dry_run=args.dry_run)
    print(sub.summary(), flush=True)
    if args.wait and not args.dry_run:
        wait_for(sub, args.cluster)
        rows = cell_statuses(jobs, _client_env(args.cluster))
        failed = [r for r in rows if r["status"] != "done"]
        for r in failed:
            print(f"  {r['status']:<8} {r['label']}  {r['job_id']}  {r['error']}")
        return 1 if failed else 0
    return 0


def _client_env(cluster):
    from harness.cluster import load_cluster
    return load_cluster(cluster).client_env()


def _recorded_data(args) -> Path | None:
    """``--data`` of an earlier submission (its prepare jobs carry it), for real-data status."""
    from harness.studies import load_profile, load_study

    prof = load_profile(args.profile)
    if prof.data != "real" or args.data is not None:
        return args.data
    from harness.jobs.tracking import read_record
    for task in load_study(args.study).datasets:
        rec = read_record(args.work, f"prepare:{prof.dataset_name(task)}")
        if rec and rec.get("payload", {}).get("data"):
            return Path(rec["payload"]["data"])
    raise SystemExit(f"profile {args.profile!r} uses real data and nothing was submitted to "
                     f"{args.work} yet: pass --data")


def cmd_status(args) -> int:
    from harness.jobs.tracking import cell_statuses, format_statuses

    args.data = _recorded_data(args)
    jobs = _jobs(args)
    if jobs and jobs[-1].kind == "report":
        # The report's folder is whatever the submission chose (--results): take it from there.
        from harness.jobs.plan import Job
        from harness.jobs.tracking import read_record
        rec = read_record(jobs[-1].work, jobs[-1].key)
        if rec and rec.get("payload", {}).get("results"):
            jobs[-1] = Job(key=jobs[-1].key, kind="report", deps=jobs[-1].deps, label=jobs[-1].label,
                           payload={**jobs[-1].payload, "results": rec["payload"]["results"]})
    rows = cell_statuses(jobs, _client_env(args.cluster))
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_statuses(rows))
    return 0
