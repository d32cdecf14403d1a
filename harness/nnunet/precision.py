"""Precision settings of a run: autocast switched off for ``fp32``, and non-finite steps counted.

``autocast_off`` makes a module compute in fp32 inside any autocast region a caller opens (nnU-Net
opens CUDA autocast regions of its own in validation and prediction). :class:`SkippedSteps`
counts the optimizer steps skipped for non-finite gradients on the device, so that the check adds
no host synchronisation per step; the trainer reads it once per epoch and stops a run after
:data:`NONFINITE_LIMIT` consecutive skipped steps (:class:`NonFiniteLossError`).
"""
from __future__ import annotations

import torch

NONFINITE_LIMIT = 50   # consecutive skipped steps that stop a run (a scaler's fp16 scale
                       # reaches 2^-34 by then: no calibration takes that long)


class NonFiniteLossError(RuntimeError):
    """Training produced only non-finite gradients for :data:`NONFINITE_LIMIT` consecutive steps;
    the run stops with its last good checkpoint."""


def autocast_off(module: torch.nn.Module) -> torch.nn.Module:
    """Run ``module``'s forward with autocast disabled whatever its caller enabled (precision
    ``fp32``: nnU-Net's validation and prediction open a CUDA autocast region of their own)."""
    kinds = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    contexts: list = []

    def enter(mod, args):
        ctxs = [torch.autocast(kind, enabled=False) for kind in kinds]
        for ctx in ctxs:
            ctx.__enter__()
        contexts.append(ctxs)

    def leave(mod, args, output):
        for ctx in reversed(contexts.pop()):
            ctx.__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave, always_call=True)
    return module


class SkippedSteps:
    """Device-side counters of skipped steps: this epoch's total, the current run of consecutive
    ones (carried across epochs) and the longest run this epoch; ``total`` sums the epochs read.

    Example::

        skipped = SkippedSteps()
        skipped.count(~torch.isfinite(grad_norm))      # every step, no synchronisation
        epoch_total, longest_run = skipped.read()       # once per epoch
    """

    def __init__(self) -> None:
        self._counts: torch.Tensor | None = None         # total, current run, longest run
        self.total = 0

    def count(self, bad: torch.Tensor) -> None:
        bad = bad.to(torch.int64)
        if self._counts is None:
            self._counts = torch.zeros(3, dtype=torch.int64, device=bad.device)
        total, run, longest = self._counts.unbind()
        run = (run + bad) * bad
        self._counts = torch.stack([total + bad, run, torch.maximum(longest, run)])

    def read(self) -> tuple[int, int]:
        """``(skipped this epoch, longest run this epoch)``; starts the next epoch's counts."""
        if self._counts is None:
            return 0, 0
        total, run, longest = (int(v) for v in self._counts.tolist())
        zero = torch.zeros_like(self._counts[0])
        self._counts = torch.stack([zero, self._counts[1], zero])
        self.total += total
        return total, longest
