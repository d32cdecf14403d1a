"""MedNeXt v1 as a torch-only library (Roy et al., "MedNeXt: Transformer-driven Scaling of
ConvNets for Medical Image Segmentation", MICCAI 2023; official code MIC-DKFZ/MedNeXt, Apache-2.0).

Public API:
- ``MedNeXt``: the network (2D/3D, any odd kernel, separate encoder/decoder kernels, optional GRN,
  deep supervision switchable through ``do_ds``, activation checkpointing through
  ``checkpointing``, memory layout through ``layout`` - channels-last on the CPU by default,
  ``LAYOUTS`` - the "standard resampling" ablation); official state-dict layout.
- ``create_mednext(size, kernel_size, in_channels, num_classes, deep_supervision=True, dim="3d",
  **overrides)``: the published S/B/M/L configurations (``VARIANTS``, with provenance).
- ``upkern(source, target)``: UpKern initialisation of a large-kernel network.
- ``load_checkpoint(model, path_or_state_dict)``: official, nnU-Net v2 and MONAI weights.
- ``read_checkpoint(path)``: the project's one checkpoint reader (``torch.load(weights_only=True)``,
  numpy log scalars allowed, errors that name the file and what is wrong).
"""
from .blocks import (MedNeXtBlock, MedNeXtDownBlock, MedNeXtUpBlock, OutBlock, StridedConvDown,
                     TransposedConvUp)
from .checkpoint import load_checkpoint, read_checkpoint, read_state_dict
from .layout import LAYOUTS
from .network import DIVISOR, RESAMPLING, MedNeXt
from .upkern import resample_kernel, upkern
from .variants import (PROVENANCE, REFERENCE_PARAMS, VARIANTS, Variant, create_mednext,
                       get_variant, reference_parameter_count)

__all__ = [
    "DIVISOR", "LAYOUTS", "MedNeXt", "MedNeXtBlock", "MedNeXtDownBlock", "MedNeXtUpBlock",
    "OutBlock", "PROVENANCE", "REFERENCE_PARAMS", "RESAMPLING", "StridedConvDown", "TransposedConvUp",
    "VARIANTS", "Variant", "create_mednext", "get_variant", "load_checkpoint", "read_checkpoint",
    "read_state_dict", "reference_parameter_count", "resample_kernel", "upkern",
]
