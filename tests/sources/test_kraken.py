"""source.kraken against the real Kraken WS v1 captures: the sans-IO feed directly, then the real
node (session loop, publisher socket) fed by the local replay server, with injected faults."""

from __future__ import annotations

import contextlib
import functools
import re
from decimal import Decimal

import orjson
import pytest
import trio

from alphapulse import protocol
from alphapulse.captures import received_frames, sent_messages
from alphapulse.testing import ReplayFaults, ReplayResponder, run_node, serve_capture
from nodes.kraken import (
    KrakenBook,
    KrakenFeed,
    _warm_up_frames,
    book_checksum,
    fixed,
    kraken_instrument,
    seconds_ns,
)
from tests._fresh import assert_fresh_run_ok
from tests.sources._books import consumer_books

BOOK_PAIRS = ["WAVES/EUR", "KSM/XBT", "SC/EUR", "OCEAN/XBT", "XBT/CHF"]
LIST_PAIRS = [
    "WAVES/EUR",
    "XMR/USD",
    "KSM/XBT",
    "GRT/ETH",
    "SC/EUR",
    "ETH/CHF",
    "OCEAN/XBT",
    "OMG/USD",
    "XBT/CHF",
    "ADA/XBT",
]


@pytest.fixture(scope="module")
def book_frames(shared_data) -> list[str]:
    return list(received_frames(shared_data / "kraken" / "KRAKEN.ws.50.0"))


def _feed(**kw) -> KrakenFeed:
    kw.setdefault("channels", ["book"])
    kw.setdefault("depth", 1000)
    return KrakenFeed(BOOK_PAIRS, **kw)


def _totals(feed: KrakenFeed) -> dict[str, int]:
    out: dict[str, int] = {}
    for stats in feed.statistics()["pairs"].values():
        for k, v in stats.items():
            out[k] = out.get(k, 0) + v
    return out


def _decode(tlvs: list[bytes]) -> list:
    return [protocol.decode(t, v) for tlv in tlvs for t, v in protocol.iter_tlvs(tlv)]


# -- an independent reference: Kraken's side of the book, kept with Decimal and the raw strings --


class ReferenceBooks:
    """The exchange's true books from the ORIGINAL frames (so faults do not touch it); answers
    resubscribes like Kraken does: subscriptionStatus, then a snapshot of the current book."""

    def __init__(self, depth: int = 1000) -> None:
        self.depth = depth
        self.books: dict[str, dict[str, dict[Decimal, list]]] = {}
        self.channel_ids: dict[str, int] = {}

    def apply(self, frame: str) -> None:
        msg = orjson.loads(frame)
        if isinstance(msg, dict):
            if msg.get("event") == "subscriptionStatus" and "channelID" in msg:
                self.channel_ids[msg["pair"]] = msg["channelID"]
            return
        pair = msg[-1]
        if not msg[-2].startswith("book"):
            return
        if "as" in msg[1]:
            self.books[pair] = {
                "a": {Decimal(lv[0]): lv for lv in msg[1]["as"]},
                "b": {Decimal(lv[0]): lv for lv in msg[1]["bs"]},
            }
            return
        book = self.books[pair]
        for part in msg[1:-2]:
            for side in ("a", "b"):
                for lv in part.get(side, ()):
                    if Decimal(lv[1]) == 0:
                        book[side].pop(Decimal(lv[0]), None)
                    else:
                        book[side][Decimal(lv[0])] = lv
        for side in ("a", "b"):
            if len(book[side]) > self.depth:
                keep = self.levels(pair, side)[: self.depth]
                book[side] = {Decimal(lv[0]): lv for lv in keep}

    def levels(self, pair: str, side: str) -> list[list]:
        book = self.books[pair][side]
        return [book[p] for p in sorted(book, reverse=side == "b")]

    def checksum(self, pair: str) -> int:
        asks, bids = ([(lv[0], lv[1]) for lv in self.levels(pair, s)] for s in ("a", "b"))
        return book_checksum(asks, bids)

    def snapshot_frame(self, pair: str) -> str:
        body = {"as": self.levels(pair, "a")[: self.depth], "bs": self.levels(pair, "b")[: self.depth]}
        return orjson.dumps([self.channel_ids.get(pair, 1), body, f"book-{self.depth}", pair]).decode()


