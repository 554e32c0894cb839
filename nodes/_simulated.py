"""The simulated exchange behind ``source.simulated`` and ``alphapulse sim``.

:class:`Market` is sans-IO (time passed in, one seeded ``random.Random``): an order book per
symbol built from individual orders on an exact tick grid, a mean-reverting random-walk fair
price, and Poisson order events — limit orders placed around the fair price (never crossing),
cancels of resting orders, and market orders that walk the opposite side, filling resting
orders first-in first-out. Every event produces Coinbase Exchange feed messages (``l2update``,
``match``, ``ticker``) and ground-truth TLVs (Trade with the aggressor side, Quote on a new best
bid/offer).

:class:`SimExchange` is the WebSocket edge: it answers ``subscribe`` / ``unsubscribe`` like
``ws-feed.exchange.coinbase.com`` (``subscriptions``, then a ``snapshot`` per product for
level2), streams the events to every subscriber, sends per-product ``heartbeat`` messages, and
disconnects a client that cannot keep up (as the real feed does) instead of buffering forever.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from alphapulse.protocol import (
    OrderBook,
    Quote,
    Side,
    Trade,
    format_fixed,
    mapping_for,
    parse_fixed,
    spot,
)
from alphapulse.runtime import start_listening

log = logging.getLogger("alphapulse.simulated")

DEFAULT_MID = "100"
IDS_PER_SECOND = 100_000
"""The pace of :func:`clock_ids`: more sequence numbers a second than any simulator run uses (an
event takes a few: an update, its matches, a ticker). Fixed, not derived from the event rate: a
run at a lower rate would otherwise start below one at a higher rate."""
LEVEL2_CHANNELS = frozenset({"level2", "level2_batch", "level2_50"})
CHANNELS = LEVEL2_CHANNELS | {"matches", "ticker", "heartbeat", "full"}


def clock_ids(now_ns: int | None = None) -> int:
    """Where a starting exchange numbers its sequences and trades from: above anything an
    earlier run of it can have reached.

    A real venue's sequence numbers and trade ids never go back. A simulator restarted by
    supervisord used to start them over, and the Coinbase adapter then, rightly, dropped its
    trades and tickers as repeats until the new ids passed the old ones, which took as long as
    the old run had lasted: after one restart of the demo's ``sim_b``, 430 trades in 8 s. So the
    ids start from the clock, at a pace no run reaches (``IDS_PER_SECOND``; about 1.8e14 now,
    well inside the 2**53 a JavaScript client reads exactly). An adapter sees the restart as
    one jump of trade ids, counted in its ``gaps.trade_id``.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    return now_ns * IDS_PER_SECOND // 1_000_000_000


