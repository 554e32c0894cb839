"""Circuit breaker: stop hammering something that keeps failing, probe it now and then.

Sans-IO: the caller passes the current time (``trio.current_time()`` in nodes, a plain float in
tests). States and their transitions are one table, so ``status`` and the docs read the same
thing the code runs:

    CLOSED --failures >= threshold within window--> OPEN
    OPEN --cool-down elapsed, next call allowed as a probe--> HALF_OPEN
    HALF_OPEN --probe succeeded (success_threshold times)--> CLOSED
    HALF_OPEN --probe failed--> OPEN (cool-down starts again)
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections import deque
from collections.abc import Callable


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerEvent(enum.Enum):
    TRIPPED = "tripped"
    COOLED_DOWN = "cooled_down"
    PROBE_SUCCEEDED = "probe_succeeded"
    PROBE_FAILED = "probe_failed"


BREAKER_TRANSITIONS: dict[tuple[BreakerState, BreakerEvent], BreakerState] = {
    (BreakerState.CLOSED, BreakerEvent.TRIPPED): BreakerState.OPEN,
    (BreakerState.OPEN, BreakerEvent.COOLED_DOWN): BreakerState.HALF_OPEN,
    (BreakerState.HALF_OPEN, BreakerEvent.PROBE_SUCCEEDED): BreakerState.CLOSED,
    (BreakerState.HALF_OPEN, BreakerEvent.PROBE_FAILED): BreakerState.OPEN,
}


@dataclasses.dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5
    """Failures within ``window`` seconds that open the breaker."""
    window: float = 10.0
    cooldown: float = 5.0
    """Seconds the breaker stays open before letting one probe through."""
    success_threshold: int = 1
    """Consecutive successful probes that close it again."""


@dataclasses.dataclass(frozen=True)
class BreakerStatistics:
    name: str
    state: str
    failures: int
    successes: int
    rejected: int
    opened: int
    transitions: int


class CircuitBreaker:
    """Guards one thing (an upstream connection, a node's handler)."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings | Callable[[], BreakerSettings] | None = None,
        on_transition: Callable[[str, BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or BreakerSettings()
        self.state = BreakerState.CLOSED
        self._recent_failures: deque[float] = deque()
        self._opened_at = 0.0
        self._probe_successes = 0
        self._failures = self._successes = self._rejected = self._opened = self._transitions = 0
        self._on_transition = on_transition or self._log_transition

    @property
    def settings(self) -> BreakerSettings:
        """The thresholds in force; given as a callable (e.g. reading a node's live params) they
        are read at every use, so a live parameter change applies at once."""
        source = self._settings
        return source() if callable(source) else source

    @settings.setter
    def settings(self, value: BreakerSettings | Callable[[], BreakerSettings]) -> None:
        self._settings = value

    def allow(self, now: float) -> bool:
        """May the guarded call go ahead now? Counts a rejection when not."""
        if self.state is BreakerState.OPEN:
            if now - self._opened_at >= self.settings.cooldown:
                self._move(BreakerEvent.COOLED_DOWN)
                return True
            self._rejected += 1
            return False
        return True

    def seconds_until_probe(self, now: float) -> float:
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.settings.cooldown - now)

    def record_success(self, now: float | None = None) -> None:
        """A guarded call succeeded. ``now`` is accepted for symmetry with :meth:`record_failure`
        and not needed: successes move the breaker by count, never by time."""
        self._successes += 1
        if self.state is BreakerState.HALF_OPEN:
            self._probe_successes += 1
            if self._probe_successes >= self.settings.success_threshold:
                self._recent_failures.clear()
                self._move(BreakerEvent.PROBE_SUCCEEDED)

    def record_failure(self, now: float) -> None:
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._open(BreakerEvent.PROBE_FAILED, now)
            return
        if self.state is BreakerState.OPEN:
            return
        window_start = now - self.settings.window
        self._recent_failures.append(now)
        while self._recent_failures and self._recent_failures[0] < window_start:
            self._recent_failures.popleft()
        if len(self._recent_failures) >= self.settings.failure_threshold:
            self._open(BreakerEvent.TRIPPED, now)

    def statistics(self) -> BreakerStatistics:
        return BreakerStatistics(
            name=self.name,
            state=self.state.value,
            failures=self._failures,
            successes=self._successes,
            rejected=self._rejected,
            opened=self._opened,
            transitions=self._transitions,
        )

    def _open(self, event: BreakerEvent, now: float) -> None:
        self._opened_at = now
        self._opened += 1
        self._probe_successes = 0
        self._move(event)

    def _move(self, event: BreakerEvent) -> None:
        old = self.state
        self.state = BREAKER_TRANSITIONS[old, event]
        self._transitions += 1
        self._on_transition(self.name, old, self.state)

    @staticmethod
    def _log_transition(name: str, old: BreakerState, new: BreakerState) -> None:
        logging.getLogger("alphapulse.breaker").warning("breaker %s: %s -> %s", name, old.value, new.value)
