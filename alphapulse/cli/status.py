"""``alphapulse status [FILE]``: state, restarts, rates, drops, gaps and breakers of each node."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

from alphapulse.cli import ExitCode
from alphapulse.cli._common import add_run_dir, run_base, topology_name

HELP = "show the nodes of applied topologies: process state and counters"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, nargs="?", help="topology file (default: every applied topology)")
    add_run_dir(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                        help="show it again every SECONDS (default 2) until Ctrl-C, like top")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N showings (implies --watch)")


def run(args: argparse.Namespace) -> int:
    if args.watch is None and args.count is None:
        return _show(args)
    interval = 2.0 if args.watch is None else args.watch
    if interval <= 0 or (args.count is not None and args.count < 1):
        print("error: --watch needs a positive number of seconds, --count a positive count", file=sys.stderr)
        return ExitCode.USAGE
    clear = sys.stdout.isatty() and not args.json
    try:
        for shown in itertools.count(1):
            if clear:
                print("\x1b[H\x1b[2J", end="")
            code = _show(args)
            sys.stdout.flush()
            if code != ExitCode.OK or shown == args.count:
                return code
            time.sleep(interval)
            if not clear:
                print()
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK


def _show(args: argparse.Namespace) -> int:
    from alphapulse.supervise import format_table, load_applied_plan, topology_status
    from alphapulse.supervise._status import companion_lines, program_status

    base = run_base(args)
    names = [topology_name(args.file)] if args.file else base.applied_topologies()
    if not names:
        print(f"no topology is applied in {base.path}")
        return ExitCode.OK
    result, programs = {}, {}
    for name in names:
        plan = load_applied_plan(base, name)
        if plan is None:
            print(f"topology {name} is not applied in {base.path}")
            return ExitCode.RUNTIME
        result[name] = topology_status(plan, base)
        programs[name] = program_status(plan, base)
    if args.json:
        print(json.dumps({n: {"nodes": [dataclasses.asdict(r) for r in rows], "programs": programs[n]}
                          for n, rows in result.items()}, indent=2))
    else:
        for name, rows in result.items():
            print(f"topology {name}  ({base.path / name})")
            print(format_table(rows))
            for line in companion_lines(programs[name]):
                print(line)
    return ExitCode.OK
