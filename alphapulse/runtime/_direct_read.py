"""The direct read of a consuming link: one native call receives a lane read and checks it.

A sink or transform woken once per read by the idle lane (``_fastlane``) spends most of that
wakeup in cold Python, not in the system calls: on the project's 2-core VM, a read of 10
messages a millisecond costs blocking Python 17-20 µs of CPU and the input link 55-60 µs. Timed
inside the lane callback, ``sock.recv`` plus the decoder's quick path and the tracker's run path
took 43-55 µs (p50) a read; run a second time right after, the same decoder code took 11 µs.
The relay's direct path (``_forward``) showed what helps: fewer Python steps, one native call.

So :func:`read_run` (numba, no Python objects) does, in one call, what a consuming link's usual
small read does in several: ``recv`` the socket (non-blocking) into a buffer the reader owns;
check what the decoder's quick path checks (whole frames back to back, magic, version, a data
sequence, payload limit, CRC when the link verifies); and the tracker's run path (one source,
sequences that run on from what the tracker expects of it). Python then copies the bytes out
(the consumer may keep the block) and builds the same block the quick path builds. A read that
fails any check goes down the ordinary path as the bytes it is, which decodes, counts and
recovers exactly as before. ``ALPHAPULSE_DIRECT_READ=0`` turns it off.

It pays for reads of several frames only. Measured with the relay benchmark's probe (a forked
sender, an ``InputLink`` reading, CPU per read, this path on and off alternately): 10 frames a
millisecond 56-59 µs against 72-75; one frame every 100 µs 35-42 against 31-32, where the
decoder's one-frame path (``struct`` and ``zlib``, no numpy, no numba) is cheaper still. So the
link takes this way after a read of several frames and the ordinary one after a read of one.
"""

from __future__ import annotations

import os

import numba
import numpy as np

from alphapulse.protocol import HEADER_SIZE, FrameBlock
from alphapulse.protocol._batch import few_frames
from alphapulse.protocol._decoder import _bounds, uniform_bounds
from alphapulse.runtime._forward import _MSG_DONTWAIT, FORWARDED, NOT_FORWARDED, READ_FAILED, _recv, advance_run

TAKEN, NOT_TAKEN = FORWARDED, NOT_FORWARDED
"""``read_run`` statuses besides ``READ_FAILED``: the read passed every check (the tracker took
it), or its bytes are for the ordinary path."""

__all__ = ["NOT_TAKEN", "READ_FAILED", "TAKEN", "DirectReader", "enabled", "read_run"]


@numba.njit(cache=True, nogil=True)
def read_run(fd, buf, max_payload, verify, epochs, expected, flags, sizes):  # pragma: no cover - jit
    """recv ``fd`` into ``buf``; returns (status, bytes read, frames, their one size or 0 when
    sizes differ, their one relay domain or -1 when mixed). ``TAKEN`` when the read passed every
    check of the module docstring (the tracker's expectation for its source has moved past it);
    ``NOT_TAKEN``: ``buf[:n]`` is for the ordinary path; ``READ_FAILED`` with recv's result when
    it was not positive."""
    n = _recv(fd, buf.ctypes.data, buf.shape[0], _MSG_DONTWAIT)
    if n <= 0:
        return READ_FAILED, n, 0, 0, -1
    if n == buf.shape[0]:
        return NOT_TAKEN, n, 0, 0, -1  # a full buffer: data keeps coming, the ordinary path drains it
    count, source, first, consecutive, domain = few_frames(buf, n, max_payload, verify, sizes)
    if count == 0 or not consecutive or not advance_run(epochs, expected, flags, source, first, count):
        return NOT_TAKEN, n, 0, 0, -1
    size = sizes[0]
    for i in range(1, count):
        if sizes[i] != size:
            size = 0
            break
    return TAKEN, n, count, size, domain


def enabled() -> bool:
    return os.environ.get("ALPHAPULSE_DIRECT_READ", "1") != "0"


class DirectReader:
    """One consuming link's direct read (see the module docstring)."""

    def __init__(self, read_size: int) -> None:
        self.buffer = np.empty(read_size, np.uint8)
        self._sizes = np.empty(read_size // HEADER_SIZE, np.int64)  # as many frames as a read can hold
        self.direct_reads = 0
        self.wanted = True
        """Whether the next read should come this way: after a read of one frame, no (see the
        module docstring); after a read of several, yes. The link keeps it up to date."""

    def read(self, fd: int, decoder: object, tracker: object) -> tuple[int, int, FrameBlock | None]:
        """One read: (status, bytes read, block). ``TAKEN``: the block of the frames read, the
        tracker's and decoder's bookkeeping done, as the quick path leaves them. ``NOT_TAKEN``:
        ``self.buffer[:n]`` holds the bytes for the ordinary path. ``READ_FAILED``: ``n`` is
        recv's result (0: EOF; -1: read again to see why)."""
        epochs, expected, flags = tracker.run_state()
        status, n, count, size, domain = read_run(fd, self.buffer, decoder.max_payload_size,
                                                  decoder.verify_checksums, epochs, expected, flags, self._sizes)
        if status != TAKEN:
            return status, n, None
        self.direct_reads += 1
        tracker.count_delivered(count)
        decoder.count_parsed(count, n)
        bounds = uniform_bounds(count, size) if size else _bounds(self._sizes[:count].tolist())
        block = FrameBlock(self.buffer[:n].tobytes(), *bounds)  # owned: the consumer may keep it
        block.control_frames = 0  # no ``sequence_run``: the tracker has taken these frames already
        if domain >= 0:
            block.relay_domain_all = domain
        return status, n, block
