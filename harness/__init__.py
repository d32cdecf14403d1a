"""mednext-bench harness: everything that trains, predicts, evaluates, schedules and reports.

The architectures live in the packages ``mednext`` and ``baselines``; this package wires them
into one protocol (nnU-Net v2, wrapped in :mod:`harness.nnunet`) and reports the results.
"""

__version__ = "0.1.0"