class KrakenExchange(ReplayResponder):
    """Replay responder: tracks the true books and answers (un)subscribe requests."""

    def __init__(self, depth: int = 1000) -> None:
        self.depth = depth
        self.ref = ReferenceBooks(depth)
        self.resubscribed: list[str] = []

    def connection_started(self, start: int) -> None:
        if start == 0:
            self.ref = ReferenceBooks(self.depth)

    def advance(self, index: int, frame: str) -> None:
        self.ref.apply(frame)

    def received(self, message: str):
        msg = orjson.loads(message)
        out = []
        for pair in msg.get("pair", ()):
            status = "subscribed" if msg["event"] == "subscribe" else "unsubscribed"
            out.append(
                orjson.dumps(
                    {
                        "channelID": self.ref.channel_ids.get(pair, 1),
                        "channelName": f"book-{self.depth}",
                        "event": "subscriptionStatus",
                        "pair": pair,
                        "status": status,
                        "subscription": msg["subscription"],
                    }
                ).decode()
            )
            if status == "subscribed" and pair in self.ref.books:
                self.resubscribed.append(pair)
                out.append(self.ref.snapshot_frame(pair))
        return out


def _book_strings(feed: KrakenFeed, pair: str):
    """The book as the exchange's digits: (price, volume) mantissas, asks then bids, best first."""
    bids, asks = feed.pairs[pair].book.mantissas()
    return [list(x) for x in asks], [list(x) for x in bids]


def _reference_strings(ref: ReferenceBooks, pair: str):
    def digits(text: str) -> int:
        return int(text.replace(".", ""))

    return tuple([[digits(lv[0]), digits(lv[1])] for lv in ref.levels(pair, s)] for s in ("a", "b"))


# -- sans-IO: the whole book capture ------------------------------------------------------------


def test_every_checksum_of_the_book_capture_matches(book_frames):
    feed = _feed()
    tlvs = [t for frame in book_frames for t in feed.receive(frame)]
    totals = _totals(feed)
    assert totals["updates"] == 2166 and totals["checksum_ok"] == 2166
    assert totals["checksum_mismatch"] == totals["resyncs"] == totals["crossed"] == 0
    assert totals["snapshots"] == 5 and feed.statistics()["errors"] == {}
    records = _decode(tlvs)
    books = [r for r in records if isinstance(r, protocol.OrderBook)]
    deltas = [r for r in records if isinstance(r, protocol.OrderBookDelta)]
    assert len(books) == 5 and len(deltas) == 2166
    # the book agrees with an independent Decimal implementation, level for level
    ref = ReferenceBooks()
    for frame in book_frames:
        ref.apply(frame)
    for pair in BOOK_PAIRS:
        assert _book_strings(feed, pair) == _reference_strings(ref, pair)
        assert feed.pairs[pair].book.checksum() == ref.checksum(pair)


def test_published_snapshot_and_deltas_rebuild_the_book(book_frames):
    """A consumer applying our OrderBook then OrderBookDeltas holds exactly the adapter's book."""
    feed = _feed()
    books: dict[int, dict[int, dict[int, int]]] = {}
    seqs: dict[int, int] = {}
    for frame in book_frames:
        for rec in _decode(feed.receive(frame)):
            if isinstance(rec, protocol.OrderBook):
                books[rec.instrument_id] = {0: dict(rec.bids), 1: dict(rec.asks)}
                seqs[rec.instrument_id] = rec.exchange_sequence
            elif isinstance(rec, protocol.OrderBookDelta):
                assert rec.prev_sequence == seqs[rec.instrument_id]  # contiguous numbering
                seqs[rec.instrument_id] = rec.exchange_sequence
                assert rec.exchange_ts_ns > 1_618_000_000 * 10**9
                for price, qty, side in rec.changes:
                    if qty:
                        books[rec.instrument_id][side][price] = qty
                    else:
                        del books[rec.instrument_id][side][price]
    for pair in BOOK_PAIRS:
        state = feed.pairs[pair]
        bids, asks = state.book.levels()
        assert books[state.iid][0] == dict(zip(bids[::2], bids[1::2], strict=True))
        assert books[state.iid][1] == dict(zip(asks[::2], asks[1::2], strict=True))
        assert len(books[state.iid][1]) <= 1000


def test_snapshot_levels_are_exact_fixed_point(book_frames):
    feed = _feed()
    first = next(f for f in book_frames if '"as"' in f)
    (book,) = _decode(feed.receive(first))
    msg = orjson.loads(first)
    assert book.instrument_id == kraken_instrument("kraken", msg[-1]).id
    assert book.asks[0] == (fixed(msg[1]["as"][0][0]), fixed(msg[1]["as"][0][1]))
    assert book.asks[0] == (5621830000000, 15000000)  # 56218.30000 x 0.15000000
    assert book.bids[0][0] < book.asks[0][0]
    latest = max(lv[2] for lv in msg[1]["as"] + msg[1]["bs"])
    assert book.exchange_ts_ns == seconds_ns(latest) == int(Decimal(latest) * 10**9)


