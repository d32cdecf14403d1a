"""``mednext-bench``: the command line, thin over the harness modules.

Each area registers its own subcommands (a ``register(subparsers)`` function in its
``commands`` module); this file only assembles them, so that starting the CLI imports
nothing heavy (torch, nnunetv2) until a command runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (module, what it adds) -- order is the order of ``mednext-bench --help``.
COMMAND_MODULES = (
    "harness.datasets.commands",   # data convert | phantom | check
    "harness.registry.commands",   # models
    "harness.jobs.commands",       # run | submit | status | train | predict | sanity
    "harness.report.commands",     # report
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mednext-bench",
        description="Reproduce the MedNeXt paper's Table 2 and Table 1 (right) under one protocol.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
