"""Both Coinbase feeds, sans-IO, on the real captures: counts, books, sides, ids, faults."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal

import pytest

from alphapulse import protocol
from alphapulse.protocol import InstrumentMapping, OrderBook, OrderBookDelta, Quote, Side, Trade, spot
from nodes._coinbase import AdvancedTradeFeed, ExchangeFeed
from nodes._coinbase._book import ASK, BID
from tests._fresh import assert_fresh_run_ok

ADVANCED_PRODUCTS = ("BTC-USD", "ETH-USD")
EXCHANGE_PRODUCTS = ("SKL-USD", "BAND-GBP", "BAND-BTC", "DASH-BTC", "CRV-EUR")
BTC_USD_ID = 1020282983604786047  # golden: spot|coinbase|BTC|USD, pinned so ids never drift


def records(out) -> list:
    """TLVs as the feed emitted them (records or encoded bytes) → records."""
    result = []
    for item in out:
        if isinstance(item, bytes):
            result.extend(protocol.decode(t, v) for t, v in protocol.iter_tlvs(item))
        else:
            result.append(item)
    return result


def fx(text: str) -> int:
    return int(Decimal(text) * 10**8)


class Consumer:
    """What a downstream book keeper holds after applying snapshots and deltas in order."""

    def __init__(self) -> None:
        self.books: dict[int, dict[int, dict[int, int]]] = {}

    def apply(self, record) -> None:
        if isinstance(record, OrderBook):
            self.books[record.instrument_id] = {BID: dict(record.bids), ASK: dict(record.asks)}
        elif isinstance(record, OrderBookDelta):
            book = self.books[record.instrument_id]
            for price, qty, side in record.changes:
                if qty:
                    book[side][price] = qty
                else:
                    book[side].pop(price, None)

    def top(self, iid: int, side: int, depth: int) -> list[list[int]]:
        return [list(x) for x in sorted(self.books[iid][side].items(), reverse=side == BID)[:depth]]


def run_feed(feed, frames):
    out = []
    for frame in frames:
        feed.receive(frame, 1)
        out.extend(records(feed.take()))
    return out


def model_advanced(frames):
    """Recompute books and expected counts from the frames with Decimal and dicts."""
    books = defaultdict(lambda: {BID: {}, ASK: {}})
    trades = tickers = 0
    for frame in frames:
        msg = json.loads(frame)
        for event in msg.get("events", []):
            if msg["channel"] == "l2_data":
                book = books[event["product_id"]]
                if event["type"] == "snapshot":
                    book[BID].clear()
                    book[ASK].clear()
                for u in event["updates"]:
                    side = BID if u["side"] == "bid" else ASK
                    if Decimal(u["new_quantity"]) == 0:
                        book[side].pop(fx(u["price_level"]), None)
                    else:
                        book[side][fx(u["price_level"])] = fx(u["new_quantity"])
            elif msg["channel"] == "market_trades":
                trades += len(event["trades"])
            elif msg["channel"] == "ticker":
                tickers += len(event["tickers"])
    return books, trades, tickers


def test_advanced_trade_capture_end_to_end(advanced_frames) -> None:
    feed = AdvancedTradeFeed(products=ADVANCED_PRODUCTS, depth=50)
    out = run_feed(feed, advanced_frames)
    c = feed.counters
    assert feed.next_sequence == len(advanced_frames) == 1030  # contiguous 0..1029
    assert not any(k.startswith(("errors.", "gaps.", "dropped.")) for k in c), c
    assert c["resyncs"] == 0 and feed.resync_reason is None
    books, n_trades, n_tickers = model_advanced(advanced_frames)
    trades = [r for r in out if isinstance(r, Trade)]
    assert len(trades) == n_trades == c["trades"]
    assert len([r for r in out if isinstance(r, Quote)]) == n_tickers == c["tickers"]
    assert {p: len(b[BID]) + len(b[ASK]) for p, b in books.items()} == {p: len(b) for p, b in feed.books.items()}
    consumer = Consumer()
    for product, book in feed.books.items():  # the full book equals the recomputation
        assert book.as_dict(BID) == books[product][BID]
        assert book.as_dict(ASK) == books[product][ASK]
        assert not book.crossed()
    for record in out:
        consumer.apply(record)
    for product, book in feed.books.items():  # the published top-50 view is exact
        iid = spot("coinbase", *product.split("-")).id
        for side in (BID, ASK):
            assert consumer.top(iid, side, 50) == book.side(side, 50).tolist()


def test_advanced_trade_sides_ids_and_flags(advanced_frames) -> None:
    feed = AdvancedTradeFeed(products=ADVANCED_PRODUCTS)
    out = run_feed(feed, advanced_frames)
    assert spot("coinbase", "BTC", "USD").id == BTC_USD_ID
    mappings = [r for r in out if isinstance(r, InstrumentMapping)]
    assert {m.canonical for m in mappings} == {"spot|coinbase|BTC|USD", "spot|coinbase|ETH|USD"}
    for m in mappings:
        assert m.instrument_id == protocol.instrument_id(m.canonical)
    seen: set[int] = set()
    for r in out:  # a mapping always precedes an instrument's data
        if isinstance(r, InstrumentMapping):
            seen.add(r.instrument_id)
        else:
            assert r.instrument_id in seen
    trades = [r for r in out if isinstance(r, Trade)]
    first_live = next(t for t in trades if not t.flags)
    # frame 9: BTC-USD 65083.67 "SELL" while the best offer was 65083.67: a buyer lifted the offer
    assert (first_live.price, first_live.quantity, first_live.side) == (6508367000000, 1034361, Side.BUY)
    assert first_live.exchange_ts_ns == 1786309548167634000
    replayed = [t for t in trades if t.flags]
    assert replayed and all(t.exchange_ts_ns <= first_live.exchange_ts_ns for t in replayed)


def test_fast_and_generic_paths_emit_identical_bytes(advanced_frames) -> None:
    outputs = []
    for fast in (True, False):
        feed = AdvancedTradeFeed(products=ADVANCED_PRODUCTS, depth=200)
        feed.fast_path = fast
        emitted = []
        for frame in advanced_frames:
            feed.receive(frame, 1)
            emitted.extend(r if isinstance(r, bytes) else protocol.encode(r) for r in feed.take())
        outputs.append(emitted)
        assert feed.counters["l2.slow_path"] == 0
    assert outputs[0] == outputs[1]


def test_sequence_gap_asks_for_resync_and_reset_recovers(advanced_frames) -> None:
    feed = AdvancedTradeFeed(products=ADVANCED_PRODUCTS)
    run_feed(feed, advanced_frames[:100])
    run_feed(feed, advanced_frames[101:200])  # frame 100 lost
    assert feed.counters["gaps.sequence"] == 1 and feed.counters["gaps.sequence_missing"] == 1
    assert feed.resync_reason is not None and not feed.books
    assert feed.counters["dropped.resyncing"] == 98
    feed.reset()  # what the node does on the disconnect it causes; the new connection starts over
    out = run_feed(feed, advanced_frames)
    assert feed.resync_reason is None and feed.counters["resyncs"] == 1
    books, _, _ = model_advanced(advanced_frames)
    assert feed.books["BTC-USD"].as_dict(ASK) == books["BTC-USD"][ASK]
    # trades already published on the first connection are not published again
    assert feed.counters["trades.already_published"] > 0
    assert len({(t.exchange_ts_ns, t.price, t.quantity) for t in out if isinstance(t, Trade)}) > 0


def test_duplicates_garbage_and_unknown_frames_are_counted(advanced_frames) -> None:
    feed = AdvancedTradeFeed(products=ADVANCED_PRODUCTS)
    frames = list(advanced_frames[:60])
    frames.insert(40, frames[39])  # duplicate
    frames[50:50] = ["not json", "[1, 2", '{"channel":"mystery","sequence_num":49,"events":[]}', "[]",
                     '{"type":"error","message":"failure"}', '{"channel":"ticker","sequence_num":"x"}']
    run_feed(feed, frames)
    c = feed.counters
    assert c["errors.bad_json"] == 2 and c["errors.bad_shape"] == 1 and c["errors.venue"] == 1
    assert c["errors.bad_sequence"] == 1 and c["errors.unknown_channel"] == 1
    # the copy of frame 39, and the capture's own frame 49 (the unknown channel took number 49)
    assert c["dropped.duplicate_sequence"] == 2
    assert c["gaps.sequence"] == 0 and feed.resync_reason is None


def test_crossed_update_is_not_published_and_asks_for_resync(advanced_frames) -> None:
    feed = AdvancedTradeFeed(products=ADVANCED_PRODUCTS)
    snap = next(i for i, f in enumerate(advanced_frames) if '"l2_data"' in f[:40] and len(f) > 10**6)
    run_feed(feed, advanced_frames[: snap + 1])
    best_ask = feed.books["BTC-USD"].best()[2]
    bad = {"channel": "l2_data", "timestamp": "2026-08-09T21:05:48.5Z", "sequence_num": snap + 1, "events": [
        {"type": "update", "product_id": "BTC-USD", "updates": [
            {"side": "bid", "event_time": "2026-08-09T21:05:48.5Z",
             "price_level": protocol.format_fixed(best_ask + 100), "new_quantity": "1"}]}]}
    feed.receive(json.dumps(bad), 1)
    assert not [r for r in records(feed.take()) if isinstance(r, OrderBookDelta)]
    assert feed.counters["dropped.crossed_book"] == 1 and feed.resync_reason


def model_exchange(frames):
    books = defaultdict(lambda: {BID: {}, ASK: {}})
    counts = defaultdict(int)
    for frame in frames:
        msg = json.loads(frame)
        counts[msg["type"]] += 1
        if msg["type"] == "snapshot":
            books[msg["product_id"]] = {BID: {fx(p): fx(q) for p, q in msg["bids"] if Decimal(q)},
                                        ASK: {fx(p): fx(q) for p, q in msg["asks"] if Decimal(q)}}
        elif msg["type"] == "l2update":
            for side, price, size in msg["changes"]:
                s = BID if side == "buy" else ASK
                if Decimal(size) == 0:
                    books[msg["product_id"]][s].pop(fx(price), None)
                else:
                    books[msg["product_id"]][s][fx(price)] = fx(size)
    return books, counts


def test_exchange_capture_end_to_end(exchange_frames) -> None:
    feed = ExchangeFeed(products=EXCHANGE_PRODUCTS, depth=20)
    out = run_feed(feed, exchange_frames)
    c = feed.counters
    assert not any(k.startswith(("errors.", "gaps.", "dropped.")) for k in c), c
    books, counts = model_exchange(exchange_frames)
    trades = [r for r in out if isinstance(r, Trade)]
    assert len(trades) == counts["match"] + counts["last_match"] == 84
    assert sum(t.flags for t in trades) == counts["last_match"] == 5
    assert len([r for r in out if isinstance(r, Quote)]) == counts["ticker"] == 84
    consumer = Consumer()
    for r in out:
        consumer.apply(r)
    for product, book in feed.books.items():
        assert book.as_dict(BID) == books[product][BID] and book.as_dict(ASK) == books[product][ASK]
        iid = feed.ids[product]
        for side in (BID, ASK):
            assert consumer.top(iid, side, 20) == book.side(side, 20).tolist()
    # trade 881613: last_match says maker "sell", the ticker of the same trade says taker "buy"
    band = next(t for t in trades if t.instrument_id == feed.ids["BAND-GBP"])
    assert band.side == Side.BUY and band.price == 1477750000 and band.exchange_ts_ns == 1618677810244075000


def test_exchange_trade_gaps_and_duplicates(exchange_frames) -> None:
    feed = ExchangeFeed(products=EXCHANGE_PRODUCTS)
    matches = [i for i, f in enumerate(exchange_frames) if '"type":"match"' in f]
    frames = list(exchange_frames)
    dropped = frames.pop(matches[3])
    frames.insert(matches[10], frames[matches[10] - 1] if '"match"' in frames[matches[10] - 1] else dropped)
    run_feed(feed, frames)
    assert feed.counters["gaps.trade_id"] >= 1
    assert feed.counters["gaps.trades_missing"] >= 1


@pytest.mark.parametrize("feed_kind", ["advanced", "exchange"])
def test_an_unreadable_book_update_forces_a_resync(feed_kind, advanced_frames, exchange_frames) -> None:
    """A book update that cannot be applied leaves the book unknown: never publish it silently."""
    if feed_kind == "advanced":
        feed, frames, marker = AdvancedTradeFeed(products=ADVANCED_PRODUCTS), advanced_frames, '"l2_data"'
        corrupt = ('"price_level":"', '"price_level":"x')
    else:
        feed, frames, marker = ExchangeFeed(products=EXCHANGE_PRODUCTS), exchange_frames, '"l2update"'
        corrupt = ('"time":"', '"time":"x')
    updates = [i for i, f in enumerate(frames) if marker in f[:40] and len(f) < 10**5]
    i = updates[len(updates) // 2]
    run_feed(feed, frames[:i])
    assert feed.books and feed.resync_reason is None
    feed.receive(frames[i].replace(*corrupt, 1), 1)
    assert feed.resync_reason is not None and not feed.books
    assert sum(v for k, v in feed.counters.items() if k.startswith("errors.")) == 1


def test_load_kernels_leaves_the_captures_nothing_to_compile(shared_data) -> None:
    """The node host calls ``load_kernels`` before the node serves. Afterwards both real captures
    (every channel, both APIs) need no book or scan kernel specialisation it did not load. In a
    fresh interpreter, where nothing else has run them."""
    assert_fresh_run_ok(f"""
        import numba
        from pathlib import Path
        from alphapulse.captures import received_frames
        from nodes._coinbase import _book, _scan
        from nodes.coinbase import Coinbase, CoinbaseParams, make_feed

        kernels = {{f"{{m.__name__}}.{{n}}": k for m in (_book, _scan) for n, k in vars(m).items()
                   if isinstance(k, numba.core.registry.CPUDispatcher)}}
        runs = {{"advanced_trade": ("coinbase_advanced/COINBASE.jsonl.zst", {ADVANCED_PRODUCTS!r}),
                "exchange": ("coinbase/COINBASE.ws.28.0", {EXCHANGE_PRODUCTS!r})}}
        for feed, (capture, products) in runs.items():
            params = CoinbaseParams(feed=feed, products=products)
            Coinbase(params).load_kernels()
        loaded = {{n: set(k.signatures) for n, k in kernels.items()}}
        assert loaded["nodes._coinbase._book._scan_apply"] and loaded["nodes._coinbase._book._apply"], loaded
        for feed, (capture, products) in runs.items():
            scratch = make_feed(CoinbaseParams(feed=feed, products=products))
            for frame in received_frames(Path({str(shared_data)!r}) / capture):
                scratch.receive(frame, 1)
                scratch.take()
            assert scratch.counters["book.updates"] > 100, dict(scratch.counters)
        new = {{n: set(k.signatures) - loaded[n] for n, k in kernels.items() if set(k.signatures) - loaded[n]}}
        assert not new, new
        print("ok")
    """)
