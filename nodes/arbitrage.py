"""``transform.arbitrage``: cross-venue arbitrage signals net of fees.

Instruments are grouped into assets by their InstrumentMapping (``spot|venue|BASE|QUOTE``): every
venue's BTC-USD lands in one group. Each instrument's top of book comes from its order book
(OrderBook + OrderBookDelta, kept as price -> qty dicts; books here are the top-N that
``transform.book_delta`` publishes) or, for instruments without a book, from its Quotes.

After each input block, every asset touched is evaluated once: for each ordered pair of fresh
venues (buy at A's best ask, sell at B's best bid) the net spread after both venues' taker fees
is computed in exact integers; at or above ``min_spread_bps`` an ArbitrageSignal goes out, sized
by the smaller top-of-book quantity. Time is the data's own (message timestamps), so a replay
behaves like the live run: a leg is stale when it is ``max_book_age_ms`` older than the newest
update of its asset. A pair/direction is re-signalled only after ``throttle_ms`` or when its net
spread moved by ``resignal_bps``. A venue's own crossed book is never traded against itself and
is skipped as unreliable.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from decimal import Decimal
from typing import Any

import trio

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import (
    ArbitrageSignal,
    MalformedFrame,
    TLVType,
    decode,
    iter_tlvs,
    order_book_changes,
    order_book_levels,
    parse_instrument,
)
from alphapulse.runtime import UpstreamEpochs, report

FIXED = 10**8
_BOOK_HEAD = struct.Struct("<QQQHH")
_DELTA_HEAD = struct.Struct("<QQQQHB")
_QUOTE = struct.Struct("<QqqqqQH")
_WANTED = frozenset((TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA, TLVType.QUOTE, TLVType.INSTRUMENT_MAPPING))
RESNAPSHOT_AFTER = 5.0
"""Seconds before asking the same upstream again for a book it has not sent."""


def _fixed(value: float) -> int:
    """A float param as an exact fixed-point integer (via its shortest decimal text)."""
    return int(Decimal(str(value)) * FIXED)


def _fee_rate(bps: float) -> int:
    """A fee in bps as a rate scaled by 10^8 (10 bps -> 0.001 -> 100_000)."""
    return int(Decimal(str(bps)) * 10**4)


@dataclasses.dataclass
class Leg:
    """One instrument on one venue: its book (or quote) and when it last changed."""

    iid: int
    venue: str = ""
    asset: str = ""
    bids: dict[int, int] = dataclasses.field(default_factory=dict)
    asks: dict[int, int] = dataclasses.field(default_factory=dict)
    has_book: bool = False
    sequence: int = 0
    quote: tuple[int, int, int, int] = (0, 0, 0, 0)
    """bid price, bid qty, ask price, ask qty from the latest Quote"""
    updated_ns: int = -1
    """message time of the latest update (the staleness clock); -1 before any"""
    market_ns: int = 0
    """venue time of the latest update (exchange ts, else message time)"""
    source: int = 0

    def top(self) -> tuple[int, int, int, int]:
        """(bid, bid qty, ask, ask qty); prices 0 where a side is empty."""
        if not self.has_book:
            return self.quote
        bid = max(self.bids) if self.bids else 0
        ask = min(self.asks) if self.asks else 0
        return bid, self.bids.get(bid, 0), ask, self.asks.get(ask, 0)


def _levels(levels: Any) -> dict[int, int]:
    """price -> qty of the positive levels of an ``order_book_levels`` view."""
    return {p: q for p, q in zip(levels["price"].tolist(), levels["qty"].tolist(), strict=True) if p > 0 and q > 0}


@dataclasses.dataclass(frozen=True)
class Opportunity:
    buy: Leg
    sell: Leg
    buy_price: int
    sell_price: int
    quantity: int
    net_spread: int
    """bps, fixed point"""
    fees: int
    net_profit: int


def evaluate(buy: Leg, sell: Leg, buy_top, sell_top, fee_buy: int, fee_sell: int) -> Opportunity | None:
    """Buy at buy's ask, sell at sell's bid, both paying taker fees (rates scaled by 10^8).

    Exact integers: ``num`` is the net gain per unit scaled by 10^8; None when not positive.
    """
    ask, ask_qty = buy_top[2], buy_top[3]
    bid, bid_qty = sell_top[0], sell_top[1]
    if ask <= 0 or bid <= 0 or ask_qty <= 0 or bid_qty <= 0:
        return None
    fee_num = ask * fee_buy + bid * fee_sell
    num = (bid - ask) * FIXED - fee_num
    if num <= 0:
        return None
    quantity = min(ask_qty, bid_qty)
    return Opportunity(
        buy, sell, ask, bid, quantity,
        net_spread=num * 10**4 // ask,
        fees=fee_num * quantity // FIXED**2,
        net_profit=num * quantity // FIXED**2,
    )


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
        500.0, doc="Minimum time between two signals for the same buy/sell instrument pair, unless the "
        "net spread moved by resignal_bps.", live=True, minimum=0,
    )
    resignal_bps: float = param(
        2.0, doc="A throttled pair is signalled again at once when its net spread moved by this much "
        "(basis points) since its last signal.", live=True, exclusiveMinimum=0,
    )
    max_book_age_ms: float = param(
        2000.0, doc="Ignore a venue whose last update is this much older than the newest update of the "
        "same asset (message timestamps).", live=True, exclusiveMinimum=0,
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

    def __init__(self, params: ArbitrageParams) -> None:
        super().__init__(params)
        self.legs: dict[int, Leg] = {}
        self.assets: dict[str, list[Leg]] = {}
        self.last_signal: dict[tuple[int, int], tuple[int, int]] = {}
        self.clock = time.monotonic
        self._asked_at: dict[int, float] = {}
        self._upstreams = UpstreamEpochs()
        self._next_id = 0
        self._signals = 0
        self.reconfigure(params)

    def reconfigure(self, params: ArbitrageParams) -> None:
        super().reconfigure(params)
        self._fees = {venue: _fee_rate(bps) for venue, bps in params.fees_bps.items()}
        self._default_fee = _fee_rate(params.default_fee_bps)
        self._threshold = _fixed(params.min_spread_bps)
        self._resignal = _fixed(params.resignal_bps)
        self._throttle_ns = int(params.throttle_ms * 1_000_000)
        self._max_age_ns = int(params.max_book_age_ms * 1_000_000)

    # -- input ----------------------------------------------------------------------------------------
    def handle_block(self, block: Any, ctx: Any) -> None:
        """Update every leg the block touches, then evaluate each touched asset once."""
        for source in self._upstreams.restarted(block):  # its books here do not continue: wait for its snapshot
            ctx.counters["upstream_restarts"] += 1
            for leg in self.legs.values():
                if leg.source == source and leg.has_book:
                    leg.has_book = False
                    ctx.counters["books.stale_on_upstream_restart"] += 1
        touched: set[str] = set()
        types = block.tlv_type.tolist()
        stamps = block.timestamp_ns.tolist()
        sources = block.source.tolist()
        for k, frame in enumerate(block.frames()):
            if types[k] not in _WANTED:
                continue
            try:
                for tlv_type, value in iter_tlvs(frame[32:]):
                    leg = self._apply(tlv_type, value, stamps[k], sources[k], ctx)
                    if leg is not None and leg.asset:
                        touched.add(leg.asset)
            except MalformedFrame as exc:
                report(ctx.counters, ctx.log, "errors.bad_tlv", "malformed message skipped: %s", exc)
        if not touched:
            return
        if self._next_id == 0:
            self._next_id = ctx.epoch << 40
        for asset in sorted(touched):
            self._evaluate(asset, ctx)

    def _apply(self, tlv_type: int, value: memoryview, stamp: int, source: int, ctx: Any) -> Leg | None:
        if tlv_type == TLVType.INSTRUMENT_MAPPING:
            self._mapping(decode(tlv_type, value), ctx)
            return None
        if tlv_type == TLVType.QUOTE:
            if len(value) != _QUOTE.size:
                raise MalformedFrame(f"Quote value of {len(value)} bytes")
            iid, bid, bid_qty, ask, ask_qty, exchange_ns, _ = _QUOTE.unpack(value)
            if min(bid, bid_qty, ask, ask_qty) < 0:
                ctx.counters["errors.bad_quote"] += 1
                return None
            leg = self._leg(iid)
            leg.quote = (bid, bid_qty, ask, ask_qty)
        elif tlv_type == TLVType.ORDER_BOOK:
            bids, asks = order_book_levels(value)  # validates the sizes first
            iid, exchange_ns, sequence, _, _ = _BOOK_HEAD.unpack_from(value)
            leg = self._leg(iid)
            if not leg.has_book:
                ctx.log.info("leg %s %s (%x): book received, %d+%d levels", leg.venue or "?", leg.asset or "?",
                             iid, len(bids), len(asks))
            leg.bids = _levels(bids)
            leg.asks = _levels(asks)
            leg.has_book = True
            leg.sequence = sequence
        elif tlv_type == TLVType.ORDER_BOOK_DELTA:
            changes = order_book_changes(value)
            iid, exchange_ns, sequence, prev, _, _ = _DELTA_HEAD.unpack_from(value)
            leg = self._leg(iid)
            if not leg.has_book or (prev and leg.sequence and prev != leg.sequence):
                ctx.counters["dropped.sequence_gap" if leg.has_book else "dropped.no_snapshot_yet"] += 1
                leg.has_book = False
                self._ask_snapshot(leg, source, ctx)
                return None
            for price, qty, side in zip(changes["price"].tolist(), changes["qty"].tolist(),
                                        changes["side"].tolist(), strict=True):
                levels = leg.asks if side else leg.bids
                if qty > 0 and price > 0:
                    levels[price] = qty
                else:
                    levels.pop(price, None)
            leg.sequence = sequence
        else:
            return None
        leg.updated_ns = stamp
        leg.market_ns = exchange_ns or stamp
        leg.source = source
        return leg

    def _mapping(self, record: Any, ctx: Any) -> None:
        try:
            instrument = parse_instrument(record.canonical)
        except ValueError:
            ctx.counters["errors.bad_mapping"] += 1
            return
        if instrument.kind != "spot" or instrument.id != record.instrument_id:
            ctx.counters["mappings.ignored"] += 1
            return
        leg = self._leg(record.instrument_id)
        if leg.asset:
            return
        asset = instrument.name
        if self.params.assets and asset not in self.params.assets:
            return
        leg.venue, leg.asset = instrument.venue, asset
        self.assets.setdefault(asset, []).append(leg)

    def _leg(self, iid: int) -> Leg:
        leg = self.legs.get(iid)
        if leg is None:
            leg = self.legs[iid] = Leg(iid)
        return leg

    def _ask_snapshot(self, leg: Leg, source: int, ctx: Any) -> None:
        now = self.clock()
        if now - self._asked_at.get(leg.iid, -RESNAPSHOT_AFTER) < RESNAPSHOT_AFTER:
            return
        self._asked_at[leg.iid] = now
        ctx.counters["snapshots.requested"] += 1
        ctx.request_snapshot(source, leg.iid)

    # -- detection ------------------------------------------------------------------------------------
    def _evaluate(self, asset: str, ctx: Any) -> None:
        legs = self.assets[asset]
        if len(legs) < 2:
            return
        now = max(leg.updated_ns for leg in legs)
        fresh = []
        for leg in legs:
            if leg.updated_ns < 0:
                continue
            if now - leg.updated_ns > self._max_age_ns:
                ctx.counters["legs.stale"] += 1
                continue
            top = leg.top()
            if top[0] and top[2] and top[0] >= top[2]:
                ctx.counters["dropped.crossed_book"] += 1
                continue
            fresh.append((leg, top))
        for buy, buy_top in fresh:
            for sell, sell_top in fresh:
                if buy.venue == sell.venue:
                    continue
                found = evaluate(buy, sell, buy_top, sell_top, self._fee(buy.venue), self._fee(sell.venue))
                if found is None or found.net_spread < self._threshold:
                    continue
                ctx.counters["opportunities"] += 1
                if self._throttled(found, now):
                    ctx.counters["throttled"] += 1
                    continue
                self._signal(found, max(buy.market_ns, sell.market_ns), ctx)

    def _fee(self, venue: str) -> int:
        return self._fees.get(venue, self._default_fee)

    def _throttled(self, found: Opportunity, now: int) -> bool:
        key = (found.buy.iid, found.sell.iid)
        last = self.last_signal.get(key)
        if last is not None and now - last[0] < self._throttle_ns and abs(found.net_spread - last[1]) < self._resignal:
            return True
        self.last_signal[key] = (now, found.net_spread)
        return False

    def _signal(self, found: Opportunity, detected_ns: int, ctx: Any) -> None:
        self._next_id += 1
        self._signals += 1
        ctx.message(ArbitrageSignal(
            instrument_id=found.buy.iid, sell_instrument_id=found.sell.iid, signal_id=self._next_id,
            buy_price=found.buy_price, sell_price=found.sell_price, max_quantity=found.quantity,
            net_spread_bps=found.net_spread, fees=found.fees, net_profit=found.net_profit,
            detected_ns=detected_ns, path=(),
        ))
        ctx.counters["signals"] += 1

    async def run(self, ctx: Any) -> None:
        await trio.sleep_forever()

    def statistics(self) -> dict:
        return {
            "signals": self._signals,
            "assets": {asset: sorted(leg.venue for leg in legs) for asset, legs in sorted(self.assets.items())},
            "books": sum(leg.has_book for leg in self.legs.values()),
        }
