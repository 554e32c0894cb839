"""Circuit breaker: the state table, driven by a plain clock (no sleeping)."""

from __future__ import annotations

import pytest

from alphapulse.runtime import BREAKER_TRANSITIONS, BreakerSettings, BreakerState, CircuitBreaker


def make(**settings) -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    moves: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        "upstream", BreakerSettings(**settings), on_transition=lambda n, a, b: moves.append((a.value, b.value))
    )
    return breaker, moves


def test_opens_after_threshold_failures_within_window() -> None:
    breaker, moves = make(failure_threshold=3, window=10.0, cooldown=5.0)
    for t in (0.0, 1.0):
        breaker.record_failure(t)
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(2.0)
    assert breaker.state is BreakerState.OPEN
    assert moves == [("closed", "open")]
    assert not breaker.allow(3.0)
    assert breaker.statistics().rejected == 1


def test_failures_outside_the_window_do_not_count() -> None:
    breaker, _ = make(failure_threshold=3, window=1.0)
    for t in (0.0, 5.0, 10.0, 15.0):
        breaker.record_failure(t)
    assert breaker.state is BreakerState.CLOSED


def test_half_open_probe_success_closes_and_failure_reopens() -> None:
    breaker, moves = make(failure_threshold=1, cooldown=5.0)
    breaker.record_failure(0.0)
    assert not breaker.allow(4.9)
    assert breaker.seconds_until_probe(4.0) == pytest.approx(1.0)
    assert breaker.allow(5.0)  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_failure(5.1)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(9.0)  # cool-down restarted at 5.1
    assert breaker.allow(10.2)
    breaker.record_success(10.3)
    assert breaker.state is BreakerState.CLOSED
    assert moves == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("open", "half_open"),
        ("half_open", "closed"),
    ]
    stats = breaker.statistics()
    assert (stats.opened, stats.failures, stats.successes, stats.transitions) == (2, 2, 1, 5)


def test_success_threshold_needs_consecutive_probes() -> None:
    breaker, _ = make(failure_threshold=1, cooldown=1.0, success_threshold=2)
    breaker.record_failure(0.0)
    assert breaker.allow(1.0)
    breaker.record_success(1.0)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success(1.1)
    assert breaker.state is BreakerState.CLOSED


def test_every_transition_in_the_table_is_reachable() -> None:
    breaker, moves = make(failure_threshold=1, cooldown=1.0)
    breaker.record_failure(0)
    breaker.allow(1)
    breaker.record_failure(1)
    breaker.allow(2)
    breaker.record_success(2)
    seen = {(BreakerState(a), BreakerState(b)) for a, b in moves}
    assert seen == {(state, new) for (state, _), new in BREAKER_TRANSITIONS.items()}
