"""Publisher and input links over real Unix sockets, in one trio process."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile

import numpy as np
import pytest
import trio

from alphapulse import protocol
from alphapulse.runtime import InputLink, InputSpec, _fastlane, open_publisher
from alphapulse.runtime._fastlane import idle_lane

from ._frames import block, trade_frames

SOURCE, EPOCH = 42, 5


@pytest.fixture
def sock_dir():
    with tempfile.TemporaryDirectory(prefix="ap", dir="/tmp") as d:  # short: sun_path is 108 bytes
        yield d


class Collector:
    """Delivery target of a link: records (source, counter) and can be made slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.counters: list[int] = []
        self.delay = delay
        self.done = trio.Event()
        self.want = 0

    async def deliver(self, b) -> None:
        self.counters.extend((b.sequence & np.uint64((1 << 40) - 1)).tolist())
        if self.want and len(self.counters) >= self.want:
            self.done.set()
        if self.delay:
            await trio.sleep(self.delay)


def link(path: str, name: str, **spec) -> InputLink:
    return InputLink(InputSpec(node="up", socket=path, **spec), subscriber_name=name, resend_timeout=0.5)


async def wait_subscribed(publisher, n: int) -> None:
    with trio.fail_after(5):
        while sum(s.ready for s in publisher._subscribers) < n:
            await trio.sleep(0.01)


async def publish_counters(publisher, first: int, last: int, per_block: int = 100) -> None:
    for start in range(first, last + 1, per_block):
        stop = min(last, start + per_block - 1)
        await publisher.publish(block(trade_frames(SOURCE, EPOCH, range(start, stop + 1))))


async def test_fan_out_delivers_everything_in_order(sock_dir) -> None:
    path = os.path.join(sock_dir, "p.sock")
    async with open_publisher(path, source_id=1) as pub, trio.open_nursery() as nursery:
        sinks = [Collector(), Collector()]
        links = [link(path, f"s{i}") for i in range(2)]
        for lk, sink in zip(links, sinks, strict=True):
            sink.want = 20_000
            nursery.start_soon(lk.run, sink.deliver)
        await wait_subscribed(pub, 2)
        await publish_counters(pub, 1, 20_000, per_block=500)
        with trio.fail_after(10):
            for sink in sinks:
                await sink.done.wait()
        for sink, lk in zip(sinks, links, strict=True):
            assert sink.counters == list(range(1, 20_001))
            assert lk.statistics().sequence["gaps_detected"] == 0
        stats = pub.statistics()
        assert stats.published_messages == 20_000
        assert {s.name: s.sent_messages for s in stats.subscribers} == {"s0": 20_000, "s1": 20_000}
        nursery.cancel_scope.cancel()


async def test_filters_select_types_and_instruments_but_pass_system_messages(sock_dir) -> None:
    path = os.path.join(sock_dir, "p.sock")
    wanted = protocol.spot("coinbase", "BTC", "USD")
    other = protocol.spot("coinbase", "ETH", "USD")
    async with open_publisher(path, source_id=1) as pub, trio.open_nursery() as nursery:
        received = []

        async def deliver(b):
            # the link delivers placeholders too (the host strips them before the kind)
            real = b.select(~b.is_placeholder)
            received.extend(protocol.decode_message(f).tlvs[0] for f in real.frames())

        lk = link(path, "f", types=(int(protocol.TLVType.TRADE),), instruments=(wanted.id,))
        nursery.start_soon(lk.run, deliver)
        await wait_subscribed(pub, 1)
        builder = protocol.MessageBuilder(1, SOURCE)
        records = [
            protocol.mapping_for(wanted),
            protocol.Trade(wanted.id, 1, 1, 0),
            protocol.Trade(other.id, 2, 2, 0),
            protocol.Quote(wanted.id, 1, 1, 2, 2, 0),
            protocol.Trade(wanted.id, 3, 3, 0),
        ]
        builder_out = [builder.build(r, 0) for r in records]
        await pub.publish(block(*builder_out))
        with trio.fail_after(5):
            while len(received) < 3:
                await trio.sleep(0.01)
        assert received == [records[0], records[1], records[4]]
        assert lk.statistics().sequence["gaps_detected"] == 0  # filtering is not loss
        assert pub.statistics().subscribers[0].sent_bytes < len(b"".join(builder_out))
        nursery.cancel_scope.cancel()


