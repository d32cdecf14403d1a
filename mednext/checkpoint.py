"""Reading MedNeXt weights: official v1 checkpoints, this project's nnU-Net v2 checkpoints, plain
state dicts, and MONAI's ``MedNeXt`` state dicts (through a key map, where the two architectures
agree).

Official checkpoints (MIC-DKFZ/MedNeXt, nnU-Net v1 ``*.model`` files) wrap the weights in
``checkpoint['state_dict']``; nnU-Net v2 in ``checkpoint['network_weights']``; DDP adds a leading
``module.`` and ``torch.compile`` an ``_orig_mod.`` prefix.

:func:`read_checkpoint` is the project's one checkpoint reader (``baselines`` and ``harness`` read
every checkpoint through it): ``torch.load(weights_only=True)``, which runs no pickled code.
Training logs inside checkpoints often hold numpy scalars, which the weights-only unpickler refuses
by default; those (and only a fixed list of numpy scalar/array/dtype reconstructors, looked up by
name, never an arbitrary global) are allowed. Its errors tell a truncated or corrupt file from one
that is refused for the globals it pickles, and name the file.

MONAI's layout (Project-MONAI/MONAI ``monai/networks/nets/mednext.py``, spec e) differs in names
only for MedNeXt-S; for B/M/L its down blocks use another expansion ratio, and it never puts GRN
in down blocks, so those state dicts are refused with the reason.
"""
from __future__ import annotations

import functools
import importlib
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["load_checkpoint", "read_checkpoint", "read_state_dict", "monai_to_official", "is_monai_state_dict"]

WRAPPER_KEYS = ("state_dict", "network_weights", "model_state_dict", "model", "net", "network")
PREFIXES = ("module.", "_orig_mod.")
# numpy objects a training log pickles (scalars, small arrays), by the names pickles use under
# numpy 1.x (numpy.core) and 2.x (numpy._core); allowed under these names, never by pattern
_NUMPY_NAMES = ("numpy.core.multiarray.scalar", "numpy.core.multiarray._reconstruct",
                "numpy._core.multiarray.scalar", "numpy._core.multiarray._reconstruct",
                "numpy.ndarray", "numpy.dtype")
_NUMPY_SAFE = re.compile(r"numpy\.(_?core\.multiarray\.(scalar|_reconstruct)|ndarray|dtype"
                         r"|dtypes\.\w+DType)")
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_MONAI_HEADS = ("enc_stages.", "down_blocks.", "up_blocks.", "dec_stages.", "out_blocks.")


@functools.lru_cache(maxsize=1)
def _numpy_globals() -> tuple:
    """``(object, pickled name)`` for the numpy names above that this numpy provides, plus
    numpy's dtype classes except the object dtype (pickles of numpy scalars refer to the latter
    in a way that ``get_unsafe_globals_in_checkpoint`` does not report). Empty without numpy."""
    found = []
    with warnings.catch_warnings():  # numpy 2 warns on the numpy.core alias of numpy 1 files
        warnings.simplefilter("ignore")
        for name in _NUMPY_NAMES:
            module, _, attr = name.rpartition(".")
            try:
                found.append((getattr(importlib.import_module(module), attr), name))
            except (ImportError, AttributeError):  # numpy absent, or a version without the alias
                continue
        try:
            dtypes = importlib.import_module("numpy.dtypes")
        except ImportError:  # numpy absent, or < 1.25: no dtype classes to allow
            return tuple(found)
    return tuple(found) + tuple(getattr(dtypes, n) for n in dir(dtypes)
                                if n.endswith("DType") and n != "ObjectDType")


