"""An input link: one subscription to an upstream node's publisher socket.

It connects (retrying only "not there yet" errors, with capped exponential backoff and jitter),
says what it wants (Subscribe), then reads whatever the socket holds, decodes it into blocks of
complete frames, runs them through the :class:`SequenceTracker` and hands deliverable blocks on.
Gap recovery talks back on the same socket: ResendRequest first, SnapshotRequest when upstream
says the range is gone or the resend does not arrive in time. A dropped connection is
reconnected; the tracker keeps its state across reconnects, so what was missed meanwhile shows
up as a gap and is recovered or counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import math
import os
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from alphapulse import protocol
from alphapulse.runtime._chain import ResendChain
from alphapulse.runtime._fastlane import IdleLane, idle_lane
from alphapulse.runtime._forward import FORWARDED, NOT_FORWARDED, DirectForwarder
from alphapulse.runtime._headers import count_control
from alphapulse.runtime._peers import PeerLinks, foreign_sockets, peer_specs
from alphapulse.runtime._publisher import OVERFLOW_CODES, SOCKET_BUFFER_BYTES, Overflow
from alphapulse.runtime._sequence import ResendWanted, SequenceTracker, SnapshotWanted

log = logging.getLogger("alphapulse.input")

RETRY_CONNECT_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN})
"""Errors that mean "the upstream is not (yet, or again) listening": retried with backoff."""
_PEER_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
READ_SIZE = 1 << 20
SMALL_READ = 1 << 16
"""First read after a wait. Python allocates the whole size asked of ``recv``: a 1 MiB buffer
costs an mmap and page faults (about 25 µs here) even when 72 bytes arrive, 64 KiB comes from
the heap. A read that fills its buffer is followed by ``READ_SIZE`` reads until the socket is
drained."""
RESEND_TIMEOUT = 1.0
"""Default seconds to wait for a resend's answer (the link option ``resend_timeout_ms``). It was
0.25 s. In a chaos run of the demo, a relay restarted and its four subscribers asked at once
for three sources each. The relay passed each request on to the producer, and one answer came
after 0.25 s, so that subscriber counted the gap lost (74 messages). An upstream that no longer
holds a range answers at once, so this wait is only for an answer that is late or never comes."""
CHAIN_TIMEOUT_FACTOR = 2
"""A resend a relay passed upstream is routed for this many of its resend timeouts; by then the
subscriber that asked has given up (its own timeout is usually the same) and asked for a snapshot."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One entry of a plan node's ``inputs``."""

    node: str
    socket: str
    types: tuple[int, ...] = ()
    instruments: tuple[int, ...] = ()
    overflow: str = "drop_oldest"
    queue: int = 4096
    verify_checksums: bool = True
    """False for a link from a relay: it checked every frame's CRC before forwarding it."""
    linger: float = 0.0
    """Seconds from one read to the next, for messages to gather (0: read as they arrive)."""
    resend_timeout: float = RESEND_TIMEOUT
    """Seconds to wait for a resend's answer before the gap is counted lost."""

    @classmethod
    def from_plan(cls, entry: dict[str, Any]) -> InputSpec:
        return cls(
            node=entry["node"],
            socket=entry["socket"],
            types=tuple(entry.get("types") or ()),
            instruments=tuple(entry.get("instruments") or ()),
            overflow=entry.get("overflow", "drop_oldest"),
            queue=int(entry.get("queue", 4096)),
            verify_checksums=bool(entry.get("verify_checksums", True)),
            linger=float(entry.get("linger_ms", 0)) / 1000.0,
            resend_timeout=float(entry.get("resend_timeout_ms", RESEND_TIMEOUT * 1000.0)) / 1000.0,
        )


