"""Peer delivery (``relay`` with ``delivery: peer``): the introduction, the links it opens, and a
relay that restarts or changes mode under running subscribers. Real sockets, in-process hosts."""

from __future__ import annotations

import os
import tempfile

import trio

from alphapulse import protocol
from alphapulse.runtime import InputLink, InputSpec, NodeHost, open_publisher
from alphapulse.runtime._peers import NO_PEERS, foreign_sockets, introduction, peer_specs
from alphapulse.runtime._sequence import SequenceTracker

from ._frames import block, counters_of, trade_frames

TRADE, QUOTE = int(protocol.TLVType.TRADE), int(protocol.TLVType.QUOTE)


# -- sans-IO --------------------------------------------------------------------------------------
def test_an_introduction_carries_each_publisher_and_the_relays_filter_on_it() -> None:
    inputs = [InputSpec(node="cb", socket="/r/cb.sock", types=(TRADE,)), InputSpec(node="kr", socket="/r/kr.sock")]
    records = introduction(inputs)
    assert [(r.publishers, r.publisher, r.socket, r.types) for r in records] == [
        (2, b"cb", "/r/cb.sock", (TRADE,)), (2, b"kr", "/r/kr.sock", ())]
    assert introduction([]) == [NO_PEERS]
    wire = protocol.decode_payload(b"".join(protocol.encode(r) for r in records))
    assert wire == records


def test_peer_links_take_the_subscribers_policy_and_the_narrower_filter() -> None:
    mine = InputSpec(node="bus", socket="/r/bus.sock", types=(TRADE, QUOTE), overflow="block", queue=77,
                     verify_checksums=False)
    records = introduction([
        InputSpec(node="cb", socket="/r/cb.sock", types=(TRADE,)),  # narrowed to trades
        InputSpec(node="kr", socket="/r/kr.sock"),  # the relay takes all: mine apply
        InputSpec(node="bn", socket="/r/bn.sock", types=(int(protocol.TLVType.ORDER_BOOK),)),  # nothing I want
        InputSpec(node="ap", socket="/r/ap.sock", instruments=(5, 6)),
    ])
    specs = {spec.node: spec for spec in peer_specs(mine, records)}
    assert set(specs) == {"cb", "kr", "ap"}
    assert specs["cb"].types == (TRADE,) and specs["kr"].types == (TRADE, QUOTE)
    assert specs["ap"].instruments == (5, 6) and specs["cb"].socket == "/r/cb.sock"
    assert all(s.overflow == "block" and s.queue == 77 and s.verify_checksums for s in specs.values())
    assert peer_specs(mine, [NO_PEERS]) == []
    assert peer_specs(InputSpec(node="b", socket="/s", instruments=(1,)), introduction(
        [InputSpec(node="x", socket="/x", instruments=(2,))])) == []


def test_only_sockets_beside_the_relays_own_may_be_introduced() -> None:
    """A plan puts every data socket of a topology in one directory; an introduction naming any
    other place (another directory, a way out of this one) did not come from a relay of this plan."""
    mine = InputSpec(node="bus", socket="/run/t/s/bus.sock")
    assert foreign_sockets(mine, introduction([InputSpec(node="cb", socket="/run/t/s/cb.sock")])) == []
    assert foreign_sockets(mine, [NO_PEERS]) == []
    elsewhere = introduction([InputSpec(node="cb", socket="/run/t/s/cb.sock"),
                              InputSpec(node="up", socket="/run/t/s/../../u/cb.sock"),
                              InputSpec(node="tmp", socket="/tmp/cb.sock")])
    assert foreign_sockets(mine, elsewhere) == ["/run/t/s/../../u/cb.sock", "/tmp/cb.sock"]


