"""``transform.arbitrage``: cross-venue arbitrage signals net of fees."""

from __future__ import annotations

import dataclasses

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType


@dataclasses.dataclass(frozen=True)
class ArbitrageParams:
    min_spread_bps: float = param(
        5.0, doc="Smallest cross-venue spread, net of both venues' fees, that emits a signal "
        "(basis points).", live=True, minimum=0,
    )
    fees_bps: dict[str, float] = param(  # noqa: RUF009 (param() copies the default)
        {}, doc="Taker fee per venue in basis points (venue name as in instrument ids).",
        live=True,
    )
    default_fee_bps: float = param(
        10.0, doc="Taker fee for venues not listed in fees_bps (basis points).", live=True,
        minimum=0,
    )
    throttle_ms: float = param(
        500.0, doc="Minimum time between two signals for the same asset and venue pair.",
        live=True, minimum=0,
    )
    max_book_age_ms: float = param(
        2000.0, doc="Ignore a venue's top of book older than this.", live=True,
        exclusiveMinimum=0,
    )
    assets: tuple[str, ...] = param(
        (), doc="Only these BASE-QUOTE assets; empty means every asset seen on two venues.",
        items={"type": "string", "pattern": "^[A-Z0-9]+-[A-Z0-9]+$"},
    )


@node_kind(
    "transform.arbitrage",
    emits=[TLVType.ARBITRAGE_SIGNAL],
    accepts=[TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA, TLVType.QUOTE,
             TLVType.INSTRUMENT_MAPPING],
    example={"min_spread_bps": 3, "fees_bps": {"sim_a": 5, "sim_b": 8}},
)
class Arbitrage(Node):
    """Arbitrage detector: best bid on one venue above best ask on another, after fees.

    Sizes are limited by the top-of-book quantities; one opportunity is throttled, not spammed.
    """

    Params = ArbitrageParams

    async def run(self, ctx):
        raise NotImplementedError("transform.arbitrage is implemented by issue #6")
