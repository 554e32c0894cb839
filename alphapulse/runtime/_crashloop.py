"""Crash-loop backoff: a node that keeps failing soon after it starts waits longer before each start.

supervisord restarts a process that exits after ``startsecs`` at once, every time, for ever: its
own backoff and ``startretries`` cover only starts that fail within ``startsecs``, and a node's
start (imports, numba kernels) outlasts the default of 1 s. A node that fails a few seconds into
every run (a full disk, a directory it cannot create, an exchange message that trips a bug) then
restarts every few seconds, each start costing about a second of CPU, and an exchange adapter
reconnects and resubscribes each time, which exchanges rate-limit and ban for. So, as Kubernetes'
CrashLoopBackOff and systemd's ``RestartSteps=`` do, the node delays its own start: not after one
failure (a kill, a one-off fault: that node restarts at once, its data gap resent), but from the
second failure in a row, ``crash_delay_seconds`` and then doubling up to
``crash_delay_max_seconds``. A run that lasted ``crash_reset_seconds`` ends the streak.

The node keeps its record in the run directory (``state/<node>.json``): when it waits
(``waiting``, until when), when it starts (``running``), fails (``failed``, with its reason) and
stops cleanly (``stopped``). A process killed outright leaves ``running`` behind, which its next
start reads as a failure. ``status`` and ``apply --wait`` read the record to say why a node does
not serve; ``apply`` removes it for a node it starts with a new configuration, which starts afresh.

The decision (:func:`decide_start`) is a pure function of the record, the policy and the clock;
:class:`CrashRecord` is the file, and :class:`CrashLoop` the node's use of both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("alphapulse.node")

WAITING, RUNNING, FAILED, STOPPED = "waiting", "running", "failed", "stopped"
KILLED = "its process ended without a clean stop (killed, out of memory, or hung and ended by its watchdog)"
"""the reason given for a run that left ``running`` behind"""


@dataclasses.dataclass(frozen=True)
class CrashPolicy:
    """When a failing node starts again (the ``crash_*`` fields of its ``restart`` block)."""

    first_delay: float = 1.0
    """the wait before the start after the second failure in a row; 0 turns the backoff off"""
    max_delay: float = 60.0
    reset_after: float = 60.0
    """a run that lasted this long counts as healthy: its failure starts a new streak"""

    @classmethod
    def from_restart(cls, restart: Mapping[str, Any]) -> CrashPolicy:
        return cls(
            first_delay=float(restart.get("crash_delay_seconds", cls.first_delay)),
            max_delay=float(restart.get("crash_delay_max_seconds", cls.max_delay)),
            reset_after=float(restart.get("crash_reset_seconds", cls.reset_after)),
        )

    def delay(self, streak: int) -> float:
        """Seconds to wait before a start that follows ``streak`` failures in a row."""
        if streak < 2 or self.first_delay <= 0:
            return 0.0
        return min(self.max_delay, self.first_delay * 2.0 ** min(streak - 2, 64))


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What the node last wrote about itself. ``streak``: failures in a row before the run (or
    the wait) it describes; a ``failed`` record's own failure is not in it yet."""

    state: str
    streak: int = 0
    pid: int = 0
    started: float | None = None
    """wall-clock time the run began (after any wait)"""
    ended: float | None = None
    resume_at: float | None = None
    """wall-clock time a ``waiting`` node starts"""
    reason: str = ""
    """the last failure's, for a person"""
    repeats: int = 0
    """how many failures in a row, ending with the last, gave that same ``reason``: two alike from
    the node itself say its start fails deterministically (a taken port, a missing directory),
    which ``apply --wait`` reports at once rather than waiting out the backoff"""

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v not in (None, "")}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunRecord | None:
        """The record, or None when ``text`` is not one (a torn or foreign file starts afresh)."""
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict) or raw.get("state") not in (WAITING, RUNNING, FAILED, STOPPED):
                return None
            return cls(
                state=raw["state"], streak=max(0, int(raw.get("streak", 0))), pid=int(raw.get("pid", 0)),
                started=_time(raw.get("started")), ended=_time(raw.get("ended")),
                resume_at=_time(raw.get("resume_at")), reason=str(raw.get("reason", "")),
                repeats=max(0, int(raw.get("repeats", 0))),
            )
        except (ValueError, TypeError):
            return None