@dataclasses.dataclass(frozen=True)
class Backoff:
    initial: float = 0.05
    maximum: float = 2.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Capped exponential delay with "equal jitter" (half fixed, half random)."""
        capped = min(self.maximum, self.initial * self.factor**attempt)
        return capped / 2 + rng.uniform(0, capped / 2)


@dataclasses.dataclass(frozen=True)
class InputStatistics:
    upstream: str
    connected: bool
    connects: int
    reconnects: int
    received_messages: int
    received_bytes: int
    control_messages: int
    decode_errors: dict[str, int]
    resend_requests: int
    snapshot_requests: int
    resend_unavailable: int
    lane_reads: int
    """reads handled from trio's idle lane, without a task switch (see ``_fastlane``)"""
    sequence: dict[str, int]
    peers: tuple[InputStatistics, ...] = ()
    """links opened on a ``peer`` relay's introduction, one per publisher (``_peers``)"""
    direct_reads: int = 0
    """reads a relay checked and sent on in one native call (its direct path, ``_forward``)"""
    direct_fanout: str = ""
    """how that path sends a read to several subscribers: ``io_uring`` (one system call, see
    ``_uring``) or ``send`` (one call each); empty where the link has no direct path"""
    chained: dict[str, int] = dataclasses.field(default_factory=dict)
    """a relay's link: subscribers' resend requests it passed upstream (``_chain``); empty elsewhere"""

    def flattened(self) -> list[InputStatistics]:
        """This link and its peer links: what a node's totals add up."""
        return [self, *(stats for peer in self.peers for stats in peer.flattened())]


def control_frame(record: Any) -> bytes:
    """A request toward a publisher (Subscribe, ResendRequest, ...): a system message from no
    source, unsequenced, as every link sends them upstream."""
    return protocol.encode_message(protocol.RelayDomain.SYSTEM, 0, 0, time.time_ns(), protocol.encode(record))


def subscribe_record(spec: InputSpec, subscriber: str) -> Any:
    """What a link says first on connecting: its name, filter, overflow policy and queue."""
    return protocol.Subscribe(subscriber=subscriber, overflow=OVERFLOW_CODES[Overflow(spec.overflow)],
                              queue=spec.queue, types=list(spec.types), instrument_ids=list(spec.instruments))


_NO_SCOPE = contextlib.nullcontext()
_MAGIC_BYTES = struct.pack("<I", protocol.MAGIC)


def _completion(buffered: int, data: bytes, tail: bytes) -> tuple[int, bytes]:
    """(bytes to ask for next, known start of the incomplete frame the decoder holds).

    A big read rarely ends on a frame boundary. Reading exactly the rest of the split frame first
    makes the next big read start on a boundary, so the decoder takes its zero-copy path (the block
    is the received bytes object, forwarded as is) instead of copying every chunk into its own
    buffer and out again. Only a hint: the decoder is correct whatever the split, so anything
    unexpected (garbage, a frame spanning unknown reads) falls back to a plain big read.
    """
    if not buffered:
        return READ_SIZE, b""
    if buffered <= len(data):
        tail = data[len(data) - buffered:]  # at most one frame
    elif len(tail) + len(data) == buffered:
        tail += data
    else:
        return READ_SIZE, b""
    if len(tail) < protocol.HEADER_SIZE:
        return protocol.HEADER_SIZE - len(tail), tail
    if tail[:4] != _MAGIC_BYTES:
        return READ_SIZE, b""
    size = protocol.HEADER_SIZE + int.from_bytes(tail[24:28], "little")
    if size <= len(tail) or size > protocol.HEADER_SIZE + protocol.MAX_PAYLOAD_SIZE:
        return READ_SIZE, b""
    return size - len(tail), tail


class _Handback:
    """How the idle lane gives a socket back to its link's task, and why."""

    __slots__ = ("data", "error", "event", "must_wait")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.data: bytes | None = None
        self.error: BaseException | None = None
        self.must_wait = False

    def give(self, *, data: bytes | None = None, error: BaseException | None = None) -> bool:
        self.data, self.error = data, error
        self.event.set()
        return False  # the lane unregisters the socket


