"""The relay's one-call fan-out (``runtime._uring``): a real io_uring sending to real Unix sockets,
its fallbacks, and a relay node using it for every subscriber."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import types

import numpy as np
import pytest
import trio

from alphapulse import protocol
from alphapulse.runtime import InputLink, InputSpec, NodeHost, make_sequence, open_publisher
from alphapulse.runtime._uring import RING_MAX_BYTES, NoRing, SendRing, send_all, shared_send_ring

from .test_host import market_relay

try:
    SendRing().close()
    HAVE_URING = True
except OSError:  # a kernel or sandbox without io_uring: the fallback is what runs there
    HAVE_URING = False

needs_uring = pytest.mark.skipif(not HAVE_URING, reason="io_uring is not available here")


def pairs(k: int) -> list[tuple[socket.socket, socket.socket]]:
    out = [socket.socketpair() for _ in range(k)]
    for a, b in out:
        a.setblocking(False)
        b.setblocking(False)
    return out


def fill(sock: socket.socket) -> None:
    """Send until the kernel pushes back: the next non-blocking send gets EAGAIN."""
    try:
        while True:
            sock.send(b"x" * 65536)
    except BlockingIOError:
        pass


def fan_out(ring, payload: bytes, socks: list[socket.socket]) -> list[int]:
    buf = np.frombuffer(bytearray(payload), np.uint8)
    sent = np.full(64, -7, np.int64)
    fds = np.array([s.fileno() for s in socks], np.int32)
    send_all(ring.fd, ring.ring, ring.sqes, ring.layout, buf.ctypes.data, len(payload), fds, sent)
    return sent[: len(socks)].tolist()


def queued_sends(ring) -> int:
    """How many sends were ever queued on ``ring`` (its submission queue's tail)."""
    from alphapulse.runtime._uring import SQ_TAIL

    return int(ring.ring[ring.layout[SQ_TAIL]])


def drain(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


@needs_uring
def test_one_call_sends_the_buffer_to_every_socket_once() -> None:
    ring = SendRing()
    try:
        socks = pairs(5)
        for round_ in range(30):  # the ring's queues wrap and are reused
            payload = bytes([round_]) * 72
            queued = queued_sends(ring)
            assert fan_out(ring, payload, [a for a, _ in socks]) == [72] * 5
            assert queued_sends(ring) == queued + 5  # through the ring, not one send() each
            assert [drain(b) for _, b in socks] == [payload] * 5
    finally:
        ring.close()


@needs_uring
def test_a_full_socket_and_a_closed_one_fail_alone_as_plain_sends_do() -> None:
    """EAGAIN comes back at once (not retried later by the kernel), a closed peer is an error and
    no SIGPIPE; the others get their bytes. The fallback reports exactly the same."""
    ring = SendRing()
    try:
        results = {}
        for name, r in (("ring", ring), ("plain", NoRing)):
            socks = pairs(4)
            fill(socks[1][0])
            socks[2][1].close()
            results[name] = fan_out(r, b"y" * 72, [a for a, _ in socks])
            assert drain(socks[0][1]) == b"y" * 72 and drain(socks[3][1]) == b"y" * 72
        assert results["ring"] == results["plain"] == [72, -1, -1, 72]
    finally:
        ring.close()


@needs_uring
def test_a_failed_submission_is_taken_back_and_sent_the_plain_way() -> None:
    """io_uring_enter refused (here: a descriptor that is not the ring): nothing stays queued in
    the ring to go out later, every socket gets the bytes once now, and the ring works on after."""
    ring = SendRing()
    r, w = os.pipe()
    try:
        socks = pairs(3)
        outs = [a for a, _ in socks]

        wrong = types.SimpleNamespace(fd=r, ring=ring.ring, sqes=ring.sqes, layout=ring.layout)
        assert fan_out(wrong, b"1" * 40, outs) == [40] * 3
        assert fan_out(ring, b"2" * 41, outs) == [41] * 3
        assert fan_out(ring, b"3" * 42, outs) == [42] * 3
        assert [drain(b) for _, b in socks] == [b"1" * 40 + b"2" * 41 + b"3" * 42] * 3
    finally:
        os.close(r)
        os.close(w)
        ring.close()


def test_without_a_ring_or_with_more_sockets_than_it_holds_every_socket_still_gets_it() -> None:
    socks = pairs(3)
    assert fan_out(NoRing, b"z" * 72, [a for a, _ in socks]) == [72] * 3
    assert [drain(b) for _, b in socks] == [b"z" * 72] * 3
    if HAVE_URING:
        ring = SendRing(entries=2)
        try:
            assert ring.entries == 2
            assert fan_out(ring, b"w" * 72, [a for a, _ in socks]) == [72] * 3
            assert [drain(b) for _, b in socks] == [b"w" * 72] * 3
            assert queued_sends(ring) == 0
        finally:
            ring.close()


@needs_uring
def test_large_reads_are_sent_the_plain_way() -> None:
    """Bulk flow: above RING_MAX_BYTES the ring's own cost per send is not worth it."""
    ring = SendRing()
    try:
        socks = pairs(2)
        big = b"b" * (RING_MAX_BYTES + 1)
        assert fan_out(ring, big, [a for a, _ in socks]) == [len(big)] * 2
        assert queued_sends(ring) == 0
        assert fan_out(ring, big[:RING_MAX_BYTES], [a for a, _ in socks]) == [RING_MAX_BYTES] * 2
        assert queued_sends(ring) == 2
        assert [drain(b) for _, b in socks] == [big + big[:RING_MAX_BYTES]] * 2
    finally:
        ring.close()


def test_alphapulse_uring_0_turns_it_off() -> None:
    code = "from alphapulse.runtime._uring import shared_send_ring; print(type(shared_send_ring()).__name__)"
    env = {**os.environ, "ALPHAPULSE_URING": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "NoRing"
    if HAVE_URING:
        env["ALPHAPULSE_URING"] = "1"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "SendRing"


async def test_a_relay_fans_out_to_several_subscribers_in_one_call_and_drops_one_that_left() -> None:
    """A market-data relay with three subscribers sends each in-order read to all three through
    its ring (the direct path); when one subscriber's connection goes, the relay closes it (on its
    EOF or its failed send, whichever comes first) and the other two get every frame, in order."""
    trade = protocol.Trade(instrument_id=11, price=1, quantity=1, exchange_ts_ns=0)
    market = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 3, make_sequence(1, 1))
    with tempfile.TemporaryDirectory(prefix="apu", dir="/tmp") as tmp:
        upstream = os.path.join(tmp, "up.sock")
        node = market_relay(tmp, upstream)
        got: dict[str, list[int]] = {name: [] for name in ("a", "b", "c")}
        async with open_publisher(upstream, source_id=1) as pub, trio.open_nursery() as nursery:
            host = await nursery.start(NodeHost({"nodes": {"bus": node}}, "bus").run)
            links = {name: InputLink(InputSpec(node="bus", socket=node["sockets"]["data"]), subscriber_name=name)
                     for name in got}
            scopes = {}
            for name, link in links.items():
                async def deliver(block, name=name) -> None:
                    got[name].extend((block.sequence & ((1 << 40) - 1)).tolist())

                scopes[name] = trio.CancelScope()

                async def run(link=link, deliver=deliver, scope=scopes[name]) -> None:
                    with scope:
                        await link.run(deliver)

                nursery.start_soon(run)
            relay_pub = host.ctx._publisher
            with trio.fail_after(5):
                while sum(s.ready for s in relay_pub._subscribers) < 3 or not pub._subscribers:
                    await trio.sleep(0.01)

            async def publish(k: int, wait_for: dict[str, int]) -> None:
                pub.publish_nowait(protocol.FrameBlock.join([market.build(trade, 1) for _ in range(k)]))
                with trio.fail_after(5):
                    while any(len(got[name]) < n for name, n in wait_for.items()):
                        await trio.sleep(0.005)
                await trio.sleep(0.02)

            ring = shared_send_ring()
            assert isinstance(ring, SendRing) == HAVE_URING
            queued = queued_sends(ring)
            for k in (1, 3, 1, 2):  # the first read goes the ordinary path (a new source), the rest direct
                await publish(k, {name: len(got[name]) + k for name in got})
            [link] = host.links
            assert link.forwarder.forwarded_reads == 3
            assert queued_sends(ring) == queued + (9 if HAVE_URING else 0)  # three reads, each to three
            scopes["c"].cancel()  # subscriber c goes away without a word
            with trio.fail_after(5):
                while links["c"]._sock is not None:
                    await trio.sleep(0.01)
            for k in (2, 1, 4):
                await publish(k, {"a": len(got["a"]) + k, "b": len(got["b"]) + k})
            with trio.fail_after(5):
                while sum(not s.closed for s in relay_pub._subscribers) > 2:
                    await publish(1, {"a": len(got["a"]) + 1, "b": len(got["b"]) + 1})
            stats = host.stats()
            nursery.cancel_scope.cancel()
    [input_stats] = stats["inputs"]
    assert input_stats["direct_reads"] >= 3 + 3  # before and after c left
    assert input_stats["direct_fanout"] == ("io_uring" if HAVE_URING else "send")
    total = len(got["a"])
    assert got["a"] == got["b"] == list(range(1, total + 1)) and total >= 14
    assert got["c"] == list(range(1, 8))
    assert stats["publisher"]["published_messages"] == total


def test_where_io_uring_is_refused_the_node_says_so_once_and_sends_plainly(monkeypatch, caplog) -> None:
    """A sandbox that refuses io_uring_setup (seccomp: EPERM) gets NoRing and one log line."""
    from alphapulse.runtime import _uring

    def refused(*_args, **_kwargs):
        raise PermissionError(1, "io_uring_setup: Operation not permitted")

    monkeypatch.setattr(_uring, "_SHARED", None)
    monkeypatch.setattr(_uring, "SendRing", refused)
    monkeypatch.delenv("ALPHAPULSE_URING", raising=False)
    with caplog.at_level("INFO", logger="alphapulse.uring"):
        first, again = _uring.shared_send_ring(), _uring.shared_send_ring()
    assert isinstance(first, NoRing) and again is first
    assert [r.getMessage() for r in caplog.records] == [
        "io_uring is not available here ([Errno 1] io_uring_setup: Operation not permitted): "
        "fan-out sends one call at a time"]
