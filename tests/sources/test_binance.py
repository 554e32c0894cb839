"""source.binance against the real Binance spot capture and its REST depth snapshots: the sans-IO
feed directly, then the real node fed by the local WebSocket replay server and HTTP server."""

from __future__ import annotations

import contextlib
import functools
import re
from decimal import Decimal

import orjson
import pytest
import trio

from alphapulse import protocol
from alphapulse.captures import http_responses, read_capture
from alphapulse.testing import (
    CannedResponse,
    ReplayFaults,
    ReplayResponder,
    routes_from_capture,
    run_node,
    serve_capture,
    serve_http,
)
from nodes.binance import BinanceFeed, _warm_up_snapshot, binance_instrument, fixed
from tests._fresh import assert_fresh_run_ok
from tests.sources._books import consumer_books

SYMBOLS = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]


@pytest.fixture(scope="module")
def capture(shared_data):
    ws = shared_data / "binance" / "BINANCE.ws.1.0"
    http = shared_data / "binance" / "BINANCE.http.0.0"
    snapshots = {r.url.split("symbol=")[1].split("&")[0]: r for r in http_responses(http)}
    frames = [r for r in read_capture(ws) if r.kind == "recv"]
    return ws, http, frames, snapshots


def _decode(tlvs) -> list:
    return [protocol.decode(t, v) for tlv in tlvs for t, v in protocol.iter_tlvs(tlv)]


def _frame_data(frame: str) -> dict:
    return orjson.loads(frame)["data"]


def _depth_frames(frames, symbol: str) -> list[int]:
    return [i for i, r in enumerate(frames) if f'"s":"{symbol}"' in r.text and "depthUpdate" in r.text]


# -- an independent reference: the exchange's book from the REST snapshot and every diff --------


