"""``alphapulse status [FILE]``: state, restarts, rates, drops, gaps and breakers of each node."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from alphapulse.cli import ExitCode
from alphapulse.cli._common import add_run_dir, run_base, topology_name

HELP = "show the nodes of applied topologies: process state and counters"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, nargs="?", help="topology file (default: every applied topology)")
    add_run_dir(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from alphapulse.supervise import format_table, load_applied_plan, topology_status

    base = run_base(args)
    names = [topology_name(args.file)] if args.file else base.applied_topologies()
    if not names:
        print(f"no topology is applied in {base.path}")
        return ExitCode.OK
    result = {}
    for name in names:
        plan = load_applied_plan(base, name)
        if plan is None:
            print(f"topology {name} is not applied in {base.path}")
            return ExitCode.RUNTIME
        result[name] = topology_status(plan, base)
    if args.json:
        print(json.dumps({n: [dataclasses.asdict(r) for r in rows] for n, rows in result.items()}, indent=2))
    else:
        for name, rows in result.items():
            print(f"topology {name}  ({base.path / name})")
            print(format_table(rows))
    return ExitCode.OK
