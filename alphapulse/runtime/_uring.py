"""One buffer to many sockets in one system call: an io_uring for a relay's fan-out.

A relay that ``send``s a read to four subscribers one call at a time wakes the first subscriber
and returns to user space, where the kernel (on this project's reference VM: no in-kernel
preemption, so at every return from a system call) may switch to the subscriber it just woke,
before the other three have their bytes (the relay is preempted ~0.1 times a message at 10k
msgs/s in 1 ms ticks). Queued on an io_uring, the sends run one after another inside a single
``io_uring_enter`` (non-blocking sends complete there, an ``EAGAIN`` comes back as a result
instead of being retried later), so the relay returns to user space once per fan-out, with every
subscriber's bytes sent. With four subscribers at 10k msgs/s, rounds alternating between the two
in one process set: p50 16-27 µs lower (median differences at each pacing, 35 of 48 pairs
lower), the same CPU, and as many preemptions of the relay as before (they now come after the
last send).

:class:`SendRing` sets a ring up with ``ctypes`` and ``mmap`` (no liburing needed);
:func:`send_all` (numba) fills its submission queue and reads its completions, so a kernel such
as the relay's direct path (``_forward``) calls it without a Python object. Where io_uring is
not available (an old kernel, ``kernel.io_uring_disabled``, a container's seccomp profile) or
``ALPHAPULSE_URING=0`` is set, :func:`shared_send_ring` says so once and :func:`send_all` sends
one call at a time, as before.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os

import numba
import numpy as np

log = logging.getLogger("alphapulse.uring")

_SYS_IO_URING_SETUP, _SYS_IO_URING_ENTER = 425, 426  # x86-64 and aarch64 alike
_IORING_OFF_SQES = 0x10000000
_IORING_SETUP_SUBMIT_ALL = 1 << 7  # keep submitting the rest when one entry fails
_IORING_SETUP_SINGLE_ISSUER = 1 << 12
_IORING_ENTER_GETEVENTS = 1
_IORING_OP_SEND = 26
_MSG_DONTWAIT, _MSG_NOSIGNAL = 0x40, 0x4000

RING_MAX_BYTES = 8192
"""Larger reads (a relay catching up on bulk flow) are sent one call at a time: there the order
in which subscribers wake matters less than throughput, and the ring's own cost per send showed
(bulk, N=4: per-subscriber msgs/s 4.0M through the ring against 4.4M plain, medians of 12 rounds)."""

# ``layout`` slots: where each ring field is, in 32-bit words from the start of the ring mapping
SQ_HEAD, SQ_TAIL, SQ_MASK, SQ_ARRAY, CQ_HEAD, CQ_TAIL, CQ_MASK, CQES = range(8)

_send = numba.types.ExternalFunction("send", numba.types.intp(numba.types.intc, numba.types.uintp,
                                                               numba.types.uintp, numba.types.intc))
_syscall = numba.types.ExternalFunction("syscall", numba.types.intp(
    numba.types.intp, numba.types.intp, numba.types.intp, numba.types.intp, numba.types.intp, numba.types.intp,
    numba.types.intp))


class _Params(ctypes.Structure):
    """``struct io_uring_params`` (120 bytes): what setup fills in about the rings' layout."""

    _fields_ = [
        ("sq_entries", ctypes.c_uint32), ("cq_entries", ctypes.c_uint32), ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32), ("sq_thread_idle", ctypes.c_uint32), ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32), ("resv", ctypes.c_uint32 * 3),
        # io_sqring_offsets: head, tail, ring_mask, ring_entries, flags, dropped, array, resv1; user_addr
        ("sq_off", ctypes.c_uint32 * 8), ("sq_user_addr", ctypes.c_uint64),
        # io_cqring_offsets: head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1; user_addr
        ("cq_off", ctypes.c_uint32 * 8), ("cq_user_addr", ctypes.c_uint64),
    ]


