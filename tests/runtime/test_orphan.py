"""A node started by supervisord ends when supervisord dies; one started by hand does not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

CHILD = textwrap.dedent("""\
    import os, sys, time
    from alphapulse.runtime._orphan import end_with_supervisor
    took = end_with_supervisor()
    open(sys.argv[1], "w").write(f"{os.getpid()} {took}")
    time.sleep(60)
""")
PARENT = textwrap.dedent("""\
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
    time.sleep(60)
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is not alive: its parent just has not reaped it
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def child_of_killed_parent(tmp_path: Path, environ: dict[str, str]) -> tuple[int, str]:
    """Start parent -> child, wait until the child made its request, kill -9 the parent."""
    out = tmp_path / "child.txt"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(out)], env=environ)
    deadline = time.monotonic() + 20
    while not (out.exists() and out.read_text()):
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.02)
    pid, took = out.read_text().split()
    parent.kill()
    parent.wait()
    return int(pid), took


def test_a_supervised_node_gets_sigterm_when_its_parent_dies(tmp_path: Path) -> None:
    pid, took = child_of_killed_parent(tmp_path, {**os.environ, "SUPERVISOR_ENABLED": "1"})
    assert took == "True"
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, "the orphaned child kept running"
        time.sleep(0.02)


def test_a_node_started_by_hand_outlives_its_parent(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "SUPERVISOR_ENABLED"}
    pid, took = child_of_killed_parent(tmp_path, environ)
    try:
        assert took == "False"
        time.sleep(0.5)
        assert alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
