"""``source.alpaca`` against a local server speaking the documented v2 stream protocol.

There is no Alpaca capture: the frames are the documented examples
(``../shared/data/alpaca/stock-pricing-data_realtime.md``), batched as the server batches them.
"""

from __future__ import annotations

import functools
import json

import pytest
import trio
from trio_websocket import ConnectionClosed, serve_websocket

from alphapulse.protocol import Bar, InstrumentMapping, Quote, Trade, stock
from alphapulse.runtime import UpstreamRejected
from alphapulse.testing import run_node
from nodes.alpaca import AlpacaParams, AlpacaSession

KEY, SECRET = "CKTESTKEY", "test-secret-value"
DOC_TRADE = {
    "T": "t",
    "i": 96921,
    "S": "AAPL",
    "x": "D",
    "p": 126.55,
    "s": 1,
    "t": "2021-02-22T15:51:44.208Z",
    "c": ["@", "I"],
    "z": "C",
}
DOC_QUOTES = [  # the streaming example: three AMD quotes in one array
    {
        "T": "q",
        "S": "AMD",
        "bx": "U",
        "bp": 87.66,
        "bs": 1,
        "ax": "X",
        "ap": 87.67,
        "as": 1,
        "t": "2021-02-22T15:51:45.3355677Z",
        "c": ["R"],
        "z": "C",
    },
    {
        "T": "q",
        "S": "AMD",
        "bx": "U",
        "bp": 87.66,
        "bs": 1,
        "ax": "Q",
        "ap": 87.68,
        "as": 4,
        "t": "2021-02-22T15:51:45.335689322Z",
        "c": ["R"],
        "z": "C",
    },
    {
        "T": "q",
        "S": "AMD",
        "bx": "U",
        "bp": 87.66,
        "bs": 1,
        "ax": "X",
        "ap": 87.67,
        "as": 1,
        "t": "2021-02-22T15:51:45.335806018Z",
        "c": ["R"],
        "z": "C",
    },
]
DOC_BAR = {
    "T": "b",
    "S": "SPY",
    "o": 388.985,
    "h": 389.13,
    "l": 388.975,
    "c": 389.12,
    "v": 49378,
    "t": "2021-02-22T19:15:00Z",
}
SYMBOLS = ["AAPL", "AMD", "SPY"]


class FakeAlpaca:
    """The documented handshake: connected → auth → authenticated → subscribe → subscription → data."""

    def __init__(self, *, refuse: int | None = None, symbol_limit: int = 30, data: list | None = None) -> None:
        self.refuse = refuse
        self.symbol_limit = symbol_limit
        self.data = data if data is not None else [[DOC_TRADE], DOC_QUOTES, [DOC_BAR]]
        self.connections = 0
        self.received: list[dict] = []

    async def handler(self, request) -> None:
        ws = await request.accept()
        self.connections += 1
        try:
            await ws.send_message('[{"T":"success","msg":"connected"}]')
            auth = json.loads(await ws.get_message())
            self.received.append(auth)
            if auth.get("action") != "auth":
                await ws.send_message('[{"T":"error","code":401,"msg":"not authenticated"}]')
                return
            if (auth.get("key"), auth.get("secret")) != (KEY, SECRET) or self.refuse == 402:
                await ws.send_message('[{"T":"error","code":402,"msg":"auth failed"}]')
                await ws.aclose()
                return
            if self.refuse == 406:
                await ws.send_message('[{"T":"error","code":406,"msg":"connection limit exceeded"}]')
                await ws.aclose()
                return
            await ws.send_message('[{"T":"success","msg":"authenticated"}]')
            sub = json.loads(await ws.get_message())
            self.received.append(sub)
            wanted = {c: sub.get(c, []) for c in ("trades", "quotes", "bars")}
            if sum(len(v) for v in wanted.values()) > self.symbol_limit:
                await ws.send_message('[{"T":"error","code":405,"msg":"symbol limit exceeded"}]')
                wanted = {c: v[:1] for c, v in wanted.items()}
            await ws.send_message(json.dumps([{"T": "subscription", **wanted}]))
            for batch in self.data:
                await ws.send_message(batch if isinstance(batch, str) else json.dumps(batch))
            await trio.sleep_forever()
        except ConnectionClosed:
            pass


