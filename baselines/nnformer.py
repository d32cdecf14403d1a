"""nnFormer in the brain-tumour configuration, the variant the MedNeXt paper trained on every dataset.

Paper: H.-Y. Zhou et al., "nnFormer: Volumetric Medical Image Segmentation via a 3D Transformer",
arXiv 2109.03201 (2021) / IEEE TIP 32 (2023). Official code: github.com/282857341/nnFormer,
commit d48aaeb (2022-06-23), MIT, ``nnformer/network_architecture/nnFormer_tumor.py`` (vendored by
MedNeXt, trained there by ``nnUNetTrainerV2_nnFormerTumor`` with deep supervision off). Written
from specs/baselines.md section 8; module names and shapes follow the official class, so its state
dicts load (``model_down.*``, ``decoder.*``, ``final.0.*``, incl. ``relative_position_index``).

``build``: embedding 96, depths 2,2,2,2, heads 3,6,12,24, embedding patch 4, windows 4,4,8,4,
stochastic depth linear to 0.2 (encoder and decoder separately), crop = training patch
(128^3: 37,664,288 parameters for 1 -> 14 channels).

Replicated from the official code on purpose:
- the relative-position index multiplies the shifted offsets by (3W-1, 2W-1), not
  ((2W-1)^2, 2W-1): not one-to-one, several offsets share a bias entry and part of the table is
  never indexed (it gets a zero gradient);
- the window rule: a stage whose smallest token-grid edge is <= its window uses one window of
  that edge and no shift (128^3: encoder stages 3-4 and the first decoder stage attend globally);
  small crops (32^3) therefore behave as the official code would, no extra rule is needed;
- shift mask value -100; padded tokens of non-shifted windows unmasked; PyTorch default init with
  truncated-normal (std 0.02) bias tables.

Deliberate differences:
- no deep-supervision heads (off in this configuration); ``drop_unused_official_keys`` drops the
  ``final.1``/``final.2`` heads of a checkpoint trained with them;
- a wrong input size raises ``ValueError`` naming the built size (official: pads to the patch
  multiple, then fails an assertion);
- the shift mask is built once (non-persistent buffer: state-dict keys unchanged), not per forward;
- arguments ``img_size``/``in_channels`` (official ``crop_size``/``input_channels``); embedding
  patch fixed at 4 (the official two stride-p/2 convolutions give stride p only for p = 4); no
  ``conv_op`` or nnU-Net v1 ``SegmentationNetwork`` base; logits out, as the official forward;
- DropPath / trunc_normal_ from MONAI, not timm (same definitions); the official
  ``ContiguousGrad`` helper (gradient memory layout only) is omitted.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath, trunc_normal_
from torch import nn

DIVISOR = 32          # embedding patch 4 x three stride-2 merges
FIXED_SIZE = True     # token-grid resolutions are fixed at construction
REFERENCE_PARAMS = {"in_channels": 1, "num_classes": 14, "patch_size": (128, 128, 128),
                    "params": 37_664_288}
UNUSED_OFFICIAL_KEYS: tuple[str, ...] = (
    # Deep-supervision heads (96-ch head is final.0) of the official class built with
    # deep_supervision=True: absent from the DS-off tumour configuration trained here.
    "final.1.",
    "final.2.",
)
_TUMOUR = dict(embedding_dim=96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24),
               window_size=(4, 4, 8, 4), drop_path_rate=0.2)
# Embedding patch: two stride-p/2 convs give a total stride of p only for p = 4 (the tumour value).
_PATCH = (4, 4, 4)


def relative_position_index(window: int) -> torch.Tensor:
    """(W^3, W^3) index into the bias table, with the official (non-one-to-one) multipliers."""
    axis = torch.arange(window)
    coords = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij")).flatten(1)  # 3, W^3
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (3 * window - 1) + rel[..., 1] * (2 * window - 1) + rel[..., 2]


def _partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, S, H, W, C) -> (B * windows, w^3, C), windows in row-major grid order."""
    b, s, h, wd, c = x.shape
    x = x.view(b, s // w, w, h // w, w, wd // w, w, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(-1, w * w * w, c)


def _merge(windows: torch.Tensor, w: int, b: int, s: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of ``_partition``."""
    x = windows.view(b, s // w, h // w, wd // w, w, w, w, -1).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, s, h, wd, -1)


def _shift_mask(grid: Sequence[int], w: int, shift: int) -> torch.Tensor:
    """(windows, w^3, w^3) additive mask: -100 between tokens from different shifted regions."""
    regions = torch.zeros(1, *grid, 1)
    cuts = (slice(0, -w), slice(-w, -shift), slice(-shift, None))
    label = 0
    for a in cuts:
        for b in cuts:
            for c in cuts:
                regions[:, a, b, c, :] = label
                label += 1
    flat = _partition(regions, w).squeeze(-1)
    diff = flat[:, None, :] - flat[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Window self-attention with relative-position bias; ``skip_attention``: query comes from
    the caller unprojected and key/value are projected from the skip (official ``kv``)."""

    def __init__(self, dim: int, window: int, num_heads: int, skip_attention: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 3, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        if skip_attention:
            self.kv = nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, query: torch.Tensor | None = None):
        bw, n, c = x.shape

        def heads(t):
            return t.reshape(bw, n, self.num_heads, c // self.num_heads).transpose(1, 2)

        if query is None:
            q, k, v = self.qkv(x).reshape(bw, n, 3, c).unbind(2)
        else:
            k, v = self.kv(x).reshape(bw, n, 2, c).unbind(2)
            q = query
        q, k, v = heads(q), heads(k), heads(v)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None]).view(bw, -1, n, n)
        out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window block on a (B, S*H*W, C) token sequence of fixed resolution."""

    def __init__(self, dim: int, resolution: Sequence[int], num_heads: int, window: int,
                 shift: int, drop_path: float, skip_attention: bool = False):
        super().__init__()
        self.resolution = tuple(resolution)
        if min(self.resolution) <= window:       # official rule: one window, no shift
            window, shift = min(self.resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads, skip_attention)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        padded = [-(-r // window) * window for r in self.resolution]
        self.register_buffer("attn_mask", _shift_mask(padded, window, shift) if shift else None,
                             persistent=False)

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        b, c, w = x.shape[0], x.shape[-1], self.window
        x = x.view(b, *self.resolution, c)
        pads = [(-r) % w for r in self.resolution]
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift,) * 3, dims=(1, 2, 3))
        return _partition(x, w)

    def forward(self, x, skip=None, x_up=None):
        b, length, c = x.shape
        s, h, w = self.resolution
        shortcut = x
        if skip is None:
            out = self.attn(self._windows(self.norm1(x)), self.attn_mask)
        else:   # skip attention: x = x_up + skip; q = norm(x_up), k/v from norm(skip)
            out = self.attn(self._windows(self.norm1(skip)), self.attn_mask,
                            query=self._windows(self.norm1(x_up)))
        grid = [-(-r // self.window) * self.window for r in self.resolution]
        out = _merge(out, self.window, b, *grid)
        if self.shift:
            out = torch.roll(out, shifts=(self.shift,) * 3, dims=(1, 2, 3))
        out = out[:, :s, :h, :w].reshape(b, length, c)
        x = shortcut + self.drop_path(out)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """GELU -> LayerNorm -> 3^3 stride-2 conv doubling the channels."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Conv3d(dim, 2 * dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, resolution):
        b, _, c = x.shape
        x = self.norm(F.gelu(x)).view(b, *resolution, c).permute(0, 4, 1, 2, 3)
        return self.reduction(x).flatten(2).transpose(1, 2)


class PatchExpanding(nn.Module):
    """LayerNorm -> 2^3 stride-2 transposed conv halving the channels."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.ConvTranspose3d(dim, dim // 2, 2, 2)

    def forward(self, x, resolution):
        b, _, c = x.shape
        x = self.norm(x).view(b, *resolution, c).permute(0, 4, 1, 2, 3)
        return self.up(x).flatten(2).transpose(1, 2)


def _norm_channels(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return norm(x.movedim(1, -1)).movedim(-1, 1)


class Project(nn.Module):
    """Half of the convolutional embedding: conv(stride) -> GELU -> LN -> conv [-> GELU -> LN]."""

    def __init__(self, cin: int, cout: int, stride: Sequence[int], last: bool):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=tuple(stride), padding=1)
        self.conv2 = nn.Conv3d(cout, cout, 3, stride=1, padding=1)
        self.activate = nn.GELU()
        self.norm1 = nn.LayerNorm(cout)
        self.last = last
        if not last:
            self.norm2 = nn.LayerNorm(cout)

    def forward(self, x):
        x = self.conv2(_norm_channels(self.norm1, self.activate(self.conv1(x))))
        return x if self.last else _norm_channels(self.norm2, self.activate(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: Sequence[int], in_channels: int, dim: int):
        super().__init__()
        stride = [p // 2 for p in patch]
        self.proj1 = Project(in_channels, dim // 2, stride, last=False)
        self.proj2 = Project(dim // 2, dim, stride, last=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return _norm_channels(self.norm, self.proj2(self.proj1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, dim, resolution, depth, num_heads, window, drop_paths, downsample: bool):
        super().__init__()
        self.resolution = tuple(resolution)
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2, drop_paths[i])
            for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x, (self.downsample(x, self.resolution) if self.downsample is not None else x)


class DecoderLayer(nn.Module):
    """Upsample the deeper tokens, add the skip, one skip-attention block, then shifted blocks."""

    def __init__(self, dim, resolution, depth, num_heads, window, drop_paths):
        super().__init__()
        self.blocks = nn.ModuleList(
            [SwinBlock(dim, resolution, num_heads, window, 0, drop_paths[0], skip_attention=True)]
            + [SwinBlock(dim, resolution, num_heads, window, window // 2, drop_paths[i])
               for i in range(1, depth)])
        self.Upsample = PatchExpanding(2 * dim)    # official attribute name
        self.coarse = tuple(r // 2 for r in resolution)

    def forward(self, x, skip):
        x_up = self.Upsample(x, self.coarse)
        x = self.blocks[0](x_up + skip, skip=skip, x_up=x_up)
        for blk in self.blocks[1:]:
            x = blk(x)
        return x


def _drop_paths(rate: float, depths: Sequence[int]) -> list[list[float]]:
    rates = torch.linspace(0, rate, sum(depths), device="cpu").tolist()   # official float32 rates
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [rates[s:s + d] for s, d in zip(starts, depths)]


class Encoder(nn.Module):
    def __init__(self, grid, in_channels, dim, patch, depths, num_heads, windows, drop_path_rate):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, in_channels, dim)
        dps = _drop_paths(drop_path_rate, depths)
        n = len(depths)
        self.layers = nn.ModuleList(
            EncoderLayer(dim * 2 ** i, [g // 2 ** i for g in grid], depths[i], num_heads[i],
                         windows[i], dps[i], downsample=i < n - 1) for i in range(n))
        for i in range(n):
            self.add_module(f"norm{i}", nn.LayerNorm(dim * 2 ** i))

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        skips = []
        for i, layer in enumerate(self.layers):
            out, x = layer(x)
            skips.append(getattr(self, f"norm{i}")(out))
        return skips


class Decoder(nn.Module):
    """``layers[k]`` works at encoder stage k (k = 0 finest) and runs from the deepest k down.
    As the official slicing (``heads[::-1][:-1]``) gives, stage k uses the heads of encoder stage
    k + 1 (24, 12, 6 at 384, 192, 96 channels) and the window and depth of encoder stage k; the
    drop-path linspace runs over the decoder built deepest-first, so the finest stage gets the
    largest rates."""

    def __init__(self, grid, dim, depths, num_heads, windows, drop_path_rate):
        super().__init__()
        n = len(depths) - 1
        dps = _drop_paths(drop_path_rate, [depths[k] for k in reversed(range(n))])
        self.layers = nn.ModuleList(
            DecoderLayer(dim * 2 ** k, [g // 2 ** k for g in grid], depths[k], num_heads[k + 1],
                         windows[k], dps[n - 1 - k]) for k in range(n))

    def forward(self, skips):
        x = skips[-1]
        for k in reversed(range(len(self.layers))):
            x = self.layers[k](x, skips[k])
        return x


class FinalPatchExpanding(nn.Module):
    """Transposed conv, kernel = stride = embedding patch, from (B, S*H*W, C) tokens to logits."""

    def __init__(self, dim: int, num_classes: int, patch: Sequence[int], grid: Sequence[int]):
        super().__init__()
        self.up = nn.ConvTranspose3d(dim, num_classes, tuple(patch), tuple(patch))
        self.grid = tuple(grid)

    def forward(self, x):
        return self.up(x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.grid))


def _ints(name, value, length):
    value = tuple(value)
    if len(value) != length or any(not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(f"{name} must be {length} positive ints, got {value!r}")
    return value


class nnFormer(nn.Module):  # noqa: N801 - official class name
    """nnFormer (DS off) for a fixed input size; returns logits (N, num_classes, *img_size).

    Args:
        img_size: training crop (S, H, W); every edge a multiple of 4 * 2^(stages-1) (32 for 4 stages).
        in_channels: input modalities. num_classes: output channels (incl. background).
        embedding_dim: channels of the first stage (doubled per stage). depths / num_heads /
        window_size: per encoder stage (the decoder mirrors the first len-1 stages).
        drop_path_rate: stochastic-depth maximum, linear from 0 in encoder and decoder.

    Example:
        >>> net = nnFormer(img_size=(64, 64, 64), in_channels=4, num_classes=4)
        >>> net(torch.zeros(1, 4, 64, 64, 64)).shape
        torch.Size([1, 4, 64, 64, 64])
    """

    def __init__(self, img_size: Sequence[int], in_channels: int = 1, num_classes: int = 14,
                 embedding_dim: int = 96, depths: Sequence[int] = (2, 2, 2, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: Sequence[int] = (4, 4, 8, 4), drop_path_rate: float = 0.2):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes),
                        ("embedding_dim", embedding_dim)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        n = len(tuple(depths))
        if n < 2:
            raise ValueError(f"depths must list at least 2 stages, got {depths!r}")
        depths, num_heads = _ints("depths", depths, n), _ints("num_heads", num_heads, n)
        window_size, patch = _ints("window_size", window_size, n), _PATCH
        for i, h in enumerate(num_heads):   # encoder stage i; decoder stage i - 1 (half the width)
            for width in (embedding_dim * 2 ** i, embedding_dim * 2 ** (i - 1) if i else h):
                if width % h:
                    raise ValueError(f"num_heads[{i}]={h} does not divide {width} channels")
        if embedding_dim % 2:                 # the first embedding conv has embedding_dim / 2
            raise ValueError(f"embedding_dim must be even, got {embedding_dim}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        self.img_size = _ints("img_size", img_size, 3)
        self.divisor = tuple(p * 2 ** (n - 1) for p in patch)
        if any(s % d for s, d in zip(self.img_size, self.divisor)):
            raise ValueError(f"img_size {self.img_size} must be a multiple of {self.divisor} per axis")
        self.in_channels, self.num_classes = in_channels, num_classes
        grid = [s // p for s, p in zip(self.img_size, patch)]
        self.model_down = Encoder(grid, in_channels, embedding_dim, patch, depths, num_heads,
                                  window_size, drop_path_rate)
        self.decoder = Decoder(grid, embedding_dim, depths, num_heads, window_size, drop_path_rate)
        self.final = nn.ModuleList([FinalPatchExpanding(embedding_dim, num_classes, patch, grid)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f"nnFormer was built for input (N, {self.in_channels}, "
                             f"{', '.join(map(str, self.img_size))}); got {tuple(x.shape)}")
        return self.final[0](self.decoder(self.model_down(x)))


def build(in_channels: int, num_classes: int, patch_size: tuple[int, ...]) -> nnFormer:
    """The tumour configuration MedNeXt trained (DS off), with crop = ``patch_size``."""
    patch_size = tuple(patch_size)
    if len(patch_size) != 3 or any(not isinstance(p, int) or p < DIVISOR or p % DIVISOR for p in patch_size):
        raise ValueError(f"nnFormer needs a 3D patch_size with every edge a positive multiple of "
                         f"{DIVISOR}, got {patch_size!r}")
    return nnFormer(img_size=patch_size, in_channels=in_channels, num_classes=num_classes, **_TUMOUR)


def drop_unused_official_keys(state_dict: dict) -> dict:
    """A copy of an official nnFormer state dict without the tensors listed in UNUSED_OFFICIAL_KEYS."""
    return {k: v for k, v in state_dict.items()
            if not any(k.startswith(prefix) for prefix in UNUSED_OFFICIAL_KEYS)}
