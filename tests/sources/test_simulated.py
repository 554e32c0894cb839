"""The simulated exchange: its market (sans-IO), its WebSocket server read by the real
``source.coinbase`` adapter, and ``alphapulse sim``."""

from __future__ import annotations

import random
import socket

import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from alphapulse.cli import main
from alphapulse.protocol import OrderBook, OrderBookDelta, Quote, Side, Trade, spot
from alphapulse.testing import run_node
from nodes._coinbase import ExchangeFeed
from nodes._coinbase._book import ASK, BID
from nodes._simulated import Market, clock_ids

SYMBOLS = ("BTC-USD", "ETH-USD")
MIDS = {"BTC-USD": "60000", "ETH-USD": "3000"}


def market(seed: int) -> Market:
    return Market(SYMBOLS, venue="sim_a", start_mid=MIDS, rng=random.Random(seed), depth=20)


def drive(m: Market, events: int):
    out, truth = [], []
    for i in range(events):
        m.advance(0.002)
        m.event(1_786_309_548_000_000_000 + i * 2_000_000)
        o, t = m.take()
        out.extend(o)
        truth.extend(t)
    return out, truth


def test_same_seed_same_market() -> None:
    assert drive(market(5), 500) == drive(market(5), 500)
    assert drive(market(5), 200)[0] != drive(market(6), 200)[0]


def test_the_feed_it_speaks_rebuilds_its_books_exactly() -> None:
    """The adapter's parser on the simulator's messages: books equal the simulator's, never
    crossed, every match becomes the simulator's own truth trade, trade ids contiguous."""
    m = market(11)
    feed = ExchangeFeed(venue="sim_a", products=SYMBOLS, depth=20)
    for product in SYMBOLS:
        feed.receive(orjson.dumps(m.snapshot_message(product)), 0)
    out, truth = drive(m, 3000)
    adapter_trades = []
    for _, _channel, message in out:
        feed.receive(orjson.dumps(message), 0)
        adapter_trades += [r for r in feed.take() if isinstance(r, Trade)]
        for book in feed.books.values():
            assert not book.crossed()
    assert not any(k.startswith(("errors.", "gaps.", "dropped.")) for k in feed.counters), feed.counters
    for product in SYMBOLS:
        snapshot = m.snapshot_message(product)
        fresh = ExchangeFeed(venue="sim_a", products=SYMBOLS)
        fresh.receive(orjson.dumps(snapshot), 0)
        for side in (BID, ASK):
            assert feed.books[product].as_dict(side) == fresh.books[product].as_dict(side)
        assert len(feed.books[product]) >= 20  # the book stays deep
    truth_trades = [t for t in truth if isinstance(t, Trade)]
    assert len(truth_trades) > 100 and adapter_trades == truth_trades
    assert {t.side for t in truth_trades} == {Side.BUY, Side.SELL}
    assert [q for q in truth if isinstance(q, Quote)]
    matches = [msg for _, c, msg in out if c == "matches"]
    assert all(t.side == (Side.BUY if msg["side"] == "sell" else Side.SELL)
               for t, msg in zip(truth_trades, matches, strict=True))


def test_a_restarted_exchange_numbers_on_and_the_adapter_keeps_its_trades() -> None:
    """A simulator restarted (by supervisord) starts its sequences and trade ids from the clock,
    above the first run's, as a real venue's never go back. The adapter, reconnected, takes the
    new run's trades; with ids started over it dropped every one as a repeat."""
    start_ns = 1_786_309_548_000_000_000

    def run(first_id: int) -> list:
        m = Market(SYMBOLS, venue="sim_a", start_mid=MIDS, rng=random.Random(3), depth=20, first_id=first_id)
        return [m.snapshot_message(p) for p in SYMBOLS] + [msg for _, _, msg in drive(m, 2000)[0]]

    def read(feed: ExchangeFeed, messages: list) -> int:
        for message in messages:
            feed.receive(orjson.dumps(message), 0)
        return sum(isinstance(r, Trade) for r in feed.take())

    def after_reconnect(second: list) -> tuple[ExchangeFeed, int]:
        """The adapter read the first run, reconnected, read ``second``: (it, trades taken of second)."""
        feed = ExchangeFeed(venue="sim_a", products=SYMBOLS, depth=20)
        assert read(feed, first) > 100
        feed.reset()  # the reconnect
        return feed, read(feed, second)

    first = run(clock_ids(start_ns))
    second = run(clock_ids(start_ns + 2000 * 2_000_000))  # the first run's 2000 events took 4 s
    assert min(m["sequence"] for m in second if "sequence" in m) > max(m.get("sequence", 0) for m in first)
    feed, taken = after_reconnect(second)
    assert taken > 100 and not feed.counters["dropped.duplicate_trade"]
    assert feed.counters["gaps.trade_id"] == len(SYMBOLS)  # the restart: one jump of ids per product
    started_over, taken = after_reconnect(run(0))  # ids started over, as before
    assert taken == 0 and started_over.counters["dropped.duplicate_trade"] > 100


