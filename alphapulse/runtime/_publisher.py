"""The publisher: one listening Unix socket, fan-out of frame blocks to its subscribers.

Every node with an output uses this one implementation (sources, transforms and relays alike),
so fan-out, per-subscriber queues, overflow policy, subscription filters and the retransmit
buffer behave the same everywhere.

Hot path, per block and per subscriber: filter (one kernel call, skipped when the subscriber
wants everything), then ``offer_nowait``: when nothing is queued the bytes go straight to the
socket with a non-blocking ``send`` — no task switch at all; only what the kernel buffer cannot
take is queued, and the subscriber's writer task waits for the socket to drain. The overflow
policy is applied at once, synchronously, when the queue passes its limit:

* ``drop_oldest``: forget the oldest queued blocks (never the one half-written) and count them;
* ``disconnect``: close the subscriber (it reconnects and recovers by sequence);
* ``block``: keep everything; ``Publisher.publish`` then waits until the queue drains, which
  pushes back on whoever feeds the publisher.

A filtered subscriber receives a 32-byte header-only placeholder in place of each frame it did
not ask for: sequences stay contiguous per source, so filtering never looks like loss.

A subscriber talks back on the same socket with system TLVs: Subscribe (filter, policy, queue
limit, its name), ResendRequest (answered here from the retransmit buffer, only to the asker;
a relay passes on upstream what its buffer lacks, ``_chain``) and SnapshotRequest (handed to
the node). Until its Subscribe arrives a subscriber gets nothing.
A relay's publisher answers each Subscribe with its PeerIntroduction records (``_peers``), and
every publisher with one SequenceHead per source it has published (the newest sequence, held or not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import logging
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import trio

from alphapulse import protocol
from alphapulse.runtime._filter import CompiledFilter, subscription
from alphapulse.runtime._retransmit import RetransmitBuffer

log = logging.getLogger("alphapulse.publisher")

SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
"""Kernel send buffer per subscriber: what a subscriber may lag before its queue (and policy) applies."""
_PEER_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
YIELD_AFTER_SEND = os.environ.get("ALPHAPULSE_YIELD_AFTER_SEND", "1") != "0"
"""Hand the CPU to a subscriber a small publish woke (see :meth:`Publisher.publish_nowait`)."""
YIELD_MAX_FRAMES = 16
"""Blocks up to this many frames yield after their send; bulk publishes never do."""
HEADS_PER_MESSAGE = 1024
"""SequenceHead records per control message (12 bytes each: one message stays well under the
largest payload a subscriber's decoder takes)"""


class Overflow(enum.Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DISCONNECT = "disconnect"


OVERFLOW_CODES = {Overflow.BLOCK: 0, Overflow.DROP_OLDEST: 1, Overflow.DISCONNECT: 2}
OVERFLOW_BY_CODE = {code: policy for policy, code in OVERFLOW_CODES.items()}


@dataclasses.dataclass(frozen=True)
class SubscriberStatistics:
    name: str
    overflow: str
    queue_limit: int
    queued_messages: int
    sent_messages: int
    sent_bytes: int
    dropped_overflow: int
    resent_messages: int
    connected: bool


@dataclasses.dataclass(frozen=True)
class PublisherStatistics:
    published_messages: int
    published_bytes: int
    subscribers: tuple[SubscriberStatistics, ...]
    disconnected_for_overflow: int
    retransmit_held: int
    retransmit_bytes_reserved: int
    retransmit_evicted_for_space: int
    """held frames forgotten early because the retransmit store hit its byte limit"""
    resend_requests: int
    resend_misses: int
    resends_passed_upstream: int
    """requests this buffer could not answer that went to the relay's upstream (``runtime._chain``)"""
    control_errors: int
    introductions: int = 0
    """PeerIntroductions sent (a ``peer`` relay answers each Subscribe with one)"""
    heads_sent: int = 0
    """SequenceHead records sent (each Subscribe is answered with the newest sequence per source)"""
    published_blocks: int = 0
    """blocks published: ``published_messages / published_blocks`` is how many frames each
    hop downstream receives per wakeup (a WebSocket source publishes one block per socket read)"""
    retransmit_seconds: float = 0.0
    """how far back a resend reaches now: the age of the oldest message held (by its header
    time; 0 when none is). A relay downstream that is down longer than this loses messages."""


class _Subscriber:
    def __init__(self, publisher: Publisher, sock: socket.socket, peer_id: int) -> None:
        self.publisher = publisher
        self.sock = sock
        self.fileno = sock.fileno()
        self.name = f"subscriber-{peer_id}"
        self.ready = False
        self.closed = False
        self.overflow = Overflow.DROP_OLDEST
        self.limit = 4096
        self.filter: CompiledFilter | None = None
        self.queue: deque[list[Any]] = deque()  # [memoryview, n_messages]
        self.queued = 0
        self.head_partial = False
        self._wake = trio.Event()
        self.sent_messages = self.sent_bytes = self.dropped = self.resent = 0
        self.control_errors_seen = 0

    # -- hot path -----------------------------------------------------------------------
    def offer_nowait(self, block: Any, n_messages: int) -> None:
        if not self.ready or self.closed:
            return
        if self.filter is not None:
            block = self.filtered(block)  # placeholders keep the frame count
        self.send_nowait(block.data, n_messages)

    def filtered(self, block: Any) -> Any:
        """What this subscriber gets of a block: frames it did not ask for become 32-byte
        placeholders, so it still sees every sequence number and its gap detection stays exact."""
        if self.filter is None:
            return block
        if block.count == 1:  # most blocks: decided and built in Python, no kernel call
            return block if self.filter.keeps(*block.first_tlv_of_one()) else block.placeholder_of_one()
        mask = self.filter.mask(block.tlv_type, block.instrument_id)
        return block if mask.all() else block.with_placeholders(mask)

    def send_nowait(self, data: Any, n_messages: int) -> None:
        """``data``: bytes or a byte view (``len()`` is the byte count either way). Nothing, once
        the subscriber is closed (a control answer to a request it sent just before it went)."""
        if self.closed:
            return
        sent = 0
        if not self.queue:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except _PEER_GONE:
                self.close()
                return
            if sent == len(data):  # the common case: no view, no queue
                self.sent_messages += n_messages
                self.sent_bytes += sent
                return
        self.queue_rest(data, sent, n_messages)

    def queue_rest(self, data: Any, sent: int, n_messages: int) -> None:
        """Queue what a send left of ``data`` (it took ``sent`` bytes) for the write loop."""
        if not self.queue:
            self.sent_bytes += sent
            self.head_partial = sent > 0
        self.queue.append([memoryview(data)[sent:], n_messages])
        self.queued += n_messages
        if self.queued > self.limit:
            self._overflow()
        self._wake.set()

    def _overflow(self) -> None:
        if self.overflow is Overflow.DROP_OLDEST:
            keep_head = 1 if self.head_partial else 0
            while self.queued > self.limit and len(self.queue) > keep_head + 1:
                _, n = self.queue[keep_head]
                del self.queue[keep_head]
                self.queued -= n
                self.dropped += n
        elif self.overflow is Overflow.DISCONNECT:
            log.warning("subscriber %s over its queue limit (%d): disconnecting", self.name, self.limit)
            self.publisher._disconnected_for_overflow += 1
            self.dropped += self.queued
            self.close()

    @property
    def full(self) -> bool:
        return self.overflow is Overflow.BLOCK and self.queued > self.limit and not self.closed

    # -- tasks ----------------------------------------------------------------------------
    async def write_loop(self) -> None:
        while not self.closed:
            if not self.queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            try:
                await trio.lowlevel.wait_writable(self.sock)
            except trio.ClosedResourceError:  # closed meanwhile by this side (a failed send, overflow)
                return
            while self.queue:
                entry = self.queue[0]
                view = entry[0]
                try:
                    sent = self.sock.send(view)
                except BlockingIOError:
                    break
                except _PEER_GONE:
                    self.close()
                    return
                self.sent_bytes += sent
                if sent < len(view):
                    entry[0] = view[sent:]
                    self.head_partial = True
                    break
                self.queue.popleft()
                self.head_partial = False
                self.queued -= entry[1]
                self.sent_messages += entry[1]
            if not self.full:
                self.publisher._space_available()

    async def read_loop(self) -> None:
        decoder = protocol.FrameDecoder()
        while not self.closed:
            try:
                await trio.lowlevel.wait_readable(self.sock)
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except trio.ClosedResourceError:
                # closed by this side while waiting: a send found the peer gone (possibly from the
                # idle lane, outside any task) or the overflow policy disconnected it
                return
            except _PEER_GONE:
                data = b""
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    return
                raise
            if not data:
                self.close()
                return
            decoder.receive_data(data)
            while True:
                block = decoder.next_block()
                if block is protocol.NEED_DATA:
                    break
                for frame in block.frames():
                    for record in protocol.decode_message(frame).tlvs:
                        if self.closed:  # an answer found it gone: the rest of its requests go with it
                            return
                        self.publisher._on_control(self, record)
            errors = decoder.statistics().total_errors
            self.publisher._control_errors += errors - self.control_errors_seen
            self.control_errors_seen = errors

    def apply_subscribe(self, record: Any) -> None:
        self.name = record.subscriber or self.name
        self.overflow = OVERFLOW_BY_CODE.get(record.overflow, Overflow.DROP_OLDEST)
        self.limit = max(1, int(record.queue))
        wanted = subscription(record.types, record.instrument_ids)
        self.filter = None if wanted.is_everything else wanted.compile()
        self.ready = True
        self.publisher._subscribed.set()
        log.info("subscriber %s: %s, queue %d, filter %s", self.name, self.overflow.value, self.limit, wanted)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ready = False
        self.queue.clear()
        self.queued = 0
        with contextlib.suppress(OSError):
            trio.lowlevel.notify_closing(self.sock)
        self.sock.close()
        self._wake.set()
        self.publisher._space_available()

    def statistics(self) -> SubscriberStatistics:
        return SubscriberStatistics(
            name=self.name,
            overflow=self.overflow.value,
            queue_limit=self.limit,
            queued_messages=self.queued,
            sent_messages=self.sent_messages,
            sent_bytes=self.sent_bytes,
            dropped_overflow=self.dropped,
            resent_messages=self.resent,
            connected=not self.closed,
        )


ControlHandler = Callable[[Any, "_Subscriber"], None]


class Publisher:
    """Fan-out over one listening Unix socket. Create it with :func:`open_publisher`."""

    def __init__(
        self,
        path: str,
        *,
        source_id: int,
        retransmit_capacity: int,
        on_control: ControlHandler | None = None,
        socket_buffer: int = SOCKET_BUFFER_BYTES,
        introduction: Sequence[Any] = (),
    ) -> None:
        self.path = path
        self.introduction = tuple(introduction)
        """PeerIntroduction records sent to each subscriber once it subscribes (``_peers``)"""
        self._introductions = 0
        self.socket_buffer = socket_buffer
        self.source_id = source_id
        self.retransmit = RetransmitBuffer(retransmit_capacity)
        self.on_control = on_control
        self._subscribers: list[_Subscriber] = []
        self._gone: list[SubscriberStatistics] = []
        self._space = trio.Event()
        self._subscribed = trio.Event()
        self._published_messages = self._published_bytes = self._published_blocks = 0
        self._disconnected_for_overflow = 0
        self._resend_requests = 0
        self._resends_passed_upstream = 0
        self.pass_upstream: Callable[[_Subscriber, Any], bool] | None = None
        """a relay's: pass a resend request its buffer cannot answer upstream (True: done)"""
        self._control_errors = 0
        self._peer_ids = 0
        self._heads_sent = 0
        self.yield_after_send = YIELD_AFTER_SEND

    # -- publishing -------------------------------------------------------------------------
    def publish_nowait(self, block: Any) -> None:
        """Offer a block of complete frames to every subscriber; never waits.

        After a small block's send the publisher yields its CPU (``sched_yield``): a subscriber the
        send woke on this CPU then runs now, instead of waiting until this process has done its
        bookkeeping, gone back through trio and slept (Linux seldom preempts the waker for it: a
        scheduler trace on the reference VM saw it in 132 of 985 ten-message sends, as the
        ``sendto`` returned). With nothing else runnable the call returns at once. Measured on the
        reference VM in ``benchmarks/relay.py``'s layouts (four interleaved pairs), one sink: ten
        one-message sends a millisecond (``tick``) p50 72-86 → 44-47 µs, one 10-message send a
        millisecond 87-132 → 70-98 µs; four sinks at ``tick``: relay and sinks 0.20-0.32 → 0.33-0.42
        cores (each send is now read on its own rather than with the next ones).
        ``ALPHAPULSE_YIELD_AFTER_SEND=0`` turns it off."""
        n = block.count
        if not n:
            return
        for sub in self._subscribers:  # first: bookkeeping never delays a frame on its way
            sub.offer_nowait(block, n)
        self.record_published(block, n)
        if n <= YIELD_MAX_FRAMES and self._subscribers and self.yield_after_send:
            os.sched_yield()

    @property
    def published_messages(self) -> int:
        """Messages published so far (the one counter the host's rate sampler needs, without
        building the whole :meth:`statistics`)."""
        return self._published_messages

    def record_published(self, block: Any, n: int) -> None:
        """What publishing ``block`` (``n`` frames) leaves behind once sent: the retransmit
        copy and the counters (also called by a relay's direct path, which sent it itself)."""
        self.retransmit.append(block, n)
        self._published_messages += n
        self._published_blocks += 1
        self._published_bytes += len(block.data)

    async def publish(self, block: Any) -> None:
        """Publish, then wait while a ``block``-policy subscriber is over its limit."""
        self.publish_nowait(block)
        await self.wait_for_space()

    def must_wait(self) -> bool:
        """True while a ``block``-policy subscriber is over its limit (publishers must wait)."""
        for sub in self._subscribers:  # noqa: SIM110 - a plain loop, no generator per block
            if sub.queued > sub.limit and sub.full:
                return True
        return False

    async def wait_for_space(self) -> None:
        """Wait while a ``block``-policy subscriber is over its limit; always a checkpoint, so a
        producer publishing in a loop lets subscriber writers run (trio's rule for async calls)."""
        if not any(sub.full for sub in self._subscribers):
            await trio.lowlevel.checkpoint()
            return
        while any(sub.full for sub in self._subscribers):
            self._space = trio.Event()
            await self._space.wait()

    async def wait_for_subscribers(self, count: int) -> None:
        """Wait until ``count`` subscribers have said what they want (replays wait for their audience)."""
        while sum(sub.ready for sub in self._subscribers) < count:
            self._subscribed = trio.Event()
            await self._subscribed.wait()

    def send_control(self, subscriber: _Subscriber, records: Sequence[Any], now_ns: int) -> None:
        """Send one unsequenced control message (of one or more records) to one subscriber only."""
        payload = b"".join(protocol.encode(record) for record in records)
        frame = protocol.encode_message(protocol.RelayDomain.SYSTEM, self.source_id, 0, now_ns, payload)
        subscriber.send_nowait(frame, 1)

    def _space_available(self) -> None:
        self._space.set()

    # -- requests from subscribers --------------------------------------------------------------
    def _on_control(self, sub: _Subscriber, record: Any) -> None:
        if isinstance(record, protocol.Subscribe):
            sub.apply_subscribe(record)
            if self.introduction:
                self._introductions += 1
                self.send_control(sub, self.introduction, time.time_ns())
            self._send_heads(sub)
        elif isinstance(record, protocol.ResendRequest):
            self._answer_resend(sub, record)
        elif self.on_control is not None:
            self.on_control(record, sub)

    def _send_heads(self, sub: _Subscriber) -> None:
        """Tell a new subscriber the newest sequence published of each source (``SequenceHead``), before
        any frame: what it gets from here on comes after these, so one that resumes or reconnects
        sees at once what it missed, and asks for it, even of a source that has gone quiet."""
        heads = self.retransmit.heads()
        if not heads:
            return
        records = [protocol.SequenceHead(source=s, sequence=q) for s, q in sorted(heads.items())]
        for at in range(0, len(records), HEADS_PER_MESSAGE):
            self.send_control(sub, records[at:at + HEADS_PER_MESSAGE], time.time_ns())
        self._heads_sent += len(records)

    def _answer_resend(self, sub: _Subscriber, request: Any) -> None:
        self._resend_requests += 1
        answer = self.retransmit.lookup(request.source, request.first_sequence, request.last_sequence)
        if not answer.complete:
            if self.pass_upstream is not None and self.pass_upstream(sub, request):
                self._resends_passed_upstream += 1  # the whole range comes from upstream, in order
                return
            unavailable = protocol.ResendUnavailable(
                source=request.source,
                first_sequence=request.first_sequence,
                last_sequence=request.last_sequence,
                oldest_available=answer.oldest_available,
            )
            self.send_control(sub, [unavailable], time.time_ns())
        for block in answer.blocks:
            self.resend_to(sub, block)

    def resend_to(self, sub: _Subscriber, block: Any) -> None:
        """Send resent frames to one subscriber only (through its filter)."""
        if sub.closed:
            return
        sub.resent += len(block)
        block = sub.filtered(block)
        sub.send_nowait(block.data, len(block))

    def tell(self, sub: _Subscriber, record: Any) -> None:
        """Send one control record to one subscriber only."""
        if not sub.closed:
            self.send_control(sub, [record], time.time_ns())

    # -- serving ----------------------------------------------------------------------------------
    async def _serve(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept on %s failed (%s); retrying", self.path, exc)
                    await trio.sleep(0.1)
                    continue
                raise
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_buffer)
            self._peer_ids += 1
            sub = _Subscriber(self, conn, self._peer_ids)
            self._subscribers.append(sub)
            nursery.start_soon(self._run_subscriber, sub)

    async def _run_subscriber(self, sub: _Subscriber) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sub.write_loop)
                await sub.read_loop()
                nursery.cancel_scope.cancel()
        finally:
            sub.close()
            self._subscribers.remove(sub)
            self._gone.append(sub.statistics())
            del self._gone[:-32]

    def statistics(self) -> PublisherStatistics:
        return PublisherStatistics(
            published_messages=self._published_messages,
            published_blocks=self._published_blocks,
            published_bytes=self._published_bytes,
            subscribers=tuple(s.statistics() for s in self._subscribers) + tuple(self._gone),
            disconnected_for_overflow=self._disconnected_for_overflow,
            retransmit_held=len(self.retransmit),
            retransmit_bytes_reserved=self.retransmit.bytes_reserved,
            retransmit_evicted_for_space=self.retransmit.evicted_for_space,
            retransmit_seconds=_age_seconds(self.retransmit.oldest_timestamp_ns()),
            resend_requests=self._resend_requests,
            resend_misses=self.retransmit.misses,
            resends_passed_upstream=self._resends_passed_upstream,
            control_errors=self._control_errors,
            introductions=self._introductions,
            heads_sent=self._heads_sent,
        )


def _age_seconds(unix_ns: int | None) -> float:
    return 0.0 if unix_ns is None else max(0.0, (time.time_ns() - unix_ns) / 1e9)


def bind_unix_listener(path: str) -> socket.socket:
    """Bind a listening Unix socket at ``path``, replacing a stale socket file."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(64)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


@contextlib.asynccontextmanager
async def open_publisher(
    path: str,
    *,
    source_id: int,
    retransmit_capacity: int = 65536,
    on_control: ControlHandler | None = None,
    socket_buffer: int = SOCKET_BUFFER_BYTES,
    introduction: Sequence[Any] = (),
) -> AsyncIterator[Publisher]:
    """Bind ``path`` and serve subscribers until the block exits.

    The socket is bound before this yields, so the node is "ready" (connectable) from then on.
    """
    publisher = Publisher(
        path, source_id=source_id, retransmit_capacity=retransmit_capacity, on_control=on_control,
        socket_buffer=socket_buffer, introduction=introduction,
    )
    listener = bind_unix_listener(path)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher._serve, listener, nursery)
            yield publisher
            nursery.cancel_scope.cancel()
    finally:
        for sub in list(publisher._subscribers):
            sub.close()
        with contextlib.suppress(OSError):
            trio.lowlevel.notify_closing(listener)
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
