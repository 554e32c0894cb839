"""Drops, errors and losses in a node's log, as they happen but never a line per message.

"Count it, log it, carry on": every drop and error is counted where it happens (counters in
``stats``), and the hot paths that count them must not also format a log line per frame — a
bad upstream would flood the log and slow the node that is trying to cope. So the host's
once-a-second sampler hands the counters that only grow to a :class:`TroubleLog`, which says
what grew: the first time at once, then at most once per interval, everything since together.
Sans-IO: totals and the time go in, the increases to log come out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

REPORT_INTERVAL = 10.0
"""Seconds between two trouble lines of one node (the first comes at once)."""


class TroubleLog:
    def __init__(self, interval: float = REPORT_INTERVAL) -> None:
        self.interval = interval
        self._reported: dict[str, int] = {}
        self._last_at = -math.inf

    def poll(self, now: float, totals: Mapping[str, int]) -> dict[str, int]:
        """What grew since the last line, when a line is due; else empty. A total that fell
        started again from zero (a subscriber reconnected): all of it is new."""
        for key, value in totals.items():
            if value < self._reported.get(key, 0):
                self._reported[key] = 0
        grown = {key: value - self._reported.get(key, 0) for key, value in totals.items()
                 if value > self._reported.get(key, 0)}
        if not grown or now - self._last_at < self.interval:
            return {}
        self._reported.update((key, totals[key]) for key in grown)
        self._last_at = now
        return dict(sorted(grown.items()))


def describe(grown: Mapping[str, int]) -> str:
    """``dropped.overflow to sink +120, decode_errors.crc from src +3``"""
    return ", ".join(f"{key} +{count}" for key, count in grown.items())


def trouble_counters(counters: Mapping[str, int], inputs: Iterable, publisher) -> dict[str, int]:
    """The node's counters that only grow when something went wrong: its kind's ``dropped.*``
    and ``errors.*``, each input's decode errors and lost messages, each subscriber's overflow
    drops, disconnects and control errors."""
    totals = {key: value for key, value in counters.items() if key.startswith(("dropped.", "errors."))}
    for stats in inputs:
        for kind, count in stats.decode_errors.items():
            _add(totals, f"decode_errors.{kind} from {stats.upstream}", count)
        _add(totals, f"lost from {stats.upstream}", stats.sequence.get("messages_lost", 0))
    if publisher is not None:
        for subscriber in publisher.subscribers:
            _add(totals, f"dropped.overflow to {subscriber.name}", subscriber.dropped_overflow)
        _add(totals, "disconnected_for_overflow", publisher.disconnected_for_overflow)
        _add(totals, "errors.control", publisher.control_errors)
    return {key: value for key, value in totals.items() if value}


def _add(totals: dict[str, int], key: str, count: int) -> None:
    totals[key] = totals.get(key, 0) + count
