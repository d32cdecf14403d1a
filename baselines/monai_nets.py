"""UNETR and SwinUNETR, the two baselines taken from MONAI, configured as in the MedNeXt paper.

* UNETR: Hatamizadeh et al., "UNETR: Transformers for 3D Medical Image Segmentation", WACV 2022.
* SwinUNETR: Hatamizadeh et al., "Swin UNETR: Swin Transformers for Semantic Segmentation of Brain
  Tumors in MRI Images", BrainLes 2021 (arXiv 2201.01266).

Code: Project-MONAI/MONAI, PyPI ``monai`` 1.6.1 (read against the 1.5.0 tag), Apache-2.0; the
MedNeXt repository (MIC-DKFZ/MedNeXt 0b78ed8) configured them as below (specs/baselines.md 4, 5, 10).
The networks are MONAI's classes, subclassed only to check the input size in ``forward`` with a
``ValueError`` naming the size needed; state-dict keys are MONAI's own.

Configuration (paper / MedNeXt trainers):
* ``unetr``: ``UNETR(img_size=patch, feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12,
  proj_type="perceptron", norm_name="instance", conv_block=True, res_block=True, dropout 0)``.
  Fixed size: the learned position embedding has one entry per 16^3 patch of ``img_size``.
* ``swin-unetr``: ``SwinUNETR(feature_size=48, window_size=7, depths (2,2,2,2), heads (3,6,12,24),
  use_checkpoint=False, use_v2=False)``; any size divisible by 32; ``img_size`` is never passed
  (removed in MONAI 1.5).

Differences from the runs in the paper:
* SwinUNETR PatchMerging: up to MONAI 1.4 (and in MedNeXt's vendored copy) the default
  ``downsample="merging"`` concatenated duplicated sub-voxels, using only 6 of the 8 neighbours
  of each 2x2x2 cell; MONAI >= 1.5 (used here) concatenates all 8 (MONAI PR #8285, issue #8284).
  Parameter shapes and keys are unchanged, so old checkpoints still load, but the function of the
  patch-merging layers differs: a benign architectural deviation, recorded here and in the registry.
* UNETR: MONAI 1.6.1's ``TransformerBlock`` always creates a LayerNorm for optional
  cross-attention (``norm_cross_attn``) and uses it only when cross-attention is on (it is off in
  UNETR), so its 12 x 1,536 = 18,432 parameters never receive a gradient (DDP would need
  ``find_unused_parameters``; the UNETR the MedNeXt paper trained had no such tensors). They are
  removed here: 93,011,374 parameters instead of MONAI 1.6.1's 93,029,806 (1 -> 14, 128^3), and
  ``drop_unused_official_keys`` drops ``vit.blocks.<i>.norm_cross_attn.*`` from MONAI state dicts.
"""
from __future__ import annotations

import math

import torch
from monai.networks.nets import UNETR as _MonaiUNETR
from monai.networks.nets import SwinUNETR as _MonaiSwinUNETR

UNETR_DIVISOR = 16
UNETR_FIXED_SIZE = True
UNETR_REFERENCE_PARAMS = {"in_channels": 1, "num_classes": 14, "patch_size": (128, 128, 128),
                          "params": 93_011_374, "library_params": 93_029_806,
                          "library_unused_params": 18_432}
SWIN_UNETR_DIVISOR = 32
SWIN_UNETR_FIXED_SIZE = False
SWIN_UNETR_REFERENCE_PARAMS = {"in_channels": 1, "num_classes": 14, "patch_size": (128, 128, 128),
                               "params": 62_187_296}
# Key patterns of library tensors that forward never uses; "*" stands for a block index.
UNUSED_OFFICIAL_KEYS: tuple[str, ...] = (
    # UNETR (MONAI 1.6.1): LayerNorm of the disabled cross-attention in each of the 12 ViT blocks.
    "vit.blocks.*.norm_cross_attn",
)


