"""Coinbase Advanced Trade WebSocket (``advanced-trade-ws.coinbase.com``), sans-IO.

Every frame is ``{"channel", "timestamp", "sequence_num", "events": [...]}``. ``sequence_num``
counts frames per connection across ALL channels, so any gap (a lost frame, whatever its
channel) may have been a book update: we cannot repair it in place and ask for a resync
(reconnect, fresh snapshots). A repeated or older number is a duplicate and is dropped.

Channels: ``l2_data`` (snapshot then updates; side ``bid``/``offer``), ``market_trades``,
``ticker``, ``heartbeats``, ``subscriptions``; ``candles`` are counted and ignored (they are the
running 5-minute candle, not closed bars).

Trade side: ``market_trades[].side`` is the MAKER's side, as in the Exchange feed's ``match``.
In the real capture, 48 of 50 SELL trades print at or above the best offer and 23 of 28 BUY
trades at or below the best bid (the rest inside the spread): a SELL print was a buyer lifting
the offer. So the aggressor (Trade.side) is the opposite of ``side``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from alphapulse.protocol import Side, Trade
from nodes._coinbase import _scan
from nodes._coinbase._feed import BadFrame, Feed, fixed, parse_time_ns

SUBSCRIBE_CHANNELS = {"trades": "market_trades", "ticker": "ticker", "level2": "level2"}
_AGGRESSOR = {"BUY": int(Side.SELL), "SELL": int(Side.BUY)}
"""Maker side as sent → aggressor side (see the module docstring)."""
_SIDES = {"bid": 0, "offer": 1}
_UPDATES_KEY = b'"updates"'
_WS = b" \t\r\n"


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadFrame("bad_json", f"not JSON: {exc}") from None


def _cut_updates(raw: bytes) -> tuple[bytes, list[tuple[int, int]]] | None:
    """The frame with every ``updates`` array emptied, and the (start, end) of each array body.

    None when the frame does not have the plain shape (the generic path then parses it whole).
    """
    spans: list[tuple[int, int]] = []
    pieces: list[bytes] = []
    last = 0
    pos = raw.find(_UPDATES_KEY)
    while pos >= 0:
        k = pos + len(_UPDATES_KEY)
        while k < len(raw) and raw[k] in _WS:
            k += 1
        if k >= len(raw) or raw[k] != 58:  # ':'
            return None
        k += 1
        while k < len(raw) and raw[k] in _WS:
            k += 1
        if k >= len(raw) or raw[k] != 91:  # '['
            return None
        end = raw.find(b"]", k)
        if end < 0:
            return None
        spans.append((k + 1, end))
        pieces.append(raw[last : k + 1])
        last = end
        pos = raw.find(_UPDATES_KEY, end)
    pieces.append(raw[last:])
    return b"".join(pieces), spans


class AdvancedTradeFeed(Feed):
    """Parser and books for the Advanced Trade API (one instance per node, reset per connection)."""

    name = "coinbase.advanced_trade"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.next_sequence: int | None = None
        self.last_trade_id: dict[str, int] = {}
        self.fast_path = True
        """Scan ``updates`` arrays with the numba kernel (False: json only, for cross-checks)."""

    def subscribe_messages(self) -> list[str]:
        """One subscribe per channel (the API takes one channel per message); heartbeats always,
        so a quiet product never looks stale."""
        channels = [SUBSCRIBE_CHANNELS[c] for c in self.channels] + ["heartbeats"]
        return [json.dumps({"type": "subscribe", "product_ids": list(self.products), "channel": c})
                for c in channels]

    def reset(self) -> None:
        super().reset()
        self.next_sequence = None

    # -- parsing -----------------------------------------------------------------------------------
    def _frame(self, frame: str | bytes, receive_ns: int) -> None:
        raw = frame.encode("utf-8") if isinstance(frame, str) else frame
        spans: list[tuple[int, int]] = []
        msg = None
        if self.fast_path and _UPDATES_KEY in raw:
            cut = _cut_updates(raw)
            if cut is not None:
                try:
                    msg = orjson.loads(cut[0])
                    spans = cut[1]
                except ValueError:
                    msg = None
        if msg is None:
            msg = _loads(raw)
        if not isinstance(msg, dict):
            raise BadFrame("bad_shape", "frame is not a JSON object")
        channel = msg.get("channel")
        if channel is None:
            if msg.get("type") == "error":
                raise BadFrame("venue", f"venue error: {msg.get('message')!r}")
            raise BadFrame("bad_shape", "frame has no channel")
        if not self._sequence_ok(msg.get("sequence_num")):
            return
        events = msg.get("events")
        if not isinstance(events, list):
            raise BadFrame("bad_shape", f"{channel} frame without an events list")
        handler = self._HANDLERS.get(channel)
        if handler is None:
            if channel in self._IGNORED:
                self.counters[f"ignored.{channel}"] += 1
                return
            raise BadFrame("unknown_channel", f"unknown channel {channel!r}")
        handler(self, msg, events, raw, spans, receive_ns)

    def _sequence_ok(self, sequence: Any) -> bool:
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
            raise BadFrame("bad_sequence", f"sequence_num is not a count: {sequence!r}")
        expected = self.next_sequence
        if expected is None:
            if sequence != 0:
                self.counters["sequence.started_late"] += 1
            self.next_sequence = sequence + 1
            return True
        if sequence == expected:
            self.next_sequence = sequence + 1
            return True
        if sequence < expected:
            self.counters["dropped.duplicate_sequence"] += 1
            return False
        self.counters["gaps.sequence"] += 1
        self.counters["gaps.sequence_missing"] += sequence - expected
        self.resync(f"sequence_num gap: expected {expected}, got {sequence}")
        return False

    def _timestamp(self, msg: dict) -> int:
        return parse_time_ns(msg.get("timestamp"))

    def _l2_data(self, msg, events, raw, spans, receive_ns) -> None:
        self.book_frame = True
        sequence = msg["sequence_num"]
        if spans and len(spans) != sum(1 for e in events if isinstance(e, dict) and "updates" in e):
            spans = []  # shapes disagree: parse this frame generically
            events = _loads(raw)["events"]
        buf = np.frombuffer(raw, np.uint8) if spans else None
        for i, event in enumerate(events):
            if not isinstance(event, dict):
                raise BadFrame("bad_shape", "l2_data event is not an object")
            kind = event.get("type")
            product = event.get("product_id")
            if kind not in ("snapshot", "update"):
                raise BadFrame("bad_shape", f"l2_data event type {kind!r}")
            self.instrument(product)
            span = spans[i] if spans else None
            if kind == "update" and span is not None:
                if self.update_book_scanned(product, buf, span[0], span[1], sequence):
                    if self.resync_reason is not None:
                        return
                    continue
                self.counters["l2.slow_path"] += 1
                levels = self._parse_updates(_loads(b"[" + raw[span[0] : span[1]] + b"]"))
            elif span is not None:
                n, *levels = _scan.scan(buf, span[0], span[1])
                if n < 0:
                    self.counters["l2.slow_path"] += 1
                    levels = self._parse_updates(_loads(b"[" + raw[span[0] : span[1]] + b"]"))
            else:
                levels = self._parse_updates(event.get("updates"))
            sides, prices, qtys, times = levels
            ts = int(times.max()) if len(times) else self._timestamp(msg)
            if kind == "snapshot":
                self.load_book(product, sides, prices, qtys, ts, sequence)
            else:
                self.update_book(product, sides, prices, qtys, ts, sequence)
            if self.resync_reason is not None:
                return

    def _parse_updates(self, updates: Any):
        """The generic path: json objects → arrays, with exact per-field errors."""
        if not isinstance(updates, list):
            raise BadFrame("bad_shape", "l2_data event without an updates list")
        n = len(updates)
        sides = np.empty(n, np.uint8)
        prices = np.empty(n, np.int64)
        qtys = np.empty(n, np.int64)
        times = np.empty(n, np.int64)
        for i, u in enumerate(updates):
            if not isinstance(u, dict):
                raise BadFrame("bad_shape", "l2_data update is not an object")
            side = _SIDES.get(u.get("side"))
            if side is None:
                raise BadFrame("bad_side", f"l2_data side {u.get('side')!r}")
            sides[i] = side
            prices[i] = fixed(u.get("price_level"), "price_level")
            qtys[i] = fixed(u.get("new_quantity"), "new_quantity")
            times[i] = parse_time_ns(u.get("event_time"))
        return sides, prices, qtys, times

    def _market_trades(self, msg, events, raw, spans, receive_ns) -> None:
        for event in events:
            trades = event.get("trades") if isinstance(event, dict) else None
            if not isinstance(trades, list):
                raise BadFrame("bad_shape", "market_trades event without a trades list")
            snapshot = event.get("type") == "snapshot"
            # a snapshot lists recent trades newest first: publish them oldest first, flagged as
            # not live, and only those newer than what this node already published
            for t in reversed(trades) if snapshot else trades:
                self._trade(t, snapshot)

    def _trade(self, t: Any, replayed: bool) -> None:
        if not isinstance(t, dict):
            raise BadFrame("bad_shape", "trade is not an object")
        product = t.get("product_id")
        self.instrument(product)
        side = _AGGRESSOR.get(t.get("side"))
        if side is None:
            raise BadFrame("bad_side", f"trade side {t.get('side')!r}")
        try:
            trade_id = int(t.get("trade_id"))
        except (TypeError, ValueError):
            raise BadFrame("bad_shape", f"trade_id {t.get('trade_id')!r}") from None
        last = self.last_trade_id.get(product)
        if replayed and last is not None and trade_id <= last:
            self.counters["trades.already_published"] += 1
            return
        if last is None or trade_id > last:
            self.last_trade_id[product] = trade_id
        record = Trade(
            instrument_id=self.announce(product),
            price=fixed(t.get("price"), "price"),
            quantity=fixed(t.get("size"), "size"),
            exchange_ts_ns=parse_time_ns(t.get("time")),
            side=side,
            flags=1 if replayed else 0,
        )
        self.out.append(record)
        self.counters["trades"] += 1

    def _ticker(self, msg, events, raw, spans, receive_ns) -> None:
        ts = self._timestamp(msg)
        for event in events:
            tickers = event.get("tickers") if isinstance(event, dict) else None
            if not isinstance(tickers, list):
                raise BadFrame("bad_shape", "ticker event without a tickers list")
            for t in tickers:
                if not isinstance(t, dict):
                    raise BadFrame("bad_shape", "ticker is not an object")
                self.quote(
                    t.get("product_id"),
                    fixed(t.get("best_bid"), "best_bid"),
                    fixed(t.get("best_bid_quantity"), "best_bid_quantity"),
                    fixed(t.get("best_ask"), "best_ask"),
                    fixed(t.get("best_ask_quantity"), "best_ask_quantity"),
                    ts,
                )
                self.counters["tickers"] += 1

    def _heartbeats(self, msg, events, raw, spans, receive_ns) -> None:
        self.counters["heartbeats"] += 1

    def _subscriptions(self, msg, events, raw, spans, receive_ns) -> None:
        self.counters["subscriptions"] += 1
        self.log.info("%s: subscriptions %s", self.name, events)

    _HANDLERS = {
        "l2_data": _l2_data,
        "market_trades": _market_trades,
        "ticker": _ticker,
        "heartbeats": _heartbeats,
        "subscriptions": _subscriptions,
    }
    _IGNORED = frozenset({"candles", "status"})
