"""``supervisorctl -c supervisord.conf`` at the repository root reaches the run directory's supervisord.

supervisord runs on a copy of the base config inside the run directory (``RunBase.prepare``),
where ``%(here)s`` is that directory, so the copy's ``[supervisorctl]`` section names the socket
supervisord listens on. Read where it is kept, at the repository root, the same section names
``<repository>/supervisor.sock``, where nothing listens. supervisorctl builds the plugins of the
``[ctlplugin:...]`` sections of the config it reads before it runs a command; this one points it
at the socket of the run directory that ``alphapulse`` itself would use (``ALPHAPULSE_RUN_DIR``,
else ``$XDG_RUNTIME_DIR/alphapulse``, else ``~/.alphapulse/run``: ``topology/_rundir.py``). It
does so only when the config names the socket beside itself and nothing is there, so ``-s URL``
on the command line, and a config that is a run directory's own, keep what they name. It adds no
commands. The run directory's copy leaves the section out (``_supervisor.run_dir_config``): a
supervisorctl from another Python, without ``alphapulse`` to import, still reads that copy.
"""

from __future__ import annotations

import os
from typing import Any

from supervisor.supervisorctl import ControllerPluginBase

from alphapulse.topology import run_dir_base

SOCKET_NAME = "supervisor.sock"


def server_url(named: str, here: str, environ: Any = os.environ) -> str:
    """What supervisorctl should reach, given the URL it was given (``named``) and the directory
    of the config it read (``here``): the run directory's socket for the base config read where
    no supervisord runs beside it, else ``named``."""
    beside = os.path.join(here, SOCKET_NAME)
    if named != f"unix://{beside}" or os.path.exists(beside):
        return named
    return f"unix://{os.path.join(run_dir_base(env=environ), SOCKET_NAME)}"


class RunDirectory(ControllerPluginBase):
    """Points the controller at the run directory's supervisord (see the module docstring)."""

    def __init__(self, controller: Any) -> None:
        super().__init__(controller)
        options = controller.options
        options.serverurl = server_url(options.serverurl, options.here)

    def do_help(self, arg: str) -> None:
        """No commands of its own: nothing to add to ``help``."""


def make_ctl_plugin(controller: Any, **config: str) -> RunDirectory:
    """The ``supervisor.ctl_factory`` of the base config's ``[ctlplugin:alphapulse]``."""
    return RunDirectory(controller)
