"""Run identity and provenance: hash the question (the run spec), record the answer (run.json).

A run is its spec (``harness.studies.runs.RunSpec``: data fingerprint, model, fold, resolved
network, profile settings, recipe, settings (compile, precision, BraTS target), init-from run id). Its canonical JSON
(sorted keys, no whitespace) hashed with SHA-256 is the run id; the folder ``work/runs/<run_id>``
is named by it. ``run.json`` beside it records what actually ran: the spec, the status, the error
text, git commit and dirty flag, package versions, device, host, SLURM job id, wall time and peak
memory, one entry per attempt (a resumed run has several), each with its software stack
(:func:`software_stack`: torch, CUDA, cuDNN, nnU-Net, MONAI, device name and driver).

Follows the habit of lm-evaluation-harness (``result_schema.py``): the question is hashed, the
answer is recorded; here the id also carries a readable prefix (model, dataset, fold) so that a
folder listing can be read, and the hash alone decides identity.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from harness.io import write_json
from harness.processes import usable_cpus

PROTOCOL = "mednext-bench/3"   # bump when a change of the harness invalidates finished runs
PACKAGES = ("torch", "nnunetv2", "dynamic-network-architectures", "monai", "numpy", "scipy",
            "SimpleITK", "batchgeneratorsv2", "surface-distance", "mednext-bench")
REPO_ROOT = Path(__file__).resolve().parents[1]


def canonical_json(obj) -> str:
    """The one serialisation that is hashed: sorted keys, no whitespace, plain JSON types."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def spec_hash(spec: dict, length: int = 12) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:length]


def run_id(spec: dict) -> str:
    """``<model>.<dataset>.f<fold>.<hash12>`` where the hash covers the whole canonical spec."""
    for key in ("model", "dataset", "fold"):
        if key not in spec:
            raise ValueError(f"run spec lacks {key!r}: {sorted(spec)}")
    return f"{spec['model']}.{spec['dataset']}.f{spec['fold']}.{spec_hash(spec)}"


def git_state(repo: Path = REPO_ROOT) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the code that runs."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                 timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info() -> dict:
    import torch
    info = {"type": "cuda" if torch.cuda.is_available() else "cpu",
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "usable_cpus": usable_cpus()}
    if info["type"] == "cuda":
        info["name"] = torch.cuda.get_device_name(0)
    return info


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version as ``nvidia-smi`` reports it (None without one)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[0].strip() if lines else None


def software_stack(versions: dict | None = None) -> dict:
    """The numeric stack a run trained on: torch with its CUDA and cuDNN builds, nnU-Net v2,
    MONAI, Python, and the accelerator's name and driver (None where there is none). Known
    regressions depend on these together (e.g. torch 2.9.0 with cuDNN below 9.15: 3D
    convolutions under AMP several times slower, pytorch issue 166122). ``versions``: those of
    :func:`package_versions`, when the caller has them already."""
    import torch
    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    versions = versions or package_versions()
    return {"python": versions["python"], "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": cudnn, "nnunetv2": versions["nnunetv2"],
            "monai": versions["monai"],
            "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
            "driver": _nvidia_driver() if cuda else None}


