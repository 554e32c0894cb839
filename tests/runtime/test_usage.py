"""A node's own CPU and memory figures (``runtime/_usage.py``), as ``stats.usage`` reports them."""

from __future__ import annotations

import ctypes
import sys
import time

import pytest

from alphapulse.runtime._usage import UsageSampler, heap, memory, wakeups


def test_cpu_cores_follow_work_and_idle() -> None:
    sampler = UsageSampler()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # one core busy
        pass
    sampler.sample()
    busy = sampler.cpu_cores
    time.sleep(0.3)
    sampler.sample()
    assert busy > 0.5, busy  # a noisy VM can steal some of it
    assert sampler.cpu_cores < 0.2, sampler.cpu_cores
    report = sampler.report()
    assert report["cpu_cores"] == round(sampler.cpu_cores, 4) and report["cpu_seconds"] >= 0.3 * 0.5


def test_wakeups_count_each_time_the_process_blocked() -> None:
    """200 sleeps of a millisecond are 200 wakeups at least; a busy loop adds none."""
    sampler = UsageSampler()
    before = wakeups()
    start = time.monotonic()
    for _ in range(200):
        time.sleep(0.001)
    sampler.sample()
    slept = time.monotonic() - start
    assert wakeups() - before >= 200
    assert sampler.wakeups_per_s >= 200 / slept * 0.99
    sampler.sample()
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        pass
    sampler.sample()
    assert sampler.wakeups_per_s < 100, sampler.wakeups_per_s  # the few the scheduler's tick may cost
    report = sampler.report()
    assert report["wakeups_per_s"] == round(sampler.wakeups_per_s, 1) and report["wakeups"] >= before + 200


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="private memory is read from /proc/self/statm")
def test_private_memory_grows_with_what_the_process_touches() -> None:
    resident, private = memory()
    assert 0 < private <= resident
    block = bytearray(64 * 2**20)  # zero pages from the kernel: touch them to make them resident
    block[:: 4096] = b"\1" * (len(block) // 4096)
    resident_after, private_after = memory()
    assert private_after - private > 48 * 2**20
    assert resident_after - resident > 48 * 2**20
    del block


@pytest.mark.skipif(heap() is None, reason="the C library has no mallinfo2 (glibc 2.33 and later do)")
def test_the_heap_figures_tell_memory_held_from_memory_the_allocator_keeps() -> None:
    """Chunks allocated show as in use; freed below a chunk still held (so nothing can be given
    back from the heap's top), they stay in the allocator as free: what fragmentation looks like."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = heap()
    chunks = [libc.malloc(64 * 1024) for _ in range(160)]  # 10 MiB, each under the mmap threshold
    fence = libc.malloc(64 * 1024)
    held = heap()
    for chunk in chunks:
        libc.free(chunk)
    freed = heap()
    libc.free(fence)
    assert held["heap_in_use_bytes"] - before["heap_in_use_bytes"] >= 10 * 2**20
    assert held["heap_in_use_bytes"] - freed["heap_in_use_bytes"] >= 10 * 2**20
    assert freed["heap_free_bytes"] - held["heap_free_bytes"] >= 10 * 2**20
    sampler = UsageSampler()
    sampler.sample()
    assert {"heap_in_use_bytes", "heap_free_bytes"} <= set(sampler.report())


@pytest.mark.skipif(heap() is None, reason="the C library has no mallinfo2 (glibc 2.33 and later do)")
def test_free_heap_that_grew_is_handed_back_to_the_system() -> None:
    """10 MiB written and freed below a fence stay resident (the allocator keeps them); the
    sampler's next look at the heap sees its free bytes grown past the step and trims: resident
    memory falls, the trim is counted, and a look with nothing new to give back trims no more."""
    from alphapulse.runtime._usage import HEAP_SAMPLE_SECONDS, TRIM_STEP_BYTES

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    chunks = [libc.malloc(64 * 1024) for _ in range(160)]  # may come out of free space the heap had
    fence = libc.malloc(64 * 1024)
    for chunk in chunks:
        ctypes.memset(chunk, 1, 64 * 1024)  # resident
    sampler = UsageSampler()
    sampler.sample()  # the first look, with the chunks held: where the free bytes start
    for chunk in chunks:
        libc.free(chunk)
    _, private_kept = memory()
    assert heap()["heap_free_bytes"] - sampler._free_after_trim >= TRIM_STEP_BYTES
    sampler._heap_at -= HEAP_SAMPLE_SECONDS  # a minute later
    sampler.sample()
    _, private_trimmed = memory()
    libc.free(fence)
    assert sampler.heap_trims == 1 and sampler.report()["heap_trims"] == 1
    assert private_kept - private_trimmed >= 8 * 2**20
    sampler._heap_at -= HEAP_SAMPLE_SECONDS
    sampler.sample()
    assert sampler.heap_trims == 1
