"""NodeHost in-process: control socket ops, live reconfigure, and the handler circuit breaker."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import tempfile

import numpy as np
import pytest
import trio

from alphapulse import protocol, topology
from alphapulse.kinds import Node, node_kind, param
from alphapulse.kinds import _registry as registry
from alphapulse.runtime import ControlError, NodeHost, request_async


@dataclasses.dataclass(frozen=True)
class FlakyParams:
    fail_blocks: int = param(3, doc="Blocks to fail on before behaving.")


class Flaky(Node):
    """Test transform: raises on its first ``fail_blocks`` blocks, then forwards what it gets."""

    Params = FlakyParams
    breaker_passthrough = False

    def __init__(self, params: FlakyParams) -> None:
        super().__init__(params)
        self.calls = 0

    def handle_block(self, block, ctx) -> None:
        self.calls += 1
        if self.calls <= self.params.fail_blocks:
            raise ValueError(f"flaky failure {self.calls}")
        ctx.publish_block_nowait(block.select(~block.is_placeholder))

    async def run(self, ctx):
        await trio.sleep_forever()


@pytest.fixture
def flaky_kind():
    node_kind("transform.test_flaky", emits=[protocol.TLVType.TRADE])(Flaky)
    yield
    registry._REGISTRY.pop("transform.test_flaky", None)


def compile_text(text: str) -> dict:
    run_base = tempfile.mkdtemp(prefix="ap", dir="/tmp")
    loaded, diagnostics = topology.parse_topology(text, "t.yaml", env={}, run_dir=run_base, abspath="/tmp/t.yaml")
    assert loaded is not None, [d.to_text() for d in diagnostics]
    return json.loads(topology.compile_plan(loaded).to_json())


PIPE = """\
topology: host
nodes:
  src: {kind: source.counter, params: {rate: 500, batch: 1}}
  flaky:
    kind: transform.test_flaky
    inputs: [src]
    breaker: {failure_threshold: 3, window: 60, cooldown: 0.5}
  sink: {kind: sink.counter, inputs: [flaky]}
