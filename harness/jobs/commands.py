"""CLI: ``mednext-bench run | train | predict | sanity`` (thin over :mod:`harness.jobs`).

``run`` plans a whole study (Table 2 or the ablations) and hands it to a backend: ``local`` (one
process per job, on this machine) or ``slurm`` (``harness.jobs.slurm.submit_study``). ``train``
runs one cell (and whatever it starts from), ``predict`` segments a folder with the ensemble of a
model's folds, ``sanity`` is the learning benchmark on the KiTS19 phantom.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from harness.studies import STUDIES, profile_names

    def common(p, profile_default="quick"):
        p.add_argument("--profile", default=profile_default, choices=profile_names(),
                       help=f"budget and data (default {profile_default})")
        p.add_argument("--work", type=Path, default=Path("work"),
                       help="work folder: nnU-Net data, runs, logs (default ./work)")
        p.add_argument("--data", type=Path, default=None,
                       help="folder of converted raw datasets (DatasetNNN_Name) for real-data profiles")

    p = sub.add_parser("run", help="run a study (all its cells, then its reports)")
    p.add_argument("--study", required=True, choices=STUDIES)
    common(p)
    p.add_argument("--backend", default="local", choices=("local", "slurm"))
    p.add_argument("--cluster", default=None, help="SLURM backend: cluster settings name or file")
    p.add_argument("--jobs", "-j", type=int, default=None,
                   help="local backend: jobs run side by side (default: the profile's setting)")
    p.add_argument("--results", type=Path, default=None,
                   help="where reports go (default ./results or $MEDNEXT_BENCH_RESULTS)")
    p.set_defaults(func=cmd_run)

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
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="folds to ensemble (default: all folds of the profile)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("sanity", help="learning benchmark: MedNeXt-S and nnU-Net on the KiTS19 phantom")
    p.add_argument("--work", type=Path, default=Path("work"))
    p.add_argument("--results", type=Path, default=Path("results"))
    p.set_defaults(func=cmd_sanity)


def _task(dataset: str) -> str:
    return dataset[len("phantom-"):] if dataset.startswith("phantom-") else dataset


def cmd_run(args) -> int:
    from harness.jobs.local import run_jobs, summarize
    from harness.jobs.plan import plan_study
    from harness.studies import load_profile

    if args.backend == "slurm":
        from harness.jobs.slurm import submit_study
        return int(submit_study(args.study, args.profile, args.work, args.data, args.cluster,
                                results=args.results))
    jobs = plan_study(args.study, args.profile, args.work, args.data, results=args.results)
    parallel = args.jobs or default_parallel(load_profile(args.profile))
    print(f"{args.study} / {args.profile}: {len(jobs)} jobs, {parallel} at a time, "
          f"work {args.work.resolve()}", flush=True)
    out = run_jobs(jobs, parallel=parallel)
    print(summarize(out, jobs))
    report = jobs[-1].payload["results"]
    print(f"reports: {report}")
    return 0 if out.ok else 1


def default_parallel(profile) -> int:
    """Side-by-side jobs: on a CPU with phantoms one single-threaded job per core (at most 4,
    for memory); with a GPU or real data one job at a time, using the whole machine."""
    import os

    import torch
    if torch.cuda.is_available() or profile.data == "real":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def cmd_train(args) -> int:
    from harness.jobs.local import run_jobs, summarize
    from harness.jobs.plan import plan_cell
    from harness.studies import load_profile

    prof = load_profile(args.profile)
    task = _task(args.dataset)
    if args.dataset not in (task, prof.dataset_name(task)):
        raise SystemExit(f"dataset {args.dataset!r} does not fit profile {args.profile!r} "
                         f"(it uses {prof.dataset_name(task)!r})")
    jobs = plan_cell(task, args.model, args.fold, args.profile, args.work, args.data)
    out = run_jobs(jobs, parallel=1)
    print(summarize(out, jobs))
    print(f"run folder: {Path(jobs[-1].payload['work']) / 'runs' / jobs[-1].payload['run_id']}")
    return 0 if out.ok else 1


def cmd_predict(args) -> int:
    from harness.jobs.predict import predict_folder

    profile = args.profile or ("quick" if args.dataset.startswith("phantom-") else "paper")
    written = predict_folder(args.model, args.dataset, args.input, args.output, profile,
                             args.work, folds=args.folds)
    print(f"{len(written)} segmentations written to {args.output}")
    return 0


def cmd_sanity(args) -> int:
    from harness.jobs.sanity import run_sanity
    return run_sanity(args.work, args.results)

