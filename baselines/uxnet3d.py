"""3D UX-Net: large-kernel depthwise-convolution encoder with a UNETR-style decoder.

Paper: H. H. Lee, S. Bao, Y. Huo, B. A. Landman, "3D UX-Net: A Large Kernel Volumetric ConvNet
Modernizing Hierarchical Transformer for Medical Image Segmentation", ICLR 2023.
Official code: https://github.com/MASILab/3DUX-Net, commit 14ea46b (2023-06-01),
``networks/UXNet_3D/{uxnet_encoder,network_backbone}.py``; the README says MIT but the repository
has no LICENSE file, so nothing is copied: the encoder is written here from specs/baselines.md
section 9 and the decoder uses MONAI's ``UnetrBasicBlock``/``UnetrUpBlock``/``UnetOutBlock`` exactly
as the official code does. Module names and tensor shapes follow the official ``UXNET`` class
(``uxnet_3d.downsample_layers.*``, ``uxnet_3d.stages.*``, ``uxnet_3d.norm{0..3}``, ``encoder1..5``,
``decoder5..1``, ``out``), so its state dicts load.

Configuration (``build``, = MedNeXt's ``nnUNetTrainerV2_3DUXNet``): widths 48, 96, 192, 384,
depths 2,2,2,2, bottleneck 768, drop path 0, layer scale 1e-6, instance norm, residual blocks;
53,006,510 parameters for 1 -> 14 channels at any input size. Input edges must be multiples of 16
(stem stride 2 and three stride-2 downsamplings), any size otherwise. Initialisation: PyTorch and
MONAI defaults, as the official code (its ``_init_weights`` call is commented out).

Deliberate differences from the official code:
- the output block reads ``feat_size[0]`` channels (official: hard-wired 48, equal in this
  configuration);
- the channels-first LayerNorm uses ``F.layer_norm`` on channels-last views instead of spelling
  out mean/variance (same statistics: biased variance, eps 1e-6 inside the square root);
- a wrong input size raises ``ValueError`` naming the divisor (official: a shape error in a
  decoder concatenation). MedNeXt's wrapper declared a divisor of 32; 16 is what the network needs;
- the unused ``conv_block`` argument and the commented-out projection head are not reproduced;
  DropPath comes from MONAI instead of timm (same definition; the rate is 0 here anyway).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from monai.networks.layers import DropPath
from torch import nn

DIVISOR = 16
FIXED_SIZE = False
REFERENCE_PARAMS = {"in_channels": 1, "num_classes": 14, "patch_size": (128, 128, 128),
                    "params": 53_006_510}
# The official UXNET creates no tensor that its forward leaves unused (its projection head is
# commented out), so an official state dict loads unchanged.
UNUSED_OFFICIAL_KEYS: tuple[str, ...] = ()


class LayerNorm(nn.Module):
    """LayerNorm over channels, for channels-last (..., C) or channels-first (N, C, ...) tensors."""

    def __init__(self, channels: int, eps: float = 1e-6, channels_first: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps, self.channels_first = eps, channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:
            x = x.movedim(1, -1)
        x = F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1) if self.channels_first else x


class UXBlock(nn.Module):
    """Depthwise 7^3 -> LN -> grouped 1^3 C->4C -> GELU -> grouped 4C->C -> layer scale -> residual.

    The 1x1x1 convolutions have groups = C (each channel expands to its own 4 channels), as in the
    official code; a dense pointwise MLP would be a different network."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv3d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim)
        self.pwconv1 = nn.Conv3d(dim, 4 * dim, kernel_size=1, groups=dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv3d(4 * dim, dim, kernel_size=1, groups=dim)
        self.gamma = (nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
                      if layer_scale_init_value > 0 else None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).movedim(1, -1)).movedim(-1, 1)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1, 1)
        return x + self.drop_path(y)


class UXNetEncoder(nn.Module):
    """Official ``uxnet_conv``: stem + 3 downsamplings, 4 stages, a LayerNorm on each stage output."""

    def __init__(self, in_channels: int, depths: Sequence[int], dims: Sequence[int],
                 drop_path_rate: float, layer_scale_init_value: float):
        super().__init__()
        stem = nn.Sequential(nn.Conv3d(in_channels, dims[0], kernel_size=7, stride=2, padding=3),
                             LayerNorm(dims[0], channels_first=True))
        self.downsample_layers = nn.ModuleList(
            [stem] + [nn.Sequential(LayerNorm(dims[i], channels_first=True),
                                    nn.Conv3d(dims[i], dims[i + 1], kernel_size=2, stride=2))
                      for i in range(len(dims) - 1)])
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.stages = nn.ModuleList(
            nn.Sequential(*[UXBlock(dims[i], rates[starts[i] + j], layer_scale_init_value)
                            for j in range(depths[i])]) for i in range(len(dims)))
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", LayerNorm(d, channels_first=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, (down, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            x = stage(down(x))
            outs.append(getattr(self, f"norm{i}")(x))
        return outs


