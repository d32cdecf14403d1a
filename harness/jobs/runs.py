"""Run specs: the cells of a study and the canonical spec (hence the id) of each run.

The spec holds exactly what decides the result of a run: dataset, model (and its dimension),
fold, the profile's resolved settings for that model (budget, patch and batch of its dimension,
mirroring, phantom size), the model's recipe from the registry, and the id of the run it starts
from (UpKern or "continue"). The profile's name and its list of folds are left out on purpose:
two profiles with the same settings share their runs, and adding a fold retrains nothing.
"""
from __future__ import annotations

from pathlib import Path

from harness.provenance import PROTOCOL, RunRecord, process_alive, run_id
from harness.studies import Profile, Study

RECIPE = "paper"   # the registry's recipe of the paper (Sect. 3.1); its code history differs
PHANTOM_SEED = 20230309     # fixed: the phantoms are part of the benchmark's definition


def profile_settings(profile: Profile, dim: str) -> dict:
    """The profile's settings that a run of dimension ``dim`` depends on."""
    return {
        "data": profile.data, "epochs": profile.epochs,
        "iterations_per_epoch": profile.iterations_per_epoch,
        "val_iterations_per_epoch": profile.val_iterations_per_epoch,
        "patch": list(profile.patch(dim)), "batch": profile.batch(dim),
        "mirroring": profile.mirroring, "phantom": _phantom(profile),
    }


def _phantom(profile: Profile) -> dict | None:
    """The phantom settings, with the generator version: new phantoms are new runs."""
    if profile.phantom is None:
        return None
    from harness.datasets.phantom import GENERATOR_VERSION
    return {**profile.phantom, "seed": PHANTOM_SEED, "generator": GENERATOR_VERSION}


def run_spec(task: str, model: str, fold: int, profile: Profile,
             _stack: tuple[str, ...] = ()) -> dict:
    """The canonical spec of one run; the run it starts from is resolved recursively."""
    from harness import registry

    if model in _stack:
        raise ValueError(f"model {model!r} initialises from itself: {' -> '.join(_stack + (model,))}")
    if fold not in range(5):
        raise ValueError(f"fold {fold!r} is not in 0..4")
    entry = registry.get(model)
    dataset = profile.dataset_name(task)
    init = None
    if entry.init is not None:
        src = run_spec(task, entry.init["from"], fold, profile, _stack + (model,))
        init = {"mode": entry.init["mode"], "model": entry.init["from"], "run_id": run_id(src)}
    return {
        "protocol": PROTOCOL, "dataset": dataset, "task": task, "model": model, "fold": fold,
        "dim": entry.dim, "profile": profile_settings(profile, entry.dim),
        "recipe": entry.recipe(RECIPE, task).to_dict(), "init": init,
    }


def run_plan(study: Study, profile: Profile) -> list[dict]:
    """Every run a study needs, sources before the runs that start from them.

    One dict per run: ``run_id``, ``dataset``, ``task``, ``model``, ``fold``, ``spec`` and
    ``in_study`` (False for a source run that the study does not list as a row).
    """
    out: dict[str, dict] = {}
    for task in study.datasets:
        for fold in profile.folds:
            for model in study.models:
                _add_chain(out, task, model, fold, profile, True)
    return list(out.values())


def run_chain(task: str, model: str, fold: int, profile: Profile) -> list[dict]:
    """One run and the runs it starts from (sources first), as :func:`run_plan` lists them."""
    out: dict[str, dict] = {}
    _add_chain(out, task, model, fold, profile, True)
    return list(out.values())


def _add_chain(out: dict, task: str, model: str, fold: int, profile: Profile,
               in_study: bool) -> None:
    from harness import registry

    entry = registry.get(model)
    if entry.init is not None:
        _add_chain(out, task, entry.init["from"], fold, profile, False)
    spec = run_spec(task, model, fold, profile)
    rid = run_id(spec)
    if rid in out:
        out[rid]["in_study"] |= in_study
        return
    out[rid] = {"run_id": rid, "dataset": spec["dataset"], "task": task, "model": model,
                "fold": fold, "spec": spec, "in_study": in_study}


def run_status(run_dir: Path) -> str:
    """Status of a run folder: done | failed | running | pending (a killed run is pending)."""
    import socket

    rec = RunRecord.load(Path(run_dir) / "run.json")
    if rec is None:
        return "pending"
    status = rec.get("status", "pending")
    if status == "running":
        last = (rec.get("attempts") or [{}])[-1]
        if last.get("host") == socket.gethostname() and last.get("pid") \
                and not process_alive(int(last["pid"])):
            return "pending"
    return status if status in ("done", "failed", "running") else "pending"
