"""``sink.websocket`` over real sockets: TLV frames in through a publisher, JSON out to trio-websocket clients."""

from __future__ import annotations

import struct

import httpx
import pytest
import trio_websocket

from alphapulse import protocol
from tests.sinks._websocket_bridge import (
    BTC_A,
    BTC_B,
    ETH_A,
    ETH_B,
    FEED_SOURCE,
    P,
    book,
    connect,
    connect_lazy_reader,
    delta,
    ladder,
    px,
    run_bridge,
    signal,
    top,
    trade,
)

BID, ASK = protocol.BookSide.BID, protocol.BookSide.ASK


async def _seed(rig, *instruments: protocol.Instrument, levels: int = 25) -> dict[int, tuple[dict, dict]]:
    """Name and load a 25-level book per instrument; returns the test's own model of each book."""
    model = {}
    for k, inst in enumerate(instruments):
        bids, asks = ladder(str(60000 + 10 * k), "0.5", levels)
        await rig.feed.send(protocol.mapping_for(inst), book(inst, bids, asks))
        model[inst.id] = (dict(bids), dict(asks))
    await rig.wait_until(lambda: all(i.id in rig.node.bridge.market.books for i in instruments))
    return model


def _apply(side: dict[str, str], changes: list[dict[str, str]]) -> None:
    for level in changes:
        if level["size"] == "0":
            side.pop(level["price"], None)
        else:
            side[level["price"]] = level["size"]


def _view(side: dict[str, str], best_high: bool, n: int = 20) -> list[dict[str, str]]:
    prices = sorted(side, key=lambda p: protocol.parse_fixed(p), reverse=best_high)[:n]
    return [{"price": p, "size": side[p]} for p in prices]


async def test_subscribe_gives_snapshot_then_deltas_of_the_top_20() -> None:
    async with run_bridge() as rig:
        model = await _seed(rig, BTC_A)
        async with connect(rig.ws_url) as client:
            await client.send(op="subscribe", channels=["book"], instruments=["sim_a:BTC-USD"], id=1)
            ack = await client.recv()
            assert ack == {"type": "subscribed", "channels": ["book"], "instruments": ["sim_a:BTC-USD"], "id": 1}
            snap = await client.recv()
            bids, asks = model[BTC_A.id]
            assert snap["type"] == "book_snapshot"
            assert (snap["instrument"], snap["venue"], snap["symbol"]) == ("sim_a:BTC-USD", "sim_a", "BTC-USD")
            assert snap["bids"] == top(bids, 20, True) and snap["asks"] == top(asks, 20, False)
            assert snap["bids"][0] == {"price": "59999.5", "size": "1"}
            assert snap["asks"][0] == {"price": "60000.5", "size": "1"}
            assert snap["depth"] == 20

            # remove the best ask (level 21 enters the view), resize a bid, add a better bid
            changes = [(px("60000.5"), 0, ASK), (px("59998"), px("7.25"), BID), (px("59999.75"), px("0.1"), BID)]
            await rig.feed.send(delta(BTC_A, changes))
            message = await client.recv()
            assert message["type"] == "book_delta" and message["seq"] == snap["seq"] + 1
            assert message["symbol"] == "BTC-USD" and message["venue"] == "sim_a"
            local_bids = {lv["price"]: lv["size"] for lv in snap["bids"]}
            local_asks = {lv["price"]: lv["size"] for lv in snap["asks"]}
            _apply(local_bids, message["bids"])
            _apply(local_asks, message["asks"])
            for price, qty, side in changes:
                levels = asks if side == ASK else bids
                if qty:
                    levels[price] = qty
                else:
                    del levels[price]
            assert _view(local_bids, True) == top(bids, 20, True)
            assert _view(local_asks, False) == top(asks, 20, False)
            assert {"price": "60010.5", "size": "21"} in message["asks"]  # the 21st level came into view

            # a change beyond the top 20 is not news for a client; the next message is the trade
            await client.send(op="subscribe", channels=["trades"], instruments=["sim_a:BTC-USD"])
            assert (await client.recv())["type"] == "subscribed"
            assert (await client.recv())["type"] == "trades_snapshot"
            await rig.feed.send(delta(BTC_A, [(px("59980"), px("3"), BID)], seq=3),
                                trade(BTC_A, "60001", "0.25", side=2))
            message = await client.recv()
            assert message == {"type": "trade", "instrument": "sim_a:BTC-USD", "venue": "sim_a", "symbol": "BTC-USD",
                               "price": "60001", "size": "0.25", "side": "sell", "ts": message["ts"]}


