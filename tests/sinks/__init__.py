"""Shared helpers for sink tests: a real publisher feeding a sink node under the real NodeHost."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import trio

from alphapulse import protocol
from alphapulse.runtime import BreakerSettings, NodeContext, NodeHost, open_publisher

UPSTREAM_SOURCE = 1


class SinkRun:
    """A sink node running in-process, fed through a real Unix-socket publisher."""

    def __init__(self, host: NodeHost, publisher: Any) -> None:
        self.host = host
        self.publisher = publisher

    @property
    def node(self) -> Any:
        return self.host.instance

    @property
    def ctx(self) -> Any:
        return self.host.ctx

    async def send(self, frames: Iterable[bytes], *, per_block: int = 500) -> int:
        """Publish frames (already built) in blocks of ``per_block``; returns how many."""
        frames = list(frames)
        for start in range(0, len(frames), per_block):
            await self.publisher.publish(protocol.FrameBlock.from_bytes(b"".join(frames[start : start + per_block])))
        return len(frames)

    async def wait_received(self, n: int, timeout: float = 30.0) -> None:
        """Wait until the node has been handed ``n`` messages."""
        with trio.fail_after(timeout):
            while self.host.received < n:
                await trio.sleep(0.01)


def make_ctx(kind: str, name: str = "sink") -> NodeContext:
    """A real NodeContext for driving a kind's handle_block and hooks directly."""
    return NodeContext(name=name, kind=kind, source_id=9, relay_domain=1, log=logging.getLogger(f"test.{name}"),
                       breaker_settings=BreakerSettings())


def block_of(frames: Iterable[bytes]) -> protocol.FrameBlock:
    return protocol.FrameBlock.from_bytes(b"".join(frames))


@contextlib.asynccontextmanager
async def run_sink(kind: str, params: Mapping[str, Any], *, name: str = "sink") -> AsyncIterator[SinkRun]:
    """Run sink ``kind`` until the block exits, then stop it as SIGTERM would (``aclose`` runs)."""
    with tempfile.TemporaryDirectory(prefix="aps", dir="/tmp") as tmp:  # sun_path is short
        upstream = os.path.join(tmp, "up.sock")
        node = {
            "kind": kind,
            "params": dict(params),
            "source_id": 9,
            "sockets": {"data": os.path.join(tmp, "d.sock"), "control": os.path.join(tmp, "c.sock")},
            "inputs": [{"node": "up", "socket": upstream, "overflow": "block", "queue": 1 << 16}],
        }
        async with open_publisher(upstream, source_id=UPSTREAM_SOURCE) as publisher:
            host = NodeHost({"nodes": {name: node}}, name)
            async with trio.open_nursery() as nursery:
                await nursery.start(host.run)
                with trio.fail_after(10):
                    while not any(s.name == name for s in publisher.statistics().subscribers):
                        await trio.sleep(0.005)
                try:
                    yield SinkRun(host, publisher)
                finally:
                    host.stop()


def build(records: Iterable[Any], *, ts: Iterable[int] | int, source: int = 3, first_sequence: int = 1,
          domain: int = protocol.RelayDomain.MARKET_DATA) -> list[bytes]:
    """One message per record (a record, or a list of records for a multi-TLV message)."""
    builder = protocol.MessageBuilder(domain, source, first_sequence)
    records = list(records)
    stamps = [ts] * len(records) if isinstance(ts, int) else list(ts)
    return [builder.build(r, t) for r, t in zip(records, stamps, strict=True)]


# -- a market stream with every table's TLVs, and what it should produce -------------------------------
BTC = protocol.spot("coinbase", "BTC", "USD")
ETH = protocol.spot("kraken", "ETH", "USD")
POOL = protocol.pool("polygon", "0x45dda9cb7c25131df268515131f647d726f50608")
UNNAMED = protocol.spot("nowhere", "ABC", "USD")
"""Trades of this one arrive without an InstrumentMapping: venue and symbol stay null."""
HOUR_NS = 3600 * 10**9


def market_records(start_ns: int, *, trades: int = 3000, quotes: int = 400, deltas: int = 200,
                   books: int = 3, swaps: int = 40) -> list[tuple[Any, int]]:
    """(record or [records], header timestamp) in a mixed order, mappings first."""
    out: list[tuple[Any, int]] = [(protocol.mapping_for(i), start_ns) for i in (BTC, ETH, POOL)]
    ids = [BTC.id, ETH.id, UNNAMED.id]
    for k in range(trades):
        t = start_ns + k * 1_000_000
        price = 6_500_000_000_000 + k * 1_234_567 if k % 7 else 1 + k  # 65000.0 + ..., and tiny prices
        out.append((protocol.Trade(ids[k % 3], price, k + 1, 0 if k == 5 else t - 1000, 1 + k % 2), t))
        if k % 8 == 0 and k // 8 < quotes:
            q = k // 8
            out.append((protocol.Quote(ids[q % 2], 6_499_900_000_000 + q, 10**8 + q, 6_500_100_000_000 + q,
                                       2 * 10**8, t - 500), t))
        if k % 15 == 0 and k // 15 < deltas:
            d = k // 15
            changes = tuple((6_500_000_000_000 + 10**6 * j, (j * 3 + d) * 10**7, j % 2) for j in range(1 + d % 5))
            out.append((protocol.OrderBookDelta(BTC.id, t - 200, 1000 + d, 999 + d, 0, changes), t))
        if k % 1000 == 0 and k // 1000 < books:
            bids = tuple((6_500_000_000_000 - 10**8 * j, 10**8 + j) for j in range(10))
            asks = tuple((6_500_100_000_000 + 10**8 * j, 2 * 10**8 + j) for j in range(10))
            out.append((protocol.OrderBook(ETH.id, t - 100, 5000 + k, bids, asks), t))
        if k % 50 == 0 and k // 50 < swaps:
            s = k // 50
            out.append((protocol.PoolSwap(POOL.id, 60_000_000 + s, bytes([s]) * 32, s, 2, 18, 6, b"\x01" * 20,
                                          b"\x02" * 20, 10**30 + s, 2**255 + s, 2**150, 2**100 + s, -(s + 1)), t))
    out.append(([protocol.SignalIdentity(77, 3, int(protocol.TLVType.ARBITRAGE_SIGNAL), 90, 500),
                 protocol.ArbitrageSignal(BTC.id, ETH.id, 77, 6_500_000_000_000, 6_510_000_000_000, 10**8,
                                          15 * 10**8, 3 * 10**8, 97 * 10**8, start_ns, (POOL.id,))], start_ns))
    out.append((protocol.Heartbeat(1, 2, 3, 1000), start_ns))
    return out


def malformed_trade_frame(ts: int, sequence: int) -> bytes:
    """A frame with a good CRC whose Trade TLV is one byte short: counted, never stored."""
    builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 3, sequence)
    return builder.build(bytes([int(protocol.TLVType.TRADE), 37]) + bytes(37), ts)


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes into any file fail (``EFBIG``) as on a full disk (``ENOSPC``),
    part way through a write that crosses it: the kernel's own short write, then the error."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
