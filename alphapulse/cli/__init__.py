"""The ``alphapulse`` command: one module per subcommand in this package.

A subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; it is found by name, nothing lists it. ``main(argv)`` runs in-process and
returns an :class:`ExitCode`, so tests call it directly.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import os
import pkgutil
import signal
import sys
from collections.abc import Sequence


class ExitCode(enum.IntEnum):
    OK = 0
    INVALID = 1
    """The input (a topology, a frame file) is invalid; details were printed."""
    USAGE = 2
    """Bad command line, or a file that cannot be read."""
    RUNTIME = 3
    """Something failed while running (supervisord unreachable, a node did not start)."""


def _subcommands() -> dict[str, object]:
    package = importlib.import_module(__name__)
    found = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[info.name.replace("_", "-")] = module
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphapulse",
        description="Run market-data pipelines declared in topology files.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in _subcommands().items():
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 on --help
        return int(exc.code or 0)
    try:
        return int(args._run(args))
    except BrokenPipeError:  # `alphapulse status | head`: the reader left; end quietly, as `cat` would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        return 128 + signal.SIGPIPE
