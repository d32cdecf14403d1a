"""MedNeXt v1 building blocks: the MedNeXt block, its residual inverted-bottleneck down and up
variants, the segmentation head, and the plain resampling layers of the "standard up and
downsampling" ablation.

Follows Roy et al., "MedNeXt", MICCAI 2023, Sect. 2.1-2.2, and the layer order, attribute names and
tensor layouts of the official v1 blocks (MIC-DKFZ/MedNeXt, ``nnunet_mednext/network_architecture/
mednextv1/blocks.py``), so that official state dicts load unchanged. Written from the project's
specification (specs/mednext.md a.2-a.5), not copied.

Differences from the original:
- the channels-first LayerNorm (``norm_type="layer"``) works in 2D too (the original broadcasts its
  affine parameters for 5-D tensors only, spec a.11.2); its parameters and maths are unchanged;
- the grouped-depthwise ``n_groups`` option of the original block is not offered;
- every block also computes its function on channels-last tensors (``forward_channels_last``,
  the network's ``layout="channels_last"``, :mod:`mednext.layout`), with the same parameters;
- ``StridedConvDown`` / ``TransposedConvUp`` are this project's reading of the paper's ablation
  "standard up and downsampling" (Table 1 right); the official repository ships no such layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import depthwise_conv_same
from .layout import channels_last, norm_channels_last, pointwise

__all__ = [
    "ChannelsFirstLayerNorm",
    "MedNeXtBlock",
    "MedNeXtDownBlock",
    "MedNeXtUpBlock",
    "OutBlock",
    "StridedConvDown",
    "TransposedConvUp",
    "conv_class",
]

DIMS = {"2d": 2, "3d": 3}
NORM_TYPES = ("group", "layer")


def conv_class(dim: str, transposed: bool = False) -> type[nn.Module]:
    """The torch convolution class for ``dim`` ("2d" | "3d")."""
    if dim == "2d":
        return nn.ConvTranspose2d if transposed else nn.Conv2d
    if dim == "3d":
        return nn.ConvTranspose3d if transposed else nn.Conv3d
    raise ValueError(f"dim must be '2d' or '3d', got {dim!r}")


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis only, per voxel, for (N, C, *spatial) tensors.

    Biased variance, ``eps`` inside the square root, affine ``weight`` (init 1) and ``bias``
    (init 0) of shape (C,), as the official ``LayerNorm(data_format='channels_first')``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        # view instead of a fixed [:, None, None, None] so that 2D works as well as 3D
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.weight.view(shape) * x + self.bias.view(shape)


def _norm(norm_type: str, channels: int) -> nn.Module:
    if norm_type == "group":
        # one group per channel: instance-norm-like statistics with a per-channel affine
        return nn.GroupNorm(num_groups=channels, num_channels=channels)
    if norm_type == "layer":
        return ChannelsFirstLayerNorm(channels)
    raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")


class MedNeXtBlock(nn.Module):
    """Depthwise k^d conv -> norm -> 1x1 expansion (x exp_r) -> GELU -> [GRN] -> 1x1 compression
    -> + identity (if ``do_res``).

    Args:
        in_channels: channels entering the block (the depthwise conv keeps this width).
        out_channels: channels leaving the 1x1 compression.
        exp_r: expansion ratio of the inverted bottleneck.
        kernel_size: odd depthwise kernel size.
        do_res: add the identity residual (needs in_channels == out_channels).
        norm_type: "group" (GroupNorm with one group per channel) or "layer" (channels-first LN).
        dim: "2d" or "3d".
        grn: Global Response Normalisation on the expanded tensor (zero-initialised, identity at
            init; parameters ``grn_gamma``/``grn_beta`` of shape (1, exp_r*in_channels, 1, ...)).
    """

    RESOLUTION_KEPT = True   # conv1 is a stride-1 "same" convolution (not in the down/up blocks)

    def __init__(self, in_channels: int, out_channels: int, exp_r: int = 4, kernel_size: int = 7,
                 do_res: bool = True, norm_type: str = "group", dim: str = "3d", grn: bool = False):
        super().__init__()
        if do_res and in_channels != out_channels:
            raise ValueError(f"identity residual needs in_channels == out_channels, "
                             f"got {in_channels} -> {out_channels}")
        self.do_res = do_res
        self.dim = dim
        self.use_grn = grn
        conv = conv_class(dim)
        hidden = exp_r * in_channels
        self.conv1 = self._depthwise(in_channels, kernel_size)
        self.norm = _norm(norm_type, in_channels)
        self.conv2 = conv(in_channels, hidden, kernel_size=1)
        self.act = nn.GELU()  # exact erf form, as the original
        self.conv3 = conv(hidden, out_channels, kernel_size=1)
        if grn:
            shape = (1, hidden) + (1,) * DIMS[dim]
            # beta registered first: same state-dict order as the original
            self.grn_beta = nn.Parameter(torch.zeros(shape))
            self.grn_gamma = nn.Parameter(torch.zeros(shape))

    def _depthwise(self, channels: int, kernel_size: int) -> nn.Module:
        return conv_class(self.dim)(channels, channels, kernel_size=kernel_size, stride=1,
                                    padding=kernel_size // 2, groups=channels)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """The six-step body without any residual."""
        return self.conv3(self._grn(self.act(self.conv2(self.norm(self.conv1(x))))))

    def body_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """``body`` on a channels-last tensor, 1x1 convolutions as matrix products
        (:mod:`mednext.layout`); same parameters, same function."""
        x = self.act(pointwise(norm_channels_last(self.norm, self._conv1_channels_last(x)),
                               self.conv2))
        return pointwise(self._grn(x), self.conv3)

    def _conv1_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        # the resampling blocks' strided / transposed conv1 keeps torch's own backward
        return depthwise_conv_same(x, self.conv1) if self.RESOLUTION_KEPT else self.conv1(x)

    def _grn(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_grn:
            return x
        spatial = tuple(range(2, x.dim()))
        g = torch.linalg.vector_norm(x, ord=2, dim=spatial, keepdim=True)
        n = g / (g.mean(dim=1, keepdim=True) + 1e-6)
        return self.grn_gamma * (x * n) + self.grn_beta + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._combine(x, self.body(x))

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` for a channels-last input; the output is channels-last too."""
        return self._combine(x, self.body_channels_last(x))

    def _combine(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The block's output from its input and its body's output."""
        return x + out if self.do_res else out


class MedNeXtDownBlock(MedNeXtBlock):
    """2x downsampling MedNeXt block: the depthwise conv has stride 2, the compression doubles the
    width (C -> out_channels), and the optional residual is a stride-2 1x1 conv (``res_conv``)."""

    RESOLUTION_KEPT = False

    def __init__(self, in_channels: int, out_channels: int, exp_r: int = 4, kernel_size: int = 7,
                 do_res: bool = True, norm_type: str = "group", dim: str = "3d", grn: bool = False):
        super().__init__(in_channels, out_channels, exp_r, kernel_size, do_res=False,
                         norm_type=norm_type, dim=dim, grn=grn)
        self.resample_do_res = do_res
        if do_res:
            self.res_conv = conv_class(dim)(in_channels, out_channels, kernel_size=1, stride=2)

    def _depthwise(self, channels: int, kernel_size: int) -> nn.Module:
        return conv_class(self.dim)(channels, channels, kernel_size=kernel_size, stride=2,
                                    padding=kernel_size // 2, groups=channels)

    def _combine(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        # in the channels-last path too the stride-2 1x1 residual stays a convolution: oneDNN's
        # kernel is faster there than strided slicing followed by a matrix product
        return out + self.res_conv(x) if self.resample_do_res else out


class MedNeXtUpBlock(MedNeXtBlock):
    """2x upsampling MedNeXt block: stride-2 depthwise transposed conv (padding k//2, so an odd
    kernel gives 2n-1 voxels per axis), body, compression to out_channels, then ONE zero voxel
    padded at the low-index side of every spatial axis (-> 2n). The optional residual is a stride-2
    1x1 transposed conv (``res_conv``), padded the same way.

    The post-hoc pad (rather than ``output_padding=1``) is kept because it is what the official
    checkpoints were trained with: the first plane along each axis is exactly zero, and input voxel
    i of the residual lands at index 2i+1.
    """

    RESOLUTION_KEPT = False

    def __init__(self, in_channels: int, out_channels: int, exp_r: int = 4, kernel_size: int = 7,
                 do_res: bool = True, norm_type: str = "group", dim: str = "3d", grn: bool = False):
        super().__init__(in_channels, out_channels, exp_r, kernel_size, do_res=False,
                         norm_type=norm_type, dim=dim, grn=grn)
        self.resample_do_res = do_res
        self._pad = (1, 0) * DIMS[dim]
        if do_res:
            self.res_conv = conv_class(dim, transposed=True)(in_channels, out_channels,
                                                             kernel_size=1, stride=2)

    def _depthwise(self, channels: int, kernel_size: int) -> nn.Module:
        return conv_class(self.dim, transposed=True)(channels, channels, kernel_size=kernel_size,
                                                     stride=2, padding=kernel_size // 2,
                                                     groups=channels)

    def _combine(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        # pad(body) + pad(res) == pad(body + res) exactly (the padded voxels are 0 + 0): one pad
        if self.resample_do_res:
            out = out + self.res_conv(x)
        return F.pad(out, self._pad)


class OutBlock(nn.Module):
    """Segmentation head: a kernel-1 *transposed* conv (weight laid out (in, out, 1, ...)), as the
    original, so that official head weights load without transposition. No softmax."""

    def __init__(self, in_channels: int, n_classes: int, dim: str = "3d"):
        super().__init__()
        self.conv_out = conv_class(dim, transposed=True)(in_channels, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(x)

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(x, self.conv_out)


class StridedConvDown(nn.Module):
    """Plain 2x downsampling for the "standard resampling" ablation: one 2^d-kernel, stride-2 conv
    with bias, C -> out_channels (``conv``). No norm, activation or residual: every MedNeXt block
    that follows normalises right after its own depthwise conv."""

    def __init__(self, in_channels: int, out_channels: int, dim: str = "3d"):
        super().__init__()
        self.conv = conv_class(dim)(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        return channels_last(self.conv(x))


class TransposedConvUp(nn.Module):
    """Plain 2x upsampling for the "standard resampling" ablation: one 2^d-kernel, stride-2
    transposed conv with bias, C -> out_channels (``conv``); output is exactly 2n, no padding."""

    def __init__(self, in_channels: int, out_channels: int, dim: str = "3d"):
        super().__init__()
        self.conv = conv_class(dim, transposed=True)(in_channels, out_channels, kernel_size=2,
                                                     stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        return channels_last(self.conv(x))
