"""Shared benchmark helpers: best-of-N timing and the closing JSON line."""

from __future__ import annotations

import json
import time
from collections.abc import Callable


def best_rate(fn: Callable[[], object], items: int, repeats: int = 5) -> float:
    """Best items/second over ``repeats`` runs of ``fn`` (each run handles ``items`` items)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best


def report(figures: dict[str, float | int | str]) -> None:
    """Print figures as human lines, then the whole dict as one JSON object (the last line)."""
    for key, value in figures.items():
        shown = f"{value:,.0f}" if isinstance(value, float) and value > 100 else value
        print(f"{key:>40}: {shown}")
    print(json.dumps(figures, sort_keys=True))