def iso(ns: int) -> str:
    """Unix ns → the feed's RFC 3339 text with microseconds (``2021-04-17T16:43:37.075351Z``)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"


@dataclasses.dataclass
class Order:
    order_id: str
    side: str
    """``buy`` (a bid) or ``sell`` (an ask), as the feed names maker sides."""
    ticks: int
    size: int
    """Remaining quantity, fixed point."""


@dataclasses.dataclass
class SymbolState:
    product: str
    instrument_id: int
    tick: int
    """Tick size, fixed point."""
    anchor: float
    """Start mid in ticks; the fair price reverts towards it."""
    log_dev: float = 0.0
    bids: dict[int, deque[Order]] = dataclasses.field(default_factory=dict)
    asks: dict[int, deque[Order]] = dataclasses.field(default_factory=dict)
    sizes: dict[str, dict[int, int]] = dataclasses.field(default_factory=lambda: {"buy": {}, "sell": {}})
    """Aggregated quantity per level (what the L2 feed shows), kept with every order change."""
    sequence: int = 1_000_000
    trade_id: int = 0
    last_quote: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def fair(self) -> float:
        return self.anchor * math.exp(self.log_dev)

    def levels(self, side: str) -> dict[int, deque[Order]]:
        return self.bids if side == "buy" else self.asks

    def best_bid(self) -> int | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> int | None:
        return min(self.asks) if self.asks else None

    def level_size(self, side: str, ticks: int) -> int:
        return self.sizes[side].get(ticks, 0)

    def add(self, order: Order) -> None:
        self.levels(order.side).setdefault(order.ticks, deque()).append(order)
        sizes = self.sizes[order.side]
        sizes[order.ticks] = sizes.get(order.ticks, 0) + order.size

    def reduce(self, order: Order, amount: int) -> None:
        """Take ``amount`` off a resting order (a fill or a cancel); drop it and its level when empty."""
        order.size -= amount
        sizes = self.sizes[order.side]
        sizes[order.ticks] -= amount
        if order.size == 0:
            levels = self.levels(order.side)
            queue = levels[order.ticks]
            queue.remove(order)
            if not queue:
                del levels[order.ticks]
                del sizes[order.ticks]

    def drop_level(self, side: str, ticks: int) -> None:
        del self.levels(side)[ticks]
        del self.sizes[side][ticks]


class Market:
    """Symbols' books and the event generator; feed messages and truth TLVs accumulate in ``out``
    and ``truth`` until taken."""

    def __init__(
        self,
        symbols: tuple[str, ...],
        *,
        venue: str = "sim",
        start_mid: dict[str, str] | None = None,
        tick_size: str = "0.01",
        depth: int = 50,
        volatility_bps: float = 2.0,
        reversion_seconds: float = 300.0,
        cancel_ratio: float = 0.6,
        trade_ratio: float = 0.1,
        rng: random.Random | None = None,
        first_id: int = 0,
    ) -> None:
        """``first_id``: where each product's sequence numbers and trade ids start (see
        :func:`clock_ids`); 0 for a market that repeats exactly from its seed."""
        self.rng = rng or random.Random()
        self.depth = depth
        self.volatility_bps = volatility_bps
        self.reversion_seconds = reversion_seconds
        self.cancel_ratio = cancel_ratio
        self.trade_ratio = trade_ratio
        self.venue = venue
        tick = parse_fixed(tick_size)
        self.symbols: dict[str, SymbolState] = {}
        for product in symbols:
            base, quote = product.split("-")
            mid = parse_fixed((start_mid or {}).get(product, DEFAULT_MID))
            self.symbols[product] = SymbolState(product, spot(venue, base, quote).id, tick, mid / tick,
                                                sequence=first_id + 1_000_000, trade_id=first_id)
        self.out: list[tuple[str, str, dict[str, Any]]] = []
        """(product, channel, message) for the feed: channel is level2, matches or ticker."""
        self.truth: list[Any] = []
        self.counters: Counter[str] = Counter()
        self._next_order = 0
        for state in self.symbols.values():
            self._seed_book(state)

    # -- setup -------------------------------------------------------------------------------------
    def _order_id(self) -> str:
        self._next_order += 1
        r = self.rng.getrandbits(64)
        return f"{r >> 32:08x}-{(r >> 16) & 0xFFFF:04x}-4{r & 0xFFF:03x}-8000-{self._next_order:012x}"

    def _size(self) -> int:
        """A lot-sized quantity, log-normal: many small orders, a few large ones."""
        lots = max(1, round(math.exp(self.rng.gauss(3.0, 1.0))))
        return lots * 100_000  # 0.001 units per lot

    def _seed_book(self, state: SymbolState) -> None:
        mid = round(state.fair)
        for k in range(1, self.depth + 1):
            for side, ticks in (("buy", mid - k), ("sell", mid + k)):
                if ticks > 0:
                    for _ in range(self.rng.randint(1, 3)):
                        state.add(Order(self._order_id(), side, ticks, self._size()))
        state.last_quote = self._quote_of(state)

    # -- the clock -----------------------------------------------------------------------------------
    def advance(self, dt: float) -> None:
        """Move every fair price by ``dt`` seconds of mean-reverting random walk."""
        sigma = self.volatility_bps / 1e4 * math.sqrt(max(dt, 0.0))
        pull = dt / self.reversion_seconds if self.reversion_seconds > 0 else 0.0
        for state in self.symbols.values():
            state.log_dev += -state.log_dev * min(pull, 1.0) + sigma * self.rng.gauss(0.0, 1.0)

    def event(self, now_ns: int) -> None:
        """One Poisson order event on a random symbol: a cancel, a market order or a limit order."""
        state = self.symbols[self.rng.choice(tuple(self.symbols))]
        state.sequence += 1
        u = self.rng.random()
        if u < self.cancel_ratio:
            self._cancel(state, now_ns)
        elif u < self.cancel_ratio + self.trade_ratio:
            self._market_order(state, now_ns)
        else:
            self._limit_order(state, now_ns)
        self._maybe_quote(state, now_ns)

    # -- events --------------------------------------------------------------------------------------
    def _l2update(self, state: SymbolState, changes: list[tuple[str, int]], now_ns: int) -> None:
        rows = [[side, format_fixed(ticks * state.tick), format_fixed(state.level_size(side, ticks))]
                for side, ticks in dict.fromkeys(changes)]
        self.out.append((state.product, "level2", {"type": "l2update", "product_id": state.product,
                                                   "changes": rows, "time": iso(now_ns)}))

    def _limit_order(self, state: SymbolState, now_ns: int) -> None:
        side = "buy" if self.rng.random() < 0.5 else "sell"
        offset = min(int(self.rng.expovariate(0.35)), self.depth - 1)
        fair = state.fair
        if side == "buy":
            ticks = math.floor(fair) - offset
            ask = state.best_ask()
            if ask is not None:
                ticks = min(ticks, ask - 1)
        else:
            ticks = math.ceil(fair) + offset
            bid = state.best_bid()
            if bid is not None:
                ticks = max(ticks, bid + 1)
        if ticks <= 0:
            return
        levels = state.levels(side)
        if ticks not in levels and len(levels) >= self.depth:  # the book keeps its depth
            worst = min(levels) if side == "buy" else max(levels)
            if (ticks < worst) if side == "buy" else (ticks > worst):
                return  # beyond the deepest level: not worth resting
            state.drop_level(side, worst)  # the farthest level is cancelled to make room
            changes = [(side, worst), (side, ticks)]
        else:
            changes = [(side, ticks)]
        state.add(Order(self._order_id(), side, ticks, self._size()))
        self._l2update(state, changes, now_ns)

    def _cancel(self, state: SymbolState, now_ns: int) -> None:
        """Cancel one resting order: the best level's when it is priced through the fair price
        (stale: a market maker pulls it), else any level's. With random levels only, the book
        lagged the fair price by hundreds of ticks and buy (sell) orders, pinned just inside the
        spread, piled up at one level: thousands of orders, megabytes of a long-running node."""
        side = "buy" if self.rng.random() < 0.5 else "sell"
        levels = state.levels(side)
        if len(levels) <= self.depth // 2:  # a thin side is replenished instead: the book stays deep
            return self._limit_order(state, now_ns)
        best = state.best_bid() if side == "buy" else state.best_ask()
        stale = best > state.fair if side == "buy" else best < state.fair
        ticks = best if stale else self.rng.choice(tuple(levels))
        order = self.rng.choice(levels[ticks])
        state.reduce(order, order.size)
        self._l2update(state, [(side, ticks)], now_ns)
        return None

    def _market_order(self, state: SymbolState, now_ns: int) -> None:
        bid, ask = state.best_bid(), state.best_ask()
        if bid is None or ask is None:
            return self._limit_order(state, now_ns)
        # buy more often when the fair price is above the book's mid: the book follows the walk
        lean = math.tanh((state.fair - (bid + ask) / 2) / 2)
        taker = "buy" if self.rng.random() < 0.5 + 0.45 * lean else "sell"
        maker = "sell" if taker == "buy" else "buy"
        book = state.levels(maker)
        remaining = self._size()
        changes: list[tuple[str, int]] = []
        # a slippage limit, like the exchange's market-order protection: the order stops filling
        # rather than sweep the maker side below a quarter of the depth (so the book stays deep)
        keep = max(1, self.depth // 4)
        while remaining > 0 and len(book) > keep:
            ticks = min(book) if maker == "sell" else max(book)
            order = book[ticks][0]
            fill = min(order.size, remaining)
            remaining -= fill
            state.reduce(order, fill)
            changes.append((maker, ticks))
            state.trade_id += 1
            state.sequence += 1  # every match is its own message of the product's full channel
            price = ticks * state.tick
            self.out.append((state.product, "matches", {
                "type": "match", "trade_id": state.trade_id, "maker_order_id": order.order_id,
                "taker_order_id": self._order_id(), "side": maker, "size": format_fixed(fill),
                "price": format_fixed(price), "product_id": state.product, "sequence": state.sequence,
                "time": iso(now_ns)}))
            self.truth.append(Trade(instrument_id=state.instrument_id, price=price, quantity=fill,
                                    exchange_ts_ns=now_ns, side=Side.BUY if taker == "buy" else Side.SELL))
            self.counters["trades"] += 1
        if changes:
            self._l2update(state, changes, now_ns)
            self._ticker(state, now_ns, taker)
        return None

    def _ticker(self, state: SymbolState, now_ns: int, taker: str) -> None:
        last = next(m for p, c, m in reversed(self.out) if c == "matches" and p == state.product)
        bid, bid_qty, ask, ask_qty = self._quote_of(state)
        self.out.append((state.product, "ticker", {
            "type": "ticker", "sequence": state.sequence, "product_id": state.product, "price": last["price"],
            "best_bid": format_fixed(bid), "best_bid_size": format_fixed(bid_qty), "best_ask": format_fixed(ask),
            "best_ask_size": format_fixed(ask_qty), "side": taker, "time": iso(now_ns),
            "trade_id": state.trade_id, "last_size": last["size"]}))

    def _quote_of(self, state: SymbolState) -> tuple[int, int, int, int]:
        bid, ask = state.best_bid(), state.best_ask()
        return (bid * state.tick if bid else 0, state.level_size("buy", bid) if bid else 0,
                ask * state.tick if ask else 0, state.level_size("sell", ask) if ask else 0)

    def _maybe_quote(self, state: SymbolState, now_ns: int) -> None:
        quote = self._quote_of(state)
        if quote != state.last_quote:
            state.last_quote = quote
            self.truth.append(Quote(state.instrument_id, *quote, exchange_ts_ns=now_ns))

    # -- views ----------------------------------------------------------------------------------------
    def snapshot_message(self, product: str) -> dict[str, Any]:
        state = self.symbols[product]
        def rows(side: str, reverse: bool) -> list[list[str]]:
            levels = state.levels(side)
            return [[format_fixed(t * state.tick), format_fixed(state.level_size(side, t))]
                    for t in sorted(levels, reverse=reverse)]
        return {"type": "snapshot", "product_id": product, "bids": rows("buy", True), "asks": rows("sell", False)}

    def book_records(self, product: str, now_ns: int) -> list[Any]:
        """Truth: the mapping and the full book as TLVs (the book is at most ``depth`` per side)."""
        state = self.symbols[product]
        bids = tuple((t * state.tick, state.level_size("buy", t)) for t in sorted(state.bids, reverse=True))
        asks = tuple((t * state.tick, state.level_size("sell", t)) for t in sorted(state.asks))
        base, quote = product.split("-")
        return [mapping_for(spot(self.venue, base, quote)),
                OrderBook(instrument_id=state.instrument_id, exchange_ts_ns=now_ns, exchange_sequence=state.sequence,
                          bids=bids, asks=asks)]

    def take(self) -> tuple[list[tuple[str, str, dict[str, Any]]], list[Any]]:
        out, truth = self.out, self.truth
        self.out, self.truth = [], []
        return out, truth


@dataclasses.dataclass
class _Client:
    send: trio.MemorySendChannel[bytes]
    subscribed: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    """(product, channel) pairs; channel is level2, matches, ticker or heartbeat."""


class SimExchange:
    """The Coinbase-Exchange-speaking WebSocket server around a :class:`Market`."""

    def __init__(self, market: Market, *, rate: float, on_truth: Callable[[list[Any]], None] | None = None,
                 client_queue: int = 50_000, tick_seconds: float = 0.005) -> None:
        self.market = market
        self.rate = rate
        self.on_truth = on_truth
        self.client_queue = client_queue
        self.tick_seconds = tick_seconds
        self.clients: list[_Client] = []
        self.counters: Counter[str] = Counter()

    # -- the market clock ----------------------------------------------------------------------------
    async def run_market(self) -> None:
        """Generate Poisson events at ``rate`` per second and broadcast them, tick by tick."""
        rng = self.market.rng
        last = trio.current_time()
        next_event = last + rng.expovariate(self.rate)
        heartbeat_at = last + 1.0
        while True:
            await trio.sleep(self.tick_seconds)
            now = trio.current_time()
            self.market.advance(now - last)
            last = now
            wall_ns = time.time_ns()
            while next_event <= now:
                self.market.event(wall_ns)
                next_event += rng.expovariate(self.rate)
            if now >= heartbeat_at:
                heartbeat_at = now + 1.0
                self._heartbeats(wall_ns)
                if self.on_truth is not None:  # the true books, once a second
                    self.on_truth([r for p in self.market.symbols for r in self.market.book_records(p, wall_ns)])
            out, truth = self.market.take()
            for product, channel, message in out:
                self._broadcast(product, channel, orjson.dumps(message))
            if truth and self.on_truth is not None:
                self.on_truth(truth)

    def _heartbeats(self, now_ns: int) -> None:
        for state in self.market.symbols.values():
            message = {"type": "heartbeat", "sequence": state.sequence, "last_trade_id": state.trade_id,
                       "product_id": state.product, "time": iso(now_ns)}
            self._broadcast(state.product, "heartbeat", orjson.dumps(message))

    def _broadcast(self, product: str, channel: str, data: bytes) -> None:
        key = (product, channel)
        for client in self.clients:
            if key in client.subscribed:
                self._offer(client, data)

    def _offer(self, client: _Client, data: bytes) -> None:
        try:
            client.send.send_nowait(data)
            self.counters["messages"] += 1
        except trio.WouldBlock:
            self.counters["clients.too_slow"] += 1
            log.warning("simulated exchange: client cannot keep up, disconnecting it")
            client.subscribed.clear()
            client.send.close()
        except trio.ClosedResourceError:
            client.subscribed.clear()

    # -- connections ------------------------------------------------------------------------------
    async def handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        send, receive = trio.open_memory_channel[bytes](self.client_queue)
        client = _Client(send)
        self.clients.append(client)
        self.counters["connections"] += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, ws, receive, nursery.cancel_scope)
                while True:
                    self._on_request(client, await ws.get_message())
        except* ConnectionClosed:
            pass
        finally:
            self.clients.remove(client)
            send.close()

    async def _write(self, ws: Any, receive: trio.MemoryReceiveChannel[bytes], scope: trio.CancelScope) -> None:
        async for data in receive:
            await ws.send_message(data.decode())
        scope.cancel()  # the channel was closed: a slow client is dropped
        with trio.move_on_after(1):
            await ws.aclose(code=1008, reason="too slow")

    def _reply(self, client: _Client, message: dict[str, Any]) -> None:
        self._offer(client, orjson.dumps(message))

    def _on_request(self, client: _Client, text: str | bytes) -> None:
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._reply(client, {"type": "error", "message": "Malformed JSON"})
        if not isinstance(request, dict) or request.get("type") not in ("subscribe", "unsubscribe"):
            return self._reply(client, {"type": "error", "message": "Failed to subscribe",
                                        "reason": "type must be subscribe or unsubscribe"})
        pairs = []
        for channel in request.get("channels") or ():
            name, products = channel, request.get("product_ids") or ()
            if isinstance(channel, dict):
                name, products = channel.get("name"), channel.get("product_ids") or products
            if name not in CHANNELS:
                return self._reply(client, {"type": "error", "message": "Failed to subscribe",
                                            "reason": f"{name} is not a valid channel"})
            for product in products:
                if product not in self.market.symbols:
                    return self._reply(client, {"type": "error", "message": "Failed to subscribe",
                                                "reason": f"{product} is not a valid product"})
                pairs.append((product, "level2" if name in LEVEL2_CHANNELS else name))
        if request["type"] == "unsubscribe":
            client.subscribed.difference_update(pairs)
        else:
            new = [p for p in pairs if p not in client.subscribed]
            client.subscribed.update(pairs)
        channels: dict[str, list[str]] = {}
        for product, channel in sorted(client.subscribed):
            channels.setdefault(channel, []).append(product)
        self._reply(client, {"type": "subscriptions",
                             "channels": [{"name": n, "product_ids": p} for n, p in channels.items()]})
        if request["type"] == "subscribe":
            for product, channel in new:  # a consistent book: nothing runs between here and the stream
                if channel == "level2":
                    self._reply(client, self.market.snapshot_message(product))
        return None


async def serve(exchange: SimExchange, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``exchange`` on ``ws://host:port`` and run its market clock until cancelled."""
    from trio_websocket import serve_websocket

    async with trio.open_nursery() as nursery:
        listener = await start_listening(nursery, functools.partial(serve_websocket, exchange.handle, host, port, None),
                                         host, port, "simulated exchange")
        nursery.start_soon(exchange.run_market)
        task_status.started(listener.port)