def peak_memory() -> dict:
    """Peak resident memory of this process (and of CUDA allocations, when there is a GPU)."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss      # KiB on Linux
    out = {"peak_rss_mib": round(rss_kib / 1024, 1)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_cuda_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


class RunRecord:
    """Keeps ``run.json`` of one run up to date across attempts.

    Every attempt (a first start, a resume after a kill, a retry after a failure) is an entry of
    ``attempts`` that is never overwritten: started and ended, host, pid, SLURM job and array
    task, git commit and dirty flag, exit status (``done``, ``failed``, ``interrupted``, or
    ``lost`` for a process that ended without a word: SIGKILL, out of memory, node failure),
    the reason, wall time, peak memory, what the attempt trained and its ``timings``. An attempt
    that is still ``running`` when the next one starts is closed as ``lost`` at its last
    heartbeat (:meth:`heartbeat`, written while it trains). The top level holds the run's
    status and the sums over attempts: ``wall_seconds`` and each of ``timings`` (so the training
    time of a resumed run is the time of all its attempts, and a retry that trained nothing
    does not make it look fast).

    Usage::

        rec = RunRecord(run_dir, spec, run_id, extra={"model_entry": ...})
        rec.start()
        rec.heartbeat(timings={"train_seconds": 12.5})     # while training
        rec.finish("done", timings={...}) or rec.finish("failed", error="...")
    """

    LOST_REASON = ("the process ended without recording it (killed by SIGKILL, out of memory, "
                   "node failure or preemption)")

    def __init__(self, run_dir: Path, spec: dict, run_id_: str, extra: dict | None = None):
        self.path = Path(run_dir) / "run.json"
        self.spec, self.run_id, self.extra = spec, run_id_, extra or {}
        self._t0 = None
        self.data = self.load(self.path) or {}

    @staticmethod
    def load(path: Path) -> dict | None:
        try:
            return json.loads(Path(path).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc

    @property
    def attempt(self) -> dict:
        return self.data["attempts"][-1]

    def start(self) -> None:
        self._t0 = time.time()
        attempts = [dict(a) for a in self.data.get("attempts", [])]
        for a in attempts:
            if a.get("status", "running") == "running" or "ended" not in a:
                last = a.get("heartbeat_unix") or a.get("started_unix") or self._t0
                a.update(status="lost", reason=self.LOST_REASON, ended=_stamp(last),
                         wall_seconds=round(max(0.0, last - (a.get("started_unix") or last)), 2))
        versions = package_versions()
        attempts.append({
            "started": _stamp(self._t0), "started_unix": round(self._t0, 3),
            "host": socket.gethostname(), "pid": os.getpid(),
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"), **git_state(),
            "stack": software_stack(versions), "status": "running",
        })
        self.data = {**{k: v for k, v in self.data.items() if k not in ("attempts",)},
                     "run_id": self.run_id, "spec": self.spec, **self.extra, "status": "running",
                     "error": None, "versions": versions, "device": device_info(),
                     "attempts": attempts}
        self._totals()
        self._write()

    def update(self, **fields) -> None:
        """Set top-level fields."""
        self.data.update(fields)
        self._write()

    def heartbeat(self, **fields) -> None:
        """Record progress of the running attempt (its fields, and the time it was last seen)."""
        now = time.time()
        self.attempt.update(fields, heartbeat_unix=round(now, 3))
        self._totals()
        self._write()

    def finish(self, status: str, error: str | None = None, reason: str | None = None,
               **fields) -> None:
        """End the attempt with ``status`` (done, failed or interrupted). ``fields`` go to the
        attempt (``training``, ``timings``, ...); ``error`` to both the attempt and the run."""
        if status not in ("done", "failed", "interrupted"):
            raise ValueError(f"final status {status!r} must be 'done', 'failed' or 'interrupted'")
        now = time.time()
        wall = now - self._t0 if self._t0 else None
        self.attempt.update({"ended": _stamp(now), "status": status, "reason": reason or error,
                             "wall_seconds": round(wall, 2) if wall is not None else None,
                             **peak_memory(), **fields})
        self.data.update({"status": status, "error": error})
        self._totals()
        self._write()

    def _totals(self) -> None:
        attempts = self.data.get("attempts", [])
        timings: dict[str, float] = {}
        for a in attempts:
            for key, value in (a.get("timings") or {}).items():
                if isinstance(value, (int, float)):
                    timings[key] = round(timings.get(key, 0.0) + value, 2)
        self.data.update({
            "wall_seconds": round(sum(a.get("wall_seconds") or 0 for a in attempts), 2),
            "peak_rss_mib": max([a.get("peak_rss_mib") or 0 for a in attempts] or [0]),
            "timings": timings,
        })

    def _write(self) -> None:
        write_json(self.path, self.data)


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))
