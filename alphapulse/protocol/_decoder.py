"""The streaming frame decoder: bytes in, blocks of whole valid frames out (h11 style).

Contract: ``receive_data(data)`` only buffers (``b""`` means EOF). ``next_block()`` returns a
:class:`FrameBlock` holding every complete valid frame buffered so far, or ``NEED_DATA``. Bad
input never raises: a frame with bad magic, version, oversize length or bad CRC is counted by
kind and skipped, and scanning resumes at the next magic after its first byte, so a good frame
behind garbage always comes out. Partial input is capped at one frame of at most
``HEADER_SIZE + max_payload_size`` bytes (a larger claim is an error, not a wait), and every byte
is scanned once: the decoder remembers where it stopped and how many bytes it needs next.

Zero copy: when the buffer is empty and an immutable ``bytes`` chunk holds only valid frames,
the block references that chunk (a relay forwards ``block.data`` as is). Otherwise the frames are
copied once per block, back to back. Either way ``block.data`` is exactly the frames.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Iterator

import numpy as np

from alphapulse.protocol._batch import (
    CRC_TABLES,
    ERR_BAD_CHECKSUM,
    ERR_BAD_MAGIC,
    ERR_BAD_VERSION,
    ERR_OVERSIZE,
    ERR_TRUNCATED,
    N_ERROR_KINDS,
    SCOPED_TYPES,
    as_readonly_u8,
    few_frames,
    frame_bounds,
    gather_frames,
    header_columns,
    placeholder_frames,
)
from alphapulse.protocol._batch import _scan as _scan_kernel
from alphapulse.protocol._errors import LocalProtocolError
from alphapulse.protocol._header import (
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD_SIZE,
    PROTOCOL_VERSION,
    message_checksum,
)
from alphapulse.protocol._types import EXTENDED_TLV_MARKER


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
"""Returned by ``next_block`` when no complete frame is buffered."""
_ZERO = np.int64(0)
_HEADER = struct.Struct("<IBBHQQII")
_PAYLOAD_SIZE = struct.Struct("<I")
_U16, _U64, _CRC = struct.Struct("<H"), struct.Struct("<Q"), struct.Struct("<I")
_NO_PAYLOAD = _NO_CHECKSUM = bytes(4)
_SCOPED_TYPES = frozenset(int(t) for t in np.flatnonzero(SCOPED_TYPES))
_PAYLOAD_SIZE_OFFSET = 24  # header bytes 24..28 (see _HEADER): a frame's size without parsing the rest
_QUICK_FRAMES = 16
_QUICK_BYTES = 8192
"""Most frames (and bytes) :meth:`FrameDecoder.whole_frames` takes; past these the scan kernel's
allocations are worth it, and a bulk read is declined before any header is parsed."""
_CACHED_BOUNDS_FRAMES = 64
"""Blocks of up to this many frames share their bounds arrays; bigger ones (a relay's backlog
read) build their own, so the cache stays small."""
_BOUNDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
"""Shared (offsets, sizes) of blocks of ``k`` frames of one size (sizes repeat: a Trade message is
72 bytes). Block offsets and sizes are never written in place (every derived block makes new
ones); they are not flagged read-only because numba compiles read-only arrays as another type."""


def _bounds(sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    k, size = len(sizes), sizes[0]
    if sizes.count(size) != k:  # mixed sizes: built for this block
        frame_sizes = np.array(sizes, np.int64)
        return np.cumsum(frame_sizes) - frame_sizes, frame_sizes
    return uniform_bounds(k, size)


def uniform_bounds(k: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, sizes) of ``k`` back-to-back frames of ``size`` bytes each, shared (see ``_BOUNDS``)."""
    bounds = _BOUNDS.get((k, size))
    if bounds is None:
        bounds = (np.arange(k, dtype=np.int64) * size, np.full(k, size, np.int64))
        if k <= _CACHED_BOUNDS_FRAMES and len(_BOUNDS) < 4096:
            _BOUNDS[(k, size)] = bounds
    return bounds


