"""TransBTS (3D), as used as a baseline in the MedNeXt paper.

Paper: W. Wang, C. Chen, M. Ding, J. Li, H. Yu, S. Zha, "TransBTS: Multimodal Brain Tumor
Segmentation Using Transformer", MICCAI 2021.
Official code: https://github.com/Rubics-Xuan/TransBTS (formerly Wenxuan-1119/TransBTS), commit
7dcfc31, Apache-2.0 (``models/TransBTS/TransBTS_downsample8x_skipconnection.py``, ``Transformer.py``,
``Unet_skipconnection.py``, ``PositionalEncoding.py``), configuration ``TransBTS(dataset='brats')``:
patch_dim 8, embedding 512, 8 heads, 4 layers, MLP 4096, dropout 0.1, attention dropout 0.1,
convolutional patch representation, learned position encoding. MedNeXt's copy (MIC-DKFZ/MedNeXt
0b78ed8, trainer ``nnUNetTrainerV2_TransBTS``) rewires the input and output channels and removes the
final Softmax.

Written from the description in the project's baseline spec (section 7); module tree, state-dict keys
and tensor shapes equal the official ``BTS`` model (except the unused tensors, see below):

- CNN encoder (``Unet``): 3x3x3 conv in -> 16 + channel dropout (p 0.2), pre-activation residual
  blocks (GroupNorm(8), ReLU, conv, x2, + identity) with 1, 2, 2, 4 blocks at 16, 32, 64, 128
  channels; 3x3x3 stride-2 convs between them (total stride 8).
- Tokens: BatchNorm3d + ReLU, 3x3x3 conv 128 -> 512, flattened (D/8 * H/8 * W/8 tokens), plus a
  learned position embedding (zeros at init) and dropout 0.1.
- Transformer: 4 pre-LN layers (8 heads, qkv without bias, MLP 512 -> 4096 -> 512 with GELU); the
  attention branch has the attention-projection dropout and a second dropout (both 0.1), as official.
- Decoder on the raw output of the last transformer layer (the official ``intmd_x['7']``, i.e. before
  the final LayerNorm): conv-BN-ReLU 512 -> 128, conv-BN-ReLU; residual conv-BN-ReLU x2 block; three
  [1x1 conv (halve), 2x2x2 transposed conv, concat(skip, up), 1x1 conv, residual conv-BN-ReLU x2]
  stages to 16 channels at full size; 1x1x1 conv to classes. Returns logits.

Deliberate differences from the official code:
- ``in_channels`` and ``num_classes`` are honoured (official: hard-wired 4 and 4), as MedNeXt did;
- no Softmax in ``forward`` (logits), as MedNeXt did;
- the position embedding is sized from the patch, ((D/8)(H/8)(W/8), 512), instead of the hard-wired
  (4096, 512); identical at 128^3. The patch may be anisotropic (each side a multiple of 8);
- the tensors the official model creates but never uses in forward are not created:
  ``linear_encoding`` (a Linear(128 * C, 512), used only without the conv patch representation) and
  ``pre_head_ln`` (the final LayerNorm, whose output the decoder ignores). ``drop_unused_official_keys``
  removes them from official state dicts. Hence the module has 67,072 parameters fewer than the
  official count for 1 input channel (32,722,782 vs 32,789,854 for 1 -> 14 at 128^3) and 263,680 fewer
  for 4 (32,723,908 vs 32,987,588 for 4 -> 4) -- spec sections 7 and 12;
- stem dropout: the official code calls the functional ``dropout3d`` with its default
  ``training=True``, so it stays active at inference (stochastic predictions; MedNeXt kept this).
  Here it follows the module's train/eval mode by default (off in ``eval()``, deterministic
  predictions, and no train/test mismatch under mirroring TTA). ``stem_dropout_at_inference=True``
  restores the official behaviour;
- attention is computed with ``torch.nn.functional.scaled_dot_product_attention``: the same maths
  (softmax(QK^T / sqrt(d)) V with attention dropout 0.1 in training) with memory-efficient kernels;
- the input size is checked in ``forward`` (``ValueError`` naming the size needed).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DIVISOR = 8
FIXED_SIZE = True

# Parameter counts at the MedNeXt configuration (1 modality, 14 classes, 128^3). "params" is what
# this module has; "official_params" is the exact count of the official model (spec section 12),
# which also holds the unused tensors of UNUSED_OFFICIAL_KEYS ("official_unused_params").
REFERENCE_PARAMS = {"in_channels": 1, "num_classes": 14, "patch_size": (128, 128, 128),
                    "params": 32_722_782, "official_params": 32_789_854,
                    "official_unused_params": 67_072}
# The official BraTS configuration (4 modalities -> 4 classes), same keys.
OFFICIAL_BRATS_PARAMS = {"in_channels": 4, "num_classes": 4, "patch_size": (128, 128, 128),
                         "params": 32_723_908, "official_params": 32_987_588,
                         "official_unused_params": 263_680}

UNUSED_OFFICIAL_KEYS: tuple[str, ...] = (
    # Linear(128 * in_channels, 512): the token projection of the non-convolutional patch
    # representation; with conv_patch_representation=True (the configuration used) never called.
    "linear_encoding.weight",
    "linear_encoding.bias",
    # Final LayerNorm of the encoder: applied, but its output is ignored -- the decoder reads the raw
    # output of the last transformer layer -- so it never receives a gradient.
    "pre_head_ln.weight",
    "pre_head_ln.bias",
)

EMBED_DIM = 512
NUM_HEADS = 8
NUM_LAYERS = 4
MLP_DIM = 4096
BASE_CHANNELS = 16  # the decoder widths (512 // 8, // 16, // 32) equal the skip widths (64, 32, 16)
PATCH_DIM = 8


def drop_unused_official_keys(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Return ``state_dict`` without the tensors listed in ``UNUSED_OFFICIAL_KEYS``.

    Keys are compared after removing a leading ``module.`` (the official training script saves from
    DataParallel); the remaining keys are returned unchanged.
    """
    return OrderedDict((k, v) for k, v in state_dict.items()
                       if k.removeprefix("module.") not in UNUSED_OFFICIAL_KEYS)


