"""nnU-Net's residual-encoder U-Net (the "ResEnc" presets): dynamic-network-architectures'
``ResidualEncoderUNet`` with the stage layout of nnU-Net v2's ResEnc planners and the topology
nnU-Net plans for the trained patch.

Paper: Isensee et al., "nnU-Net Revisited: A Call for Rigorous Validation in 3D Medical Image
Segmentation", MICCAI 2024 (arXiv 2404.09556). Official code: MIC-DKFZ/nnUNet, commit 0e49508
(= PyPI ``nnunetv2`` 2.8.1), ``experiment_planning/experiment_planners/residual_unets/
residual_encoder_unet_planners.py`` (``ResEncUNetPlanner``, ``nnUNetPlannerResEncM/L/XL``), and
MIC-DKFZ/dynamic-network-architectures d35f85c (= PyPI 0.4.4); both Apache-2.0. The network class
is DNA's, used unchanged (state-dict keys identical, so nnU-Net v2 ResEnc checkpoints load); what
is written here is the planner's layout and the wiring:

* topology (kernels, strides, features 32 * 2^i capped at 320 in 3D / 512 in 2D) from nnU-Net's
  rule, :func:`baselines.nnunet.plan_topology`, for the patch and spacing trained; the ResEnc
  planners call the same ``get_pool_and_conv_props`` as the default planner;
* a stem conv, then residual encoder blocks per stage (1, 3, 4, 6, 6, 6, ...) (DNA ``BasicBlockD``:
  two convs, the first block of a stage strided, average pooling and a 1x1x1 projection on its
  skip path), one conv per decoder stage, conv bias, InstanceNorm (eps 1e-5, affine),
  LeakyReLU(0.01), deep-supervision heads;
* nnU-Net's initialisation for this class (``ResidualEncoderUNet.initialize``: Kaiming normal
  a=1e-2, zero bias, and the last norm of every residual block set to zero so each block starts as
  its skip path), applied the way nnU-Net v2 applies it (``network.apply(network.initialize)``).

For a 128^3 patch at 1 mm nnU-Net's ResEnc M, L and XL planners all plan this very network
(checked by running ``get_plans_for_configuration`` of each on a dataset of median shape 128^3 at
1 mm: patch 128^3, 6 stages, strides 1,2,2,2,2,2, features 32..320, blocks 1,3,4,6,6,6, one
decoder conv per stage): the presets differ only in the patch and batch size their VRAM targets
allow (at 128^3, batch 2 / 7 / 12). Trained here at 128^3 with batch 2, this is the ResEnc M plan.

Differences from the original:

* The patch is the protocol's (1 mm, 128^3) rather than the preset's VRAM-driven, median-shape
  patch; batch 2 for every preset.
* nnU-Net pads a patch that its topology cannot divide; ``build`` refuses such a patch with a
  ``ValueError`` naming the padded size instead. ``forward`` checks the input size likewise.
* The stage limit is the length of the planner's blocks-per-stage table (13); nnU-Net has none
  and fails inside DNA for a patch that would need more stages.
"""
from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

from .nnunet import Topology, drop_unused_official_keys, plan_for_build, plan_topology

__all__ = ["DIVISOR", "FIXED_SIZE", "REFERENCE_PARAMS", "ResEncUNet", "build",
           "deep_supervision_scales", "drop_unused_official_keys", "plan_topology"]

# Module contract (as baselines.nnunet): planned per patch, DIVISOR is the one at 128^3.
DIVISOR = 32
FIXED_SIZE = False
# nnunetv2 2.8.1 nnUNetPlannerResEncM (L, XL alike) at 1 mm, median shape 128^3 ->
# get_network_from_plans(..., allow_init=False) on the meta device, 1 -> 14 channels; the heads
# are always built (same count with deep supervision off). 4 -> 4 channels: 102,353,972.
REFERENCE_PARAMS = {"in_channels": 1, "num_classes": 14, "patch_size": (128, 128, 128),
                    "params": 102_359_430}
# DNA creates nothing it does not use (drop_unused_official_keys drops nothing, as for nnunet).
UNUSED_OFFICIAL_KEYS: tuple[str, ...] = ()

# ResEncUNetPlanner.__init__ (nnunetv2 2.8.1): blocks per encoder stage, convs per decoder stage.
BLOCKS_PER_STAGE_ENCODER = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
CONVS_PER_STAGE_DECODER = 1
MAX_STAGES = len(BLOCKS_PER_STAGE_ENCODER)


class ResEncUNet(ResidualEncoderUNet):
    """``ResidualEncoderUNet`` that remembers its planned topology and checks its input size.

    The state dict is DNA's own (no extra keys), so nnU-Net v2 ResEnc ``network_weights`` load.
    """

    def __init__(self, in_channels: int, num_classes: int, topology: Topology,
                 deep_supervision: bool = True):
        n = topology.n_stages
        super().__init__(
            input_channels=in_channels, num_classes=num_classes, **topology.dna_kwargs(),
            n_blocks_per_stage=list(BLOCKS_PER_STAGE_ENCODER[:n]),
            n_conv_per_stage_decoder=[CONVS_PER_STAGE_DECODER] * (n - 1),
            deep_supervision=deep_supervision,
        )
        self.topology = topology
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor):
        self.topology.check_input("nnunet-resenc", self.in_channels, x)
        return super().forward(x)


def deep_supervision_scales(patch_size, spacing=None) -> list[tuple[float, ...]]:
    """Scale of each decoder output relative to the input, full resolution first (one per
    decoder stage, as nnU-Net's ``_get_deep_supervision_scales``)."""
    return plan_topology(patch_size, spacing, max_stages=MAX_STAGES).output_scales()


def build(in_channels: int, num_classes: int, patch_size, spacing=None,
          deep_supervision: bool = True) -> ResEncUNet:
    """nnU-Net's residual-encoder U-Net for ``patch_size`` at ``spacing`` (default 1 mm), initialised.

    The arguments are those of :func:`baselines.nnunet.build` (the same planned topology; the patch
    must be divisible by its strides, ``ValueError`` naming the padded size otherwise).

    Example: ``build(1, 14, (128, 128, 128))`` -> 102,359,430 parameters, 6 stages.
    """
    topology = plan_for_build("nnunet-resenc", in_channels, num_classes, patch_size, spacing,
                              max_stages=MAX_STAGES)
    model = ResEncUNet(in_channels, num_classes, topology, deep_supervision=bool(deep_supervision))
    model.apply(ResidualEncoderUNet.initialize)   # He(1e-2) + zero last norm per residual block
    return model
