"""Planning and preprocessing with nnU-Net v2, then the paper's protocol imposed on the plans.

Paper, Sect. 3.1: every network sees data resampled to 1.0 mm isotropic spacing, patches of 128^3
(3D) or 512^2 (2D), batch 2 or 14, nnU-Net's normalisation and augmentation. nnU-Net's own
planner runs once per dataset (fingerprint, ``nnUNetPlans.json``: kept as the record of what
nnU-Net would have chosen); ``nnUNetPlans_bench.json`` then carries one preprocessed
configuration, ``3d_1mm``: nnU-Net's ``3d_fullres`` (normalisation, resampling functions,
transpose) with the target spacing set to 1 mm. It is preprocessed once and shared by all models.

The 2D configuration slices each 1 mm volume along the plane the official pipeline used for the
task (:func:`harness.datasets.spec.slicing_plane`: sagittal for KiTS19, axial otherwise).
nnU-Net's 2D loader and predictor slice axis 0 of the array transposed by the plans'
``transpose_forward``, which is plan-level (nnU-Net's planner: "if you want a different
transpose_forward/backward you need to create a new planner"), so the 2D configuration has plans
of its own, ``nnUNetPlans_bench2d.json`` (configuration ``2d_1mm``): the bench plans with that
transpose. Where it equals the 3D transpose the two share the preprocessed data; otherwise
(KiTS19) the 2D plans are preprocessed into their own folder. Prediction undoes the transpose
(``transpose_backward``), so volumes come back in their original geometry.

At training time :func:`training_plans` adds the configuration a run uses, ``bench_3d`` or
``bench_2d``, with the profile's patch and batch and the ``data_identifier`` of its plans and
training target (below) -- so the 2D configuration trains on slices of the 1 mm volumes, and
predicts slice by slice. Its ``architecture`` entry is nnU-Net's PlainConvUNet topology for that
patch (what nnU-Net's planner derives: ``get_pool_and_conv_props``, 32 base features, capped at
320 in 3D and 512 in 2D); it records nnU-Net's plan, the networks themselves come from the
registry.

Label and region training (BraTS21, :mod:`harness.studies.options`) share nnU-Net's plan (the
planner reads the labels only to count outputs for its memory estimate: four entries in both
forms) and the preprocessed arrays (the stored segmentation is the label map either way), but not
the foreground locations that nnU-Net's preprocessor stores per case (``class_locations``, keyed
by label or by region), from which its data loader draws the centre of each oversampled patch.
So ``nnUNet_preprocessed/<Dataset>/dataset.json`` is written in the plain-label form, and BraTS21
gets a second data folder beside ``nnUNetPlans_bench_1mm`` (preprocessed by nnU-Net with the
labels): ``nnUNetPlans_bench_1mm_regions``, whose arrays are hard links to the first and whose
locations are sampled per region from the stored segmentation by the preprocessor's own sampler
and seed -- what preprocessing with the region form stores, without preprocessing twice.

A model that trains with what an nnU-Net planner plans for the dataset itself (registry
``plans``: ``nnunet-resenc-l-native``, ``nnUNetPlannerResEncL``) is outside this protocol.
:func:`plan_native` runs that planner on the fingerprint the bench planning extracted and
preprocesses its configuration (``3d_fullres``: nnU-Net's spacing, patch and batch) as nnU-Net
would; :func:`native_training_plans` trains from those plans, unchanged but for the model and
the training target's data folder. nnunetv2's ResEnc planners name their data folder as the
default planner does (``nnUNetPlans_3d_fullres``), so this folder is the one the default
``3d_fullres`` would use; BraTS21's region form gets ``..._regions`` beside it as above.

Differs from MedNeXt's nnU-Net v1 planners (``ExperimentPlanner{3D,2D}_v21_customTargetSpacing_1x1x1``):
the patch and batch are set explicitly (v1 overwrote only the patch after planning), and the
2D configuration is 1 mm along the slicing axis too: v1's ``PreprocessorFor2D`` resampled only the
slice plane to 1 mm and kept the original spacing between slices (MedNeXt ``preprocessing.py``
@7fdbd4a), so its slices were as far apart as the original voxels along that axis.
"""
from __future__ import annotations

import json
from copy import deepcopy
from pathlib import Path
from typing import Mapping

