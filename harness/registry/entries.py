"""The model registry as data: one ``ModelEntry`` per model name, with provenance.

Each entry says how to build the network (a dotted builder path + JSON-serialisable keyword
arguments), what input it accepts, where it comes from (paper, official repository, commit,
licence, what this project changed), how it is trained (``recipes``), how it is initialised
(``init``: UpKern from the kernel-3 run, or a second schedule continued from it), which small
patch the tests build it at, and its exact reference parameter count with the count's source.
Written after timm's habit of one small entry per variant; the names are the project's fixed
contract (``mednext-{s,b,m,l}-k{3,5}``, the three ablation variants, seven baselines), followed
by the rows beyond the paper (``mednext-b-k3-grn``, ``nnunet-resenc``,
``nnunet-resenc-l-native``).

Every entry but one trains under the identical protocol; ``nnunet-resenc-l-native`` trains with
what ``nnUNetPlannerResEncL`` plans for each dataset (``plans``, :mod:`.schema`). What an entry
is, and how it is validated, is in :mod:`.schema`.
"""
from __future__ import annotations

from typing import Any, Mapping

from .recipes import recipes_for
from .schema import Constraints, ModelEntry, Origin

# ---------------------------------------------------------------------------------------------
# MedNeXt
MEDNEXT_ORIGIN = Origin(
    paper="Roy et al., MedNeXt: Transformer-driven Scaling of ConvNets for Medical Image "
          "Segmentation, MICCAI 2023 (arXiv 2303.09975)",
    repository="https://github.com/MIC-DKFZ/MedNeXt", commit="0b78ed8", licence="Apache-2.0",
    implementation="mednext.create_mednext (torch-only reimplementation from the spec)",
    changes="Reimplemented, official state-dict layout kept. Activation checkpointing is "
            "non-reentrant and switchable (official: reentrant via dummy_tensor, which is kept as a "
            "frozen parameter); see mednext/ docstrings.",
)

# Reference counts (1 -> 14 channels, 128^3; the count does not depend on the patch) as data
# from specs/mednext.md b.3, not read from ``mednext``: the tests compare both with the network.
_MEDNEXT_COUNTS = {  # (size, kernel) -> (deep supervision off, on)
    ("s", 3): (5_551_311, 5_564_807), ("s", 5): (5_980_943, 5_994_439),
    ("b", 3): (10_526_703, 10_540_199), ("b", 5): (10_956_335, 10_969_831),
    ("m", 3): (17_549_359, 17_562_855), ("m", 5): (18_261_231, 18_274_727),
    ("l", 3): (61_779_663, 61_793_159), ("l", 5): (62_993_295, 63_006_791),
}
_MEDNEXT_REF_SOURCE = "specs/mednext.md b.3 (official code instantiated; analytic formula agrees)"

# "Standard up and downsampling" (Table 1 right) has no official code or published count. Derived
# from the B-k3 per-module breakdown (specs/mednext.md b.4): the 4 residual down blocks
# (1,233,696) and 4 up blocks (2,259,520) are replaced by 2^3-kernel stride-2 convs C -> 2C and
# transposed convs 2C -> C with bias (mednext.blocks.StridedConvDown / TransposedConvUp):
# downs 16,448 + 65,664 + 262,400 + 1,049,088, ups 1,048,832 + 262,272 + 65,600 + 16,416
# = 2,786,720 -> 10,526,703 - 3,493,216 + 2,786,720 = 9,820,207 (9,833,703 with the DS heads).
_STD_RESAMPLING_COUNTS = (9_820_207, 9_833_703)

# MedNeXt-B k3 with Global Response Normalisation: no official count (no config of the paper or
# the repository uses it). Derived: each GRN-carrying block adds gamma and beta of its expanded
# width (exp_r x input channels). B: C = 32, exp_r 2,3,4,4,4,4,4,3,2, two blocks per stage.
# Plain blocks (18): 2 x 2 x (64 + 192 + 512 + 1024 + 2048 + 1024 + 512 + 192 + 64) = 22,528;
# down_1..3 (down_0 has none, as in the official code): 2 x (4*64 + 4*128 + 4*256) = 3,584;
# up_3..0: 2 x (4*512 + 4*256 + 3*128 + 2*64) = 7,168. Sum 33,280 -> 10,526,703 + 33,280 =
# 10,559,983 (10,573,479 with the DS heads); the meta-device count of the built network agrees.
_GRN_COUNTS = (10_559_983, 10_573_479)


