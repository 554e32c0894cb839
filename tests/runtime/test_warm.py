"""Kernels are compiled by one process at a time until numba's cache is filled (``_warm``)."""

from __future__ import annotations

import fcntl
import os
import pathlib
import threading
import time

import pytest

from alphapulse.runtime._warm import _code_key, compiled_once
from tests._fresh import assert_fresh_run_ok


def test_a_second_loader_waits_for_the_first_then_nobody_waits() -> None:
    """Separate lock descriptions conflict like separate processes do, so threads show it."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp)
        events: list[str] = []

        def load(name: str, hold: float) -> None:
            with compiled_once(directory, "k1"):
                events.append(f"{name} start")
                time.sleep(hold)
                events.append(f"{name} end")

        first = threading.Thread(target=load, args=("first", 0.3))
        first.start()
        time.sleep(0.1)
        load("second", 0)  # blocks until the first has compiled
        first.join()
        assert events == ["first start", "first end", "second start", "second end"]
        assert (directory / "kernels-runtime-k1.ready").exists()

        # filled: a loader no longer takes the lock, even while something holds it
        fd = os.open(directory / "kernels-runtime.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            started = time.monotonic()
            load("third", 0)
            assert time.monotonic() - started < 0.2
        finally:
            os.close(fd)

        # the code changed: compiled under the lock again, and the old marker goes; another
        # name's (a node kind's kernels) has its own lock and marker, and stays
        load("fourth", 0)
        with compiled_once(directory, "k1", name="transform.x"):
            pass
        with compiled_once(directory, "k2"):
            pass
        assert sorted(p.name for p in directory.glob("*.ready")) == [
            "kernels-runtime-k2.ready", "kernels-transform.x-k1.ready"]


def test_no_usable_directory_means_no_lock() -> None:
    ran = []
    with compiled_once(None, "k"):
        ran.append(True)
    assert ran == [True]


def test_the_key_follows_the_source_files(tmp_path: pathlib.Path) -> None:
    (tmp_path / "sub").mkdir()
    source = tmp_path / "sub" / "kernel.py"
    source.write_text("x = 1\n")
    before = _code_key(tmp_path)
    assert _code_key(tmp_path) == before
    os.utime(source, ns=(1, 1))  # numba's cache checks mtime and size
    assert _code_key(tmp_path) != before


def test_a_kinds_own_kernels_load_through_its_hook_once_per_call() -> None:
    """``load_kind_kernels`` runs a kind's ``load_kernels`` (under that kind's compile lock) and
    says whether there was one; a kind without the hook is left alone."""
    from alphapulse.runtime._warm import load_kind_kernels

    class WithKernels:
        calls = 0

        def load_kernels(self) -> None:
            WithKernels.calls += 1

    assert load_kind_kernels(WithKernels(), "transform.with_kernels", __file__) is True
    assert WithKernels.calls == 1
    assert load_kind_kernels(object(), "sink.without", __file__) is False


_HOT_PATHS = """
# loads the kernels, then runs a node's paths on every kind of buffer; argv[1]: cached or compiled
import socket
import sys
import numba
import numpy as np
from alphapulse import protocol
from alphapulse.protocol import _batch
from alphapulse.protocol._decoder import uniform_bounds
from alphapulse.runtime import _filter, _forward, _headers, _sequence, _uring, _warm
from alphapulse.runtime._input import InputLink, InputSpec
from alphapulse.runtime._retransmit import RetransmitBuffer
from tests.runtime._frames import trade_frames

modules = (_batch, _filter, _forward, _headers, _sequence, _uring)
kernels = {f"{m.__name__}.{n}": k for m in modules for n, k in vars(m).items()
           if isinstance(k, numba.core.registry.CPUDispatcher)}
_warm.load_hot_kernels()
loaded = {n: set(k.signatures) for n, k in kernels.items()}
called = ["_scan", "few_frames", "_header_columns", "_gather", "_placeholders"]
nested = ["_first_bad", "_message_crc"] if sys.argv[1] == "compiled" else []  # from a cache: not looked up
for name in called + nested:
    assert loaded["alphapulse.protocol._batch." + name], name
several = {n: len(s) for n, s in loaded.items() if len(s) > 1}
# _classify: one per mode by design (its flag is a literal); nested kernels have no signatures from a cache
assert (several == {"alphapulse.runtime._sequence._classify": 2}) if nested else not several, several

