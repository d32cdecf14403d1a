"""CLI: ``mednext-bench run | submit | status | train | predict | sanity`` (thin over the harness).

``run`` and ``submit`` are one command with two defaults: both plan a study (Table 2 or the
ablations), restrict it (``--models``, ``--datasets``, ``--folds``) and hand it to a backend,
``local`` (one process per job, on this machine; the default of ``run``) or ``slurm`` (job
arrays with dependencies through submitit; the default of ``submit``). ``status`` prints every
job of a study as done, running, pending or failed with its job id, log and last error line (for
either backend). ``train`` runs one cell (and whatever it starts from). ``predict`` segments a
folder with the ensemble of a model's folds (:mod:`harness.predict`); ``sanity`` is the learning
benchmark on the KiTS19 phantom (:mod:`harness.bench.sanity`).
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
    from harness.studies.options import add_arguments as add_options

    def common(p, profile_default="quick"):
        p.add_argument("--profile", default=profile_default, choices=profile_names(),
                       help=f"budget and data (default {profile_default})")
        p.add_argument("--work", type=Path, default=Path("work"),
                       help="work folder: prepared data, runs, logs (default ./work)")
        p.add_argument("--data", type=Path, default=None,
                       help="folder of converted raw datasets (DatasetNNN_Name) for real-data "
                            "profiles; only read, never changed")
        add_options(p)

    def grid(p):
        p.add_argument("--study", required=True, choices=STUDIES)
        common(p)
        p.add_argument("--cluster", default=None,
                       help="SLURM: cluster profile, a name in clusters/ or a .toml path "
                            "(default $MEDNEXT_BENCH_CLUSTER or local)")
        p.add_argument("--models", type=_csv, default=None, help="only these models (a,b,...)")
        p.add_argument("--datasets", type=_csv, default=None,
                       help="only these datasets or tasks (btcv,phantom-kits19,...)")
        p.add_argument("--folds", type=_folds, default=None, help="only these folds (0,1,...)")

    for name, backend, text in (
            ("run", "local", "run a study (all its cells, then its reports)"),
            ("submit", "slurm", "submit a study to SLURM: one job per (dataset, model, fold)")):
        p = sub.add_parser(name, help=text)
        grid(p)
        p.add_argument("--backend", default=backend, choices=("local", "slurm"),
                       help=f"local: jobs on this machine; slurm: SLURM jobs (default {backend})")
        p.add_argument("--jobs", "-j", type=int, default=None,
                       help="local backend: jobs run side by side (default: the profile's setting)")
        p.add_argument("--results", type=Path, default=None,
                       help="where reports go (default ./results or $MEDNEXT_BENCH_RESULTS)")
        p.add_argument("--dry-run", action="store_true",
                       help="print what would run (SLURM: arrays, resources, dependencies)")
        p.add_argument("--wait", action="store_true",
                       help="SLURM backend: return when every job has ended")
        p.set_defaults(func=cmd_launch)

    p = sub.add_parser("status", help="every job of a study: done, running, pending or failed")
    grid(p)
    p.add_argument("--json", action="store_true", help="one JSON object per job instead of a table")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("train", help="train one cell (dataset, model, fold), then predict and score it")
    p.add_argument("--dataset", required=True, help="paper task or phantom (btcv, phantom-btcv, ...)")
    p.add_argument("--model", required=True, help="registry name (see `mednext-bench models`)")
    p.add_argument("--fold", type=int, required=True, choices=range(5))
    common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="segment a folder with the ensemble of a model's folds")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True, help="the dataset the model was trained on")
    p.add_argument("--input", required=True, type=Path, help="images named <case>_0000.nii.gz ...")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--profile", default=None,
                   help="profile of the trained runs (default: paper for real data, quick for phantoms)")
    p.add_argument("--work", type=Path, default=Path("work"))
    p.add_argument("--data", type=Path, default=None,
                   help="real data: the converted datasets the runs trained on (default: as "
                        "last planned in --work)")
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="folds to ensemble (default: all folds of the profile)")
    add_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("sanity", help="learning benchmark: MedNeXt-S and nnU-Net on the KiTS19 phantom")
    p.add_argument("--work", type=Path, default=Path("work"))
    p.add_argument("--results", type=Path, default=None,
                   help="where sanity.csv goes (default ./results or $MEDNEXT_BENCH_RESULTS)")
    p.set_defaults(func=cmd_sanity)


def plan_jobs(args, results: Path | None = None):
    """The study's jobs as the arguments restrict them (the one plan of run/submit/status)."""
    from harness.jobs.plan import plan_study, select_jobs
    from harness.studies.options import from_args

    jobs = plan_study(args.study, args.profile, args.work, args.data, results=results,
                      datasets=args.datasets, options=from_args(args))
    return select_jobs(jobs, args.models, args.datasets, args.folds)