def _mednext(name: str, size: str, kernel: int, *, init=None, label: str, notes: str = "",
             counts: tuple[int, int] | None = None, source: str = _MEDNEXT_REF_SOURCE,
             **overrides) -> ModelEntry:
    checkpointing = size in ("m", "l")
    no_ds, ds = counts or _MEDNEXT_COUNTS[(size, kernel)]
    return ModelEntry(
        name=name, family="mednext", dim="3d", builder="mednext.create_mednext",
        kwargs={"size": size.upper(), "kernel_size": kernel, "dim": "3d", **overrides},
        constraints=Constraints(16, False, "four 2x downsamplings (the official nnU-Net wrapper "
                                           "declares 32, stricter than the network needs)",
                                bottleneck_stride=16),
        origin=MEDNEXT_ORIGIN,
        recipes=recipes_for("mednext", kernel=kernel, checkpointing=checkpointing),
        # 32x32x16: the 1/16 bottleneck keeps 2x2x1 voxels, so its per-channel norm still
        # passes gradients (a 1- or 2-voxel map normalises to constants)
        test_patch=(32, 32, 16),
        reference_params={"in_channels": 1, "num_classes": 14, "patch_size": (128, 128, 128),
                          "params": no_ds, "params_deep_supervision": ds, "source": source},
        init=init, label=label, notes=notes,
    )


def _mednext_entries() -> list[ModelEntry]:
    out = []
    for size in "sbml":
        out.append(_mednext(f"mednext-{size}-k3", size, 3, label=f"MedNeXt-{size.upper()} (k3)"))
    for size in "sbml":
        out.append(_mednext(
            f"mednext-{size}-k5", size, 5, label=f"MedNeXt-{size.upper()} (k5)",
            init={"from": f"mednext-{size}-k3", "mode": "upkern"},
            notes="UpKern: initialised from the finished kernel-3 run of the same task and fold "
                  "(kernel weights trilinearly resampled 3 -> 5), then the full schedule."))
    out.append(_mednext(
        "mednext-b-k3-std-resampling", "b", 3, resampling="standard",
        label="MedNeXt-B, standard up and downsampling",
        counts=_STD_RESAMPLING_COUNTS,
        source="derived from specs/mednext.md b.4 (B k3 breakdown, resampling blocks replaced "
               "by 2^3 stride-2 (transposed) convs with bias); no published count",
        notes="Table 1 (right) ablation: residual inverted-bottleneck resampling replaced by "
              "plain strided (transposed) convolutions; the paper does not describe these layers "
              "further (kernel 2, stride 2 chosen here)."))
    out.append(_mednext(
        "mednext-b-k5-scratch", "b", 5, label="MedNeXt-B (k5) from scratch",
        notes="Table 1 (right) ablation: kernel 5 trained from random initialisation (no UpKern)."))
    out.append(_mednext(
        "mednext-b-k3-2x", "b", 3, init={"from": "mednext-b-k3", "mode": "continue"},
        label="MedNeXt-B (k3) trained 2x",
        notes="Table 1 (right) ablation: the same network, a second full schedule (fresh "
              "optimizer and LR schedule) started from the finished mednext-b-k3 weights."))
    out.append(_mednext(
        "mednext-b-k3-grn", "b", 3, grn=True, label="MedNeXt-B + GRN (k3)", counts=_GRN_COUNTS,
        source="derived: specs/mednext.md b.3 B k3 count + 2 x expanded width per GRN-carrying "
               "block (33,280); no published count",
        notes="Beyond the paper: Global Response Normalisation (ConvNeXt V2) after the GELU of "
              "every block's expansion, the switch the official v1 blocks carry (no MICCAI 2023 "
              "config uses it); MedNeXt-v2 (Roy, Kirchhoff et al., arXiv 2512.17774, 2025) builds "
              "on 3D GRN (with other changes: this is not MedNeXt-v2). Recipe as mednext-b-k3."))
    return out


