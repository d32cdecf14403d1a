"""Which runs a study expects, and the identity of each run.

A run is one (dataset, model, fold) trained under a profile. :class:`RunSpec` is its identity: a
small frozen record of everything that decides its result, resolved to values:

- ``data``: the data it trains on. For a phantom, the generator's settings and version; for real
  data, the dataset's content fingerprint (:mod:`harness.datasets.fingerprint`: ``dataset.json``,
  case list, file sizes and content hashes). A re-converted dataset is new data; the same data in
  another folder is not.
- ``network``: the model's resolved builder and its arguments (not only its name), so a changed
  registry entry gives new runs;
- ``profile``: the profile's settings that reach training (budget, patch and batch of the model's
  dimension, mirroring); its name and list of folds are left out on purpose: two profiles with
  the same settings share their runs, and adding a fold retrains nothing. A model trained with
  what an nnU-Net planner plans for the dataset (registry ``plans``: ``nnunet-resenc-l-native``)
  has no profile patch and batch: ``plans`` names the planner, its plans and configuration
  instead (the planned spacing, patch and batch follow from the data, the planner and
  nnunetv2's version, and each run records them in ``run.json``);
- ``recipe``: the resolved training recipe (optimizer, learning rate, schedule, loss switches),
  from the recipe the user chose (:class:`~harness.studies.options.RunOptions`); its name is left
  out, so two recipes that resolve to the same values share their runs;
- ``settings``: the other options that change what trains (:mod:`harness.studies.options`):
  ``compile`` and ``precision`` always, ``brats_target`` (labels or regions) for BraTS21, and
  for a 2D model the dataset's slicing plane;
- ``init``: the id of the run it starts from (UpKern or "continue"), resolved recursively.

The run id is derived from it in one place (:attr:`RunSpec.run_id`, through
:func:`harness.provenance.run_id`). This module sits below both the job layer (which runs the
cells) and the reports (which read them), so neither imports the other.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.errors import UserError
from harness.provenance import PROTOCOL, canonical_json, run_id
from harness.studies import Profile, Study, load_profile, load_study
from harness.studies.options import RunOptions

PHANTOM_SEED = 20230309     # fixed: the phantoms are part of the benchmark's definition
SPEC_KEYS = ("protocol", "dataset", "task", "model", "fold", "dim", "data", "network", "profile",
             "recipe", "settings", "init")


@dataclass(frozen=True)
class RunSpec:
    """The identity of one run (see the module docstring); JSON on the wire, ``to_dict()``."""

    dataset: str
    task: str
    model: str
    fold: int
    dim: str
    data: Mapping[str, Any]
    network: Mapping[str, Any]
    profile: Mapping[str, Any]
    recipe: Mapping[str, Any]
    settings: Mapping[str, Any] = field(default_factory=dict)
    init: Mapping[str, Any] | None = None
    protocol: str = PROTOCOL
    _id: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.fold not in range(5):
            raise UserError(f"fold {self.fold!r} is not in 0..4")
        canonical_json(self._plain())               # plain JSON values only (raises otherwise)
        object.__setattr__(self, "_id", run_id(self._plain()))

    def _plain(self) -> dict:
        return {"protocol": self.protocol, "dataset": self.dataset, "task": self.task,
                "model": self.model, "fold": int(self.fold), "dim": self.dim,
                "data": self.data, "network": self.network, "profile": self.profile,
                "recipe": self.recipe, "settings": self.settings, "init": self.init}

    @property
    def run_id(self) -> str:
        return self._id

    def to_dict(self) -> dict:
        """A deep copy as plain JSON types (what jobs carry and ``run.json`` records)."""
        return copy.deepcopy(self._plain())

    @classmethod
    def from_dict(cls, d: Mapping) -> "RunSpec":
        missing = [k for k in SPEC_KEYS if k not in d]
        extra = [k for k in d if k not in SPEC_KEYS]
        if missing or extra:
            raise ValueError(f"run spec: missing keys {missing}, unknown keys {extra}")
        d = copy.deepcopy(dict(d))
        return cls(**d)

    def replace(self, **changes) -> "RunSpec":
        """A copy with some fields changed (``profile={...}`` replaces the whole mapping)."""
        return RunSpec.from_dict({**self._plain(), **changes})


# ---- data --------------------------------------------------------------------------------

def phantom_data(task: str, profile: Profile) -> dict:
    """The data block of a phantom profile: the generator's settings, hashed."""
    from harness.datasets import task_spec
    from harness.datasets.phantom import GENERATOR_VERSION

    if profile.phantom is None:
        raise ValueError(f"profile {profile.name!r} has no phantom settings")
    settings = {"cases": int(profile.phantom["cases"]), "size": int(profile.phantom["size"]),
                "seed": PHANTOM_SEED, "generator": GENERATOR_VERSION}
    digest = hashlib.sha256(canonical_json({"task": task, **settings}).encode()).hexdigest()
    return {"source": "phantom", "folder": task_spec(profile.dataset_name(task)).folder,
            "fingerprint": digest, "phantom": settings}