def default_parallel(profile) -> int:
    """Side-by-side jobs: on a CPU with phantoms one single-threaded job per usable core (at
    most 4, for memory); with a GPU or real data one job at a time, using the whole machine."""
    import torch

    from harness.processes import usable_cpus
    if torch.cuda.is_available() or profile.data == "real":
        return 1
    return max(1, min(4, usable_cpus()))


def cmd_launch(args) -> int:
    """``run`` and ``submit``: plan, restrict, then run locally or submit to SLURM."""
    jobs = plan_jobs(args, args.results)
    if args.backend == "slurm":
        from harness.jobs.slurm import submit_jobs, wait_for
        from harness.jobs.tracking import cell_statuses

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

    from harness.jobs.local import run_jobs, summarize
    from harness.studies import load_profile

    parallel = args.jobs or default_parallel(load_profile(args.profile))
    print(f"{args.study} / {args.profile}: {len(jobs)} jobs, {parallel} at a time, "
          f"work {args.work.resolve()}", flush=True)
    if args.dry_run:
        from harness.jobs.plan import job_status
        for job in jobs:
            print(f"  {job_status(job):<8} {job.label}  [{job.key}]")
        return 0
    out = run_jobs(jobs, parallel=parallel)
    print(summarize(out, jobs))
    if jobs and jobs[-1].kind == "report":
        print(f"reports: {jobs[-1].payload['results']}")
    return 0 if out.ok else 1


def _client_env(cluster):
    from harness.cluster import load_cluster
    return load_cluster(cluster).client_env()


def _recorded_data(args) -> Path | None:
    """``--data`` of an earlier plan of this work folder, for a real-data ``status``."""
    from harness.errors import UserError
    from harness.studies import load_profile, load_study

    prof = load_profile(args.profile)
    if prof.data != "real" or args.data is not None:
        return args.data
    for task in load_study(args.study).datasets:
        path = args.work / "datasets" / f"{prof.dataset_name(task)}.current.json"
        try:
            return Path(json.loads(path.read_text())["path"]).parent
        except (OSError, ValueError, KeyError):
            continue
    raise UserError(f"profile {args.profile!r} uses real data and nothing was planned in "
                    f"{args.work} yet: pass --data")


def cmd_status(args) -> int:
    from harness.jobs.plan import Job
    from harness.jobs.tracking import cell_statuses, format_statuses, read_record

    args.data = _recorded_data(args)
    jobs = plan_jobs(args)
    if jobs and jobs[-1].kind == "report":
        # The report's folder is whatever the submission chose (--results): take it from there.
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


def _task(dataset: str) -> str:
    return dataset[len("phantom-"):] if dataset.startswith("phantom-") else dataset


def cmd_train(args) -> int:
    from harness.errors import UserError
    from harness.jobs.local import run_jobs, summarize
    from harness.jobs.plan import plan_cell
    from harness.studies import load_profile
    from harness.studies.options import from_args

    prof = load_profile(args.profile)
    task = _task(args.dataset)
    if args.dataset not in (task, prof.dataset_name(task)):
        raise UserError(f"dataset {args.dataset!r} does not fit profile {args.profile!r} "
                        f"(it uses {prof.dataset_name(task)!r})")
    jobs = plan_cell(task, args.model, args.fold, args.profile, args.work, args.data,
                     from_args(args))
    out = run_jobs(jobs, parallel=1)
    print(summarize(out, jobs))
    print(f"run folder: {Path(jobs[-1].payload['work']) / 'runs' / jobs[-1].payload['run_id']}")
    return 0 if out.ok else 1


def cmd_predict(args) -> int:
    from harness.predict import predict_folder
    from harness.studies.options import from_args

    profile = args.profile or ("quick" if args.dataset.startswith("phantom-") else "paper")
    written = predict_folder(args.model, args.dataset, args.input, args.output, profile,
                             args.work, folds=args.folds, data=args.data, options=from_args(args))
    print(f"{len(written)} segmentations written to {args.output}")
    return 0


def cmd_sanity(args) -> int:
    from harness.bench.sanity import run_sanity
    from harness.studies import results_root
    return run_sanity(args.work, args.results or results_root())