class ReferenceBooks:
    """Books from the captured REST snapshots plus every later diff (Decimal, raw strings)."""

    def __init__(self, snapshots: dict) -> None:
        self.books: dict[str, dict] = {}
        for symbol, record in snapshots.items():
            snap = orjson.loads(record.text)
            self.books[symbol] = {
                "seq": snap["lastUpdateId"],
                "bids": {Decimal(p): q for p, q in snap["bids"]},
                "asks": {Decimal(p): q for p, q in snap["asks"]},
            }

    def apply(self, frame: str) -> None:
        try:
            data = _frame_data(frame)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if data.get("e") != "depthUpdate":
            return
        book = self.books[data["s"]]
        if data["u"] <= book["seq"]:
            return
        assert data["U"] <= book["seq"] + 1, "the capture itself has a gap"
        for key, side in (("b", "bids"), ("a", "asks")):
            for p, q in data[key]:
                if Decimal(q) == 0:
                    book[side].pop(Decimal(p), None)
                else:
                    book[side][Decimal(p)] = q
        book["seq"] = data["u"]

    def levels(self, symbol: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        book = self.books[symbol]
        bids = [(fixed(str(p)), fixed(book["bids"][p])) for p in sorted(book["bids"], reverse=True)]
        asks = [(fixed(str(p)), fixed(book["asks"][p])) for p in sorted(book["asks"])]
        return bids, asks

    def rest_body(self, symbol: str) -> str:
        book = self.books[symbol]
        return orjson.dumps(
            {
                "lastUpdateId": book["seq"],
                "bids": [[str(p), book["bids"][p]] for p in sorted(book["bids"], reverse=True)],
                "asks": [[str(p), book["asks"][p]] for p in sorted(book["asks"])],
            }
        ).decode()


class BinanceExchange(ReplayResponder):
    """Tracks the true books as the replay goes, and serves them as REST depth snapshots."""

    def __init__(self, snapshots: dict) -> None:
        self.snapshots = snapshots
        self.ref = ReferenceBooks(snapshots)
        self.served: list[tuple[str, int]] = []

    def connection_started(self, start: int) -> None:
        if start == 0:
            self.ref = ReferenceBooks(self.snapshots)

    def advance(self, index: int, frame: str) -> None:
        self.ref.apply(frame)

    def depth_route(self, target: str) -> CannedResponse:
        symbol = target.split("symbol=")[1].split("&")[0]
        self.served.append((symbol, self.ref.books[symbol]["seq"]))
        return CannedResponse(self.ref.rest_body(symbol))


def _feed_levels(feed: BinanceFeed, symbol: str):
    bids, asks = feed.symbols[symbol].book.levels()
    return list(zip(bids[::2], bids[1::2], strict=True)), list(zip(asks[::2], asks[1::2], strict=True))


def _replay_in_time_order(feed: BinanceFeed, frames, snapshots) -> list:
    events = [(r.ts, "ws", r.text) for r in frames]
    events += [(r.ts, "http", s) for s, r in snapshots.items()]
    out = []
    for _ts, kind, item in sorted(events, key=lambda e: e[0]):
        if kind == "ws":
            out += feed.receive(item)
        else:
            out += feed.apply_snapshot(item, snapshots[item].text)
    return _decode(out)


# -- sans-IO --------------------------------------------------------------------------------------


def test_every_symbol_syncs_with_no_gap(capture):
    _ws, _http, frames, snapshots = capture
    feed = BinanceFeed(SYMBOLS)
    records = _replay_in_time_order(feed, frames, snapshots)
    stats = feed.statistics()
    assert stats["synced"] == sorted(SYMBOLS) and stats["errors"] == {}
    depth = sum("depthUpdate" in r.text for r in frames)
    for symbol, s in stats["symbols"].items():
        assert s["gaps"] == s["resyncs"] == s["duplicates"] == s["crossed"] == s["stale_snapshots"] == 0, symbol
        assert s["snapshots"] == 1
    assert sum(s["updates"] + s["dropped_before_snapshot"] for s in stats["symbols"].values()) == depth
    # the published OrderBook is exactly the REST snapshot, at its lastUpdateId
    books = [r for r in records if isinstance(r, protocol.OrderBook)]
    assert len(books) == 4
    for book in books:
        symbol = next(s for s in SYMBOLS if feed.symbols[s].iid == book.instrument_id)
        snap = orjson.loads(snapshots[symbol].text)
        assert book.exchange_sequence == snap["lastUpdateId"]
        assert list(book.bids) == [(fixed(p), fixed(q)) for p, q in snap["bids"]]
        assert list(book.asks) == [(fixed(p), fixed(q)) for p, q in snap["asks"]]
    # deltas chain: prev_sequence of each = exchange_sequence of the one before, from lastUpdateId
    last = {b.instrument_id: b.exchange_sequence for b in books}
    for delta in (r for r in records if isinstance(r, protocol.OrderBookDelta)):
        assert delta.prev_sequence == last[delta.instrument_id] or (
            delta.prev_sequence < last[delta.instrument_id] < delta.exchange_sequence
        )  # first after the snapshot
        last[delta.instrument_id] = delta.exchange_sequence
        assert delta.exchange_ts_ns > 1_633_998_000 * 10**9
    # trade / ticker counts match the frames
    assert len([r for r in records if isinstance(r, protocol.Trade)]) == sum('"e":"aggTrade"' in r.text for r in frames)
    assert len([r for r in records if isinstance(r, protocol.Quote)]) == sum("@bookTicker" in r.text for r in frames)
    assert feed.counters["binance.klines_ignored"] == 2


def test_book_matches_the_rest_snapshot_where_the_update_ids_line_up(capture):
    """The adapter's books equal snapshot + diffs done independently, at the same update id (a
    REST snapshot with that lastUpdateId would be these levels)."""
    _ws, _http, frames, snapshots = capture
    feed = BinanceFeed(SYMBOLS)
    _replay_in_time_order(feed, frames, snapshots)
    ref = ReferenceBooks(snapshots)
    for r in frames:
        ref.apply(r.text)
    for symbol in SYMBOLS:
        assert feed.symbols[symbol].book.sequence == ref.books[symbol]["seq"]
        assert _feed_levels(feed, symbol) == ref.levels(symbol)


def test_snapshot_after_all_frames_gives_the_same_books(capture):
    """Snapshot arrival time does not matter: diffs are buffered and the rules pick them."""
    _ws, _http, frames, snapshots = capture
    early = BinanceFeed(SYMBOLS)
    _replay_in_time_order(early, frames, snapshots)
    late = BinanceFeed(SYMBOLS)
    for r in frames:
        late.receive(r.text)
    assert sorted(late.snapshot_requests) == sorted(SYMBOLS)
    for symbol in SYMBOLS:
        late.apply_snapshot(symbol, snapshots[symbol].text)
        assert _feed_levels(late, symbol) == _feed_levels(early, symbol)
    assert all(s["gaps"] == 0 for s in late.statistics()["symbols"].values())


def _depth(symbol: str, first: int, last: int, bids=(), asks=(), E: int = 1) -> str:
    data = {"e": "depthUpdate", "E": E, "s": symbol, "U": first, "u": last, "b": list(bids), "a": list(asks)}
    return orjson.dumps({"stream": f"{symbol.lower()}@depth@100ms", "data": data}).decode()


SNAP = '{"lastUpdateId":100,"bids":[["9.0","1.0"],["8.0","2.0"]],"asks":[["10.0","1.0"],["11.0","2.0"]]}'


def _synced(symbols=("AAAUSDT", "BBBUSDT")) -> BinanceFeed:
    feed = BinanceFeed(list(symbols))
    for symbol in symbols:
        feed.receive(_depth(symbol, 95, 99))
        feed.apply_snapshot(symbol, SNAP)
    feed.receive(_depth("AAAUSDT", 100, 101, bids=[["9.5", "1"]]))
    feed.receive(_depth("BBBUSDT", 101, 101, asks=[["10.5", "1"]]))
    feed.snapshot_requests.clear()
    return feed


def test_first_event_rule_and_stale_snapshot():
    feed = BinanceFeed(["AAAUSDT"])
    assert feed.receive(_depth("AAAUSDT", 103, 105, bids=[["9.5", "1"]])) == []
    assert feed.snapshot_requests == ["AAAUSDT"]
    feed.snapshot_requests.clear()
    assert feed.apply_snapshot("AAAUSDT", SNAP) == []  # 103 > 100 + 1: this snapshot is too old
    s = feed.statistics()["symbols"]["AAAUSDT"]
    assert s["stale_snapshots"] == 1 and feed.snapshot_requests == ["AAAUSDT"]
    newer = SNAP.replace('"lastUpdateId":100', '"lastUpdateId":104')
    book, delta = _decode(feed.apply_snapshot("AAAUSDT", newer))
    assert book.exchange_sequence == 104 and (delta.prev_sequence, delta.exchange_sequence) == (104, 105)
    assert feed.statistics()["synced"] == ["AAAUSDT"]


def test_gap_resyncs_that_symbol_only():
    feed = _synced()
    assert feed.receive(_depth("AAAUSDT", 103, 104, bids=[["9.6", "1"]])) == []  # 102 is missing
    assert feed.snapshot_requests == ["AAAUSDT"]
    s = feed.statistics()["symbols"]
    assert s["AAAUSDT"]["gaps"] == 1 and s["AAAUSDT"]["resyncs"] == 1 and s["BBBUSDT"]["resyncs"] == 0
    (delta,) = _decode(feed.receive(_depth("BBBUSDT", 102, 102, asks=[["10.6", "1"]])))  # the other keeps going
    assert delta.instrument_id == feed.symbols["BBBUSDT"].iid
    assert feed.receive(_depth("AAAUSDT", 105, 105, bids=[["9.7", "1"]])) == []  # buffered, not published
    resnap = '{"lastUpdateId":104,"bids":[["9.6","1.0"],["9.0","1.0"]],"asks":[["10.0","1.0"]]}'
    book, delta = _decode(feed.apply_snapshot("AAAUSDT", resnap))
    assert isinstance(book, protocol.OrderBook) and book.exchange_sequence == 104
    assert (delta.prev_sequence, delta.exchange_sequence, delta.changes) == (104, 105, ((970000000, 100000000, 0),))


def test_duplicate_is_dropped_not_a_gap():
    feed = _synced()
    frame = _depth("AAAUSDT", 102, 103, bids=[["9.6", "1"]])
    assert len(feed.receive(frame)) == 1
    assert feed.receive(frame) == []
    s = feed.statistics()["symbols"]["AAAUSDT"]
    assert s["duplicates"] == 1 and s["resyncs"] == 0 and feed.snapshot_requests == []


def test_crossed_book_is_counted_and_resynced():
    feed = _synced()
    assert feed.receive(_depth("AAAUSDT", 102, 102, bids=[["10.0", "1"]])) == []
    s = feed.statistics()["symbols"]["AAAUSDT"]
    assert s["crossed"] == 1 and s["resyncs"] == 1 and feed.symbols["AAAUSDT"].book is None
    assert feed.snapshot_requests == ["AAAUSDT"]


def test_gap_inside_the_buffer_requests_another_snapshot():
    feed = BinanceFeed(["AAAUSDT"])
    for first, last in ((99, 101), (102, 102), (105, 106)):
        feed.receive(_depth("AAAUSDT", first, last, bids=[["9.1", "1"]]))
    feed.snapshot_requests.clear()
    out = _decode(feed.apply_snapshot("AAAUSDT", SNAP))
    assert [type(r) for r in out] == [protocol.OrderBook, protocol.OrderBookDelta, protocol.OrderBookDelta]
    assert feed.symbols["AAAUSDT"].book is None and feed.snapshot_requests == ["AAAUSDT"]
    assert [d["U"] for d in feed.symbols["AAAUSDT"].buffer] == [105]


def test_reset_and_old_generation_snapshots():
    feed = _synced()
    feed.receive(_depth("AAAUSDT", 200, 201))
    generation = feed.generation
    feed.reset()
    assert feed.statistics()["synced"] == [] and feed.snapshot_requests == []
    assert feed.apply_snapshot("AAAUSDT", SNAP, generation) == []  # fetched for the old connection
    assert feed.counters["binance.snapshots_ignored"] == 1
    assert [type(r).__name__ for r in _decode(feed.snapshot(0))] == ["InstrumentMapping", "InstrumentMapping"]


def test_snapshot_hook():
    feed = _synced()
    out = _decode(feed.snapshot(feed.symbols["AAAUSDT"].iid))
    assert [type(r).__name__ for r in out] == ["InstrumentMapping", "OrderBook"]
    assert out[1].exchange_sequence == 101 and out[1].bids[0] == (950000000, 100000000)


@pytest.mark.parametrize(
    ("frame", "counter"),
    [
        ("{not json", "bad_json"),
        ('{"code": -1121, "msg": "Invalid symbol."}', "exchange"),
        ('{"stream":"x","data":{"e":"somethingNew","s":"AAAUSDT"}}', "unknown_event"),
        ('{"stream":"x","data":{"e":"depthUpdate","s":"ZZZUSDT","U":1,"u":2,"b":[],"a":[]}}', "unknown_symbol"),
        ('{"stream":"x","data":{"e":"depthUpdate","s":"AAAUSDT","U":1,"b":[],"a":[]}}', "malformed"),
        ('{"stream":"x","data":{"e":"depthUpdate","s":"AAAUSDT","U":9,"u":2,"b":[],"a":[]}}', "malformed"),
        ('{"stream":"x","data":{"e":"aggTrade","s":"AAAUSDT","p":"1.0","q":"x","T":1,"m":true}}', "malformed"),
        ('{"stream":"x","data":{"u":1,"s":"AAAUSDT","b":"1.0","a":"2.0"}}', "malformed"),
        ('{"stream":"x","data":[1,2]}', "malformed"),
        ("[1, 2]", "malformed"),
    ],
)
def test_malformed_and_unexpected_frames_are_counted(frame, counter):
    feed = _synced()
    assert feed.receive(frame) == []
    assert feed.counters[f"errors.{counter}"] == 1
    assert sum(v for k, v in feed.counters.items() if k.startswith("errors.")) == 1


def test_unreadable_snapshot_is_counted_and_requested_again():
    feed = BinanceFeed(["AAAUSDT"])
    feed.receive(_depth("AAAUSDT", 1, 2))
    feed.snapshot_requests.clear()
    assert feed.apply_snapshot("AAAUSDT", '{"lastUpdateId": "x"}') == []
    assert feed.counters["errors.bad_snapshot"] == 1 and feed.snapshot_requests == ["AAAUSDT"]


def test_trades_quotes_and_instrument_ids(capture):
    _ws, _http, frames, _snapshots = capture
    feed = BinanceFeed(SYMBOLS)
    trade_frame = next(r.text for r in frames if "aggTrade" in r.text)
    (trade,) = _decode(feed.receive(trade_frame))
    data = _frame_data(trade_frame)
    assert (trade.price, trade.quantity, trade.exchange_ts_ns) == (
        fixed(data["p"]),
        fixed(data["q"]),
        data["T"] * 10**6,
    )
    assert trade.side == (protocol.Side.SELL if data["m"] else protocol.Side.BUY)
    ticker_frame = next(r.text for r in frames if "bookTicker" in r.text)
    (quote,) = _decode(feed.receive(ticker_frame))
    data = _frame_data(ticker_frame)
    assert (quote.bid_price, quote.bid_qty, quote.ask_price, quote.ask_qty) == tuple(
        fixed(data[k]) for k in ("b", "B", "a", "A")
    )
    assert feed.symbols["NKNUSDT"].instrument.canonical == "spot|binance|NKN|USDT"
    assert feed.symbols["RUNEEUR"].iid == protocol.instrument_id("spot|binance|RUNE|EUR")
    assert BinanceFeed(["BTC/USDT"], venue="binance_us").symbols["BTCUSDT"].instrument.canonical == (
        "spot|binance_us|BTC|USDT"
    )


def test_symbol_split_agrees_with_exchange_info(shared_data):
    (info,) = list(http_responses(shared_data / "binance" / "BINANCE.0"))
    symbols = orjson.loads(info.text)["symbols"]
    assert len(symbols) > 1000
    for s in symbols:
        assert binance_instrument("binance", s["symbol"]).symbol == (s["baseAsset"], s["quoteAsset"]), s["symbol"]
    with pytest.raises(ValueError, match="BASE/QUOTE"):
        binance_instrument("binance", "USDT")


def test_stream_url_matches_the_capture(capture):
    ws, _http, _frames, _snapshots = capture
    connect = next(r for r in read_capture(ws) if r.kind == "connect")
    feed = BinanceFeed(["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"], channels=["depth", "bookTicker", "aggTrade"])
    ours = set(feed.stream_url("wss://stream.binance.com:9443/stream").split("streams=")[1].split("/"))
    captured = set(connect.url.split("streams=")[1].split("/"))
    assert ours == captured - {s for s in captured if "kline" in s}
    assert feed.snapshot_path("NKNUSDT") == "/api/v3/depth?symbol=NKNUSDT&limit=1000"


# -- kernels loaded before the node serves ----------------------------------------------------------


def _shape(body: str) -> str:
    """A depth snapshot body's shape: numbers folded, a run of levels one token."""
    shape = re.sub(r"\d+", "N", re.sub(r'"\d+(\.\d+)?"', '"N"', body))
    return re.sub(r'\["N","N"\](,\["N","N"\])*', "LEVELS", shape)


def test_warm_up_snapshot_is_shaped_like_the_captured_ones(capture):
    """What ``load_kernels`` reads has the shape of the real REST bodies (so it takes the compiled
    reader they take), and it syncs a book."""
    _ws, _http, _frames, snapshots = capture
    assert _shape(_warm_up_snapshot().decode()) in {_shape(r.text) for r in snapshots.values()}
    feed = BinanceFeed(["NKNUSDT"])
    assert _decode(feed.apply_snapshot("NKNUSDT", _warm_up_snapshot())) and feed.statistics()["errors"] == {}


def test_load_kernels_leaves_the_captures_nothing_to_compile(shared_data) -> None:
    """The node host calls ``load_kernels`` before the node serves. Afterwards the captured REST
    snapshots and streams need no kernel specialisation it did not load, and the node's own feed
    is untouched. In a fresh interpreter, where nothing else has run them."""
    assert_fresh_run_ok(f"""
        import numba
        from pathlib import Path
        from alphapulse.captures import read_capture
        import nodes.binance as kind

        kernels = {{n: k for n, k in vars(kind).items() if isinstance(k, numba.core.registry.CPUDispatcher)}}
        node = kind.Binance(kind.BinanceParams(symbols={tuple(SYMBOLS)!r}))
        node.load_kernels()
        loaded = {{n: set(k.signatures) for n, k in kernels.items()}}
        assert loaded["_scan_snapshot"], loaded
        assert not node.feed.counters and not node.feed.statistics()["synced"]
        scratch = kind.BinanceFeed(node.params.symbols)
        captures = Path({str(shared_data)!r}) / "binance"
        records = [*read_capture(captures / "BINANCE.ws.1.0"), *read_capture(captures / "BINANCE.http.0.0")]
        for record in sorted(records, key=lambda r: r.ts):
            if record.kind == "http":  # the body as the node's HTTP client hands it over: bytes
                scratch.apply_snapshot(record.url.split("symbol=")[1].split("&")[0], record.text.encode())
            elif record.kind == "recv":
                scratch.receive(record.text, 1)
        stats = scratch.statistics()
        assert stats["synced"] == sorted(node.params.symbols) and not stats["errors"], stats
        new = {{n: set(k.signatures) - loaded[n] for n, k in kernels.items() if set(k.signatures) - loaded[n]}}
        assert not new, new
        print("ok")
    """)


# -- the real node, the real sockets: WebSocket replay + HTTP snapshots ---------------------------


def _params(ws_url: str, http_url: str, **kw) -> dict:
    params = {
        "endpoint": ws_url.rstrip("/"),
        "rest_endpoint": http_url,
        "symbols": SYMBOLS,
        "reconnect_initial": 0.05,
        "reconnect_max": 0.2,
        "snapshot_retry_max": 0.2,
    }
    params.update(kw)
    return params


def _assert_books_match(node, ref: ReferenceBooks, messages) -> None:
    consumer = consumer_books(messages)
    for symbol in SYMBOLS:
        state = node.feed.symbols[symbol]
        assert state.book is not None, symbol
        assert state.book.sequence == ref.books[symbol]["seq"], symbol
        bids, asks = _feed_levels(node.feed, symbol)
        assert (bids, asks) == ref.levels(symbol), symbol
        assert consumer[state.iid] == (dict(bids), dict(asks)), symbol


def _synced_to(ref_of):
    def done(run) -> bool:
        feed = run.node.feed
        ref = ref_of()
        return all(
            feed.symbols[s].book is not None and feed.symbols[s].book.sequence == ref.books[s]["seq"] for s in SYMBOLS
        )

    return done


@contextlib.asynccontextmanager
async def _replay(capture, *, faults=None, exchange=None, routes=None, **params):
    ws, http, frames, snapshots = capture
    final = ReferenceBooks(snapshots)
    for r in frames:
        final.apply(r.text)
    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(functools.partial(serve_capture, ws, faults=faults, responder=exchange))
        http_server = await nursery.start(serve_http, routes or routes_from_capture(http))
        async with run_node("source.binance", _params(ws_server.url, http_server.url, **params)) as run:
            await ws_server.finished.wait()
            await run.wait_for(_synced_to(lambda: final), timeout=20)
            await trio.sleep(0.05)
            yield ws_server, http_server, run, final
        nursery.cancel_scope.cancel()


async def test_node_syncs_every_symbol_from_the_captured_snapshots(capture):
    _ws, _http, frames, snapshots = capture
    async with _replay(capture) as (_ws_server, http_server, run, final):
        stats = run.stats()
        kind = stats["kind_stats"]
        assert kind["synced"] == sorted(SYMBOLS) and kind["errors"] == {}
        for symbol, s in kind["symbols"].items():
            assert s["gaps"] == s["resyncs"] == s["stale_snapshots"] == 0 and s["snapshots"] == 1, symbol
        assert sorted(http_server.requests) == sorted(f"/api/v3/depth?symbol={s}&limit=1000" for s in SYMBOLS)
        assert stats["counters"]["errors"] == 0 and stats["counters"]["binance.snapshot_requests"] == 4
        messages = list(run.messages)
        _assert_books_match(run.node, final, messages)
        books = run.records(protocol.OrderBook)
        assert {b.exchange_sequence for b in books} == {
            orjson.loads(r.text)["lastUpdateId"] for r in snapshots.values()
        }
        assert len(run.records(protocol.Trade)) == sum('"e":"aggTrade"' in r.text for r in frames)
        assert len(run.records(protocol.Quote)) == sum("@bookTicker" in r.text for r in frames)
        assert {m.canonical for m in run.records(protocol.InstrumentMapping)} == {
            f"spot|binance|{b}|{q}" for b, q in (("NKN", "USDT"), ("BLZ", "ETH"), ("LRC", "BTC"), ("RUNE", "EUR"))
        }


async def test_node_drop_resyncs_only_that_symbol(capture):
    _ws, _http, frames, snapshots = capture
    nkn = _depth_frames(frames, "NKNUSDT")
    dropped = nkn[60]
    exchange = BinanceExchange(snapshots)
    routes = {"/api/v3/depth": exchange.depth_route}
    async with _replay(capture, faults=ReplayFaults(drop={dropped}), exchange=exchange, routes=routes) as (
        _ws_server,
        http_server,
        run,
        final,
    ):
        kind = run.stats()["kind_stats"]["symbols"]
        assert kind["NKNUSDT"]["gaps"] == 1 and kind["NKNUSDT"]["resyncs"] == 1 and kind["NKNUSDT"]["snapshots"] == 2
        assert all(kind[s]["resyncs"] == 0 and kind[s]["snapshots"] == 1 for s in SYMBOLS if s != "NKNUSDT")
        assert http_server.count("/api/v3/depth?symbol=NKNUSDT") == 2
        # the resync snapshot was served at a later update id than the dropped frame
        assert exchange.served[-1][0] == "NKNUSDT" and exchange.served[-1][1] >= _frame_data(frames[dropped].text)["u"]
        _assert_books_match(run.node, final, list(run.messages))
        # NKNUSDT published nothing between the gap and its new OrderBook
        iid = run.node.feed.symbols["NKNUSDT"].iid
        seqs = [
            (type(t).__name__, t.exchange_sequence)
            for m in run.messages
            for t in m.tlvs
            if getattr(t, "instrument_id", None) == iid and hasattr(t, "exchange_sequence")
        ]
        gap_at = _frame_data(frames[dropped].text)["U"]
        resync_book = [i for i, (name, _s) in enumerate(seqs) if name == "OrderBook"][1]
        assert all(s < gap_at for _n, s in seqs[:resync_book])


async def test_node_duplicate_and_garbage_are_counted(capture):
    _ws, _http, frames, snapshots = capture
    nkn = _depth_frames(frames, "NKNUSDT")
    faults = ReplayFaults(duplicate={nkn[30], nkn[31]}, garbage={nkn[40]: "}}garbage{{", nkn[41]: '{"data": 5}'})
    exchange = BinanceExchange(snapshots)
    routes = {"/api/v3/depth": exchange.depth_route}
    async with _replay(capture, faults=faults, exchange=exchange, routes=routes) as (_w, _h, run, final):
        stats = run.stats()
        assert stats["kind_stats"]["symbols"]["NKNUSDT"]["duplicates"] == 2
        assert all(s["resyncs"] == 0 for s in stats["kind_stats"]["symbols"].values())
        assert stats["counters"]["errors.bad_json"] == 1 and stats["counters"]["errors.malformed"] == 1
        _assert_books_match(run.node, final, list(run.messages))


@pytest.mark.parametrize("resume", ["continue", "restart"])
async def test_node_cut_mid_stream_clears_books_and_resyncs(capture, resume):
    _ws, _http, frames, snapshots = capture
    exchange = BinanceExchange(snapshots)
    routes = {"/api/v3/depth": exchange.depth_route}
    faults = ReplayFaults(cut_after={150}, resume=resume, cut_mode="abort")
    async with _replay(capture, faults=faults, exchange=exchange, routes=routes) as (
        ws_server,
        http_server,
        run,
        final,
    ):
        stats = run.stats()
        assert ws_server.connections == 2 and stats["counters"]["upstream.reconnects"] == 1
        # every symbol that had a depth frame after the cut was synced again from a new snapshot
        assert http_server.count("/api/v3/depth") >= 4 + len(
            {_frame_data(r.text)["s"] for r in frames[151:] if "depthUpdate" in r.text}
        )
        _assert_books_match(run.node, final, list(run.messages))


def test_compiled_snapshot_reader_agrees_with_orjson(capture):
    from nodes.binance import parse_depth_snapshot

    _ws, _http, _frames, snapshots = capture
    for record in snapshots.values():
        fast = parse_depth_snapshot(record.text)
        spaced = orjson.dumps(orjson.loads(record.text), option=orjson.OPT_INDENT_2).decode()
        slow = parse_depth_snapshot(spaced)
        assert fast[0] == slow[0] and (fast[1] == slow[1]).all() and (fast[2] == slow[2]).all()
        snap = orjson.loads(record.text)
        assert fast[1].tolist() == [[fixed(p), fixed(q)] for p, q in snap["bids"]]


def test_mutated_snapshots_never_crash(capture):
    import random

    _ws, _http, _frames, snapshots = capture
    body = snapshots["RUNEEUR"].text.encode()
    rng = random.Random(3)
    feed = BinanceFeed(["RUNEEUR"])
    bad = 0
    for _ in range(300):
        mutated = bytearray(body)
        if rng.random() < 0.5:
            del mutated[rng.randrange(len(mutated)) :]
        else:
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        feed.reset()
        feed.receive(_depth("RUNEEUR", 1, 2))
        out = feed.apply_snapshot("RUNEEUR", bytes(mutated))
        bad += not out
    assert bad > 0 and feed.counters["errors.bad_snapshot"] > 0