def test_instrument_ids_are_the_deterministic_ones():
    feed = KrakenFeed(BOOK_PAIRS)
    assert feed.pairs["XBT/CHF"].instrument.canonical == "spot|kraken|BTC|CHF"
    assert feed.pairs["KSM/XBT"].iid == protocol.instrument_id("spot|kraken|KSM|BTC")
    assert feed.pairs["WAVES/EUR"].iid == protocol.spot("kraken", "WAVES", "EUR").id
    assert kraken_instrument("kraken", "XDG/USD").canonical == "spot|kraken|DOGE|USD"
    assert protocol.decode(*next(protocol.iter_tlvs(feed.pairs["XBT/CHF"].mapping))).canonical == "spot|kraken|BTC|CHF"


def test_trade_capture(shared_data):
    path = shared_data / "kraken" / "KRAKEN.ws.48.0"
    frames = list(received_frames(path))
    expected = [t for f in frames if f.startswith("[") for t in orjson.loads(f)[1]]
    feed = KrakenFeed(LIST_PAIRS, channels=["trade"])
    trades = [r for f in frames for r in _decode(feed.receive(f))]
    assert len(trades) == len(expected) > 0 and all(isinstance(t, protocol.Trade) for t in trades)
    for trade, raw in zip(trades, expected, strict=True):
        assert trade.price == fixed(raw[0]) and trade.quantity == fixed(raw[1])
        assert trade.exchange_ts_ns == seconds_ns(raw[2])
        assert trade.side == (protocol.Side.BUY if raw[3] == "b" else protocol.Side.SELL)
    assert feed.statistics()["errors"] == {}


def test_ticker_capture(shared_data):
    path = shared_data / "kraken" / "KRAKEN.ws.49.0"
    frames = list(received_frames(path))
    tickers = [orjson.loads(f) for f in frames if f.startswith("[")]
    feed = KrakenFeed(LIST_PAIRS, channels=["ticker"])
    quotes = [r for f in frames for r in _decode(feed.receive(f))]
    assert len(quotes) == len(tickers) > 0
    for quote, raw in zip(quotes, tickers, strict=True):
        assert quote.instrument_id == kraken_instrument("kraken", raw[-1]).id
        assert (quote.bid_price, quote.bid_qty) == (fixed(raw[1]["b"][0]), fixed(raw[1]["b"][2]))
        assert (quote.ask_price, quote.ask_qty) == (fixed(raw[1]["a"][0]), fixed(raw[1]["a"][2]))
    assert feed.statistics()["errors"] == {}


def test_subscribe_messages_match_the_capture(shared_data):
    (sent,) = list(sent_messages(shared_data / "kraken" / "KRAKEN.ws.50.0"))
    assert orjson.loads(_feed().subscribe_messages()[0]) == orjson.loads(sent.text)


# -- sans-IO: checks and resyncs ------------------------------------------------------------------

SNAP = (
    '[1,{"as":[["10.0","1.0","1.0"],["11.0","2.0","1.0"]],"bs":[["9.0","1.0","1.0"],["8.0","3.0","1.0"]]},'
    '"book-10","XBT/CHF"]'
)


def _update(side: str, levels: list[list[str]], book_after: tuple[list, list] | None, c: int | None = None) -> str:
    body: dict = {side: levels}
    if c is None and book_after is not None:
        c = book_checksum(*book_after)
    if c is not None:
        body["c"] = str(c)
    return orjson.dumps([1, body, "book-10", "XBT/CHF"]).decode()


def test_checksum_algorithm_strips_dots_and_leading_zeros():
    asks = [("0.05005", "0.00000500")]
    bids = [("0.05000", "1.00000000")]
    assert book_checksum(asks, bids) == __import__("zlib").crc32(b"5005500" + b"5000100000000")


def test_mismatch_resubscribes_and_ignores_until_the_new_snapshot():
    feed = KrakenFeed(["XBT/CHF"], channels=["book"], depth=10)
    assert len(_decode(feed.receive(SNAP))) == 1
    good = _update(
        "a",
        [["10.5", "1.0", "2.0"]],
        ([("10.0", "1.0"), ("10.5", "1.0"), ("11.0", "2.0")], [("9.0", "1.0"), ("8.0", "3.0")]),
    )
    assert [type(r) for r in _decode(feed.receive(good))] == [protocol.OrderBookDelta]
    bad = _update("a", [["10.6", "1.0", "3.0"]], None, c=12345)
    assert feed.receive(bad) == []  # a book known bad is never published
    stats = feed.statistics()["pairs"]["XBT/CHF"]
    assert stats["checksum_mismatch"] == 1 and stats["resyncs"] == 1 and stats["checksum_ok"] == 1
    assert [orjson.loads(m)["event"] for m in feed.outgoing] == ["unsubscribe", "subscribe"]
    assert orjson.loads(feed.outgoing[1]) == {
        "event": "subscribe",
        "pair": ["XBT/CHF"],
        "subscription": {"name": "book", "depth": 10},
    }
    assert feed.receive(good) == [] and feed.statistics()["pairs"]["XBT/CHF"]["ignored_unsynced"] == 1
    feed.outgoing.clear()
    feed.receive(bad)  # still unsynced: no second resubscribe while one is on its way
    assert feed.outgoing == []
    (book,) = _decode(feed.receive(SNAP))
    assert isinstance(book, protocol.OrderBook) and feed.pairs["XBT/CHF"].synced
    assert feed.counters["book.checksum_mismatch"] == 1 and feed.counters["errors.checksum"] == 1


