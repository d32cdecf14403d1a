"""The choices a user makes beyond the study and the profile, each one a named, recorded setting.

The paper's protocol is the default of every option; a run under another value is a different run
(its id changes wherever the value changes what it trains) and its reports are kept apart:
``results/<study>-<profile><suffix>/`` where the suffix names each non-default value, e.g.
``results/table2-quick-official-code/``.

- ``recipe``: ``paper`` (the learning rates of the paper's text, Sect. 3.1) or ``official-code``
  (the optimizers and learning rates of the official MedNeXt trainers; see
  :mod:`harness.registry.recipes`). The run id hashes the recipe's resolved values, not its name,
  so a model whose two recipes agree (nnU-Net, MedNeXt) shares its runs between them.
- ``brats_target``: what BraTS21 trains on. ``labels`` (the official MedNeXt trainers: the three
  tumour labels, softmax, Dice + cross-entropy; whole tumour, tumour core and enhancing tumour are
  formed when scoring) or ``regions`` (nnU-Net v2's region training: one sigmoid output per
  region, Dice + BCE). Only BraTS21 runs carry it.
- ``compile``: ``torch.compile`` of the network (on or off; default the profile's, off in every
  shipped profile as in the paper's nnU-Net v1). No environment variable changes it: nnU-Net's
  ``nnUNet_compile`` is ignored.
- ``precision``: ``amp`` (nnU-Net's mixed precision: fp16 autocast with a gradient scaler on CUDA;
  CPUs train in fp32 either way) or ``fp32`` (no autocast anywhere, training, validation and
  prediction). Default the profile's, ``amp`` in every shipped profile.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Mapping

from harness.datasets.spec import TARGETS as BRATS_TARGETS
from harness.errors import UserError

RECIPES = ("paper", "official-code")
PRECISIONS = ("amp", "fp32")
DEFAULTS = {"recipe": "paper", "brats_target": "labels"}


@dataclass(frozen=True)
class RunOptions:
    """The user's options (see the module docstring). ``compile`` and ``precision`` left None
    take the profile's value: :meth:`resolved` fills them in."""

    recipe: str = "paper"
    brats_target: str = "labels"
    compile: bool | None = None
    precision: str | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (("recipe", self.recipe, RECIPES),
                                     ("BraTS target", self.brats_target, BRATS_TARGETS)):
            if value not in allowed:
                raise UserError(f"unknown {name} {value!r}; known: {', '.join(allowed)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; known: {', '.join(PRECISIONS)}")
        if self.compile is not None and not isinstance(self.compile, bool):
            raise UserError(f"compile must be true or false, got {self.compile!r}")

    def resolved(self, profile) -> "RunOptions":
        """These options with the profile's ``compile`` and ``precision`` where none was given."""
        return replace(self, compile=profile.compile if self.compile is None else self.compile,
                       precision=profile.precision if self.precision is None else self.precision)

    def suffix(self, profile) -> str:
        """``""`` under the defaults, else ``-<value>`` per non-default option (report folders)."""
        r = self.resolved(profile)
        parts = [v for k, v in (("recipe", r.recipe), ("brats_target", r.brats_target))
                 if v != DEFAULTS[k]]
        if r.compile != profile.compile:
            parts.append("compile" if r.compile else "no-compile")
        if r.precision != profile.precision:
            parts.append(r.precision)
        return "".join(f"-{p}" for p in parts)

    def report_name(self, study: str, profile) -> str:
        """``<study>-<profile><suffix>``: the report's folder under ``results`` and its job."""
        return f"{study}-{profile.name}{self.suffix(profile)}"

    def describe(self, profile) -> list[str]:
        """One line per option, for report headers: its value and whether it is the default."""
        r = self.resolved(profile)
        return [f"recipe: {r.recipe}" + ("" if r.recipe == "paper" else " (not the paper's text)"),
                f"BraTS21 trained on: {r.brats_target}"
                + (" (as the official code)" if r.brats_target == "labels" else
                   " (nnU-Net v2 region training, not the official code)"),
                f"torch.compile: {'on' if r.compile else 'off'}",
                f"precision: {r.precision}"
                + (" (fp16 autocast on CUDA, fp32 on CPU)" if r.precision == "amp" else "")]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "RunOptions":
        return cls(**dict(d or {}))


def add_arguments(parser) -> None:
    """The options as command-line flags: ``--recipe``, ``--brats-target``, ``--[no-]compile``,
    ``--precision`` (every command that plans, runs or reads runs takes them)."""
    parser.add_argument("--recipe", default="paper", choices=RECIPES,
                        help="training recipe: the paper's text or the official code (default paper)")
    parser.add_argument("--brats-target", default="labels", choices=BRATS_TARGETS,
                        help="BraTS21 trains on the tumour labels (official code, default) or on "
                             "nnU-Net's regions")
    parser.add_argument("--compile", default=None, action="store_true",
                        help="torch.compile the network (default: the profile's, off)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="amp: fp16 autocast on CUDA as nnU-Net (default: the profile's); "
                             "fp32: no autocast")


def from_args(args) -> RunOptions:
    return RunOptions(recipe=getattr(args, "recipe", "paper"),
                      brats_target=getattr(args, "brats_target", "labels"),
                      compile=getattr(args, "compile", None),
                      precision=getattr(args, "precision", None))
