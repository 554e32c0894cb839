"""Options and helpers shared by the subcommands that run topologies."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alphapulse.supervise import RunBase, default_run_base


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run directory of supervisord, plans, sockets and logs "
        "(default: $ALPHAPULSE_RUN_DIR or ~/.alphapulse/run)",
    )


def run_base(args: argparse.Namespace) -> RunBase:
    return RunBase((args.run_dir or default_run_base()).expanduser().absolute())


def topology_name(path: Path) -> str:
    """The ``topology:`` name a file declares (read leniently: the file may be broken now)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("topology"), str):
        return data["topology"]
    return path.stem


def print_diagnostics(diagnostics: list, stream=None) -> None:
    from alphapulse.topology import format_diagnostics

    (stream or sys.stderr).write(format_diagnostics(diagnostics))
