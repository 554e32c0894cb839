"""transform.book_delta in a real NodeHost: real Unix sockets upstream and downstream."""

from __future__ import annotations

import trio

import nodes.book_delta  # noqa: F401  (registers the kind)
from alphapulse import protocol as P
from alphapulse.runtime import InputLink, InputSpec, NodeHost, open_publisher
from tests.transforms import Upstream, wait_for

BTC = P.spot("kraken", "BTC", "USD")
U = 100_000_000


async def test_book_delta_node_over_real_sockets(sockets) -> None:
    requests: list = []
    plan = {"nodes": {"books": {
        "kind": "transform.book_delta", "module": "nodes.book_delta", "source_id": 77, "relay_domain": 1,
        "sockets": {"data": sockets["data"], "control": sockets["control"]},
        "inputs": [{"node": "up", "socket": sockets["up"], "types": None, "instruments": None}],
        "params": {"depth": 2, "snapshot_interval": 0.2},
    }}}
    received: list[tuple[int, list]] = []

    async def deliver(block) -> None:
        for frame in block.frames():
            message = P.decode_message(frame)
            received.append((message.header.source, message.tlvs))

    def records(kind):
        return [r for _, tlvs in received for r in tlvs if isinstance(r, kind)]

    async with open_publisher(sockets["up"], source_id=5, on_control=lambda r, sub: requests.append(r)) as upstream:
        host = NodeHost(plan, "books")
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            await wait_for(lambda: any(s.connected for s in upstream.statistics().subscribers), "subscribed")
            down = InputLink(InputSpec(node="books", socket=sockets["data"]), subscriber_name="down")
            nursery.start_soon(down.run, deliver)
            await wait_for(lambda: host.ctx._publisher.statistics().subscribers, "downstream subscribed")

            up = Upstream(source=5)
            bids = ((101 * U, 1), (100 * U, 2), (99 * U, 3))
            upstream.publish_nowait(up.block(P.mapping_for(BTC), P.OrderBook(BTC.id, 1, 10, bids, ((102 * U, 4),)),
                                             P.OrderBookDelta(BTC.id, 2, 11, 10, 0, ((101 * U, 0, 0),))))
            await wait_for(lambda: records(P.OrderBookDelta), "the delta")
            assert records(P.InstrumentMapping)[0] == P.mapping_for(BTC)
            first = records(P.OrderBook)[0]
            assert first.bids == bids[:2]
            [d] = records(P.OrderBookDelta)
            assert d.changes == ((101 * U, 0, 0), (99 * U, 3, 0))
            assert {source for source, _ in received} == {77}
            assert requests == []  # it read the upstream from its first message: nothing to ask for

            # a consumer's snapshot request is answered in-band: mapping, book, SnapshotComplete
            received.clear()
            down.request_snapshot(77, BTC.id)
            await wait_for(lambda: records(P.SnapshotComplete), "the requested snapshot")
            assert records(P.OrderBook)[0].bids == ((100 * U, 2), (99 * U, 3))
            assert records(P.InstrumentMapping) == [P.mapping_for(BTC)]

            # and every snapshot_interval the full books go out unasked
            received.clear()
            await wait_for(lambda: len(records(P.OrderBook)) >= 2, "periodic snapshots")
            stats = host.stats()
            assert stats["counters"]["snapshots.periodic"] >= 2
            assert stats["counters"]["bytes_delta.kraken:BTC-USD"] > 0
            assert stats["kind_stats"]["instruments"]["kraken:BTC-USD"]["state"] == "live"
            nursery.cancel_scope.cancel()
