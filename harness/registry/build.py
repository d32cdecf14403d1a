"""Building registered models, and what the trainer needs to know about their outputs.

``build_model`` is the one place where a model name becomes a network: it validates the patch
against the entry's constraints, takes deep supervision and activation checkpointing from the
recipe unless told otherwise, and calls the entry's builder with the family's calling convention
(MedNeXt: ``mednext.create_mednext(size, kernel_size, ..., deep_supervision, checkpointing)``;
baselines: ``build(in_channels, num_classes, patch_size, [deep_supervision], [spacing])``).
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Callable, Sequence

from torch import nn

from harness.errors import UserError

from .schema import ModelEntry

MEDNEXT_DOWNSAMPLINGS = 4     # MedNeXt returns outputs at 1, 1/2, 1/4, 1/8, 1/16


def _get(name: str) -> ModelEntry:
    from . import get
    return get(name)


def resolve(dotted: str) -> Callable:
    """``"package.module.attr"`` -> the object."""
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def check_patch(entry: ModelEntry, patch_size: Sequence[int]) -> tuple[int, ...]:
    """The patch as a tuple of ints, or ``ValueError`` naming what the entry needs."""
    try:
        patch = tuple(int(n) for n in patch_size)
    except (TypeError, ValueError):
        raise ValueError(f"{entry.name}: patch_size must be a sequence of ints, got {patch_size!r}") from None
    want = 3 if entry.dim == "3d" else 2
    if len(patch) != want or any(n < 1 for n in patch) or any(float(a) != b for a, b in zip(patch_size, patch)):
        raise ValueError(f"{entry.name} is {entry.dim}: patch_size must be {want} positive ints, "
                         f"got {tuple(patch_size)!r}")
    entry.constraints.check(entry.name, patch)
    return patch


def _check_channels(in_channels, num_classes) -> None:
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise UserError(f"in_channels must be a positive int, got {in_channels!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UserError(f"num_classes must be an int >= 2 (background included), got {num_classes!r}")


def build_model(name: str, in_channels: int, num_classes: int, patch_size: Sequence[int],
                deep_supervision: bool | None = None, spacing: Sequence[float] | None = None, *,
                activation_checkpointing: bool | None = None, recipe: str = "paper") -> nn.Module:
    """Build the registered network ``name`` for a patch (voxels) and voxel spacing (mm).

    Args:
        name: a registry name (``harness.registry.names()``).
        in_channels, num_classes: input modalities and output classes (background included).
        patch_size: the training patch; fixed-size models are built for exactly this size.
        deep_supervision: return the list of outputs (full resolution first); default: as the
            recipe trains (MedNeXt, nnU-Net: on; other baselines: off, and True is refused).
        spacing: used by models whose topology depends on it (nnU-Net); ignored otherwise.
        activation_checkpointing: MedNeXt only; default as the recipe (on for M and L).
        recipe: the recipe whose defaults apply ("paper" or "official-code").

    Example: ``build_model("mednext-s-k3", 1, 14, (128, 128, 128))``.
    """
    entry = _get(name)
    patch = check_patch(entry, patch_size)
    _check_channels(in_channels, num_classes)
    r = entry.recipe(recipe)
    ds = r.deep_supervision if deep_supervision is None else bool(deep_supervision)
    ckpt = r.activation_checkpointing if activation_checkpointing is None else bool(activation_checkpointing)
    if ds and not entry.supports_deep_supervision:
        raise ValueError(f"{name} has no deep-supervision outputs (its recipe trains without)")
    builder = resolve(entry.builder)
    if entry.family == "mednext":
        return builder(in_channels=in_channels, num_classes=num_classes, deep_supervision=ds,
                       checkpointing=ckpt, **entry.kwargs)
    if ckpt:
        raise ValueError(f"{name}: activation checkpointing is only implemented for MedNeXt")
    options = {}
    if "deep_supervision" in entry.builder_options:
        options["deep_supervision"] = ds
    if "spacing" in entry.builder_options and spacing is not None:
        options["spacing"] = tuple(float(s) for s in spacing)
    return builder(in_channels, num_classes, patch, **entry.kwargs, **options)


def deep_supervision_scales(name: str, patch_size: Sequence[int], spacing: Sequence[float] | None = None,
                            deep_supervision: bool | None = None) -> list[tuple[float, ...]]:
    """Scale of each network output relative to the patch, full resolution first.

    One tuple (one factor per axis) per output of the model as ``build_model`` builds it:
    MedNeXt 1, 1/2, 1/4, 1/8, 1/16; nnU-Net from its planned strides (128^3: the same five);
    models without deep supervision a single ``(1.0, ...)``.
    """
    entry = _get(name)
    patch = check_patch(entry, patch_size)
    ds = entry.recipe().deep_supervision if deep_supervision is None else bool(deep_supervision)
    if not ds:
        return [(1.0,) * len(patch)]
    if not entry.supports_deep_supervision:
        raise ValueError(f"{name} has no deep-supervision outputs")
    if entry.family == "mednext":
        return [(1.0 / 2 ** i,) * len(patch) for i in range(MEDNEXT_DOWNSAMPLINGS + 1)]
    module = entry.builder.rpartition(".")[0]
    scales = resolve(f"{module}.deep_supervision_scales")
    return [tuple(float(f) for f in s) for s in scales(patch, spacing)]


def set_deep_supervision(model: nn.Module, enabled: bool) -> None:
    """Switch deep-supervision outputs on or off at run time (validation/inference: off).

    MedNeXt: its ``do_ds`` attribute; DNA's U-Nets (nnU-Net): ``decoder.deep_supervision``.
    A model without deep supervision is left as it is.
    """
    enabled = bool(enabled)
    if hasattr(model, "do_ds"):
        model.do_ds = enabled
    elif hasattr(model, "decoder") and hasattr(model.decoder, "deep_supervision"):
        model.decoder.deep_supervision = enabled


@lru_cache(maxsize=None)
def _summary(name: str, in_channels: int, num_classes: int, patch: tuple[int, ...] | None,
             spacing: tuple[float, ...] | None) -> tuple[int, float, tuple[int, ...]]:
    from harness.compute import count_parameters, empty_init, gmacs
    from harness.studies import load_profile

    entry = _get(name)
    patch = patch or tuple(load_profile("paper").patch(entry.dim))
    with empty_init():
        model = build_model(name, in_channels, num_classes, patch, deep_supervision=False,
                            spacing=spacing, activation_checkpointing=False)
    return count_parameters(model), gmacs(model, (1, in_channels) + patch), patch


def compute_summary(name: str, in_channels: int = 1, num_classes: int = 14,
                    patch: Sequence[int] | None = None,
                    spacing: Sequence[float] | None = None) -> dict:
    """Parameters and GMACs of ``name`` at ``patch`` and ``spacing`` (default: the paper
    profile's patch, 128^3 or TransUNet's 512^2, at 1 mm).

    Counted on the meta device (nothing allocated or computed; cached per process), for the
    network that predicts: deep supervision off, batch 1 (see ``harness.compute`` for what is
    counted). Example: ``compute_summary("nnunet")`` -> ``{"params": 31205254, "gmacs": 478.3...,
    "patch": [128, 128, 128]}``.
    """
    _check_channels(in_channels, num_classes)
    params, g, patch = _summary(name, in_channels, num_classes,
                                tuple(int(n) for n in patch) if patch else None,
                                tuple(float(v) for v in spacing) if spacing else None)
    return {"params": params, "gmacs": g, "patch": list(patch)}