def _few_frame_sizes(data: bytes) -> list[int] | None:
    """Sizes of the back-to-back frames in ``data`` read from their headers' payload sizes, when
    there are at most ``_QUICK_FRAMES`` of them and they end exactly at the end; None otherwise."""
    end = len(data)
    if not HEADER_SIZE <= end <= _QUICK_BYTES:
        return None
    payload_size = _PAYLOAD_SIZE.unpack_from
    sizes: list[int] = []
    at = 0
    while at < end:
        if len(sizes) == _QUICK_FRAMES or end - at < HEADER_SIZE:
            return None
        size = HEADER_SIZE + payload_size(data, at + _PAYLOAD_SIZE_OFFSET)[0]
        sizes.append(size)
        at += size
    return sizes if at == end else None


ERROR_KINDS: tuple[str, ...] = ("bad_magic", "bad_version", "oversize", "bad_checksum", "truncated")
_KIND_INDEXES = (ERR_BAD_MAGIC, ERR_BAD_VERSION, ERR_OVERSIZE, ERR_BAD_CHECKSUM, ERR_TRUNCATED)
assert tuple(range(N_ERROR_KINDS)) == _KIND_INDEXES


@dataclasses.dataclass(frozen=True)
class DecoderStatistics:
    """Counters of one decoder. Every skipped byte and every bad frame is counted somewhere."""

    frames: int
    """valid frames returned"""
    bytes: int
    """bytes of valid frames returned"""
    bad_magic: int
    """runs of bytes that did not start with the magic (one per run, however long)"""
    bad_version: int
    oversize: int
    """headers claiming a payload over the decoder's limit"""
    bad_checksum: int
    truncated: int
    """frames cut short by EOF"""
    bytes_skipped: int
    buffered: int
    """bytes held waiting for the rest of a frame"""

    @property
    def errors(self) -> dict[str, int]:
        return {kind: getattr(self, kind) for kind in ERROR_KINDS}

    @property
    def total_errors(self) -> int:
        return sum(self.errors.values())


