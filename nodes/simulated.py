"""``source.simulated``: a local simulated exchange for demos and tests, with no network or keys."""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Literal

import trio

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType
from nodes._simulated import Market, SimExchange, clock_ids, serve


@dataclasses.dataclass(frozen=True)
class SimulatedParams:
    format: Literal["coinbase_exchange"] = param(
        "coinbase_exchange",
        doc="Wire format the simulated WebSocket server speaks; source.coinbase with "
        "feed=exchange connects to it unchanged.",
    )
    host: str = param("127.0.0.1", doc="Address the simulated exchange's WebSocket server binds.")
    port: int = param(9001, doc="TCP port of the simulated exchange's WebSocket server (0 picks a free one).",
                      minimum=0, maximum=65535)
    venue: str = param(
        "sim", doc="Exchange name used in instrument ids of the ground-truth tape (e.g. sim_a).",
        pattern="^[a-z0-9_.]+$",
    )
    symbols: tuple[str, ...] = param(
        ("BTC-USD",), doc="Products the exchange lists, as BASE-QUOTE.", minItems=1,
        items={"type": "string", "pattern": "^[A-Z0-9]+-[A-Z0-9]+$"},
    )
    start_mid: dict[str, str] = param(  # noqa: RUF009 (param() copies the default)
        {}, doc="Initial mid price per symbol as an exact decimal string; others start at 100.",
    )
    message_rate: float = param(
        200.0, doc="Order events per second across all symbols (Poisson arrivals); each is one "
        "l2update, plus a match per fill and a ticker for market orders.", live=True,
        exclusiveMinimum=0, maximum=100000,
    )
    volatility_bps: float = param(
        2.0, doc="Standard deviation of the random-walk fair price per second, in basis points.",
        live=True, minimum=0,
    )
    reversion_seconds: float = param(
        300.0, doc="Time scale on which the fair price reverts to start_mid (0: a pure random walk); "
        "keeps two simulated venues near each other, so arbitrage signals come and go.", live=True,
        minimum=0,
    )
    cancel_ratio: float = param(
        0.6, doc="Fraction of order events that cancel a resting order.", live=True,
        minimum=0, maximum=1,
    )
    trade_ratio: float = param(
        0.1, doc="Fraction of order events that are market orders crossing the spread.", live=True,
        minimum=0, maximum=1,
    )
    tick_size: str = param("0.01", doc="Price increment as an exact decimal string.",
                           pattern=r"^[0-9]+(\.[0-9]+)?$")
    depth: int = param(50, doc="Price levels per side the simulated book keeps; a market order stops filling "
                           "rather than sweep a side below a quarter of them.", minimum=2)
    seed: int | None = param(None, doc="Random seed; null draws one at start (non-reproducible).")


def make_market(p: SimulatedParams, first_id: int = 0) -> Market:
    """The sans-IO market for ``p`` (also used by ``alphapulse sim`` and the tests); a running
    exchange passes ``first_id=clock_ids()``, so a restart never numbers backwards."""
    return Market(
        p.symbols, venue=p.venue, start_mid=dict(p.start_mid), tick_size=p.tick_size, depth=p.depth,
        volatility_bps=p.volatility_bps, reversion_seconds=p.reversion_seconds, cancel_ratio=p.cancel_ratio,
        trade_ratio=p.trade_ratio, rng=random.Random(p.seed), first_id=first_id,
    )


@node_kind(
    "source.simulated",
    emits=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.INSTRUMENT_MAPPING],
    example={"format": "coinbase_exchange", "port": 9101, "venue": "sim_a",
             "symbols": ["BTC-USD", "ETH-USD"], "message_rate": 500, "seed": 7},
)
class Simulated(Node):
    """Simulated exchange: random-walk mid, Poisson orders and cancels, trades crossing the spread.

    Serves a real exchange wire format over WebSocket (the adapter under test connects to it)
    and publishes its own ground-truth tape, so a topology can compare the adapter's view
    against what the exchange really did.
    """

    Params = SimulatedParams

    def __init__(self, params: SimulatedParams) -> None:
        super().__init__(params)
        self.market = make_market(params, first_id=clock_ids())
        self.exchange: SimExchange | None = None
        self.port: int | None = None

    async def run(self, ctx):
        def publish_truth(records) -> None:
            ctx.messages(records)
            ctx.flush_nowait()

        ctx.messages(self.snapshot(0))  # the opening books: truth starts from a known state
        await ctx.flush()
        self.exchange = SimExchange(self.market, rate=self.params.message_rate, on_truth=publish_truth)
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(serve, self.exchange, self.params.host, self.params.port)
            ctx.log.info("simulated exchange %s on ws://%s:%d (%s)", self.params.venue, self.params.host,
                         self.port, ", ".join(self.params.symbols))

    def reconfigure(self, params: SimulatedParams) -> None:
        super().reconfigure(params)
        m = self.market
        m.volatility_bps, m.reversion_seconds = params.volatility_bps, params.reversion_seconds
        m.cancel_ratio, m.trade_ratio = params.cancel_ratio, params.trade_ratio
        if self.exchange is not None:
            self.exchange.rate = params.message_rate

    def snapshot(self, instrument_id: int):
        """The true books (and mappings) of the simulated market."""
        now = time.time_ns()
        return [r for product, state in self.market.symbols.items() if instrument_id in (0, state.instrument_id)
                for r in self.market.book_records(product, now)]

    def statistics(self) -> dict:
        exchange = self.exchange
        return {"port": self.port, "clients": len(exchange.clients) if exchange else 0,
                **(dict(exchange.counters) if exchange else {}), **dict(self.market.counters)}