def test_crossed_book_is_counted_and_resynced():
    feed = KrakenFeed(["XBT/CHF"], channels=["book"], depth=10)
    feed.receive(SNAP)
    crossing = [("10.0", "1.0"), ("11.0", "2.0")], [("10.5", "1.0"), ("9.0", "1.0"), ("8.0", "3.0")]
    assert feed.receive(_update("b", [["10.5", "1.0", "2.0"]], crossing)) == []
    stats = feed.statistics()["pairs"]["XBT/CHF"]
    assert stats["crossed"] == 1 and stats["resyncs"] == 1 and stats["checksum_ok"] == 1
    assert not feed.pairs["XBT/CHF"].synced and len(feed.outgoing) == 2
    crossed_snapshot = SNAP.replace('["9.0","1.0","1.0"]', '["12.0","1.0","1.0"]')
    assert feed.receive(crossed_snapshot) == [] and feed.statistics()["pairs"]["XBT/CHF"]["crossed"] == 2


def test_book_is_truncated_to_the_depth_and_removals_published():
    asks = [[f"{100 + i}.0", "1.0", "1.0"] for i in range(12)]
    bids = [[f"{99 - i}.0", "1.0", "1.0"] for i in range(12)]
    feed = KrakenFeed(["XBT/CHF"], channels=["book"], depth=10)
    (book,) = _decode(feed.receive(orjson.dumps([1, {"as": asks, "bs": bids}, "book-10", "XBT/CHF"]).decode()))
    assert len(book.asks) == len(book.bids) == 10  # snapshot beyond the depth is cut too
    after_asks = [("99.5", "1.0")] + [(a[0], a[1]) for a in asks[:9]]
    after_bids = [(b[0], b[1]) for b in bids[:10]]
    (delta,) = _decode(feed.receive(_update("a", [["99.5", "1.0", "2.0"]], (after_asks, after_bids))))
    assert delta.changes == ((9950000000, 100000000, 1), (10900000000, 0, 1))  # inserted, and pushed out
    assert feed.statistics()["pairs"]["XBT/CHF"]["checksum_ok"] == 1


def test_both_sides_in_one_frame_and_stale_removals():
    feed = KrakenFeed(["XBT/CHF"], channels=["book"], depth=10)
    feed.receive(SNAP)
    after = ([("10.0", "1.0"), ("11.0", "5.0")], [("9.0", "1.0")])
    frame = orjson.dumps(
        [
            1,
            {"a": [["11.0", "5.0", "2.0"]]},
            {"b": [["8.0", "0.00000000", "2.5"], ["7.0", "0.0", "2.6"]], "c": str(book_checksum(*after))},
            "book-10",
            "XBT/CHF",
        ]
    ).decode()
    (delta,) = _decode(feed.receive(frame))
    assert delta.changes == ((1100000000, 500000000, 1), (800000000, 0, 0))
    assert delta.exchange_ts_ns == 2_600_000_000  # the latest level time in the frame
    assert feed.statistics()["pairs"]["XBT/CHF"]["stale_removals"] == 1


@pytest.mark.parametrize(
    ("frame", "counter"),
    [
        ("not json at all", "bad_json"),
        ('{"event":"error","errorMessage":"Malformed request"}', "exchange"),
        (
            '{"event":"subscriptionStatus","status":"error","pair":"XBT/CHF","errorMessage":"Unsupported pair"}',
            "subscription",
        ),
        ('{"event":"somethingNew"}', "unknown_event"),
        ('[1,{"a":[]},"book-10","ETH/USD"]', "unknown_pair"),
        ('[1,[],"ohlc-5","XBT/CHF"]', "unknown_channel"),
        ('[1,{"a":[["x","1.0","1.0"]],"c":"1"},"book-10","XBT/CHF"]', "malformed"),
        ('[1,[["1.0"]],"trade","XBT/CHF"]', "malformed"),
        ('[1,{"b":["1.0"]},"ticker","XBT/CHF"]', "malformed"),
        ("[]", "malformed"),
        ("42", "malformed"),
    ],
)
def test_malformed_and_unexpected_frames_are_counted(frame, counter):
    feed = KrakenFeed(["XBT/CHF"], channels=["book", "trade", "ticker"], depth=10)
    feed.receive(SNAP)
    assert feed.receive(frame) == []
    assert feed.counters[f"errors.{counter}"] == 1
    assert sum(v for k, v in feed.counters.items() if k.startswith("errors.")) == 1


