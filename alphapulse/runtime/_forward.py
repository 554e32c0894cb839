"""The direct path of a relay: one native call receives a lane read, checks it and sends it on.

A relay woken once per message spent about 20 µs of cold Python between its socket becoming
readable and its first ``send`` (measured inside the relay: 11 µs to the end of ``recv``,
13 µs decoding and tracking, 3 µs delivering), and a dumb relay made 17 µs slower by a busy
loop measured the same end-to-end latency as ours. Everything those checks need is bytes and
arrays: the frames, the sequence tracker's per-source state. So :func:`forward_read` (numba,
no Python objects) does, in one call:

1. ``recv`` the socket (libc, non-blocking) into a buffer the forwarder owns;
2. check what the decoder's quick path and the tracker's run path check: whole frames back to
   back, magic, version, a data sequence (not 0), payload limit, CRC, one source, sequences
   that run on from what the tracker expects of it (seen before, same epoch, no gap open),
   every frame of the relay's domain. Any number of frames: a relay that fell behind (a
   backlog of 30 frames a read at 30k msgs/s) catches up on this path too, at 0.12-0.14
   cores against 0.19-0.23 when reads over 16 frames went the ordinary way;
3. ``send`` the bytes to every subscriber that takes frames as they are (libc, non-blocking).

Python then does the bookkeeping the ordinary path would have done (counters, the retransmit
ring, a subscriber's partial send or error) after the frames are on their way. In the usual case
(every subscriber took the whole read, frames of one size) that makes no numpy call and no copy
of its own: the retransmit ring copies the frames straight out of the read buffer. The time from
the sends to the lane's next ``poll`` went from 23-26 to 17.5-19.6 µs a read (p50, cold, one
subscriber at 10k msgs/s). A subscriber with ``cpu: {policy: batch}`` waits that long when it
shares the relay's core. A read that fails
any check was not sent anywhere: it goes down the ordinary path as the bytes it is, which decodes,
counts and recovers exactly as before. The forwarder is only used when every subscriber takes
frames as they are (no filter, nothing queued) and the handler's breaker is closed.
``ALPHAPULSE_DIRECT_FORWARD=0`` turns it off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from alphapulse.protocol import HEADER_SIZE, FrameBlock
from alphapulse.protocol._batch import few_frames, read_only
from alphapulse.protocol._decoder import _bounds, uniform_bounds
from alphapulse.protocol._header import SOURCE_AND_SEQUENCE
from alphapulse.runtime._epoch import COUNTER_BITS, COUNTER_MASK
from alphapulse.runtime._uring import send_all, shared_send_ring

# libc's recv, bound by symbol name (so the compiled kernel caches); the buffer argument is
# passed as the address it is at the ABI level
_recv = numba.types.ExternalFunction("recv", numba.types.intp(numba.types.intc, numba.types.uintp,
                                                               numba.types.uintp, numba.types.intc))
_MSG_DONTWAIT = 0x40

READ_FAILED, NOT_FORWARDED, FORWARDED = -1, 0, 1
"""``forward_read`` statuses: recv returned an error (Python reads again to learn which), the
bytes read are for the ordinary path, the bytes were checked and sent."""


@numba.njit(cache=True, nogil=True)
def check_run(buf, n, domain, max_payload, verify, epochs, expected, flags, sizes):  # pragma: no cover - jit
    """Frames in ``buf[:n]`` (sizes into ``sizes``) when they pass every check of the module
    docstring; the tracker's expectation for their source is advanced. Returns the frame count,
    0 when anything does not pass (nothing advanced)."""
    # read-only, as the decoder's quick path passes its bytes: one few_frames for both (see read_only)
    count, source, first, consecutive, frame_domain = few_frames(read_only(buf), n, max_payload, verify, sizes)
    if count == 0 or not consecutive or frame_domain != domain:
        return 0
    epoch = np.uint32(first >> np.uint64(COUNTER_BITS))
    counter = first & np.uint64(COUNTER_MASK)
    if flags[source] != 1 or epochs[source] != epoch or expected[source] != counter:
        return 0
    expected[source] = counter + np.uint64(count)
    return count


@numba.njit(cache=True, nogil=True)
def forward_read(fd, buf, domain, max_payload, verify, epochs, expected, flags, sizes,  # pragma: no cover - jit
                 out_fds, sent, ring_fd, ring, sqes, layout):
    """recv ``fd`` into ``buf``; when the read passes :func:`check_run`, send it to every fd of
    ``out_fds`` (bytes each took into ``sent``, -1 on an error), all in one system call through
    the io_uring ``ring_fd`` when there is one (see ``_uring``). Returns (status, bytes read,
    frames, every send took it all, the frames' one size or 0 when sizes differ):
    ``READ_FAILED`` with the recv result when it was not positive."""
    n = _recv(fd, buf.ctypes.data, buf.shape[0], _MSG_DONTWAIT)
    if n <= 0:
        return READ_FAILED, n, 0, False, 0
    if n == buf.shape[0]:
        return NOT_FORWARDED, n, 0, False, 0  # a full buffer: data keeps coming, the ordinary path drains it
    count = check_run(buf, n, domain, max_payload, verify, epochs, expected, flags, sizes)
    if count == 0:
        return NOT_FORWARDED, n, 0, False, 0
    send_all(ring_fd, ring, sqes, layout, buf.ctypes.data, n, out_fds, sent)
    all_sent = True
    for i in range(out_fds.shape[0]):
        all_sent = all_sent and sent[i] == n
    size = sizes[0]
    for i in range(1, count):
        if sizes[i] != size:
            size = 0
            break
    return FORWARDED, n, count, all_sent, size


def enabled() -> bool:
    return os.environ.get("ALPHAPULSE_DIRECT_FORWARD", "1") != "0"


class DirectForwarder:
    """One relay input link's direct path (see the module docstring)."""

    def __init__(self, publisher: Any, relay_domain: int, *, read_size: int,
                 on_forwarded: Callable[[int], None], allowed: Callable[[], bool]) -> None:
        self.publisher = publisher
        self.relay_domain = int(relay_domain)
        self.buffer = np.empty(read_size, np.uint8)
        self._view = memoryview(self.buffer)
        self._sizes = np.empty(read_size // HEADER_SIZE, np.int64)  # as many frames as a read can hold
        self._sent = np.zeros(64, np.int64)
        self._fds_of: tuple[Any, ...] = ()
        self._fds = np.empty(0, np.int32)
        self._ring = shared_send_ring()
        self._on_forwarded = on_forwarded
        self.allowed = allowed
        """False while the node's own handler must see every block (its breaker is not closed)."""
        self.forwarded_reads = 0

    @property
    def fanout(self) -> str:
        """``io_uring`` when reads go to several subscribers in one system call, else ``send``."""
        return "io_uring" if self._ring.fd >= 0 else "send"

    def for_peer_link(self, delivering: Callable[[], bool]) -> DirectForwarder:
        """The same direct path for a peer link this link opened (the relay upstream introduced
        its publishers): its own buffer, the node's publisher and breaker, and used only while
        ``delivering()`` (a retired peer link forwards nothing, as it delivers nothing)."""
        allowed = self.allowed
        return DirectForwarder(self.publisher, self.relay_domain, read_size=self.buffer.shape[0],
                               on_forwarded=self._on_forwarded, allowed=lambda: delivering() and allowed())

    def subscribers(self) -> tuple[Any, ...] | None:
        """The subscribers a read goes to, when every one takes frames as they are; else None."""
        out = []
        for sub in self.publisher._subscribers:
            if not sub.ready or sub.closed:
                continue  # gets nothing on any path
            if sub.filter is not None or sub.queue:
                return None
            out.append(sub)
        return tuple(out) if len(out) <= len(self._sent) else None

    def read(self, fd: int, decoder: Any, tracker: Any, subscribers: tuple[Any, ...]) -> tuple[int, int, int]:
        """One read: (status, bytes read, frames). FORWARDED: done, the publisher's, tracker's and
        decoder's bookkeeping included. NOT_FORWARDED: ``self.buffer[:n]`` holds the bytes for the
        ordinary path. READ_FAILED: ``n`` is recv's result (0: EOF; -1: read again to see why)."""
        epochs, expected, flags = tracker.run_state()
        ring = self._ring
        if subscribers != self._fds_of:  # subscribers compare by identity
            self._fds_of = subscribers
            self._fds = np.array([sub.fileno for sub in subscribers], np.int32)
        status, n, count, all_sent, size = forward_read(
            fd, self.buffer, self.relay_domain, decoder.max_payload_size, decoder.verify_checksums, epochs,
            expected, flags, self._sizes, self._fds, self._sent, ring.fd, ring.ring, ring.sqes, ring.layout)
        if status != FORWARDED:
            return status, n, 0
        self.forwarded_reads += 1
        # the usual read (every subscriber took it all, frames of one size) makes no numpy call and
        # no copy here: the retransmit ring copies the frames straight out of the read buffer
        bounds = uniform_bounds(count, size) if size else _bounds(self._sizes[:count].tolist())
        if all_sent:
            for sub in subscribers:
                sub.sent_messages += count
                sub.sent_bytes += n
        else:
            data = self.buffer[:n].tobytes()  # owned: a queued rest outlives the read buffer
            for sub, sent in zip(subscribers, self._sent[: len(subscribers)].tolist(), strict=True):
                if sent == n:
                    sub.sent_messages += count
                    sub.sent_bytes += n
                elif sent < 0:
                    sub.send_nowait(data, count)  # again from Python: it learns which error it was
                else:
                    sub.queue_rest(data, sent, count)
        tracker.count_delivered(count)
        decoder.count_parsed(count, n)
        block = FrameBlock(self._view[:n], *bounds)
        block.sequence_run = SOURCE_AND_SEQUENCE.unpack_from(self.buffer)  # check_run passed: one source, in order
        self.publisher.record_published(block, count)  # copied into the ring
        self._on_forwarded(count)
        return status, n, count

    def ready(self) -> bool:
        """False while a ``block`` subscriber is over its limit (the link must wait)."""
        return not self.publisher.must_wait()
