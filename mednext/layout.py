"""Memory layouts of the MedNeXt forward pass, and the kernels of its channels-last path.

The network computes the same function in two layouts (``MedNeXt(layout=...)``):

- ``"channels_first"``: every layer as the official code runs it, on contiguous (N, C, *spatial)
  tensors; bit-exact with the official implementation.
- ``"channels_last"``: activations are kept channels-last in memory (``torch.channels_last_3d`` /
  ``torch.channels_last``; the logical shape stays (N, C, *spatial)) from the stem to the heads.
  The depthwise convolutions run on that layout, where oneDNN's CPU forward kernels are 2-8x
  faster than on the contiguous layout (the blocks' stride-1 ones with a backward made of forward
  convolutions, :mod:`mednext.depthwise`); every 1x1 convolution (stem, expansion, compression,
  heads) becomes one matrix product over the channel axis (``F.linear`` with the convolution
  weight viewed as a matrix); the norm (an instance norm written for this layout, below) and GELU
  act on the same memory. Only the input and the outputs are converted. Parameters, their names
  and shapes are unchanged; outputs differ from the official ones by float rounding only
  (summation order).
- ``"auto"`` (the default): resolved at every forward by the input's device, as measured (README,
  ``make bench-fastpath``): channels-last on the CPU; channels-first elsewhere, because on CUDA
  channels-last 3D is known to be slower for instance-normalised networks and has not been
  measured here.

Differences from the official code: none in the maths; the official code has no channels-last path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LAYOUTS", "check_layout", "channels_last", "resolve_layout", "pointwise",
           "norm_channels_last", "memory_format"]

LAYOUTS = ("auto", "channels_first", "channels_last")
FAST_DEVICES = ("cpu",)   # where "auto" picks channels-last (measured; see the module docstring)


def check_layout(value) -> str:
    if value not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {value!r}")
    return value


def resolve_layout(layout: str, device: torch.device) -> str:
    """``"auto"`` -> the measured choice for ``device``; the two explicit layouts unchanged."""
    if layout != "auto":
        return layout
    return "channels_last" if device.type in FAST_DEVICES else "channels_first"


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The channels-last memory format for a 5-D (3D) or 4-D (2D) tensor."""
    return torch.channels_last_3d if x.dim() == 5 else torch.channels_last


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory (a no-op when it already is)."""
    return x.contiguous(memory_format=memory_format(x))


def _channels_to_end(x: torch.Tensor) -> torch.Tensor:
    # a view, not a copy, for a channels-last tensor: (N, C, *S) -> (N, *S, C)
    return x.movedim(1, -1)


def _channels_to_front(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(-1, 1)


def pointwise(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """A kernel-1, stride-1 convolution or transposed convolution ``conv`` applied to ``x`` as one
    matrix product over the channel axis; returns a channels-last tensor.

    The weight is viewed, not copied: (out, in, 1, ...) for a convolution, (in, out, 1, ...)
    (transposed) for a transposed convolution, as both are laid out in the state dict.
    """
    w = conv.weight.flatten(1)
    if conv.transposed:
        w = w.t()
    return _channels_to_front(F.linear(_channels_to_end(x), w, conv.bias))


class _InstanceNormChannelsLast(torch.autograd.Function):
    """Per-(sample, channel) normalisation over the spatial axis of an (N, S, C) tensor with a
    per-channel affine: GroupNorm with one group per channel, computed in channels-last memory.

    torch's own channels-last GroupNorm (and BatchNorm) CPU kernels accumulate the statistics
    naively in float32: at 64^3 voxels their outputs are off by 1e-4 to 5e-4, too far from the
    channels-first result. Here the mean is a (cascaded) sum and the variance is taken about it,
    so the error is that of the channels-first kernel (about 1e-6); the backward is written out
    to keep it to five passes over the tensor.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        count = x.shape[1]
        centred = x - x.sum(1, keepdim=True) / count
        var = centred.square().sum(1, keepdim=True) / count
        rstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(centred, rstd, weight)
        return torch.addcmul(bias, centred, rstd * weight)

    @staticmethod
    def backward(ctx, dy):
        centred, rstd, weight = ctx.saved_tensors
        count = centred.shape[1]
        dy = dy.contiguous()
        sum_dy = dy.sum(1, keepdim=True)
        sum_dy_xhat = (dy * centred).sum(1, keepdim=True) * rstd
        a = rstd * weight
        # dx = a * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = centred * rstd
        dx = torch.addcmul(-a * sum_dy / count, centred, -a * rstd * sum_dy_xhat / count)
        dx.addcmul_(dy, a)
        return dx, sum_dy_xhat.sum((0, 1)), sum_dy.sum((0, 1)), None


def norm_channels_last(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block norm on a channels-last tensor; returns a channels-last tensor.

    GroupNorm with one group per channel (MedNeXt's) -> :class:`_InstanceNormChannelsLast`; the
    channels-first LayerNorm is, in this layout, a plain layer norm over the last memory axis.
    """
    x = channels_last(x)
    last = _channels_to_end(x)
    if isinstance(norm, nn.GroupNorm):
        if norm.num_groups != norm.num_channels:
            raise ValueError("the channels-last path supports GroupNorm with one group per "
                             f"channel only, got {norm.num_groups} groups for {norm.num_channels}")
        flat = last.reshape(x.shape[0], -1, x.shape[1])
        if flat.shape[0] * flat.shape[1] == 1:     # refused as F.group_norm refuses it
            raise ValueError(f"Expected more than 1 value per channel when training, got input "
                             f"size {list(x.shape)}")
        # statistics in float32 at least, as autocast runs group_norm; the output dtype is the
        # one torch's group norm gives (float32 under autocast, the input's otherwise)
        dtype = torch.promote_types(x.dtype, norm.weight.dtype)
        y = _InstanceNormChannelsLast.apply(flat.to(torch.promote_types(dtype, torch.float32)),
                                            norm.weight, norm.bias, norm.eps)
        return _channels_to_front(y.to(dtype).view(last.shape))
    y = F.layer_norm(last, (x.shape[1],), norm.weight, norm.bias, norm.eps)
    return _channels_to_front(y)
