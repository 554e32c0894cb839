"""``source.simulated``: a local simulated exchange for demos and tests, with no network or keys."""

from __future__ import annotations

import dataclasses
from typing import Literal

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType


@dataclasses.dataclass(frozen=True)
class SimulatedParams:
    format: Literal["coinbase_exchange", "kraken"] = param(
        "coinbase_exchange",
        doc="Wire format the simulated WebSocket server speaks; the matching real adapter "
        "(source.coinbase feed=exchange, or source.kraken) connects to it unchanged.",
    )
    host: str = param("127.0.0.1", doc="Address the simulated exchange's WebSocket server binds.")
    port: int = param(9001, doc="TCP port of the simulated exchange's WebSocket server.",
                      minimum=1, maximum=65535)
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
        200.0, doc="Order events per second across all symbols (Poisson arrivals).", live=True,
        exclusiveMinimum=0, maximum=100000,
    )
    volatility_bps: float = param(
        2.0, doc="Standard deviation of the random-walk mid per second, in basis points.",
        live=True, minimum=0,
    )
    cancel_ratio: float = param(
        0.6, doc="Fraction of order events that cancel a resting order.", live=True,
        minimum=0, maximum=1,
    )
    trade_ratio: float = param(
        0.1, doc="Fraction of order events that cross the spread and trade.", live=True,
        minimum=0, maximum=1,
    )
    tick_size: str = param("0.01", doc="Price increment as an exact decimal string.",
                           pattern=r"^[0-9]+(\.[0-9]+)?$")
    depth: int = param(50, doc="Price levels per side the simulated book keeps.", minimum=1)
    seed: int | None = param(None, doc="Random seed; null draws one at start (non-reproducible).")


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

    async def run(self, ctx):
        raise NotImplementedError("source.simulated is implemented by issue #5")
