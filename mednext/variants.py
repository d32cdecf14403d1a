"""The MedNeXt v1 size table (S, B, M, L) as data with provenance, the factory
``create_mednext``, and the reference parameter counts of the official implementation.

Follows Roy et al., "MedNeXt", MICCAI 2023, Table 1 (left) and the official factory
``create_mednext_v1.py`` (MIC-DKFZ/MedNeXt, commit 0b78ed8, Apache-2.0); values as tabulated in
specs/mednext.md b.1 and b.3. Differences from the original factory: deep supervision is on by
default (the paper's trainers always use it; the official factory defaults to off), and any
constructor argument of ``MedNeXt`` can be overridden by keyword.
"""
from __future__ import annotations

from dataclasses import dataclass

from .network import MedNeXt

__all__ = ["Variant", "VARIANTS", "PROVENANCE", "REFERENCE_PARAMS", "create_mednext",
           "get_variant", "reference_parameter_count"]

PROVENANCE = {
    "paper": "Roy et al., MedNeXt: Transformer-driven Scaling of ConvNets for Medical Image "
             "Segmentation, MICCAI 2023, arXiv:2303.09975, Table 1 (left)",
    "repository": "https://github.com/MIC-DKFZ/MedNeXt",
    "commit": "0b78ed8",
    "file": "nnunet_mednext/network_architecture/mednextv1/create_mednext_v1.py",
    "licence": "Apache-2.0",
}


@dataclass(frozen=True)
class Variant:
    """One MedNeXt size. ``exp_r`` and ``block_counts`` are 9 entries: enc0..enc3, bottleneck,
    dec3..dec0. ``checkpointing``: activation checkpointing on by default (the official trainers
    use it for M and L)."""

    name: str
    exp_r: tuple[int, ...]
    block_counts: tuple[int, ...]
    checkpointing: bool
    n_channels: int = 32

    def to_dict(self) -> dict:
        return {"name": self.name, "n_channels": self.n_channels, "exp_r": list(self.exp_r),
                "block_counts": list(self.block_counts), "checkpointing": self.checkpointing,
                "provenance": dict(PROVENANCE)}


VARIANTS: dict[str, Variant] = {
    "S": Variant("S", exp_r=(2,) * 9, block_counts=(2,) * 9, checkpointing=False),
    "B": Variant("B", exp_r=(2, 3, 4, 4, 4, 4, 4, 3, 2), block_counts=(2,) * 9,
                 checkpointing=False),
    "M": Variant("M", exp_r=(2, 3, 4, 4, 4, 4, 4, 3, 2), block_counts=(3, 4, 4, 4, 4, 4, 4, 4, 3),
                 checkpointing=True),
    "L": Variant("L", exp_r=(3, 4, 8, 8, 8, 8, 8, 4, 3), block_counts=(3, 4, 8, 8, 8, 8, 8, 4, 3),
                 checkpointing=True),
}

# Exact parameter counts of the official v1 networks, in_channels 1, 3D, dummy_tensor included:
# (size, kernel, num_classes, deep_supervision) -> count. Source: specs/mednext.md b.3 (official
# code instantiated, and an independent analytic formula; both agree).
REFERENCE_PARAMS: dict[tuple[str, int, int, bool], int] = {}
for _size, _k, _counts in [
    ("S", 3, (5_551_311, 5_564_807, 5_551_278, 5_563_810)),
    ("S", 5, (5_980_943, 5_994_439, 5_980_910, 5_993_442)),
    ("B", 3, (10_526_703, 10_540_199, 10_526_670, 10_539_202)),
    ("B", 5, (10_956_335, 10_969_831, 10_956_302, 10_968_834)),
    ("M", 3, (17_549_359, 17_562_855, 17_549_326, 17_561_858)),
    ("M", 5, (18_261_231, 18_274_727, 18_261_198, 18_273_730)),
    ("L", 3, (61_779_663, 61_793_159, 61_779_630, 61_792_162)),
    ("L", 5, (62_993_295, 63_006_791, 62_993_262, 63_005_794)),
]:
    for (_n, _ds), _count in zip([(14, False), (14, True), (13, False), (13, True)], _counts):
        REFERENCE_PARAMS[(_size, _k, _n, _ds)] = _count


def get_variant(size: str) -> Variant:
    """The variant for "S", "B", "M" or "L" (case-insensitive)."""
    key = size.upper() if isinstance(size, str) else size
    if key not in VARIANTS:
        raise ValueError(f"MedNeXt size must be one of {sorted(VARIANTS)} (case-insensitive), "
                         f"got {size!r}")
    return VARIANTS[key]


def reference_parameter_count(size: str, kernel_size: int, num_classes: int = 14,
                              deep_supervision: bool = True) -> int:
    """The official implementation's parameter count (in_channels 1, 3D) for a tabulated config."""
    key = (get_variant(size).name, kernel_size, num_classes, deep_supervision)
    if key not in REFERENCE_PARAMS:
        raise ValueError(f"no reference parameter count for {key}; tabulated: kernel 3 or 5, "
                         f"13 or 14 classes")
    return REFERENCE_PARAMS[key]


_FIXED = ("in_channels", "num_classes", "kernel_size", "deep_supervision", "dim")
_OVERRIDABLE = ("n_channels", "exp_r", "block_counts", "enc_kernel_size", "dec_kernel_size",
                "do_res", "do_res_up_down", "norm_type", "grn", "checkpointing", "resampling",
                "layout")


def create_mednext(size: str, kernel_size: int, in_channels: int, num_classes: int,
                   deep_supervision: bool = True, dim: str = "3d", **overrides) -> MedNeXt:
    """Build MedNeXt-{S,B,M,L} as published: C = 32, the variant's exp_r and block_counts,
    residual blocks and residual resampling, GroupNorm, no GRN; activation checkpointing on for M
    and L.

    Args:
        size: "S", "B", "M" or "L" (case-insensitive).
        kernel_size: odd depthwise kernel size (3 or 5 in the paper).
        in_channels, num_classes: input channels and output classes.
        deep_supervision: build the 4 extra heads and return 5 outputs while ``do_ds`` is True.
        dim: "3d" or "2d".
        **overrides: any of ``n_channels, exp_r, block_counts, enc_kernel_size, dec_kernel_size,
            do_res, do_res_up_down, norm_type, grn, checkpointing, resampling, layout`` (see
            ``MedNeXt``).

    Example:
        >>> net = create_mednext("b", 3, in_channels=1, num_classes=14, resampling="standard")
    """
    variant = get_variant(size)
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise ValueError(f"unknown MedNeXt override(s) {unknown}; allowed: {list(_OVERRIDABLE)} "
                         f"(and the named arguments {list(_FIXED)})")
    kwargs = dict(n_channels=variant.n_channels, exp_r=variant.exp_r,
                  block_counts=variant.block_counts, do_res=True, do_res_up_down=True,
                  norm_type="group", grn=False, checkpointing=variant.checkpointing)
    kwargs.update(overrides)
    return MedNeXt(in_channels=in_channels, num_classes=num_classes, kernel_size=kernel_size,
                   deep_supervision=deep_supervision, dim=dim, **kwargs)