async def test_symbol_patterns_bbo_signals_and_instrument_list() -> None:
    async with run_bridge() as rig:
        await _seed(rig, BTC_A, BTC_B, ETH_A)
        async with connect(rig.ws_url) as client:
            await client.send(op="list")
            listed = await client.recv()
            assert listed["type"] == "instruments"
            assert [i["instrument"] for i in listed["instruments"]] == ["sim_a:BTC-USD", "sim_a:ETH-USD",
                                                                         "sim_b:BTC-USD"]
            assert listed["instruments"][0] == {"instrument": "sim_a:BTC-USD", "venue": "sim_a", "symbol": "BTC-USD",
                                                "kind": "spot", "base": "BTC", "quote": "USD"}

            # BASE-QUOTE without a venue means that symbol on every venue
            await client.send(op="subscribe", channels=["bbo", "signals"], instruments=["BTC-USD"])
            assert (await client.recv())["type"] == "subscribed"
            bbos = [await client.recv(), await client.recv()]
            assert sorted(b["venue"] for b in bbos if b["type"] == "bbo") == ["sim_a", "sim_b"]
            assert (await client.recv())["type"] == "signals_snapshot"
            by_venue = {b["venue"]: b for b in bbos}
            assert by_venue["sim_b"]["bid"] == {"price": "60009.5", "size": "1"}
            assert by_venue["sim_b"]["ask"] == {"price": "60010.5", "size": "1"}

            await rig.signals.send(signal(BTC_A, BTC_B, "60000.5", "60009.5", signal_id=77))
            message = await client.recv()
            assert message["type"] == "signal" and message["kind"] == "arbitrage"
            assert message["symbol"] == "BTC-USD" and message["signal_id"] == 77
            assert message["buy"] == {"instrument": "sim_a:BTC-USD", "venue": "sim_a", "symbol": "BTC-USD",
                                      "price": "60000.5"}
            assert message["sell"]["venue"] == "sim_b" and message["sell"]["price"] == "60009.5"
            assert (message["net_spread_bps"], message["net_profit"]) == ("3.2", "1.9")

            # the best bid moves on sim_a: one bbo message; an ETH change is not for this client
            await rig.feed.send(delta(ETH_A, [(px("60019.75"), P, BID)]),
                                delta(BTC_A, [(px("59999.75"), 2 * P, BID)]))
            message = await client.recv()
            assert message["type"] == "bbo" and message["instrument"] == "sim_a:BTC-USD"
            assert message["bid"] == {"price": "59999.75", "size": "2"}

            # an instrument named later is announced to everyone
            late = protocol.spot("sim_b", "SOL", "USD")
            await rig.feed.send(protocol.mapping_for(late))
            message = await client.recv()
            assert message["type"] == "instrument" and message["instrument"] == "sim_b:SOL-USD"