def real_data(task: str, data_dir: str | Path, work: str | Path) -> dict:
    """The data block of a converted real dataset under ``data_dir`` (content fingerprint)."""
    from harness.datasets import task_spec
    from harness.datasets.fingerprint import dataset_fingerprint

    folder = task_spec(task).folder
    fp = dataset_fingerprint(Path(data_dir) / folder, Path(work) / "datasets" / "fingerprints")
    return {"source": "real", "folder": folder, "fingerprint": fp["fingerprint"], "phantom": None}


def data_root(work: str | Path, dataset: str, data: Mapping) -> Path:
    """The nnU-Net roots (raw, preprocessed) of one dataset version: one folder per fingerprint,
    so that two versions of a dataset (two phantom sizes, a re-conversion) never share files."""
    return Path(work) / "datasets" / f"{dataset}-{data['fingerprint'][:12]}"


def _current_path(work: Path, dataset: str) -> Path:
    return Path(work) / "datasets" / f"{dataset}.current.json"


def resolve_sources(tasks, profile: Profile, work: str | Path,
                    data_dir: str | Path | None = None) -> dict[str, dict]:
    """The data block of each task: computed for phantoms, fingerprinted for real data.

    For real data the fingerprints are also recorded in ``work/datasets/<dataset>.current.json``
    (with the folder they came from), so that a later report without ``--data`` reads the cells
    of the data the study was last planned with.
    """
    from harness.io import write_json

    out = {}
    for task in tasks:
        if profile.data == "phantom":
            out[task] = phantom_data(task, profile)
            continue
        if data_dir is None:
            raise UserError(f"profile {profile.name!r} trains on real data: pass --data DIR "
                            "(a folder of converted nnU-Net raw datasets)")
        out[task] = real_data(task, data_dir, work)
        write_json(_current_path(Path(work), profile.dataset_name(task)),
                   {**out[task], "path": str((Path(data_dir) / out[task]["folder"]).resolve())})
    return out


def recorded_sources(tasks, profile: Profile, work: str | Path) -> dict[str, dict | None]:
    """Data blocks without touching the data: phantoms computed, real data as last planned
    (None for a dataset never planned in ``work``)."""
    out: dict[str, dict | None] = {}
    for task in tasks:
        if profile.data == "phantom":
            out[task] = phantom_data(task, profile)
            continue
        try:
            rec = json.loads(_current_path(Path(work), profile.dataset_name(task)).read_text())
        except (OSError, ValueError):
            out[task] = None
            continue
        out[task] = {k: rec[k] for k in ("source", "folder", "fingerprint", "phantom")}
    return out


# ---- runs --------------------------------------------------------------------------------

def profile_settings(profile: Profile, dim: str, plans: Mapping | None = None) -> dict:
    """The profile's settings that a run of dimension ``dim`` depends on; with ``plans`` (a
    registry entry's planner), the planner in place of the profile's patch and batch."""
    out = {"epochs": profile.epochs, "iterations_per_epoch": profile.iterations_per_epoch,
           "val_iterations_per_epoch": profile.val_iterations_per_epoch}
    if plans is None:
        out.update(patch=list(profile.patch(dim)), batch=profile.batch(dim))
    else:
        out["plans"] = dict(plans)
    out["mirroring"] = profile.mirroring
    return out


def network_settings(entry) -> dict:
    """The model's resolved builder and arguments (what builds the network, not its name)."""
    return {"builder": entry.builder, "kwargs": dict(entry.kwargs),
            "builder_options": list(entry.builder_options)}


def run_settings(task: str, options: RunOptions, dim: str | None = None) -> dict:
    """The settings block of a run of dimension ``dim`` on ``task`` under resolved ``options``
    (``dim`` None: the settings every run has, without a 2D run's plane).

    A 2D run also carries its slicing plane (:func:`harness.datasets.spec.slicing_plane`): the
    plane and the transpose that decide what it trains on; the plane's sources and certainty
    are documentation, recorded with the dataset's facts, not hashed.
    """
    from harness.datasets.spec import slicing_plane

    out = {"compile": bool(options.compile), "precision": options.precision}
    if task == "brats21":
        out["brats_target"] = options.brats_target
    if dim == "2d":
        plane = slicing_plane(task)
        out["plane"] = {"plane": plane["plane"], "transpose_forward": plane["transpose_forward"]}
    return out


