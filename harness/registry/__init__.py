"""Model registry: model name -> builder + recipe + constraints + origin, one entry per variant.

Public API (the trainer, the job planner and the reports use exactly these):

- ``names()``, ``get(name) -> ModelEntry``; ``entry.recipe(recipe_name="paper", dataset=None)``
  -> ``Recipe``; ``entry.to_dict()`` (JSON, for run provenance);
- ``build_model(name, in_channels, num_classes, patch_size, deep_supervision=None, spacing=None)``;
- ``deep_supervision_scales(name, patch_size)``, ``set_deep_supervision(model, enabled)``;
- ``compute_summary(name, in_channels=1, num_classes=14, patch=None, spacing=None)`` -> params
  and GMACs at the paper patch (or the one given).

The entries are data (``entries.py``), the recipes too (``recipes.py``); nothing here imports a
network until a model is built.
"""
from __future__ import annotations

from functools import lru_cache

from harness.errors import UserError

from .build import (build_model, check_patch, compute_summary, deep_supervision_scales,
                    set_deep_supervision)
from .schema import Constraints, ModelEntry, Origin
from .recipes import RECIPE_NAMES, Recipe, RecipeSet

__all__ = [
    "Constraints", "ModelEntry", "Origin", "RECIPE_NAMES", "Recipe", "RecipeSet", "build_model",
    "check_patch", "compute_summary", "deep_supervision_scales", "get", "names",
    "set_deep_supervision",
]


@lru_cache(maxsize=1)
def _entries() -> dict[str, ModelEntry]:
    from .entries import all_entries
    return all_entries()


def names() -> list[str]:
    """Every registered model name (MedNeXt variants, ablation variants, then the baselines)."""
    return list(_entries())


def get(name: str) -> ModelEntry:
    """The entry of ``name``; :class:`~harness.errors.UserError` listing the known names otherwise."""
    table = _entries()
    if name not in table:
        raise UserError(f"unknown model {name!r}; known: {', '.join(table)}")
    return table[name]