async def test_unsubscribe_stops_the_stream() -> None:
    async with run_bridge() as rig:
        await _seed(rig, BTC_A, ETH_A)
        async with connect(rig.ws_url) as client:
            await client.send(op="subscribe", channels=["book"], instruments=["sim_a:BTC-USD"])
            await client.recv_type("book_snapshot")
            await client.send(op="subscribe", channels=["trades"], instruments=["sim_a:ETH-USD"])
            await client.recv_type("trades_snapshot")
            await client.send(op="unsubscribe", channels=["book"], instruments=["sim_a:BTC-USD"], id="u")
            ack, skipped = await client.recv_type("unsubscribed")
            assert ack["id"] == "u" and ack["channels"] == ["book"]
            assert all(m["type"] != "book_snapshot" for m in skipped)

            await rig.feed.send(delta(BTC_A, [(px("59999.75"), P, BID)]), trade(ETH_A, "3000", "1"))
            message = await client.recv()  # the trade, and no book delta before it
            assert message["type"] == "trade" and message["symbol"] == "ETH-USD"

            # unsubscribing without instruments drops the whole channel
            await client.send(op="unsubscribe", channels=["trades"])
            assert (await client.recv())["type"] == "unsubscribed"
            await client.send(op="subscribe", channels=["bbo"], instruments=["sim_a:BTC-USD"])
            await client.recv_type("subscribed")
            await client.recv_type("bbo")
            await rig.feed.send(trade(ETH_A, "3000", "2"), delta(BTC_A, [(px("59999.8"), P, BID)]))
            message = await client.recv()
            assert message["type"] == "bbo" and message["bid"]["price"] == "59999.8"


@pytest.mark.parametrize("message, code", [
    ("this is not json", "bad_json"),
    (b"\x00\x01binary", "binary_not_supported"),
    ("[1, 2, 3]", "bad_request"),
    ('{"op": "launch"}', "unknown_op"),
    ('{"op": "subscribe", "channels": ["gossip"]}', "unknown_channel"),
    ('{"op": "subscribe", "channels": ["book"], "instruments": ["::??"]}', "bad_instrument"),
    ('{"op": "subscribe", "channels": ["book"], "instruments": [42]}', "bad_instrument"),
    ('{"op": "subscribe", "channels": "book", "instruments": {"a": 1}}', "bad_request"),
])
async def test_garbage_gets_an_error_frame_and_the_connection_lives_on(message, code) -> None:
    async with run_bridge() as rig:
        await _seed(rig, BTC_A)
        async with connect(rig.ws_url) as client:
            await client.conn.send_message(message)
            error = await client.recv()
            assert error["type"] == "error" and error["code"] == code, error
            assert error["error"]
            await client.send(op="ping", id=5)
            assert await client.recv() == {"type": "pong", "id": 5}
        assert rig.counters["errors.client_messages"] == 1
        async with connect(rig.ws_url) as other:  # the node is fine
            await other.send(op="subscribe", channels=["book"], instruments=["sim_a:BTC-USD"])
            await other.recv_type("book_snapshot")


async def test_slow_client_is_conflated_to_the_latest_book_while_a_fast_one_gets_every_delta() -> None:
    async with run_bridge({"client_queue": 32}) as rig:
        await _seed(rig, BTC_A)
        async with connect_lazy_reader(rig.node.ws_port) as slow, connect(rig.ws_url) as fast:
            await slow.send(op="subscribe", channels=["book"], instruments=["sim_a:BTC-USD"])
            await fast.send(op="subscribe", channels=["book"], instruments=["sim_a:BTC-USD"])
            snap, _ = await fast.recv_type("book_snapshot")
            bids = {lv["price"]: lv["size"] for lv in snap["bids"]}
            asks = {lv["price"]: lv["size"] for lv in snap["asks"]}
            seq = snap["seq"]
            slow_client = next(c for c in rig.node.bridge.clients.values() if c.number == 1)

            async def fast_reader(n: int) -> None:
                nonlocal seq
                for _ in range(n):
                    message, _ = await fast.recv_type("book_delta")
                    assert message["seq"] == seq + 1  # nothing skipped, nothing conflated
                    seq = message["seq"]
                    _apply(bids, message["bids"])
                    _apply(asks, message["asks"])

            # every delta resizes all 40 visible levels: ~2.5 kB of JSON per message
            rounds = 0
            while slow_client.superseded < 100:
                rounds += 1
                changes = [(px("60000") - k * px("0.5"), (rounds + k) * P, BID) for k in range(1, 21)]
                changes += [(px("60000") + k * px("0.5"), (rounds + k) * P, ASK) for k in range(1, 21)]
                await rig.feed.send(delta(BTC_A, changes, seq=rounds + 1))
                await fast_reader(1)
                assert rounds < 5000, "the slow client was never conflated"
            # one conflation left a single "latest book" marker queued; every later delta is superseded
            assert slow_client.conflations == 1 and len(slow_client.queue) <= 32
            assert slow_client.closed_reason is None  # books conflate; nothing forces a drop
            fast_client = next(c for c in rig.node.bridge.clients.values() if c.number == 2)
            assert fast_client.conflations == 0

            # the slow client catches up: whatever it skipped, it ends on the fast client's book
            view = rig.node.bridge.market.books[BTC_A.id]
            slow_bids: dict[str, str] = {}
            slow_asks: dict[str, str] = {}
            slow_seq = None
            while slow_seq != view.version:
                message = await slow.recv()
                if message["type"] == "book_snapshot":
                    slow_bids = {lv["price"]: lv["size"] for lv in message["bids"]}
                    slow_asks = {lv["price"]: lv["size"] for lv in message["asks"]}
                elif message["type"] == "book_delta":
                    assert message["seq"] == slow_seq + 1
                    _apply(slow_bids, message["bids"])
                    _apply(slow_asks, message["asks"])
                else:
                    continue
                slow_seq = message["seq"]
            assert (slow_bids, slow_asks) == (bids, asks)


