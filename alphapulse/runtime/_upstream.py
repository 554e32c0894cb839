"""UpstreamParams: the connection policy every kind with an upstream session shares.

A kind's Params inherit it (``class KrakenParams(UpstreamParams)``) and the kind passes
``policy=lambda: self.params`` to :func:`run_websocket_session`, which reads the current values at
every connect attempt and gives the ``upstream`` breaker live thresholds. So reconnect timing,
staleness and breaker thresholds are declared, documented and applied once, for every venue,
and a live parameter change reaches them without a restart. A kind may redeclare a field to
change its default (Alpaca's quiet markets want a longer staleness timeout).
"""

from __future__ import annotations

import dataclasses

from alphapulse.kinds import param
from alphapulse.runtime._breaker import BreakerSettings
from alphapulse.runtime._input import Backoff

BREAKER_WINDOW = 60.0
"""Seconds over which failed connects are counted."""


@dataclasses.dataclass(frozen=True, kw_only=True)  # keyword-only: a kind's required params may follow
class UpstreamParams:
    staleness_timeout: float = param(
        30.0, doc="Seconds without any frame (heartbeats included) before the connection counts as dead "
        "and is reopened.", live=True, exclusiveMinimum=0,
    )
    reconnect_initial: float = param(
        0.5, doc="First reconnect delay in seconds; it doubles per failed attempt, with jitter.",
        live=True, exclusiveMinimum=0,
    )
    reconnect_max: float = param(
        30.0, doc="Cap of the reconnect delay in seconds.", live=True, exclusiveMinimum=0,
    )
    breaker_failures: int = param(
        5, doc="Failed connects within 60 s that open the upstream circuit breaker; while it is open "
        "no connect is tried.", live=True, minimum=1,
    )
    breaker_cooldown: float = param(
        30.0, doc="Seconds the open breaker waits before letting one probe connect through.",
        live=True, exclusiveMinimum=0,
    )

    def backoff(self) -> Backoff:
        return Backoff(initial=self.reconnect_initial, maximum=self.reconnect_max)

    def breaker_settings(self) -> BreakerSettings:
        return BreakerSettings(
            failure_threshold=self.breaker_failures, window=BREAKER_WINDOW, cooldown=self.breaker_cooldown
        )