def test_unreadable_update_resyncs_the_pair():
    feed = KrakenFeed(["XBT/CHF"], channels=["book"], depth=10)
    feed.receive(SNAP)
    assert feed.receive('[1,{"a":[["x","1.0","1.0"]],"c":"1"},"book-10","XBT/CHF"]') == []
    assert not feed.pairs["XBT/CHF"].synced and feed.statistics()["pairs"]["XBT/CHF"]["resyncs"] == 1


def test_reset_clears_books_and_snapshot_hook():
    feed = KrakenFeed(["XBT/CHF", "ETH/USD"], channels=["book"], depth=10)
    feed.receive(SNAP)
    out = _decode(feed.snapshot(0))
    assert [type(r).__name__ for r in out] == ["InstrumentMapping", "OrderBook", "InstrumentMapping"]
    only = _decode(feed.snapshot(feed.pairs["ETH/USD"].iid))
    assert [r.canonical for r in only] == ["spot|kraken|ETH|USD"]
    feed.reset()
    assert not feed.pairs["XBT/CHF"].synced and feed.pairs["XBT/CHF"].book is None
    assert [type(r).__name__ for r in _decode(feed.snapshot(0))] == ["InstrumentMapping", "InstrumentMapping"]
    assert feed.receive(_update("a", [["10.5", "1.0", "2.0"]], None, c=1)) == []


def test_book_quotes_follow_the_top_of_book():
    feed = KrakenFeed(["XBT/CHF"], channels=["book"], depth=10, book_quotes=True)
    _book, quote = _decode(feed.receive(SNAP))
    assert (quote.bid_price, quote.bid_qty, quote.ask_price, quote.ask_qty) == (9 * 10**8, 10**8, 10 * 10**8, 10**8)
    after = ([("10.0", "1.0"), ("11.0", "3.0")], [("9.0", "1.0"), ("8.0", "3.0")])
    deeper = _update("a", [["11.0", "3.0", "2.0"]], after)
    assert [type(r) for r in _decode(feed.receive(deeper))] == [protocol.OrderBookDelta]  # top unchanged: no quote


def test_book_keeps_the_exchange_digits_for_the_checksum():
    """Trailing zeros count (they are digits Kraken sends), leading ones do not; a 9th decimal
    that is a zero is exact at our 8-decimal scale."""
    feed = KrakenFeed(["XBT/CHF"], channels=["book"], depth=10)
    frame = (
        '[1,{"as":[["0.042990","364630.28272081","1"]],"bs":[["0.000027720","1.00000000","1"]]},"book-10","XBT/CHF"]'
    )
    (book,) = _decode(feed.receive(frame))
    assert book.bids == ((2772, 100000000),) and book.asks == ((4299000, 36463028272081),)
    view = feed.pairs["XBT/CHF"].book
    assert isinstance(view, KrakenBook)
    assert view.checksum() == book_checksum([("0.042990", "364630.28272081")], [("0.000027720", "1.00000000")])
    assert view.mantissas() == ([(27720, 100000000)], [(42990, 36463028272081)])


# -- the real node, the real sockets, the local replay server --------------------------------


def _node_params(url: str, **kw) -> dict:
    params = {
        "endpoint": url,
        "pairs": BOOK_PAIRS,
        "channels": ["book"],
        "depth": 1000,
        "reconnect_initial": 0.05,
        "reconnect_max": 0.2,
    }
    params.update(kw)
    return params


def _assert_books_match_reference(node, ref: ReferenceBooks, messages) -> None:
    consumer = consumer_books(messages)
    for pair in BOOK_PAIRS:
        state = node.feed.pairs[pair]
        assert state.synced, pair
        assert _book_strings(node.feed, pair) == _reference_strings(ref, pair), pair
        bids, asks = state.book.levels()
        assert consumer[state.iid][0] == dict(zip(bids[::2], bids[1::2], strict=True)), pair
        assert consumer[state.iid][1] == dict(zip(asks[::2], asks[1::2], strict=True)), pair