# ---------------------------------------------------------------------------------------------
# Baselines
def _baseline(name: str, builder: str, dim: str, divisor: int | None, fixed: bool, note: str,
              origin: Origin, test_patch: tuple[int, ...], params: int, *, label: str,
              builder_options: tuple[str, ...] = (), notes: str = "",
              bottleneck_stride: int | None = None,
              source: str = "specs/baselines.md 12 (official/library model instantiated)",
              extra_ref: Mapping[str, Any] | None = None,
              plans: Mapping[str, str] | None = None) -> ModelEntry:
    patch = (128, 128, 128) if dim == "3d" else (512, 512)
    return ModelEntry(
        name=name, family="baseline", dim=dim, builder=builder, kwargs={},
        constraints=Constraints(divisor, fixed, note, bottleneck_stride), origin=origin,
        recipes=recipes_for(name), test_patch=test_patch,
        reference_params={"in_channels": 1, "num_classes": 14, "patch_size": patch,
                          "params": params, "source": source, **(extra_ref or {})},
        builder_options=builder_options, label=label, notes=notes, plans=plans,
    )


_NNUNET = Origin(
    paper="Isensee et al., nnU-Net: a self-configuring method for deep learning-based biomedical "
          "image segmentation, Nature Methods 18, 2021",
    repository="https://github.com/MIC-DKFZ/nnUNet + https://github.com/MIC-DKFZ/dynamic-network-architectures",
    commit="0e49508 (nnunetv2 2.8.1) + d35f85c (DNA 0.4.4)", licence="Apache-2.0",
    implementation="baselines.nnunet.build (DNA PlainConvUNet, topology derived by nnU-Net's rule)",
    changes="Topology planned for the trained patch at 1 mm (128^3: 6 stages) instead of the "
            "MedNeXt v1 runs' dataset-planned topology; a patch the topology cannot divide is "
            "refused (nnU-Net pads it).")
_RESENC = Origin(
    paper="Isensee et al., nnU-Net Revisited: A Call for Rigorous Validation in 3D Medical Image "
          "Segmentation, MICCAI 2024 (arXiv 2404.09556)",
    repository=_NNUNET.repository, commit=_NNUNET.commit, licence="Apache-2.0",
    implementation="baselines.resenc.build (DNA ResidualEncoderUNet, nnU-Net's ResEnc planner "
                   "layout, topology by nnU-Net's rule)",
    changes="Planned for the trained patch at 1 mm (128^3: the network nnU-Net's ResEnc M, L and XL "
            "planners all give at 128^3) and trained at batch 2, not at the preset's VRAM-driven "
            "patch and batch; a patch the topology cannot divide is refused.")
_RESENC_L_NATIVE = Origin(
    paper=_RESENC.paper, repository=_RESENC.repository, commit=_RESENC.commit, licence="Apache-2.0",
    implementation="baselines.resenc.build at the spacing and patch nnUNetPlannerResEncL plans "
                   "(3d_fullres), checked against nnU-Net's network from those plans",
    changes="None to the network or its plan: nnU-Net's ResEnc L preset as it plans itself "
            "(its own spacing, patch, batch and topology; nnU-Net's preprocessing of its "
            "3d_fullres configuration). Outside the identical protocol of every other row.")
_UNETR = Origin(
    paper="Hatamizadeh et al., UNETR: Transformers for 3D Medical Image Segmentation, WACV 2022",
    repository="https://github.com/Project-MONAI/MONAI", commit="monai 1.6.1 (PyPI)",
    licence="Apache-2.0", implementation="baselines.monai_nets.build_unetr (MONAI UNETR)",
    changes="The 12 LayerNorms MONAI 1.6.1 creates for the disabled cross-attention (never used, "
            "no gradient; absent from the MONAI the paper used) are removed: 18,432 parameters "
            "fewer; input-size check with a clear error.")