async def start(nursery, server: FakeAlpaca) -> str:
    listeners = await nursery.start(functools.partial(serve_websocket, server.handler, "127.0.0.1", 0, None))
    return f"ws://127.0.0.1:{listeners.port}/v2/iex"


@pytest.fixture
def secrets(monkeypatch):
    monkeypatch.setenv("TEST_ALPACA_KEY", KEY)
    monkeypatch.setenv("TEST_ALPACA_SECRET", SECRET)
    return {"secret_env": {"key_id": "TEST_ALPACA_KEY", "secret_key": "TEST_ALPACA_SECRET"}}


def params(url: str, **extra) -> dict:
    return {
        "endpoint": url,
        "symbols": SYMBOLS,
        "channels": ["trades", "quotes", "bars"],
        "reconnect_initial": 0.02,
        "reconnect_max": 0.1,
        **extra,
    }


async def test_documented_examples_become_exact_tlvs(secrets, caplog) -> None:
    server = FakeAlpaca()
    async with trio.open_nursery() as nursery:
        url = await start(nursery, server)
        async with run_node("source.alpaca", params(url), plan_extra=secrets) as run:
            await run.wait_for(lambda r: r.records(Bar), timeout=60)
            aapl, amd, spy = (stock("alpaca", s).id for s in SYMBOLS)
            assert run.records(Trade) == [
                Trade(
                    instrument_id=aapl,
                    price=12655000000,
                    quantity=100000000,
                    exchange_ts_ns=1614009104208000000,
                    side=0,
                )
            ]
            quotes = run.records(Quote)
            assert [q.exchange_ts_ns for q in quotes] == [1614009105335567700, 1614009105335689322, 1614009105335806018]
            assert (quotes[1].bid_price, quotes[1].bid_qty, quotes[1].ask_price, quotes[1].ask_qty) == (
                8766000000,
                100000000,
                8768000000,
                400000000,
            )
            (bar,) = run.records(Bar)
            assert (bar.instrument_id, bar.start_ns, bar.duration_ns) == (spy, 1614021300000000000, 60 * 10**9)
            assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (
                38898500000,
                38913000000,
                38897500000,
                38912000000,
                4937800000000,
            )
            mappings = run.records(InstrumentMapping)
            assert [m.canonical for m in mappings] == ["stock|alpaca|AAPL", "stock|alpaca|AMD", "stock|alpaca|SPY"]
            assert {m.instrument_id for m in mappings} == {aapl, amd, spy}
            assert run.node.session.state == "streaming"
            assert run.stats()["breakers"]["node.auth"] == "closed"
        nursery.cancel_scope.cancel()
    auth, sub = server.received
    assert auth == {"action": "auth", "key": KEY, "secret": SECRET}
    assert sub == {"action": "subscribe", "trades": SYMBOLS, "quotes": SYMBOLS, "bars": SYMBOLS}
    assert SECRET not in caplog.text and KEY not in caplog.text


async def test_auth_failure_opens_the_auth_breaker_and_does_not_hammer(secrets, caplog) -> None:
    server = FakeAlpaca(refuse=402)
    async with trio.open_nursery() as nursery:
        url = await start(nursery, server)
        async with run_node("source.alpaca", params(url, auth_retry=600), plan_extra=secrets) as run:
            await run.wait_for(lambda r: r.ctx.counters["errors.auth_failed"] == 1, timeout=60)
            await run.wait_for(lambda r: r.ctx.counters["upstream.rejected"] == 1, timeout=60)
            await trio.sleep(0.3)  # many backoff periods (0.02-0.1 s): no new attempt
            assert server.connections == 1
            health = run.stats()
            assert health["breakers"]["node.auth"] == "open" and health["status"] == "degraded"
            assert health["counters"]["errors"] == 1
        nursery.cancel_scope.cancel()
    assert SECRET not in caplog.text