frames = trade_frames(5, 1, range(1, 41)) + trade_frames(6, 1, [1, 2, 4, 5])  # source 6 has a gap
blocks = []
for verify in (True, False):
    for kind in (bytes, bytearray, memoryview):
        decoder = protocol.FrameDecoder(verify_checksums=verify)
        for k in (1, 3, 16):
            assert decoder.whole_frames(frames[:72 * k]) is not None
        decoder.receive_data(kind(frames[:100]))
        blocks.append(decoder.next_block())
        decoder.receive_data(kind(frames[100:] + b"junk" + frames[:72]))  # our bytearray, frames to gather
        decoder.receive_data(b"")
        blocks.append(decoder.next_block())
        assert len(blocks[-2]) + len(blocks[-1]) == 45, blocks
    for kind in (bytes, bytearray, memoryview, lambda b: np.frombuffer(bytearray(b), np.uint8)):
        protocol.scan_frames(kind(frames), final=True, verify=verify)  # a recorder's
    link = InputLink(InputSpec(node="t", socket="", verify_checksums=verify), subscriber_name="t")
    link._decoder = protocol.FrameDecoder(verify_checksums=verify)  # as on connecting
    for at in range(0, len(frames), 500):
        link._ingest(frames[at:at + 500] + (b"junk" if at == 1000 else b""), 0.0)
tracker, held = _sequence.SequenceTracker(), RetransmitBuffer(256)
for block in blocks:
    _headers.count_control(block)
    _headers.relay_domains(block)
    tracker.feed(block, 0.0)  # straight from the headers
    keep = block.tlv_type == 1
    keep[::3] = False
    block.select(keep)
    _filter.subscription([1], [11]).compile().mask(block.tlv_type, block.instrument_id)
    _filter.subscription([1]).compile().mask(block.tlv_type, block.instrument_id)
    placeholders = block.with_placeholders(keep)
    placeholders.select(~placeholders.is_placeholder)
    held.append(placeholders)
    tracker.feed(block.slice(len(block) // 2, len(block)), 0.0)  # a memoryview of the bytes
answer = held.lookup(5, 1, 1 << 62)  # read in the ring
assert answer.blocks and answer.blocks[0].source.size
protocol.FrameBlock.concat([*answer.blocks, blocks[0]]).sequence

# a relay's direct path: a real read, checked, sent on and held as the relay holds it
relay = _sequence.SequenceTracker()
relay.feed(protocol.FrameBlock.from_bytes(frames[:72]), 0.0)
a, b = socket.socketpair()
c, d = socket.socketpair()
with a, b, c, d:
    a.send(frames[72:720])
    b.setblocking(False)
    read, ring = np.empty(1 << 16, np.uint8), _uring.NoRing
    status, n, count, _, _ = _forward.forward_read(
        b.fileno(), read, 1, protocol.MAX_PAYLOAD_SIZE, True, *relay.run_state(), np.empty(2048, np.int64),
        np.array([c.fileno()], np.int32), np.zeros(1, np.int64), ring.fd, ring.ring, ring.sqes, ring.layout)
    assert (status, n, count) == (_forward.FORWARDED, 648, 9), (status, n, count)
    held.append(protocol.FrameBlock(memoryview(read)[:n], *uniform_bounds(count, 72)))
held.lookup(5, 2, 3)
new = {n: set(k.signatures) - loaded[n] for n, k in kernels.items() if set(k.signatures) - loaded[n]}
assert not new, new
print("ok")
"""


def test_the_hot_paths_meet_no_kernel_the_loader_did_not_load() -> None:
    """After ``load_hot_kernels`` a node's paths need no kernel specialisation it did not load,
    whatever buffer their bytes come in (bytes, bytearray, memoryview, numpy; a relay's writable
    read buffer, the retransmit ring) and in either checksum mode: each would stop the node the
    first time, for seconds on a fresh install. In a fresh interpreter, from numba's cache."""
    assert_fresh_run_ok(_HOT_PATHS, "cached")


@pytest.mark.slow
def test_the_loader_compiles_each_kernel_once(tmp_path: pathlib.Path) -> None:
    """numba compiles a kernel once per argument type (a writable array is another type than a
    read-only one, a literal 0 another than an int64), and a kernel a kernel calls is only typed
    when compiled, not when loaded from the cache; so compiled into an empty cache, each kernel
    has one specialisation (``_classify``: one per mode, by design). Each more cost seconds on a
    fresh install (the CRC code tens of them). About a minute."""
    assert_fresh_run_ok(_HOT_PATHS, "compiled", env={"NUMBA_CACHE_DIR": str(tmp_path)}, timeout=900)
