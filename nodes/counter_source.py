"""``source.counter``: numbered Trade messages at a steady rate, for runtime tests."""

from __future__ import annotations

import dataclasses

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType


@dataclasses.dataclass(frozen=True)
class CounterSourceParams:
    rate: float = param(
        1000.0, doc="Messages per second; 0 sends as fast as possible.", live=True, minimum=0,
    )
    batch: int = param(
        1, doc="Messages per send; >1 exercises the bulk path.", live=True, minimum=1,
    )
    count: int = param(0, doc="Stop after this many messages; 0 never stops.", minimum=0)
    instruments: tuple[str, ...] = param(
        ("test:CNT-USD",), doc="Instruments the trades cycle through (short form).", minItems=1,
    )


@node_kind(
    "source.counter",
    emits=[TLVType.TRADE, TLVType.INSTRUMENT_MAPPING],
    example={"rate": 500, "batch": 10},
)
class CounterSource(Node):
    """Test source: Trade messages whose quantity is their sequence number, at ``rate``/s.

    With ``sink.counter`` it makes loss, duplication and reordering visible in runtime tests.
    """

    Params = CounterSourceParams

    async def run(self, ctx):
        raise NotImplementedError("source.counter is implemented by issue #4")
