"""Training recipes (optimizer, learning rate, schedule, deep supervision, checkpointing) as data.

Two named recipes, each with its provenance:

* ``paper`` -- the MedNeXt paper, Sect. 3.1 (Roy et al., MICCAI 2023, ``shared/seed``): every
  network but nnU-Net trains with AdamW; MedNeXt lr 1e-3 (kernel 5 on KiTS19: 1e-4 "for
  stability"); Swin models (SwinUNETR, nnFormer) and 3D-UX-Net 2.5e-3; ViT models (UNETR, TransBTS,
  TransUNet) 1e-4; nnU-Net its own SGD 1e-2, momentum 0.99, Nesterov. What the paper leaves to the
  nnU-Net framework it uses: weight decay 3e-5, poly decay exponent 0.9 per epoch, gradient-norm
  clip 12, AdamW eps 1e-4 (every AdamW trainer in the MedNeXt code). Deep supervision for nnU-Net
  and MedNeXt only; activation checkpointing for MedNeXt M and L (specs/baselines.md 2, 12;
  specs/mednext.md d).
* ``official-code`` -- the optimizers and learning rates in the trainers of the official MedNeXt
  repository (MIC-DKFZ/MedNeXt 0b78ed8; specs/baselines.md 10), which differ from the paper for
  four baselines: SwinUNETR AdamW 1e-4, nnFormer AdamW 5e-5, 3D-UX-Net AdamW 5e-4, TransBTS SGD
  (momentum 0.99, Nesterov) at 1e-4. MedNeXt stays at 1e-3 for every kernel and dataset: lower-LR
  kernel-5 trainers exist in that code (5e-4, 2.5e-4, 1e-4) but nothing says which one any result
  used (specs/mednext.md c).

Per-dataset overrides are keyed by the paper's task name; a phantom of a task (``phantom-kits19``)
follows its task, so the quick profile trains with the same recipe as the real one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

OPTIMIZERS = ("adamw", "sgd")
RECIPE_NAMES = ("paper", "official-code")

RECIPE_SOURCES = {
    "paper": "Roy et al., MedNeXt, MICCAI 2023, Sect. 3.1; unstated settings from the nnU-Net "
             "framework the paper trains in (weight decay 3e-5, poly 0.9, grad clip 12, AdamW eps 1e-4)",
    "official-code": "optimizer and learning rate of the trainers in MIC-DKFZ/MedNeXt 0b78ed8 "
                     "(nnunet_mednext/training/network_training: MedNeXt and nnUNet_variants/baselines)",
}


@dataclass(frozen=True)
class Recipe:
    """How one model is trained (everything the trainer takes from the registry)."""

    optimizer: str                 # "adamw" | "sgd"
    lr: float                      # initial learning rate, decayed by poly per epoch
    momentum: float | None         # SGD momentum; None for AdamW (betas stay at (0.9, 0.999))
    nesterov: bool
    weight_decay: float
    eps: float | None              # AdamW epsilon; None for SGD
    poly_exponent: float           # lr = lr0 * (1 - epoch / epochs) ** poly_exponent
    grad_clip: float               # global L2 norm
    deep_supervision: bool
    activation_checkpointing: bool

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("lr", "poly_exponent", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.optimizer == "sgd" and (self.momentum is None or not 0 <= self.momentum < 1):
            raise ValueError(f"SGD needs a momentum in [0, 1), got {self.momentum!r}")
        if self.optimizer == "adamw" and (self.eps is None or self.eps <= 0 or self.momentum is not None
                                          or self.nesterov):
            raise ValueError(f"AdamW needs eps > 0 and no momentum/nesterov, got eps={self.eps!r}, "
                             f"momentum={self.momentum!r}, nesterov={self.nesterov!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def adamw(lr: float, **kw: Any) -> Recipe:
    """An AdamW recipe with the shared defaults (eps 1e-4, wd 3e-5, poly 0.9, clip 12, no DS)."""
    base = dict(optimizer="adamw", lr=lr, momentum=None, nesterov=False, weight_decay=3e-5,
                eps=1e-4, poly_exponent=0.9, grad_clip=12.0, deep_supervision=False,
                activation_checkpointing=False)
    return Recipe(**{**base, **kw})


def sgd(lr: float, **kw: Any) -> Recipe:
    """nnU-Net's SGD recipe (momentum 0.99, Nesterov, wd 3e-5, poly 0.9, clip 12)."""
    base = dict(optimizer="sgd", lr=lr, momentum=0.99, nesterov=True, weight_decay=3e-5,
                eps=None, poly_exponent=0.9, grad_clip=12.0, deep_supervision=False,
                activation_checkpointing=False)
    return Recipe(**{**base, **kw})