def _refused_globals(path: Path, err: Exception) -> list[str]:
    """The globals a weights-only load refused, beyond the allowed numpy objects; empty when the
    failure is not about globals (a corrupt file)."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # a legacy (non-zip) or corrupt file cannot be inspected
        unsafe = []
    refused = [name for name in unsafe if not _NUMPY_SAFE.fullmatch(name)]
    if not refused:  # legacy files: the unpickler's message names the first refused global
        refused = _REFUSED_GLOBAL.findall(str(err))
    return refused


def _first_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def _damaged_member(path: Path) -> str:
    """What is wrong with the zip container of a torch file (a member whose CRC-32 does not
    match, an unreadable directory), or ``""``; legacy (non-zip) files are left to torch.load."""
    if not zipfile.is_zipfile(path):
        return ""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f"damaged zip container: {err}"
    return f"the CRC-32 of member {bad} does not match its bytes" if bad else ""


def read_checkpoint(path: str | os.PathLike) -> object:
    """The object stored in a torch checkpoint file, read with ``torch.load(weights_only=True)``
    onto the CPU: the one checkpoint reader of the project.

    Tensors, plain Python data, ``torch.device`` and the numpy scalars/arrays of training logs
    load; any other pickled global is refused. Errors name the file and what is wrong:

    - ``FileNotFoundError``: no such file;
    - ``ValueError`` "... is unreadable (truncated or corrupt ...)": an empty, cut-off or
      damaged file, or not a torch file at all. The CRC-32 of every member of a (zip) torch file
      is checked first: ``torch.load`` itself does not, so bytes damaged inside a tensor would
      otherwise load as silently wrong weights;
    - ``ValueError`` "... refused by torch.load(weights_only=True) ...": the file pickles objects
      (named) that a weights-only reader does not run.

    Example: ``read_checkpoint("work/runs/<run_id>/checkpoint_final.pth")["network_weights"]``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"checkpoint {path} is unreadable (truncated or corrupt: the file is "
                         f"empty, 0 bytes)")
    damaged = _damaged_member(path)
    if damaged:
        raise ValueError(f"checkpoint {path} is unreadable (truncated or corrupt, {size} bytes: "
                         f"{damaged})")
    try:
        with torch.serialization.safe_globals(list(_numpy_globals())):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files fail in many ways inside torch.load
        refused = _refused_globals(path, err) if isinstance(err, pickle.UnpicklingError) else []
        if refused:
            raise ValueError(
                f"checkpoint {path}: refused by torch.load(weights_only=True); it pickles "
                f"{refused}, objects other than tensors, plain data and numpy scalars/arrays, "
                f"which this reader does not run") from err
        raise ValueError(f"checkpoint {path} is unreadable (truncated or corrupt, {size} bytes: "
                         f"{_first_line(err)})") from err


def _is_state_dict(obj) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _unwrap(obj, origin: str) -> dict[str, torch.Tensor]:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if _is_state_dict(obj.get(key)):
                return dict(obj[key])
        keys = sorted(str(k) for k in obj)[:12]
        raise ValueError(f"{origin}: no state dict found; top-level keys {keys}, expected tensors "
                         f"or a dict of tensors under one of {list(WRAPPER_KEYS)}")
    raise ValueError(f"{origin}: expected a state dict or a dict wrapping one, "
                     f"got {type(obj).__name__}")


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def read_state_dict(source, origin: str | None = None) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from a module, a (wrapped) state dict, or a checkpoint file
    (str/PathLike). Wrapping dicts (``state_dict``, ``network_weights``, ...) are opened and a
    leading ``module.`` / ``_orig_mod.`` prefix common to all keys is removed."""
    if isinstance(source, nn.Module):
        return dict(source.state_dict())
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return _strip_prefixes(_unwrap(read_checkpoint(path), f"checkpoint {path}"))
    return _strip_prefixes(_unwrap(source, origin or "state dict"))


def is_monai_state_dict(sd: Mapping[str, torch.Tensor]) -> bool:
    """True if the keys follow MONAI's MedNeXt layout (``enc_stages.i.j`` ...)."""
    return any(k.startswith(_MONAI_HEADS) for k in sd)


def _monai_key(key: str) -> str:
    parts = key.split(".")
    head = parts[0]
    if head in ("enc_stages", "down_blocks", "up_blocks", "dec_stages", "out_blocks"):
        i = int(parts[1])
        if not 0 <= i < 4:  # out_blocks 0..3 are the four DS heads, deepest first
            raise ValueError(f"MONAI key {key!r}: index {i} out of range for a 4-stage MedNeXt")
        name = {"enc_stages": f"enc_block_{i}", "down_blocks": f"down_{i}",
                "up_blocks": f"up_{3 - i}", "dec_stages": f"dec_block_{3 - i}",
                "out_blocks": f"out_{4 - i}"}[head]  # MONAI lists decoder parts deepest first
        parts = [name] + parts[2:]
    leaf = {"global_resp_beta": "grn_beta", "global_resp_gamma": "grn_gamma"}
    parts[-1] = leaf.get(parts[-1], parts[-1])
    return ".".join(parts)


