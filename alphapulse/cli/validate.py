"""``alphapulse validate FILE...``: check topology files and report every problem at once."""

from __future__ import annotations

import argparse
import sys

from alphapulse.cli import ExitCode
from alphapulse.cli._topology_args import add_run_dir
from alphapulse.topology import format_diagnostics, has_errors, summary, validate

HELP = "check topology files: syntax, schema, graph, environment (exit 1 if invalid)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="topology YAML files")
    parser.add_argument(
        "--format", choices=("text", "json", "github"), default="text",
        help="text: file:line:col lines; json: an array; github: workflow annotations",
    )
    parser.add_argument("--strict", action="store_true", help="warnings fail validation too")
    add_run_dir(parser)


def run(args: argparse.Namespace) -> int:
    _, diagnostics = validate(args.files, run_dir=args.run_dir)
    sys.stdout.write(format_diagnostics(diagnostics, args.format))
    if args.format == "text":
        sys.stderr.write(summary(diagnostics, len(set(args.files))) + "\n")
    if any(d.code == "io" for d in diagnostics):
        return ExitCode.USAGE
    return ExitCode.INVALID if has_errors(diagnostics, strict=args.strict) else ExitCode.OK