def test_a_tracker_continues_where_another_left_off() -> None:
    """The relay's link had counters 1..3 of source 7; a peer link taking over sees 6 next: a gap
    of 4..5 to resend, not a mid-stream join. Sources it has seen itself are not touched."""
    relayed, peer = SequenceTracker(), SequenceTracker()
    relayed.feed(block(trade_frames(7, 1, [1, 2, 3]), trade_frames(8, 1, [1])), 0.0)
    peer.feed(block(trade_frames(8, 1, [1, 2])), 0.0)
    assert peer.continue_from(relayed) == 1
    result = peer.feed(block(trade_frames(7, 1, [6])), 0.0)
    assert [(r.source, r.first_sequence & 0xFFFF, r.last_sequence & 0xFFFF) for r in result.requests] == [(7, 4, 5)]
    assert peer.statistics().joined_midstream == 0
    assert peer.last_delivered(8) & 0xFFFF == 2
    # and back: the relay's link takes up source 8, where the peer got further (3 > 1); not
    # source 7, where the peer got no further (it still waits for 4..5)
    peer.feed(block(trade_frames(8, 1, [3])), 0.0)
    assert relayed.continue_from(peer) == 1
    assert relayed.last_delivered(8) & 0xFFFF == 3 and relayed.last_delivered(7) & 0xFFFF == 3


# -- in-process, real sockets ----------------------------------------------------------------------
def relay_node(tmp: str, upstream: str, delivery: str) -> dict:
    return {
        "kind": "relay", "params": {"delivery": delivery}, "source_id": 9,
        "relay_domain": int(protocol.RelayDomain.MARKET_DATA),
        "sockets": {"data": os.path.join(tmp, "d.sock"), "control": os.path.join(tmp, "c.sock")},
        "inputs": [{"node": "up", "socket": upstream}],
    }


class Relay:
    """One relay host that can be stopped and started again on the same sockets."""

    def __init__(self, nursery: trio.Nursery, node: dict) -> None:
        self.nursery, self.node = nursery, node
        self.scope: trio.CancelScope | None = None
        self.host: NodeHost | None = None

    async def start(self, delivery: str) -> NodeHost:
        self.node["params"] = {"delivery": delivery}
        self.scope = trio.CancelScope()

        async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with self.scope:
                await NodeHost({"nodes": {"bus": self.node}}, "bus").run(task_status=task_status)

        self.host = await self.nursery.start(run)
        return self.host

    async def stop(self) -> None:
        self.scope.cancel()
        await trio.sleep(0.05)