def _check_args(name: str, in_channels, num_classes, patch_size, divisor: int) -> tuple[int, ...]:
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"{name}: in_channels must be a positive int, got {in_channels!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{name}: num_classes must be an int >= 2, got {num_classes!r}")
    patch = tuple(patch_size)
    if len(patch) != 3 or not all(isinstance(n, int) and n > 0 for n in patch):
        raise ValueError(f"{name}: patch_size must be 3 positive ints, got {patch_size!r}")
    if any(n % divisor for n in patch):
        needed = tuple(int(math.ceil(n / divisor) * divisor) for n in patch)
        raise ValueError(f"{name}: patch {patch} must be a multiple of {divisor} per axis, "
                         f"e.g. {needed}")
    return patch


class UNETR(_MonaiUNETR):
    """MONAI UNETR that raises ``ValueError`` unless the input equals the size it was built for."""

    def __init__(self, in_channels: int, out_channels: int, img_size, **kwargs):
        super().__init__(in_channels=in_channels, out_channels=out_channels, img_size=img_size,
                         **kwargs)
        self.img_size = tuple(img_size)
        for block in self.vit.blocks:           # unused without cross-attention (docstring)
            if not block.with_cross_attention and hasattr(block, "norm_cross_attn"):
                del block.norm_cross_attn

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        if tuple(x_in.shape[2:]) != self.img_size:
            raise ValueError(f"unetr: input size {tuple(x_in.shape[2:])} must equal the size the "
                             f"model was built for, {self.img_size} (learned position embedding)")
        return super().forward(x_in)


class SwinUNETR(_MonaiSwinUNETR):
    """MONAI SwinUNETR whose size check names the size needed (multiple of 32 per axis)."""

    def _check_input_size(self, spatial_shape):
        shape = tuple(int(n) for n in spatial_shape)
        if any(n % SWIN_UNETR_DIVISOR for n in shape):
            needed = tuple(int(math.ceil(n / SWIN_UNETR_DIVISOR) * SWIN_UNETR_DIVISOR)
                           for n in shape)
            raise ValueError(f"swin-unetr: input size {shape} must be a multiple of "
                             f"{SWIN_UNETR_DIVISOR} per axis, e.g. {needed}")


def build_unetr(in_channels: int, num_classes: int, patch_size) -> UNETR:
    """UNETR as the MedNeXt paper trained it, for inputs of exactly ``patch_size``.

    Example: ``build_unetr(1, 14, (128, 128, 128))`` -> 93,029,806 parameters.
    """
    patch = _check_args("unetr", in_channels, num_classes, patch_size, UNETR_DIVISOR)
    return UNETR(in_channels=in_channels, out_channels=num_classes, img_size=patch,
                 feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12,
                 proj_type="perceptron", norm_name="instance", conv_block=True, res_block=True,
                 dropout_rate=0.0, spatial_dims=3)


def build_swin_unetr(in_channels: int, num_classes: int, patch_size) -> SwinUNETR:
    """SwinUNETR (feature size 48) as the MedNeXt paper trained it; ``patch_size`` only validated.

    Example: ``build_swin_unetr(1, 14, (128, 128, 128))`` -> 62,187,296 parameters.
    """
    _check_args("swin-unetr", in_channels, num_classes, patch_size, SWIN_UNETR_DIVISOR)
    return SwinUNETR(in_channels=in_channels, out_channels=num_classes, feature_size=48,
                     depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), window_size=7,
                     norm_name="instance", drop_rate=0.0, attn_drop_rate=0.0,
                     dropout_path_rate=0.0, use_checkpoint=False, spatial_dims=3, use_v2=False)


def _unused(key: str) -> bool:
    parts = key.split(".")
    for pattern in UNUSED_OFFICIAL_KEYS:
        want = pattern.split(".")
        if len(parts) > len(want) and all(w in ("*", p) for w, p in zip(want, parts)):
            return True
    return False


def drop_unused_official_keys(state_dict: dict) -> dict:
    """Return ``state_dict`` without the tensors matched by ``UNUSED_OFFICIAL_KEYS``."""
    return {k: v for k, v in state_dict.items() if not _unused(k)}