async def test_slow_client_that_cannot_be_conflated_is_dropped() -> None:
    async with run_bridge({"client_queue": 64}) as rig:  # a block of 20 trades fits
        await _seed(rig, BTC_A)
        async with connect_lazy_reader(rig.node.ws_port) as slow, connect(rig.ws_url) as fast:
            await slow.send(op="subscribe", channels=["trades"], instruments=["*"])
            await fast.send(op="subscribe", channels=["trades"], instruments=["*"])
            await fast.recv_type("trades_snapshot")
            sent = 0
            while rig.counters["clients.dropped_slow"] == 0:
                await rig.feed.send(*(trade(BTC_A, f"{60000 + sent + k}.5", "0.001") for k in range(20)))
                sent += 20
                for _ in range(20):
                    message, _ = await fast.recv_type("trade")
                assert sent < 200_000, "the slow client was never dropped"
            # the fast client still gets everything after the drop
            await rig.feed.send(trade(BTC_A, "1.5", "2"))
            message, _ = await fast.recv_type("trade")
            assert message["price"] == "1.5"
            await rig.wait_until(lambda: len(rig.node.bridge.clients) == 1)
            with pytest.raises(trio_websocket.ConnectionClosed):
                while True:
                    await slow.recv()
        assert rig.counters["dropped.slow_client_messages"] > 0


async def test_bearer_token_is_enforced(monkeypatch, caplog) -> None:
    secret = "s3cr3t-t0ken-value"
    monkeypatch.setenv("WS_TEST_TOKEN", secret)
    async with run_bridge({"token": "${WS_TEST_TOKEN}"}, secret_env={"token": "WS_TEST_TOKEN"}) as rig:
        for headers, url in (([], rig.ws_url), ([(b"Authorization", b"Bearer wrong")], rig.ws_url),
                             ([], rig.ws_url + "?token=wrong")):
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                async with trio_websocket.open_websocket_url(url, extra_headers=headers):
                    pass
            assert rejected.value.status_code == 401
        async with connect(rig.ws_url, headers=[(b"Authorization", f"Bearer {secret}".encode())]) as client:
            await client.send(op="ping")
            assert (await client.recv())["type"] == "pong"
        async with connect(rig.ws_url + f"?token={secret}") as client:  # what the browser page does
            await client.send(op="ping")
            assert (await client.recv())["type"] == "pong"
        assert rig.counters["clients.rejected_auth"] == 3
        async with httpx.AsyncClient() as http:
            config = (await http.get(rig.http_url + "config.json")).json()
        assert config["token_required"] is True and secret not in str(config)
    assert secret not in caplog.text


