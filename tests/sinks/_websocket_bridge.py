"""Test rig for ``sink.websocket``: the real NodeHost fed real TLV frames through real sockets.

Two publishers stand in for the upstream nodes: ``feed`` (market data, source 11) and
``signals`` (source 12). With ``relay=True`` the market data goes through a real ``relay``
NodeHost first, as in the demo topology, so the health channel has two nodes to report.
Clients are real trio-websocket clients (:class:`Client`), speaking JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import orjson
import trio
import trio_websocket

from alphapulse import protocol
from alphapulse.runtime import NodeHost, open_publisher

FEED_SOURCE = 11
SIGNAL_SOURCE = 12
P = protocol.PRICE_SCALE

BTC_A = protocol.spot("sim_a", "BTC", "USD")
BTC_B = protocol.spot("sim_b", "BTC", "USD")
ETH_A = protocol.spot("sim_a", "ETH", "USD")
ETH_B = protocol.spot("sim_b", "ETH", "USD")


class Feed:
    """One upstream producer: builds messages with MessageBuilder, publishes them as one block."""

    def __init__(self, publisher: Any, source: int, domain: protocol.RelayDomain) -> None:
        self.publisher = publisher
        self.builder = protocol.MessageBuilder(domain, source)

    async def send(self, *records: Any) -> None:
        now = time.time_ns()
        data = b"".join(self.builder.build(r, now) for r in records)
        await self.publisher.publish(protocol.FrameBlock.from_bytes(data))


@dataclasses.dataclass
class Rig:
    bridge: NodeHost
    hosts: dict[str, NodeHost]
    feed: Feed
    signals: Feed
    requests: list[Any]
    """Control records (SnapshotRequest...) the bridge sent up to the feed."""

    @property
    def node(self) -> Any:
        return self.bridge.instance

    @property
    def counters(self) -> Mapping[str, int]:
        return self.bridge.ctx.counters

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.node.ws_port}/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.node.http_port}/"

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await trio.sleep(0.01)


def _node(tmp: str, name: str, kind: str, source_id: int, inputs: list[dict], params: dict, **extra: Any) -> dict:
    return {
        "kind": kind,
        "source_id": source_id,
        "relay_domain": 1,
        "params": params,
        "sockets": {"data": os.path.join(tmp, f"{name}.d"), "control": os.path.join(tmp, f"{name}.c")},
        "inputs": inputs,
        "restart": {"stopwaitsecs": 2},
        **extra,
    }


@contextlib.asynccontextmanager
async def run_bridge(params: Mapping[str, Any] | None = None, *, relay: bool = False,
                     secret_env: Mapping[str, str] | None = None) -> AsyncIterator[Rig]:
    """A running bridge on free ports (``port: 0``), its upstream publishers connected."""
    with tempfile.TemporaryDirectory(prefix="apws", dir="/tmp") as tmp:  # sun_path is short
        feed_path, signals_path = os.path.join(tmp, "feed.d"), os.path.join(tmp, "signals.d")
        nodes: dict[str, dict] = {}
        market_path = feed_path
        if relay:
            nodes["market"] = _node(tmp, "market", "relay", 21, [{"node": "feed", "socket": feed_path}],
                                    {"retransmit_buffer": 4096})
            market_path = nodes["market"]["sockets"]["data"]
        inputs = [{"node": "market" if relay else "feed", "socket": market_path, "queue": 8192},
                  {"node": "signals", "socket": signals_path, "queue": 1024}]
        nodes["bridge"] = _node(tmp, "bridge", "sink.websocket", 31, inputs,
                                {"port": 0, "http_port": 0, **(params or {})}, secret_env=dict(secret_env or {}))
        plan = {"format": 1, "topology": "wstest", "nodes": nodes}
        requests: list[Any] = []
        async with (
            open_publisher(feed_path, source_id=FEED_SOURCE, on_control=lambda r, _: requests.append(r)) as feed_pub,
            open_publisher(signals_path, source_id=SIGNAL_SOURCE) as signal_pub,
            trio.open_nursery() as nursery,
        ):
            hosts = {name: NodeHost(plan, name) for name in nodes}
            for host in hosts.values():
                await nursery.start(host.run)
            rig = Rig(hosts["bridge"], hosts, Feed(feed_pub, FEED_SOURCE, protocol.RelayDomain.MARKET_DATA),
                      Feed(signal_pub, SIGNAL_SOURCE, protocol.RelayDomain.SIGNAL), requests)

            def connected(publisher: Any, name: str) -> bool:
                return any(s.name == name and s.connected for s in publisher.statistics().subscribers)

            await rig.wait_until(lambda: rig.node.serving.is_set())
            await rig.wait_until(lambda: connected(feed_pub, "market" if relay else "bridge"))
            await rig.wait_until(lambda: connected(signal_pub, "bridge"))
            if relay:
                await rig.wait_until(lambda: connected(hosts["market"].ctx._publisher, "bridge"))
            try:
                yield rig
            finally:
                for host in hosts.values():
                    host.stop()
                nursery.cancel_scope.cancel()


# -- market data -----------------------------------------------------------------------------------
def px(text: str) -> int:
    return protocol.parse_fixed(text)


def ladder(mid: str, tick: str, n: int, size: str = "1") -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``n`` bids below and asks above ``mid``, ``tick`` apart, sizes growing away from the top."""
    m, t, s = px(mid), px(tick), px(size)
    bids = [(m - t * (k + 1), s * (k + 1)) for k in range(n)]
    asks = [(m + t * (k + 1), s * (k + 1)) for k in range(n)]
    return bids, asks