"""


async def start(nursery, plan, names):
    hosts = {}
    for name in names:
        hosts[name] = await nursery.start(NodeHost(plan, name).run)
    return hosts


async def stats(plan, name):
    return await request_async(plan["nodes"][name]["sockets"]["control"], "stats")


async def test_handler_breaker_opens_skips_then_closes_after_a_good_probe(flaky_kind) -> None:
    plan = compile_text(PIPE)
    async with trio.open_nursery() as nursery:
        await start(nursery, plan, ["sink", "flaky", "src"])
        states = []
        with trio.fail_after(15):
            while True:
                st = await stats(plan, "flaky")
                states.append(st["breakers"]["flaky.handler"])
                if st["counters"].get("breaker.closed") and st["breakers"]["flaky.handler"] == "closed":
                    break
                await trio.sleep(0.05)
        counters = st["counters"]
        assert counters["errors.handler"] == 3  # the three failing blocks, counted
        assert counters["breaker.open"] == 1 and counters["breaker.half_open"] == 1
        assert counters["dropped.breaker_open"] > 0  # skipped while open, and counted
        assert "open" in states
        with trio.fail_after(10):
            while (await stats(plan, "sink"))["counters"]["received"] == 0:
                await trio.sleep(0.05)  # flows again once closed
        nursery.cancel_scope.cancel()


async def test_control_socket_health_reconfigure_and_refusals() -> None:
    plan = compile_text(PIPE.replace("transform.test_flaky", "relay").replace(
        "    breaker: {failure_threshold: 3, window: 60, cooldown: 0.5}\n", "    domain: market_data\n"))
    control = plan["nodes"]["src"]["sockets"]["control"]
    async with trio.open_nursery() as nursery:
        await start(nursery, plan, ["sink", "flaky", "src"])
        health = await request_async(control, "health")
        assert health["status"] == "healthy" and health["kind"] == "source.counter"
        assert health["source_id"] == plan["nodes"]["src"]["source_id"]
        params = dict(plan["nodes"]["src"]["params"])
        reply = await request_async(control, "reconfigure", params={**params, "rate": 250})
        assert reply["changed"] == ["rate"]
        assert (await request_async(control, "health"))["params"]["rate"] == 250
        with pytest.raises(ControlError, match="cannot change without a restart"):
            await request_async(control, "reconfigure", params={**params, "count": 5})
        with pytest.raises(ControlError, match="unknown op"):
            await request_async(control, "explode")
        with pytest.raises(ControlError, match="rate: -1 is less than the minimum of 0"):
            await request_async(control, "reconfigure", params={**params, "rate": -1})
        assert (await request_async(control, "health"))["status"] == "healthy"  # refused, still running
        # a cpu block the node cannot take (this host runs in the test process: nothing it may change
        # here) is applied as far as it goes, logged, counted and reported; the node keeps running
        reply = await request_async(control, "reconfigure", params={**params, "rate": 250},
                                    cpu={"policy": "normal", "affinity": [4095]})
        assert reply["changed"] == ["cpu"] and reply["cpu_problems"][0].startswith("cannot set affinity [4095]")
        cpu_stats = await stats(plan, "src")
        assert cpu_stats["counters"]["errors.cpu"] == len(reply["cpu_problems"])
        assert cpu_stats["cpu"]["problems"] == reply["cpu_problems"] and cpu_stats["status"] == "healthy"
        # a snapshot request re-sends the source's state (its instrument mappings), counted
        await request_async(control, "snapshot")
        src_stats = await stats(plan, "src")
        assert src_stats["counters"]["snapshots.sent"] == 1
        publisher = src_stats["publisher"]  # the retransmit store: reserved up front, nothing forgotten early
        assert publisher["retransmit_bytes_reserved"] >= 16384 * 128 and publisher["retransmit_evicted_for_space"] == 0
        assert publisher["retransmit_held"] > 0 and 0 < publisher["retransmit_seconds"] < 60  # how far back it reaches
        nursery.cancel_scope.cancel()


async def test_a_publisher_keeps_as_many_messages_as_its_node_s_retransmit_buffer_says() -> None:
    plan = compile_text("""\
topology: rb
defaults: {retransmit_buffer: 3000}
nodes:
  src: {kind: source.counter, params: {rate: 0}, retransmit_buffer: 1000}
  quiet: {kind: source.counter, params: {rate: 0}}
  bus: {kind: relay, domain: market_data, inputs: [src, quiet], params: {retransmit_buffer: 2000}}
  sink: {kind: sink.counter, inputs: [bus]}
