"""``alphapulse ctl ARGS``: supervisorctl on this run directory's supervisord."""

from __future__ import annotations

import argparse
import subprocess

from alphapulse.cli._common import add_run_dir, run_base

HELP = "run supervisorctl against the run directory's supervisord (e.g. ctl status, ctl restart demo:sim)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_dir(parser)
    parser.add_argument("args", nargs=argparse.REMAINDER, help="supervisorctl arguments")


def run(args: argparse.Namespace) -> int:
    from alphapulse.supervise import supervisorctl_argv

    return subprocess.call(supervisorctl_argv(run_base(args), args.args or ["status"]))
