"""A node's scheduling: its Linux policy, nice value and CPU affinity, set by the node itself.

supervisord starts every program the same way. systemd gives a service ``CPUSchedulingPolicy=``,
``Nice=`` and ``CPUAffinity=``; a node's ``cpu`` block gives it the same three settings, applied
by the node process to every thread it has, at start and again on a live update (``apply``
sends the block with the params, so a changed ``cpu`` block does not restart the node).

Why ``policy: batch`` exists: with the normal policy, a task woken on a busy CPU usually
preempts the task that woke it. A relay that sends a read to four subscribers wakes four
processes. On a machine with fewer idle cores than subscribers, each woken subscriber takes the
CPU from the relay in the middle of its fan-out, and each of those preemptions is two extra
context switches. A woken ``batch`` task never preempts the running one. It waits for that task
to block, which a relay does a few microseconds later. Measured on the project's 2-core VM
(source -> relay -> 4 subscribers, 10k msgs/s, 1 ms ticks):
- the relay's involuntary switches went from ~0.15 a message to ~0;
- relay + 4 subscribers went from 0.62-0.73 to 0.48-0.59 cores;
- p50 latency was about the same (within the noise).
The cost: a ``batch`` node that shares its core with a CPU-bound task waits for that task's
time slice to end (a few ms) instead of preempting it. ``idle`` runs only when nothing else
wants the CPU.

Settings this process may not make are reported, not fatal: lowering ``nice`` needs
``CAP_SYS_NICE`` or a raised ``RLIMIT_NICE``, and ``affinity`` must name CPUs the node may use.
Each problem is logged and kept in the node's ``stats`` next to what the kernel actually
reports. The node keeps running either way.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Mapping
from typing import Any

POLICIES: dict[str, int] = {
    name: getattr(os, const) for name, const in
    (("normal", "SCHED_OTHER"), ("batch", "SCHED_BATCH"), ("idle", "SCHED_IDLE")) if hasattr(os, const)
}
"""Policy names of a ``cpu`` block and the kernel's constants (Linux: all three)."""


@dataclasses.dataclass(frozen=True)
class CpuSettings:
    """One node's ``cpu`` block. ``nice`` / ``affinity`` None: what the process started with."""

    policy: str = "normal"
    nice: int | None = None
    affinity: tuple[int, ...] | None = None

    @classmethod
    def from_plan(cls, entry: Mapping[str, Any] | None) -> CpuSettings:
        entry = entry or {}
        affinity = entry.get("affinity")
        nice = entry.get("nice")
        return cls(policy=str(entry.get("policy", "normal")), nice=None if nice is None else int(nice),
                   affinity=None if affinity is None else tuple(sorted({int(c) for c in affinity})))


@dataclasses.dataclass(frozen=True)
class _Baseline:
    nice: int
    affinity: tuple[int, ...]


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid or 'self'}/task")]
    except OSError:
        return [pid or os.getpid()]


class CpuPlacement:
    """Applies :class:`CpuSettings` to a process (default: this one) and reports what holds.

    The first call records the nice value and affinity the process was started with, so a
    later block without ``nice`` or ``affinity`` puts back those, not whatever was set last.
    """

    def __init__(self, pid: int = 0) -> None:
        self.pid = pid
        self.settings = CpuSettings()
        self.problems: list[str] = []
        self._baseline: _Baseline | None = None

    def apply(self, settings: CpuSettings) -> list[str]:
        """Set policy, nice and affinity on every thread; returns (and keeps) what could not be set."""
        if self._baseline is None:
            self._baseline = _Baseline(self._current_nice(), self._current_affinity())
        problems: list[str] = []
        policy = POLICIES.get(settings.policy)
        if policy is None:
            problems.append(f"policy {settings.policy!r} is not available on this platform")
        nice = self._baseline.nice if settings.nice is None else settings.nice
        affinity = self._baseline.affinity if settings.affinity is None else settings.affinity
        for tid in _threads(self.pid):
            problems += self._apply_thread(tid, policy, nice, affinity)
        self.settings = settings
        self.problems = sorted(set(problems))
        return self.problems

    def _apply_thread(self, tid: int, policy: int | None, nice: int, affinity: tuple[int, ...]) -> list[str]:
        problems = []
        if policy is not None and hasattr(os, "sched_setscheduler"):
            try:
                if os.sched_getscheduler(tid) != policy:
                    os.sched_setscheduler(tid, policy, os.sched_param(0))
            except ProcessLookupError:
                return []  # the thread ended meanwhile
            except OSError as exc:
                problems.append(f"cannot set policy {_name(policy)}: {exc.strerror}")
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) != nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:
            return problems
        except OSError as exc:
            denied = exc.errno in (errno.EPERM, errno.EACCES)
            hint = " (lowering nice needs CAP_SYS_NICE or RLIMIT_NICE)" if denied else ""
            problems.append(f"cannot set nice {nice}: {exc.strerror}{hint}")
        if hasattr(os, "sched_setaffinity"):
            try:
                if tuple(sorted(os.sched_getaffinity(tid))) != affinity:
                    os.sched_setaffinity(tid, affinity)
                    missing = sorted(set(affinity) - os.sched_getaffinity(tid))  # the kernel drops absent CPUs
                    if missing:
                        problems.append(f"affinity {list(affinity)}: CPUs {missing} are not available here, "
                                        "the node runs on the others")
            except ProcessLookupError:
                return problems
            except OSError as exc:
                problems.append(f"cannot set affinity {list(affinity)}: {exc.strerror} "
                                f"(this machine has CPUs 0-{(os.cpu_count() or 1) - 1})")
        return problems

    def report(self) -> dict[str, Any]:
        """What was asked, what the kernel reports for the main thread, and any problems."""
        actual: dict[str, Any] = {"nice": self._current_nice(), "affinity": list(self._current_affinity())}
        if hasattr(os, "sched_getscheduler"):
            actual["policy"] = _name(os.sched_getscheduler(self.pid))
        wanted = dataclasses.asdict(self.settings)
        if wanted["affinity"] is not None:
            wanted["affinity"] = list(wanted["affinity"])
        return {"requested": wanted, "actual": actual, "problems": list(self.problems)}

    def _current_nice(self) -> int:
        return os.getpriority(os.PRIO_PROCESS, self.pid)

    def _current_affinity(self) -> tuple[int, ...]:
        if not hasattr(os, "sched_getaffinity"):
            return ()
        return tuple(sorted(os.sched_getaffinity(self.pid)))


def _name(policy: int) -> str:
    return next((name for name, value in POLICIES.items() if value == policy), str(policy))