async def test_connection_limit_waits_then_retries(secrets) -> None:
    server = FakeAlpaca(refuse=406)
    async with trio.open_nursery() as nursery:
        url = await start(nursery, server)
        async with run_node("source.alpaca", params(url, connection_limit_retry=0.2), plan_extra=secrets) as run:
            await run.wait_for(lambda r: r.ctx.counters["errors.connection_limit"] >= 1, timeout=60)
            server.refuse = None  # the other client went away
            await run.wait_for(lambda r: r.records(Trade), timeout=60)
            assert server.connections == 2
            assert run.stats()["breakers"]["node.auth"] == "closed"
            assert run.ctx.counters["errors.auth_failed"] == 0


        nursery.cancel_scope.cancel()
async def test_symbol_limit_is_reported_and_the_stream_continues(secrets) -> None:
    server = FakeAlpaca(symbol_limit=5)
    async with trio.open_nursery() as nursery:
        url = await start(nursery, server)
        async with run_node("source.alpaca", params(url), plan_extra=secrets) as run:
            await run.wait_for(lambda r: r.records(Bar), timeout=60)
            assert run.ctx.counters["errors.symbol_limit"] == 1
            assert run.ctx.counters["subscription.missing"] == 6  # 9 wanted, 3 accepted
            assert server.connections == 1


        nursery.cancel_scope.cancel()
async def test_garbage_and_unknown_messages_are_counted(secrets) -> None:
    data = [
        "not json",
        '{"x": 1}',
        '[{"T":"t","S":"AAPL","p":"x"}]',
        '[{"T":"zz"}]',
        '[{"T":"s","S":"AAPL","sc":"H"}]',
        [DOC_TRADE, {"T": "t", "S": "aapl$", "p": 1, "s": 1, "t": "x"}],
    ]
    server = FakeAlpaca(data=data)
    async with trio.open_nursery() as nursery:
        url = await start(nursery, server)
        async with run_node("source.alpaca", params(url), plan_extra=secrets) as run:
            await run.wait_for(lambda r: r.records(Trade), timeout=60)
            await run.wait_for(lambda r: r.ctx.counters["errors.bad_message"] == 2, timeout=60)
            c = run.ctx.counters
            assert c["errors.bad_json"] == 1 and c["errors.unknown_type"] == 2 and c["ignored.s"] == 1
            assert len(run.records(Trade)) == 1 and server.connections == 1


        nursery.cancel_scope.cancel()
@pytest.mark.parametrize(
    ("code", "retry"), [(402, 300.0), (408, 300.0), (409, 300.0), (406, 60.0), (404, 0.0), (407, 0.0), (500, 0.0)]
)
def test_session_ending_errors(code: int, retry: float) -> None:
    session = AlpacaSession(AlpacaParams(key_id=KEY, secret_key=SECRET))
    session.connection_made()
    with pytest.raises(UpstreamRejected) as info:
        session.receive(json.dumps([{"T": "error", "code": code, "msg": "x"}]), 0)
    assert info.value.retry_after == retry
    assert session.auth_failed == (code in (402, 408, 409))


@pytest.mark.parametrize("code", [400, 401, 403, 405])
def test_errors_that_keep_the_session(code: int) -> None:
    session = AlpacaSession(AlpacaParams(key_id=KEY, secret_key=SECRET))
    session.receive(json.dumps([{"T": "error", "code": code, "msg": "x"}]), 0)
    assert sum(session.counters.values()) == 1


def test_prices_are_exact_never_floats() -> None:
    session = AlpacaSession(AlpacaParams(key_id=KEY, secret_key=SECRET))
    session.receive('[{"T":"t","S":"AAPL","p":0.1000000099,"s":3,"t":"2021-02-22T15:51:44Z"}]', 0)
    assert session.counters["errors.bad_message"] == 1  # more than 8 decimals: refused, not rounded
    session.receive('[{"T":"t","S":"AAPL","p":1.00000001,"s":3,"t":"2021-02-22T15:51:44Z"}]', 0)
    assert session.out[-1].price == 100000001