def book(inst: protocol.Instrument, bids: Iterable[tuple[int, int]], asks: Iterable[tuple[int, int]]) -> Any:
    return protocol.OrderBook(inst.id, time.time_ns(), 1, tuple(bids), tuple(asks))


def delta(inst: protocol.Instrument, changes: Iterable[tuple[int, int, int]], seq: int = 2) -> Any:
    return protocol.OrderBookDelta(inst.id, time.time_ns(), seq, seq - 1, 0, tuple(changes))


def trade(inst: protocol.Instrument, price: str, size: str, side: int = 1) -> Any:
    return protocol.Trade(inst.id, px(price), px(size), time.time_ns(), side, 0)


def signal(buy: protocol.Instrument, sell: protocol.Instrument, buy_price: str, sell_price: str,
           signal_id: int = 1) -> Any:
    return protocol.ArbitrageSignal(buy.id, sell.id, signal_id, px(buy_price), px(sell_price), px("0.5"),
                                    px("3.2"), px("0.6"), px("1.9"), time.time_ns(), ())


def top(levels: Mapping[int, int], n: int, best_high: bool) -> list[dict[str, str]]:
    prices = sorted(levels, reverse=best_high)[:n]
    return [{"price": protocol.format_fixed(p), "size": protocol.format_fixed(levels[p])} for p in prices]


# -- clients ---------------------------------------------------------------------------------------
class Client:
    """A JSON client over a real trio-websocket connection."""

    def __init__(self, conn: trio_websocket.WebSocketConnection) -> None:
        self.conn = conn

    async def send(self, **request: Any) -> None:
        await self.conn.send_message(orjson.dumps(request).decode())

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            return orjson.loads(await self.conn.get_message())

    async def recv_type(self, *types: str, timeout: float = 10.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The next message of one of ``types``, and the messages skipped before it."""
        skipped = []
        with trio.fail_after(timeout):
            while True:
                message = await self.recv()
                if message["type"] in types:
                    return message, skipped
                skipped.append(message)


@contextlib.asynccontextmanager
async def connect(url: str, *, headers: list[tuple[bytes, bytes]] | None = None) -> AsyncIterator[Client]:
    async with trio_websocket.open_websocket_url(url, extra_headers=headers) as conn:
        client = Client(conn)
        hello = await client.recv()
        assert hello["type"] == "hello", hello
        instruments = await client.recv()
        assert instruments["type"] == "instruments", instruments
        yield client


@contextlib.asynccontextmanager
async def connect_lazy_reader(port: int, *, receive_buffer: int = 4096) -> AsyncIterator[Client]:
    """A client whose socket has a tiny receive buffer and who reads only when told to.

    trio-websocket stops reading the socket while one message waits unread
    (``message_queue_size=1``), so the server's writes back up after a few kilobytes.
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    async with trio.open_nursery() as nursery:
        conn = await trio_websocket.wrap_client_stream(nursery, trio.SocketStream(sock), "127.0.0.1", "/",
                                                       message_queue_size=1)
        try:
            yield Client(conn)
        finally:
            with trio.move_on_after(1):
                await conn.aclose()
            nursery.cancel_scope.cancel()
