"""Arguments and loading shared by the topology subcommands (validate, graph, plan)."""

from __future__ import annotations

import argparse
import sys

from alphapulse.cli import ExitCode
from alphapulse.topology import Topology, format_diagnostics, load_topology


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir", metavar="BASE",
        help="base of run directories (the topology's is BASE/<name>); default: "
        "$ALPHAPULSE_RUN_DIR, else $XDG_RUNTIME_DIR/alphapulse, else ~/.alphapulse/run",
    )


def load_or_report(path: str, run_dir: str | None) -> tuple[Topology | None, int]:
    """Load one topology; on errors print them to stderr and return the exit code."""
    topology, diagnostics = load_topology(path, run_dir=run_dir)
    if diagnostics:
        sys.stderr.write(format_diagnostics(diagnostics))
    if topology is None:
        io_error = any(d.code == "io" for d in diagnostics)
        return None, ExitCode.USAGE if io_error else ExitCode.INVALID
    return topology, ExitCode.OK
