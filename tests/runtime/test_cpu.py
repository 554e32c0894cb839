"""A node's cpu block applied to a real process: every thread, live changes, honest reports."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from alphapulse.runtime._cpu import CpuPlacement, CpuSettings

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux scheduling calls")


@pytest.fixture
def process():
    """A child with two threads (settings must reach every thread, not just the main one)."""
    code = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 10
    while len(os.listdir(f"/proc/{child.pid}/task")) < 2:
        assert time.monotonic() < deadline, "the child's second thread did not start"
        time.sleep(0.01)
    yield child.pid
    child.kill()
    child.wait()


def per_thread(pid: int) -> set[tuple[int, int, tuple[int, ...]]]:
    return {(os.sched_getscheduler(t), os.getpriority(os.PRIO_PROCESS, t), tuple(sorted(os.sched_getaffinity(t))))
            for t in (int(t) for t in os.listdir(f"/proc/{pid}/task"))}


def test_settings_reach_every_thread_and_an_empty_block_restores_the_start(process) -> None:
    started = per_thread(process)
    (_, start_nice, start_cpus), = started
    placement = CpuPlacement(process)
    assert placement.apply(CpuSettings(policy="batch", nice=start_nice + 3, affinity=(start_cpus[0],))) == []
    assert per_thread(process) == {(os.SCHED_BATCH, start_nice + 3, (start_cpus[0],))}
    report = placement.report()
    assert report["actual"] == {"policy": "batch", "nice": start_nice + 3, "affinity": [start_cpus[0]]}
    assert report["requested"]["policy"] == "batch"

    assert placement.apply(CpuSettings.from_plan({"policy": "idle"})) == []
    assert per_thread(process) == {(os.SCHED_IDLE, start_nice, start_cpus)}
    assert placement.apply(CpuSettings.from_plan(None)) == []
    assert per_thread(process) == started


def test_cpus_this_machine_lacks_are_reported_and_the_rest_used(process) -> None:
    placement = CpuPlacement(process)
    first = min(os.sched_getaffinity(process))
    problems = placement.apply(CpuSettings(affinity=(first, 4095)))
    assert problems and all("CPUs [4095] are not available" in p for p in problems)
    assert {cpus for _, _, cpus in per_thread(process)} == {(first,)}
    problems = placement.apply(CpuSettings(affinity=(4095,)))
    assert problems and all(p.startswith("cannot set affinity [4095]") for p in problems)
    assert placement.report()["problems"] == problems
    assert os.path.exists(f"/proc/{process}")  # reported, not fatal


def test_lowering_nice_without_privilege_is_reported_not_fatal() -> None:
    # a node applies its own block: one that runs unprivileged (as nobody, once imported, when we are root)
    code = ("import os; from alphapulse.runtime._cpu import CpuPlacement, CpuSettings; p = CpuPlacement(); "
            "os.geteuid() == 0 and os.setuid(65534); "
            "print(p.apply(CpuSettings(nice=5))); print(p.apply(CpuSettings(nice=-5))); "
            "print(p.report()['actual']['nice'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second, nice = out.stdout.splitlines()
    assert first == "[]"
    assert "cannot set nice -5" in second and "CAP_SYS_NICE" in second
    assert nice == "5"
