"""The seven baseline networks of the MedNeXt paper, one module each, and checkpoint loading.

Library networks, configured here: ``nnunet`` (dynamic-network-architectures' PlainConvUNet with
nnU-Net's planned topology), ``monai_nets`` (MONAI UNETR and SwinUNETR); beyond the paper,
``resenc`` (DNA's ResidualEncoderUNet as nnU-Net's ResEnc presets lay it out). Hand-written ones,
reimplemented from the spec with the official state-dict layout: ``transunet``, ``transbts``,
``nnformer``, ``uxnet3d``. Each module's docstring gives the paper, the official repository,
commit and licence, and every deliberate difference from the official code.

``load_checkpoint(name, model, path_or_state_dict)`` loads official or project weights into a
baseline built by the registry (names as in the registry: ``nnunet``, ``unetr``, ``swin-unetr``,
``transunet``, ``transbts``, ``nnformer``, ``3d-uxnet``, ``nnunet-resenc``). Imports only torch and the standard
library until a module is asked for; checkpoint files are read by ``mednext.read_checkpoint``, the
project's one weights-only reader.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from types import ModuleType

import torch
from torch import nn

# Registry name -> module, for the hand-written reimplementations.
HAND_WRITTEN = {
    "transunet": "baselines.transunet",
    "transbts": "baselines.transbts",
    "nnformer": "baselines.nnformer",
    "3d-uxnet": "baselines.uxnet3d",
}
# Registry name -> module, for every baseline (library-backed ones included).
MODULES = {
    "nnunet": "baselines.nnunet",
    "nnunet-resenc": "baselines.resenc",
    "unetr": "baselines.monai_nets",
    "swin-unetr": "baselines.monai_nets",
    **HAND_WRITTEN,
}
# Containers in which training frameworks store the weights: nnU-Net v2 ("network_weights"),
# nnU-Net v1 / MedNeXt / Lightning ("state_dict"), common scripts ("model", "model_state_dict", "net").
WRAPPER_KEYS = ("network_weights", "state_dict", "model_state_dict", "model", "net")
# Prefixes that wrappers add to every key: DistributedDataParallel, torch.compile.
STRIPPED_PREFIXES = ("module.", "_orig_mod.")


def module_for(name: str) -> ModuleType:
    """The module that builds baseline ``name``; ``ValueError`` listing the known names."""
    if name not in MODULES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name])


def _read(path_or_state_dict, where: str) -> Mapping:
    if isinstance(path_or_state_dict, Mapping):
        return path_or_state_dict
    from mednext.checkpoint import read_checkpoint

    obj = read_checkpoint(path_or_state_dict)
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {where} holds a {type(obj).__name__}, not a state dict")
    return obj


def _unwrap(obj: Mapping, where: str) -> dict[str, torch.Tensor]:
    """Find the state dict inside a training checkpoint (at most two levels of wrapping)."""
    for _ in range(3):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise ValueError(f"checkpoint {where} holds no state dict: top-level keys "
                             f"{sorted(map(str, obj))[:12]}, none of {WRAPPER_KEYS} is a dict of tensors")
        obj = inner
    else:
        raise ValueError(f"checkpoint {where}: no dict of tensors found within {WRAPPER_KEYS}")
    state = dict(obj)
    for prefix in STRIPPED_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_checkpoint(name: str, model: nn.Module, path_or_state_dict) -> nn.Module:
    """Load weights into ``model`` (built for baseline ``name``) strictly, and return it.

    Accepts a file (read by ``mednext.read_checkpoint``: ``torch.load(weights_only=True)``) or a
    mapping; a state dict wrapped in a training checkpoint (``network_weights``, ``state_dict``,
    ``model`` ...) is unwrapped, ``module.`` / ``_orig_mod.`` prefixes are stripped, and the
    tensors the official code creates but never uses are dropped by the module's
    ``drop_unused_official_keys``. Any missing or unexpected key or shape mismatch raises
    ``ValueError`` naming them and the file.

    Example: ``load_checkpoint("transbts", registry.build_model("transbts", 4, 4, (128,) * 3),
    "model_epoch_last.pth")``.
    """
    module = module_for(name)
    where = (os.fspath(path_or_state_dict) if not isinstance(path_or_state_dict, Mapping)
             else "<state dict>")
    state = module.drop_unused_official_keys(_unwrap(_read(path_or_state_dict, where), where))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        def show(items):
            return f"{len(items)} ({', '.join(items[:8])}{', ...' if len(items) > 8 else ''})"
        raise ValueError(f"checkpoint {where} does not fit {name}: missing {show(missing)}, "
                         f"unexpected {show(unexpected)}, shape mismatches {show(mismatched)}")
    model.load_state_dict(state, strict=True)
    return model
