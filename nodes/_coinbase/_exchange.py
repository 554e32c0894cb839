"""Coinbase Exchange feed (``ws-feed.exchange.coinbase.com``, the former Pro feed), sans-IO.

Messages: ``snapshot`` / ``l2update`` (level2 and level2_batch: bids/asks ``[price, size]``,
changes ``[side, price, size]`` with side ``buy`` = bid, ``sell`` = ask), ``match`` /
``last_match`` (trades), ``ticker``, ``heartbeat``, ``subscriptions``, ``error``.

Integrity: level2 carries no sequence number, so a lost l2update can only show up as a crossed
book (counted, resync). Matches and tickers carry the product's ``sequence``, which counts every
event of the product's full channel, so it skips numbers normally: we use it to drop repeated or
older messages. The contiguous counter is ``trade_id`` (per product, +1 per trade): a jump is a
lost trade, counted as a gap (trades cannot be fetched again, so there is nothing to resync).

Trade side: ``side`` is the MAKER order's side (Coinbase's documentation: "the side field
indicates the maker order side"); the capture agrees — the ``ticker`` for trade 881613 says
``buy`` (the taker) where its ``last_match`` says ``sell``. Trade.side is the aggressor, so it
is the opposite of ``side``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from alphapulse.protocol import Side, Trade
from nodes._coinbase._feed import BadFrame, Feed, fixed, parse_time_ns

_AGGRESSOR = {"buy": int(Side.SELL), "sell": int(Side.BUY)}
"""Maker side as sent → aggressor side (see the module docstring)."""
_BOOK_SIDES = {"buy": 0, "sell": 1}
SUBSCRIBE_CHANNELS = {"trades": "matches", "ticker": "ticker"}


class ExchangeFeed(Feed):
    """Parser and books for the Exchange feed (one instance per node, reset per connection)."""

    name = "coinbase.exchange"

    def __init__(self, *, level2_channel: str = "level2_batch", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.level2_channel = level2_channel
        self.last_trade_id: dict[str, int] = {}
        self.last_sequence: dict[tuple[str, str], int] = {}
        """(product, 'match' | 'ticker') → last sequence seen: older or equal ones are repeats."""

    def subscribe_messages(self) -> list[str]:
        channels = [self.level2_channel if c == "level2" else SUBSCRIBE_CHANNELS[c] for c in self.channels]
        channels.append("heartbeat")
        message = {"type": "subscribe", "product_ids": list(self.products), "channels": channels}
        return [orjson.dumps(message).decode()]

    def _frame(self, frame: str | bytes, receive_ns: int) -> None:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise BadFrame("bad_json", f"not JSON: {exc}") from None
        if not isinstance(msg, dict):
            raise BadFrame("bad_shape", "frame is not a JSON object")
        kind = msg.get("type")
        handler = self._HANDLERS.get(kind)
        if handler is None:
            raise BadFrame("unknown_type", f"unknown message type {kind!r}")
        handler(self, msg)

    # -- book ------------------------------------------------------------------------------------
    def _snapshot(self, msg: dict) -> None:
        product = msg.get("product_id")
        self.instrument(product)
        bids, asks = msg.get("bids"), msg.get("asks")
        if not isinstance(bids, list) or not isinstance(asks, list):
            raise BadFrame("bad_shape", "snapshot without bids/asks lists")
        n = len(bids) + len(asks)
        sides = np.empty(n, np.uint8)
        prices = np.empty(n, np.int64)
        qtys = np.empty(n, np.int64)
        for i, (side, level) in enumerate([(0, b) for b in bids] + [(1, a) for a in asks]):
            if not isinstance(level, list) or len(level) < 2:
                raise BadFrame("bad_shape", f"snapshot level {level!r}")
            sides[i] = side
            prices[i] = fixed(level[0], "price")
            qtys[i] = fixed(level[1], "size")
        ts = parse_time_ns(msg["time"]) if "time" in msg else 0
        self.load_book(product, sides, prices, qtys, ts, 0)

    def _l2update(self, msg: dict) -> None:
        self.book_frame = True
        product = msg.get("product_id")
        self.instrument(product)
        changes = msg.get("changes")
        if not isinstance(changes, list):
            raise BadFrame("bad_shape", "l2update without a changes list")
        n = len(changes)
        sides = np.empty(n, np.uint8)
        prices = np.empty(n, np.int64)
        qtys = np.empty(n, np.int64)
        for i, change in enumerate(changes):
            if not isinstance(change, list) or len(change) < 3:
                raise BadFrame("bad_shape", f"l2update change {change!r}")
            side = _BOOK_SIDES.get(change[0])
            if side is None:
                raise BadFrame("bad_side", f"l2update side {change[0]!r}")
            sides[i] = side
            prices[i] = fixed(change[1], "price")
            qtys[i] = fixed(change[2], "size")
        self.update_book(product, sides, prices, qtys, parse_time_ns(msg.get("time")), 0)

    # -- trades and tickers -------------------------------------------------------------------------
    def _repeated(self, product: str, channel: str, sequence: Any) -> bool:
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            raise BadFrame("bad_sequence", f"{channel} sequence {sequence!r}")
        key = (product, channel)
        last = self.last_sequence.get(key)
        if last is not None and sequence <= last:
            self.counters["dropped.duplicate_sequence"] += 1
            return True
        self.last_sequence[key] = sequence
        return False

    def _match(self, msg: dict, replayed: bool = False) -> None:
        product = msg.get("product_id")
        self.instrument(product)
        side = _AGGRESSOR.get(msg.get("side"))
        if side is None:
            raise BadFrame("bad_side", f"match side {msg.get('side')!r}")
        trade_id = msg.get("trade_id")
        if not isinstance(trade_id, int) or isinstance(trade_id, bool):
            raise BadFrame("bad_shape", f"trade_id {trade_id!r}")
        record = Trade(
            instrument_id=self.ids[product],
            price=fixed(msg.get("price"), "price"),
            quantity=fixed(msg.get("size"), "size"),
            exchange_ts_ns=parse_time_ns(msg.get("time")),
            side=side,
            flags=1 if replayed else 0,
        )
        last = self.last_trade_id.get(product)
        if last is not None and trade_id <= last:
            self.counters["trades.already_published" if replayed else "dropped.duplicate_trade"] += 1
            return
        if self._repeated(product, "match", msg.get("sequence")):
            return
        if last is not None and trade_id > last + 1 and not replayed:
            self.counters["gaps.trade_id"] += 1
            self.counters["gaps.trades_missing"] += trade_id - last - 1
            self.note("gaps.trade_id", "%s trades %d..%d missing", product, last + 1, trade_id - 1)
        self.last_trade_id[product] = trade_id
        self.announce(product)
        self.out.append(record)
        self.counters["trades"] += 1

    def _last_match(self, msg: dict) -> None:
        self._match(msg, replayed=True)

    def _ticker(self, msg: dict) -> None:
        product = msg.get("product_id")
        self.instrument(product)
        bid = fixed(msg.get("best_bid"), "best_bid")
        ask = fixed(msg.get("best_ask"), "best_ask")
        bid_qty = fixed(msg["best_bid_size"], "best_bid_size") if "best_bid_size" in msg else 0
        ask_qty = fixed(msg["best_ask_size"], "best_ask_size") if "best_ask_size" in msg else 0
        ts = parse_time_ns(msg["time"]) if "time" in msg else 0
        if "sequence" in msg and self._repeated(product, "ticker", msg["sequence"]):
            return
        self.quote(product, bid, bid_qty, ask, ask_qty, ts)
        self.counters["tickers"] += 1

    # -- control -----------------------------------------------------------------------------------
    def _heartbeat(self, msg: dict) -> None:
        self.counters["heartbeats"] += 1

    def _subscriptions(self, msg: dict) -> None:
        self.counters["subscriptions"] += 1
        self.log.info("%s: subscriptions %s", self.name, msg.get("channels"))

    def _error(self, msg: dict) -> None:
        raise BadFrame("venue", f"venue error: {msg.get('message')!r} {msg.get('reason', '')!r}")

    _HANDLERS = {
        "snapshot": _snapshot,
        "l2update": _l2update,
        "match": _match,
        "last_match": _last_match,
        "ticker": _ticker,
        "heartbeat": _heartbeat,
        "subscriptions": _subscriptions,
        "error": _error,
    }
