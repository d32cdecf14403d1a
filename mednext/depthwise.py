"""The stride-1, "same"-padded depthwise convolution of MedNeXt blocks with its backward pass
written as forward convolutions, for channels-last tensors on the CPU.

The forward is torch's (oneDNN's) depthwise convolution. oneDNN's own backward kernels for it
are slow on channels-last 3D tensors: at 32 channels x 64^3, kernel 3, on one CPU thread of a
shared machine, about 0.21 s for the input gradient and 0.47 s for the weight gradient, against
0.05 s for the forward. Both gradients are forward convolutions themselves, which oneDNN runs fast:

- input gradient: the same depthwise convolution of the output gradient with the kernel flipped
  along every spatial axis (for an odd kernel and padding k//2 the adjoint of a correlation is
  the correlation with the flipped kernel): about 0.04 s;
- weight gradient: a depthwise convolution of the zero-padded input with the output gradient as
  its kernel (dw[c, k] = sum_s dy[c, s] * x_pad[c, s + k]), whose output is the k^d weight
  gradient itself; one call per sample and per slab of ``SLAB`` planes along the first spatial
  axis, summed: about 0.06 s. Thin slabs were the fastest (their data stays in cache) and keep
  each float32 dot product short, so the result is as accurate as oneDNN's (about 2e-6 of the
  largest entry at 64^3, against 3e-6 for oneDNN; whole-volume slabs: 1.5e-5).

Results equal torch's to float rounding (tests/test_mednext_layout.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layout import channels_last

__all__ = ["depthwise_conv_same", "SLAB"]

SLAB = 2    # planes per weight-gradient convolution


def _conv(x: torch.Tensor):
    return F.conv3d if x.dim() == 5 else F.conv2d


def _weight_grad(x: torch.Tensor, dy: torch.Tensor, pad: int) -> torch.Tensor:
    conv, channels = _conv(x), x.shape[1]
    x_pad = F.pad(x, (pad,) * (2 * (x.dim() - 2)))
    grad = None
    for n in range(x.shape[0]):
        for start in range(0, x.shape[2], SLAB):
            stop = min(start + SLAB, x.shape[2])
            kernel = dy[n, :, start:stop].unsqueeze(1)                  # (C, 1, planes, ...)
            part = conv(x_pad[n:n + 1, :, start:stop + 2 * pad], kernel, groups=channels)
            grad = part if grad is None else grad + part
    return grad.reshape(channels, 1, *grad.shape[2:])


class _DepthwiseConvSame(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, pad: int):
        ctx.save_for_backward(x, weight)
        ctx.pad, ctx.has_bias = pad, bias is not None
        return _conv(x)(x, weight, bias, padding=pad, groups=x.shape[1])

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dy = channels_last(dy)
        dx = dw = db = None
        spatial = tuple(range(2, x.dim()))
        # under autocast the forward ran in a lower precision than x and weight: so does this
        if ctx.needs_input_grad[0]:
            dx = _conv(x)(dy, weight.flip(spatial).to(dy.dtype), None, padding=ctx.pad,
                          groups=x.shape[1]).to(x.dtype)
        if ctx.needs_input_grad[1]:
            dw = _weight_grad(x.to(dy.dtype), dy, ctx.pad).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum((0,) + spatial, dtype=weight.dtype)
        return dx, dw, db, None


def depthwise_conv_same(x: torch.Tensor, conv: torch.nn.Module) -> torch.Tensor:
    """``conv(x)`` for a depthwise, stride-1, padding k//2 convolution module with an odd kernel
    (MedNeXt's ``conv1``), x channels-last; backward as in the module docstring."""
    k = conv.kernel_size[0]
    if (conv.transposed or conv.padding_mode != "zeros" or conv.groups != conv.in_channels
            or conv.out_channels != conv.in_channels or k % 2 == 0
            or any(s != 1 for s in conv.stride) or any(d != 1 for d in conv.dilation)
            or any(q != k for q in conv.kernel_size) or any(p != k // 2 for p in conv.padding)):
        raise ValueError(f"depthwise_conv_same needs a depthwise, stride-1, zero-padded 'same' "
                         f"convolution with an odd kernel equal along every axis, got {conv}")
    return _DepthwiseConvSame.apply(channels_last(x), conv.weight, conv.bias, k // 2)
