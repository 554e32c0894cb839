"""``source.kraken``: Kraken WebSocket v1 trades, tickers, spreads and CRC32-checked L2 books.

Two layers in one file:

* :class:`KrakenFeed`, sans-IO: ``receive(frame, receive_ns)`` parses one WebSocket frame and
  returns the encoded TLVs it produces (one message each); messages the adapter must send back
  (a resubscribe) collect in ``outgoing``. Tests and the benchmark drive it with captured frames.
* :class:`Kraken`, the node kind: runs the shared session loop
  (:func:`alphapulse.runtime.run_websocket_session`) with the feed as its frame handler.

Books (``book`` channel, WS API v1)
-----------------------------------
A snapshot (``as``/``bs``) replaces the pair's book; updates (``a``/``b``, sometimes both in one
frame as two objects, levels ``[price, volume, timestamp]`` with an optional ``"r"`` republish
flag) set a level's volume (``0`` removes it). After every update the book is TRUNCATED to the
subscribed depth, as Kraken does on its side, and Kraken's CRC32 checksum ``c`` is verified on
EVERY update: top 10 asks ascending then top 10 bids descending, each level's price and volume
strings with ``.`` removed and leading zeros stripped, concatenated. The checksum needs the
exchange's own decimal strings (``"56218.30000"`` is not ``pair_decimals`` = 1 digits), so each
level keeps the JSON list it came in, and the top-10 string is rebuilt only when a change
reaches the top 10 (fragments are cached per level).

A mismatch (or a crossed book, or an update the feed could not apply) is counted, logged, and
resyncs THAT pair: its book is dropped (nothing more is published for it), an
``unsubscribe`` + ``subscribe`` pair of messages is queued, and updates are ignored until the
new snapshot, which is published as a full OrderBook. A book known to be bad is never
published: the delta of an update goes out only after its checksum matched.

Limitation of the venue's signal: the checksum covers the top 10 levels only, so a lost update
that changed only deeper levels cannot be detected until such a level reaches the top 10.
A duplicated update is harmless (updates set volumes, they do not add).

Output
------
* ``OrderBook`` on every (re)sync (and on snapshot requests); ``exchange_ts_ns`` is the latest
  level time. Kraken v1 has no book sequence numbers, so ``exchange_sequence`` /
  ``prev_sequence`` number the pair's book updates as this adapter applied them (the snapshot
  carries the number the next delta's ``prev_sequence`` continues from).
* ``OrderBookDelta`` per update: every level that changed (price, new volume, side; 0 =
  removed), including levels dropped by the truncation.
* ``Trade`` per trade (side from ``b``/``s``, the aggressor's), ``Quote`` per ticker (best
  bid/ask with their lot volumes; tickers carry no time, so ``exchange_ts_ns`` is 0) and per
  spread, and optionally per top-of-book change (``book_quotes``).
* ``InstrumentMapping`` for every pair when a session starts.

Instrument ids
--------------
``spot(venue, BASE, QUOTE)`` from the pair's ``wsname`` (``XBT/USD``) with Kraken's legacy asset
codes normalised: XBT → BTC, XDG → DOGE (so ``kraken:BTC-USD`` is ``XBT/USD``, and ids line up
with other venues' BTC pairs).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

import orjson

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import (
    FixedPointError,
    Instrument,
    TLVType,
    encode,
    mapping_for,
    parse_fixed,
    spot,
)

ASSET_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
"""Kraken's legacy asset codes → the common ones used in instrument ids."""

CHECKSUM_LEVELS = 10
_BID, _ASK = 0, 1  # BookSide
_LOG_FIRST = 10
"""Per error kind, the first occurrences are logged one by one, then every 1000th."""


# -- fixed point and TLV packing (hot path: plain struct, no records) ---------------------------------

_POW8 = tuple(10 ** (8 - d) for d in range(9))
_POW9 = tuple(10 ** (9 - d) for d in range(10))


def fixed(text: str) -> int:
    """An exchange decimal string as a 10^8 fixed-point int, exactly (never through a float)."""
    try:
        return int(text.replace(".", "")) * _POW8[len(text) - 1 - text.index(".")]
    except (ValueError, IndexError, AttributeError, TypeError):
        if not isinstance(text, str):
            raise FixedPointError(f"not a decimal string: {text!r}") from None
        return parse_fixed(text)  # no '.', exponents, > 8 decimals (zeros only), or garbage: raises


