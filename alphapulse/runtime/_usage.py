"""What a node process costs the machine: CPU time, wakeups and resident memory, for ``stats``.

supervisord knows a process's pid and state, not what it uses; ``ps`` knows, but not which
node a pid is. Each node samples itself with the rate sampler, so ``alphapulse status`` can show
CPU and memory beside the message rates they pay for (Vector's ``top`` shows the same pairing).

Wakeups are the process's voluntary context switches (each time it blocked and was woken
again). On a small VM most of a node's CPU follows how often it wakes, not what one read costs
(``benchmarks/relay.py`` prints the same as ``runs/ms``): a node taking 10,000 wakeups a second
for 10,000 messages is woken per message, and a link's ``linger_ms`` or a source publishing a
block per flush is what lowers it.

The C allocator's heap (glibc ``mallinfo2``) is sampled once a minute: bytes in use, and bytes
free inside its arenas, kept by the allocator rather than returned to the system. A node whose
memory creeps up with ``heap_in_use_bytes`` holds more and more; one whose ``heap_free_bytes``
grows instead is fragmented. ``mallinfo2`` walks the arenas' free lists (~1 ms with 10,000 free
chunks), hence once a minute. Python objects (pymalloc) and Arrow's pool live outside it.

When the free bytes have grown by :data:`TRIM_STEP_BYTES` since its last trim (or its first look), the sampler hands
the free pages back to the system (glibc ``malloc_trim``: every arena, pages inside free chunks
too, ~0.1 ms). A long run needs it: the recorder's checkpoint scan and the Parquet writer's
compaction run in worker threads, whose arenas glibc keeps apart from the main heap, and each
kept ~4 MB (the recorder, every other rotation) or ~14 MB (the Parquet writer, at its hourly
compaction) of freed memory resident. The chunks stay free in the allocator's books
(``heap_free_bytes`` does not fall); resident memory does. ``heap_trims`` counts the trims that
gave pages back. ``ALPHAPULSE_HEAP_TRIM=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import resource
import time
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def memory() -> tuple[int, int]:
    """(resident, private) bytes of this process now. Private is resident less file-backed
    pages (the shared libraries every node maps: numpy, llvmlite), so it adds up across nodes
    where resident does not. From Linux ``/proc/self/statm``; elsewhere both are the peak
    resident set, which is what ``getrusage`` offers. Cheap: no page-table walk (``smaps``
    would stall the event loop for milliseconds)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            fields = statm.read().split()
        resident, shared = int(fields[1]) * _PAGE, int(fields[2]) * _PAGE
        return resident, max(0, resident - shared)
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak if os.uname().sysname == "Darwin" else peak * 1024
        return peak, peak


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> Any:
    try:
        function = ctypes.CDLL(None).mallinfo2  # glibc 2.33 and later
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    return function


_MALLINFO2 = _mallinfo2()
HEAP_SAMPLE_SECONDS = 60.0
TRIM_STEP_BYTES = 2 << 20
"""growth of the heap's free bytes, since the last trim (or the first look), that sets off a trim"""


def _malloc_trim() -> Any:
    if os.environ.get("ALPHAPULSE_HEAP_TRIM", "1") == "0":
        return None
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
    return function


_MALLOC_TRIM = _malloc_trim()


def heap() -> dict[str, int] | None:
    """The C allocator's heap now: bytes allocated (in its arenas and in chunks it mapped
    apart) and bytes free inside its arenas; None where glibc's ``mallinfo2`` is missing."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return {"heap_in_use_bytes": int(info.uordblks + info.hblkhd), "heap_free_bytes": int(info.fordblks)}


def trim_heap() -> bool:
    """Hand the free pages of every arena back to the system; True when some were."""
    return bool(_MALLOC_TRIM(0)) if _MALLOC_TRIM is not None else False


def wakeups() -> int:
    """Voluntary context switches of this process so far, every thread (``getrusage``): how
    many times it blocked, so how many times it was woken."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


@dataclasses.dataclass
class UsageSampler:
    """CPU cores used and wakeups a second between two samples (all threads: user + system),
    and memory."""

    cpu_cores: float = 0.0
    wakeups_per_s: float = 0.0
    rss_bytes: int = 0
    private_bytes: int = 0
    _last_cpu: float = dataclasses.field(default_factory=time.process_time)
    _last_wakeups: int = dataclasses.field(default_factory=wakeups)
    _last_at: float = dataclasses.field(default_factory=time.monotonic)
    heap: dict[str, int] | None = None
    heap_trims: int = 0
    """trims that gave pages back (see the module docstring)"""
    _heap_at: float = -HEAP_SAMPLE_SECONDS
    _free_after_trim: int | None = None

    def sample(self) -> None:
        cpu, woken, now = time.process_time(), wakeups(), time.monotonic()
        if now - self._heap_at >= HEAP_SAMPLE_SECONDS:
            self.heap, self._heap_at = heap(), now
            self._trim_if_grown()
        elapsed = now - self._last_at
        if elapsed > 0:
            self.cpu_cores = max(0.0, cpu - self._last_cpu) / elapsed
            self.wakeups_per_s = max(0, woken - self._last_wakeups) / elapsed
        self._last_cpu, self._last_wakeups, self._last_at = cpu, woken, now
        self.rss_bytes, self.private_bytes = memory()

    def _trim_if_grown(self) -> None:
        if self.heap is None:
            return
        free = self.heap["heap_free_bytes"]
        if self._free_after_trim is None or free < self._free_after_trim:
            self._free_after_trim = free  # the first look, or the free space was taken again
        elif free - self._free_after_trim >= TRIM_STEP_BYTES:
            self.heap_trims += trim_heap()
            self._free_after_trim = free  # the chunks stay free in the books: grown from here

    def report(self) -> dict[str, float | int]:
        if not self.rss_bytes:  # asked before the first sample
            self.rss_bytes, self.private_bytes = memory()
        return {
            "cpu_cores": round(self.cpu_cores, 4),
            "cpu_seconds": round(time.process_time(), 3),
            "wakeups_per_s": round(self.wakeups_per_s, 1),
            "wakeups": wakeups(),
            "rss_bytes": self.rss_bytes,
            "private_bytes": self.private_bytes,
            **(self.heap or {}),
            **({"heap_trims": self.heap_trims} if self.heap is not None else {}),
        }