def _time(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclasses.dataclass(frozen=True)
class StartDecision:
    streak: int
    """failures in a row before this start, each within ``reset_after`` of its run's start"""
    delay: float
    """seconds to wait before starting"""
    reason: str
    """the last failure's reason ("" when there was none)"""
    repeats: int = 0
    """how many of the ``streak`` failures, the last ones, gave ``reason``"""


def decide_start(previous: RunRecord | None, policy: CrashPolicy, now: float) -> StartDecision:
    """How a node starts, given what its last process left behind."""
    if previous is None or previous.state == STOPPED:
        return StartDecision(0, 0.0, "")
    if previous.state == WAITING:  # stopped or killed while it waited: the rest of the wait, no new failure
        left = (previous.resume_at if previous.resume_at is not None else now) - now
        return StartDecision(previous.streak, max(0.0, min(policy.max_delay, left)), previous.reason,
                             previous.repeats)
    ended = previous.ended if previous.state == FAILED and previous.ended is not None else now
    lasted = ended - (previous.started if previous.started is not None else ended)
    streak = previous.streak + 1 if lasted < policy.reset_after else 1
    if previous.state == FAILED:  # its own failure, counted when it wrote it
        reason, repeats = previous.reason, max(1, previous.repeats)
    else:  # a run that left ``running`` behind: the failure is this one
        reason, repeats = KILLED, previous.repeats + 1 if previous.reason == KILLED else 1
    return StartDecision(streak, policy.delay(streak), reason, min(repeats, streak))


def read_record(path: str | os.PathLike[str]) -> RunRecord | None:
    try:
        with open(path, encoding="utf-8") as f:
            return RunRecord.from_json(f.read())
    except OSError:
        return None


def write_record(path: str | os.PathLike[str], record: RunRecord) -> None:
    """Write atomically (a reader never sees half a record); raises OSError."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(record.to_json() + "\n")
    os.replace(tmp, path)


def forget(path: str | os.PathLike[str]) -> None:
    """Remove a node's record: its next start is a first one (``apply`` with a new configuration)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def describe_wait(decision: StartDecision, policy: CrashPolicy) -> str:
    """``failed 3 times in a row, each within 60 s of starting; starting again in 4 s``, and
    ``(the last 2 the same way)`` when they were"""
    delay = f"{decision.delay:.1f}" if decision.delay < 10 else f"{decision.delay:.0f}"
    return f"{describe_failures(decision.streak, decision.repeats, policy)}; starting again in {delay} s"


def describe_failures(failures: int, repeats: int, policy: CrashPolicy) -> str:
    """``failed 3 times in a row, each within 60 s of starting (the last 2 the same way)``"""
    alike = f" (the last {repeats} the same way)" if repeats >= 2 else ""
    return f"failed {failures} times in a row, each within {policy.reset_after:g} s of starting{alike}"


def fails_alike(record: RunRecord) -> bool:
    """Did the node's last two failures or more in a row give the same reason of its own (not a
    kill from outside)? Then its next start will most likely fail the same way."""
    return record.repeats >= 2 and record.reason != KILLED


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop


def sleep_unless_stopped(seconds: float) -> bool:
    """Sleep; False as soon as SIGTERM or SIGINT arrives (the previous handlers come back either
    way). The node has no event loop yet: this is its whole life while it waits."""
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        time.sleep(seconds)
    except _Stop:
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return True


class CrashLoop:
    """One node process's side: decide, wait, and keep the record current. A record that cannot
    be written (a read-only or vanished run directory) is logged once and otherwise ignored: the
    node runs all the same."""

    def __init__(self, path: str | os.PathLike[str], policy: CrashPolicy, *, name: str,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], bool] | None = None) -> None:
        self.path, self.policy, self.name = path, policy, name
        self._clock = clock
        self._sleep = sleep or sleep_unless_stopped
        self._streak = 0
        self._started: float | None = None
        self._write_failed = False
        self.decision = StartDecision(0, 0.0, "")
        """the last :meth:`wait_before_start`'s"""

    def wait_before_start(self) -> bool:
        """Wait as long as the node's recent failures say (logging why), then note the start.
        False: the node was told to stop while it waited (SIGTERM, SIGINT), and should end. That
        is someone's ``supervisorctl stop`` or ``restart``, so the streak ends with it: a node
        restarted by hand (its cause fixed, say) starts at once."""
        decision = decide_start(read_record(self.path), self.policy, self._clock())
        self.decision = decision
        self._streak = decision.streak
        if decision.delay > 0:
            self._write(WAITING, resume_at=self._clock() + decision.delay, reason=decision.reason,
                        repeats=decision.repeats)
            log.warning("node %s: %s (last: %s)", self.name, describe_wait(decision, self.policy), decision.reason)
            if not self._sleep(decision.delay):
                log.info("node %s: stopped while it waited; its next start is a first one", self.name)
                self.stopped()
                return False
        self._started = self._clock()
        self._write(RUNNING, started=self._started, reason=decision.reason, repeats=decision.repeats)
        return True

    def failed(self, reason: str) -> None:
        alike = self.decision.repeats + 1 if self.decision.streak and reason == self.decision.reason else 1
        self._write(FAILED, started=self._started, ended=self._clock(), reason=reason, repeats=alike)

    def stopped(self) -> None:
        self._write(STOPPED)

    def _write(self, state: str, **fields: Any) -> None:
        record = RunRecord(state=state, streak=self._streak if state != STOPPED else 0, pid=os.getpid(), **fields)
        try:
            write_record(self.path, record)
        except OSError as exc:
            if not self._write_failed:
                self._write_failed = True
                log.warning("node %s: cannot keep its restart record %s (%s); crash-loop backoff is off",
                            self.name, self.path, exc)