# ----------------------------------------------------------------------------- CNN encoder


class InitConv(nn.Module):
    """3x3x3 conv in -> 16 followed by channel dropout (see the module docstring on inference)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, at_inference: bool):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.dropout = dropout
        self.at_inference = at_inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout3d(self.conv(x), self.dropout, training=self.training or self.at_inference)


class EnBlock(nn.Module):
    """Pre-activation residual block: (GN(8), ReLU, 3x3x3 conv) x 2 + identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn1 = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        return self.conv2(F.relu(self.bn2(y))) + x


class EnDown(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Unet(nn.Module):
    """The official CNN encoder (named ``Unet`` there): returns 3 skips and the /8 feature map."""

    def __init__(self, in_channels: int, dropout: float, dropout_at_inference: bool, base: int = BASE_CHANNELS):
        super().__init__()
        self.InitConv = InitConv(in_channels, base, dropout, dropout_at_inference)
        self.EnBlock1 = EnBlock(base)
        self.EnDown1 = EnDown(base, base * 2)
        self.EnBlock2_1 = EnBlock(base * 2)
        self.EnBlock2_2 = EnBlock(base * 2)
        self.EnDown2 = EnDown(base * 2, base * 4)
        self.EnBlock3_1 = EnBlock(base * 4)
        self.EnBlock3_2 = EnBlock(base * 4)
        self.EnDown3 = EnDown(base * 4, base * 8)
        self.EnBlock4_1 = EnBlock(base * 8)
        self.EnBlock4_2 = EnBlock(base * 8)
        self.EnBlock4_3 = EnBlock(base * 8)
        self.EnBlock4_4 = EnBlock(base * 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        skip1 = self.EnBlock1(self.InitConv(x))
        skip2 = self.EnBlock2_2(self.EnBlock2_1(self.EnDown1(skip1)))
        skip3 = self.EnBlock3_2(self.EnBlock3_1(self.EnDown2(skip2)))
        x = self.EnDown3(skip3)
        for block in (self.EnBlock4_1, self.EnBlock4_2, self.EnBlock4_3, self.EnBlock4_4):
            x = block(x)
        return skip1, skip2, skip3, x


# ----------------------------------------------------------------------------- transformer


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout_rate: float):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.attention_dropout_rate = dropout_rate
        self.proj_drop = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attention_dropout_rate if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class PreNorm(nn.Module):
    """LayerNorm -> fn (-> dropout, for the attention branch). Keys: ``norm``, ``fn``."""

    def __init__(self, dim: int, fn: nn.Module, dropout_rate: float | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fn(self.norm(x)))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout_rate: float):
        super().__init__()
        # indices 0 and 3 carry the weights, as in the official nn.Sequential
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout_rate),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerModel(nn.Module):
    """``net`` = [attention, feed-forward] x layers, each residual; returns the last layer's output."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, dropout_rate: float,
                 attn_dropout_rate: float):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers.append(Residual(PreNorm(dim, SelfAttention(dim, heads, attn_dropout_rate), dropout_rate)))
            layers.append(Residual(PreNorm(dim, FeedForward(dim, mlp_dim, dropout_rate))))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LearnedPositionalEncoding(nn.Module):
    def __init__(self, seq_length: int, dim: int):
        super().__init__()
        self.position_embeddings = nn.Parameter(torch.zeros(1, seq_length, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.position_embeddings


# ----------------------------------------------------------------------------- decoder


def _conv_bn_relu_twice(x: torch.Tensor, block: nn.Module) -> torch.Tensor:
    y = F.relu(block.bn1(block.conv1(x)))
    return F.relu(block.bn2(block.conv2(y)))


class EnBlock1(nn.Module):
    """conv-BN-ReLU 512 -> 128, conv-BN-ReLU 128 -> 128 (no residual)."""

    def __init__(self, cin: int):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cin // 4, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm3d(cin // 4)
        self.conv2 = nn.Conv3d(cin // 4, cin // 4, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm3d(cin // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_bn_relu_twice(x, self)


class ResidualConvBlock(nn.Module):
    """(3x3x3 conv-BN-ReLU) x 2 + identity: the official ``EnBlock2`` and ``DeBlock``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm3d(channels)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_bn_relu_twice(x, self) + x