@dataclass(frozen=True)
class RecipeSet:
    """One named recipe of one model: the base recipe and its per-dataset field overrides."""

    base: Recipe
    per_dataset: Mapping[str, Mapping[str, Any]]   # task name -> {field: value}

    def __post_init__(self):
        known = {f.name for f in fields(Recipe)}
        for dataset, changes in self.per_dataset.items():
            bad = set(changes) - known
            if bad:
                raise ValueError(f"override for {dataset!r} names unknown recipe fields {sorted(bad)}")

    def resolve(self, dataset: str | None) -> Recipe:
        if dataset is None:
            return self.base
        task = dataset[len("phantom-"):] if dataset.startswith("phantom-") else dataset
        return replace(self.base, **self.per_dataset.get(task, {}))

    def to_dict(self) -> dict:
        return {"base": self.base.to_dict(),
                "per_dataset": {k: dict(v) for k, v in self.per_dataset.items()}}


def recipes_for(group: str, kernel: int | None = None, checkpointing: bool = False) -> dict[str, RecipeSet]:
    """The ``paper`` and ``official-code`` recipes of a model group.

    Groups (the paper's wording): ``mednext``; ``nnunet``; ``swin`` (SwinUNETR, nnFormer and
    3D-UX-Net share the paper's LR); ``vit`` (UNETR, TransBTS, TransUNet). The official code
    differs per network, so for it the group is refined by the network name given as
    ``group`` (``swin-unetr``, ``nnformer``, ``3d-uxnet``, ``unetr``, ``transbts``, ``transunet``).
    ``nnunet-resenc`` and ``nnunet-resenc-l-native`` (beyond the paper) are trained as
    ``nnunet``, in both recipes.
    """
    paper_group = {"swin-unetr": "swin", "nnformer": "swin", "3d-uxnet": "swin",
                   "unetr": "vit", "transbts": "vit", "transunet": "vit",
                   # the ResEnc presets train with nnU-Net's default trainer (nnU-Net Revisited)
                   "nnunet-resenc": "nnunet", "nnunet-resenc-l-native": "nnunet"}.get(group, group)
    if paper_group == "mednext":
        mednext = adamw(1e-3, deep_supervision=True, activation_checkpointing=checkpointing)
        kits = {"kits19": {"lr": 1e-4}} if kernel == 5 else {}
        return {"paper": RecipeSet(mednext, kits), "official-code": RecipeSet(mednext, {})}
    if paper_group == "nnunet":
        nnunet = sgd(1e-2, deep_supervision=True)
        return {"paper": RecipeSet(nnunet, {}), "official-code": RecipeSet(nnunet, {})}
    paper_lr = {"swin": 2.5e-3, "vit": 1e-4}.get(paper_group)
    official = {
        "swin-unetr": adamw(1e-4),            # nnUNetTrainerV2_SwinUNETR_128x128x128
        "nnformer": adamw(5e-5),              # nnUNetTrainerV2_nnFormerTumor
        "3d-uxnet": adamw(5e-4),              # nnUNetTrainerV2_3DUXNet
        "unetr": adamw(1e-4),                 # nnUNetTrainerV2_UNETR
        "transunet": adamw(1e-4),             # nnUNetTrainerV2_TransUnet
        "transbts": sgd(1e-4),                # optimizer not overridden: the base class's SGD
    }.get(group)
    if paper_lr is None or official is None:
        raise ValueError(f"unknown recipe group {group!r}")
    return {"paper": RecipeSet(adamw(paper_lr), {}), "official-code": RecipeSet(official, {})}