def fixed_many(texts: list[str]) -> list[int]:
    """:func:`fixed` over a list; the common case (all with the same number of decimals) in
    three C-speed passes."""
    if texts:
        try:
            first = texts[0]
            d = len(first) - 1 - first.index(".")
            mul = _POW8[d]
            if "".join(texts).count(".") == len(texts) and {t[-d - 1] for t in texts} == {"."}:
                return [int(t.replace(".", "")) * mul for t in texts]
        except (ValueError, IndexError, TypeError, AttributeError):
            pass
    return [fixed(t) for t in texts]


def seconds_ns(text: str | float) -> int:
    """Kraken's ``"1618678117.243818"`` seconds as Unix ns, exactly."""
    if isinstance(text, str):
        try:
            return int(text.replace(".", "")) * _POW9[len(text) - 1 - text.index(".")]
        except (ValueError, IndexError):
            pass
    return round(float(text) * 1e9)


_TRADE = struct.Struct("<BBQqqQBB4x")
_QUOTE = struct.Struct("<BBQqqqqQH")
_DELTA_HEAD = "<QQQQHB"
_DELTA_HEAD_SIZE = struct.calcsize(_DELTA_HEAD)
_BOOK_HEAD = "<QQQHH"
_BOOK_HEAD_SIZE = struct.calcsize(_BOOK_HEAD)
MAX_DELTA_CHANGES = (65535 - _DELTA_HEAD_SIZE) // 17
MAX_BOOK_LEVELS = (65535 - _BOOK_HEAD_SIZE) // 16
_delta_structs: dict[int, struct.Struct] = {}


def pack_trade(iid: int, price: int, qty: int, ts_ns: int, side: int) -> bytes:
    return _TRADE.pack(TLVType.TRADE, 38, iid, price, qty, ts_ns, side, 0)


def pack_quote(iid: int, bid: int, bid_qty: int, ask: int, ask_qty: int, ts_ns: int) -> bytes:
    return _QUOTE.pack(TLVType.QUOTE, 50, iid, bid, bid_qty, ask, ask_qty, ts_ns, 0)


def _delta_struct(n: int) -> struct.Struct:
    size = _DELTA_HEAD_SIZE + 17 * n
    head = "<BB" if size <= 255 else "<BBBH"
    st = _delta_structs[n] = struct.Struct(head + _DELTA_HEAD[1:] + "qqB" * n)
    return st


def pack_delta(iid: int, ts_ns: int, seq: int, prev: int, changes: list[int], flags: int = 0) -> bytes:
    """An OrderBookDelta TLV from a flat ``[price, qty, side, price, qty, side, ...]`` list."""
    n = len(changes) // 3
    st = _delta_structs.get(n) or _delta_struct(n)
    size = _DELTA_HEAD_SIZE + 17 * n
    if size <= 255:
        return st.pack(TLVType.ORDER_BOOK_DELTA, size, iid, ts_ns, seq, prev, n, flags, *changes)
    return st.pack(255, 0, TLVType.ORDER_BOOK_DELTA, size, iid, ts_ns, seq, prev, n, flags, *changes)


def pack_deltas(iid: int, ts_ns: int, seq: int, prev: int, changes: list[int]) -> list[bytes]:
    """One delta, or several when the changes overflow one TLV (all but the first apply on ``seq``)."""
    step = MAX_DELTA_CHANGES * 3
    if len(changes) <= step:
        return [pack_delta(iid, ts_ns, seq, prev, changes)]
    out = []
    for start in range(0, len(changes), step):
        out.append(pack_delta(iid, ts_ns, seq, prev if start == 0 else seq, changes[start : start + step]))
    return out