class FrameBlock:
    """Whole valid frames, back to back in ``data``; per-frame header columns on demand."""

    __slots__ = ("__dict__", "count", "data", "offsets", "sizes")

    # What the decoder learns for free while it parses a read (``whole_frames`` or the scan of
    # ``next_block``); None on every other block (not known: compute it).
    sequence_run: tuple[int, int] | None = None
    """(source, first sequence) when the frames are one source's consecutive sequences"""
    relay_domain_all: int | None = None
    """the relay domain of every frame, when they all share one"""

    def __init__(self, data: bytes | memoryview, offsets: np.ndarray, sizes: np.ndarray) -> None:
        self.data = data
        """the frames, contiguous: ``data[offsets[i]:offsets[i] + sizes[i]]`` is frame i"""
        self.offsets = offsets
        self.sizes = sizes
        """total size of each message (header + payload)"""
        self.count = len(offsets)
        """the number of frames, as a Python int: ``len(block)`` without a numpy call (the per-read
        path of a node woken once per message asks several times, and runs with cold caches)"""

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"<FrameBlock {len(self)} frames, {len(self.data)} bytes>"

    def frames(self) -> Iterator[memoryview]:
        """Each message as a memoryview into ``data``."""
        view = memoryview(self.data)
        for off, size in zip(self.offsets.tolist(), self.sizes.tolist(), strict=True):
            yield view[off : off + size]

    def tobytes(self) -> bytes:
        return bytes(self.data)

    @classmethod
    def from_bytes(cls, data: bytes) -> FrameBlock:
        """A block over frames we built ourselves (trusted: boundaries found, CRCs not checked).
        A few frames (what a node's flush usually holds) are walked with ``struct``: the kernel
        call costs 5-25 µs with the caches cold, before the block can be sent."""
        sizes = _few_frame_sizes(data)
        if sizes is not None:
            return cls(data, *_bounds(sizes))
        offsets, sizes = frame_bounds(data)
        return cls(data, offsets, sizes)

    @classmethod
    def join(cls, frames: list[bytes], sequence_run: tuple[int, int] | None = None) -> FrameBlock:
        """A block of frames we built ourselves, one ``bytes`` each: joined once, with bounds from
        their lengths, so nothing walks the headers again (a node's flush; cold, ten frames cost
        about 12 µs through :meth:`from_bytes`). A builder that numbered them one after another
        says so (``sequence_run``: its source and the first sequence), as the decoder does."""
        block = cls(b"".join(frames), *_bounds([len(frame) for frame in frames]))
        if sequence_run is not None:
            block.sequence_run = sequence_run
        return block

    def slice(self, lo: int, hi: int) -> FrameBlock:
        """Frames ``lo:hi`` as a block of their own, without copying (a view of ``data``)."""
        if lo == 0 and hi >= len(self):
            return self
        start = int(self.offsets[lo])
        end = int(self.offsets[hi - 1] + self.sizes[hi - 1])
        return FrameBlock(memoryview(self.data)[start:end], self.offsets[lo:hi] - start, self.sizes[lo:hi])

    def select(self, mask: np.ndarray) -> FrameBlock:
        """A new block of the frames where ``mask`` is true, copied back to back in one go."""
        offsets, sizes = self.offsets[mask], self.sizes[mask]
        data = gather_frames(self.data, offsets, sizes).tobytes()
        return FrameBlock(data, np.cumsum(sizes) - sizes, sizes)

    def first_tlv_of_one(self) -> tuple[int, int]:
        """(type, instrument id) of the first TLV of a one-frame block: what ``tlv_type[0]`` and
        ``instrument_id[0]`` say (0 for none), read with ``struct``. A subscription filter asks
        this of every block a publisher sends, and most carry one frame, where the column kernel
        cost more than the rest of the send (20-45 µs warm against about 2)."""
        data, at = self.data, int(self.offsets[0])
        payload = _PAYLOAD_SIZE.unpack_from(data, at + _PAYLOAD_SIZE_OFFSET)[0]
        if payload < 2:
            return 0, 0
        start = at + HEADER_SIZE
        tlv, length = data[start], data[start + 1]
        value = start + 2
        if tlv == EXTENDED_TLV_MARKER:
            if payload < 5:
                return 0, 0
            tlv, length, value = data[start + 2], _U16.unpack_from(data, start + 3)[0], start + 5
        scoped = tlv in _SCOPED_TYPES and length >= 8 and value + 8 <= start + payload
        return tlv, _U64.unpack_from(data, value)[0] if scoped else 0

    def placeholder_of_one(self) -> FrameBlock:
        """``with_placeholders`` of a one-frame block that keeps nothing, with ``struct`` and
        ``zlib`` (see :meth:`first_tlv_of_one`): its header, payload size 0, its own CRC."""
        at = int(self.offsets[0])
        head = bytes(self.data[at:at + _PAYLOAD_SIZE_OFFSET]) + _NO_PAYLOAD
        frame = head + _CRC.pack(message_checksum(head + _NO_CHECKSUM))
        return FrameBlock(frame, *uniform_bounds(1, HEADER_SIZE))

    def with_placeholders(self, keep: np.ndarray) -> FrameBlock:
        """Frames where ``keep`` is true whole, the others reduced to header-only placeholders.

        A filtered subscriber still sees every sequence number of every source, so its gap
        detection stays exact, while the filtered payloads are not sent.
        """
        data, sizes = placeholder_frames(self.data, self.offsets, self.sizes, keep)
        return FrameBlock(data.tobytes(), np.cumsum(sizes) - sizes, sizes)

    @property
    def is_placeholder(self) -> np.ndarray:
        """True for header-only placeholder frames (payload_size 0)."""
        return self.sizes == HEADER_SIZE

    @classmethod
    def concat(cls, blocks: list[FrameBlock]) -> FrameBlock:
        if len(blocks) == 1:
            return blocks[0]
        sizes = np.concatenate([b.sizes for b in blocks])
        data = b"".join(bytes(b.data) for b in blocks)
        return cls(data, np.cumsum(sizes) - sizes, sizes)

    @functools.cached_property
    def _columns(self) -> tuple[np.ndarray, ...]:
        return header_columns(self.data, self.offsets)

    @property
    def source(self) -> np.ndarray:
        return self._columns[0]

    @property
    def sequence(self) -> np.ndarray:
        return self._columns[1]

    @property
    def relay_domain(self) -> np.ndarray:
        return self._columns[2]

    @property
    def timestamp_ns(self) -> np.ndarray:
        return self._columns[3]

    @property
    def tlv_type(self) -> np.ndarray:
        """Type of each message's first TLV (0 if it has none)."""
        return self._columns[4]

    @property
    def instrument_id(self) -> np.ndarray:
        """instrument_id of each message's first TLV; 0 where that type is not instrument-scoped."""
        return self._columns[5]