async def until(predicate, what: str, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def subscriber_names(pub) -> set[str]:
    return {s.name for s in pub._subscribers if s.ready}


async def test_a_peer_relay_introduces_its_publisher_and_stays_off_the_data_path() -> None:
    """Both subscribers name only the relay; each gets the publisher's frames from the publisher
    itself, with its own filter. The relay reads nothing. A relay restart does not interrupt the
    data, and its new introduction keeps the running links; a gap is resent by the publisher and a
    snapshot request goes to the publisher, not the relay."""
    asked: list = []
    with tempfile.TemporaryDirectory(prefix="app", dir="/tmp") as tmp:
        upstream = os.path.join(tmp, "up.sock")
        node = relay_node(tmp, upstream, "peer")
        got: dict[str, list] = {"trades": [], "all": []}

        def collector(name: str):
            async def deliver(b) -> None:
                got[name].append(b.select(~b.is_placeholder))
            return deliver

        async with open_publisher(upstream, source_id=1, on_control=lambda r, _s: asked.append(r)) as pub, \
                trio.open_nursery() as nursery:
            relay = Relay(nursery, node)
            host = await relay.start("peer")
            bus = node["sockets"]["data"]
            links = {
                "trades": InputLink(InputSpec(node="bus", socket=bus, types=(TRADE,), verify_checksums=False),
                                    subscriber_name="trades"),
                "all": InputLink(InputSpec(node="bus", socket=bus, verify_checksums=False), subscriber_name="all"),
            }
            for name, link in links.items():
                nursery.start_soon(link.run, collector(name))
            await until(lambda: subscriber_names(pub) == {"trades", "all"}, "both subscribers at the publisher")
            quote = protocol.Quote(instrument_id=11, bid_price=1, bid_qty=1, ask_price=2, ask_qty=1,
                                   exchange_ts_ns=0, flags=0)
            quoter = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 4, (1 << 40) | 1)
            pub.publish_nowait(block(trade_frames(3, 1, [1, 2]), quoter.build(quote, 0)))
            await until(lambda: len(counters_of(got["all"])) == 3, "two trades and a quote")

            await relay.stop()  # the data keeps flowing without the relay
            pub.publish_nowait(block(trade_frames(3, 1, [3, 4])))
            await until(lambda: len(counters_of(got["all"])) == 5 and len(counters_of(got["trades"])) == 4,
                        "frames published while the relay is down")
            host = await relay.start("peer")
            await until(lambda: all(link.statistics().connects == 2 for link in links.values()), "reconnects")
            await until(lambda: host.ctx._publisher.statistics().introductions == 2, "two new introductions")
            await trio.sleep(0.05)
            assert all(len(link.peers.links) == 1 for link in links.values())
            assert all(link.peers.links[0].statistics().connects == 1 for link in links.values())  # kept

            # a hole: frame 5 is in the publisher's retransmit buffer but was never sent
            pub.record_published(block(trade_frames(3, 1, [5])), 1)
            pub.publish_nowait(block(trade_frames(3, 1, [6])))
            await until(lambda: len(counters_of(got["all"])) == 7, "the hole resent by the publisher")
            links["all"].request_snapshot(3)
            await until(lambda: asked, "the snapshot request at the publisher")
            stats = host.stats()
            nursery.cancel_scope.cancel()

    assert counters_of(got["all"]) == [(3, 1), (3, 2), (4, 1), *((3, n) for n in range(3, 7))]
    assert counters_of(got["trades"]) == [(3, n) for n in range(1, 7)]
    assert asked == [protocol.SnapshotRequest(source=3, instrument_id=0)]
    assert stats["counters"]["received"] == 0 and stats["inputs"] == []  # the relay read nothing
    peer = links["all"].statistics().peers[0]
    assert peer.upstream == "up" and peer.sequence["gaps_recovered"] == 1 and peer.resend_requests == 1
    assert links["all"].statistics().flattened()[1] == peer


async def test_a_link_refuses_an_introduction_to_a_socket_elsewhere_and_counts_it() -> None:
    """Something listening on the relay's socket introduces a publisher outside the topology's
    socket directory: the link connects nowhere else, counts it, and stays on the relay's socket."""
    with tempfile.TemporaryDirectory(prefix="apf", dir="/tmp") as tmp:
        os.mkdir(os.path.join(tmp, "s"))
        bus = os.path.join(tmp, "s", "bus.sock")
        stranger = introduction([InputSpec(node="x", socket=os.path.join(tmp, "x.sock"))])
        got: list = []

        async def deliver(b) -> None:
            got.append(b)

        async with open_publisher(bus, source_id=9, introduction=stranger) as relay, trio.open_nursery() as nursery:
            link = InputLink(InputSpec(node="bus", socket=bus, verify_checksums=False), subscriber_name="sink")
            nursery.start_soon(link.run, deliver)
            await until(lambda: link.statistics().decode_errors.get("foreign_socket") == 1, "the refusal counted")
            relay.publish_nowait(block(trade_frames(3, 1, [1, 2])))
            await until(lambda: len(counters_of(got)) == 2, "frames from the relay itself")
            assert link.peers.links == [] and relay.statistics().introductions == 1
            nursery.cancel_scope.cancel()