def test_the_book_follows_its_fair_price_and_no_level_piles_up() -> None:
    """The demo's market (depth 50, 400 events/s) over 150 simulated seconds: the book's mid
    stays near the fair price and no level collects orders without bound. Before stale quotes
    were cancelled first: mid 230-340 ticks behind at the median, 1,700-2,800 orders at one level."""
    for seed in (1, 2):
        m = Market(SYMBOLS, venue="sim_a", start_mid=MIDS, rng=random.Random(seed))
        behind, most = [], 0
        for i in range(60_000):
            m.advance(1 / 400)
            m.event(1_786_309_548_000_000_000 + i * 2_500_000)
            if i % 500 == 0:
                m.take()
                for state in m.symbols.values():
                    behind.append(abs((state.best_bid() + state.best_ask()) / 2 - state.fair))
                    most = max(most, *(len(q) for side in ("buy", "sell") for q in state.levels(side).values()))
        behind.sort()
        assert behind[len(behind) // 2] < 120, (seed, behind[len(behind) // 2])
        assert most < 100, (seed, most)


def test_fair_price_reverts_and_moves() -> None:
    m = market(3)
    drive(m, 4000)
    for product, mid in MIDS.items():
        state = m.symbols[product]
        best_bid, best_ask = state.best_bid() * state.tick, state.best_ask() * state.tick
        assert best_bid < best_ask
        assert abs((best_bid + best_ask) / 2 / (int(mid) * 10**8) - 1) < 0.05


async def test_adapter_reads_the_simulated_exchange_through_real_sockets() -> None:
    sim_params = {"port": 0, "venue": "sim_a", "symbols": list(SYMBOLS), "start_mid": MIDS, "message_rate": 3000,
                  "seed": 7, "depth": 30}
    async with run_node("source.simulated", sim_params, name="sim") as sim:
        await sim.wait_for(lambda r: r.node.port is not None, timeout=60)
        params = {"feed": "exchange", "endpoint": f"ws://127.0.0.1:{sim.node.port}", "venue": "sim_a",
                  "products": list(SYMBOLS), "depth": 30}
        async with run_node("source.coinbase", params, name="venue") as venue:
            await venue.wait_for(lambda r: len(r.records(Trade)) >= 50 and len(r.records(OrderBookDelta)) >= 500,
                                 timeout=60)
            feed = venue.node.feed
            assert set(feed.books) == set(SYMBOLS)
            for book in feed.books.values():  # a market order never sweeps a side below depth // 4 levels
                assert not book.crossed() and min(book.counts.tolist()) >= 30 // 4
            stats = venue.stats()["counters"]
            assert stats["errors"] == 0 and stats["dropped"] == 0 and "gaps.trade_id" not in stats
            assert len(venue.records(OrderBook)) == 2 and venue.records(Quote)
            ids = {spot("sim_a", *p.split("-")).id for p in SYMBOLS}
            assert {t.instrument_id for t in venue.records(Trade)} <= ids
        # every trade the adapter published is one the exchange really made (its truth tape)
        def key(t) -> tuple:
            return t.instrument_id, t.price, t.quantity, t.side, t.exchange_ts_ns // 1000  # the feed shows µs

        seen = {key(t) for t in venue.records(Trade)}
        await sim.wait_for(lambda r: seen <= {key(t) for t in r.records(Trade)}, timeout=60)
        assert len(sim.records(OrderBook)) >= 2  # the opening books, then once a second
        assert sim.node.statistics()["connections"] == 1


async def test_server_answers_like_the_exchange() -> None:
    async with run_node("source.simulated", {"port": 0, "symbols": ["BTC-USD"], "seed": 1}, name="sim") as sim:
        await sim.wait_for(lambda r: r.node.port is not None, timeout=60)
        async with open_websocket_url(f"ws://127.0.0.1:{sim.node.port}") as ws:
            await ws.send_message("nonsense")
            assert orjson.loads(await ws.get_message())["type"] == "error"
            await ws.send_message('{"type":"subscribe","product_ids":["DOGE-USD"],"channels":["level2"]}')
            reply = orjson.loads(await ws.get_message())
            assert reply["type"] == "error" and "DOGE-USD" in reply["reason"]
            await ws.send_message('{"type":"subscribe","product_ids":["BTC-USD"],"channels":["level2_batch",'
                                  '{"name":"heartbeat","product_ids":["BTC-USD"]}]}')
            subs = orjson.loads(await ws.get_message())
            assert subs["type"] == "subscriptions"
            assert {c["name"] for c in subs["channels"]} == {"level2", "heartbeat"}
            snapshot = orjson.loads(await ws.get_message())
            assert snapshot["type"] == "snapshot" and snapshot["bids"] and snapshot["asks"]
            kinds = set()
            with trio.fail_after(5):
                while "heartbeat" not in kinds or "l2update" not in kinds:
                    kinds.add(orjson.loads(await ws.get_message())["type"])
            assert kinds <= {"l2update", "heartbeat"}


def test_cli_runs_and_rejects_bad_arguments(capsys) -> None:
    assert main(["sim", "--port", "0", "--symbols", "BTC-USD", "--rate", "500", "--duration", "0.3",
                 "--mid", "BTC-USD=60000", "--seed", "1"]) == 0
    assert "simulated exchange on ws://127.0.0.1:" in capsys.readouterr().out
    assert main(["sim", "--symbols", "BTCUSD", "--duration", "0.1"]) == 2
    assert main(["sim", "--rate", "0"]) == 2


def test_cli_reports_a_port_in_use_without_a_traceback(capsys) -> None:
    """The port is taken: one line naming the command and the OS error, exit code 3 (runtime)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["sim", "--port", str(port), "--duration", "0.1"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("alphapulse sim: [Errno 98]") and "Traceback" not in err, err


@pytest.mark.parametrize("seed", [1, 2])
def test_two_venues_differ_but_stay_close(seed: int) -> None:
    """The demo's two venues: different seeds and offsets, prices near each other."""
    a, b = market(seed), Market(SYMBOLS, venue="sim_b", rng=random.Random(seed + 1), depth=20,
                                start_mid={"BTC-USD": "60010", "ETH-USD": "3001"})
    drive(a, 1000)
    drive(b, 1000)
    for product in SYMBOLS:
        mid_a = sum(a._quote_of(a.symbols[product])[::2]) / 2
        mid_b = sum(b._quote_of(b.symbols[product])[::2]) / 2
        assert mid_a != mid_b and abs(mid_a / mid_b - 1) < 0.01
