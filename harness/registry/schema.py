"""What a registry entry is: :class:`ModelEntry` (with :class:`Origin` and :class:`Constraints`),
its validation, and the vocabulary it may use (families, dimensions, builder options, nnU-Net
planners). The entries themselves, one per model name, are data in :mod:`.entries`.

An entry with ``plans`` trains with the configuration an nnU-Net planner plans for the dataset
itself (its own spacing, patch and batch; :func:`harness.nnunet.plans.plan_native`) instead of
the protocol's 1 mm plans with the profile's patch and batch: its runs name the planner instead
of the profile's patch and batch, and every report marks it as outside the identical protocol.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from harness.errors import UserError

from .recipes import RECIPE_NAMES, RECIPE_SOURCES, Recipe, RecipeSet

FAMILIES = ("mednext", "baseline")
DIMS = ("3d", "2d")
# Optional builder keywords a baseline builder may accept (beyond in_channels, num_classes, patch).
BUILDER_OPTIONS = ("deep_supervision", "spacing")
# nnU-Net planners a model may train with instead of the protocol's plans: planner class ->
# the plans name it writes (nnunetv2 2.8.1, residual_encoder_unet_planners.py).
PLANNERS = {"nnUNetPlannerResEncL": "nnUNetResEncUNetLPlans"}
PLANNED_CONFIGURATIONS = ("3d_fullres",)


@dataclass(frozen=True)
class Origin:
    """Where a network comes from and what this project changed."""

    paper: str
    repository: str
    commit: str
    licence: str
    implementation: str      # the code that builds it here
    changes: str             # deliberate differences from the original, in one paragraph

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Constraints:
    """Input sizes a network accepts.

    ``divisor``: every spatial size must be a multiple of it; ``None`` when the topology is
    planned per patch (nnU-Net: the builder derives and checks it). ``fixed_size``: the input
    must equal the patch the model was built for. ``bottleneck_stride``: the deepest feature map
    is the patch / this stride and is normalised per sample (GroupNorm / InstanceNorm), which
    cannot train on a single voxel, so the patch must leave it at least 2 voxels. ``note``: why.
    """

    divisor: int | None
    fixed_size: bool
    note: str = ""
    bottleneck_stride: int | None = None

    def check(self, name: str, patch: tuple[int, ...]) -> None:
        if self.divisor and any(n % self.divisor for n in patch):
            needed = tuple(-(-n // self.divisor) * self.divisor for n in patch)
            raise ValueError(f"{name}: patch {patch} must be a multiple of {self.divisor} per axis, "
                             f"e.g. {needed}")
        stride = self.bottleneck_stride
        if stride and math.prod(n // stride for n in patch) < 2:
            needed = (max(patch[0], 2 * stride),) + tuple(max(n, stride) for n in patch[1:])
            raise ValueError(f"{name}: patch {patch} leaves a single voxel at the 1/{stride} "
                             f"bottleneck, whose per-sample normalisation cannot train; use at "
                             f"least 2 voxels there, e.g. {needed}")

    def to_dict(self) -> dict:
        return {"divisor": self.divisor, "fixed_size": self.fixed_size,
                "bottleneck_stride": self.bottleneck_stride, "note": self.note}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str                          # "mednext" | "baseline"
    dim: str                             # "3d" | "2d"
    builder: str                         # dotted path of the function that builds it
    kwargs: Mapping[str, Any]            # JSON-serialisable, passed to the builder
    constraints: Constraints
    origin: Origin
    recipes: Mapping[str, RecipeSet]
    test_patch: tuple[int, ...]          # small size the registry tests build it at
    reference_params: Mapping[str, Any]  # exact count at 1 -> 14 channels, paper patch, + source
    init: Mapping[str, str] | None = None   # {"from": <name>, "mode": "upkern" | "continue"}
    builder_options: tuple[str, ...] = ()   # subset of BUILDER_OPTIONS the builder accepts
    label: str = ""
    notes: str = ""
    # {"planner", "plans_name", "configuration"}: trained with what that nnU-Net planner plans
    # for the dataset (spacing, patch, batch) instead of the protocol's plans; None: the protocol
    plans: Mapping[str, str] | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {FAMILIES}, got {self.family!r}")
        if self.dim not in DIMS:
            raise ValueError(f"{self.name}: dim must be one of {DIMS}, got {self.dim!r}")
        if len(self.test_patch) != (3 if self.dim == "3d" else 2):
            raise ValueError(f"{self.name}: test_patch {self.test_patch} does not match dim {self.dim}")
        if set(self.recipes) != set(RECIPE_NAMES):
            raise ValueError(f"{self.name}: recipes must be {RECIPE_NAMES}, got {sorted(self.recipes)}")
        bad = set(self.builder_options) - set(BUILDER_OPTIONS)
        if bad:
            raise ValueError(f"{self.name}: unknown builder options {sorted(bad)}")
        if self.init is not None and self.init.get("mode") not in ("upkern", "continue"):
            raise ValueError(f"{self.name}: init mode must be 'upkern' or 'continue', got {self.init!r}")
        json.dumps(dict(self.kwargs))       # must be serialisable (run provenance)
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        if self.plans is not None:
            self._check_plans()

    def _check_plans(self) -> None:
        plans = dict(self.plans)
        if set(plans) != {"planner", "plans_name", "configuration"}:
            raise ValueError(f"{self.name}: plans must have the keys planner, plans_name and "
                             f"configuration, got {sorted(plans)}")
        if PLANNERS.get(plans["planner"]) != plans["plans_name"]:
            raise ValueError(f"{self.name}: planner {plans['planner']!r} with plans name "
                             f"{plans['plans_name']!r} is not one of {PLANNERS}")
        if plans["configuration"] not in PLANNED_CONFIGURATIONS or self.dim != "3d":
            raise ValueError(f"{self.name}: a planned configuration must be one of "
                             f"{PLANNED_CONFIGURATIONS} of a 3d model, got "
                             f"{plans['configuration']!r} ({self.dim})")
        if "spacing" not in self.builder_options or self.constraints.divisor is not None:
            raise ValueError(f"{self.name}: a model trained with a planner's configuration must "
                             "plan its topology per patch and spacing (builder option 'spacing', "
                             "no fixed divisor)")
        object.__setattr__(self, "plans", MappingProxyType(plans))

    @property
    def supports_deep_supervision(self) -> bool:
        return self.family == "mednext" or "deep_supervision" in self.builder_options

    def recipe(self, recipe_name: str = "paper", dataset: str | None = None) -> Recipe:
        """The recipe ``recipe_name`` for training on ``dataset`` (task or phantom name)."""
        if recipe_name not in self.recipes:
            raise UserError(f"unknown recipe {recipe_name!r} for {self.name}; "
                             f"known: {', '.join(self.recipes)}")
        return self.recipes[recipe_name].resolve(dataset)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "label": self.label, "family": self.family, "dim": self.dim,
            "builder": self.builder, "kwargs": dict(self.kwargs),
            "builder_options": list(self.builder_options),
            "constraints": self.constraints.to_dict(), "origin": self.origin.to_dict(),
            "init": dict(self.init) if self.init else None,
            "recipes": {k: {**v.to_dict(), "source": RECIPE_SOURCES[k]} for k, v in self.recipes.items()},
            "test_patch": list(self.test_patch),
            "reference_params": {k: (list(v) if isinstance(v, tuple) else v)
                                 for k, v in self.reference_params.items()},
            "notes": self.notes, "plans": dict(self.plans) if self.plans else None,
        }
