"""TransUNet, R50-ViT-B/16 hybrid (2D), as used as a baseline in the MedNeXt paper.

Paper: J. Chen et al., "TransUNet: Transformers Make Strong Encoders for Medical Image
Segmentation", arXiv:2102.04306 (2021).
Official code: https://github.com/Beckschen/TransUNet, commit 02ef001, Apache-2.0
(``networks/vit_seg_modeling.py``, ``vit_seg_modeling_resnet_skip.py``, ``vit_seg_configs.py``,
configuration ``get_r50_b16_config()`` with ``n_skip = 3``). MedNeXt's copy of it (MIC-DKFZ/MedNeXt
0b78ed8, trainer ``nnUNetTrainerV2_TransUNet``) builds it at 512^2 with a 32x32 grid, no pretrained
weights, and a root convolution taking C channels when there are C > 1 modalities.

Written from the description in the project's baseline spec (section 6); the module tree and every
state-dict key and tensor shape equal the official ``VisionTransformer`` (so its checkpoints load):

- CNN encoder (``transformer.embeddings.hybrid_model``): weight-standardised 7x7/2 conv, GroupNorm(32),
  ReLU; a 3x3/2 max-pool WITHOUT padding (H/2 -> H/4 - 1); bottleneck units (3, 4, 9) with outputs
  256 @H/4, 512 @H/8, 1024 @H/16. The H/4 skip map is one pixel short and is zero-padded at the
  bottom/right, as the official code does.
- 1x1 patch embedding 1024 -> 768 on the H/16 grid, learned position embedding (zeros at init),
  12 pre-LN ViT-B layers (768, MLP 3072, 12 heads, dropout 0.1, attention dropout 0), final LayerNorm.
- CUP decoder: 3x3 conv-BN-ReLU 768 -> 512; four blocks [bilinear x2 (align_corners=True), concat
  skip, 2 x (3x3 conv-BN-ReLU)] with 256, 128, 64, 16 channels and skips 512, 256, 64, none;
  3x3 conv head 16 -> classes. Returns logits.

Input channels: with ``in_channels == 1`` the root conv takes 3 channels and the input is repeated
to 3 inside ``forward`` (official behaviour, kept by MedNeXt); with C > 1 modalities the root conv
takes C channels (MedNeXt's change; the official root is hard-wired to 3).

Deliberate differences from the official code:
- trained from scratch (as MedNeXt; the ImageNet-21k ``R50+ViT-B_16.npz`` is not used), hence no
  ``load_from`` for the numpy checkpoint; state dicts of the PyTorch model load as they are;
- the input size is checked in ``forward`` (``ValueError`` naming the size) and may be rectangular
  (H, W both multiples of 16; the official code assumes a square and reshapes with sqrt(N));
- attention is computed with ``torch.nn.functional.scaled_dot_product_attention``: the same maths
  (softmax(QK^T / sqrt(d)) V; attention dropout is 0 here) with memory-efficient kernels;
- the attention-weight visualisation output (``vis``) and the "dummy" variant are not provided.
There are no unused tensors in the official model: ``UNUSED_OFFICIAL_KEYS`` is empty.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DIVISOR = 16
FIXED_SIZE = True

# Exact count of the official model (spec section 12) at the MedNeXt configuration: one modality
# (repeated to 3 channels), 14 classes, 512^2 slices (32x32 grid -> 1024 tokens).
REFERENCE_PARAMS = {"in_channels": 1, "num_classes": 14, "patch_size": (512, 512),
                    "params": 105_913_710}

# Every tensor of the official TransUNet is used in forward; nothing to drop.
UNUSED_OFFICIAL_KEYS: tuple[str, ...] = ()

# R50-ViT-B/16 (official get_r50_b16_config), as data.
RESNET_UNITS = (3, 4, 9)
RESNET_WIDTH = 64
HIDDEN_SIZE = 768
MLP_DIM = 3072
NUM_HEADS = 12
NUM_LAYERS = 12
HEAD_CHANNELS = 512
DECODER_CHANNELS = (256, 128, 64, 16)
SKIP_CHANNELS = (512, 256, 64, 0)  # n_skip = 3: the last decoder block has no skip


def drop_unused_official_keys(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Return ``state_dict`` without the keys in ``UNUSED_OFFICIAL_KEYS`` (none for TransUNet).

    Keys are compared after removing a leading ``module.`` (checkpoints saved from DataParallel).
    """
    return OrderedDict((k, v) for k, v in state_dict.items()
                       if k.removeprefix("module.") not in UNUSED_OFFICIAL_KEYS)


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (per output filter, biased variance, eps 1e-5) (BiT)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(var + 1e-5)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Bottleneck(nn.Module):
    """ResNet bottleneck unit, post-activation (the official class is named "PreAct" but is not).

    1x1 conv-GN-ReLU, 3x3 conv (carries the stride)-GN-ReLU, 1x1 conv-GN, add shortcut, ReLU;
    projection shortcut (1x1 conv + GroupNorm with one group per channel) when shape changes.
    """

    def __init__(self, cin: int, cout: int, cmid: int, stride: int = 1):
        super().__init__()
        self.gn1 = nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv1 = StdConv2d(cin, cmid, kernel_size=1, bias=False)
        self.gn2 = nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv2 = StdConv2d(cmid, cmid, kernel_size=3, stride=stride, padding=1, bias=False)
        self.gn3 = nn.GroupNorm(32, cout, eps=1e-6)
        self.conv3 = StdConv2d(cmid, cout, kernel_size=1, bias=False)
        self.has_projection = stride != 1 or cin != cout
        if self.has_projection:
            self.downsample = StdConv2d(cin, cout, kernel_size=1, stride=stride, bias=False)
            self.gn_proj = nn.GroupNorm(cout, cout)  # official: default eps 1e-5 here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.gn_proj(self.downsample(x)) if self.has_projection else x
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return F.relu(shortcut + y)


