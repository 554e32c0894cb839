"""Load every kernel a node's hot path calls, before the node serves its first message.

numba compiles a kernel (or loads it from its on-disk cache) the first time it is called with
new argument types. Left to the first message, that costs the first reads milliseconds (seconds
on a fresh clone) and leaves the loader's objects on the heap after :func:`freeze_heap` ran,
for the garbage collector to walk. So a node process calls :func:`load_hot_kernels` during
start-up, and the test suite calls it once before any test starts a clock.

On a fresh install nothing is cached yet, and every node of a topology started at once would
compile the same kernels side by side: the demo's twelve nodes kept the 2-core reference VM
busy for many minutes (one process alone compiles them in about 15 s). So the first node takes a
lock and compiles; the others wait for it and then load from numba's cache (about a second
each). A marker keyed by the code's files and numba's version says the cache is filled, and
then nodes load side by side without the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pathlib
import socket
import sys
import tempfile
from collections.abc import Iterator

import numba
import numpy as np

from alphapulse import protocol
from alphapulse.runtime._filter import subscription
from alphapulse.runtime._forward import forward_read
from alphapulse.runtime._headers import count_control, relay_domains
from alphapulse.runtime._retransmit import RetransmitBuffer
from alphapulse.runtime._sequence import SequenceTracker
from alphapulse.runtime._uring import NoRing


def load_hot_kernels() -> None:
    """Run the decoder, checksum, header, filter, sequence and retransmit paths once on a few
    real frames (valid, garbage, split), so each kernel's specialisation is loaded; compiled by
    one process at a time while numba's cache is being filled (see the module docstring)."""
    with compiled_once(_marker_dir(), _code_key()):
        _run_hot_paths()


def load_kind_kernels(instance: object, kind: str, kind_file: str) -> bool:
    """Run a node kind's own ``load_kernels()`` hook, when it has one, the same way: before the
    node serves, by one process of that kind at a time while the cache fills. Without it the
    kind's kernels compile on its first block, and on a fresh install the node then stalls for
    tens of seconds mid-stream while its upstream queues overflow. True if there was a hook."""
    hook = getattr(instance, "load_kernels", None)
    if hook is None:
        return False
    kind_dir = pathlib.Path(kind_file).resolve().parent if os.path.isfile(kind_file) else None
    key = _code_key() + (_code_key(kind_dir) if kind_dir is not None else "")
    with compiled_once(_marker_dir(), hashlib.sha256(key.encode()).hexdigest()[:16], name=kind):
        hook()
    return True


@contextlib.contextmanager
def compiled_once(directory: pathlib.Path | None, key: str, name: str = "runtime") -> Iterator[None]:
    """Run the body under the exclusive lock ``name`` in ``directory`` until a body has finished
    once for ``key``; afterwards (the marker exists) without the lock. No usable directory: no
    lock. ``name``: what is compiled (the runtime's kernels, a node kind's), each its own lock."""
    marker = directory / f"kernels-{name}-{key}.ready" if directory is not None else None
    if marker is None or marker.exists():
        yield
        return
    try:
        fd = os.open(directory / f"kernels-{name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, also if this process dies
        yield
        with contextlib.suppress(OSError):
            for old in directory.glob(f"kernels-{name}-*.ready"):  # earlier versions of the code
                old.unlink()
            marker.touch()
    finally:
        os.close(fd)


_PACKAGE = pathlib.Path(__file__).resolve().parents[1]


def _code_key(package: pathlib.Path = _PACKAGE) -> str:
    """What numba's cache of these kernels depends on: the package's source files (numba checks
    each one's mtime and size), numba's version and the interpreter's."""
    digest = hashlib.sha256(f"{numba.__version__} {sys.version}".encode())
    for path in sorted(package.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(package)} {stat.st_mtime_ns} {stat.st_size}\n".encode())
    return digest.hexdigest()[:16]


def _marker_dir() -> pathlib.Path | None:
    """Beside numba's cache of this package when it is writable there, else a per-user
    directory under the temp dir."""
    for directory in (pathlib.Path(__file__).resolve().parent / "__pycache__",
                      pathlib.Path(tempfile.gettempdir()) / f"alphapulse-kernels-{os.getuid()}"):
        with contextlib.suppress(OSError):
            directory.mkdir(mode=0o700, exist_ok=True)
            if os.access(directory, os.W_OK):
                return directory
    return None


def _run_hot_paths() -> None:
    builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 7)
    frames = b"".join(builder.build(protocol.Trade(1, 2, 3, 4), 5) for _ in range(8))
    decoder = protocol.FrameDecoder()
    decoder.receive_data(frames + b"garbage" + frames[:40])
    block = decoder.next_block()
    block = protocol.FrameBlock.concat([block, protocol.FrameBlock.from_bytes(frames)])
    keep = np.arange(len(block)) % 2 == 0
    block.select(keep).with_placeholders(keep[: len(block) // 2])
    relay_domains(block)
    count_control(protocol.FrameBlock.from_bytes(frames))
    trusting = protocol.FrameDecoder(verify_checksums=False)
    trusting.receive_data(frames)
    trusting.next_block()
    protocol.FrameDecoder().whole_frames(frames)  # a small read of several frames (few_frames)
    protocol.trade_columns(protocol.FrameBlock.from_bytes(frames))
    subscription([1], [1]).compile().mask(block.tlv_type, block.instrument_id)
    SequenceTracker().feed(block, 0.0)
    held = RetransmitBuffer(4)
    held.append(block)
    held.lookup(7, 0, 1 << 62)
    _load_link_reads()
    _load_direct_path()


def _load_link_reads() -> None:
    """An input link's own read paths, both checksum modes: a new source's first small read and
    the reads after it, then large reads cut mid-frame (bulk flow). Their arrays differ in type
    (read-only bounds, a decoder's writable buffer), and numba specialises on that."""
    from alphapulse.runtime._epoch import make_sequence
    from alphapulse.runtime._input import InputLink, InputSpec

    trade = protocol.Trade(1, 2, 3, 4)
    for verify in (True, False):
        builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 8, make_sequence(1, 1))
        link = InputLink(InputSpec(node="warm", socket="", verify_checksums=verify), subscriber_name="warm")
        link._decoder = protocol.FrameDecoder(verify_checksums=verify)
        for k in (1, 3, 1, 3):  # first frames of a source (feed), then its next ones (feed_run)
            link._ingest(b"".join(builder.build(trade, 5) for _ in range(k)), 0.0)
        bulk = b"".join(builder.build(trade, 5) for _ in range(2000))
        for at in range(0, len(bulk), 50_000):  # 50,000 bytes a read: frames cut in two
            link._ingest(bulk[at:at + 50_000], 0.0)


def _load_direct_path() -> None:
    """The relay's direct path (``_forward``): one call on an empty non-blocking socket loads it."""
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        epochs, expected, flags = SequenceTracker().run_state()
        forward_read(b.fileno(), np.empty(64, np.uint8), 1, 1 << 16, True, epochs, expected, flags,
                     np.empty(16, np.int64), np.array([a.fileno()], np.int32), np.zeros(1, np.int64),
                     NoRing.fd, NoRing.ring, NoRing.sqes, NoRing.layout)  # a ring's arrays have the same types