from harness.io import atomic_dir, write_json
from harness.nnunet.env import in_process_pools, planning_threads

TARGET_SPACING = (1.0, 1.0, 1.0)
NNUNET_PLANS = "nnUNetPlans"
PLANS_NAME = "nnUNetPlans_bench"
PREPROCESSED_CONFIG = "3d_1mm"
DATA_IDENTIFIER = f"{PLANS_NAME}_1mm"
PLANS_2D_NAME = "nnUNetPlans_bench2d"
PREPROCESSED_2D_CONFIG = "2d_1mm"
REGIONS_SUFFIX = "_regions"
REGIONS_DATA_IDENTIFIER = f"{DATA_IDENTIFIER}{REGIONS_SUFFIX}"
FEATURE_CAP = {"3d": 320, "2d": 512}
# Planners a model may train with (registry ``PLANNERS``): class name -> module in nnunetv2 2.8.1.
PLANNER_MODULES = {
    "nnUNetPlannerResEncL":
        "nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners",
}
NATIVE_CONFIG = "bench_native"


def preprocessed_folder(folder: str) -> Path:
    from nnunetv2.paths import nnUNet_preprocessed
    return Path(str(nnUNet_preprocessed)) / folder


def data_identifier(target: str | None = None, base: str = DATA_IDENTIFIER) -> str:
    """The preprocessed data folder of a training target (``labels``, default, or ``regions``)
    for the data folder ``base`` of a plan (default: the protocol's 1 mm data)."""
    return base + REGIONS_SUFFIX if target == "regions" else base


def plan_and_preprocess(dataset_id: int, folder: str,
                        dataset_jsons: Mapping[str, dict] | None = None) -> Path:
    """Fingerprint, nnU-Net's plan, the 1 mm bench plans (3D and 2D), and their preprocessing.

    ``dataset_jsons``: the ``dataset.json`` of each training target to prepare
    (``TaskSpec.target_dataset_json``); ``labels`` replaces nnU-Net's copy of the raw file,
    ``regions`` adds the region data folder. None: the raw file, labels only.
    Returns the path of ``nnUNetPlans_bench.json``. Safe to re-run (everything is rewritten).
    """
    from harness.datasets.spec import slicing_plane

    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import \
        DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import \
        ExperimentPlanner

    with in_process_pools("nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor"):
        fpe = DatasetFingerprintExtractor(dataset_id, num_processes=1, verbose=False)
        fpe.show_progress_bar = False
        fpe.run(overwrite_existing=True)
    with planning_threads(), in_process_pools():      # the planner lists the files too
        planner = ExperimentPlanner(dataset_id, plans_name=NNUNET_PLANS)
        plans = planner.plan_experiment()
    bench = bench_plans(plans)
    bench_2d = bench_2d_plans(bench, slicing_plane(folder))
    path = preprocessed_folder(folder) / f"{PLANS_NAME}.json"
    write_json(path, bench, sort_keys=False)
    write_json(path.with_name(f"{PLANS_2D_NAME}.json"), bench_2d, sort_keys=False)
    jsons = dict(dataset_jsons or {})
    if "labels" in jsons:
        write_json(preprocessed_folder(folder) / "dataset.json", jsons["labels"], sort_keys=False)
    preprocess(dataset_id, PLANS_NAME, PREPROCESSED_CONFIG)
    if bench_2d["configurations"][PREPROCESSED_2D_CONFIG]["data_identifier"] != DATA_IDENTIFIER:
        preprocess(dataset_id, PLANS_2D_NAME, PREPROCESSED_2D_CONFIG)
    if "regions" in jsons:
        derive_region_data(folder, jsons["regions"])
    return path


def bench_plans(nnunet_plans: dict) -> dict:
    """nnU-Net's plans with the protocol imposed: one configuration, ``3d_1mm``."""
    if "3d_fullres" not in nnunet_plans["configurations"]:
        raise ValueError(f"dataset {nnunet_plans['dataset_name']}: nnU-Net planned no 3d_fullres "
                         "configuration (is it a 2D dataset?); the protocol needs 3D volumes")
    cfg = deepcopy(nnunet_plans["configurations"]["3d_fullres"])
    cfg.update(data_identifier=DATA_IDENTIFIER, spacing=list(TARGET_SPACING))
    cfg.pop("inherits_from", None)
    cfg.pop("next_stage", None)
    plans = deepcopy(nnunet_plans)
    plans["plans_name"] = PLANS_NAME
    plans["configurations"] = {PREPROCESSED_CONFIG: cfg}
    plans["protocol"] = {"target_spacing": list(TARGET_SPACING),
                         "source": "MedNeXt (Roy et al., MICCAI 2023), Sect. 3.1"}
    return plans