class InputLink:
    def __init__(
        self,
        spec: InputSpec,
        *,
        subscriber_name: str,
        resend_timeout: float | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.subscriber_name = subscriber_name
        self.resend_timeout = spec.resend_timeout if resend_timeout is None else resend_timeout
        """seconds to wait for a resend's answer (the spec's unless given)"""
        self.tracker = SequenceTracker(self.resend_timeout)
        self.backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._sock: socket.socket | None = None
        self._pending_control: list[bytes] = []
        self._decode_errors: dict[str, int] = {}
        self._decoder: Any = None
        self._connects = 0
        self._received = self._received_bytes = self._control = 0
        self._resends = self._snapshots = self._unavailable = 0
        self._deliver_now: Callable[[Any], bool] | None = None
        self.forwarder: DirectForwarder | None = None
        """A relay's direct path for reads in the idle lane (``runtime._forward``)."""
        self._wait_ready: Callable[[], Awaitable[None]] | None = None
        self._on_control: Callable[[Any], None] | None = None
        self.lane_reads = 0
        """reads handled from trio's idle lane (the rest went through the link's task)"""
        self.peers: PeerLinks | None = None
        """the links to publishers a ``peer`` relay introduced (None until ``run``)"""
        self.retired = False
        """set on a peer link whose publisher its relay no longer introduces: it delivers nothing more"""
        self.chain: ResendChain | None = None
        """a relay's link: resend requests it passes upstream for its subscribers (``runtime._chain``)"""
        self._resend_to: Callable[[Any, Any], None] | None = None
        self._tell: Callable[[Any, Any], None] | None = None

    # -- control toward upstream ----------------------------------------------------------------
    def has_seen(self, source: int) -> bool:
        """Whether frames of ``source`` came over this link or one of its peer links."""
        return self.tracker.has_seen(source) or any(peer.has_seen(source) for peer in self._peer_links())

    def request_snapshot(self, source: int, instrument_id: int = 0) -> None:
        """Ask upstream for a snapshot; when a relay introduced publishers, ask them instead
        (every one for ``source`` 0, else the one the source's frames come from)."""
        peers = [peer for peer in self._peer_links() if source == 0 or peer.has_seen(source)]
        if peers:
            for peer in peers:
                peer.request_snapshot(source, instrument_id)
            return
        self._snapshots += 1
        self._send_control(protocol.SnapshotRequest(source=source, instrument_id=instrument_id))

    def pass_resends_upstream(self, resend_to: Callable[[Any, Any], None], tell: Callable[[Any, Any], None]) -> None:
        """Make this link (a relay's) take subscribers' resend requests upstream: ``resend_to``
        sends frames to a subscriber, ``tell`` sends it a control record (``runtime._chain``)."""
        self.chain = ResendChain(CHAIN_TIMEOUT_FACTOR * self.resend_timeout)
        self._resend_to, self._tell = resend_to, tell

    def chain_resend(self, subscriber: Any, source: int, first_sequence: int, last_sequence: int) -> bool:
        """Ask upstream for a range ``subscriber`` wants; False when this link cannot (it does
        not chain, is not connected, or has not seen the source)."""
        if self.chain is None or self._sock is None or not self.tracker.has_seen(source):
            return False
        if self.chain.ask(subscriber, source, first_sequence, last_sequence, trio.current_time()):
            log.info("%s: passing a resend of source %d (%d..%d) on to %s", self.subscriber_name, source,
                     first_sequence, last_sequence, self.spec.node)
            self._send_control(protocol.ResendRequest(
                source=source, first_sequence=first_sequence, last_sequence=last_sequence,
            ))
        self.tracker.hand_out_old = True
        return True

    def _pass_on_old(self, old: list[Any]) -> None:
        """Frames the tracker found old: a chained resend's answer goes to whoever asked; the
        rest are counted as the duplicates they are."""
        unclaimed = 0
        chain = self.chain
        for block in old:
            if chain is None or self._resend_to is None:
                unclaimed += len(block)
                continue
            deliveries, left = chain.route(block)
            unclaimed += left
            for subscribers, frames in deliveries:
                for subscriber in subscribers:
                    self._resend_to(subscriber, frames)
        if unclaimed:
            self.tracker.count_duplicates(unclaimed)
        self.tracker.hand_out_old = bool(chain is not None and chain.pending)

    def _took(self, result: Any) -> list[Any]:
        """Act on what the tracker said (requests upstream, old frames) and return what to deliver."""
        if result.requests:
            self._act(result.requests)
        if result.old:
            self._pass_on_old(result.old)
        return result.deliver

    def _peer_links(self) -> list[InputLink]:
        return self.peers.links if self.peers is not None else []

    def _send_control(self, record: Any) -> None:
        frame = control_frame(record)
        if self._sock is None:
            self._pending_control.append(frame)
            return
        try:
            self._sock.sendall(frame)  # tiny, rare; the kernel buffer takes it
        except (BlockingIOError, *_PEER_GONE):
            self._pending_control.append(frame)

    def _act(self, requests: list[ResendWanted | SnapshotWanted]) -> None:
        for request in requests:
            if isinstance(request, ResendWanted):
                self._resends += 1
                log.info("%s: gap from source %d, asking %s to resend %d..%d", self.subscriber_name,
                         request.source, self.spec.node, request.first_sequence, request.last_sequence)
                self._send_control(
                    protocol.ResendRequest(
                        source=request.source,
                        first_sequence=request.first_sequence,
                        last_sequence=request.last_sequence,
                    )
                )
            else:
                if request.joined and self.chain is not None:
                    # a relay keeps no state of its own, and each of its subscribers asks for
                    # the snapshot it needs: asking too would make every producer re-send its
                    # whole state on each relay restart
                    log.info("%s: joined source %d mid-stream", self.subscriber_name, request.source)
                    continue
                if request.joined:
                    log.info("%s: joined source %d mid-stream; asking %s for a snapshot",
                             self.subscriber_name, request.source, self.spec.node)
                else:
                    log.warning("%s: source %d gap not recoverable by resend; asking %s for a snapshot",
                                self.subscriber_name, request.source, self.spec.node)
                self.request_snapshot(request.source)

    # -- the link's life -----------------------------------------------------------------------------
    async def run(
        self,
        deliver: Callable[[Any], Awaitable[None]],
        on_control: Callable[[Any], None] | None = None,
        *,
        deliver_now: Callable[[Any], bool] | None = None,
        wait_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Connect, read, track and deliver until cancelled; reconnects on its own.

        ``deliver_now`` is the synchronous form of ``deliver`` (True: the consumer can take more
        at once; False: call ``wait_ready`` before the next block). With it, a link that is idle
        between small reads waits in trio's idle lane (see ``_fastlane``): its reads are handled
        from trio's idle point without a task switch each.
        """
        self._deliver_now, self._wait_ready, self._on_control = deliver_now, wait_ready, on_control

        def make_peer(spec: InputSpec) -> InputLink:
            peer = InputLink(spec, subscriber_name=self.subscriber_name, resend_timeout=self.resend_timeout,
                             backoff=self.backoff, rng=self._rng)
            peer.tracker.continue_from(self.tracker)  # sources this link had from the relay
            if self.forwarder is not None:  # a relay reading a peer relay: the direct path on each peer link
                peer.forwarder = self.forwarder.for_peer_link(lambda: not peer.retired)
            return peer

        async def run_peer(peer: InputLink) -> None:
            async def peer_deliver(block: Any) -> None:
                if not peer.retired:
                    await deliver(block)

            def peer_deliver_now(block: Any) -> bool:
                return True if peer.retired else deliver_now(block)

            await peer.run(peer_deliver, on_control, deliver_now=None if deliver_now is None else peer_deliver_now,
                           wait_ready=wait_ready)

        def retire_peer(peer: InputLink) -> None:
            self.tracker.continue_from(peer.tracker)  # back to the relay: carry on where the peer was

        try:
            async with trio.open_nursery() as nursery:
                self.peers = PeerLinks(make_peer, run_peer, retire_peer)
                nursery.start_soon(self.peers.run)
                await self._stay_connected(deliver)
        except BaseExceptionGroup as group:  # one failure: raise it as itself, as a link without peers would
            if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
                raise group.exceptions[0]  # noqa: B904 - the group only wrapped it
            raise

    async def _stay_connected(self, deliver: Callable[[Any], Awaitable[None]]) -> None:
        attempt = 0
        while True:
            sock = await self._connect()
            if sock is None:
                await trio.sleep(self.backoff.delay(attempt, self._rng))
                attempt += 1
                continue
            attempt = 0
            try:
                await self._read_until_closed(sock, deliver)
            finally:
                self._sock = None
                with contextlib.suppress(OSError):
                    trio.lowlevel.notify_closing(sock)
                sock.close()
            log.warning("%s: lost %s; reconnecting", self.subscriber_name, self.spec.node)
            await trio.sleep(self.backoff.delay(0, self._rng))

    async def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            try:
                sock.connect(self.spec.socket)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"connect to {self.spec.socket}: {os.strerror(err)}") from None
        except OSError as exc:
            sock.close()
            if exc.errno in RETRY_CONNECT_ERRNOS:
                return None
            raise
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        self._connects += 1
        self._sock = sock
        pending, self._pending_control = self._pending_control, []
        self._send_control(subscribe_record(self.spec, self.subscriber_name))
        for frame in pending:
            self._sock.sendall(frame)
        log.info("%s: connected to %s", self.subscriber_name, self.spec.node)
        return sock

    async def _read_until_closed(self, sock: socket.socket, deliver: Callable[[Any], Awaitable[None]]) -> None:
        decoder = protocol.FrameDecoder(verify_checksums=self.spec.verify_checksums)
        tracker = self.tracker
        self._decoder = decoder
        linger = self.spec.linger
        # the idle lane is for reading at once; a lingering link reads on its own schedule
        lane = idle_lane() if self._deliver_now is not None and not linger else None
        read_at = -math.inf  # when the last read was made (a lingering link reads again ``linger`` later)
        want = SMALL_READ  # asked of the next recv (see SMALL_READ; less to finish a split frame)
        tail = b""  # known start of the incomplete frame the decoder holds
        drained = False  # the last read came back short: the socket is most likely empty
        unyielded = 0  # bytes handled since this task last let others run
        while True:
            deadline = tracker.next_deadline()
            if deadline is not None and trio.current_time() >= deadline:
                # also when data never stops coming: a resend that is overdue is given up on. But
                # first what the socket holds, which came before now: a node busy past the
                # deadline (a slow handler, a starved CPU) must not count lost an answer that
                # came in time and waits in its socket
                if not await self._read_what_came(sock, deliver):
                    want, tail, drained = SMALL_READ, b"", False
                await self._poll(trio.current_time(), deliver)
                continue
            data = None
            waited = False
            if linger and drained and trio.current_time() < read_at + linger:
                # let messages gather: the next read takes all that came meanwhile in one go
                await trio.sleep_until(read_at + linger if deadline is None else min(read_at + linger, deadline))
                continue  # a resend deadline that came first is handled at the top
            # no cancel scope per read unless a resend deadline is pending (the common case)
            if drained and lane is not None and deadline is None:
                data = await self._idle_in_lane(lane, sock)  # None: handed back with nothing to read
                tail = b""  # the lane's reads were not followed here
                if data is None:
                    drained = False
                    continue
                waited = True
            with _NO_SCOPE if deadline is None else trio.move_on_at(deadline):
                while data is None:
                    if drained:  # skip the recv that would only say EAGAIN: wait first
                        await trio.lowlevel.wait_readable(sock)
                        waited = True
                    try:
                        data = sock.recv(want)
                    except BlockingIOError:
                        drained = True
                    except _PEER_GONE:
                        data = b""
            now = trio.current_time()
            if data is None:  # a resend deadline passed with nothing to read: the top gives it up
                continue
            if not data:
                self._count_decoder(decoder)
                return
            read_at = now
            asked, drained = want, len(data) < want
            for out in self._ingest(data, now):
                await deliver(out)
            if drained and asked >= SMALL_READ:
                want, tail = SMALL_READ, b""  # a short read: whole frames as written, nothing to finish
            else:
                want, tail = _completion(decoder.statistics().buffered, data, tail)
            unyielded = 0 if waited else unyielded + len(data)
            if unyielded >= READ_SIZE:  # data keeps coming: yield once per READ_SIZE handled
                unyielded = 0
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.checkpoint_if_cancelled()

    async def _read_what_came(self, sock: socket.socket, deliver: Callable[[Any], Awaitable[None]]) -> bool:
        """Read and deliver what the socket holds now, without waiting: at most one receive
        buffer's worth (all it held when called), so a stream that never stops cannot hold this
        up. True when the peer has gone (the caller's next read says so again)."""
        budget = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        while budget > 0:
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                return False
            except _PEER_GONE:
                return True
            if not data:
                return True
            budget -= len(data)
            for out in self._ingest(data, trio.current_time()):
                await deliver(out)
        return False

    async def _poll(self, now: float, deliver: Callable[[Any], Awaitable[None]]) -> None:
        if self.chain is not None:
            self.chain.expire(now)
        for block in self._took(self.tracker.poll(now)):
            await deliver(block)

    def _ingest(self, data: bytes, now: float | None = None) -> list[Any]:
        """One read through the decoder and the tracker: the blocks to deliver, in order.
        ``now`` (trio's clock) is read here when not given, and only if a path needs it."""
        self._received_bytes += len(data)
        decoder = self._decoder
        quick = decoder.whole_frames(data)  # a few whole messages (the usual small read): no scan kernel
        if quick is not None:
            n = quick.count
            self._received += n
            run = quick.sequence_run
            if run is not None and self.tracker.feed_run(run[0], run[1], n):
                return [quick]  # the next frames expected: no clock read, no arrays touched
            return self._took(self.tracker.feed(quick, trio.current_time() if now is None else now))
        if now is None:
            now = trio.current_time()
        decoder.receive_data(data)
        ready: list[Any] = []
        while (block := decoder.next_block()) is not protocol.NEED_DATA:
            if count_control(block):  # control frames (sequence 0): rare
                control = block.sequence == 0
                ready.extend(self._handle_control(block.select(control), now, self._on_control))
                block = block.select(~control)
            self._received += len(block)
            run = block.sequence_run
            if run is not None and self.tracker.feed_run(run[0], run[1], block.count):
                ready.append(block)  # the next frames expected: no columns decoded
                continue
            ready.extend(self._took(self.tracker.feed(block, now)))
        return ready

    async def _idle_in_lane(self, lane: IdleLane, sock: socket.socket) -> bytes | None:
        """Let the idle lane read ``sock`` until something needs this task: returns a read to
        handle here (a full buffer: data keeps coming; ``b""``: EOF), or None (a resend deadline
        is pending, or the consumer asked to wait)."""
        handback = _Handback()
        deliver_now, tracker, forwarder, decoder = self._deliver_now, self.tracker, self.forwarder, self._decoder
        assert deliver_now is not None
        fd = sock.fileno()

        def on_readable() -> bool:
            data = None
            if forwarder is not None and decoder.idle and forwarder.allowed():
                subscribers = forwarder.subscribers()
                if subscribers is not None:
                    try:
                        status, n, count = forwarder.read(fd, decoder, tracker, subscribers)
                    except BaseException as exc:
                        return handback.give(error=exc)
                    if status == FORWARDED:
                        self.lane_reads += 1
                        self._received += count
                        self._received_bytes += n
                        ready = forwarder.ready()
                        if ready and tracker.next_deadline() is None:
                            return True
                        handback.must_wait = not ready
                        return handback.give()
                    if status == NOT_FORWARDED:
                        data = forwarder.buffer[:n].tobytes()
                    elif n == 0:
                        data = b""
            if data is None:
                try:
                    data = sock.recv(SMALL_READ)
                except BlockingIOError:
                    return True
                except _PEER_GONE:
                    data = b""
                except BaseException as exc:
                    return handback.give(error=exc)
            if not data or len(data) == SMALL_READ:
                return handback.give(data=data)
            self.lane_reads += 1
            try:
                ready = True
                for out in self._ingest(data):
                    ready = deliver_now(out) and ready
            except BaseException as exc:
                return handback.give(error=exc)
            if ready and tracker.next_deadline() is None:
                return True
            handback.must_wait = not ready
            return handback.give()

        lane.register(fd, on_readable)
        try:
            await handback.event.wait()
        finally:
            lane.unregister(fd)
        if handback.error is not None:
            raise handback.error
        if handback.must_wait and self._wait_ready is not None:
            await self._wait_ready()
        return handback.data

    def _handle_control(self, block: Any, now: float, on_control: Callable[[Any], None] | None) -> list[Any]:
        """Answers from upstream; returns held frames that giving up on a gap released."""
        released: list[Any] = []
        for frame in block.frames():
            self._control += 1
            records = protocol.decode_message(frame).tlvs
            introduced = [record for record in records if isinstance(record, protocol.PeerIntroduction)]
            if introduced and self.peers is not None:
                self._introduced(introduced)
            heads = {record.source: record.sequence for record in records if isinstance(record, protocol.SequenceHead)}
            if heads:  # the upstream's answer to our Subscribe, ahead of any frame
                released.extend(self._took(self.tracker.note_heads(heads, now)))
            for record in records:
                if isinstance(record, protocol.ResendUnavailable):
                    told = [] if self.chain is None else self.chain.unavailable(
                        record.source, record.first_sequence, record.oldest_available)
                    for subscriber in told:  # an answer to a request this link passed on
                        self._tell(subscriber, record)
                    if told:
                        continue
                    self._unavailable += 1
                    result = self.tracker.resend_unavailable(
                        record.source, record.first_sequence, record.oldest_available, now
                    )
                    released.extend(self._took(result))
                elif isinstance(record, protocol.PeerIntroduction | protocol.SequenceHead):
                    pass  # taken above, all of a message's records as one set
                elif on_control is not None:
                    on_control(record)
        return released

    def _introduced(self, records: list[Any]) -> None:
        """A ``peer`` relay's introduction: link to its publishers (one message: the whole set)."""
        if any(max(1, record.publishers) != len(records) for record in records):
            self._count_decode_error("incomplete_introduction")
            log.error("%s: %s introduced %d publishers in a message that says %d; ignored",
                      self.subscriber_name, self.spec.node, len(records), records[0].publishers)
            return
        foreign = foreign_sockets(self.spec, records)
        if foreign:
            self._count_decode_error("foreign_socket")
            log.error("%s: %s introduced sockets outside its own directory (%s); ignored",
                      self.subscriber_name, self.spec.node, ", ".join(foreign))
            return
        specs = peer_specs(self.spec, records)
        if not specs and not self.peers.links:
            return  # a relay that routes the data itself (the usual case): nothing to change
        log.info("%s: %s introduced %s", self.subscriber_name, self.spec.node,
                 ", ".join(spec.node for spec in specs) or "no publisher this link wants")
        self.peers.introduce(specs)

    def _count_decoder(self, decoder: Any) -> None:
        """Fold a finished connection's decode errors into the link's totals."""
        for kind, count in decoder.statistics().errors.items():
            self._count_decode_error(kind, count)

    def _count_decode_error(self, kind: str, count: int = 1) -> None:
        self._decode_errors[kind] = self._decode_errors.get(kind, 0) + count

    def _decode_error_totals(self) -> dict[str, int]:
        totals = dict(self._decode_errors)
        if self._decoder is not None and self._sock is not None:
            for kind, count in self._decoder.statistics().errors.items():
                totals[kind] = totals.get(kind, 0) + count
        return totals

    def statistics(self) -> InputStatistics:
        return InputStatistics(
            upstream=self.spec.node,
            connected=self._sock is not None,
            connects=self._connects,
            reconnects=max(0, self._connects - 1),
            received_messages=self._received,
            received_bytes=self._received_bytes,
            control_messages=self._control,
            decode_errors=self._decode_error_totals(),
            resend_requests=self._resends,
            snapshot_requests=self._snapshots,
            resend_unavailable=self._unavailable,
            lane_reads=self.lane_reads,
            direct_reads=self.forwarder.forwarded_reads if self.forwarder is not None else 0,
            direct_fanout=self.forwarder.fanout if self.forwarder is not None else "",
            sequence=dataclasses.asdict(self.tracker.statistics()),
            chained={} if self.chain is None else dataclasses.asdict(self.chain.statistics()),
            peers=tuple(peer.statistics() for peer in self._peer_links())
            + (tuple(self.peers.retired) if self.peers is not None else ()),
        )