def _stage(cin: int, cout: int, cmid: int, units: int, stride: int) -> nn.Sequential:
    layers = [("unit1", Bottleneck(cin, cout, cmid, stride))]
    layers += [(f"unit{i}", Bottleneck(cout, cout, cmid)) for i in range(2, units + 1)]
    return nn.Sequential(OrderedDict(layers))


class ResNetV2(nn.Module):
    """The R50 part of the hybrid: root + 3 stages; returns the H/16 map and 3 skip maps."""

    def __init__(self, in_channels: int, units: Sequence[int] = RESNET_UNITS, width: int = RESNET_WIDTH):
        super().__init__()
        self.width = width
        self.root = nn.Sequential(OrderedDict([
            ("conv", StdConv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)),
            ("gn", nn.GroupNorm(32, width, eps=1e-6)),
            ("relu", nn.ReLU(inplace=True)),
        ]))
        self.body = nn.Sequential(OrderedDict([
            ("block1", _stage(width, width * 4, width, units[0], stride=1)),
            ("block2", _stage(width * 4, width * 8, width * 2, units[1], stride=2)),
            ("block3", _stage(width * 8, width * 16, width * 4, units[2], stride=2)),
        ]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        height, width = x.shape[-2:]
        x = self.root(x)
        skips = [x]
        # No padding: H/2 -> H/4 - 1. Kept for faithfulness; the short map is padded below.
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=0)
        for i, stage in enumerate(self.body[:-1]):
            x = stage(x)
            want_h, want_w = height // (4 * 2 ** i), width // (4 * 2 ** i)
            # zero-pad at bottom/right to the nominal H/4, H/8 (official: 1-2 pixels at most)
            skips.append(F.pad(x, (0, want_w - x.shape[-1], 0, want_h - x.shape[-2])))
        x = self.body[-1](x)
        return x, skips[::-1]  # deepest skip first: 512 @H/8, 256 @H/4, 64 @H/2


class Embeddings(nn.Module):
    """Hybrid CNN + 1x1 patch embedding + learned position embedding (one per token)."""

    def __init__(self, in_channels: int, n_patches: int, dropout_rate: float):
        super().__init__()
        self.hybrid_model = ResNetV2(in_channels)
        self.patch_embeddings = nn.Conv2d(RESNET_WIDTH * 16, HIDDEN_SIZE, kernel_size=1, stride=1)
        self.position_embeddings = nn.Parameter(torch.zeros(1, n_patches, HIDDEN_SIZE))
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, skips = self.hybrid_model(x)
        tokens = self.patch_embeddings(x).flatten(2).transpose(1, 2)  # (B, N, hidden)
        return self.dropout(tokens + self.position_embeddings), skips


class Attention(nn.Module):
    """Multi-head self-attention with separate query/key/value/out projections (with bias)."""

    def __init__(self, attention_dropout_rate: float):
        super().__init__()
        self.query = nn.Linear(HIDDEN_SIZE, HIDDEN_SIZE)
        self.key = nn.Linear(HIDDEN_SIZE, HIDDEN_SIZE)
        self.value = nn.Linear(HIDDEN_SIZE, HIDDEN_SIZE)
        self.out = nn.Linear(HIDDEN_SIZE, HIDDEN_SIZE)
        self.attention_dropout_rate = attention_dropout_rate
        # official: the output projection's dropout also uses the attention dropout rate
        self.proj_dropout = nn.Dropout(attention_dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, NUM_HEADS, c // NUM_HEADS).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
            dropout_p=self.attention_dropout_rate if self.training else 0.0)
        return self.proj_dropout(self.out(context.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    def __init__(self, dropout_rate: float):
        super().__init__()
        self.fc1 = nn.Linear(HIDDEN_SIZE, MLP_DIM)
        self.fc2 = nn.Linear(MLP_DIM, HIDDEN_SIZE)
        self.dropout = nn.Dropout(dropout_rate)
        # official initialisation of the MLP (the rest keeps PyTorch defaults)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """Pre-LN transformer layer (LayerNorm eps 1e-6)."""

    def __init__(self, dropout_rate: float, attention_dropout_rate: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(HIDDEN_SIZE, eps=1e-6)
        self.ffn_norm = nn.LayerNorm(HIDDEN_SIZE, eps=1e-6)
        self.ffn = Mlp(dropout_rate)
        self.attn = Attention(attention_dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class Encoder(nn.Module):
    def __init__(self, dropout_rate: float, attention_dropout_rate: float):
        super().__init__()
        self.layer = nn.ModuleList(Block(dropout_rate, attention_dropout_rate) for _ in range(NUM_LAYERS))
        self.encoder_norm = nn.LayerNorm(HIDDEN_SIZE, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layer:
            x = block(x)
        return self.encoder_norm(x)


class Transformer(nn.Module):
    def __init__(self, in_channels: int, n_patches: int, dropout_rate: float, attention_dropout_rate: float):
        super().__init__()
        self.embeddings = Embeddings(in_channels, n_patches, dropout_rate)
        self.encoder = Encoder(dropout_rate, attention_dropout_rate)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        tokens, skips = self.embeddings(x)
        return self.encoder(tokens), skips


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """Official ``Conv2dReLU``: 3x3 conv without bias, BatchNorm, ReLU (keys .0 and .1)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, skip_channels: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(cin + skip_channels, cout)
        self.conv2 = _conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        # official nn.UpsamplingBilinear2d = bilinear with align_corners=True
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class DecoderCup(nn.Module):
    def __init__(self, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.conv_more = _conv_bn_relu(HIDDEN_SIZE, HEAD_CHANNELS)
        ins = (HEAD_CHANNELS,) + DECODER_CHANNELS[:-1]
        self.blocks = nn.ModuleList(DecoderBlock(i, o, s)
                                    for i, o, s in zip(ins, DECODER_CHANNELS, SKIP_CHANNELS))

    def forward(self, tokens: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        b, _, hidden = tokens.shape
        x = self.conv_more(tokens.transpose(1, 2).reshape(b, hidden, *self.grid))
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if SKIP_CHANNELS[i] else None)
        return x


class TransUNet(nn.Module):
    """TransUNet R50-ViT-B/16 for 2D slices; returns logits (N, num_classes, H, W).

    Args:
        in_channels: number of image modalities C. C = 1 is repeated to 3 channels in ``forward``
            (the root conv then takes 3); C > 1 makes the root conv take C channels.
        num_classes: output channels (background included).
        img_size: (H, W) the model is built for; each a multiple of 16. The input must be exactly
            this size (the position embedding has one entry per 16x16 patch).
        dropout_rate: embedding and MLP dropout (official 0.1).
        attention_dropout_rate: attention dropout (official 0.0).

    Example:
        >>> net = TransUNet(in_channels=1, num_classes=14, img_size=(64, 64))
        >>> net(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: Sequence[int],
                 dropout_rate: float = 0.1, attention_dropout_rate: float = 0.0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        size = tuple(img_size) if isinstance(img_size, Sequence) and not isinstance(img_size, str) else None
        if (size is None or len(size) != 2
                or any(isinstance(s, bool) or not isinstance(s, int) or s < DIVISOR or s % DIVISOR
                       for s in size)):
            raise ValueError(f"img_size must be 2 positive multiples of {DIVISOR} (H, W), got {img_size!r}")
        for name, value in (("dropout_rate", dropout_rate), ("attention_dropout_rate", attention_dropout_rate)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.img_size = size
        grid = (size[0] // 16, size[1] // 16)
        root_channels = 3 if in_channels == 1 else in_channels
        self.transformer = Transformer(root_channels, grid[0] * grid[1], dropout_rate, attention_dropout_rate)
        self.decoder = DecoderCup(grid)
        # official SegmentationHead = Sequential(conv, Identity): key "segmentation_head.0"
        self.segmentation_head = nn.Sequential(
            nn.Conv2d(DECODER_CHANNELS[-1], num_classes, kernel_size=3, padding=1), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f"TransUNet needs input (N, {self.in_channels}, {self.img_size[0]}, "
                             f"{self.img_size[1]}), got {tuple(x.shape)}")
        if self.in_channels == 1:
            x = x.repeat(1, 3, 1, 1)
        tokens, skips = self.transformer(x)
        return self.segmentation_head(self.decoder(tokens, skips))


def build(in_channels: int, num_classes: int, patch_size: Sequence[int]) -> TransUNet:
    """The MedNeXt-paper configuration: R50-ViT-B/16, n_skip 3, from scratch, image size = patch."""
    return TransUNet(in_channels, num_classes, tuple(patch_size))