async def test_slow_drop_oldest_subscriber_does_not_slow_a_fast_one(sock_dir) -> None:
    path = os.path.join(sock_dir, "p.sock")
    total = 60_000
    async with open_publisher(path, source_id=1, retransmit_capacity=0, socket_buffer=65536) as pub, \
            trio.open_nursery() as nursery:
        fast, slow = Collector(), Collector(delay=0.05)
        fast.want = total
        fast_link = link(path, "fast")
        slow_link = link(path, "slow", overflow="drop_oldest", queue=500)
        nursery.start_soon(fast_link.run, fast.deliver)
        nursery.start_soon(slow_link.run, slow.deliver)
        await wait_subscribed(pub, 2)
        await publish_counters(pub, 1, total, per_block=1000)
        with trio.fail_after(10):
            await fast.done.wait()
        assert fast.counters == list(range(1, total + 1))
        by_name = {s.name: s for s in pub.statistics().subscribers}
        assert by_name["fast"].dropped_overflow == 0
        assert by_name["slow"].dropped_overflow > 0
        # what the slow one lost shows up on its side as gaps (no retransmit buffer: counted lost)
        await trio.sleep(1.0)
        seq = slow_link.statistics().sequence
        assert seq["gaps_detected"] > 0
        assert len(slow.counters) + by_name["slow"].queued_messages <= total
        nursery.cancel_scope.cancel()


async def test_block_policy_pushes_back_and_loses_nothing(sock_dir) -> None:
    path = os.path.join(sock_dir, "p.sock")
    total = 30_000
    async with open_publisher(path, source_id=1, socket_buffer=16384) as pub, trio.open_nursery() as nursery:
        slow = Collector(delay=0.02)
        slow.want = total
        nursery.start_soon(link(path, "careful", overflow="block", queue=200).run, slow.deliver)
        await wait_subscribed(pub, 1)
        waited = 0
        for start in range(1, total + 1, 1000):
            pub.publish_nowait(block(trade_frames(SOURCE, EPOCH, range(start, start + 1000))))
            if any(s.full for s in pub._subscribers):
                waited += 1
            await pub.wait_for_space()
        with trio.fail_after(20):
            await slow.done.wait()
        assert slow.counters == list(range(1, total + 1))
        assert waited > 0  # the publisher really had to wait for the slow subscriber
        assert pub.statistics().subscribers[0].dropped_overflow == 0
        nursery.cancel_scope.cancel()


async def test_gap_is_recovered_from_the_retransmit_buffer(sock_dir) -> None:
    path = os.path.join(sock_dir, "p.sock")
    async with open_publisher(path, source_id=1, retransmit_capacity=10_000) as pub, trio.open_nursery() as nursery:
        sink = Collector()
        sink.want = 300
        lk = link(path, "r")
        nursery.start_soon(lk.run, sink.deliver)
        await wait_subscribed(pub, 1)
        await publish_counters(pub, 1, 100)
        # 101..200 reach the retransmit buffer but not the subscriber (as if dropped on the way)
        pub.retransmit.append(block(trade_frames(SOURCE, EPOCH, range(101, 201))))
        await publish_counters(pub, 201, 300)
        with trio.fail_after(5):
            await sink.done.wait()
        assert sink.counters == list(range(1, 301))
        seq = lk.statistics().sequence
        assert (seq["gaps_detected"], seq["gaps_recovered"], seq["messages_recovered"]) == (1, 1, 100)
        assert pub.statistics().resend_requests == 1
        nursery.cancel_scope.cancel()


