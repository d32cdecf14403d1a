"""Segment a folder of images with the ensemble of a model's trained folds.

The paper reports test-set DSC of "a 5-fold ensemble of MedNeXt-L (kernel 5x5x5) without
postprocessing" (Sect. 3.1): the final weights of each fold's run, averaged on the logits by
nnU-Net's predictor, the same sliding window as validation. The runs are found by their ids
(dataset, model, fold, profile), so only finished runs of exactly that protocol are used; a
missing fold is an error naming the run, not a smaller ensemble.
"""
from __future__ import annotations

from pathlib import Path

from harness.provenance import run_id
from harness.studies import load_profile


def ensemble_runs(model: str, dataset: str, profile: str, work: Path,
                  folds: list[int] | None = None) -> list[tuple[dict, Path]]:
    """``[(spec, checkpoint_final path)]`` for each fold; ``FileNotFoundError`` if one is missing."""
    from harness.jobs.runs import run_spec

    prof = load_profile(profile)
    task = dataset[len("phantom-"):] if dataset.startswith("phantom-") else dataset
    if prof.dataset_name(task) != dataset:
        raise ValueError(f"dataset {dataset!r} is not what profile {profile!r} trains on "
                         f"({prof.dataset_name(task)!r})")
    folds = list(prof.folds) if folds is None else [int(f) for f in folds]
    if not folds:
        raise ValueError("no folds to ensemble")
    runs, missing = [], []
    for fold in folds:
        spec = run_spec(task, model, fold, prof)
        ckpt = Path(work).resolve() / "runs" / run_id(spec) / "checkpoint_final.pth"
        (runs if ckpt.is_file() else missing).append((spec, ckpt))
    if missing:
        raise FileNotFoundError(
            f"{model} on {dataset} ({profile}): fold(s) {[s['fold'] for s, _ in missing]} are not "
            f"trained (no {', '.join(str(c) for _, c in missing)}); train them with "
            f"`mednext-bench train --dataset {dataset} --model {model} --fold F --profile {profile}`")
    return runs


def predict_folder(model: str, dataset: str, input_dir: Path, output_dir: Path, profile: str,
                   work: Path, folds: list[int] | None = None, progress: bool = True) -> list[Path]:
    """Predict every case of ``input_dir`` into ``output_dir/<case>.nii.gz``."""
    from harness.datasets import task_spec
    from harness.nnunet.env import configure
    from harness.nnunet.inference import build_predictor, case_files, load_weights, predict_cases
    from harness.nnunet.training import load_plans

    runs = ensemble_runs(model, dataset, profile, work, folds)
    configure(work)
    plans, cfg, dataset_json = load_plans(runs[0][0])
    predictor = build_predictor(runs[0][0], plans, cfg, dataset_json,
                                [load_weights(ckpt) for _, ckpt in runs])
    files = case_files(Path(input_dir), dataset_json["file_ending"],
                       task_spec(dataset).num_channels)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(files), desc=f"{model} x{len(runs)} folds", unit="case")

    def tick(phase, done, total):
        if bar is not None:
            bar.n = done
            bar.refresh()

    try:
        return predict_cases(predictor, files, Path(output_dir), tick)
    finally:
        if bar is not None:
            bar.close()
