"""The one trainer: a subclass of nnU-Net v2's ``nnUNetTrainer`` that reads its recipe from data.

Every model trains through :class:`BenchTrainer`; what differs between models is data, not code:
the network (``harness.registry.build_model``), optimizer, learning rate, poly schedule, gradient
clipping and deep supervision (the registry's recipe), and the budget (the profile). nnU-Net's
data loading, foreground oversampling, augmentation, loss and mixed precision (on CUDA only) stay
as nnU-Net does them.

Differences from nnU-Net's trainer, and why:
- The run spec travels as a class attribute of a dynamically created subclass
  (:func:`trainer_class`), because nnU-Net stores ``locals()`` of ``__init__`` and breaks on extra
  parameters; the class is instantiated directly (no lookup by name, which imports timm).
- Deep-supervision scales come from ``registry.deep_supervision_scales`` and the loss checks on
  every call that outputs, targets and weights have the same length (nnU-Net's wrapper zips
  them silently, so a mismatch would train on a truncated set). Weights are nnU-Net v2's
  (1/2^i, lowest resolution 0) except for MedNeXt, whose trainer weights all five outputs.
- A checkpoint every epoch; no ``checkpoint_best.pth`` (nothing reads it), no optimizer state in
  ``checkpoint_final.pth`` (nothing resumes from it); ``progress.csv`` each epoch.
- Checkpoints are written durably and the latest is kept in two generations
  (:mod:`harness.nnunet.checkpoints`; nnU-Net writes ``checkpoint_latest.pth`` in place, so a
  kill or a full disk during the write leaves a truncated file and nothing to resume from). A
  failed write raises :class:`CheckpointWriteError` naming the file, the reason, the free space
  and the checkpoint that is still intact. Once ``checkpoint_final.pth`` is written, latest (by
  nnU-Net) and ``checkpoint_previous.pth`` are removed.
- Mixed precision follows the run's ``precision`` setting (:mod:`harness.studies.options`):
  ``amp`` is nnU-Net's fp16 autocast with a ``GradScaler`` on CUDA; ``fp32`` turns autocast off
  in every forward of the network (training, validation, prediction) and keeps a scaler of
  constant scale 1 (exact) only to skip non-finite steps. A step whose gradients are not finite
  is skipped, as ``GradScaler`` does, and counted on the device (no extra host synchronisation
  per step; nnU-Net's per-step ``loss.item()`` is gone too: the epoch's losses are read once);
  the count and the longest run of consecutive skipped steps are read at each epoch end. After
  :data:`harness.nnunet.precision.NONFINITE_LIMIT` consecutive skipped steps the run stops with
  :class:`NonFiniteLossError` before that epoch's checkpoint is written, so the last one on disk
  is the last good epoch. On a CPU there is no scaler: the step is skipped on the host.
- ``torch.compile`` follows the run's ``compile`` setting (nnU-Net's ``nnUNet_compile``
  environment variable is ignored); ``torch.backends.cudnn.benchmark`` is on with CUDA, as
  nnU-Net's entry point sets it.
- Logs and ``_best_ema`` are stored as plain Python numbers, not numpy scalars, so that
  ``mednext.read_checkpoint`` (weights-only) reads the files with any numpy version (numpy 2
  pickles its scalars under module names numpy 1 does not have). ``load_checkpoint`` takes the
  dict that reader returns (nnU-Net 2.8.1's accepts a dict in its signature but then only binds
  a checkpoint read from a path, with ``weights_only=False``), and keeps this trainer's
  ``init_args``, which a resumed run shares with the one that wrote the file.
- Gradient clipping uses the recipe's norm (nnU-Net hard-codes 12).
- Output goes to the run folder ``work/runs/<run_id>`` instead of ``nnUNet_results``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch.amp import GradScaler

from harness import io as harness_io
from harness.io import write_text
from harness.nnunet import precision
from harness.nnunet.checkpoints import (FINAL, LATEST, PREVIOUS, CheckpointWriteError,
                                        plain_numbers, write_checkpoint)
from harness.nnunet.precision import NonFiniteLossError, SkippedSteps, autocast_off

__all__ = ["BenchTrainer", "CheckedDeepSupervision", "CheckpointWriteError", "NonFiniteLossError",
           "trainer_class", "unwrap"]


class CheckedDeepSupervision(DeepSupervisionWrapper):
    """nnU-Net's deep-supervision loss, refusing outputs/targets/weights of unequal length."""

    def forward(self, *args):
        lengths = [len(a) if isinstance(a, (list, tuple)) else None for a in args]
        if any(n != len(self.weight_factors) for n in lengths):
            raise ValueError(f"deep supervision mismatch: {len(self.weight_factors)} loss weights, "
                             f"but outputs/targets of lengths {lengths} (a tensor has length None)")
        return super().forward(*args)


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The network under a ``torch.compile`` wrapper."""
    return getattr(network, "_orig_mod", network)


class BenchTrainer(nnUNetTrainer):
    """nnU-Net trainer driven by a run spec; use :func:`trainer_class` to bind one."""

    spec: ClassVar[dict | None] = None
    run_dir: ClassVar[str | None] = None
    on_progress: ClassVar[Callable[[str, int, int], None] | None] = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        spec = self._spec()
        prof, recipe = spec["profile"], spec["recipe"]
        self.num_epochs = int(prof["epochs"])
        self.num_iterations_per_epoch = int(prof["iterations_per_epoch"])
        self.num_val_iterations_per_epoch = int(prof["val_iterations_per_epoch"])
        self.initial_lr = float(recipe["lr"])
        self.weight_decay = float(recipe["weight_decay"])
        self.enable_deep_supervision = bool(recipe["deep_supervision"])
        self.precision = str(spec["settings"]["precision"])
        if self.device.type != "cuda":
            self.grad_scaler = None          # as nnU-Net: no scaler without CUDA
        elif self.precision == "fp32":       # scale 1 (exact), never grown: it only skips steps
            self.grad_scaler = GradScaler("cuda", init_scale=1.0, growth_interval=2 ** 30)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.skipped = SkippedSteps()        # non-finite steps, counted on the device
        self.save_every = 1
        self.output_folder_base = self.output_folder = str(self.run_dir)
        self.log_file = str(Path(self.run_dir) / "training_log.txt")
        # the newest complete checkpoint on disk, (file name, epoch it resumes at); for errors
        self.checkpoint_on_disk: tuple[str, int] | None = None

    @classmethod
    def _spec(cls) -> dict:
        if cls.spec is None or cls.run_dir is None:
            raise RuntimeError("BenchTrainer needs a run spec: build the class with trainer_class()")
        return cls.spec

    def _do_i_compile(self) -> bool:
        return bool(self._spec()["settings"]["compile"])

    # ---- network -------------------------------------------------------------------------
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        from harness import registry
        spec = cls._spec()
        net = registry.build_model(
            spec["model"], in_channels=int(num_input_channels),
            num_classes=int(num_output_channels),
            patch_size=tuple(int(p) for p in configuration_manager.patch_size),
            deep_supervision=bool(enable_deep_supervision),
            spacing=tuple(float(s) for s in configuration_manager.spacing),
            activation_checkpointing=bool(spec["recipe"]["activation_checkpointing"]))
        planned = spec["profile"].get("plans")
        if planned:     # trained with a planner's configuration: must be the network it planned
            from harness.nnunet.plans import check_planned_network
            check_planned_network(net, configuration_manager, int(num_input_channels),
                                  int(num_output_channels), bool(enable_deep_supervision),
                                  planned["planner"])
        return autocast_off(net) if spec["settings"]["precision"] == "fp32" else net

    def set_deep_supervision_enabled(self, enabled: bool):
        if not self.enable_deep_supervision:
            return          # built without heads: nothing to switch
        from harness import registry
        registry.set_deep_supervision(unwrap(self.network), enabled)

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        from harness import registry
        model = self._spec()["model"]
        patch = tuple(int(p) for p in self.configuration_manager.patch_size)
        scales = [list(map(float, s)) for s in registry.deep_supervision_scales(
            model, patch, spacing=tuple(self.configuration_manager.spacing), deep_supervision=True)]
        if not scales or any(len(s) != len(patch) for s in scales):
            raise ValueError(f"deep_supervision_scales({model!r}, {patch}) gave {scales}: "
                             f"need one scale per output, {len(patch)} factors each")
        return scales

    def _build_loss(self):
        loss = super()._build_loss()
        if not isinstance(loss, DeepSupervisionWrapper):
            return loss
        weights = loss.weight_factors
        from harness import registry
        if registry.get(self._spec()["model"]).family == "mednext":
            # MedNeXt's trainer weights all five outputs (1, 1/2, ..., 1/16, normalised); nnU-Net
            # v2 gives its lowest-resolution output weight 0 (specs/mednext.md d).
            w = np.array([1 / 2 ** i for i in range(len(weights))])
            weights = tuple(w / w.sum())
        return CheckedDeepSupervision(loss.loss, weights)

    # ---- optimisation --------------------------------------------------------------------
    def configure_optimizers(self):
        recipe = self._spec()["recipe"]
        name = str(recipe["optimizer"]).lower()
        params = self.network.parameters()
        if name == "sgd":
            opt = torch.optim.SGD(params, self.initial_lr, weight_decay=self.weight_decay,
                                  momentum=float(recipe["momentum"]),
                                  nesterov=bool(recipe["nesterov"]))
        elif name == "adamw":
            opt = torch.optim.AdamW(params, self.initial_lr, weight_decay=self.weight_decay,
                                    eps=float(recipe["eps"]))
        else:
            raise ValueError(f"recipe optimizer {recipe['optimizer']!r} is not 'sgd' or 'adamw'")
        sched = PolyLRScheduler(opt, self.initial_lr, self.num_epochs,
                                exponent=float(recipe["poly_exponent"]))
        return opt, sched

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = ([t.to(self.device, non_blocking=True) for t in target]
                  if isinstance(target, list) else target.to(self.device, non_blocking=True))
        self.optimizer.zero_grad(set_to_none=True)
        amp = self.device.type == "cuda" and self.precision == "amp"
        with torch.autocast(self.device.type, enabled=True) if amp else dummy_context():
            output = self.network(data)
            loss = self.loss(output, target)
        # The recipe always clips (grad_clip > 0), so the global gradient norm is at hand: it is
        # finite exactly when every gradient is, which is GradScaler's test for skipping.
        clip = float(self._spec()["recipe"]["grad_clip"])
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), clip)
            self.grad_scaler.step(self.optimizer)       # skipped when a gradient is not finite
            self.grad_scaler.update()
        else:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), clip)
            if torch.isfinite(norm):                    # host tensors: no device to wait for
                self.optimizer.step()
        self.skipped.count(~torch.isfinite(norm.detach()))
        self._iteration += 1
        self._report("train", self._iteration, self.num_epochs * self.num_iterations_per_epoch)
        return {"loss": loss.detach()}

    def _check_nonfinite(self) -> None:
        """Log this epoch's skipped steps; stop after ``NONFINITE_LIMIT`` in a row."""
        total, longest = self.skipped.read()
        if total:
            scale = f"; gradient scale now {self.grad_scaler.get_scale():g}" if self.grad_scaler else ""
            self.print_to_log_file(f"epoch {self.current_epoch}: {total} step(s) with non-finite "
                                   f"gradients skipped (longest run {longest}){scale}")
        if longest >= precision.NONFINITE_LIMIT:
            spec = self._spec()
            raise NonFiniteLossError(
                f"{longest} consecutive training steps with non-finite gradients at epoch "
                f"{self.current_epoch} ({spec['model']} on {spec['dataset']}, fold {self.fold}); "
                f"stopped before this epoch's checkpoint: {self._last_good()} holds the last good "
                "epoch")

    def _last_good(self) -> str:
        if self.checkpoint_on_disk is None:
            return "no checkpoint (the first epoch did not finish)"
        name, epoch = self.checkpoint_on_disk
        return f"{name} (resumes at epoch {epoch})"

    def execution(self) -> dict:
        """How this attempt actually trained (recorded in run.json beside the requested settings)."""
        cuda, net = self.device.type == "cuda", unwrap(self.network)
        return {"device": str(self.device),
                "autocast": "fp16" if cuda and self.precision == "amp" else None,
                "grad_scaler": self.grad_scaler is not None,
                "compiled": self._do_i_compile(),
                "cudnn_benchmark": bool(cuda and torch.backends.cudnn.benchmark),
                # MedNeXt's memory layout (mednext.layout): "auto" resolves per device
                "layout": (net.resolved_layout(self.device) if hasattr(net, "resolved_layout")
                           else None),
                "nonfinite_steps_skipped": self.skipped.total}

    def on_train_epoch_end(self, train_outputs: list[dict]):
        """The epoch's mean loss over its finite steps, read from the device once."""
        losses = torch.stack([o["loss"].float().reshape(()) for o in train_outputs])
        finite = torch.isfinite(losses)
        mean = losses[finite].mean() if bool(finite.any()) else losses.new_tensor(float("nan"))
        self.logger.log("train_losses", float(mean), self.current_epoch)
        self._check_nonfinite()

    # ---- bookkeeping ---------------------------------------------------------------------
    def on_train_start(self):
        super().on_train_start()
        self._iteration = self.current_epoch * self.num_iterations_per_epoch

    def on_epoch_end(self):
        log = self.logger
        log.log("epoch_end_timestamps", time.time(), self.current_epoch)
        self.print_to_log_file("train_loss", np.round(log.get_value("train_losses", step=-1), 4))
        self.print_to_log_file("val_loss", np.round(log.get_value("val_losses", step=-1), 4))
        self.print_to_log_file("Pseudo dice", [np.round(i, 4) for i in
                                               log.get_value("dice_per_class_or_region", step=-1)])
        self._best_ema = max(self._best_ema or -math.inf, log.get_value("ema_fg_dice", step=-1))
        # nnU-Net's checkpoint stores current_epoch + 1: a resumed run starts at the next epoch.
        # The last epoch is saved as checkpoint_final.pth right after, by on_train_end.
        if self.current_epoch < self.num_epochs - 1:
            self.save_checkpoint(str(Path(self.output_folder) / LATEST))
        self.current_epoch += 1
        self.write_progress()

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written by :func:`write_checkpoint` (latest in two generations).
        ``checkpoint_final.pth`` carries no optimizer state: nothing resumes from it (UpKern and
        "continue" runs take the weights and start a fresh optimizer, inference reads the
        weights), and AdamW's state doubles the file."""
        name = Path(filename).name
        if name == "checkpoint_best.pth":
            return
        final = name == FINAL
        epoch = self.current_epoch + 1
        checkpoint = {
            "network_weights": unwrap(self.network).state_dict(),
            "optimizer_state": None if final else self.optimizer.state_dict(),
            "grad_scaler_state": (self.grad_scaler.state_dict()
                                  if self.grad_scaler is not None and not final else None),
            "logging": plain_numbers(self.logger.get_checkpoint()),
            "_best_ema": plain_numbers(self._best_ema),
            "current_epoch": epoch,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": plain_numbers(self.inference_allowed_mirroring_axes),
        }
        if self.checkpoint_on_disk is None:
            intact = "no earlier checkpoint of this run exists: it would start over"
        else:
            held, at = self.checkpoint_on_disk
            intact = (f"the earlier checkpoint {held} (resumes at epoch {at}) is intact and a "
                      f"re-run resumes from it")
        write_checkpoint(checkpoint, filename, keep_previous=name == LATEST, intact=intact)
        if name == LATEST:
            self.checkpoint_on_disk = (LATEST, epoch)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """Restore weights, optimizer, grad scaler, epoch counter and log from a checkpoint dict
        (as :func:`mednext.checkpoint.read_checkpoint` returns it) or a path, read by that
        reader. ``init_args`` are not taken over (see the module docstring)."""
        from mednext.checkpoint import read_checkpoint

        ckpt = filename_or_checkpoint
        if not isinstance(ckpt, dict):
            ckpt = read_checkpoint(ckpt)
        if not self.was_initialized:
            self.initialize()
        net = unwrap(self.network)
        own = net.state_dict()
        weights = {(k[len("module."):] if k not in own and k.startswith("module.") else k): v
                   for k, v in ckpt["network_weights"].items()}
        net.load_state_dict(weights)
        self.current_epoch = int(ckpt["current_epoch"])
        self.logger.load_checkpoint(ckpt["logging"])
        self._best_ema = ckpt["_best_ema"]
        self.inference_allowed_mirroring_axes = ckpt.get("inference_allowed_mirroring_axes",
                                                         self.inference_allowed_mirroring_axes)
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.grad_scaler is not None and ckpt.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(ckpt["grad_scaler_state"])

    def on_train_end(self):
        super().on_train_end()          # writes checkpoint_final.pth, then removes latest
        previous = Path(self.output_folder) / PREVIOUS
        if (Path(self.output_folder) / FINAL).is_file() and previous.exists():
            previous.unlink()
            harness_io.fsync_dir(self.output_folder)
        try:
            self.logger.plot_progress_png(self.output_folder)
        except Exception as exc:      # a plot is a convenience; never fail a run for it
            self.print_to_log_file(f"progress plot failed: {exc}")

    def write_progress(self) -> None:
        """``progress.csv``: epoch, train_loss, val_loss, pseudo_dice, lr, epoch_seconds."""
        log = self.logger.local_logger.my_fantastic_logging
        rows = ["epoch,train_loss,val_loss,pseudo_dice,lr,epoch_seconds"]
        n = len(log["epoch_end_timestamps"])
        for e in range(n):
            secs = log["epoch_end_timestamps"][e] - log["epoch_start_timestamps"][e]
            rows.append(f"{e},{float(log['train_losses'][e]):.6g},{float(log['val_losses'][e]):.6g},"
                        f"{float(log['mean_fg_dice'][e]):.6g},{float(log['lrs'][e]):.6g},{secs:.3f}")
        write_text(Path(self.output_folder) / "progress.csv", "\n".join(rows) + "\n")

    def _report(self, phase: str, done: int, total: int) -> None:
        if type(self).on_progress is not None:
            type(self).on_progress(phase, done, total)

    def print_to_log_file(self, *args, also_print_to_console=True, add_timestamp=True):
        # The job's own log captures stdout; the console shows progress bars instead.
        super().print_to_log_file(*args, also_print_to_console=False, add_timestamp=add_timestamp)


def trainer_class(spec: dict, run_dir: Path,
                  on_progress: Callable[[str, int, int], None] | None = None) -> type[BenchTrainer]:
    """A subclass of :class:`BenchTrainer` bound to one run (nnU-Net's __init__ stays intact)."""
    return type("BenchTrainer", (BenchTrainer,), {
        "spec": spec, "run_dir": str(run_dir),
        "on_progress": staticmethod(on_progress) if on_progress else None,
        "__module__": __name__})