def bench_2d_plans(bench: dict, plane: dict) -> dict:
    """The bench plans for the 2D configuration: ``transpose_forward`` puts the slicing axis of
    ``plane`` (:func:`harness.datasets.spec.slicing_plane`) first, one configuration
    ``2d_1mm``; the 3D data identifier when the transpose is the 3D one, else a new one."""
    t3 = [int(a) for a in bench["transpose_forward"]]
    t2 = [int(a) for a in plane["transpose_forward"]]
    if sorted(t2) != [0, 1, 2]:
        raise ValueError(f"transpose_forward must be a permutation of 0, 1, 2, got {t2}")
    order = [t3.index(a) for a in t2]       # 3D-transposed axis of each 2D-transposed axis
    plans = deepcopy(bench)
    cfg = plans["configurations"].pop(PREPROCESSED_CONFIG)
    cfg["data_identifier"] = DATA_IDENTIFIER if t2 == t3 else f"{PLANS_2D_NAME}_1mm"
    for key in ("spacing", "median_image_size_in_voxels", "patch_size"):
        cfg[key] = [cfg[key][i] for i in order]
    arch = cfg.get("architecture", {}).get("arch_kwargs", {})   # nnU-Net's record, axes moved too
    for key in ("kernel_sizes", "strides"):
        if key in arch:
            arch[key] = [[k[i] for i in order] for k in arch[key]]
    for key in ("original_median_spacing_after_transp", "original_median_shape_after_transp"):
        if key in plans:
            plans[key] = [plans[key][i] for i in order]
    plans.update(plans_name=PLANS_2D_NAME, transpose_forward=t2,
                 transpose_backward=[t2.index(i) for i in range(3)],
                 configurations={PREPROCESSED_2D_CONFIG: cfg})
    plans["protocol"] = {**plans.get("protocol", {}), "slicing_plane": deepcopy(plane)}
    return plans


def preprocess(dataset_id: int, plans_name: str = PLANS_NAME,
               configuration: str = PREPROCESSED_CONFIG) -> None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name
    folder = convert_id_to_dataset_name(dataset_id)
    plans = json.loads((preprocessed_folder(folder) / f"{plans_name}.json").read_text())
    cm = PlansManager(plans).get_configuration(configuration)
    pre = cm.preprocessor_class(verbose=False)
    pre.show_progress_bar = False
    with in_process_pools("nnunetv2.preprocessing.preprocessors.default_preprocessor"):
        pre.run(dataset_id, configuration, plans_name, num_processes=1)


