"""Writes that fail for a while (a full disk): when it began, the retry timer, and saying so.

The sinks that keep the stream (``sink.recorder``, ``sink.parquet``) hold what they could not
write and try again later; what they hold differs, this part does not. A spell of failing writes
is logged twice (when it began, when writing resumed), counted at every failed try
(``errors.write``), and described in one line for ``status`` (``Node.trouble``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import trio


class StalledWrites:
    """One sink's spell of failing writes, if any."""

    def __init__(self) -> None:
        self.since: float | None = None
        """``time.monotonic()`` when the spell began; None while writes succeed"""
        self.last_error = ""
        self.retry_at = math.inf
        """``trio.current_time()`` of the next try (inf while writes succeed)"""

    @property
    def failing(self) -> bool:
        return self.since is not None

    @property
    def seconds(self) -> float:
        """How long writes have been failing (0.0 while they succeed)."""
        return 0.0 if self.since is None else time.monotonic() - self.since

    def failed(self, error: object, ctx: Any, *, retry_seconds: float, holding: str) -> None:
        """A write failed: count it, log the first of the spell (saying what is held meanwhile,
        ``holding``), and set the next try ``retry_seconds`` from now."""
        ctx.counters["errors.write"] += 1
        self.last_error = str(error)
        if self.since is None:
            self.since = time.monotonic()
            ctx.log.error("%s; %s, and trying again every %g s", error, holding, retry_seconds)
        self.retry_at = trio.current_time() + retry_seconds

    def resumed(self, ctx: Any, what: str) -> None:
        """Writes succeed again (``what`` happened to what was held); a no-op outside a spell."""
        if self.since is not None:
            ctx.log.warning("writes again after %.1f s; %s", self.seconds, what)
        self.since, self.retry_at = None, math.inf

    def trouble(self, where: object, holding: str) -> str:
        """``status``'s line: ``writes to WHERE failing for N s (last: ERROR); HOLDING``."""
        if self.since is None:
            return ""
        return f"writes to {where} failing for {self.seconds:.0f} s (last: {self.last_error}); {holding}"