def monai_to_official(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                                dict[str, str]]:
    """Rename a MONAI MedNeXt state dict to the official layout; also returns official -> MONAI
    names (for error messages). Shapes are not checked here."""
    out, origin = {}, {}
    for key, value in sd.items():
        new = _monai_key(key)
        out[new], origin[new] = value, key
    return out, origin


def _reason(key: str, ckpt: torch.Tensor | None, model: torch.Tensor | None, monai: bool) -> str:
    """Why a tensor does not match, where the cause is known."""
    head = key.split(".")[0]
    if re.fullmatch(r"out_[1-4]", head):
        if ckpt is None:
            return ("the checkpoint has no deep-supervision heads: build the model with "
                    "deep_supervision=False")
        if model is None:
            return ("the checkpoint has deep-supervision heads: build the model with "
                    "deep_supervision=True")
    if key.endswith(("grn_beta", "grn_gamma")):
        if monai and ckpt is None and head.startswith("down_"):
            return "MONAI never puts GRN in down blocks; the official layout has it in down_1..down_3"
        return "GRN on in one and off in the other"
    if not monai or ckpt is None or model is None:
        return ""
    if head.startswith("down_") and key.endswith(("conv2.weight", "conv2.bias", "conv3.weight")):
        ratios = ""
        if key.endswith("conv2.weight"):
            ratios = (f" (expansion ratio {ckpt.shape[0] // ckpt.shape[1]} in the checkpoint, "
                      f"{model.shape[0] // model.shape[1]} in the model)")
        return ("MONAI's down block i uses the expansion ratio of encoder stage i, the official "
                f"MedNeXt that of stage i+1{ratios}; the two architectures agree only where these "
                "ratios are equal (e.g. MedNeXt-S), so MONAI's B/M/L weights cannot be mapped")
    if key.endswith("norm.weight") and ckpt.dim() > 1:
        return "MONAI's 'layer' norm normalises over (C, k, k, k), the official one over C only"
    return ""


def _check_compatible(sd: dict[str, torch.Tensor], model_sd: Mapping[str, torch.Tensor],
                      origin: str, names: dict[str, str] | None) -> None:
    monai = names is not None

    def label(key: str) -> str:
        return f"{key!r} (MONAI {names[key]!r})" if monai and key in names else repr(key)

    def fail(msg: str, reason: str) -> None:
        raise ValueError(f"{origin}: {msg}" + (f": {reason}" if reason else ""))

    for key, target in model_sd.items():
        if key not in sd:
            fail(f"tensor {key!r} (model shape {tuple(target.shape)}) is missing from the "
                 f"checkpoint", _reason(key, None, target, monai))
        if sd[key].shape != target.shape:
            fail(f"tensor {label(key)} has checkpoint shape {tuple(sd[key].shape)} but model "
                 f"shape {tuple(target.shape)}", _reason(key, sd[key], target, monai))
    for key, value in sd.items():
        if key not in model_sd:
            fail(f"unexpected tensor {label(key)} (checkpoint shape {tuple(value.shape)}) that "
                 f"the model does not have", _reason(key, value, None, monai))


def load_checkpoint(model: nn.Module, path_or_state_dict) -> nn.Module:
    """Load MedNeXt weights into ``model`` (strict) and return it.

    Accepts a checkpoint file (official v1 ``*.model``, nnU-Net v2 ``*.pth``, or a plain saved
    state dict), a state dict, or a dict wrapping one; MONAI ``MedNeXt`` state dicts are renamed to
    the official layout first (their missing ``dummy_tensor`` keeps the model's value, 1.0, which no
    computation uses). Any missing, unexpected or differently shaped tensor raises ``ValueError``
    naming the first one, both shapes, and the reason where it is known.
    """
    origin = (f"checkpoint {path_or_state_dict}"
              if isinstance(path_or_state_dict, (str, os.PathLike)) else "state dict")
    sd = read_state_dict(path_or_state_dict, origin)
    model_sd = model.state_dict()
    names = None
    if is_monai_state_dict(sd):
        origin += " (MONAI MedNeXt layout)"
        sd, names = monai_to_official(sd)
        if "dummy_tensor" in model_sd and "dummy_tensor" not in sd:
            sd["dummy_tensor"] = model_sd["dummy_tensor"].clone()
    _check_compatible(sd, model_sd, origin, names)
    model.load_state_dict(sd, strict=True)
    return model
