"""``source.coinbase`` as a node: real captures replayed over a local WebSocket server into the
real NodeHost, output read back over its Unix socket; faults injected into the replay."""

from __future__ import annotations

import functools
import re

import pytest
import trio

from alphapulse.protocol import OrderBook, Quote, Trade, spot
from alphapulse.testing import ReplayFaults, run_node, serve_bursts, serve_capture
from nodes._coinbase._book import ASK, BID

from .test_coinbase_feed import ADVANCED_PRODUCTS, EXCHANGE_PRODUCTS, Consumer, model_advanced, model_exchange

FAST_RECONNECT = {"reconnect_initial": 0.02, "reconnect_max": 0.1}
ADVANCED_SUBSCRIBES = 4  # market_trades, ticker, level2, heartbeats


def advanced_params(url: str, **extra) -> dict:
    return {"feed": "advanced_trade", "endpoint": url, "products": list(ADVANCED_PRODUCTS), "depth": 50,
            **FAST_RECONNECT, **extra}


async def serve(nursery, path, **kwargs):
    return await nursery.start(functools.partial(serve_capture, path, **kwargs))


async def drained(run) -> None:
    """Wait until the subscriber holds every message the node published so far."""
    await run.wait_for(lambda r: len(r.messages) >= r.stats()["counters"]["sent"], timeout=60)


def assert_books_match(run, books, depth: int) -> None:
    """The node's full books equal the recomputation, and what it published rebuilds its top-N."""
    consumer = Consumer()
    for record in run.records():
        consumer.apply(record)
    feed = run.node.feed
    for product, model in books.items():
        book = feed.books[product]
        assert book.as_dict(BID) == model[BID] and book.as_dict(ASK) == model[ASK]
        assert not book.crossed()
        for side in (BID, ASK):
            assert consumer.top(feed.ids[product], side, depth) == book.side(side, depth).tolist()


async def test_advanced_trade_replay_through_the_node(shared_data, advanced_frames) -> None:
    path = shared_data / "coinbase_advanced" / "COINBASE.jsonl.zst"
    books, n_trades, n_tickers = model_advanced(advanced_frames)
    async with trio.open_nursery() as nursery:
        server = await serve(nursery, path, wait_for_messages=ADVANCED_SUBSCRIBES)
        async with run_node("source.coinbase", advanced_params(server.url)) as run:
            await run.wait_for(lambda r: len(r.records(Quote)) >= n_tickers and len(r.records(Trade)) >= n_trades,
                               timeout=60)
            await run.wait_for(lambda r: r.ctx.counters["upstream.frames"] == len(advanced_frames), timeout=60)
            assert len(run.records(Trade)) == n_trades and len(run.records(Quote)) == n_tickers
            assert run.node.feed.next_sequence == 1030
            await drained(run)
            assert_books_match(run, books, 50)
            counters = run.stats()["counters"]
            assert counters["errors"] == 0 and counters["dropped"] == 0 and "resyncs" not in counters
            ids = {m.instrument_id for m in run.records() if type(m).__name__ == "InstrumentMapping"}
            assert ids == {spot("coinbase", *p.split("-")).id for p in ADVANCED_PRODUCTS}
            assert server.received[0][0].startswith('{"type": "subscribe"')
        nursery.cancel_scope.cancel()


async def test_sequence_gap_resyncs_by_reconnecting_and_rebuilds_the_book(shared_data, advanced_frames) -> None:
    path = shared_data / "coinbase_advanced" / "COINBASE.jsonl.zst"
    books, _, _ = model_advanced(advanced_frames)
    async with trio.open_nursery() as nursery:
        server = await serve(nursery, path, wait_for_messages=ADVANCED_SUBSCRIBES, restart_each_connection=True,
                             faults=ReplayFaults(drop={300}))
        async with run_node("source.coinbase", advanced_params(server.url)) as run:
            await run.wait_for(lambda r: r.ctx.counters["upstream.connects"] == 2, timeout=60)
            await run.wait_for(lambda r: r.node.feed.next_sequence == 1030, what="second pass complete", timeout=60)
            c = run.ctx.counters
            assert c["gaps.sequence"] == 1 and c["resyncs"] == 1 and c["upstream.reconnects"] == 1
            assert len(run.records(OrderBook)) == 4  # two products, two connections
            await drained(run)
            assert_books_match(run, books, 50)
            assert run.stats()["counters"]["resyncs"] == 1
        nursery.cancel_scope.cancel()


async def test_cut_connection_clears_books_and_resyncs(shared_data, advanced_frames) -> None:
    path = shared_data / "coinbase_advanced" / "COINBASE.jsonl.zst"
    books, _, _ = model_advanced(advanced_frames)
    async with trio.open_nursery() as nursery:
        faults = ReplayFaults(cut_after={500}, resume="restart", cut_mode="abort")
        server = await serve(nursery, path, wait_for_messages=ADVANCED_SUBSCRIBES, faults=faults)
        async with run_node("source.coinbase", advanced_params(server.url)) as run:
            await run.wait_for(lambda r: r.ctx.counters["upstream.connects"] == 2, timeout=60)
            await run.wait_for(lambda r: r.node.feed.next_sequence == 1030, what="second pass complete", timeout=60)
            assert run.ctx.counters["upstream.failures"] == 1 and run.ctx.counters["resyncs"] == 0
            assert len(run.records(OrderBook)) == 4
            await drained(run)
            assert_books_match(run, books, 50)
            # replayed trade snapshot of the second connection was not published twice
            assert run.ctx.counters["trades.already_published"] > 0
        nursery.cancel_scope.cancel()