@contextlib.asynccontextmanager
async def _replay_into_node(path, *, faults=None, responder=None, until_updates=2166, **params):
    """Serve the capture, run the node on it until ``until_updates`` checksums matched; yield
    (server, node instance, published messages, stats) while both are still running."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_capture, path, wait_for_messages=1, faults=faults, responder=responder)
        )
        async with run_node("source.kraken", _node_params(server.url, **params)) as run:
            await server.finished.wait()
            await run.wait_for(
                lambda r: sum(s["checksum_ok"] for s in r.node.statistics()["pairs"].values()) >= until_updates
            )
            await trio.sleep(0.05)  # let the last published messages arrive
            yield server, run.node, list(run.messages), run.stats()
        nursery.cancel_scope.cancel()


async def test_node_replays_the_book_capture_with_every_checksum_matching(shared_data):
    path = shared_data / "kraken" / "KRAKEN.ws.50.0"
    responder = KrakenExchange()
    async with _replay_into_node(path, responder=responder) as (server, node, messages, stats):
        _assert_books_match_reference(node, responder.ref, messages)
    totals = _totals(node.feed)
    assert totals["checksum_ok"] == 2166 and totals["checksum_mismatch"] == 0 and totals["resyncs"] == 0
    assert server.received[0] == node.feed.subscribe_messages()
    types = [type(t) for m in messages for t in m.tlvs]
    assert types.count(protocol.InstrumentMapping) == 5 and types.count(protocol.OrderBook) == 5
    assert types.count(protocol.OrderBookDelta) == 2166
    assert stats["counters"]["errors"] == 0 and stats["counters"]["upstream.connects"] == 1
    assert stats["kind_stats"]["synced"] == sorted(BOOK_PAIRS)
    # header timestamps are receive times; sequences contiguous from the node's epoch
    counters = [m.header.sequence & ((1 << 40) - 1) for m in messages]
    assert counters == list(range(1, len(messages) + 1))


async def test_node_trades_and_tickers(shared_data):
    cases = (("KRAKEN.ws.48.0", "trade", protocol.Trade), ("KRAKEN.ws.49.0", "ticker", protocol.Quote))
    for name, channel, tlv in cases:
        path = shared_data / "kraken" / name
        frames = [orjson.loads(f) for f in received_frames(path) if f.startswith("[")]
        expected = sum(len(f[1]) for f in frames) if channel == "trade" else len(frames)
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(serve_capture, path, wait_for_messages=1))
            async with run_node("source.kraken", _node_params(server.url, pairs=LIST_PAIRS, channels=[channel])) as run:
                await run.wait_for(lambda r, tlv=tlv, expected=expected: len(r.records(tlv)) >= expected)
                await server.finished.wait()
                await trio.sleep(0.05)
                assert len(run.records(tlv)) == expected
                assert {m.canonical for m in run.records(protocol.InstrumentMapping)} == {
                    kraken_instrument("kraken", p).canonical for p in LIST_PAIRS
                }
                assert run.stats()["counters"]["errors"] == 0
            nursery.cancel_scope.cancel()


def _index_of_update(frames: list[str], after: int, *, touching_top: bool) -> int:
    """The first book update at or after ``after`` whose loss the next checksum detects."""
    for i in range(after, len(frames)):
        if not frames[i].startswith("[") or '"as"' in frames[i]:
            continue
        feed = _feed()
        for j, frame in enumerate(frames):
            if j != i:
                feed.receive(frame)
        if (_totals(feed)["checksum_mismatch"] > 0) == touching_top:
            return i
    raise AssertionError("no such frame")


async def test_node_faults_are_detected_and_resynced(shared_data, book_frames):
    """Drop (a top-10 update), corrupt a checksum, duplicate a frame, send garbage: each is
    detected (or harmless), the pair resyncs, and the final books are exactly Kraken's."""
    path = shared_data / "kraken" / "KRAKEN.ws.50.0"
    dropped = _index_of_update(book_frames, 600, touching_top=True)
    corrupt_at = next(i for i in range(1200, 2208) if '"c":"' in book_frames[i])
    duplicate_at = next(i for i in range(1500, 2208) if '"c":"' in book_frames[i])
    faults = ReplayFaults(
        drop={dropped},
        corrupt={corrupt_at: lambda f: f.replace('"c":"', '"c":"1')},
        duplicate={duplicate_at},
        garbage={300: "this is not json", 301: '{"event":"error","errorMessage":"EGeneral:Internal error"}'},
    )
    responder = KrakenExchange()
    async with _replay_into_node(path, faults=faults, responder=responder, until_updates=1900) as (
        server,
        node,
        messages,
        stats,
    ):
        _assert_books_match_reference(node, responder.ref, messages)
    await_pairs = {orjson.loads(book_frames[dropped])[-1], orjson.loads(book_frames[corrupt_at])[-1]}
    totals = _totals(node.feed)
    assert totals["checksum_mismatch"] == 2 and totals["resyncs"] == 2
    assert set(responder.resubscribed) == await_pairs
    assert node.feed.counters["errors.bad_json"] == 1 and node.feed.counters["errors.exchange"] == 1
    assert stats["counters"]["errors.checksum"] == 2
    sent = [orjson.loads(m) for m in server.received[0][1:]]
    assert [(m["event"], m["pair"]) for m in sent] == [
        (e, [p])
        for p in [orjson.loads(book_frames[i])[-1] for i in sorted((dropped, corrupt_at))]
        for e in ("unsubscribe", "subscribe")
    ]


