"""``alphapulse plan FILE``: print the compiled plan (or the supervisord programs) of a topology."""

from __future__ import annotations

import argparse
import sys

from alphapulse.cli._topology_args import add_run_dir, load_or_report
from alphapulse.topology import compile_plan, render_program_config

HELP = "compile a topology and print its plan as JSON (deterministic), or its supervisord config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="topology YAML file")
    parser.add_argument("--supervisord", action="store_true",
                        help="print the generated supervisord [program:…]/[group:…] sections")
    add_run_dir(parser)


def run(args: argparse.Namespace) -> int:
    topology, code = load_or_report(args.file, args.run_dir)
    if topology is None:
        return code
    plan = compile_plan(topology)
    sys.stdout.write(render_program_config(plan) if args.supervisord else plan.to_json())
    return code