_SWIN = Origin(
    paper="Hatamizadeh et al., Swin UNETR: Swin Transformers for Semantic Segmentation of Brain "
          "Tumors in MRI Images, BrainLes 2021 (arXiv 2201.01266)",
    repository="https://github.com/Project-MONAI/MONAI", commit="monai 1.6.1 (PyPI)",
    licence="Apache-2.0", implementation="baselines.monai_nets.build_swin_unetr (MONAI SwinUNETR)",
    changes="MONAI >= 1.5 PatchMerging concatenates all 8 voxels of each 2x2x2 cell; the MedNeXt "
            "runs' vendored copy (MONAI <= 1.4 behaviour) used 6 of them (x2=x5, x3=x6 duplicated). "
            "Same parameters and keys, different function: a benign architectural deviation.")
_TRANSUNET = Origin(
    paper="Chen et al., TransUNet: Transformers Make Strong Encoders for Medical Image "
          "Segmentation, arXiv 2102.04306 (2021)",
    repository="https://github.com/Beckschen/TransUNet", commit="02ef001", licence="Apache-2.0",
    implementation="baselines.transunet.build (reimplemented from the spec)",
    changes="512^2 slices, trained from scratch (no ImageNet-21k weights, as in the MedNeXt runs); "
            "C > 1 modalities feed the root conv directly (MedNeXt's change); see the module docstring.")
_TRANSBTS = Origin(
    paper="Wang et al., TransBTS: Multimodal Brain Tumor Segmentation Using Transformer, MICCAI 2021",
    repository="https://github.com/Rubics-Xuan/TransBTS", commit="7dcfc31", licence="Apache-2.0",
    implementation="baselines.transbts.build (reimplemented from the spec)",
    changes="In/out channels honoured and no softmax (as MedNeXt); position embedding sized from the "
            "patch; the unused linear projection and final LayerNorm are not created (-67,072 "
            "parameters at 1 input channel); stem dropout follows train/eval mode; see the module docstring.")
_NNFORMER = Origin(
    paper="Zhou et al., nnFormer: Volumetric Medical Image Segmentation via a 3D Transformer, "
          "arXiv 2109.03201 (2021) / IEEE TIP 2023",
    repository="https://github.com/282857341/nnFormer", commit="d48aaeb", licence="MIT",
    implementation="baselines.nnformer.build (reimplemented from the spec, brain-tumour configuration)",
    changes="Tumour configuration at the trained patch for every dataset (as MedNeXt), no deep "
            "supervision heads; see the module docstring.")
_UXNET = Origin(
    paper="Lee et al., 3D UX-Net: A Large Kernel Volumetric ConvNet Modernizing Hierarchical "
          "Transformer for Medical Image Segmentation, ICLR 2023",
    repository="https://github.com/MASILab/3DUX-Net", commit="14ea46b",
    licence="README says MIT; no LICENSE file in the repository",
    implementation="baselines.uxnet3d.build (encoder reimplemented, decoder from MONAI blocks)",
    changes="Divisor 16 (what the network needs; MedNeXt's wrapper declared 32); see the module docstring.")


