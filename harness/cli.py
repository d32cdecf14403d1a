"""``mednext-bench``: the command line, thin over the harness modules.

Each area registers its own subcommands (a ``register(subparsers)`` function in its
``commands`` module); this file only assembles them, so that starting the CLI imports
nothing heavy (torch, nnunetv2) until a command runs.

Exit statuses: 0 success; 2 a mistake of the user (a bad argument, or a
:class:`harness.errors.UserError` raised by a command: printed as ``mednext-bench: error: ...``,
no traceback); 1 an internal error (one line on stderr, the traceback in a log file under
``<work>/logs/`` or the temporary folder); 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from harness.errors import UserError

PROG = "mednext-bench"

# (module, what it adds) -- order is the order of ``mednext-bench --help``.
COMMAND_MODULES = (
    "harness.datasets.commands",   # data convert | phantom | check
    "harness.registry.commands",   # models
    "harness.jobs.commands",       # run | submit | status | train | predict | sanity
    "harness.report.commands",     # report
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Reproduce the MedNeXt paper's Table 2 and Table 1 (right) under one protocol.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def format_user_error(err: BaseException) -> str:
    """``mednext-bench: error: <first line>``, further lines of the message indented below it."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    return "\n".join([f"{PROG}: error: {lines[0]}"] + [f"  {line}" for line in lines[1:]])


def log_path(args: argparse.Namespace | None) -> Path:
    """Where the traceback of an internal error goes: ``<work>/logs/`` if the command has a work
    folder, else ``<tmp>/mednext-bench/``; the name holds the time and the process id."""
    name = f"cli-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    work = getattr(args, "work", None)
    folder = Path(work) / "logs" if work else Path(tempfile.gettempdir()) / PROG
    return folder / name


def _write_log(path: Path, argv: list[str] | None, text: str) -> Path:
    """Write the traceback to ``path``; fall back to the temporary folder if that fails."""
    body = f"argv: {sys.argv[:1] + list(argv if argv is not None else sys.argv[1:])}\n\n{text}"
    for target in (path, Path(tempfile.gettempdir()) / PROG / path.name):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
            return target
        except OSError:
            continue
    raise OSError(f"could not write the traceback to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as err:
        print(format_user_error(err), file=sys.stderr)
        return 2
    except Exception as err:      # a fault of the harness: one line here, the rest in the log
        summary = str(err).strip().splitlines()[0] if str(err).strip() else ""
        try:
            where = f"traceback in {_write_log(log_path(args), argv, traceback.format_exc())}"
        except OSError as log_err:
            where = f"no traceback written: {log_err}"
        print(f"{PROG}: internal error: {type(err).__name__}: {summary} ({where})", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
