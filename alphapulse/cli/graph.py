"""``alphapulse graph FILE``: draw a topology as Graphviz dot or Mermaid."""

from __future__ import annotations

import argparse
import sys

from alphapulse.cli._topology_args import add_run_dir, load_or_report
from alphapulse.topology import render_dot, render_mermaid

HELP = "draw a topology (Graphviz dot or Mermaid): nodes by role, edges by what flows"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="topology YAML file")
    parser.add_argument("--format", choices=("dot", "mermaid"), default="dot")
    add_run_dir(parser)


def run(args: argparse.Namespace) -> int:
    topology, code = load_or_report(args.file, args.run_dir)
    if topology is None:
        return code
    render = render_mermaid if args.format == "mermaid" else render_dot
    sys.stdout.write(render(topology))
    return code