class FrameDecoder:
    """Turns a byte stream into blocks of valid frames; never raises on what the peer sends."""

    def __init__(self, max_payload_size: int = MAX_PAYLOAD_SIZE, *, verify_checksums: bool = True) -> None:
        self.max_payload_size = int(max_payload_size)
        self._max_payload = np.int64(max_payload_size)
        self.verify_checksums = verify_checksums
        """False: frames are taken on the sender's word for their CRCs (a relay checked them)."""
        self._chunks: list[bytes] = []
        self._buf = bytearray()
        self._need = HEADER_SIZE
        self._resyncing = False
        self._eof = False
        self._done = False
        self._frames = 0
        self._bytes = 0
        self._errors = [0] * N_ERROR_KINDS
        self._skipped = 0
        self._pending = 0
        self._quick_sizes = np.empty(_QUICK_FRAMES, np.int64)

    @property
    def idle(self) -> bool:
        """Nothing buffered, not resynchronising, no EOF: the next read starts on a frame."""
        return not (self._chunks or self._buf or self._resyncing or self._eof)

    def count_parsed(self, frames: int, nbytes: int) -> None:
        """Count frames another parser checked on this stream's behalf (a relay's direct path)."""
        self._frames += frames
        self._bytes += nbytes

    @property
    def eof(self) -> bool:
        """True once EOF was received and everything before it was returned or counted."""
        return self._done

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes (``b""`` = EOF). Nothing is parsed until ``next_block``."""
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data after EOF")
            return
        if not data:
            self._eof = True
            return
        chunk = data if isinstance(data, bytes) else bytes(data)
        self._chunks.append(chunk)
        self._pending += len(chunk)

    def whole_frames(self, data: bytes) -> FrameBlock | None:
        """``data`` as a block, when it is exactly a few whole valid data frames and nothing is
        buffered: the common read of a link fed a message or a small batch at a time. Called once
        per read with a node's caches cold (woken once per message), where any numba or numpy call
        costs 5-15 µs: one frame is parsed with ``struct`` and ``zlib`` (a few µs); several frames
        whose CRCs must be checked by one :func:`~alphapulse.protocol._batch.few_frames` call
        (measured cold, 10 frames: 23-28 µs a read against 43-47 µs with ``zlib``), and without
        CRCs by ``struct`` again; never by the scan kernel. Frames whose sequences run on from one
        source carry ``sequence_run = (source, first sequence)``, which lets the tracker take them
        without a kernel, and frames of one relay domain carry ``relay_domain_all`` (a relay
        forwards them on that). None otherwise (nothing consumed, nothing counted): pass ``data``
        to ``receive_data``, which also counts whatever is wrong with it. Control frames
        (sequence 0) take that path."""
        size = len(data)
        if (size < HEADER_SIZE or size > _QUICK_BYTES or self._chunks or self._buf or self._resyncing
                or self._eof):
            return None
        if size == HEADER_SIZE + _PAYLOAD_SIZE.unpack_from(data, _PAYLOAD_SIZE_OFFSET)[0]:
            return self._one_frame(data, size)  # a link fed one message at a time: most reads
        if self.verify_checksums:
            return self._checked_frames(data, size)
        return self._trusted_frames(data, size)

    def _checked_frames(self, data: bytes, size: int) -> FrameBlock | None:
        """:meth:`whole_frames` of several frames, CRCs checked: one kernel call."""
        count, source, first, consecutive, domain = few_frames(
            np.frombuffer(data, np.uint8), size, self.max_payload_size, True, self._quick_sizes)
        if not count:
            return None
        return self._quick_block(data, _bounds(self._quick_sizes[:count].tolist()),
                                 (source, first) if consecutive else None, domain)

    def _trusted_frames(self, data: bytes, size: int) -> FrameBlock | None:
        """:meth:`whole_frames` of several frames, CRCs not checked: the headers walked with
        ``struct``, which cold costs what a kernel call does at ten frames and less below."""
        unpack, max_payload = _HEADER.unpack_from, self.max_payload_size
        sizes: list[int] = []
        at = 0
        run_source = first = first_domain = 0
        consecutive = one_domain = True
        while at < size:
            if len(sizes) == _QUICK_FRAMES or size - at < HEADER_SIZE:
                return None
            magic, version, domain, source, sequence, _, payload, _ = unpack(data, at)
            end = at + HEADER_SIZE + payload
            if magic != MAGIC or version != PROTOCOL_VERSION or sequence == 0 or payload > max_payload or end > size:
                return None
            if not at:
                run_source, first, first_domain = source, sequence, domain
            else:
                if source != run_source or sequence != first + len(sizes):
                    consecutive = False
                if domain != first_domain:
                    one_domain = False
            sizes.append(end - at)
            at = end
        return self._quick_block(data, _bounds(sizes), (run_source, first) if consecutive else None,
                                 first_domain if one_domain else -1)

    def _quick_block(self, data: bytes, bounds: tuple[np.ndarray, np.ndarray], run: tuple[int, int] | None,
                     domain: int) -> FrameBlock:
        block = FrameBlock(data, *bounds)
        block.control_frames = 0
        if run is not None:
            block.sequence_run = run
        if domain >= 0:
            block.relay_domain_all = domain
        self._frames += block.count
        self._bytes += len(data)
        return block

    def _one_frame(self, data: bytes, size: int) -> FrameBlock | None:
        """:meth:`whole_frames` for a read that is exactly one frame: the same checks and the same
        block, with none of the loop's lists (about half the bytecode, which counts cold)."""
        magic, version, domain, source, sequence, _, payload, crc = _HEADER.unpack_from(data)
        if magic != MAGIC or version != PROTOCOL_VERSION or sequence == 0 or payload > self.max_payload_size:
            return None
        if self.verify_checksums and crc != message_checksum(data):
            return None
        block = FrameBlock(data, *_bounds([size]))
        block.control_frames = 0
        block.sequence_run = (source, sequence)
        block.relay_domain_all = domain
        self._frames += 1
        self._bytes += size
        return block

    def next_block(self) -> FrameBlock | _Sentinel:
        """All complete valid frames buffered so far, or NEED_DATA."""
        if self._done:
            return NEED_DATA
        final = self._eof
        if not self._buf and len(self._chunks) == 1:
            chunk = self._chunks.pop()
            self._pending = 0
            if len(chunk) < self._need and not final:
                self._buf += chunk
                return NEED_DATA
            return self._scan(chunk, final, owned=False)
        if self._chunks:
            for chunk in self._chunks:
                self._buf += chunk
            self._chunks.clear()
            self._pending = 0
        if len(self._buf) < self._need and not final:
            return NEED_DATA
        return self._scan(self._buf, final, owned=True)

    def _scan(self, buf: bytes | bytearray, final: bool, owned: bool) -> FrameBlock | _Sentinel:
        # the kernel directly, not ``scan_frames``: a link at 10k small reads/s spends a real part
        # of each read on wrappers, so the clean case (nothing skipped) takes no extra numpy call
        offsets, sizes, end, need, errors, skipped, resyncing, control, source, first, consecutive, domain = \
            _scan_kernel(CRC_TABLES, as_readonly_u8(buf), _ZERO, self._max_payload, final, self._resyncing,
                         self.verify_checksums)
        self._resyncing = resyncing
        self._need = need
        if skipped:
            self._skipped += skipped
            for kind, count in enumerate(errors.tolist()):
                self._errors[kind] += count
        n = len(offsets)
        block: FrameBlock | _Sentinel = NEED_DATA
        if n:
            if skipped:
                total = int(sizes.sum())
                contiguous = int(offsets[0]) == 0 and int(offsets[-1] + sizes[-1]) == total
            else:  # frames back to back from byte 0 (the common case: no numpy call here)
                total, contiguous = int(end), True
            if not contiguous:
                # read-only, as every other block's bytes (buf may be our bytearray): one _gather
                data: bytes | memoryview = gather_frames(as_readonly_u8(buf), offsets, sizes).tobytes()
                offsets = np.cumsum(sizes) - sizes
            elif owned:
                data = bytes(buf[:total])
            else:
                data = buf if total == len(buf) else memoryview(buf)[:total]
            block = FrameBlock(data, offsets, sizes)
            block.control_frames = int(control)
            if consecutive:  # one source's next sequences: the tracker takes them without columns
                block.sequence_run = (int(source), int(first))
            if domain >= 0:
                block.relay_domain_all = int(domain)
            self._frames += n
            self._bytes += total
        if owned:
            del buf[:end]
        elif end < len(buf):
            self._buf += memoryview(buf)[end:]
        if final and not self._buf:
            self._done = True
        return block

    def statistics(self) -> DecoderStatistics:
        return DecoderStatistics(
            self._frames,
            self._bytes,
            *self._errors,
            self._skipped,
            len(self._buf) + self._pending,
        )
