"""The MedNeXt v1 network: stem, 4 encoder stages with 2x down blocks, bottleneck, 4 up blocks with
additive skips and decoder stages, 1x1 head, optional deep-supervision heads.

Follows Roy et al., "MedNeXt", MICCAI 2023 (Sect. 2, Fig. 1a) and the official v1 network
(MIC-DKFZ/MedNeXt, ``mednextv1/MedNextV1.py``): module names, registration order and tensor
layouts are the official ones (incl. the ``dummy_tensor`` parameter), so official state dicts load
with ``strict=True`` and give the same outputs. Written from specs/mednext.md a.1-a.9, not copied.

Differences from the original:
- activation checkpointing is non-reentrant ``torch.utils.checkpoint`` per block, switchable at run
  time through the ``checkpointing`` attribute (the original fixes it at construction, reentrant,
  and threads ``dummy_tensor`` through every call to work around reentrant checkpointing);
- ``dummy_tensor`` is kept as a frozen parameter (``requires_grad=False``, value 1.0): it is part
  of the official state dict and parameter count, but no computation uses it, so it never gets a
  gradient (in the original it is trainable but equally unused);
- ``enc_kernel_size``/``dec_kernel_size`` take precedence over ``kernel_size`` when given (in the
  original a non-None ``kernel_size`` silently overrides both);
- inputs are checked: a spatial size that is not a multiple of 16 raises ``ValueError`` (the
  original fails later with a shape mismatch at a skip addition);
- ``do_ds`` can only be switched on when the deep-supervision heads were built;
- ``resampling="standard"`` (the paper's Table 1 right ablation) has no counterpart in the original;
- ``layout``: the same function computed on channels-last tensors, the default for inputs on the
  CPU (:mod:`mednext.layout`); ``layout="channels_first"`` is the official computation.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from .blocks import (DIMS, NORM_TYPES, MedNeXtBlock, MedNeXtDownBlock, MedNeXtUpBlock, OutBlock,
                     StridedConvDown, TransposedConvUp, conv_class)
from .layout import check_layout, pointwise, resolve_layout

__all__ = ["MedNeXt", "RESAMPLING", "DIVISOR"]

RESAMPLING = ("residual_bottleneck", "standard")
DIVISOR = 16  # four 2x downsamplings
N_STAGES = 9  # enc0..enc3, bottleneck, dec3..dec0


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _check_kernel(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"{name} must be an odd positive integer (same padding), got {value!r}")
    return value


def _check_nine(name: str, value, broadcast: bool) -> tuple[int, ...]:
    if broadcast and isinstance(value, int) and not isinstance(value, bool):
        value = [value] * N_STAGES
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != N_STAGES:
        raise ValueError(f"{name} must be {'an int or ' if broadcast else ''}a sequence of "
                         f"{N_STAGES} integers (enc0..enc3, bottleneck, dec3..dec0), got {value!r}")
    for v in value:
        _check_int(f"every entry of {name}", v)
    return tuple(value)


class MedNeXt(nn.Module):
    """MedNeXt v1 (Roy et al., MICCAI 2023) for 2D or 3D segmentation.

    Widths are C, 2C, 4C, 8C, 16C with C = ``n_channels``. Encoder kernel -> encoder blocks and
    down blocks; decoder kernel -> bottleneck, up blocks and decoder blocks. ``down_i`` uses
    ``exp_r[i+1]`` (the stage it leads into), ``up_i`` uses the ratio of the decoder stage it feeds.

    Args:
        in_channels: input image channels (>= 1).
        num_classes: output channels of every head (>= 1); logits, no softmax.
        n_channels: C, the width of the first stage (default 32, as every published config).
        exp_r: expansion ratio, an int for all 9 stages or 9 ints (enc0..enc3, bottleneck,
            dec3..dec0). Default 2.
        kernel_size: odd depthwise kernel size used wherever the two below are None. Default 3;
            may be None only when both of them are given.
        enc_kernel_size: odd kernel of encoder blocks and down blocks (default: ``kernel_size``).
        dec_kernel_size: odd kernel of bottleneck, up blocks and decoder blocks (default:
            ``kernel_size``).
        deep_supervision: build the heads ``out_1``..``out_4`` (2C..16C) and start with
            ``do_ds = True``. Default False.
        do_res: identity residual inside every plain block. Default True (all published configs;
            the original class defaults to False).
        do_res_up_down: 1x1 stride-2 (transposed) conv residual in every down/up block. Default
            True. Only used with ``resampling="residual_bottleneck"``.
        block_counts: 9 ints, blocks per stage (same order as ``exp_r``). Default 2 everywhere.
        norm_type: "group" (GroupNorm with one group per channel, default) or "layer"
            (channels-first LayerNorm).
        dim: "3d" (default) or "2d".
        grn: Global Response Normalisation in every plain block, every up block and ``down_1``..
            ``down_3`` - NOT in ``down_0``, reproducing the official code (spec a.11.1) so that its
            GRN checkpoints load. Zero-initialised (identity at init). Default False (no MICCAI
            2023 config uses it).
        checkpointing: non-reentrant activation checkpointing of every block, every down/up block
            and every head while gradients are enabled; identical outputs and gradients, less
            memory, more compute. Switchable later through the attribute. Default False.
        layout: memory layout of the computation (:mod:`mednext.layout`): "channels_first"
            (every layer as the official code, bit-exact with it), "channels_last" (activations
            channels-last from stem to heads, 1x1 convolutions as matrix products; the same
            function up to float rounding, two to four times as fast for training on a CPU) or
            "auto" (default: channels-last for inputs on the CPU, channels-first elsewhere).
            Parameters and state dict are the same in every layout. Switchable later through the
            attribute.
        resampling: "residual_bottleneck" (default, the MedNeXt down/up blocks of Sect. 2.2) or
            "standard", the Table 1 (right) ablation "Standard Up and Downsampling", in which
            ``down_i`` becomes one plain conv (kernel 2, stride 2, bias; C -> 2C) and ``up_i`` one
            plain transposed conv (kernel 2, stride 2, bias; 2C -> C); no norm, activation, residual
            or GRN in either. Kernel 2 stride 2 is what the paper's "standard strided (transposed)
            convolutions" are in ConvNeXt's downsampling layers and in nnU-Net's decoder; it tiles
            the input exactly (n/2 and 2n, no padding quirk) and does not depend on k, so k3 and k5
            share it. ConvNeXt's LayerNorm before the conv is left out: each following MedNeXt
            block normalises right after its depthwise conv. Parameter counts (in 1, 14 classes,
            without DS / with DS): B k3 9,820,207 / 9,833,703 (residual resampling: 10,526,703 /
            10,540,199); B k5 10,108,719 / 10,122,215 (residual: 10,956,335 / 10,969,831).

    Attributes:
        do_ds: return the list ``[out_0 (1/1), out_1 (1/2), out_2 (1/4), out_3 (1/8), out_4
            (1/16)]`` instead of one tensor, in training and eval mode alike. Can be set to True
            only if the model was built with ``deep_supervision=True``.
        checkpointing, layout: see above.

    Every spatial size of the input must be a multiple of 16, else ``ValueError``.

    Example:
        >>> net = MedNeXt(in_channels=1, num_classes=14, exp_r=[2, 3, 4, 4, 4, 4, 4, 3, 2],
        ...               kernel_size=3, deep_supervision=True)     # MedNeXt-B k3
        >>> [y.shape[2] for y in net(torch.zeros(1, 1, 32, 32, 32))]
        [32, 16, 8, 4, 2]
        >>> net.do_ds = False
        >>> net(torch.zeros(1, 1, 32, 32, 32)).shape
        torch.Size([1, 14, 32, 32, 32])
    """

    def __init__(self, in_channels: int, num_classes: int, n_channels: int = 32,
                 exp_r: int | Sequence[int] = 2, kernel_size: int | None = 3,
                 enc_kernel_size: int | None = None, dec_kernel_size: int | None = None,
                 deep_supervision: bool = False, do_res: bool = True, do_res_up_down: bool = True,
                 block_counts: Sequence[int] = (2,) * N_STAGES, norm_type: str = "group",
                 dim: str = "3d", grn: bool = False, checkpointing: bool = False,
                 resampling: str = "residual_bottleneck", layout: str = "auto"):
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels)
        self.num_classes = _check_int("num_classes", num_classes)
        c = self.n_channels = _check_int("n_channels", n_channels)
        exp = self.exp_r = _check_nine("exp_r", exp_r, broadcast=True)
        bc = self.block_counts = _check_nine("block_counts", block_counts, broadcast=False)
        if kernel_size is not None or enc_kernel_size is None or dec_kernel_size is None:
            _check_kernel("kernel_size", kernel_size)
        k_enc = self.enc_kernel_size = _check_kernel(
            "enc_kernel_size", kernel_size if enc_kernel_size is None else enc_kernel_size)
        k_dec = self.dec_kernel_size = _check_kernel(
            "dec_kernel_size", kernel_size if dec_kernel_size is None else dec_kernel_size)
        self.deep_supervision = _check_bool("deep_supervision", deep_supervision)
        _check_bool("do_res", do_res)
        _check_bool("do_res_up_down", do_res_up_down)
        _check_bool("grn", grn)
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
        if dim not in DIMS:
            raise ValueError(f"dim must be one of {tuple(DIMS)}, got {dim!r}")
        if resampling not in RESAMPLING:
            raise ValueError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")
        self.dim, self.norm_type, self.grn, self.resampling = dim, norm_type, grn, resampling
        self.spatial_dims = DIMS[dim]
        common = dict(norm_type=norm_type, dim=dim)

        def stage(width: int, i: int, k: int) -> nn.Sequential:
            return nn.Sequential(*[MedNeXtBlock(width, width, exp[i], k, do_res=do_res, grn=grn,
                                                **common) for _ in range(bc[i])])

        def down(i: int) -> nn.Module:
            cin = c * 2 ** i
            if resampling == "standard":
                return StridedConvDown(cin, 2 * cin, dim)
            # official quirk (spec a.11.1): the GRN flag is not passed to down_0
            return MedNeXtDownBlock(cin, 2 * cin, exp[i + 1], k_enc, do_res=do_res_up_down,
                                    grn=grn and i > 0, **common)

        def up(i: int) -> nn.Module:
            cin = c * 2 ** (i + 1)
            if resampling == "standard":
                return TransposedConvUp(cin, cin // 2, dim)
            return MedNeXtUpBlock(cin, cin // 2, exp[8 - i], k_dec, do_res=do_res_up_down,
                                  grn=grn, **common)

        # registration order = official state-dict order
        self.stem = conv_class(dim)(in_channels, c, kernel_size=1)
        for i in range(4):
            setattr(self, f"enc_block_{i}", stage(c * 2 ** i, i, k_enc))
            setattr(self, f"down_{i}", down(i))
        self.bottleneck = stage(16 * c, 4, k_dec)
        for i in (3, 2, 1, 0):
            setattr(self, f"up_{i}", up(i))
            setattr(self, f"dec_block_{i}", stage(c * 2 ** i, 8 - i, k_dec))
        self.out_0 = OutBlock(c, num_classes, dim)
        # official state-dict key; unused by any computation, hence frozen (see module docstring)
        self.dummy_tensor = nn.Parameter(torch.tensor([1.0]), requires_grad=False)
        if deep_supervision:
            for i in range(1, 5):
                setattr(self, f"out_{i}", OutBlock(c * 2 ** i, num_classes, dim))
        self.do_ds = deep_supervision
        self.checkpointing = checkpointing
        self.layout = layout

    # -- run-time switches -------------------------------------------------------------------
    @property
    def do_ds(self) -> bool:
        return self._do_ds

    @do_ds.setter
    def do_ds(self, value: bool) -> None:
        _check_bool("do_ds", value)
        if value and not self.deep_supervision:
            raise ValueError("do_ds=True needs the deep-supervision heads out_1..out_4; "
                             "build the model with deep_supervision=True")
        self._do_ds = value

    @property
    def checkpointing(self) -> bool:
        return self._checkpointing

    @checkpointing.setter
    def checkpointing(self, value: bool) -> None:
        self._checkpointing = _check_bool("checkpointing", value)

    @property
    def layout(self) -> str:
        return self._layout

    @layout.setter
    def layout(self, value: str) -> None:
        self._layout = check_layout(value)

    def resolved_layout(self, device: torch.device) -> str:
        """The layout this network computes in for inputs on ``device`` ("auto" resolved)."""
        return resolve_layout(self._layout, device)

    # -- forward -------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless x is (N, in_channels, *spatial) with every spatial size a
        multiple of 16."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"MedNeXt(dim={self.dim!r}) expects a {self.spatial_dims + 2}-D input "
                             f"(N, C, *spatial), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"MedNeXt expects {self.in_channels} input channels, got shape "
                             f"{tuple(x.shape)}")
        size = tuple(x.shape[2:])
        if any(s % DIVISOR or s == 0 for s in size):
            raise ValueError(f"MedNeXt needs every spatial size to be a positive multiple of "
                             f"{DIVISOR} (four 2x downsamplings); got spatial size {size}")

    def _call(self, module: nn.Module, x: torch.Tensor, fast: bool) -> torch.Tensor:
        fn = module.forward_channels_last if fast else module
        if self._checkpointing and torch.is_grad_enabled():
            return activation_checkpoint(fn, x, use_reentrant=False)
        return fn(x)

    def _stage(self, blocks: nn.Sequential, x: torch.Tensor, fast: bool) -> torch.Tensor:
        for block in blocks:  # one checkpoint per block, as the original 'outside_block' style
            x = self._call(block, x, fast)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        fast = self.resolved_layout(x.device) == "channels_last"
        # the only layout conversions of the channels-last path: the stem writes channels-last,
        # the heads' outputs are made contiguous again
        x = pointwise(x, self.stem) if fast else self.stem(x)
        skips = []
        for i in range(4):
            x = self._stage(getattr(self, f"enc_block_{i}"), x, fast)
            skips.append(x)
            x = self._call(getattr(self, f"down_{i}"), x, fast)
        x = self._stage(self.bottleneck, x, fast)
        ds = [self._call(self.out_4, x, fast)] if self._do_ds else []
        for i in (3, 2, 1, 0):
            x = skips.pop() + self._call(getattr(self, f"up_{i}"), x, fast)  # additive skip
            x = self._stage(getattr(self, f"dec_block_{i}"), x, fast)
            if self._do_ds and i > 0:
                ds.append(self._call(getattr(self, f"out_{i}"), x, fast))
        outputs = [self._call(self.out_0, x, fast)] + ds[::-1]
        if fast:
            outputs = [o.contiguous() for o in outputs]
        return outputs if self._do_ds else outputs[0]

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, num_classes={self.num_classes}, "
                f"n_channels={self.n_channels}, exp_r={list(self.exp_r)}, "
                f"block_counts={list(self.block_counts)}, kernel=({self.enc_kernel_size}, "
                f"{self.dec_kernel_size}), dim={self.dim!r}, grn={self.grn}, "
                f"resampling={self.resampling!r}, layout={self._layout!r}")