async def test_garbage_duplicates_and_a_corrupt_book_update(shared_data, advanced_frames) -> None:
    path = shared_data / "coinbase_advanced" / "COINBASE.jsonl.zst"
    books, _, _ = model_advanced(advanced_frames)
    corrupt_at = next(i for i in range(700, 1030) if '"l2_data"' in advanced_frames[i][:40])
    async with trio.open_nursery() as nursery:
        faults = ReplayFaults(duplicate={400}, garbage={200: "not json", 600: '{"channel": 5}'},
                              corrupt={corrupt_at: lambda f: f.replace('"price_level":"', '"price_level":"x', 1)})
        server = await serve(nursery, path, wait_for_messages=ADVANCED_SUBSCRIBES, faults=faults,
                             restart_each_connection=True)
        async with run_node("source.coinbase", advanced_params(server.url)) as run:
            await run.wait_for(lambda r: r.ctx.counters["upstream.connects"] == 2, timeout=60)
            await run.wait_for(lambda r: r.node.feed.next_sequence == 1030, timeout=60)
            c = run.ctx.counters
            assert c["errors.bad_json"] == 1 and c["dropped.duplicate_sequence"] == 1
            assert c["errors.bad_sequence"] == 1  # {"channel": 5} has no sequence_num
            assert c["errors.bad_number"] == 1 and c["resyncs"] == 1  # the corrupt book update
            assert run.stats()["counters"]["errors"] == 3
            await drained(run)
            assert_books_match(run, books, 50)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("bursts", [False, True], ids=["frame_by_frame", "bursts"])
async def test_exchange_feed_replay_through_the_node(shared_data, exchange_frames, bursts) -> None:
    """The Exchange capture through the node, served frame by frame (``serve_capture``) and in
    bursts of 40 frames to a TCP write (``serve_bursts``, as a live venue's frames come): a burst
    is read at once and published as one block, so every hop downstream wakes once for it, and
    what the node publishes is the same."""
    path = shared_data / "coinbase" / "COINBASE.ws.28.0"
    books, counts = model_exchange(exchange_frames)
    params = {"feed": "exchange", "products": list(EXCHANGE_PRODUCTS), "depth": 20, **FAST_RECONNECT}
    serving = functools.partial(serve_bursts, path, per_write=40) if bursts else functools.partial(serve_capture, path)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serving, wait_for_messages=1))
        async with run_node("source.coinbase", {**params, "endpoint": server.url}) as run:
            await run.wait_for(lambda r: r.ctx.counters["upstream.frames"] == len(exchange_frames), timeout=60)
            await run.wait_for(lambda r: len(r.records(Quote)) == counts["ticker"], timeout=60)
            assert len(run.records(Trade)) == counts["match"] + counts["last_match"]
            await drained(run)
            assert_books_match(run, books, 20)
            stats = run.stats()
            assert stats["counters"]["errors"] == 0
            sent = server.received[0][0]
            assert '"level2_batch"' in sent and '"matches"' in sent and '"heartbeat"' in sent
            if bursts:
                reads, blocks = stats["counters"]["upstream.reads"], stats["publisher"]["published_blocks"]
                assert reads <= server.writes + 1  # (the upgrade's answer may come in a read of its own)
                assert blocks <= reads + 1  # + the instrument mappings, published before the first read
                assert stats["publisher"]["published_messages"] > 10 * blocks
        nursery.cancel_scope.cancel()


async def test_a_resync_mid_burst_counts_the_frames_it_left_unread(shared_data, exchange_frames) -> None:
    """A book update that cannot be applied, fifth of a 40-frame burst: the node resyncs (closes
    the session and reconnects), and the frames that came in the same read after it are counted
    as ``dropped.session_closed`` (in the node's drops), not lost without a trace."""
    frames = list(exchange_frames)
    corrupt_at = next(i for i in range(200, len(frames)) if i % 40 == 5 and frames[i].startswith('{"type":"l2update"'))
    frames[corrupt_at] = re.sub(r'"changes":\[\["(buy|sell)","', r'"changes":[["\1","x', frames[corrupt_at], count=1)
    assert '","x' in frames[corrupt_at]  # its first change's price is not a number now
    params = {"feed": "exchange", "products": list(EXCHANGE_PRODUCTS), "depth": 20, **FAST_RECONNECT}
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_bursts, frames, per_write=40, wait_for_messages=1))
        async with run_node("source.coinbase", {**params, "endpoint": server.url}) as run:
            await run.wait_for(lambda r: r.ctx.counters["upstream.connects"] >= 2, timeout=60)
            counters = run.ctx.counters
            assert counters["resyncs"] >= 1 and counters["errors.bad_number"] >= 1
            assert counters["dropped.session_closed"] >= 1
            assert run.stats()["counters"]["dropped"] >= counters["dropped.session_closed"]
        nursery.cancel_scope.cancel()