async def test_health_channel_reports_every_plan_node_and_the_page_is_served() -> None:
    async with run_bridge({"health_interval": 0.2}, relay=True) as rig:
        await _seed(rig, BTC_A)
        async with connect(rig.ws_url) as client:
            await client.send(op="subscribe", channels=["health"])
            await client.recv_type("subscribed")
            health, _ = await client.recv_type("health")
            nodes = {n["node"]: n for n in health["nodes"]}
            assert health["topology"] == "wstest" and set(nodes) == {"bridge", "market"}
            assert nodes["market"]["kind"] == "relay" and nodes["market"]["status"] == "healthy"
            assert nodes["market"]["trouble"] == ""  # a node coping with trouble says what (``Node.trouble``)
            assert nodes["market"]["received"] >= 2 and nodes["market"]["sent"] >= 2
            assert nodes["bridge"]["kind"] == "sink.websocket" and set(nodes["bridge"]["rates"]) == {"in", "out"}
        async with httpx.AsyncClient() as http:
            page = await http.get(rig.http_url)
            config = (await http.get(rig.http_url + "config.json")).json()
            script = await http.get(rig.http_url + "static/app.js")
            missing = await http.get(rig.http_url + "static/nothing.js")
        assert page.status_code == 200 and "<title>AlphaPulse dashboard</title>" in page.text
        assert config == {"ws_port": rig.node.ws_port, "token_required": False, "book_levels": 20}
        assert script.status_code == 200 and "book_delta" in script.text
        assert missing.status_code == 404


async def test_what_the_bridge_missed_before_it_started_is_asked_for_upstream() -> None:
    async with run_bridge() as rig:
        rig.feed.builder.next_sequence = 40  # 39 messages went out before the bridge subscribed
        await rig.feed.send(protocol.mapping_for(ETH_A))
        await rig.wait_until(lambda: rig.requests)  # joined mid-stream: a snapshot of that producer
        assert rig.requests == [protocol.SnapshotRequest(source=FEED_SOURCE, instrument_id=0)]
        # a trade for an instrument never named, a delta for a book never loaded: ask for those
        await rig.feed.send(trade(ETH_B, "3000", "1"), protocol.mapping_for(BTC_A), delta(BTC_A, [(px("100"), P, BID)]))
        await rig.wait_until(lambda: len(rig.requests) == 3)
        assert rig.requests[1:] == [protocol.SnapshotRequest(source=FEED_SOURCE, instrument_id=ETH_B.id),
                                    protocol.SnapshotRequest(source=FEED_SOURCE, instrument_id=BTC_A.id)]
        assert rig.counters["dropped.unsynced_delta"] == 1 and rig.counters["unnamed"] == 1
        bids, asks = ladder("100", "1", 3)
        await rig.feed.send(book(BTC_A, bids, asks), delta(BTC_A, [(px("100"), P, BID)]))
        await rig.wait_until(lambda: BTC_A.id in rig.node.bridge.market.books)
        rig.node.bridge.market.catch_up(BTC_A.id)  # its view, as a client watching it would have it
        loaded = rig.node.bridge.market.books[BTC_A.id]
        assert loaded.version == 1 and loaded.bid_view[0] == (px("100"), P)
        assert rig.counters["dropped.unsynced_delta"] == 1


async def test_dex_swaps_go_on_the_pool_tape_with_exact_amounts() -> None:
    pool = protocol.pool("polygon", "0x45dda9cb7c25131df268515131f647d726f50608")
    swap = protocol.PoolSwap(
        pool.id, 51_000_000, bytes(range(32)), 7, protocol.PoolProtocol.UNISWAP_V3, 6, 18,
        bytes.fromhex("2791bca1f2de4661ed88a30c99a7a9449aa84174"),
        bytes.fromhex("7ceb23fd6bc0add59e62ac25578270cff1b9f619"),
        1_234_567_890, 456_000_000_000_000_001, 0, 0, 0,
    )
    async with run_bridge() as rig:
        await rig.feed.send(protocol.mapping_for(pool))
        await rig.wait_until(lambda: pool.id in rig.node.bridge.market.names)
        async with connect(rig.ws_url) as client:
            await client.send(op="subscribe", channels=["trades"], instruments=[pool.short])
            await client.recv_type("trades_snapshot")
            await rig.feed.send(swap)
            message = await client.recv()
        assert message["type"] == "swap" and message["instrument"] == pool.short and message["venue"] == "polygon"
        assert (message["amount_in"], message["amount_out"]) == ("1234.56789", "0.456000000000000001")
        assert message["token_in"] == "0x2791bca1f2de4661ed88a30c99a7a9449aa84174"
        assert (message["block"], message["log_index"], message["tx"][:6]) == (51_000_000, 7, "0x0001")


