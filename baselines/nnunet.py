"""nnU-Net's 3d_fullres network: dynamic-network-architectures' ``PlainConvUNet`` with the
topology nnU-Net v2 plans for a given patch and spacing.

Paper: Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
segmentation", Nature Methods 18, 2021. Official code: MIC-DKFZ/nnUNet, commit 0e49508 (= PyPI
``nnunetv2`` 2.8.1) and MIC-DKFZ/dynamic-network-architectures d35f85c (= PyPI 0.4.4), both
Apache-2.0. The network class is DNA's, used unchanged (state-dict keys identical, so nnU-Net v2
checkpoints load); what is written here is the planner rule and the wiring:

* ``plan_topology`` re-derives, without importing ``nnunetv2``, what nnU-Net v2's default planner
  (``get_pool_and_conv_props`` + ``get_plans_for_configuration``) produces for a patch: halve an
  axis while its feature map stays >= 4 voxels (an axis alone needs >= 12 to be halved), only axes
  whose spacing is within 2x of the finest one, kernel 1 on an axis whose spacing is >= 2x the
  finest, features 32 * 2^i capped at 320 (3D) / 512 (2D), two convs per stage. For a 128^3 patch
  at 1 mm: 6 stages, 32..320 features, strides 1,2,2,2,2,2 (specs/baselines.md section 3).
* InstanceNorm (eps 1e-5, affine), LeakyReLU(0.01), conv bias, deep-supervision heads, and nnU-Net's
  initialisation (Kaiming normal a=1e-2 on every conv / transposed conv, zero bias), applied the way
  nnU-Net v2 applies it (``network.apply(network.initialize)``).

Differences from the original:

* nnU-Net pads a patch that its topology cannot divide (``pad_shape``); ``build`` refuses such a
  patch with a ``ValueError`` naming the padded size instead, so the caller decides.
* The MedNeXt paper's nnU-Net v1 baseline used a topology planned for nnU-Net's own patch with the
  patch then forced to 128^3; this project plans the topology for the patch actually trained
  (specs/baselines.md section 3, pitfalls).
* ``forward`` checks that the input is a multiple of the planned divisor and raises ``ValueError``
  (DNA would fail later with a shape mismatch at a skip concatenation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

# Module contract (baselines/README in the module docstrings): not fixed-size; the divisor is
# planned per patch, DIVISOR is the one at the paper's 128^3 patch (five halvings).
DIVISOR = 32
FIXED_SIZE = False
REFERENCE_PARAMS = {"in_channels": 1, "num_classes": 14, "patch_size": (128, 128, 128),
                    "params": 31_205_254}
# PlainConvUNet creates nothing it does not use: the deep-supervision heads are always built and
# used when deep supervision is on (as nnU-Net trains it).
UNUSED_OFFICIAL_KEYS: tuple[str, ...] = ()

# nnU-Net v2 default planner constants (ExperimentPlanner.__init__, nnunetv2 2.8.1).
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}
MIN_FEATURE_MAP_EDGE = 4
MAX_STAGES = 14          # length of the planner's blocks-per-stage table (its stage limit)
CONVS_PER_STAGE = 2


@dataclass(frozen=True)
class Topology:
    """What the planner decides for one patch: per-stage kernels, strides and widths."""

    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    features_per_stage: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Per-axis size the input must be a multiple of (product of the strides)."""
        return tuple(math.prod(s[a] for s in self.strides) for a in range(len(self.patch_size)))

    def padded(self, shape) -> tuple[int, ...]:
        """Smallest shape >= ``shape`` that the topology divides (what nnU-Net would pad to)."""
        return tuple(int(math.ceil(n / d) * d) for n, d in zip(shape, self.divisor))

    def output_scales(self) -> list[tuple[float, ...]]:
        """Scale of each decoder output (deep supervision) relative to the input, full first."""
        scales, factor = [], [1] * len(self.patch_size)
        for stride in self.strides[:-1]:
            factor = [f * s for f, s in zip(factor, stride)]
            scales.append(tuple(1.0 / f for f in factor))
        return scales

    def check_input(self, name: str, in_channels: int, x: torch.Tensor) -> None:
        """``ValueError`` unless ``x`` is (N, in_channels, spatial) with sizes the strides divide
        (DNA would fail later with a shape mismatch at a skip concatenation)."""
        dim = len(self.patch_size)
        if x.dim() != dim + 2 or x.shape[1] != in_channels:
            raise ValueError(f"{name} expects input (N, {in_channels}, {dim} spatial dims), "
                             f"got {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        if any(n % d for n, d in zip(spatial, self.divisor)):
            raise ValueError(f"{name}: input size {spatial} must be a multiple of "
                             f"{self.divisor} per axis, e.g. {self.padded(spatial)}")

    def dna_kwargs(self) -> dict:
        """The DNA U-Net arguments nnU-Net v2's planners write for this topology, less the
        blocks per stage (PlainConvUNet and ResidualEncoderUNet name those differently)."""
        dim = len(self.patch_size)
        return dict(
            n_stages=self.n_stages, features_per_stage=list(self.features_per_stage),
            conv_op=nn.Conv3d if dim == 3 else nn.Conv2d,
            kernel_sizes=[list(k) for k in self.kernel_sizes],
            strides=[list(s) for s in self.strides], conv_bias=True,
            norm_op=nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d,
            norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
            nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


def _check_patch(patch_size, spacing=None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    patch = tuple(patch_size)
    if len(patch) not in (2, 3) or not all(isinstance(n, int) and n > 0 for n in patch):
        raise ValueError(f"patch_size must be 2 or 3 positive ints, got {patch_size!r}")
    if spacing is None:
        spacing = (1.0,) * len(patch)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != len(patch) or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing must be {len(patch)} positive numbers, got {spacing!r}")
    return patch, spacing


def plan_topology(patch_size, spacing=None, min_feature_map_edge: int = MIN_FEATURE_MAP_EDGE,
                  max_stages: int = MAX_STAGES) -> Topology:
    """nnU-Net v2's topology rule for ``patch_size`` (voxels) at ``spacing`` (mm, default 1 mm).

    Each step halves every axis that (a) is at least ``2 * min_feature_map_edge`` voxels,
    (b) has a spacing below twice the finest spacing among those axes; if only one axis
    qualifies it must be at least ``3 * min_feature_map_edge``. An axis gets kernel 3 from the
    first step at which its spacing is within 2x of the finest, kernel 1 before. The bottleneck
    stage always uses kernel 3.

    Example: ``plan_topology((128, 128, 128)).strides`` ->
    ``((1,1,1), (2,2,2), (2,2,2), (2,2,2), (2,2,2), (2,2,2))``.
    """
    patch, spacing = _check_patch(patch_size, spacing)
    if min_feature_map_edge < 1 or max_stages < 2:
        raise ValueError(f"min_feature_map_edge must be >= 1 and max_stages >= 2, got "
                         f"{min_feature_map_edge}, {max_stages}")
    dim = len(patch)
    size = [float(n) for n in patch]
    current = list(spacing)
    kernel = [1] * dim
    strides: list[tuple[int, ...]] = [(1,) * dim]
    kernels: list[tuple[int, ...]] = []
    while len(strides) < max_stages:
        big_enough = [a for a in range(dim) if size[a] >= 2 * min_feature_map_edge]
        if not big_enough:
            break
        finest = min(current[a] for a in big_enough)
        axes = [a for a in big_enough if current[a] / finest < 2]
        # a single axis is only pooled while it stays >= 3x the minimum edge
        if len(axes) == 1 and size[axes[0]] < 3 * min_feature_map_edge:
            break
        if not axes:
            break
        finest_all = min(current)
        kernel = [3 if (k == 3 or current[a] / finest_all < 2) else 1 for a, k in enumerate(kernel)]
        kernels.append(tuple(kernel))
        strides.append(tuple(2 if a in axes else 1 for a in range(dim)))
        for a in axes:
            current[a] *= 2
            size[a] = math.ceil(size[a] / 2)
    if len(strides) < 2:
        raise ValueError(f"patch {patch} is too small for a U-Net: nnU-Net needs at least one axis "
                         f">= {2 * min_feature_map_edge} voxels to downsample")
    kernels.append((3,) * dim)        # bottleneck
    features = tuple(min(MAX_FEATURES[dim], BASE_FEATURES * 2 ** i) for i in range(len(strides)))
    return Topology(patch, spacing, tuple(kernels), tuple(strides), features)


def deep_supervision_scales(patch_size, spacing=None) -> list[tuple[float, ...]]:
    """Resolution of each deep-supervision output relative to the input, full resolution first.

    One per decoder stage (n_stages - 1), as nnU-Net v2's ``_get_deep_supervision_scales``:
    the cumulative product of the strides, inverted, without the bottleneck's.
    """
    return plan_topology(patch_size, spacing).output_scales()


class NnUNet(PlainConvUNet):
    """``PlainConvUNet`` that remembers its planned topology and checks its input size.

    The state dict is DNA's own (no extra keys), so nnU-Net v2 ``network_weights`` load as is.
    """

    def __init__(self, in_channels: int, num_classes: int, topology: Topology,
                 deep_supervision: bool = True):
        super().__init__(
            input_channels=in_channels, num_classes=num_classes, **topology.dna_kwargs(),
            n_conv_per_stage=[CONVS_PER_STAGE] * topology.n_stages,
            n_conv_per_stage_decoder=[CONVS_PER_STAGE] * (topology.n_stages - 1),
            deep_supervision=deep_supervision,
        )
        self.topology = topology
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor):
        self.topology.check_input("nnunet", self.in_channels, x)
        return super().forward(x)


def plan_for_build(name: str, in_channels: int, num_classes: int, patch_size, spacing=None,
                   max_stages: int = MAX_STAGES) -> Topology:
    """Check a builder's arguments and plan the topology; ``ValueError`` naming the bad value
    (for a patch the strides do not divide: the size nnU-Net would pad it to)."""
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    topology = plan_topology(patch_size, spacing, max_stages=max_stages)
    if topology.padded(topology.patch_size) != topology.patch_size:
        raise ValueError(f"{name}: patch {topology.patch_size} is not divisible by the planned "
                         f"strides {topology.divisor}; use {topology.padded(topology.patch_size)}")
    return topology


def build(in_channels: int, num_classes: int, patch_size, spacing=None,
          deep_supervision: bool = True) -> NnUNet:
    """nnU-Net's network for ``patch_size`` at ``spacing`` (default 1 mm isotropic), initialised.

    Args:
        in_channels: input modalities (>= 1).
        num_classes: output channels including background (>= 2).
        patch_size: training patch, 2 or 3 ints; must be divisible by the planned strides.
        spacing: voxel spacing in mm per axis (only the ratios matter); default isotropic.
        deep_supervision: return the list of decoder outputs (full resolution first).

    Example: ``build(1, 14, (128, 128, 128))`` -> 31,205,254 parameters.
    """
    topology = plan_for_build("nnunet", in_channels, num_classes, patch_size, spacing)
    model = NnUNet(in_channels, num_classes, topology, deep_supervision=bool(deep_supervision))
    model.apply(PlainConvUNet.initialize)     # InitWeights_He(1e-2), as nnU-Net v2 does
    return model


def drop_unused_official_keys(state_dict: dict) -> dict:
    """Return ``state_dict`` without the keys in ``UNUSED_OFFICIAL_KEYS`` (none for nnU-Net)."""
    return {k: v for k, v in state_dict.items()
            if not any(k == u or k.startswith(u + ".") for u in UNUSED_OFFICIAL_KEYS)}
