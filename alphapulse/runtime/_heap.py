"""Garbage-collector pauses: keep them short, and make every one visible.

A node process imports numpy, numba, llvmlite, jsonschema and trio before it handles its first
message: tens of thousands of long-lived objects that CPython's cyclic collector would walk
again on every full collection, 10-25 ms each on the reference machine and more when it is
loaded. That is a latency spike no consumer can tell from a slow network. So a node freezes its
heap once its start-up work is done (``gc.freeze``: those objects move to a permanent generation
the collector never scans), and a :class:`PauseMonitor` times every collection so that pauses
show up in ``stats`` instead of as unexplained tails. The hot path keeps no Python object per
message alive (the retransmit buffer is a byte ring), so what remains to scan stays small.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from typing import Any


@dataclasses.dataclass(frozen=True)
class PauseStatistics:
    collections: tuple[int, int, int]
    """collections run, per generation (0, 1, 2), since the monitor started"""
    pause_ms_total: float
    pause_ms_max: float
    frozen_objects: int
    """objects moved to the permanent generation (never scanned) by the last :func:`freeze_heap`
    (a later :func:`freeze_more` adds some, not counted here: see :func:`freeze_more`)"""


class PauseMonitor:
    """Times every collection of the cyclic garbage collector (a ``gc.callbacks`` hook)."""

    def __init__(self) -> None:
        self._started = 0.0
        self._collections = [0, 0, 0]
        self._total = 0.0
        self._max = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self._collections[min(2, int(info.get("generation", 0)))] += 1
        self._total += pause
        self._max = max(self._max, pause)

    def install(self) -> PauseMonitor:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)

    def statistics(self) -> PauseStatistics:
        return PauseStatistics(
            collections=(self._collections[0], self._collections[1], self._collections[2]),
            pause_ms_total=round(self._total * 1000.0, 3),
            pause_ms_max=round(self._max * 1000.0, 3),
            frozen_objects=_frozen_by_freeze_heap,
        )


_frozen_by_freeze_heap = 0


def freeze_heap() -> int:
    """Collect what start-up left behind, then freeze every surviving object so later
    collections skip it; returns how many objects are frozen. Safe to call again after more
    start-up work (a kernel compiled on first use): each call freezes what exists by then."""
    global _frozen_by_freeze_heap
    gc.collect()
    gc.freeze()
    _frozen_by_freeze_heap = gc.get_freeze_count()
    return _frozen_by_freeze_heap


def freeze_more() -> None:
    """Freeze what was allocated since, without a collection or a count: for a node already
    serving, where either would be a pause on live traffic. Counting is not free:
    ``gc.get_freeze_count`` walks the whole permanent generation (6.5 ms for a node's 72,000
    objects here), so the count is taken once, by :func:`freeze_heap`, and ``stats`` reports that
    one (it once counted afresh, stalling the node's loop on every ``status`` and every scrape)."""
    gc.freeze()