async def test_bad_upstream_messages_are_counted_and_skipped() -> None:
    async with run_bridge() as rig:
        head = struct.pack("<QQQHH", BTC_A.id, 0, 0, 5, 0)  # claims 5 bids, carries none
        bad_book = protocol.encode_tlv(protocol.TLVType.ORDER_BOOK, head)
        bad_mapping = protocol.InstrumentMapping(12345, BTC_A.canonical)  # does not hash to its id
        await rig.feed.send(bad_book, bad_mapping)
        bar = protocol.Bar(BTC_A.id, 0, 60_000_000_000, 1, 1, 1, 1, 1, 1, 1)  # a type the bridge does not show
        await rig.feed.send(bar)  # alone: a one-frame block
        await rig.feed.send(bar, bar)  # with another unshown one
        await _seed(rig, BTC_A)
        assert rig.counters["errors.decode"] == 1 and rig.counters["errors.mapping"] == 1
        assert rig.counters["ignored"] == 3
        async with connect(rig.ws_url) as client:
            await client.send(op="subscribe", channels=["book"], instruments=["sim_a:BTC-USD"])
            snap, _ = await client.recv_type("book_snapshot")
            assert snap["bids"][0]["price"] == "59999.5"


async def test_a_restarted_upstream_does_not_continue_the_books_kept_from_before() -> None:
    """The upstream restarted and the bridge joined its new epoch mid-stream: its deltas wait for the
    snapshot (asked for on joining) instead of moving the book kept from before its restart."""
    async with run_bridge() as rig:
        bids, asks = ladder("100", "1", 3)
        await rig.feed.send(protocol.mapping_for(BTC_A), book(BTC_A, bids, asks))
        await rig.wait_until(lambda: BTC_A.id in rig.node.bridge.market.books)
        rig.node.bridge.market.catch_up(BTC_A.id)  # its view, as a client watching it would have it
        loaded = rig.node.bridge.market.books[BTC_A.id]
        view = list(loaded.bid_view)
        rig.feed.builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, FEED_SOURCE, (5 << 40) | 30)
        await rig.feed.send(delta(BTC_A, [(px("100"), P, BID)]))
        await rig.wait_until(lambda: rig.counters["dropped.unsynced_delta"] == 1)
        assert rig.counters["upstream_restarts"] == 1 and rig.counters["books.stale_on_upstream_restart"] == 1
        assert not loaded.synced and loaded.bid_view == view  # not applied; clients keep the last view
        await rig.wait_until(lambda: protocol.SnapshotRequest(source=FEED_SOURCE, instrument_id=BTC_A.id)
                             in rig.requests)
        await rig.feed.send(book(BTC_A, *ladder("200", "1", 3)))  # the snapshot of now
        await rig.wait_until(lambda: rig.node.bridge.market.books[BTC_A.id].synced)
        assert rig.node.bridge.market.best(BTC_A.id)[0][0] > px("190") > view[0][0]


def test_a_node_s_trouble_reaches_the_health_channel() -> None:
    """The dashboard's health panel shows why a running node is degraded (``Node.trouble``)."""
    from nodes._websocket._server import _health_entry

    trouble = "writes to /data/rec failing for 63 s (last: [Errno 28] No space left on device); holding 1,000 messages"
    entry = _health_entry("rec", {"kind": "sink.recorder"}, {"status": "degraded", "trouble": trouble}, "")
    assert (entry["status"], entry["trouble"]) == ("degraded", trouble)
    assert _health_entry("rec", {"kind": "sink.recorder"}, {"status": "healthy"}, "")["trouble"] == ""
