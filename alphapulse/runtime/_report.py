"""Count it, log it, carry on: how every node reports bad input without flooding its log."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

LOG_FIRST = 10
"""Occurrences of one kind of problem logged one by one; after that every ``LOG_EVERY``-th."""
LOG_EVERY = 1000


def report(counters: Counter[str], log: logging.Logger, key: str, message: str, *args: Any) -> int:
    """Count ``key`` (e.g. ``"errors.bad_json"``, which rolls up into the node's error count) and
    log ``message`` for its first occurrences and then every thousandth, so a storm of bad frames
    stays visible without drowning the log. Returns the new count."""
    n = counters[key] = counters[key] + 1
    if n <= LOG_FIRST or n % LOG_EVERY == 0:
        log.warning(message + (f" [{key}: {n} so far]" if n > 1 else ""), *args)
    return n