async def test_node_duplicate_only_is_harmless(shared_data, book_frames):
    path = shared_data / "kraken" / "KRAKEN.ws.50.0"
    faults = ReplayFaults(duplicate={i for i in range(100, 2208, 97) if book_frames[i].startswith("[")})
    responder = KrakenExchange()
    async with _replay_into_node(path, faults=faults, responder=responder) as (_server, node, messages, _stats):
        assert _totals(node.feed)["checksum_mismatch"] == 0  # levels are set, not added: replays are idempotent
        _assert_books_match_reference(node, responder.ref, messages)


@pytest.mark.parametrize("mode", ["close", "abort"])
async def test_node_cut_mid_stream_reconnects_clears_and_resyncs(shared_data, book_frames, mode):
    path = shared_data / "kraken" / "KRAKEN.ws.50.0"
    faults = ReplayFaults(cut_after={1000}, resume="restart", cut_mode=mode)
    responder = KrakenExchange()
    async with _replay_into_node(path, faults=faults, responder=responder, until_updates=2166 + 900) as (
        server,
        node,
        messages,
        stats,
    ):
        _assert_books_match_reference(node, responder.ref, messages)
    assert server.connections == 2 and len(server.received[1]) >= 1  # resubscribed on the new connection
    assert stats["counters"]["upstream.connects"] == 2 and stats["counters"]["upstream.reconnects"] == 1
    totals = _totals(node.feed)
    assert totals["checksum_mismatch"] == 0 and totals["snapshots"] == 10
    # after the reconnect the books were rebuilt from the new snapshots, not merged with the old
    books_after = [m for m in messages if any(isinstance(t, protocol.OrderBook) for t in m.tlvs)]
    assert len(books_after) == 10


async def test_node_snapshot_request_through_control(shared_data):
    path = shared_data / "kraken" / "KRAKEN.ws.50.0"
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_capture, path, wait_for_messages=1))
        async with run_node("source.kraken", _node_params(server.url)) as run:
            await server.finished.wait()
            await run.wait_for(lambda r: len(r.records(protocol.OrderBookDelta)) >= 2166)
            before = len(run.records(protocol.OrderBook))
            run.host._trigger_snapshot({"instrument_id": 0})
            await run.wait_for(lambda r: len(r.records(protocol.SnapshotComplete)) == 1)
            assert len(run.records(protocol.OrderBook)) == before + 5
            last = run.records(protocol.OrderBook)[-1]
            pair = next(p for p in BOOK_PAIRS if run.node.feed.pairs[p].iid == last.instrument_id)
            bids, _asks = run.node.feed.pairs[pair].book.levels()
            assert list(last.bids) == list(zip(bids[::2], bids[1::2], strict=True))
        nursery.cancel_scope.cancel()


# -- the compiled scanner agrees with the generic path, and survives anything ------------------


def test_compiled_and_generic_paths_agree(book_frames):
    """Every update once as captured (compiled path) and once re-serialised with spaces
    (orjson path): same TLVs, same books."""
    fast, slow = _feed(), _feed()
    for frame in book_frames:
        spaced = orjson.dumps(orjson.loads(frame)).decode().replace(",", ", ")
        assert fast.receive(frame) == slow.receive(spaced)
    assert _totals(fast) == _totals(slow) and fast.statistics()["errors"] == slow.statistics()["errors"] == {}


def test_republish_flag_is_accepted():
    feed = KrakenFeed(["XBT/CHF"], channels=["book"], depth=10)
    feed.receive(SNAP)
    after = ([("10.0", "1.0"), ("11.0", "2.0")], [("9.5", "4.0"), ("9.0", "1.0"), ("8.0", "3.0")])
    checksum = book_checksum(*after)
    frame = f'[1,{{"b":[["9.5","4.0","2.0","r"]],"c":"{checksum}"}},"book-10","XBT/CHF"]'
    (delta,) = _decode(feed.receive(frame))
    assert delta.changes == ((950000000, 400000000, 0),)


