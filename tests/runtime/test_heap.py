"""Garbage-collector pauses: timed by the monitor, start-up heap frozen out of every collection."""

from __future__ import annotations

import gc

from alphapulse.runtime._heap import PauseMonitor, freeze_heap


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