def derive_region_data(folder: str, regions_dataset_json: dict, plans_name: str = PLANS_NAME,
                       configuration: str = PREPROCESSED_CONFIG) -> Path:
    """The region data folder (``<data identifier>_regions``) from the label-preprocessed folder
    of ``configuration`` in ``plans_name``: the arrays hard-linked (copied where links fail), each
    case's ``class_locations`` sampled per region (module docstring). Replaces an earlier one;
    returns the folder."""
    import os
    import shutil

    import numpy as np
    from batchgenerators.utilities.file_and_folder_operations import write_pickle
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pre = preprocessed_folder(folder)
    plans = json.loads((pre / f"{plans_name}.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    lm = pm.get_label_manager(regions_dataset_json)
    if not lm.has_regions or lm.has_ignore_label:
        raise ValueError(f"{folder}: region data need regions and no ignore label")
    src = pre / cm.data_identifier
    dst = pre / data_identifier("regions", cm.data_identifier)
    dataset = infer_dataset_class(str(src))(str(src))
    with atomic_dir(dst) as tmp:
        for f in sorted(src.iterdir()):
            if f.suffix != ".pkl":
                try:
                    os.link(f, tmp / f.name)
                except OSError:
                    shutil.copy2(f, tmp / f.name)
        for case in dataset.identifiers:
            _, seg, _, props = dataset.load_case(case)
            # the preprocessor's own call (default seed), on the segmentation it stored
            props["class_locations"] = cm.preprocessor_class._sample_foreground_locations(
                np.asarray(seg[:]), lm.foreground_regions)
            write_pickle(props, str(tmp / f"{case}.pkl"))
    return dst


def planner_class(planner: str):
    """The nnU-Net planner class named ``planner`` (one of :data:`PLANNER_MODULES`)."""
    import importlib

    if planner not in PLANNER_MODULES:
        raise ValueError(f"unknown planner {planner!r}; known: {', '.join(PLANNER_MODULES)}")
    return getattr(importlib.import_module(PLANNER_MODULES[planner]), planner)


def plan_native(dataset_id: int, folder: str, plans: Mapping[str, str],
                dataset_jsons: Mapping[str, dict] | None = None) -> dict:
    """Plan the dataset with ``plans["planner"]`` and preprocess ``plans["configuration"]``, as
    nnU-Net's ``plan_and_preprocess -pl <planner> -c <configuration>`` would.

    Reads the fingerprint :func:`plan_and_preprocess` extracted (run it first). ``plans``: a
    registry entry's ``{"planner", "plans_name", "configuration"}``. ``dataset_jsons``: as for
    :func:`plan_and_preprocess`; ``regions`` adds the region data folder. Returns what was planned
    for the configuration: ``plans_name``, ``configuration``, ``data_identifier``, ``spacing``,
    ``patch_size``, ``batch_size`` and the plans file's path. Safe to re-run.
    """
    cls = planner_class(plans["planner"])
    with planning_threads(), in_process_pools():
        planner = cls(dataset_id, plans_name=plans["plans_name"])
        written = planner.plan_experiment()
    config = plans["configuration"]
    if config not in written["configurations"]:
        raise ValueError(f"{folder}: {plans['planner']} planned no {config} configuration "
                         f"(it planned {', '.join(written['configurations'])})")
    path = preprocessed_folder(folder) / f"{plans['plans_name']}.json"
    if written["plans_name"] != plans["plans_name"] or not path.is_file():
        raise ValueError(f"{plans['planner']} wrote plans named {written['plans_name']!r}; "
                         f"expected {plans['plans_name']!r} in {path}")
    preprocess(dataset_id, plans["plans_name"], config)
    if "regions" in (dataset_jsons or {}):
        derive_region_data(folder, dataset_jsons["regions"], plans["plans_name"], config)
    cfg = written["configurations"][config]
    return {"plans_name": plans["plans_name"], "configuration": config,
            "data_identifier": cfg["data_identifier"],
            "spacing": [float(v) for v in cfg["spacing"]],
            "patch_size": [int(v) for v in cfg["patch_size"]],
            "batch_size": int(cfg["batch_size"]), "plans": str(path)}


def native_training_plans(folder: str, plans: Mapping[str, str], model: str,
                          target: str | None = None) -> tuple[dict, str]:
    """The plans a planner wrote (:func:`plan_native`) plus ``bench_native``: its configuration
    unchanged (spacing, patch, batch, normalisation, resampling, architecture) but for the model
    and, for ``regions``, the region data folder. Returns ``(plans, name)``."""
    path = preprocessed_folder(folder) / f"{plans['plans_name']}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {model} trains with the plans of "
                                f"{plans['planner']}; run its prepare job first (`mednext-bench "
                                "run` or `train` do)")
    written = json.loads(path.read_text())
    if plans["configuration"] not in written["configurations"]:
        raise ValueError(f"{path} has no configuration {plans['configuration']!r}")
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    # resolved through nnU-Net's own inheritance ("inherits_from"), then stored flat
    cfg = deepcopy(PlansManager(written).get_configuration(plans["configuration"]).configuration)
    cfg.pop("inherits_from", None)
    cfg.pop("next_stage", None)
    cfg["data_identifier"] = data_identifier(target, cfg["data_identifier"])
    cfg["bench_model"] = model
    written["configurations"][NATIVE_CONFIG] = cfg
    return written, NATIVE_CONFIG


def check_planned_network(net, configuration_manager, in_channels: int, num_classes: int,
                          deep_supervision: bool, planner: str) -> None:
    """``ValueError`` unless ``net`` is the network nnU-Net builds from the planned configuration
    (``get_network_from_plans``, on the meta device): the same parameter names and shapes."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    with torch.device("meta"):
        theirs = get_network_from_plans(
            configuration_manager.network_arch_class_name,
            configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import, in_channels, num_classes,
            allow_init=False, deep_supervision=deep_supervision)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    if ours != want:
        diff = sorted(set(ours.items()) ^ set(want.items()))[:3]
        raise ValueError(f"the network built here is not the one {planner} planned "
                         f"({configuration_manager.network_arch_class_name}); first differences "
                         f"(name, shape): {diff}")


def plain_unet_architecture(dim: str, patch: tuple[int, ...],
                            spacing: tuple[float, ...] = TARGET_SPACING) -> dict:
    """nnU-Net's PlainConvUNet topology for ``patch`` (the planner's rule, minimum edge 4)."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import \
        get_pool_and_conv_props

    nd = 3 if dim == "3d" else 2
    if len(patch) != nd:
        raise ValueError(f"patch {patch!r} does not have {nd} axes for a {dim} configuration")
    sp = list(spacing)[-nd:]
    _, strides, kernels, fitted, _ = get_pool_and_conv_props(sp, list(patch), 4, 999999)
    if [int(i) for i in fitted] != [int(i) for i in patch]:
        raise ValueError(f"patch {list(patch)} is not divisible by nnU-Net's pooling "
                         f"(it would become {[int(i) for i in fitted]})")
    n = len(strides)
    conv = "torch.nn.modules.conv.Conv3d" if nd == 3 else "torch.nn.modules.conv.Conv2d"
    norm = ("torch.nn.modules.instancenorm.InstanceNorm3d" if nd == 3
            else "torch.nn.modules.instancenorm.InstanceNorm2d")
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": [min(FEATURE_CAP[dim], 32 * 2 ** i) for i in range(n)],
            "conv_op": conv, "kernel_sizes": [list(k) for k in kernels],
            "strides": [list(s) for s in strides], "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True, "norm_op": norm,
            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def training_plans(folder: str, dim: str, patch, batch: int, model: str,
                   target: str | None = None) -> tuple[dict, str]:
    """The bench plans (3D or 2D) plus the configuration a run trains with; returns
    ``(plans, name)``. The 2D plans must slice the plane of the dataset's facts. ``target``
    (``labels``, default, or ``regions``) selects the preprocessed data folder."""
    from harness.datasets.spec import slicing_plane

    if dim not in ("3d", "2d"):
        raise ValueError(f"dim must be '3d' or '2d', got {dim!r}")
    if int(batch) < 1:
        raise ValueError(f"batch must be >= 1, got {batch!r}")
    name, config = (PLANS_NAME, PREPROCESSED_CONFIG) if dim == "3d" else \
        (PLANS_2D_NAME, PREPROCESSED_2D_CONFIG)
    path = preprocessed_folder(folder) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: prepare the dataset {folder} first (a data "
                                "root prepared before the 2D plans existed must be prepared again)")
    plans = json.loads(path.read_text())
    expected = slicing_plane(folder)["transpose_forward"] if dim == "2d" else None
    if expected is not None and plans["transpose_forward"] != expected:
        raise ValueError(f"{path} slices with transpose {plans['transpose_forward']}, the dataset's "
                         f"facts say {expected}: prepare it again")
    cfg = deepcopy(plans["configurations"][config])
    patch = [int(p) for p in patch]
    if target == "regions":
        if cfg["data_identifier"] != DATA_IDENTIFIER:
            raise ValueError(f"{folder}: region data are derived from the shared 1 mm data only, "
                             f"not from {cfg['data_identifier']}")
        cfg["data_identifier"] = REGIONS_DATA_IDENTIFIER
    cfg.update(patch_size=patch, batch_size=int(batch),
               architecture=plain_unet_architecture(dim, tuple(patch)), bench_model=model)
    if dim == "2d":
        # nnU-Net's own 2D rule (batch Dice across the slices of a batch); the spacing stays
        # three-dimensional so that prediction resamples whole volumes to 1 mm.
        cfg["batch_dice"] = True
        cfg["median_image_size_in_voxels"] = cfg["median_image_size_in_voxels"][1:]
    name = f"bench_{dim}"
    plans["configurations"][name] = cfg
    return plans, name