class SendRing:
    """An io_uring with room for ``entries`` sends at once, mapped for :func:`send_all`."""

    def __init__(self, entries: int = 64) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        flags = _IORING_SETUP_SUBMIT_ALL | _IORING_SETUP_SINGLE_ISSUER
        fd = -1
        for attempt in (flags, 0):  # SUBMIT_ALL is 5.18+, SINGLE_ISSUER 6.0+: plain setup before that
            params = _Params(flags=attempt)
            fd = libc.syscall(_SYS_IO_URING_SETUP, entries, ctypes.byref(params))
            if fd >= 0:
                break
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_uring_setup: {os.strerror(err)}")
        self.fd = fd
        try:
            sq, cq = list(params.sq_off), list(params.cq_off)
            ring_bytes = max(sq[6] + params.sq_entries * 4, cq[5] + params.cq_entries * 16)
            # IORING_FEAT_SINGLE_MMAP (5.4+): both rings share one mapping at offset 0; older
            # kernels have a second one, and this module does not use them
            if not params.features & 1:
                raise OSError(0, "io_uring without IORING_FEAT_SINGLE_MMAP")
            self._ring_map = mmap.mmap(fd, ring_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._sqe_map = mmap.mmap(fd, params.sq_entries * 64, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                                      offset=_IORING_OFF_SQES)
        except BaseException:
            os.close(fd)
            raise
        self.ring = np.frombuffer(self._ring_map, np.uint32)
        self.sqes = np.frombuffer(self._sqe_map, np.uint64)
        self.layout = np.array([sq[0] // 4, sq[1] // 4, sq[2] // 4, sq[6] // 4,
                                cq[0] // 4, cq[1] // 4, cq[2] // 4, cq[5] // 4], np.int64)
        self.entries = int(params.sq_entries)

    def close(self) -> None:
        """Close the ring's descriptor; the mappings go when the last array viewing them does
        (a ring with ``fd`` -1 makes :func:`send_all` send the plain way)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class NoRing:
    """What :func:`send_all` takes where there is no ring: it sends one call at a time."""

    fd = -1
    entries = 0
    ring = np.zeros(1, np.uint32)
    sqes = np.zeros(8, np.uint64)
    layout = np.zeros(8, np.int64)


_SHARED: SendRing | NoRing | None = None


def enabled() -> bool:
    return os.environ.get("ALPHAPULSE_URING", "1") != "0"


def shared_send_ring() -> SendRing | NoRing:
    """This process's ring (opened on first use; every fan-out of a node runs on its one trio
    thread, so one ring serves them all), or :class:`NoRing` where io_uring is off or missing."""
    global _SHARED
    if _SHARED is None:
        if not enabled():
            _SHARED = NoRing()
        else:
            try:
                _SHARED = SendRing()
            except OSError as exc:
                log.info("io_uring is not available here (%s): fan-out sends one call at a time", exc)
                _SHARED = NoRing()
    return _SHARED


@numba.njit(cache=True, nogil=True)
def send_all(ring_fd, ring, sqes, layout, addr, n, out_fds, sent):  # pragma: no cover - jit
    """Send ``n`` bytes at address ``addr`` to every fd of ``out_fds``, non-blocking; what each
    took into ``sent`` (-1 on an error: the caller sends again to learn which). With a ring
    (``ring_fd >= 0``), more than one fd and at most ``RING_MAX_BYTES``, all in one
    ``io_uring_enter``."""
    k = out_fds.shape[0]
    flags = _MSG_DONTWAIT | _MSG_NOSIGNAL
    if ring_fd < 0 or k < 2 or n > RING_MAX_BYTES or k > np.int64(ring[layout[SQ_MASK]]) + 1:
        for i in range(k):
            sent[i] = _send(out_fds[i], addr, n, flags)
        return
    tail = ring[layout[SQ_TAIL]]
    mask = ring[layout[SQ_MASK]]
    for i in range(k):
        index = (tail + np.uint32(i)) & mask
        base = np.int64(index) * 8
        sqes[base] = np.uint64(_IORING_OP_SEND) | (np.uint64(np.uint32(out_fds[i])) << np.uint64(32))
        sqes[base + 1] = 0
        sqes[base + 2] = np.uint64(addr)
        sqes[base + 3] = np.uint64(n) | (np.uint64(flags) << np.uint64(32))
        sqes[base + 4] = np.uint64(i)
        sqes[base + 5] = 0
        sqes[base + 6] = 0
        sqes[base + 7] = 0
        ring[layout[SQ_ARRAY] + np.int64(index)] = index
        sent[i] = -1
    ring[layout[SQ_TAIL]] = tail + np.uint32(k)
    submitted = _syscall(_SYS_IO_URING_ENTER, ring_fd, k, k, _IORING_ENTER_GETEVENTS, 0, 0)
    taken = k if submitted >= k else max(submitted, 0)
    if taken < k:
        # what the kernel did not take stays unsent: take it back, and send it the plain way
        ring[layout[SQ_TAIL]] = ring[layout[SQ_HEAD]]
    done = 0
    while True:
        head = ring[layout[CQ_HEAD]]
        cq_tail = ring[layout[CQ_TAIL]]
        cq_mask = ring[layout[CQ_MASK]]
        while head != cq_tail:
            at = layout[CQES] + np.int64(head & cq_mask) * 4  # a CQE: user_data (u64), res (s32), flags
            i = np.int64(ring[at])
            res = np.int32(ring[at + 2])
            if 0 <= i < k:
                sent[i] = res if res >= 0 else -1
                done += 1
            head += np.uint32(1)
        ring[layout[CQ_HEAD]] = head
        if done >= taken:
            break
        # a send the kernel took but has not completed (not expected of a non-blocking send)
        if _syscall(_SYS_IO_URING_ENTER, ring_fd, 0, taken - done, _IORING_ENTER_GETEVENTS, 0, 0) < 0:
            break
    for i in range(taken, k):
        sent[i] = _send(out_fds[i], addr, n, flags)