class DeUpCat(nn.Module):
    """1x1 conv (cin -> cout), 2x2x2 transposed conv, concat(skip, up), 1x1 conv (2 cout -> cout)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, kernel_size=1)
        self.conv2 = nn.ConvTranspose3d(cout, cout, kernel_size=2, stride=2)
        self.conv3 = nn.Conv3d(cout * 2, cout, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((skip, self.conv2(self.conv1(x))), dim=1))


# ----------------------------------------------------------------------------- network


class TransBTS(nn.Module):
    """TransBTS (official ``BTS`` at the BraTS configuration); returns logits (N, num_classes, *img_size).

    Args:
        in_channels: number of image modalities.
        num_classes: output channels (background included).
        img_size: (D, H, W) the model is built for, each a multiple of 8; the input must be exactly
            this size (the learned position embedding has one entry per token of the /8 grid).
        dropout_rate: position-embedding, attention-branch and MLP dropout (official 0.1).
        attn_dropout_rate: dropout on the attention weights and the attention projection (official 0.1).
        stem_dropout: channel dropout after the first conv (official 0.2).
        stem_dropout_at_inference: keep the stem dropout active in ``eval()`` as the official code does
            (default False: it follows train/eval mode).

    Example:
        >>> net = TransBTS(in_channels=4, num_classes=4, img_size=(32, 32, 32))
        >>> net(torch.zeros(1, 4, 32, 32, 32)).shape
        torch.Size([1, 4, 32, 32, 32])
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: Sequence[int],
                 dropout_rate: float = 0.1, attn_dropout_rate: float = 0.1, stem_dropout: float = 0.2,
                 stem_dropout_at_inference: bool = False):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        size = tuple(img_size) if isinstance(img_size, Sequence) and not isinstance(img_size, str) else None
        if (size is None or len(size) != 3
                or any(isinstance(s, bool) or not isinstance(s, int) or s < DIVISOR or s % DIVISOR
                       for s in size)):
            raise ValueError(f"img_size must be 3 positive multiples of {DIVISOR} (D, H, W), got {img_size!r}")
        for name, value in (("dropout_rate", dropout_rate), ("attn_dropout_rate", attn_dropout_rate),
                            ("stem_dropout", stem_dropout)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if not isinstance(stem_dropout_at_inference, bool):
            raise ValueError(f"stem_dropout_at_inference must be a bool, got {stem_dropout_at_inference!r}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.img_size = size
        self.grid = tuple(s // PATCH_DIM for s in size)
        seq_length = self.grid[0] * self.grid[1] * self.grid[2]

        self.Unet = Unet(in_channels, stem_dropout, stem_dropout_at_inference)
        self.bn = nn.BatchNorm3d(BASE_CHANNELS * 8)
        self.conv_x = nn.Conv3d(BASE_CHANNELS * 8, EMBED_DIM, kernel_size=3, stride=1, padding=1)
        self.position_encoding = LearnedPositionalEncoding(seq_length, EMBED_DIM)
        self.pe_dropout = nn.Dropout(dropout_rate)
        self.transformer = TransformerModel(EMBED_DIM, NUM_LAYERS, NUM_HEADS, MLP_DIM, dropout_rate,
                                            attn_dropout_rate)

        self.Enblock8_1 = EnBlock1(EMBED_DIM)
        self.Enblock8_2 = ResidualConvBlock(EMBED_DIM // 4)
        self.DeUp4 = DeUpCat(EMBED_DIM // 4, EMBED_DIM // 8)
        self.DeBlock4 = ResidualConvBlock(EMBED_DIM // 8)
        self.DeUp3 = DeUpCat(EMBED_DIM // 8, EMBED_DIM // 16)
        self.DeBlock3 = ResidualConvBlock(EMBED_DIM // 16)
        self.DeUp2 = DeUpCat(EMBED_DIM // 16, EMBED_DIM // 32)
        self.DeBlock2 = ResidualConvBlock(EMBED_DIM // 32)
        self.endconv = nn.Conv3d(EMBED_DIM // 32, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.img_size:
            need = ", ".join(str(s) for s in self.img_size)
            raise ValueError(f"TransBTS needs input (N, {self.in_channels}, {need}), got {tuple(x.shape)}")
        skip1, skip2, skip3, x = self.Unet(x)
        x = self.conv_x(F.relu(self.bn(x)))
        b = x.shape[0]
        tokens = x.permute(0, 2, 3, 4, 1).reshape(b, -1, EMBED_DIM)
        tokens = self.transformer(self.pe_dropout(self.position_encoding(tokens)))
        x = tokens.reshape(b, *self.grid, EMBED_DIM).permute(0, 4, 1, 2, 3).contiguous()

        x = self.Enblock8_2(self.Enblock8_1(x))
        x = self.DeBlock4(self.DeUp4(x, skip3))
        x = self.DeBlock3(self.DeUp3(x, skip2))
        x = self.DeBlock2(self.DeUp2(x, skip1))
        return self.endconv(x)


def build(in_channels: int, num_classes: int, patch_size: Sequence[int]) -> TransBTS:
    """The MedNeXt-paper configuration (official BraTS hyper-parameters), sized for ``patch_size``."""
    return TransBTS(in_channels, num_classes, tuple(patch_size))
