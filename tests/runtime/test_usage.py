"""A node's own CPU and memory figures (``runtime/_usage.py``), as ``stats.usage`` reports them."""

from __future__ import annotations

import sys
import time

import pytest

from alphapulse.runtime._usage import UsageSampler, memory


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
