"""The one seam to nnU-Net v2 (2.8.1): the only package of the project that imports ``nnunetv2``.

- :mod:`~harness.nnunet.env` -- nnU-Net's environment (folders, worker counts, device).
- :mod:`~harness.nnunet.plans` -- plan once with nnU-Net, impose the protocol (1 mm, patch,
  batch), preprocess once.
- :mod:`~harness.nnunet.trainer` -- ``BenchTrainer``, the one ``nnUNetTrainer`` subclass, driven
  by the registry's recipe.
- :mod:`~harness.nnunet.precision` -- autocast off for ``fp32`` runs; skipped non-finite steps
  counted on the device.
- :mod:`~harness.nnunet.checkpoints` -- durable checkpoint writes in two generations; what a
  re-run resumes from.
- :mod:`~harness.nnunet.training` -- train a run: fresh, resumed, or from UpKern / "continue".
- :mod:`~harness.nnunet.inference` -- nnU-Net's sliding-window predictor, original geometry.

Importing this package imports nothing heavy; the submodules import nnU-Net when used.
"""
