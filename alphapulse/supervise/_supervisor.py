"""Talking to supervisord: where its files live, starting it, and its XML-RPC API.

One supervisord serves one run directory (``ALPHAPULSE_RUN_DIR`` / ``--run-dir``, default
``~/.alphapulse/run``); each applied topology is a process group in it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from alphapulse.topology import run_dir_base

BASE_CONFIG = Path(__file__).with_name("supervisord.conf")
START_TIMEOUT = 15.0
REPOSITORY_ONLY = "; -- repository root only"
"""The base config's last part (``_ctlplugin``): from this line on, the run directory's copy leaves it out."""


class SupervisorError(RuntimeError):
    """supervisord could not be started or reached, or refused a request."""


def default_run_base() -> Path:
    """``ALPHAPULSE_RUN_DIR``, else ``$XDG_RUNTIME_DIR/alphapulse``, else ``~/.alphapulse/run``."""
    return Path(run_dir_base())


@dataclasses.dataclass(frozen=True)
class RunBase:
    """The files of one supervisord instance."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "supervisord.conf"

    @property
    def socket(self) -> Path:
        return self.path / "supervisor.sock"

    @property
    def pidfile(self) -> Path:
        return self.path / "supervisord.pid"

    def topology_dir(self, topology: str) -> Path:
        return self.path / topology

    def plan_file(self, topology: str) -> Path:
        return self.topology_dir(topology) / "plan.json"

    def programs_file(self, topology: str) -> Path:
        return self.topology_dir(topology) / "programs.conf"

    def applied_topologies(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.parent.name for p in self.path.glob("*/plan.json"))

    def prepare(self) -> None:
        """Create the run directory (mode 0700) and its supervisord config copy."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        text = run_dir_config(BASE_CONFIG.read_text())
        if not self.config.exists() or self.config.read_text() != text:
            write_atomically(self.config, text)


def run_dir_config(base_config: str) -> str:
    """The base config as the run directory keeps it: without its repository-root part."""
    head, _, _ = base_config.partition(REPOSITORY_ONLY)
    return head.rstrip("\n") + "\n"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class Supervisor:
    """A client of the supervisord of one run directory."""

    def __init__(self, base: RunBase) -> None:
        self.base = base
        transport = SupervisorTransport(None, None, serverurl=f"unix://{base.socket}")
        self.proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport, allow_none=True)

    @property
    def api(self) -> Any:
        return self.proxy.supervisor

    @property
    def plugin(self) -> Any:
        return self.proxy.alphapulse

    def is_running(self) -> bool:
        if not self.base.socket.exists():
            return False
        try:
            return self.api.getState()["statename"] == "RUNNING"
        except (OSError, http.client.HTTPException, xmlrpc.client.Fault, xmlrpc.client.ProtocolError):
            # a failed request leaves the transport's connection half-used: the next request
            # (once supervisord answers) would fail with CannotSendRequest, so start afresh
            self.proxy("close")()
            return False

    def ensure_running(self) -> bool:
        """Start supervisord for this run directory unless it runs already; True if started."""
        if self.is_running():
            return False
        self.base.prepare()
        with contextlib.suppress(FileNotFoundError):
            self.base.socket.unlink()
        # the same interpreter, so supervisord can import our RPC plugin and nodes run in this env
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.base.config)],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise SupervisorError(f"supervisord did not start: {result.stderr.strip() or result.stdout.strip()}")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.is_running():
                return True
            time.sleep(0.05)
        raise SupervisorError(f"supervisord did not answer on {self.base.socket} within {START_TIMEOUT:.0f} s")

    def shutdown(self) -> None:
        with contextlib.suppress(OSError, xmlrpc.client.Fault):
            self.api.shutdown()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.base.socket.exists():
            time.sleep(0.05)

    def group_processes(self, group: str) -> dict[str, dict[str, Any]]:
        """Process info of one group's processes, by process name."""
        return {
            info["name"]: info
            for info in self.api.getAllProcessInfo()
            if info["group"] == group
        }

    def start_counts(self) -> dict[str, int]:
        try:
            return dict(self.plugin.getStartCounts())
        except xmlrpc.client.Fault:
            return {}

    def stop(self, group: str, name: str) -> None:
        try:
            self.api.stopProcess(f"{group}:{name}", True)
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString and "BAD_NAME" not in fault.faultString:
                raise

    def start(self, group: str, name: str) -> None:
        try:
            self.api.startProcess(f"{group}:{name}", False)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise


def supervisorctl_argv(base: RunBase, args: list[str]) -> list[str]:
    exe = shutil.which("supervisorctl")
    head = [exe] if exe else [sys.executable, "-m", "supervisor.supervisorctl"]
    return [*head, "-c", str(base.config), *args]
