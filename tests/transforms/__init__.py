"""Helpers for transform tests: real frames, real blocks, a real NodeContext, a downstream model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from alphapulse import protocol as P
from alphapulse.runtime import BreakerSettings, InputLink, InputSpec, NodeContext


class Upstream:
    """One upstream producer: builds real frames with contiguous sequences."""

    def __init__(self, source: int = 5, domain: int = P.RelayDomain.MARKET_DATA) -> None:
        self.source = source
        self.builder = P.MessageBuilder(domain, source, (1 << 40) | 1)

    def frame(self, *records: Any, ts: int = 1_000) -> bytes:
        return self.builder.build(records[0] if len(records) == 1 else list(records), ts)

    def block(self, *messages: Any, ts: int = 1_000) -> P.FrameBlock:
        """One block of one message per argument (a record, raw TLV bytes or a list of either)."""
        return P.FrameBlock.from_bytes(b"".join(self.builder.build(m, ts) for m in messages))


def context(name: str = "node", source_id: int = 77, relay_domain: int = P.RelayDomain.MARKET_DATA,
            link: InputLink | None = None) -> NodeContext:
    ctx = NodeContext(name=name, kind="test", source_id=source_id, relay_domain=relay_domain,
                      log=logging.getLogger(f"test.{name}"), breaker_settings=BreakerSettings())
    if link is not None:
        ctx._inputs = [link]
    return ctx


def input_link(path: str = "/nonexistent/upstream.sock") -> InputLink:
    """An unconnected link: snapshot requests queue on it until it connects."""
    return InputLink(InputSpec(node="upstream", socket=path), subscriber_name="node")


def feed(node: Any, ctx: NodeContext, block: P.FrameBlock) -> list[list[Any]]:
    """Deliver a block as the host does (through the link's tracker if any); return what was built."""
    for link in ctx._inputs:
        link.tracker.feed(block, 0.0)
    node.handle_block(block, ctx)
    return take(ctx)


def take(ctx: NodeContext) -> list[list[Any]]:
    """The TLV records of every pending message, one list per message; clears the pending block."""
    out = [P.decode_message(frame).tlvs for frame in ctx._pending]
    ctx._pending.clear()
    ctx._pending_count = 0
    return out


def snapshot_requests(link: InputLink) -> list[Any]:
    """SnapshotRequests the link holds for its upstream (not yet connected)."""
    found = []
    for frame in link._pending_control:
        found.extend(r for r in P.decode_message(frame).tlvs if isinstance(r, P.SnapshotRequest))
    return found


class Downstream:
    """What a consumer of our output holds: books rebuilt only from the messages we emitted."""

    def __init__(self) -> None:
        self.books: dict[int, tuple[dict[int, int], dict[int, int]]] = {}
        self.sequence: dict[int, int] = {}

    def apply(self, messages: list[list[Any]]) -> None:
        for tlvs in messages:
            for record in tlvs:
                if isinstance(record, P.OrderBook):
                    self.books[record.instrument_id] = (dict(record.bids), dict(record.asks))
                    self.sequence[record.instrument_id] = record.exchange_sequence
                elif isinstance(record, P.OrderBookDelta):
                    book = self.books[record.instrument_id]
                    assert record.prev_sequence == self.sequence[record.instrument_id]
                    for price, qty, side in record.changes:
                        levels = book[side]
                        if qty:
                            levels[price] = qty
                        else:
                            del levels[price]  # removing a level we do not hold would be a bug
                    self.sequence[record.instrument_id] = record.exchange_sequence

    def levels(self, iid: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        bids, asks = self.books[iid]
        return sorted(bids.items(), reverse=True), sorted(asks.items())


def top(levels: dict[int, int], depth: int, bids: bool) -> list[tuple[int, int]]:
    """The best ``depth`` levels of a price -> qty dict, best first."""
    return sorted(levels.items(), reverse=bids)[:depth]


async def wait_for(condition: Callable[[], object], what: str = "") -> None:
    """Poll until ``condition()`` holds; ``what`` only names the wait for the reader. The 20 s
    limit is a hang guard, not a speed assertion."""
    with trio.fail_after(20):
        while not condition():
            await trio.sleep(0.01)