def pack_book(iid: int, ts_ns: int, seq: int, bids: list[int], asks: list[int]) -> list[bytes]:
    """An OrderBook TLV from flat ``[price, qty, ...]`` lists (best first); levels that do not
    fit one TLV follow as an OrderBookDelta on the same sequence, so the book stays complete."""
    nb, na = len(bids) // 2, len(asks) // 2
    rest: list[int] = []
    if nb + na > MAX_BOOK_LEVELS:
        keep_b = min(nb, MAX_BOOK_LEVELS // 2 if na > MAX_BOOK_LEVELS // 2 else MAX_BOOK_LEVELS - na)
        keep_a = min(na, MAX_BOOK_LEVELS - keep_b)
        for i in range(keep_b, nb):
            rest += (bids[2 * i], bids[2 * i + 1], _BID)
        for i in range(keep_a, na):
            rest += (asks[2 * i], asks[2 * i + 1], _ASK)
        bids, asks, nb, na = bids[: 2 * keep_b], asks[: 2 * keep_a], keep_b, keep_a
    size = _BOOK_HEAD_SIZE + 16 * (nb + na)
    head = "<BB" if size <= 255 else "<BBBH"
    st = struct.Struct(head + _BOOK_HEAD[1:] + "qq" * (nb + na))
    prefix = (TLVType.ORDER_BOOK, size) if size <= 255 else (255, 0, TLVType.ORDER_BOOK, size)
    out = [st.pack(*prefix, iid, ts_ns, seq, nb, na, *bids, *asks)]
    if rest:
        out += pack_deltas(iid, ts_ns, seq, seq, rest)
    return out


# -- the book ------------------------------------------------------------------------------------


def _fragment(level: list) -> str:
    return level[0].replace(".", "").lstrip("0") + level[1].replace(".", "").lstrip("0")


class KrakenBook:
    """One pair's book: per side a sorted list of int keys (asks: price, bids: -price, so the
    best level is first on both sides), the level's JSON list by key (its exchange strings, for
    the checksum) and a cache of checksum fragments."""

    __slots__ = ("ask_frag", "ask_keys", "ask_raw", "ask_top", "bid_frag", "bid_keys", "bid_raw", "bid_top", "depth")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.ask_keys: list[int] = []
        self.bid_keys: list[int] = []
        self.ask_raw: dict[int, list] = {}
        self.bid_raw: dict[int, list] = {}
        self.ask_frag: dict[int, str] = {}
        self.bid_frag: dict[int, str] = {}
        self.ask_top: bytes | None = None
        self.bid_top: bytes | None = None

    def load(self, asks: list[list], bids: list[list]) -> tuple[list[int], list[int]]:
        """Replace the book with a snapshot's levels; return its flat ``[price, qty, ...]`` bids
        and asks, best first, truncated to the depth (what the OrderBook TLV carries)."""
        depth = self.depth
        out = []
        for levels, sign in ((asks, 1), (bids, -1)):
            prices = fixed_many([level[0] for level in levels])
            qtys = fixed_many([level[1] for level in levels])
            keys = [p * sign for p in prices] if sign < 0 else prices
            raw = dict(zip(keys, levels, strict=True))
            qty_of = dict(zip(keys, qtys, strict=True))
            if len(raw) != len(levels) or not all(qtys):  # repeated prices, zero volumes: tidy up
                for key in [k for k, q in qty_of.items() if not q]:
                    del raw[key], qty_of[key]
                keys = list(raw)
            if any(keys[i] > keys[i + 1] for i in range(min(len(keys), depth) - 1)):
                keys.sort()
            if len(keys) > depth:
                for key in keys[depth:]:
                    del raw[key]
                del keys[depth:]
            flat: list[int] = []
            for key in keys:
                flat += (key * sign, qty_of[key])
            out.append(flat)
            if sign > 0:
                self.ask_keys, self.ask_raw, self.ask_frag = keys, raw, {}
            else:
                self.bid_keys, self.bid_raw, self.bid_frag = keys, raw, {}
        self.ask_top = self.bid_top = None
        return out[1], out[0]

    @staticmethod
    def _remove(keys: list[int], raw: dict, key: int) -> None:
        del raw[key]
        del keys[bisect.bisect_left(keys, key)]

    def apply(self, levels: list[list], bid: bool, changes: list[int], latest: str) -> tuple[int, str]:
        """Apply one side's update levels; append changes to ``changes``; return the stale
        removals (levels to remove that were not in the book, which Kraken sends now and then
        and we ignore, like its own clients do) and the latest level time seen (string)."""
        if bid:
            keys, raw, frag, side, sign = self.bid_keys, self.bid_raw, self.bid_frag, _BID, -1
        else:
            keys, raw, frag, side, sign = self.ask_keys, self.ask_raw, self.ask_frag, _ASK, 1
        dirty = False
        stale = 0
        pow8 = _POW8
        for level in levels:
            ps = level[0]
            vs = level[1]
            pd = ps.replace(".", "")
            vd = vs.replace(".", "")
            try:
                price = int(pd) * pow8[len(ps) - 1 - ps.index(".")]
                qty = int(vd) * pow8[len(vs) - 1 - vs.index(".")]
            except (ValueError, IndexError):
                price = fixed(ps)
                qty = fixed(vs)
            t = level[2]
            if t > latest:
                latest = t
            key = price * sign
            if not dirty and (len(keys) <= CHECKSUM_LEVELS or key <= keys[CHECKSUM_LEVELS - 1]):
                dirty = True
            if qty:
                if key not in raw:
                    bisect.insort(keys, key)
                raw[key] = level
                frag[key] = pd.lstrip("0") + vd.lstrip("0")
                changes += (price, qty, side)
            elif key in raw:
                del raw[key]
                frag.pop(key, None)
                del keys[bisect.bisect_left(keys, key)]
                changes += (price, 0, side)
            else:
                stale += 1
        if dirty:
            if bid:
                self.bid_top = None
            else:
                self.ask_top = None
        return stale, latest

    def truncate(self, changes: list[int]) -> None:
        """Drop the levels beyond the subscribed depth (Kraken does the same on its side)."""
        depth = self.depth
        for keys, raw, frag, side, sign in (
            (self.ask_keys, self.ask_raw, self.ask_frag, _ASK, 1),
            (self.bid_keys, self.bid_raw, self.bid_frag, _BID, -1),
        ):
            if len(keys) > depth:
                for key in keys[depth:]:
                    del raw[key]
                    frag.pop(key, None)
                    changes += (key * sign, 0, side)
                del keys[depth:]

    @staticmethod
    def _top(keys: list[int], raw: dict, frag: dict) -> bytes:
        try:
            return "".join([frag[key] for key in keys[:CHECKSUM_LEVELS]]).encode()
        except KeyError:  # levels from a snapshot get their fragment when first needed
            pass
        parts = []
        for key in keys[:CHECKSUM_LEVELS]:
            f = frag.get(key)
            if f is None:
                f = frag[key] = _fragment(raw[key])
            parts.append(f)
        return "".join(parts).encode()

    def checksum(self) -> int:
        """Kraken's v1 CRC32 over the top 10 asks (ascending) then top 10 bids (descending)."""
        ask = self.ask_top
        if ask is None:
            ask = self.ask_top = self._top(self.ask_keys, self.ask_raw, self.ask_frag)
        bid = self.bid_top
        if bid is None:
            bid = self.bid_top = self._top(self.bid_keys, self.bid_raw, self.bid_frag)
        return zlib.crc32(bid, zlib.crc32(ask))

    def crossed(self) -> bool:
        return bool(self.ask_keys and self.bid_keys and -self.bid_keys[0] >= self.ask_keys[0])

    def best(self) -> tuple[int, int, int, int]:
        """(bid price, bid qty, ask price, ask qty); zeros for an empty side."""
        bid = bid_qty = ask = ask_qty = 0
        if self.bid_keys:
            key = self.bid_keys[0]
            bid, bid_qty = -key, fixed(self.bid_raw[key][1])
        if self.ask_keys:
            key = self.ask_keys[0]
            ask, ask_qty = key, fixed(self.ask_raw[key][1])
        return bid, bid_qty, ask, ask_qty

    def levels(self) -> tuple[list[int], list[int]]:
        """Flat ``[price, qty, ...]`` bids (best first) and asks (best first)."""
        bids: list[int] = []
        for key in self.bid_keys:
            bids += (-key, fixed(self.bid_raw[key][1]))
        asks: list[int] = []
        for key in self.ask_keys:
            asks += (key, fixed(self.ask_raw[key][1]))
        return bids, asks

    def strings(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(price, volume) strings as the exchange sent them: bids then asks, best first."""
        return (
            [(self.bid_raw[k][0], self.bid_raw[k][1]) for k in self.bid_keys],
            [(self.ask_raw[k][0], self.ask_raw[k][1]) for k in self.ask_keys],
        )


def book_checksum(asks: Iterable[tuple[str, str]], bids: Iterable[tuple[str, str]]) -> int:
    """Reference v1 checksum from (price, volume) strings, best first on each side (for tests)."""
    text = ""
    for levels in (asks, bids):
        for i, (price, volume) in enumerate(levels):
            if i == CHECKSUM_LEVELS:
                break
            text += price.replace(".", "").lstrip("0") + volume.replace(".", "").lstrip("0")
    return zlib.crc32(text.encode())


# -- the sans-IO feed ------------------------------------------------------------------------------


@dataclasses.dataclass
class PairStatistics:
    updates: int = 0
    checksum_ok: int = 0
    checksum_mismatch: int = 0
    resyncs: int = 0
    crossed: int = 0
    snapshots: int = 0
    trades: int = 0
    quotes: int = 0
    ignored_unsynced: int = 0
    stale_removals: int = 0


class _Pair:
    __slots__ = (
        "book",
        "book_seq",
        "iid",
        "instrument",
        "last_quote",
        "mapping",
        "name",
        "resubscribing",
        "stats",
        "synced",
    )

    def __init__(self, name: str, instrument: Instrument) -> None:
        self.name = name
        self.instrument = instrument
        self.iid = instrument.id
        self.mapping = encode(mapping_for(instrument))
        self.book: KrakenBook | None = None
        self.synced = False
        self.resubscribing = False
        self.book_seq = 0
        self.stats = PairStatistics()
        self.last_quote: tuple[int, int, int, int] | None = None


def kraken_instrument(venue: str, wsname: str) -> Instrument:
    """The instrument of a Kraken pair (``XBT/USD`` → ``spot|kraken|BTC|USD``)."""
    base, sep, quote = wsname.partition("/")
    if not sep:
        raise ValueError(f"Kraken pair {wsname!r} is not BASE/QUOTE")
    return spot(venue, ASSET_ALIASES.get(base, base), ASSET_ALIASES.get(quote, quote))


class KrakenFeed:
    """Sans-IO Kraken WS v1 adapter core: frames in, encoded TLVs out."""

    def __init__(
        self,
        pairs: Iterable[str],
        *,
        channels: Iterable[str] = ("trade", "ticker", "book"),
        depth: int = 10,
        verify_checksum: bool = True,
        book_quotes: bool = False,
        venue: str = "kraken",
        counters: Counter[str] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.channels = tuple(channels)
        self.depth = depth
        self.verify_checksum = verify_checksum
        self.book_quotes = book_quotes
        self.venue = venue
        self.pairs = {name: _Pair(name, kraken_instrument(venue, name)) for name in pairs}
        self.by_id = {p.iid: p for p in self.pairs.values()}
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.log = log or logging.getLogger("alphapulse.kraken")
        self.outgoing: list[str] = []
        """Messages to send upstream (resubscribes); the node sends and clears them."""
        self.system_status: str | None = None

    # -- session ---------------------------------------------------------------------------------
    def subscribe_messages(self) -> list[str]:
        """The subscribe requests to send after connecting (one per channel, all pairs)."""
        names = list(self.pairs)
        return [self._subscription("subscribe", names, channel) for channel in self.channels]

    def _subscription(self, event: str, names: list[str], channel: str) -> str:
        sub: dict[str, Any] = {"name": channel}
        if channel == "book":
            sub["depth"] = self.depth
        return orjson.dumps({"event": event, "pair": names, "subscription": sub}).decode()

    def mappings(self) -> list[bytes]:
        return [p.mapping for p in self.pairs.values()]

    def reset(self) -> None:
        """Connection lost: drop every book; nothing is published until fresh snapshots."""
        for pair in self.pairs.values():
            pair.book = None
            pair.synced = False
            pair.resubscribing = False
        self.outgoing.clear()

    # -- frames -----------------------------------------------------------------------------------
    def receive(self, frame: str | bytes, receive_ns: int = 0) -> list[bytes]:
        """Parse one frame; return the TLVs it produces (each to be one message)."""
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self._error("bad_json", "frame is not JSON: %.120r", frame)
            return []
        out: list[bytes] = []
        try:
            if type(msg) is list:
                channel = msg[-2]
                pair = self.pairs.get(msg[-1])
                if pair is None:
                    self._error("unknown_pair", "frame for a pair not subscribed: %.120r", frame)
                elif channel[:4] == "book":
                    self._book(pair, msg, out)
                elif channel == "trade":
                    self._trades(pair, msg[1], out)
                elif channel == "ticker":
                    self._ticker(pair, msg[1], out)
                elif channel == "spread":
                    self._spread(pair, msg[1], out)
                else:
                    self._error("unknown_channel", "frame of unknown channel %r", channel)
            elif type(msg) is dict:
                self._event(msg)
            else:
                self._error("malformed", "frame is neither an array nor an object: %.120r", frame)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            self._error("malformed", "cannot read frame (%s: %s): %.200r", type(exc).__name__, exc, frame)
        return out

    def _book(self, pair: _Pair, msg: list, out: list[bytes]) -> None:
        first = msg[1]
        if "as" in first or "bs" in first:
            self._snapshot(pair, first.get("as", []), first.get("bs", []), out)
            return
        book = pair.book
        stats = pair.stats
        if book is None or not pair.synced:
            stats.ignored_unsynced += 1
            return
        asks = first.get("a")
        bids = first.get("b")
        checksum = first.get("c")
        if len(msg) > 4:  # asks and bids as two objects: [id, {"a": ...}, {"b": ..., "c": ...}, name, pair]
            second = msg[2]
            if bids is None:
                bids = second.get("b")
            if asks is None:
                asks = second.get("a")
            checksum = second.get("c", checksum)
        changes: list[int] = []
        latest = ""
        try:
            if asks:
                stale, latest = book.apply(asks, False, changes, latest)
                if stale:
                    stats.stale_removals += stale
            if bids:
                stale, latest = book.apply(bids, True, changes, latest)
                if stale:
                    stats.stale_removals += stale
            if len(book.ask_keys) > book.depth or len(book.bid_keys) > book.depth:
                book.truncate(changes)
        except (IndexError, TypeError, ValueError, AttributeError) as exc:
            self._error("malformed", "%s: cannot apply book update (%s); resyncing", pair.name, exc)
            self._resync(pair, "unreadable update")
            return
        stats.updates += 1
        if self.verify_checksum:
            if checksum is None:
                self._error("missing_checksum", "%s: book update without checksum", pair.name)
            elif book.checksum() != int(checksum):
                stats.checksum_mismatch += 1
                self.counters["book.checksum_mismatch"] += 1
                self._error("checksum", "%s: book checksum mismatch (got %s); resyncing", pair.name, checksum)
                self._resync(pair, "checksum mismatch")
                return
            else:
                stats.checksum_ok += 1
        if book.ask_keys and book.bid_keys and -book.bid_keys[0] >= book.ask_keys[0]:
            stats.crossed += 1
            self.counters["book.crossed"] += 1
            self._error("crossed", "%s: crossed book after an update; resyncing", pair.name)
            self._resync(pair, "crossed book")
            return
        if changes:
            seq = pair.book_seq
            pair.book_seq = seq + 1
            ts = seconds_ns(latest) if latest else 0
            if len(changes) <= 36:  # the common small update: one standard TLV, packed inline
                n = len(changes) // 3
                st = _delta_structs.get(n) or _delta_struct(n)
                out.append(st.pack(TLVType.ORDER_BOOK_DELTA, 35 + 17 * n, pair.iid, ts, seq + 1, seq, n, 0, *changes))
            else:
                out += pack_deltas(pair.iid, ts, seq + 1, seq, changes)
            if self.book_quotes:
                self._book_quote(pair, book, ts, out)

    def _snapshot(self, pair: _Pair, asks: list, bids: list, out: list[bytes]) -> None:
        book = KrakenBook(self.depth)
        try:
            bid_levels, ask_levels = book.load(asks, bids)
            latest = max([level[2] for level in asks] + [level[2] for level in bids], default="")
        except (IndexError, TypeError, ValueError, AttributeError) as exc:
            self._error("malformed", "%s: unreadable book snapshot (%s); resyncing", pair.name, exc)
            self._resync(pair, "unreadable snapshot")
            return
        pair.stats.snapshots += 1
        self.counters["book.snapshots"] += 1
        if book.crossed():
            pair.stats.crossed += 1
            self.counters["book.crossed"] += 1
            self._error("crossed", "%s: crossed book snapshot; resyncing", pair.name)
            self._resync(pair, "crossed snapshot")
            return
        pair.book = book
        pair.synced = True
        pair.resubscribing = False
        ts = seconds_ns(latest) if latest else 0
        out += pack_book(pair.iid, ts, pair.book_seq, bid_levels, ask_levels)
        pair.last_quote = None
        if self.book_quotes:
            self._book_quote(pair, book, ts, out)

    def _book_quote(self, pair: _Pair, book: KrakenBook, ts: int, out: list[bytes]) -> None:
        best = book.best()
        if best != pair.last_quote:
            pair.last_quote = best
            pair.stats.quotes += 1
            out.append(pack_quote(pair.iid, best[0], best[1], best[2], best[3], ts))

    def _resync(self, pair: _Pair, reason: str) -> None:
        """Drop the pair's book and ask Kraken for a fresh snapshot (unsubscribe + subscribe)."""
        pair.stats.resyncs += 1
        self.counters["book.resyncs"] += 1
        pair.book = None
        pair.synced = False
        if pair.resubscribing:
            return  # a resubscribe is already on its way; its snapshot will resync the pair
        pair.resubscribing = True
        self.log.warning("%s: resyncing book (%s)", pair.name, reason)
        self.outgoing.append(self._subscription("unsubscribe", [pair.name], "book"))
        self.outgoing.append(self._subscription("subscribe", [pair.name], "book"))

    def _trades(self, pair: _Pair, trades: list, out: list[bytes]) -> None:
        iid = pair.iid
        for trade in trades:
            side = trade[3]
            out.append(
                pack_trade(
                    iid,
                    fixed(trade[0]),
                    fixed(trade[1]),
                    seconds_ns(trade[2]),
                    1 if side == "b" else 2 if side == "s" else 0,
                )
            )
        pair.stats.trades += len(trades)

    def _ticker(self, pair: _Pair, ticker: dict, out: list[bytes]) -> None:
        bid = ticker["b"]
        ask = ticker["a"]
        out.append(pack_quote(pair.iid, fixed(bid[0]), fixed(bid[2]), fixed(ask[0]), fixed(ask[2]), 0))
        pair.stats.quotes += 1

    def _spread(self, pair: _Pair, spread: list, out: list[bytes]) -> None:
        bid, ask, ts, bid_qty, ask_qty = spread[:5]
        out.append(pack_quote(pair.iid, fixed(bid), fixed(bid_qty), fixed(ask), fixed(ask_qty), seconds_ns(ts)))
        pair.stats.quotes += 1

    def _event(self, msg: dict) -> None:
        event = msg.get("event")
        if event == "heartbeat":
            self.counters["kraken.heartbeats"] += 1
        elif event == "subscriptionStatus":
            status = msg.get("status")
            if status == "error":
                self._error("subscription", "subscription error for %s: %s", msg.get("pair"), msg.get("errorMessage"))
            elif status not in ("subscribed", "unsubscribed"):
                self._error("unknown_event", "unexpected subscription status %.200r", msg)
        elif event == "systemStatus":
            self.system_status = msg.get("status")
            if self.system_status != "online":
                self.log.warning("Kraken system status: %s", self.system_status)
        elif event == "error":
            self._error("exchange", "Kraken error: %s", msg.get("errorMessage"))
        elif event == "pong":
            pass
        else:
            self._error("unknown_event", "unknown event %.200r", msg)

    def _error(self, kind: str, message: str, *args: Any) -> None:
        key = f"errors.{kind}"
        n = self.counters[key] = self.counters[key] + 1
        if n <= _LOG_FIRST or n % 1000 == 0:
            self.log.warning(message + (f" [{n} so far]" if n > 1 else ""), *args)

    # -- state --------------------------------------------------------------------------------------
    def snapshot(self, instrument_id: int = 0) -> list[bytes]:
        """Mappings and current books (synced pairs only) of one instrument or of all (0)."""
        out: list[bytes] = []
        for pair in self.pairs.values():
            if instrument_id not in (0, pair.iid):
                continue
            out.append(pair.mapping)
            if pair.synced and pair.book is not None:
                bids, asks = pair.book.levels()
                out += pack_book(pair.iid, time.time_ns(), pair.book_seq, bids, asks)
        return out

    def statistics(self) -> dict[str, Any]:
        return {
            "pairs": {name: dataclasses.asdict(p.stats) for name, p in self.pairs.items()},
            "synced": sorted(name for name, p in self.pairs.items() if p.synced),
            "system_status": self.system_status,
            "errors": {k[7:]: v for k, v in self.counters.items() if k.startswith("errors.")},
        }


# -- the node kind ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KrakenParams:
    endpoint: str = param("wss://ws.kraken.com", doc="Kraken WebSocket v1 URL.", pattern="^wss?://")
    pairs: tuple[str, ...] = param(
        ("XBT/USD",),
        doc="Pairs to subscribe to, in Kraken's BASE/QUOTE wsname notation (XBT/USD).",
        minItems=1,
        items={"type": "string", "pattern": "^[A-Z0-9]+/[A-Z0-9]+$"},
    )
    channels: tuple[Literal["trade", "ticker", "spread", "book"], ...] = param(
        ("trade", "ticker", "book"),
        doc="Data to subscribe to: trade, ticker (quotes with lot volumes), spread (quotes with exchange time), book.",
        minItems=1,
        uniqueItems=True,
    )
    depth: Literal[10, 25, 100, 500, 1000] = param(
        10,
        doc="Book depth to subscribe to; the local book is truncated to it for the checksum.",
    )
    verify_checksum: bool = param(
        True,
        doc="Check the CRC32 book checksum on every update; a mismatch resyncs the pair.",
    )
    book_quotes: bool = param(
        False,
        doc="Also publish a Quote whenever the top of a book changes.",
    )
    venue: str = param("kraken", doc="Exchange name used in instrument ids.", pattern="^[a-z0-9_.]+$")
    staleness_timeout: float = param(
        30.0,
        doc="Seconds without any frame (heartbeats included) before reconnecting.",
        live=True,
        exclusiveMinimum=0,
    )
    reconnect_initial: float = param(0.5, doc="First reconnect delay in seconds.", live=True, exclusiveMinimum=0)
    reconnect_max: float = param(
        30.0, doc="Cap of the exponential reconnect delay in seconds.", live=True, exclusiveMinimum=0
    )
    breaker_failures: int = param(
        5,
        doc="Failed connects in a row that open the circuit breaker.",
        live=True,
        minimum=1,
    )


class _LiveSessionSettings:
    """SessionSettings read from the node's current params, so live changes apply at once."""

    connect_timeout = 10.0
    message_queue_size = 4096
    max_message_size = 64 * 1024 * 1024

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def stale_after(self) -> float:
        return self._node.params.staleness_timeout

    @property
    def backoff(self) -> Any:
        from alphapulse.runtime import Backoff

        p = self._node.params
        return Backoff(initial=p.reconnect_initial, maximum=p.reconnect_max)


@node_kind(
    "source.kraken",
    emits=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA, TLVType.INSTRUMENT_MAPPING],
    example={"pairs": ["XBT/USD", "ETH/USD"], "depth": 25},
)
class Kraken(Node):
    """Kraken WebSocket v1 adapter: trades, tickers, spreads and L2 books with CRC32 checksums.

    Every book update is checked against Kraken's checksum over the book truncated to the
    subscribed depth; a mismatch is counted, logged and triggers a resubscribe of that pair.
    """

    Params = KrakenParams

    def __init__(self, params: KrakenParams) -> None:
        super().__init__(params)
        self.feed = KrakenFeed(
            params.pairs,
            channels=params.channels,
            depth=params.depth,
            verify_checksum=params.verify_checksum,
            book_quotes=params.book_quotes,
            venue=params.venue,
        )
        self._ws: Any = None

    async def run(self, ctx: Any) -> None:
        from alphapulse.runtime import BreakerSettings, run_websocket_session

        feed = self.feed
        feed.counters = ctx.counters
        feed.log = ctx.log
        ctx.breaker("upstream", BreakerSettings(failure_threshold=self.params.breaker_failures))
        ctx.messages(feed.mappings())
        await ctx.flush()

        async def on_connect(ws: Any) -> None:
            self._ws = ws
            feed.reset()
            for message in feed.subscribe_messages():
                await ws.send_message(message)

        def on_disconnect() -> None:
            self._ws = None
            feed.reset()

        message = ctx.message

        def on_message(frame: str | bytes, receive_ns: int) -> Any:
            tlvs = feed.receive(frame, receive_ns)
            for tlv in tlvs:
                message(tlv, timestamp_ns=receive_ns)
            if feed.outgoing or tlvs:
                return self._after_frame(ctx)
            return None

        await run_websocket_session(
            ctx,
            self.params.endpoint,
            on_connect=on_connect,
            on_message=on_message,
            on_disconnect=on_disconnect,
            settings=_LiveSessionSettings(self),  # type: ignore[arg-type]
        )

    async def _after_frame(self, ctx: Any) -> None:
        await ctx.flush()
        if self.feed.outgoing and self._ws is not None:
            outgoing = list(self.feed.outgoing)
            self.feed.outgoing.clear()
            for text in outgoing:
                await self._ws.send_message(text)

    def snapshot(self, instrument_id: int) -> list[bytes]:
        return self.feed.snapshot(instrument_id)

    def statistics(self) -> dict[str, Any]:
        return self.feed.statistics()