async def test_a_resumed_link_gets_what_a_quiet_source_published_meanwhile(sock_dir) -> None:
    """A consumer restarted with what it had (a recorder) resumes a source at frame 100; the
    source published up to 150 meanwhile and has said nothing since. The publisher's answer to
    the Subscribe (``SequenceHead``: 150) opens the gap at once, and the resend fills it: nothing
    waits for the source to speak again, which a quiet one may never do."""
    from alphapulse.runtime import make_sequence

    path = os.path.join(sock_dir, "p.sock")
    async with open_publisher(path, source_id=1, retransmit_capacity=10_000) as pub, trio.open_nursery() as nursery:
        await publish_counters(pub, 1, 150)  # nobody subscribed: it reaches only the retransmit buffer
        sink = Collector()
        sink.want = 50
        lk = link(path, "resumed")
        assert lk.tracker.resume_from({SOURCE: make_sequence(EPOCH, 100)}) == 1
        nursery.start_soon(lk.run, sink.deliver)
        with trio.fail_after(5):
            await sink.done.wait()
        assert sink.counters == list(range(101, 151))
        seq = lk.statistics().sequence
        assert (seq["gaps_detected"], seq["gaps_recovered"], seq["messages_recovered"]) == (1, 1, 50)
        assert pub.statistics().heads_sent == 1 and pub.statistics().resend_requests == 1
        # a consumer that never read the source joins it where it stands: a snapshot, no resend
        fresh = link(path, "fresh")
        nursery.start_soon(fresh.run, Collector().deliver)
        with trio.fail_after(5):
            while fresh.statistics().snapshot_requests < 1:
                await trio.sleep(0.01)
        assert fresh.statistics().sequence["joined_midstream"] == 1 and pub.statistics().resend_requests == 1
        nursery.cancel_scope.cancel()


async def test_unavailable_range_is_counted_and_a_snapshot_is_requested(sock_dir) -> None:
    path = os.path.join(sock_dir, "p.sock")
    requests = []
    async with open_publisher(path, source_id=1, retransmit_capacity=50,
                              on_control=lambda record, sub: requests.append(record)) as pub, \
            trio.open_nursery() as nursery:
        sink = Collector()
        sink.want = 150
        lk = link(path, "u")
        nursery.start_soon(lk.run, sink.deliver)
        await wait_subscribed(pub, 1)
        await publish_counters(pub, 1, 100)
        pub.retransmit.append(block(trade_frames(SOURCE, EPOCH, range(101, 201))))  # buffer keeps ~50
        await publish_counters(pub, 201, 250)
        with trio.fail_after(5):
            while not requests:
                await trio.sleep(0.01)
        assert requests == [protocol.SnapshotRequest(source=SOURCE, instrument_id=0)]
        seq = lk.statistics().sequence
        assert seq["gaps_detected"] == 1
        # whatever could not be resent is counted lost; the rest was recovered
        assert seq["messages_lost"] + seq["messages_recovered"] == 100
        assert seq["messages_lost"] > 0
        assert sorted(set(sink.counters)) == sink.counters  # in order, no duplicates
        nursery.cancel_scope.cancel()


async def test_link_reconnects_when_the_publisher_comes_back(sock_dir) -> None:
    path = os.path.join(sock_dir, "p.sock")
    sink = Collector()
    lk = link(path, "again")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lk.run, sink.deliver)
        await trio.sleep(0.2)  # nothing listens yet: the link retries quietly
        assert not lk.statistics().connected
        for round_ in range(2):
            async with open_publisher(path, source_id=1) as pub:
                await wait_subscribed(pub, 1)
                await publish_counters(pub, 1 + 100 * round_, 100 * (round_ + 1))
                with trio.fail_after(5):
                    while len(sink.counters) < 100 * (round_ + 1):
                        await trio.sleep(0.01)
        assert lk.statistics().connects == 2
        nursery.cancel_scope.cancel()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class SyncCollector(Collector):
    """A collector that can also take blocks synchronously, so its link may use the idle lane."""

    def deliver_now(self, b) -> bool:
        self.counters.extend((b.sequence & np.uint64((1 << 40) - 1)).tolist())
        if self.want and len(self.counters) >= self.want:
            self.done.set()
        return True


async def start_sync_link(nursery, pub, path: str, name: str, *, want: int) -> tuple[SyncCollector, InputLink]:
    """A link into a :class:`SyncCollector` (so it may read in the idle lane), subscribed."""
    sink = SyncCollector()
    sink.want = want
    lk = link(path, name)
    nursery.start_soon(functools.partial(lk.run, sink.deliver, deliver_now=sink.deliver_now))
    await wait_subscribed(pub, 1)
    return sink, lk


async def _lane_installed() -> bool:
    return idle_lane() is not None


async def publish_one_by_one(publisher, first: int, last: int, pause: float = 0.0005) -> None:
    for counter in range(first, last + 1):
        await publisher.publish(block(trade_frames(SOURCE, EPOCH, [counter])))
        await trio.sleep(pause)


