"""A node's own CPU and memory figures (``runtime/_usage.py``), as ``stats.usage`` reports them."""

from __future__ import annotations

import sys
import time

import pytest

from alphapulse.runtime._usage import UsageSampler, memory, wakeups


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