def run_spec(task: str, model: str, fold: int, profile: Profile, data: Mapping | None = None,
             options: RunOptions | None = None, _stack: tuple[str, ...] = ()) -> RunSpec:
    """The spec of one run; the run it starts from is resolved recursively (same options).

    ``data`` is the task's data block (:func:`resolve_sources`); phantom profiles compute it.
    ``options`` default to the paper's (:class:`RunOptions`), compile and precision the profile's.
    """
    from harness import registry

    if model in _stack:
        raise ValueError(f"model {model!r} initialises from itself: {' -> '.join(_stack + (model,))}")
    if fold not in range(5):
        raise UserError(f"fold {fold!r} is not in 0..4")
    if data is None:
        if profile.data != "phantom":
            raise UserError(f"profile {profile.name!r} trains on real data: its runs need the "
                            "dataset's fingerprint (pass --data DIR)")
        data = phantom_data(task, profile)
    options = (options or RunOptions()).resolved(profile)
    entry = registry.get(model)
    init = None
    if entry.init is not None:
        src = run_spec(task, entry.init["from"], fold, profile, data, options, _stack + (model,))
        init = {"mode": entry.init["mode"], "model": entry.init["from"], "run_id": src.run_id}
    return RunSpec(dataset=profile.dataset_name(task), task=task, model=model, fold=int(fold),
                   dim=entry.dim, data=dict(data), network=network_settings(entry),
                   profile=profile_settings(profile, entry.dim, entry.plans),
                   recipe=entry.recipe(options.recipe, task).to_dict(),
                   settings=run_settings(task, options, entry.dim), init=init)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a plan: its spec, and whether it is a cell of the study (a kernel-3 source
    run that the study does not list as a row is not)."""

    spec: RunSpec
    in_study: bool

    @property
    def run_id(self) -> str:
        return self.spec.run_id


def run_plan(study: Study, profile: Profile, sources: Mapping[str, Mapping],
             options: RunOptions | None = None) -> list[PlannedRun]:
    """Every run a study needs, sources before the runs that start from them."""
    out: dict[str, PlannedRun] = {}
    for task in study.datasets:
        for fold in profile.folds:
            for model in study.models:
                _add_chain(out, task, model, fold, profile, sources[task], True, options)
    return list(out.values())


def run_chain(task: str, model: str, fold: int, profile: Profile, data: Mapping | None = None,
              options: RunOptions | None = None) -> list[PlannedRun]:
    """One run and the runs it starts from (sources first)."""
    out: dict[str, PlannedRun] = {}
    _add_chain(out, task, model, fold, profile, data, True, options)
    return list(out.values())


def _add_chain(out: dict, task: str, model: str, fold: int, profile: Profile, data,
               in_study: bool, options: RunOptions | None) -> None:
    from harness import registry

    entry = registry.get(model)
    if entry.init is not None:
        _add_chain(out, task, entry.init["from"], fold, profile, data, False, options)
    spec = run_spec(task, model, fold, profile, data, options)
    old = out.get(spec.run_id)
    out[spec.run_id] = PlannedRun(spec, in_study or (old is not None and old.in_study))


def expected_runs(study: str, profile: str, work: str | Path,
                  sources: Mapping[str, Mapping | None] | None = None,
                  options: RunOptions | None = None) -> list[dict]:
    """The cells a study declares under a profile: one dict per (dataset, model, fold).

    Keys: ``run_id`` (None when the dataset's data are unknown: a real dataset never planned in
    ``work``), ``dataset``, ``task``, ``model``, ``fold``, ``run_dir`` (absolute or None),
    ``data_fingerprint``, ``recipe`` and ``settings`` (the resolved values the run trains with;
    None when the run id is), ``plans`` (the registry entry's planner when the model trains with
    its own plans, outside the identical protocol; None otherwise). Only the study's own rows.
    ``sources`` defaults to :func:`recorded_sources`, ``options`` to the paper's.
    """
    from harness import registry

    st, prof = load_study(study), load_profile(profile)
    work = Path(work).resolve()
    if sources is None:
        sources = recorded_sources(st.datasets, prof, work)
    plans = {m: dict(registry.get(m).plans or {}) or None for m in st.models}
    out = []
    for task in st.datasets:
        data = sources.get(task)
        if data is None:
            for fold in prof.folds:
                for model in st.models:
                    out.append({"run_id": None, "dataset": prof.dataset_name(task), "task": task,
                                "model": model, "fold": fold, "run_dir": None,
                                "data_fingerprint": None, "recipe": None, "settings": None,
                                "plans": plans[model]})
            continue
        for run in run_plan(dataclasses.replace(st, datasets=(task,)), prof, {task: data}, options):
            if not run.in_study:
                continue
            s = run.spec
            out.append({"run_id": s.run_id, "dataset": s.dataset, "task": s.task, "model": s.model,
                        "fold": s.fold, "run_dir": str(work / "runs" / s.run_id),
                        "data_fingerprint": data["fingerprint"], "recipe": dict(s.recipe),
                        "settings": dict(s.settings), "plans": plans[s.model]})
    return out