@pytest.fixture
def idle_lane_on(monkeypatch):
    monkeypatch.setenv("ALPHAPULSE_IDLE_LANE", "1")  # the default on a verified trio; forced on any other


async def test_idle_lane_reads_small_messages_in_order_and_timers_stay_on_time(sock_dir, idle_lane_on) -> None:
    """Messages trickling in one at a time are read from trio's idle point (no task switch each),
    and other tasks' sleeps still end on time while the lane holds the wait."""
    path = os.path.join(sock_dir, "p.sock")
    lateness: list[float] = []

    async def ticker() -> None:
        while True:
            due = trio.current_time() + 0.01
            await trio.sleep_until(due)
            lateness.append(trio.current_time() - due)

    async with open_publisher(path, source_id=1) as pub, trio.open_nursery() as nursery:
        sink, lk = await start_sync_link(nursery, pub, path, "lane", want=400)
        nursery.start_soon(ticker)
        await publish_one_by_one(pub, 1, 400)
        with trio.fail_after(5):
            await sink.done.wait()
        nursery.cancel_scope.cancel()
    assert sink.counters == list(range(1, 401))
    assert lk.lane_reads > 200  # most reads came through the lane (some arrive while trio is busy)
    assert lk.statistics().lane_reads == lk.lane_reads
    assert len(lateness) >= 5 and max(lateness) < 0.05  # timers are not held up by the lane's wait


async def test_gap_seen_in_the_idle_lane_is_recovered_by_the_links_task(sock_dir, idle_lane_on) -> None:
    """A gap found by a read in the lane hands the socket back (a resend deadline is pending);
    the link's task then recovers it from the retransmit buffer as usual."""
    path = os.path.join(sock_dir, "p.sock")
    async with open_publisher(path, source_id=1, retransmit_capacity=10_000) as pub, trio.open_nursery() as nursery:
        sink, lk = await start_sync_link(nursery, pub, path, "lane", want=120)
        await publish_one_by_one(pub, 1, 50)
        pub.retransmit.append(block(trade_frames(SOURCE, EPOCH, range(51, 61))))  # never sent live
        await publish_one_by_one(pub, 61, 120)
        with trio.fail_after(5):
            await sink.done.wait()
        nursery.cancel_scope.cancel()
    assert sink.counters == list(range(1, 121))
    seq = lk.statistics().sequence
    assert (seq["gaps_detected"], seq["gaps_recovered"], seq["messages_lost"]) == (1, 1, 0)
    assert lk.lane_reads > 0


async def test_idle_lane_is_on_by_default_and_off_when_asked(sock_dir, monkeypatch) -> None:
    monkeypatch.delenv("ALPHAPULSE_IDLE_LANE", raising=False)
    verified = trio.__version__.startswith(_fastlane.VERIFIED_TRIO)  # a newer trio: off until checked
    assert await trio.to_thread.run_sync(lambda: trio.run(_lane_installed)) == verified
    monkeypatch.setattr(_fastlane, "VERIFIED_TRIO", ("9.99.",))  # a trio release it was not checked on
    assert not await trio.to_thread.run_sync(lambda: trio.run(_lane_installed))
    monkeypatch.setenv("ALPHAPULSE_IDLE_LANE", "1")  # forced
    assert await trio.to_thread.run_sync(lambda: trio.run(_lane_installed))
    monkeypatch.setenv("ALPHAPULSE_IDLE_LANE", "0")
    monkeypatch.setenv("ALPHAPULSE_IDLE_LANE", "0")
    path = os.path.join(sock_dir, "p.sock")
    async with open_publisher(path, source_id=1) as pub, trio.open_nursery() as nursery:
        sink, lk = await start_sync_link(nursery, pub, path, "plain", want=50)
        await publish_one_by_one(pub, 1, 50)
        with trio.fail_after(5):
            await sink.done.wait()
        nursery.cancel_scope.cancel()
    assert sink.counters == list(range(1, 51)) and lk.lane_reads == 0


