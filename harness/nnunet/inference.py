"""Prediction with nnU-Net v2's sliding-window predictor, written in the original geometry.

``nnUNetPredictor.manual_initialization`` with the network built by the bench trainer class (no
lookup of a trainer by name: that imports timm, which does not load beside a CPU torch). 50 %
tile overlap, Gaussian importance weighting, mirroring on all axes unless the profile turns it
off: nnU-Net's defaults and the paper's inference (Sect. 3.1). Several weight sets (the folds of a
model) are averaged on the logits, nnU-Net's ensembling. A 2D model predicts each slice of the
1 mm volume (nnU-Net's 2D sliding window over a 3D image); the stacked volume is resampled back
to the original spacing like a 3D prediction.

The per-case loop is nnU-Net's ``predict_from_files_sequential`` (preprocess, logits, resample
and un-crop, write) written out so that each file is written atomically and progress can be
reported; no worker processes are started.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

import torch

from harness.io import atomic_path
from harness.nnunet.checkpoints import network_weights
from harness.nnunet.env import device
from harness.nnunet.trainer import trainer_class

MIRROR_AXES = {"3d": (0, 1, 2), "2d": (0, 1)}


def build_predictor(spec: dict, plans: dict, configuration: str, dataset_json: dict,
                    state_dicts: Sequence[dict]):
    """An initialised ``nnUNetPredictor`` for the model of ``spec`` and the given weights."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from harness import registry

    if not state_dicts:
        raise ValueError("build_predictor needs at least one set of weights")
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    ds = bool(spec["recipe"]["deep_supervision"])
    # Built as trained (heads included, so the state dict loads strictly), then DS switched off.
    net = trainer_class(spec, Path(".")).build_network_architecture(pm, cm, n_in, n_out, ds)
    if ds:
        registry.set_deep_supervision(net, False)
    dev = device()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True,
                                use_mirroring=bool(spec["profile"]["mirroring"]),
                                perform_everything_on_device=dev.type == "cuda", device=dev,
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(net, pm, cm, list(state_dicts), dataset_json, "BenchTrainer",
                                    MIRROR_AXES[spec["dim"]])
    if spec["settings"]["compile"]:      # the run's setting (nnU-Net's env switch is kept off)
        predictor.network = torch.compile(predictor.network)
    return predictor


def load_weights(checkpoint: Path) -> dict:
    """The network weights of a bench checkpoint, read weights-only
    (:func:`harness.nnunet.checkpoints.network_weights`)."""
    return network_weights(checkpoint)


def case_files(folder: Path, file_ending: str, n_channels: int,
               cases: Sequence[str] | None = None) -> dict[str, list[str]]:
    """``{case: [<case>_0000<ending>, ...]}`` of an nnU-Net images folder, channels checked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    pat = re.compile(r"(.+)_(\d{4})" + re.escape(file_ending) + "$")
    found: dict[str, dict[int, str]] = {}
    for f in sorted(folder.iterdir()):
        m = pat.match(f.name)
        if m:
            found.setdefault(m.group(1), {})[int(m.group(2))] = str(f)
    wanted = list(cases) if cases is not None else sorted(found)
    if not wanted:
        raise FileNotFoundError(f"{folder}: no images named <case>_XXXX{file_ending}")
    out = {}
    for case in wanted:
        chans = found.get(case, {})
        missing = [c for c in range(n_channels) if c not in chans]
        if missing:
            raise FileNotFoundError(f"{folder}: case {case!r} lacks channel file(s) "
                                    f"{[f'{case}_{c:04d}{file_ending}' for c in missing]}")
        out[case] = [chans[c] for c in range(n_channels)]
    return out


def predict_cases(predictor, cases: dict[str, list[str]], out_dir: Path,
                  on_progress: Callable[[str, int, int], None] | None = None) -> list[Path]:
    """Predict each case into ``out_dir/<case><file_ending>`` at its original geometry."""
    from nnunetv2.inference.export_prediction import \
        convert_predicted_logits_to_segmentation_with_correct_shape

    pm, cm, dj = predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json
    pre = cm.preprocessor_class(verbose=False)
    writer = pm.image_reader_writer_class()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (case, files) in enumerate(cases.items()):
        data, _, props = pre.run_case(files, None, pm, cm, dj)
        logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        seg = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, pm, cm, predictor.label_manager, props, return_probabilities=False,
            num_threads_torch=torch.get_num_threads())
        target = out_dir / f"{case}{dj['file_ending']}"
        with atomic_path(target) as tmp:
            writer.write_seg(seg, str(tmp), props)
        written.append(target)
        if on_progress is not None:
            on_progress("predict", i + 1, len(cases))
    return written