def test_mutated_frames_never_crash(book_frames):
    """Truncated and byte-flipped frames go through the compiled scanner: each is applied,
    refused or counted, and the feed keeps working."""
    import random

    rng = random.Random(5)
    updates = [f for f in book_frames if f.startswith("[") and '"as"' not in f]
    updates += [f for f in book_frames if '"as"' in f] * 20  # snapshots take the compiled reader too
    feed = _feed()
    for frame in book_frames[:30]:
        feed.receive(frame)
    for _ in range(3000):
        frame = bytearray(rng.choice(updates).encode())
        if rng.random() < 0.5:
            del frame[rng.randrange(len(frame)) :]
        else:
            for _ in range(rng.randint(1, 3)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
        feed.receive(bytes(frame))
    assert sum(feed.counters[k] for k in feed.counters if k.startswith("errors.")) > 0
    fresh = _feed()
    for frame in book_frames:
        fresh.receive(frame)
    assert _totals(fresh)["checksum_ok"] == 2166


# -- kernels loaded before the node serves ----------------------------------------------------------


def _shape(frame: str) -> str:
    """A book frame's shape: numbers and pair names folded, a run of levels one token."""
    shape = re.sub(r'"[A-Z0-9]+/[A-Z0-9]+"', '"PAIR"', frame)
    shape = re.sub(r"\d+", "N", re.sub(r'"\d+(\.\d+)?"', '"N"', shape))
    return re.sub(r'\["N","N","N"\](,\["N","N","N"\])*', "LEVELS", shape)


def test_warm_up_frames_are_shaped_like_the_capture_and_sync_a_book(book_frames):
    """What ``load_kernels`` feeds has the wire shape of real snapshots and updates (so it takes
    the compiled readers real frames take), and it syncs a book with a matching checksum."""
    frames = _warm_up_frames("XBT/CHF", 1000)
    assert {_shape(f) for f in frames} <= {_shape(f) for f in book_frames}
    feed = KrakenFeed(["XBT/CHF"], channels=["book"], depth=1000)
    for frame in frames:
        feed.receive(frame)
    assert _totals(feed)["checksum_ok"] == _totals(feed)["snapshots"] == 1 and feed.statistics()["errors"] == {}


def test_load_kernels_leaves_the_captures_nothing_to_compile(shared_data) -> None:
    """The node host calls ``load_kernels`` before the node serves. Afterwards the book, trade and
    ticker captures need no kernel specialisation it did not load, and the node's own feed is
    untouched. In a fresh interpreter, where nothing else has run them."""
    assert_fresh_run_ok(f"""
        import numba
        from pathlib import Path
        from alphapulse.captures import received_frames
        import nodes.kraken as kind

        kernels = {{n: k for n, k in vars(kind).items() if isinstance(k, numba.core.registry.CPUDispatcher)}}
        params = kind.KrakenParams(pairs={tuple(LIST_PAIRS)!r}, channels=("trade", "ticker", "book"), depth=1000)
        node = kind.Kraken(params)
        node.load_kernels()
        loaded = {{n: set(k.signatures) for n, k in kernels.items()}}
        assert loaded["_update"] and loaded["_scan_snapshot"] and loaded["_load_side"], loaded
        assert not node.feed.counters and not node.feed.statistics()["synced"]
        scratch = kind.KrakenFeed(params.pairs, channels=params.channels, depth=params.depth)
        for name in ("KRAKEN.ws.50.0", "KRAKEN.ws.48.0", "KRAKEN.ws.49.0"):
            for frame in received_frames(Path({str(shared_data)!r}) / "kraken" / name):
                scratch.receive(frame, 1)
        stats = scratch.statistics()
        total = {{k: sum(s[k] for s in stats["pairs"].values()) for k in ("checksum_ok", "trades", "quotes")}}
        assert total["checksum_ok"] == 2166 and total["trades"] and total["quotes"] and not stats["errors"], stats
        new = {{n: set(k.signatures) - loaded[n] for n, k in kernels.items() if set(k.signatures) - loaded[n]}}
        assert not new, new
        print("ok")
    """)


async def test_node_live_reconfigure_updates_session_and_breaker(shared_data):
    path = shared_data / "kraken" / "KRAKEN.ws.48.0"
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_capture, path, wait_for_messages=1))
        params = _node_params(server.url, pairs=LIST_PAIRS, channels=["trade"])
        async with run_node("source.kraken", params) as run:
            await server.finished.wait()
            new = {**params, "staleness_timeout": 5.0, "breaker_failures": 2, "breaker_cooldown": 1.0}
            assert run.host._reconfigure({"params": new}) == {
                "changed": ["breaker_cooldown", "breaker_failures", "staleness_timeout"]
            }
            breaker = run.ctx.breakers["upstream"]
            assert (breaker.settings.failure_threshold, breaker.settings.cooldown) == (2, 1.0)
            assert run.node.params.staleness_timeout == 5.0
            with pytest.raises(ValueError, match="depth"):
                run.host._reconfigure({"params": {**new, "depth": 25}})
        nursery.cancel_scope.cancel()