async def test_publisher_survives_a_subscriber_gone_while_its_reader_waits(sock_dir) -> None:
    """A send that finds the peer gone closes the subscriber while its reader task is parked in
    wait_readable (trio then raises ClosedResourceError there): the publisher must carry on."""
    path = os.path.join(sock_dir, "p.sock")
    subscribe = protocol.encode_message(protocol.RelayDomain.SYSTEM, 0, 0, 0, protocol.encode(
        protocol.Subscribe(subscriber="raw", overflow=1, queue=100, types=[], instrument_ids=[])))
    async with open_publisher(path, source_id=1) as pub, trio.open_nursery() as nursery:
        raw = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await raw.connect(path)
        await raw.send(subscribe)
        await wait_subscribed(pub, 1)
        raw.close()
        for counter in range(1, 4):  # no checkpoint: the reader has not seen the EOF yet
            pub.publish_nowait(block(trade_frames(SOURCE, EPOCH, [counter])))
        await trio.sleep(0.05)
        assert not pub._subscribers and not pub.statistics().subscribers[0].connected
        sink, _ = await start_sync_link(nursery, pub, path, "after", want=5)
        await publish_one_by_one(pub, 4, 8)
        with trio.fail_after(5):
            await sink.done.wait()
        nursery.cancel_scope.cancel()
    assert sink.counters == list(range(4, 9))


async def test_a_lingering_link_reads_batches_and_loses_nothing(sock_dir) -> None:
    """``linger_ms``: one message a millisecond reaches a link that lingers 20 ms in a few dozen
    blocks, every message in order, while a link beside it that reads at once gets them too; a
    gap still goes through resend recovery."""
    path = os.path.join(sock_dir, "p.sock")
    async with open_publisher(path, source_id=1) as pub, trio.open_nursery() as nursery:
        sinks = {"eager": Collector(), "lingering": Collector()}
        blocks = {name: 0 for name in sinks}

        def counting(name: str):
            async def deliver(b) -> None:
                blocks[name] += 1
                await sinks[name].deliver(b)
            return deliver

        for name, sink in sinks.items():
            sink.want = 400
            nursery.start_soon(link(path, name, linger=0.02 if name == "lingering" else 0.0).run, counting(name))
        await wait_subscribed(pub, 2)
        for counter in range(1, 401):
            if counter == 200:
                pub.retransmit.append(block(trade_frames(SOURCE, EPOCH, [counter])), 1)  # sent to nobody: a gap
            else:
                pub.publish_nowait(block(trade_frames(SOURCE, EPOCH, [counter])))
            await trio.sleep(0.001)
        with trio.fail_after(10):
            for sink in sinks.values():
                await sink.done.wait()
        nursery.cancel_scope.cancel()
    for sink in sinks.values():
        assert sink.counters == list(range(1, 401))
    assert blocks["lingering"] <= 80, blocks  # ~400 ms / 20 ms, plus the resent message


def test_a_large_read_of_a_sources_next_frames_is_tracked_without_decoding_columns() -> None:
    """A read too big for the decoder's quick path still tells the tracker "one source, the next
    sequences" (from the scan kernel), so the link takes it on the tracker's run path; a gap in a
    large read is still seen, held and asked for."""
    lk = link("unused", "s")
    lk._decoder = protocol.FrameDecoder()
    first = trade_frames(SOURCE, EPOCH, range(1, 301))  # 300 frames: over the quick path's limit
    assert lk._decoder.whole_frames(first) is None
    assert sum(len(b) for b in lk._ingest(first, 0.0)) == 300  # a source's first frames: the full path
    [taken] = lk._ingest(trade_frames(SOURCE, EPOCH, range(301, 601)), 0.0)
    assert "_columns" not in taken.__dict__ and len(taken) == 300
    assert lk._ingest(trade_frames(SOURCE, EPOCH, range(700, 1000)), 0.0) == []  # 601..699 missing: held
    stats = lk.statistics()
    assert stats.sequence["delivered"] == 600 and stats.sequence["gaps_detected"] == 1
    assert stats.sequence["held_frames"] == 300 and stats.resend_requests == 1