def _baseline_entries() -> list[ModelEntry]:
    return [
        _baseline("nnunet", "baselines.nnunet.build", "3d", None, False,
                  "topology planned per patch and spacing; the patch must be a multiple of "
                  "2^(halvings per axis): 32 at 128^3", _NNUNET, (32, 32, 32), 31_205_254,
                  label="nnU-Net", builder_options=("deep_supervision", "spacing"),
                  extra_ref={"params_deep_supervision": 31_205_254}),
        _baseline("unetr", "baselines.monai_nets.build_unetr", "3d", 16, True,
                  "ViT on 16^3 patches with a learned position embedding per patch",
                  _UNETR, (32, 32, 32), 93_011_374, label="UNETR",
                  source="specs/baselines.md 12: MONAI 1.6.1 UNETR 93,029,806 minus the 18,432 "
                         "parameters of its 12 unused cross-attention LayerNorms",
                  extra_ref={"library_params": 93_029_806}),
        # 64x64x32: the 768-channel bottleneck at 1/32 needs >= 4 voxels for its instance norm
        # to train (1 voxel raises, 2 normalise to constants and pass no gradient)
        _baseline("swin-unetr", "baselines.monai_nets.build_swin_unetr", "3d", 32, False,
                  "patch 2 and four patch mergings (checked by MONAI in forward)",
                  _SWIN, (64, 64, 32), 62_187_296, label="SwinUNETR", bottleneck_stride=32),
        _baseline("transunet", "baselines.transunet.build", "2d", 16, True,
                  "R50 stride 16 and a learned position embedding per token", _TRANSUNET,
                  (32, 32), 105_913_710, label="TransUNet"),
        _baseline("transbts", "baselines.transbts.build", "3d", 8, True,
                  "stride-8 CNN encoder, learned position embedding per token", _TRANSBTS,
                  (32, 32, 32), 32_722_782, label="TransBTS",
                  source="specs/baselines.md 7, 12: official 32,789,854 minus the 67,072 "
                         "parameters of the two unused official tensors",
                  extra_ref={"official_params": 32_789_854}),
        _baseline("nnformer", "baselines.nnformer.build", "3d", 32, True,
                  "embedding patch 4 and three 2x mergings; token-grid resolutions fixed at "
                  "construction", _NNFORMER, (32, 32, 32), 37_664_288, label="nnFormer"),
        _baseline("3d-uxnet", "baselines.uxnet3d.build", "3d", 16, False,
                  "stride-2 stem and three stride-2 downsamplings", _UXNET, (32, 32, 32),
                  53_006_510, label="3D-UX-Net", bottleneck_stride=16),
        _baseline("nnunet-resenc", "baselines.resenc.build", "3d", None, False,
                  "topology planned per patch and spacing, as nnunet: 32 at 128^3", _RESENC,
                  (32, 32, 32), 102_359_430, label="nnU-Net ResEnc",
                  builder_options=("deep_supervision", "spacing"),
                  source="nnunetv2 2.8.1 nnUNetPlannerResEncM/L/XL.get_plans_for_configuration "
                         "(1 mm, median shape 128^3) -> get_network_from_plans (DNA 0.4.4), "
                         "counted on the meta device",
                  extra_ref={"params_deep_supervision": 102_359_430},
                  notes="Beyond the paper: nnU-Net's residual-encoder preset (nnU-Net Revisited), "
                        "trained with nnU-Net's SGD recipe and deep supervision like nnunet."),
        _baseline("nnunet-resenc-l-native", "baselines.resenc.build", "3d", None, False,
                  "trained at the patch nnUNetPlannerResEncL plans (divisible by construction)",
                  _RESENC_L_NATIVE, (32, 32, 32), 102_359_430, label="nnU-Net ResEnc L (own plans)",
                  builder_options=("deep_supervision", "spacing"),
                  source="the network nnUNetPlannerResEncL plans for a dataset of median shape "
                         "128^3 at 1 mm (the same as nnunet-resenc's; patch 128^3, batch 7); on a "
                         "real dataset it plans another patch, and the count follows it (its runs "
                         "record theirs)",
                  extra_ref={"params_deep_supervision": 102_359_430},
                  plans={"planner": "nnUNetPlannerResEncL", "plans_name": "nnUNetResEncUNetLPlans",
                         "configuration": "3d_fullres"},
                  notes="Beyond the paper, outside the identical protocol: nnU-Net's recommended "
                        "ResEnc L preset with the spacing, patch and batch it plans for the dataset "
                        "itself (configuration 3d_fullres), "
                        "nnU-Net's SGD recipe. It answers what the recommended baseline reaches "
                        "when it plans itself, not how it compares under the paper's protocol."),
    ]


def all_entries() -> dict[str, ModelEntry]:
    """Every entry by name, MedNeXt first (paper order), then the baselines."""
    entries = _mednext_entries() + _baseline_entries()
    by_name = {e.name: e for e in entries}
    if len(by_name) != len(entries):
        raise RuntimeError("duplicate model name in the registry")
    for e in entries:
        if e.init is not None and e.init["from"] not in by_name:
            raise RuntimeError(f"{e.name} initialises from unknown model {e.init['from']!r}")
    return by_name
