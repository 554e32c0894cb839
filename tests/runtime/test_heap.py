"""Garbage-collector pauses: timed by the monitor, start-up heap frozen out of every collection."""

from __future__ import annotations

import gc

import pytest

from alphapulse.runtime._heap import PauseMonitor, freeze_heap, freeze_more


def test_pause_monitor_times_collections_and_freeze_counts_objects() -> None:
    monitor = PauseMonitor().install()
    try:
        gc.collect()
        stats = monitor.statistics()
        assert stats.collections[2] >= 1 and stats.pause_ms_max > 0
        assert stats.pause_ms_total >= stats.pause_ms_max
        assert freeze_heap() > 1000 and monitor.statistics().frozen_objects > 1000
    finally:
        gc.unfreeze()
        monitor.uninstall()
    assert monitor not in gc.callbacks


def test_stats_never_count_the_frozen_heap_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting walks the whole permanent generation (milliseconds on a node's heap, on its event
    loop): it is done once, by freeze_heap; statistics (every ``stats`` request) and a later
    freeze_more only read what that count was."""
    monitor = PauseMonitor()
    try:
        frozen = freeze_heap()

        def walks(*args):
            raise AssertionError("gc.get_freeze_count walked the permanent generation")

        monkeypatch.setattr(gc, "get_freeze_count", walks)
        assert monitor.statistics().frozen_objects == frozen
        before = len(gc.get_objects())
        freeze_more()
        assert len(gc.get_objects()) < before  # moved to the permanent generation, uncounted
        assert monitor.statistics().frozen_objects == frozen
    finally:
        gc.unfreeze()
