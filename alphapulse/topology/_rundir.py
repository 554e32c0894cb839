"""Where a topology's run directory and sockets live.

Unix socket paths are limited to 107 bytes (``sun_path`` is 108 including the NUL), so the
base stays short: ``--run-dir`` beats ``ALPHAPULSE_RUN_DIR``, which beats
``$XDG_RUNTIME_DIR/alphapulse`` and then ``~/.alphapulse/run``. All of these name a *base*;
one topology's directory is ``<base>/<topology name>``, so topologies never share one unless
they share a name. Pure path arithmetic: nothing is created here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

RUN_DIR_ENV = "ALPHAPULSE_RUN_DIR"
MAX_SOCKET_PATH = 107


def run_dir_base(base: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The absolute base directory for run directories."""
    env = os.environ if env is None else env
    if base:
        chosen = base
    elif env.get(RUN_DIR_ENV):
        chosen = env[RUN_DIR_ENV]
    elif env.get("XDG_RUNTIME_DIR"):
        chosen = os.path.join(env["XDG_RUNTIME_DIR"], "alphapulse")
    else:
        home = env.get("HOME") or os.path.expanduser("~")
        chosen = os.path.join(home, ".alphapulse", "run")
    return os.path.normpath(os.path.abspath(os.path.expanduser(chosen)))


def topology_run_dir(name: str, base: str | None = None,
                     env: Mapping[str, str] | None = None) -> str:
    """The run directory of topology ``name``: ``<base>/<name>``."""
    return os.path.join(run_dir_base(base, env), name)


def data_socket(run_dir: str, node: str) -> str:
    """The node's publisher socket; downstream nodes connect here."""
    return os.path.join(run_dir, "s", f"{node}.sock")


def control_socket(run_dir: str, node: str) -> str:
    """The node's control socket (health, counters, live params, shutdown)."""
    return os.path.join(run_dir, "c", f"{node}.sock")


def state_file(run_dir: str, node: str) -> str:
    """The node's restart record (``runtime/_crashloop.py``): written by the node, read by ``status``."""
    return os.path.join(run_dir, "state", f"{node}.json")


def plan_path(run_dir: str) -> str:
    return os.path.join(run_dir, "plan.json")


def log_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "logs")
