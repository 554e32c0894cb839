"""``sink.counter``: counts messages per source sequence, for runtime tests."""

from __future__ import annotations

import dataclasses

from alphapulse.kinds import Node, node_kind, param


@dataclasses.dataclass(frozen=True)
class CounterSinkParams:
    report_interval: float = param(
        1.0, doc="Seconds between counter reports in the log.", live=True, exclusiveMinimum=0,
    )
    delay_ms: float = param(
        0.0, doc="Artificial delay per received block, to make a deliberately slow consumer.",
        live=True, minimum=0,
    )


@node_kind("sink.counter", emits=(), accepts=None, example={"report_interval": 5})
class CounterSink(Node):
    """Test sink: per-source received, gap, recovered and duplicate counts on its control socket.

    A gap is either recovered or counted, never silently missing; runtime tests read these.
    """

    Params = CounterSinkParams

    async def run(self, ctx):
        raise NotImplementedError("sink.counter is implemented by issue #4")
