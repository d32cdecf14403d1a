"""Train one run with :class:`~harness.nnunet.trainer.BenchTrainer`: fresh, resumed or initialised.

- ``checkpoint_final.pth`` present: nothing to train (resume files that a kill left beside it
  are removed).
- ``checkpoint_latest.pth`` present: resume from it (weights, optimizer, epoch counter, log), the
  way nnU-Net's ``--c`` does; a SLURM requeue or a re-run after a kill lands here. If it does not
  read (a write cut off by a kill or a full disk) or lacks what a resume needs, resume from
  ``checkpoint_previous.pth``; the note saying so is printed, written to the training log and
  returned as ``resume_note`` (:func:`harness.nnunet.checkpoints.resume_point`). Temporary files
  of a killed checkpoint write are removed first.
- otherwise: a fresh start; a run with ``init`` first loads the finished source run's final
  weights, resampled by UpKern (``mednext.upkern``, paper Sect. 2.3) or copied as they are
  ("continue", the 2x-schedule ablation). The optimizer always starts fresh.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from harness.nnunet.checkpoints import (FINAL, LATEST, PREVIOUS, network_weights,
                                        remove_stale_temporaries, resume_point)
from harness.nnunet.env import device
from harness.nnunet.plans import native_training_plans, preprocessed_folder, training_plans
from harness.nnunet.trainer import trainer_class, unwrap


def load_plans(spec: dict) -> tuple[dict, str, dict]:
    """``(plans, configuration name, dataset_json)`` of a run, for what it trains on: its
    ``brats_target`` setting (BraTS21), else labels. The ``dataset.json`` is the prepared one in
    that target's form (``TaskSpec.target_dataset_json``): plain labels, or nnU-Net's regions,
    with which nnU-Net's label manager trains sigmoid outputs with Dice + BCE and its predictor
    paints the regions back into a label map (``regions_class_order``). A run whose profile
    block names a planner (``plans``) trains with that planner's configuration
    (:func:`harness.nnunet.plans.native_training_plans`), every other run with the protocol's."""
    from harness.datasets import task_spec

    ds = task_spec(spec["dataset"])
    target = spec["settings"].get("brats_target")
    if spec["profile"].get("plans"):
        plans, cfg = native_training_plans(ds.folder, spec["profile"]["plans"], spec["model"],
                                           target)
    else:
        plans, cfg = training_plans(ds.folder, spec["dim"], spec["profile"]["patch"],
                                    spec["profile"]["batch"], spec["model"], target)
    prepared = json.loads((preprocessed_folder(ds.folder) / "dataset.json").read_text())
    return plans, cfg, ds.target_dataset_json(prepared, target)


def trained_configuration(plans: dict, cfg: str) -> dict:
    """What a run trains with, for ``run.json``: plans, data folder, spacing, patch, batch."""
    c = plans["configurations"][cfg]
    return {"plans_name": plans["plans_name"], "configuration": cfg,
            "data_identifier": c["data_identifier"],
            "spacing": [float(v) for v in c["spacing"]],
            "patch": [int(v) for v in c["patch_size"]], "batch": int(c["batch_size"])}


def make_trainer(spec: dict, run_dir: Path, on_progress: Callable | None = None,
                 continue_training: bool = False):
    """Construct the bound trainer. nnU-Net's __init__ makes a log folder under
    ``nnUNet_results`` before we can redirect it; it is pointed at a scratch folder of the run
    and removed."""
    plans, cfg, dataset_json = load_plans(spec)
    plans["continue_training"] = continue_training      # nnU-Net pops this key (KeyError if absent)
    cls = trainer_class(spec, run_dir, on_progress)
    scratch = Path(run_dir) / ".nnunet_results"
    old = os.environ.get("nnUNet_results")
    os.environ["nnUNet_results"] = str(scratch)
    try:
        trainer = cls(plans, cfg, int(spec["fold"]), dataset_json, device())
    finally:
        if old is None:
            os.environ.pop("nnUNet_results", None)
        else:
            os.environ["nnUNet_results"] = old
        shutil.rmtree(scratch, ignore_errors=True)
    return trainer


def load_init(trainer, spec: dict, work: Path) -> str:
    """Initialise the network from the finished run named by ``spec["init"]``."""
    init = spec["init"]
    src = Path(work) / "runs" / init["run_id"] / "checkpoint_final.pth"
    if not src.is_file():
        raise FileNotFoundError(
            f"{spec['model']} (fold {spec['fold']}, {spec['dataset']}) starts ({init['mode']}) from "
            f"the finished {init['model']} run {init['run_id']}, but {src} does not exist: "
            f"train {init['model']} on fold {spec['fold']} first")
    state = network_weights(src)
    net = unwrap(trainer.network)
    if init["mode"] == "upkern":
        from mednext import upkern
        upkern(state, net)
    elif init["mode"] == "continue":
        net.load_state_dict(state)
    else:
        raise ValueError(f"init mode {init['mode']!r} is not 'upkern' or 'continue'")
    return str(src)


def train(spec: dict, run_dir: Path, work: Path,
          on_progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Train (or finish training) one run into ``run_dir``. Returns what happened."""
    run_dir = Path(run_dir)
    for stale in remove_stale_temporaries(run_dir):
        print(f"removed {stale}: the temporary file of a checkpoint write that did not finish")
    if (run_dir / FINAL).is_file():
        # Training ended; a kill right after the final write may have left the resume files.
        for name in (LATEST, PREVIOUS):
            (run_dir / name).unlink(missing_ok=True)
        return {"trained": False, "resumed_from_epoch": None, "init_from": None,
                "resume_note": None}
    ckpt, source, note = resume_point(run_dir)
    if note:
        print(note, flush=True)
    trainer = make_trainer(spec, run_dir, on_progress, continue_training=ckpt is not None)
    info = {"trained": True, "resumed_from_epoch": None, "init_from": None, "resume_note": note}
    if note:
        trainer.print_to_log_file(note)
    if ckpt is not None:
        trainer.load_checkpoint(ckpt)
        trainer.checkpoint_on_disk = (source, int(trainer.current_epoch))
        info["resumed_from_epoch"] = int(trainer.current_epoch)
        info["resumed_from"] = source
    else:
        trainer.initialize()
        if spec["init"] is not None:
            info["init_from"] = load_init(trainer, spec, work)
    trainer.run_training()
    info["execution"] = trainer.execution()
    info["epochs"] = int(trainer.current_epoch)
    info["parameters"] = int(sum(p.numel() for p in unwrap(trainer.network).parameters()))
    return info