""")
    async with trio.open_nursery() as nursery:
        await start(nursery, plan, ["src", "quiet", "bus"])
        reserved = {name: (await stats(plan, name))["publisher"]["retransmit_bytes_reserved"]
                    for name in ("src", "quiet", "bus")}
        nursery.cancel_scope.cancel()
    assert reserved == {"src": 1000 * 128, "quiet": 3000 * 128, "bus": 2000 * 128}  # 128 bytes a message


def test_secret_params_resolve_from_the_environment_with_defaults() -> None:
    from alphapulse.runtime._host import NodeConfigError, resolve_params

    node = {
        "params": {"token": "${TOKEN:-}", "key": "${KEY}", "rate": 5},
        "secret_env": {"token": "TOKEN", "key": "KEY"},
    }
    assert resolve_params(node, {"KEY": "k"}) == {"token": "", "key": "k", "rate": 5}
    assert resolve_params(node, {"KEY": "k", "TOKEN": "t"})["token"] == "t"
    with pytest.raises(NodeConfigError, match="needs environment variable KEY"):
        resolve_params(node, {})


async def test_relay_forwards_its_domain_and_counts_the_rest() -> None:
    """Single frames (the decoder's quick path, which knows the block's one domain) and a mixed
    block (the kernel path) alike: frames of the relay's domain and system frames go on, the
    others are dropped and counted."""
    import os

    from alphapulse.runtime import InputLink, InputSpec, make_sequence, open_publisher

    with tempfile.TemporaryDirectory(prefix="apr", dir="/tmp") as tmp:
        upstream = os.path.join(tmp, "up.sock")
        node = {
            "kind": "relay", "params": {}, "source_id": 9, "relay_domain": int(protocol.RelayDomain.MARKET_DATA),
            "sockets": {"data": os.path.join(tmp, "d.sock"), "control": os.path.join(tmp, "c.sock")},
            "inputs": [{"node": "up", "socket": upstream, "overflow": "block", "queue": 1 << 16}],
        }
        market = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 3, make_sequence(1, 1))
        signal = protocol.MessageBuilder(protocol.RelayDomain.SIGNAL, 4, make_sequence(1, 1))
        trade = protocol.Trade(instrument_id=11, price=1, quantity=1, exchange_ts_ns=0)
        got: list[tuple[int, int]] = []
        async with open_publisher(upstream, source_id=1) as pub, trio.open_nursery() as nursery:
            host = await nursery.start(NodeHost({"nodes": {"bus": node}}, "bus").run)
            link = InputLink(InputSpec(node="bus", socket=node["sockets"]["data"]), subscriber_name="down")

            async def deliver(block) -> None:
                got.extend(zip(block.source.tolist(), block.relay_domain.tolist(), strict=True))

            nursery.start_soon(link.run, deliver)
            with trio.fail_after(5):
                while not any(s.ready for s in host.ctx._publisher._subscribers) or not pub._subscribers:
                    await trio.sleep(0.01)
            for builder in (market, signal, market):  # one frame per read
                pub.publish_nowait(protocol.FrameBlock.from_bytes(builder.build(trade, 1)))
                await trio.sleep(0.02)
            mixed = market.build(trade, 1) + signal.build(trade, 1) + market.build(trade, 1)
            pub.publish_nowait(protocol.FrameBlock.from_bytes(mixed))
            with trio.fail_after(5):
                while len(got) < 4:
                    await trio.sleep(0.01)
            await trio.sleep(0.05)
            assert host.ctx.counters["dropped.wrong_domain"] == 2
            nursery.cancel_scope.cancel()
    assert got == [(3, 1)] * 4


async def test_a_sink_joining_a_relay_mid_stream_gets_the_producers_snapshot() -> None:
    """The demo's start-up race: a sink subscribes to a relay after the producer named its
    instruments. The relay's answer to its Subscribe (``SequenceHead``) says the source is past
    counter 1, so it asks for a snapshot at once, before the source speaks again; the relay
    forwards the request to the producer, whose answer (the mapping again) reaches the sink.
    A subscriber that read the source from its first frame asks for nothing."""
    import os

    from alphapulse.runtime import InputLink, InputSpec, make_sequence, open_publisher

    instrument = protocol.spot("sim_a", "BTC", "USD")
    mapping = protocol.mapping_for(instrument)
    trade = protocol.Trade(instrument_id=instrument.id, price=1, quantity=1, exchange_ts_ns=0)
    producer = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 3, make_sequence(1, 1))
    requests: list = []
    with tempfile.TemporaryDirectory(prefix="apj", dir="/tmp") as tmp:
        upstream = os.path.join(tmp, "up.sock")
        node = market_relay(tmp, upstream)
        seen: dict[str, list] = {"early": [], "late": []}

        def answer(record, _subscriber) -> None:  # the producer: its state again, in-band
            requests.append(record)
            pub.publish_nowait(protocol.FrameBlock.from_bytes(producer.build(mapping, 2)))

        def collector(name: str):
            async def deliver(block) -> None:
                for frame in block.frames():
                    seen[name].extend(protocol.decode_message(frame).tlvs)
            return deliver

        async def subscribed(publisher, n: int) -> None:
            with trio.fail_after(5):
                while sum(s.ready for s in publisher._subscribers) < n:
                    await trio.sleep(0.01)

        async with open_publisher(upstream, source_id=1, on_control=answer) as pub, trio.open_nursery() as nursery:
            host = await nursery.start(NodeHost({"nodes": {"bus": node}}, "bus").run)
            links = {name: InputLink(InputSpec(node="bus", socket=node["sockets"]["data"]), subscriber_name=name)
                     for name in seen}
            nursery.start_soon(links["early"].run, collector("early"))
            await subscribed(pub, 1)
            await subscribed(host.ctx._publisher, 1)
            pub.publish_nowait(protocol.FrameBlock.from_bytes(producer.build(mapping, 1) + producer.build(trade, 1)))
            with trio.fail_after(5):
                while len(seen["early"]) < 2:
                    await trio.sleep(0.01)
            nursery.start_soon(links["late"].run, collector("late"))
            await subscribed(host.ctx._publisher, 2)
            with trio.fail_after(5):  # the source says nothing meanwhile: the head alone sets it off
                while mapping not in seen["late"]:
                    await trio.sleep(0.01)
            pub.publish_nowait(protocol.FrameBlock.from_bytes(producer.build(trade, 1)))
            with trio.fail_after(5):
                while len(seen["late"]) < 2:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert requests == [protocol.SnapshotRequest(source=3, instrument_id=0)]
    assert seen["late"] == [mapping, trade] and seen["early"] == [mapping, trade, mapping, trade]
    assert links["late"].statistics().sequence["joined_midstream"] == 1
    assert links["early"].statistics().sequence["joined_midstream"] == 0
    assert host.ctx.counters["snapshots.forwarded"] == 1


async def test_relay_direct_path_forwards_small_reads_and_leaves_the_rest_to_the_ordinary_path(caplog) -> None:
    """In-order reads (one frame, three, two of different sizes, a backlog of forty) are checked and
    sent by the relay's native direct path, and held for resends byte for byte; a read with a
    bad CRC, a gap or another domain is not sent by it, and the ordinary path does what it always
    did (counts the bad frame, recovers the gap, drops the wrong domain). Counters agree either way."""
    import os

    from alphapulse.runtime import InputLink, InputSpec, make_sequence, open_publisher

    trade = protocol.Trade(instrument_id=11, price=1, quantity=1, exchange_ts_ns=0)
    market = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 3, make_sequence(1, 1))
    signal = protocol.MessageBuilder(protocol.RelayDomain.SIGNAL, 4, make_sequence(1, 1))
    with tempfile.TemporaryDirectory(prefix="apd", dir="/tmp") as tmp:
        upstream = os.path.join(tmp, "up.sock")
        node = market_relay(tmp, upstream)
        got: list[int] = []
        async with open_publisher(upstream, source_id=1) as pub, trio.open_nursery() as nursery:
            host = await nursery.start(NodeHost({"nodes": {"bus": node}}, "bus").run)
            down = InputLink(InputSpec(node="bus", socket=node["sockets"]["data"]), subscriber_name="down")

            async def deliver(block) -> None:
                got.extend((block.sequence & ((1 << 40) - 1)).tolist())

            nursery.start_soon(down.run, deliver)
            with trio.fail_after(5):
                while not any(s.ready for s in host.ctx._publisher._subscribers) or not pub._subscribers:
                    await trio.sleep(0.01)

            async def one_read(data: bytes, wait_for: int) -> None:
                pub.publish_nowait(protocol.FrameBlock.from_bytes(data))
                with trio.fail_after(5):
                    while len(got) < wait_for:
                        await trio.sleep(0.005)
                await trio.sleep(0.02)

            await one_read(market.build(trade, 1), 1)  # first frame of the source: the ordinary path
            [link] = host.links
            forwarder = link.forwarder
            assert forwarder is not None and forwarder.forwarded_reads == 0
            direct: list[bytes] = []  # what the direct path sends, in order

            def frames(k: int, record=trade) -> bytes:
                direct.extend(market.build(record, 1) for _ in range(k))
                return b"".join(direct[-k:])

            for k in range(5):  # in order: sent natively, one and three frames per read
                await one_read(frames(1) if k % 2 else frames(3), len(got) + (1 if k % 2 else 3))
            await one_read(frames(1) + frames(1, [trade, trade]), len(got) + 2)  # two frame sizes in one read
            await one_read(frames(40), len(got) + 40)  # a relay that fell behind reads many
            assert forwarder.forwarded_reads == 7
            # the retransmit ring holds exactly those bytes: copied out of the reused read buffer
            held = host.ctx._publisher.retransmit.lookup(3, make_sequence(1, 2), make_sequence(1, 1 + len(direct)))
            assert held.complete and b"".join(bytes(b.data) for b in held.blocks) == b"".join(direct)
            # and its head is the newest forwarded, for the relay's next subscriber
            assert host.ctx._publisher.retransmit.heads()[3] == make_sequence(1, 1 + len(direct))
            bad = bytearray(market.build(trade, 1))
            bad[-1] ^= 0xFF  # payload changed after the CRC: the frame is dropped and counted
            pub._subscribers[0].send_nowait(bytes(bad), 1)
            await trio.sleep(0.05)
            market.build(trade, 1)  # 54 is never published: 55 opens a gap, which the direct path leaves alone
            await one_read(market.build(trade, 1), len(got))
            pub.publish_nowait(protocol.FrameBlock.from_bytes(signal.build(trade, 1)))  # another domain
            await trio.sleep(0.05)
            assert forwarder.forwarded_reads == 7
            stats = host.stats()
            host.trouble.interval = 3600.0  # the once-a-second sampler may have logged already
            with caplog.at_level(logging.WARNING, logger="alphapulse.node.bus"):
                host._log_trouble()
            nursery.cancel_scope.cancel()
    # 55 (bad CRC) and 56 (never published): the relay asked its upstream to resend, which had neither,
    # so they are counted lost; 57 went the ordinary path (the gap), the signal frame was dropped
    assert got == [*range(1, 55), 57]
    [link_stats] = stats["inputs"]
    assert link_stats["decode_errors"]["bad_checksum"] == 1
    assert (link_stats["received_messages"], stats["counters"]["received"], stats["counters"]["sent"]) == (56, 56, 55)
    assert link_stats["sequence"]["delivered"] == 56 and link_stats["sequence"]["messages_lost"] == 2
    assert stats["counters"]["dropped.wrong_domain"] == 1
    assert (stats["publisher"]["published_messages"], stats["publisher"]["retransmit_held"]) == (55, 55)
    # and all of it reached the log (at once the first time, then at most once per interval)
    logged: dict[str, int] = {}
    for record in caplog.records:
        line = record.getMessage()
        if line.startswith("node bus: ") and line.endswith(" (totals in stats)"):
            for item in line[len("node bus: "):-len(" (totals in stats)")].split(", "):
                key, count = item.rsplit(" +", 1)
                logged[key] = logged.get(key, 0) + int(count)
    expected = {"decode_errors.bad_checksum from up": 1, "dropped.wrong_domain": 1, "lost from up": 2}
    assert logged == expected, caplog.text


def _counters_into(got: list[int]):
    """A link's delivery target that records each frame's counter."""
    async def deliver(b) -> None:
        got.extend((b.sequence & ((1 << 40) - 1)).tolist())
    return deliver


async def _until(predicate) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.005)


def _subscribed(publisher) -> bool:
    return any(s.ready for s in publisher._subscribers)


async def _publish_counters(pub, first: int, last: int) -> None:
    """Trades of source 3 (epoch 1) with counters ``first..last``, ten to a block."""
    from ._frames import block, trade_frames

    for start in range(first, last + 1, 10):
        pub.publish_nowait(block(trade_frames(3, 1, range(start, min(last, start + 9) + 1))))
        await trio.sleep(0.001)


@pytest.mark.parametrize(("held_upstream", "lost"), [(10_000, 0), (150, 160)])
async def test_a_restarted_relay_passes_resends_upstream(held_upstream: int, lost: int) -> None:
    """A relay restarted (here: stopped and started again in-process) has an empty retransmit
    buffer. The subscriber's resend of what the relay missed while down is passed to the
    producer, whose buffer still holds it: recovered, in order, nothing lost. When the producer
    holds only the newer part, the older part is counted lost and the rest still arrives."""
    import os

    from alphapulse.runtime import InputLink, InputSpec, open_publisher

    with tempfile.TemporaryDirectory(prefix="apr", dir="/tmp") as tmp:
        upstream = os.path.join(tmp, "up.sock")
        node = market_relay(tmp, upstream)
        got: list[int] = []
        deliver = _counters_into(got)

        async with open_publisher(upstream, source_id=1, retransmit_capacity=held_upstream) as pub, \
                trio.open_nursery() as nursery:
            publish = functools.partial(_publish_counters, pub)
            relay = trio.CancelScope()

            async def run_relay(task_status=trio.TASK_STATUS_IGNORED) -> None:
                with relay:
                    await NodeHost({"nodes": {"bus": node}}, "bus").run(task_status=task_status)

            first = await nursery.start(run_relay)
            down = InputLink(InputSpec(node="bus", socket=node["sockets"]["data"]), subscriber_name="down",
                             resend_timeout=1.0)
            nursery.start_soon(down.run, deliver)
            await _until(lambda: _subscribed(pub) and _subscribed(first.ctx._publisher))
            await publish(1, 100)
            await _until(lambda: len(got) == 100)
            relay.cancel()  # the relay goes away; the producer carries on
            await _until(lambda: not pub._subscribers)
            await publish(101, 400)  # the producer holds the newest ``held_upstream`` of them
            relay = trio.CancelScope()
            second = await nursery.start(run_relay)
            await _until(lambda: _subscribed(pub) and _subscribed(second.ctx._publisher))
            await publish(401, 410)
            await _until(lambda: len(got) == 410 - lost and down.tracker.statistics().open_gaps == 0)
            await trio.sleep(0.05)
            relay_stats, down_stats = second.stats(), down.statistics()
            nursery.cancel_scope.cancel()
    assert got == [*range(1, 101), *range(101 + lost, 411)]
    sequence = down_stats.sequence
    assert (sequence["gaps_detected"], sequence["messages_recovered"], sequence["messages_lost"]) == (1, 300 - lost,
                                                                                                        lost)
    assert sequence["duplicates"] == 0
    assert relay_stats["publisher"]["resends_passed_upstream"] == 1
    [link] = relay_stats["inputs"]
    assert link["chained"]["chained_messages"] == 300 - lost and link["chained"]["pending"] == 0
    assert link["chained"]["chained_unavailable"] == (1 if lost else 0)
    assert link["sequence"]["duplicates"] == 0  # what it passed on is not counted as its own duplicates
    # the relay joined the source mid-stream but asks no snapshot for itself: it holds no state.
    # Only the subscriber's, when part of the hole was lost, went on to the producer
    assert link["sequence"]["joined_midstream"] == 1 and link["snapshot_requests"] == (1 if lost else 0)


async def test_a_resend_passes_through_two_restarted_relays_to_the_producer() -> None:
    """producer -> relay A -> relay B -> subscriber, both relays restarted: B passes the
    subscriber's resend to A, whose buffer is empty too, so A passes it to the producer. The
    answer comes back the same way, and the subscriber recovers the whole hole."""
    import os

    from alphapulse.runtime import InputLink, InputSpec, open_publisher

    with tempfile.TemporaryDirectory(prefix="apr", dir="/tmp") as tmp:
        for sub in ("a", "b"):
            os.mkdir(os.path.join(tmp, sub))
        upstream = os.path.join(tmp, "up.sock")
        nodes = {"a": market_relay(os.path.join(tmp, "a"), upstream)}
        nodes["b"] = market_relay(os.path.join(tmp, "b"), nodes["a"]["sockets"]["data"])
        got: list[int] = []
        deliver = _counters_into(got)

        async with open_publisher(upstream, source_id=1, retransmit_capacity=10_000) as pub, \
                trio.open_nursery() as nursery:
            publish = functools.partial(_publish_counters, pub)
            scopes: dict[str, trio.CancelScope] = {}

            async def run_relay(name: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
                with trio.CancelScope() as scopes[name]:
                    await NodeHost({"nodes": {name: nodes[name]}}, name).run(task_status=task_status)

            async def start_both() -> dict[str, NodeHost]:
                hosts = {name: await nursery.start(run_relay, name) for name in ("a", "b")}
                await _until(lambda: _subscribed(pub) and all(_subscribed(h.ctx._publisher) for h in hosts.values()))
                return hosts

            down = InputLink(InputSpec(node="b", socket=nodes["b"]["sockets"]["data"]), subscriber_name="down",
                             resend_timeout=1.0)
            nursery.start_soon(down.run, deliver)
            await start_both()
            await publish(1, 100)
            await _until(lambda: len(got) == 100)
            for scope in scopes.values():
                scope.cancel()
            await _until(lambda: not pub._subscribers)
            await publish(101, 400)
            hosts = await start_both()
            await publish(401, 410)
            await _until(lambda: len(got) == 410 and down.tracker.statistics().open_gaps == 0)
            stats = {name: host.stats() for name, host in hosts.items()}
            sequence = down.statistics().sequence
            nursery.cancel_scope.cancel()
    assert got == list(range(1, 411))
    assert (sequence["gaps_detected"], sequence["messages_recovered"], sequence["messages_lost"]) == (1, 300, 0)
    for name in ("a", "b"):
        assert stats[name]["publisher"]["resends_passed_upstream"] == 1
        [link] = stats[name]["inputs"]
        assert link["chained"]["chained_messages"] == 300 and link["sequence"]["duplicates"] == 0


def market_relay(tmp: str, upstream: str) -> dict:
    """A plan entry for a market-data relay reading ``upstream``, its sockets in ``tmp``."""
    import os

    return {
        "kind": "relay", "params": {}, "source_id": 9, "relay_domain": int(protocol.RelayDomain.MARKET_DATA),
        "sockets": {"data": os.path.join(tmp, "d.sock"), "control": os.path.join(tmp, "c.sock")},
        "inputs": [{"node": "up", "socket": upstream}],
    }


def test_a_kind_never_sees_placeholders_and_a_relay_passes_them_on() -> None:
    """Placeholders end at a node's handler (one frame or many), unless it is a relay."""
    plan = compile_text("""\
topology: ph
nodes:
  src: {kind: source.counter}
  bus: {kind: relay, domain: market_data, inputs: [src]}
  sink: {kind: sink.counter, inputs: [bus]}
""")
    builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 3)
    trade = protocol.Trade(instrument_id=7, price=1, quantity=1, exchange_ts_ns=0)
    frames = protocol.FrameBlock.from_bytes(b"".join(builder.build(trade, 1) for _ in range(3)))
    held = frames.with_placeholders(np.array([True, False, True]))
    placeholder_only = frames.slice(1, 2).placeholder_of_one()
    sink, relay = NodeHost(plan, "sink"), NodeHost(plan, "bus")
    assert len(sink._without_placeholders(placeholder_only)) == 0
    assert bytes(sink._without_placeholders(frames.slice(0, 1)).data) == bytes(frames.slice(0, 1).data)
    kept = sink._without_placeholders(held)
    assert kept.sizes.tolist() == [72, 72] and bytes(kept.data) == bytes(frames.data[:72]) + bytes(frames.data[144:])
    assert relay._without_placeholders(placeholder_only) is placeholder_only