async def test_a_small_publish_hands_the_cpu_to_the_subscriber_it_woke(sock_dir, monkeypatch) -> None:
    """``sched_yield`` after a send of up to 16 frames (the woken subscriber runs now), never after
    a bulk one, nor with nobody subscribed, nor when turned off."""
    from alphapulse.runtime import _publisher

    yields = []
    monkeypatch.setattr(_publisher.os, "sched_yield", lambda: yields.append(1))
    path = os.path.join(sock_dir, "p.sock")
    async with open_publisher(path, source_id=1) as pub, trio.open_nursery() as nursery:
        pub.publish_nowait(block(trade_frames(SOURCE, EPOCH, [1])))
        assert yields == []  # nobody to hand it to
        sink = Collector()
        nursery.start_soon(link(path, "y").run, sink.deliver)
        await wait_subscribed(pub, 1)
        pub.publish_nowait(block(trade_frames(SOURCE, EPOCH, [2])))
        pub.publish_nowait(block(trade_frames(SOURCE, EPOCH, range(3, 19))))  # 16 frames: still small
        assert len(yields) == 2
        pub.publish_nowait(block(trade_frames(SOURCE, EPOCH, range(19, 36))))  # 17: bulk
        assert len(yields) == 2
        pub.yield_after_send = False
        pub.publish_nowait(block(trade_frames(SOURCE, EPOCH, [36])))
        assert len(yields) == 2
        nursery.cancel_scope.cancel()


async def test_a_resumed_link_counts_at_once_what_the_publisher_no_longer_holds(sock_dir) -> None:
    """The quiet source's frames after the consumer's position were all evicted since (another
    source filled the buffer). Its head is still named, so the consumer asks now, is answered
    unavailable and counts the 50 lost at once, instead of when (if ever) the source speaks again."""
    from alphapulse.runtime import make_sequence

    path = os.path.join(sock_dir, "p.sock")
    async with open_publisher(path, source_id=1, retransmit_capacity=100) as pub, trio.open_nursery() as nursery:
        await publish_counters(pub, 1, 150)  # nobody subscribed: only the buffer has them
        await pub.publish(block(trade_frames(SOURCE + 1, EPOCH, range(1, 101))))  # evicts every one of them
        lk = link(path, "resumed")
        lk.tracker.resume_from({SOURCE: make_sequence(EPOCH, 100)})
        nursery.start_soon(lk.run, Collector().deliver)
        with trio.fail_after(5):
            while lk.statistics().sequence["gaps_lost"] < 1:
                await trio.sleep(0.01)
        seq = lk.statistics().sequence
        assert (seq["gaps_detected"], seq["gaps_lost"], seq["messages_lost"]) == (1, 1, 50)
        # its state cannot be trusted: asked for whole; and the other source, new to it, joined
        assert lk.statistics().snapshot_requests == 2 and seq["joined_midstream"] == 1
        nursery.cancel_scope.cancel()


async def test_a_resend_answer_already_in_the_socket_is_not_counted_lost_when_the_consumer_was_busy(sock_dir) -> None:
    """The answer to a resend arrived in time, but the node was busy delivering (a slow handler:
    a Parquet flush, a starved CPU) until after the wait ran out. What the socket holds by then
    arrived before the deadline: the link reads it before it gives the gap up, so the gap is
    recovered, not counted lost (and its frames counted duplicates when read after)."""
    path = os.path.join(sock_dir, "raw.sock")
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(1)
    got: list[int] = []
    busy = trio.Event()

    async def slow_deliver(b) -> None:
        got.extend((b.sequence & np.uint64((1 << 40) - 1)).tolist())
        if len(got) == 5:  # the first block: the handler takes longer than the resend wait (0.5 s)
            busy.set()
            await trio.sleep(0.8)

    lk = link(path, "busy")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lk.run, slow_deliver)
        conn, _ = await listener.accept()
        with conn:
            await conn.send(trade_frames(SOURCE, EPOCH, [1, 2, 3, 4, 5, 8, 9, 10]))  # 6 and 7 missing
            with trio.fail_after(5):
                await busy.wait()  # the gap is open and its resend asked for
            await trio.sleep(0.1)
            await conn.send(trade_frames(SOURCE, EPOCH, [6, 7]))  # the answer, well within 0.5 s
            with trio.fail_after(5):
                while 10 not in got:  # the last frame: released once the gap is closed either way
                    await trio.sleep(0.01)
            await trio.sleep(0.05)
            sequence = lk.statistics().sequence
            nursery.cancel_scope.cancel()
    assert got == list(range(1, 11))
    assert (sequence["gaps_detected"], sequence["gaps_recovered"], sequence["gaps_lost"]) == (1, 1, 0)
    listener.close()