async def test_switching_a_relay_between_relay_and_peer_delivery_loses_and_repeats_nothing() -> None:
    """relay → peer: the new peer link carries on from what came through the relay, so frames
    published while the relay was down are a gap the publisher resends, not a mid-stream join.
    peer → relay: the peer link is retired and the relay's link carries on from it."""
    with tempfile.TemporaryDirectory(prefix="aps", dir="/tmp") as tmp:
        upstream = os.path.join(tmp, "up.sock")
        node = relay_node(tmp, upstream, "relay")
        got: list = []

        async def deliver(b) -> None:
            got.append(b)

        async with open_publisher(upstream, source_id=1) as pub, trio.open_nursery() as nursery:
            relay = Relay(nursery, node)
            host = await relay.start("relay")
            link = InputLink(InputSpec(node="bus", socket=node["sockets"]["data"], verify_checksums=False),
                             subscriber_name="sink")
            nursery.start_soon(link.run, deliver)
            await until(lambda: subscriber_names(pub) == {"bus"}, "the relay at the publisher")
            await until(lambda: subscriber_names(host.ctx._publisher) == {"sink"}, "the sink at the relay")
            pub.publish_nowait(block(trade_frames(3, 1, [1, 2, 3])))
            await until(lambda: len(counters_of(got)) == 3, "three frames through the relay")

            await relay.stop()
            pub.publish_nowait(block(trade_frames(3, 1, [4, 5])))  # nobody reads these now
            await relay.start("peer")
            await until(lambda: subscriber_names(pub) == {"sink"}, "the sink at the publisher itself")
            pub.publish_nowait(block(trade_frames(3, 1, [6])))
            await until(lambda: len(counters_of(got)) == 6, "4..5 resent by the publisher, then 6")

            await relay.stop()
            host = await relay.start("relay")
            await until(lambda: not link.peers.links, "the peer link closed")
            await until(lambda: subscriber_names(pub) == {"bus"}, "only the relay at the publisher")
            await until(lambda: subscriber_names(host.ctx._publisher) == {"sink"}, "the sink back at the relay")
            pub.publish_nowait(block(trade_frames(3, 1, [7, 8])))
            await until(lambda: len(counters_of(got)) == 8, "7..8 through the relay")
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    assert counters_of(got) == [(3, n) for n in range(1, 9)]
    stats = link.statistics().flattened()
    assert sum(s.sequence["joined_midstream"] for s in stats) == 0
    assert sum(s.sequence["duplicates"] for s in stats) == 0
    assert sum(s.sequence["messages_lost"] for s in stats) == 0


async def test_a_routing_relay_reading_a_peer_relay_forwards_natively_on_its_peer_links() -> None:
    """publisher → ``front`` (peer) → ``bus`` (relay) → sink: ``bus`` links to the publisher
    itself, and that peer link sends reads on with the relay's native direct path."""
    with tempfile.TemporaryDirectory(prefix="apc", dir="/tmp") as tmp:
        upstream = os.path.join(tmp, "up.sock")
        front = {**relay_node(tmp, upstream, "peer"), "source_id": 8,
                 "sockets": {"data": os.path.join(tmp, "front.sock"), "control": os.path.join(tmp, "fc.sock")}}
        bus = {**relay_node(tmp, front["sockets"]["data"], "relay"), "inputs": [{"node": "front",
                                                                                "socket": front["sockets"]["data"]}]}
        got: list = []

        async def deliver(b) -> None:
            got.append(b)

        async with open_publisher(upstream, source_id=1) as pub, trio.open_nursery() as nursery:
            await Relay(nursery, front).start("peer")
            host = await Relay(nursery, bus).start("relay")
            sink = InputLink(InputSpec(node="bus", socket=bus["sockets"]["data"], verify_checksums=False),
                             subscriber_name="sink")
            nursery.start_soon(sink.run, deliver)
            await until(lambda: subscriber_names(pub) == {"bus"}, "bus at the publisher itself")
            await until(lambda: subscriber_names(host.ctx._publisher) == {"sink"}, "the sink at bus")
            for counter in range(1, 4):  # the first read goes the ordinary way (a source not seen yet)
                pub.publish_nowait(block(trade_frames(3, 1, [counter])))
                await until(lambda n=counter: len(counters_of(got)) == n, f"frame {counter}")
            [peer] = host.links[0].peers.links
            forwarded = peer.forwarder.forwarded_reads
            nursery.cancel_scope.cancel()

    assert counters_of(got) == [(3, n) for n in range(1, 4)]
    assert forwarded == 2
