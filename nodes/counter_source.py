"""``source.counter``: numbered Trade messages at a steady rate, for runtime tests and benchmarks."""

from __future__ import annotations

import dataclasses
import time

import trio

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType, Trade, mapping_for, parse_instrument


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

    def __init__(self, params: CounterSourceParams) -> None:
        super().__init__(params)
        self.instruments = [parse_instrument(text) for text in params.instruments]
        self.sent = 0
        self._pace_from = (0.0, 0)

    def snapshot(self, instrument_id: int):
        """A counter has no book: its state is the names of its instruments."""
        return [mapping_for(i) for i in self.instruments if instrument_id in (0, i.id)]

    async def run(self, ctx):
        ctx.messages(self.snapshot(0))
        await ctx.flush()
        ids = [i.id for i in self.instruments]
        self._pace_from = (trio.current_time(), self.sent)
        while not self.params.count or self.sent < self.params.count:
            batch = self.params.batch
            if self.params.count:
                batch = min(batch, self.params.count - self.sent)
            now_ns = time.time_ns()
            for k in range(batch):
                n = self.sent + k + 1
                ctx.message(Trade(instrument_id=ids[n % len(ids)], price=100_00000000 + n % 1000,
                                  quantity=n, exchange_ts_ns=now_ns, side=1 + n % 2), timestamp_ns=now_ns)
            self.sent += batch
            await ctx.flush()
            if self.params.rate > 0:
                # pace against a fixed origin, so sleep granularity never lowers the rate
                origin_time, origin_sent = self._pace_from
                await trio.sleep_until(origin_time + (self.sent - origin_sent) / self.params.rate)
            else:
                await trio.lowlevel.checkpoint()
        ctx.log.info("sent %d messages; idle", self.sent)
        await trio.sleep_forever()

    def reconfigure(self, params: CounterSourceParams) -> None:
        super().reconfigure(params)
        self._pace_from = (trio.current_time(), self.sent)

    def statistics(self) -> dict:
        return {"sent": self.sent, "rate": self.params.rate, "batch": self.params.batch}