class UXNET(nn.Module):
    """3D UX-Net for any input whose edges are multiples of 16; returns logits.

    Args:
        in_channels: input modalities. num_classes: output channels (incl. background).
        depths: blocks per encoder stage (4 stages). feat_size: widths of the 4 stages.
        hidden_size: width of the bottleneck block on the last stage.
        drop_path_rate: stochastic depth maximum (linear from 0). layer_scale_init_value: initial
        layer-scale gamma (0 disables layer scale). norm_name: MONAI norm of the decoder blocks.

    Example:
        >>> net = UXNET(in_channels=4, num_classes=4)
        >>> net(torch.zeros(1, 4, 48, 32, 32)).shape
        torch.Size([1, 4, 48, 32, 32])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 13,
                 depths: Sequence[int] = (2, 2, 2, 2), feat_size: Sequence[int] = (48, 96, 192, 384),
                 hidden_size: int = 768, drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6, norm_name: str | tuple = "instance"):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes),
                        ("hidden_size", hidden_size)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        depths, feat_size = tuple(depths), tuple(feat_size)
        if len(depths) != 4 or any(not isinstance(d, int) or d < 1 for d in depths):
            raise ValueError(f"depths must be 4 positive ints, got {depths!r}")
        if len(feat_size) != 4 or any(not isinstance(f, int) or f < 1 for f in feat_size):
            raise ValueError(f"feat_size must be 4 positive ints, got {feat_size!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        if layer_scale_init_value < 0:
            raise ValueError(f"layer_scale_init_value must be >= 0, got {layer_scale_init_value!r}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.uxnet_3d = UXNetEncoder(in_channels, depths, feat_size, drop_path_rate,
                                     layer_scale_init_value)
        widths = (in_channels,) + feat_size           # encoder1 runs on the raw input
        basic = dict(spatial_dims=3, kernel_size=3, stride=1, norm_name=norm_name, res_block=True)
        up = dict(spatial_dims=3, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name,
                  res_block=True)
        for i in range(4):
            self.add_module(f"encoder{i + 1}", UnetrBasicBlock(in_channels=widths[i],
                                                               out_channels=feat_size[i], **basic))
        self.encoder5 = UnetrBasicBlock(in_channels=feat_size[3], out_channels=hidden_size, **basic)
        wider = (hidden_size,) + feat_size[:0:-1]       # 768, 384, 192, 96 into decoder5..2
        for i, name in enumerate(("decoder5", "decoder4", "decoder3", "decoder2")):
            self.add_module(name, UnetrUpBlock(in_channels=wider[i], out_channels=feat_size[3 - i], **up))
        self.decoder1 = UnetrBasicBlock(in_channels=feat_size[0], out_channels=feat_size[0], **basic)
        self.out = UnetOutBlock(spatial_dims=3, in_channels=feat_size[0], out_channels=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels or any(s % DIVISOR for s in x.shape[2:]):
            raise ValueError(f"3D UX-Net needs input (N, {self.in_channels}, D, H, W) with D, H, W "
                             f"multiples of {DIVISOR}; got {tuple(x.shape)}")
        s1, s2, s3, s4 = self.uxnet_3d(x)
        enc1 = self.encoder1(x)
        enc2, enc3, enc4 = self.encoder2(s1), self.encoder3(s2), self.encoder4(s3)
        y = self.decoder5(self.encoder5(s4), enc4)
        y = self.decoder2(self.decoder3(self.decoder4(y, enc3), enc2), enc1)
        return self.out(self.decoder1(y))


def build(in_channels: int, num_classes: int, patch_size: tuple[int, ...]) -> UXNET:
    """MedNeXt's 3D UX-Net configuration; ``patch_size`` is only checked (the net is size-free)."""
    patch_size = tuple(patch_size)
    if len(patch_size) != 3 or any(not isinstance(p, int) or p < DIVISOR or p % DIVISOR for p in patch_size):
        raise ValueError(f"3D UX-Net needs a 3D patch_size with every edge a positive multiple of "
                         f"{DIVISOR}, got {patch_size!r}")
    return UXNET(in_channels=in_channels, num_classes=num_classes, depths=(2, 2, 2, 2),
                 feat_size=(48, 96, 192, 384), hidden_size=768, drop_path_rate=0.0,
                 layer_scale_init_value=1e-6)


def drop_unused_official_keys(state_dict: dict) -> dict:
    """A copy of an official 3D UX-Net state dict without UNUSED_OFFICIAL_KEYS (none: unchanged)."""
    return {k: v for k, v in state_dict.items()
            if not any(k.startswith(prefix) for prefix in UNUSED_OFFICIAL_KEYS)}
