"""``alphapulse node``: run one node of a compiled plan (the command supervisord runs)."""

from __future__ import annotations

import argparse

HELP = "run one node of a compiled plan in this process (used by supervisord)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="path of the compiled plan.json")
    parser.add_argument("name", help="node name in the plan")


def run(args: argparse.Namespace) -> int:
    from alphapulse.runtime import run_node_process

    return run_node_process(args.plan, args.name)
