"""``alphapulse down FILE``: stop and remove a topology (and supervisord after the last one)."""

from __future__ import annotations

import argparse
from pathlib import Path

from alphapulse.cli import ExitCode
from alphapulse.cli._common import add_run_dir, run_base, topology_name

HELP = "stop and remove an applied topology"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="topology file (or its name)")
    add_run_dir(parser)


def run(args: argparse.Namespace) -> int:
    from alphapulse.supervise import down

    base = run_base(args)
    name = topology_name(args.file) if args.file.exists() else str(args.file)
    stopped = down(name, base)
    print(f"stopped {', '.join(stopped)}" if stopped else f"topology {name} was not running")
    return ExitCode.OK
