"""Segment a folder of images with the ensemble of a model's trained folds.

The paper reports test-set DSC of "a 5-fold ensemble of MedNeXt-L (kernel 5x5x5) without
postprocessing" (Sect. 3.1): the final weights of each fold's run, averaged on the logits by
nnU-Net's predictor, the same sliding window as validation. The runs are found by their ids
(data fingerprint, model, fold, profile settings, recipe and options), so only finished runs of
exactly that protocol are used; a missing fold is an error naming the run, not a smaller ensemble.
"""
from __future__ import annotations

from pathlib import Path

from harness.errors import UserError
from harness.studies import load_profile
from harness.studies.options import RunOptions
from harness.studies.runs import RunSpec, recorded_sources, resolve_sources, run_spec


def ensemble_runs(model: str, dataset: str, profile: str, work: Path,
                  folds: list[int] | None = None, data: Path | None = None,
                  options: RunOptions | None = None) -> list[tuple[RunSpec, Path]]:
    """``[(spec, checkpoint_final path)]`` for each fold; :class:`UserError` if one is missing.

    Real data: the runs of the data in ``data`` (fingerprinted), or of the data last planned in
    ``work`` when ``data`` is None.
    """
    prof = load_profile(profile)
    task = dataset[len("phantom-"):] if dataset.startswith("phantom-") else dataset
    if prof.dataset_name(task) != dataset:
        raise UserError(f"dataset {dataset!r} is not what profile {profile!r} trains on "
                        f"({prof.dataset_name(task)!r})")
    source = (resolve_sources([task], prof, work, data)[task] if data is not None
              else recorded_sources([task], prof, work)[task])
    if source is None:
        raise UserError(f"no {dataset} data was ever planned in {work}: pass --data")
    folds = list(prof.folds) if folds is None else [int(f) for f in folds]
    if not folds:
        raise ValueError("no folds to ensemble")
    runs, missing = [], []
    for fold in folds:
        spec = run_spec(task, model, fold, prof, source, options)
        ckpt = Path(work).resolve() / "runs" / spec.run_id / "checkpoint_final.pth"
        (runs if ckpt.is_file() else missing).append((spec, ckpt))
    if missing:
        raise UserError(
            f"{model} on {dataset} ({profile}): fold(s) {[s.fold for s, _ in missing]} are not "
            f"trained (no {', '.join(str(c) for _, c in missing)}); train them with "
            f"`mednext-bench train --dataset {dataset} --model {model} --fold F --profile {profile}`")
    return runs


def predict_folder(model: str, dataset: str, input_dir: Path, output_dir: Path, profile: str,
                   work: Path, folds: list[int] | None = None, progress: bool = True,
                   data: Path | None = None, options: RunOptions | None = None) -> list[Path]:
    """Predict every case of ``input_dir`` into ``output_dir/<case>.nii.gz``."""
    from harness.datasets import task_spec
    from harness.nnunet.env import configure
    from harness.nnunet.inference import build_predictor, case_files, load_weights, predict_cases
    from harness.nnunet.training import load_plans

    from harness.studies.runs import data_root

    runs = ensemble_runs(model, dataset, profile, work, folds, data, options)
    first = runs[0][0]
    configure(data_root(work, first.dataset, first.data))
    plans, cfg, dataset_json = load_plans(first.to_dict())
    predictor = build_predictor(first.to_dict(), plans, cfg, dataset_json,
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
