"""UpKern: initialise a large-kernel MedNeXt from a trained small-kernel MedNeXt of the same
configuration (Roy et al., MICCAI 2023, Sect. 2.3, Fig. 1b).

Follows the official ``upkern_load_weights`` / ``load_pretrained_weights_resampling``
(MIC-DKFZ/MedNeXt, ``nnunet_mednext/run/``; spec c): every tensor of equal shape is copied
unchanged; a weight whose first two dims agree but whose kernel dims differ (in MedNeXt: the
depthwise ``conv1`` kernels of every block, down block and up block) is resized with
``F.interpolate(mode="trilinear")`` (``"bilinear"`` for 2D kernels), ``align_corners=False``,
to the target's kernel size, without any rescaling afterwards. For 3 -> 5 this gives, per axis,
``[w0, .6 w0 + .4 w1, w1, .4 w1 + .6 w2, w2]``: corner and centre taps are kept exactly.

Differences from the original: it is strict. A target tensor missing from the source, a source
tensor the target does not have, or any other shape difference (channels, classes, heads, block
counts) raises ``ValueError`` naming the first such tensor with both shapes; the original warns
and leaves missing tensors randomly initialised, and ignores source-only tensors.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import read_state_dict

__all__ = ["upkern", "resample_kernel"]

_MODES = {2: "bilinear", 3: "trilinear"}


def resample_kernel(weight: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize the kernel dims of a (out, in, *kernel) weight to ``size``: trilinear (3 kernel
    dims) or bilinear (2), ``align_corners=False``; dims 0/1 are treated as batch/channel."""
    n = weight.dim() - 2
    if n not in _MODES or len(size) != n:
        raise ValueError(f"resample_kernel: need a 4-D or 5-D weight and {n} target sizes, got "
                         f"shape {tuple(weight.shape)} and size {tuple(size)}")
    # interpolate in float32 (CPU half-precision interpolation is not available everywhere)
    out = F.interpolate(weight.detach().float(), size=tuple(size), mode=_MODES[n],
                        align_corners=False)
    return out.to(weight.dtype)


def _transfer(key: str, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    if src.shape == tgt.shape:
        out = src.detach().clone()
    elif (src.dim() == tgt.dim() and src.dim() - 2 in _MODES and src.shape[:2] == tgt.shape[:2]):
        out = resample_kernel(src, tuple(tgt.shape[2:]))
    else:
        raise ValueError(f"upkern: incompatible tensor {key!r}: source shape {tuple(src.shape)}, "
                         f"target shape {tuple(tgt.shape)} (only kernel dims may differ)")
    return out.to(dtype=tgt.dtype, device=tgt.device)


def upkern(source, target):
    """Transfer the weights of ``source`` into ``target``, resampling differing kernels.

    Args:
        source: the trained small-kernel network: an ``nn.Module``, a state dict (also wrapped,
            e.g. ``{'network_weights': ...}``, or with a ``module.`` prefix), or a checkpoint path.
        target: the large-kernel network (``nn.Module``) or its state dict.

    Returns:
        ``target`` itself with the transferred weights loaded (strict) if it is a module, else a
        new ``OrderedDict`` with the target's keys in order.

    Raises:
        ValueError: naming the first tensor that is missing on one side or whose shape differs
            other than in its kernel dims, with both shapes.

    Example:
        >>> k3 = mednext.create_mednext("B", 3, 1, 14); k5 = mednext.create_mednext("B", 5, 1, 14)
        >>> k5 = mednext.upkern(k3, k5)
    """
    src = read_state_dict(source, "upkern source")
    if isinstance(target, nn.Module):
        tgt = target.state_dict()
    elif isinstance(target, Mapping):
        tgt = target
    else:
        raise TypeError(f"upkern target must be an nn.Module or a state dict, "
                        f"got {type(target).__name__}")
    new = OrderedDict()
    for key, t in tgt.items():
        if key not in src:
            raise ValueError(f"upkern: target tensor {key!r} (target shape {tuple(t.shape)}) is "
                             f"missing from the source")
        new[key] = _transfer(key, src[key], t)
    for key, s in src.items():
        if key not in tgt:
            raise ValueError(f"upkern: source tensor {key!r} (source shape {tuple(s.shape)}) has "
                             f"no counterpart in the target")
    if isinstance(target, nn.Module):
        target.load_state_dict(new, strict=True)
        return target
    return new
