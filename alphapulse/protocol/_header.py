"""The 32-byte message header and the checksum rule.

Every message is a header followed by ``payload_size`` bytes of TLVs. The checksum is CRC-32
(the zlib polynomial) over the whole message with the checksum field taken as four zero bytes,
so it can be computed without copying: header[0:28], four zeros, then the payload.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

from alphapulse.protocol._codec import record_factory
from alphapulse.protocol._errors import LocalProtocolError, MalformedFrame

MAGIC = 0xDEADBEEF
PROTOCOL_VERSION = 1
HEADER_SIZE = 32
MAX_PAYLOAD_SIZE = 1 << 20
"""Default cap on payload_size; a decoder treats a larger claim as an error, not a wait."""

CHECKSUM_OFFSET = 28
_ZERO4 = bytes(4)

HEADER_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("magic", "u32", "0xDEADBEEF; identifies an AlphaPulse message (bytes EF BE AD DE)"),
    ("version", "u8", f"protocol version, currently {PROTOCOL_VERSION}"),
    ("relay_domain", "u8", "relay family the message is routed through (RelayDomain)"),
    ("source", "u16", "id of the node that built the message"),
    ("sequence", "u64", "monotonic per source, +1 per message; gaps mean loss"),
    ("timestamp_ns", "u64", "when the source built the message, Unix ns (passed in by the caller)"),
    ("payload_size", "u32", "bytes of TLV payload after the header"),
    ("checksum", "u32", "CRC-32 of header+payload with this field zeroed"),
)
"""The header layout, one row per field (name, wire type, meaning); docs are generated from it."""

_HEADER = struct.Struct("<IBBHQQII")
_MAGIC_READ = struct.Struct("<I")
_HEADER_TAIL = struct.Struct("<BBHQQII")
assert _HEADER.size == HEADER_SIZE
SOURCE_AND_SEQUENCE = struct.Struct("<6xHQ")
"""a header's source and sequence, read from its first byte (``unpack_from(frame)``)"""


@dataclasses.dataclass(frozen=True)
class Header:
    """A decoded header (the magic is implied: a Header only exists for a frame that had it)."""

    version: int
    relay_domain: int
    source: int
    sequence: int
    timestamp_ns: int
    payload_size: int
    checksum: int = 0

    @property
    def message_size(self) -> int:
        return HEADER_SIZE + self.payload_size


_make_header = record_factory(Header, [f.name for f in dataclasses.fields(Header)])


def pack_header(header: Header) -> bytes:
    """The 32 header bytes, checksum field as stored in ``header``."""
    try:
        return _HEADER.pack(
            MAGIC,
            header.version,
            header.relay_domain,
            header.source,
            header.sequence,
            header.timestamp_ns,
            header.payload_size,
            header.checksum,
        )
    except struct.error as exc:
        raise LocalProtocolError(f"header field out of range: {header!r} ({exc})") from None


def unpack_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> Header:
    """Read a header; raises MalformedFrame on a short buffer or wrong magic (not on version)."""
    if len(buf) - offset < HEADER_SIZE:
        raise MalformedFrame(f"need {HEADER_SIZE} header bytes, have {len(buf) - offset}")
    if _MAGIC_READ.unpack_from(buf, offset)[0] != MAGIC:
        raise MalformedFrame(f"bad magic 0x{_MAGIC_READ.unpack_from(buf, offset)[0]:08x}")
    return _make_header(_HEADER_TAIL.unpack_from(buf, offset + 4))


def message_checksum(message: bytes | bytearray | memoryview) -> int:
    """CRC-32 of a whole message with its checksum field taken as zero (zlib, one message)."""
    view = memoryview(message)
    return zlib.crc32(view[HEADER_SIZE:], zlib.crc32(_ZERO4, zlib.crc32(view[:CHECKSUM_OFFSET])))


def encode_message(relay_domain: int, source: int, sequence: int, timestamp_ns: int, payload: bytes) -> bytes:
    """A complete message: header with payload_size and checksum filled in, then ``payload``."""
    try:
        buf = bytearray(
            _HEADER.pack(
                MAGIC,
                PROTOCOL_VERSION,
                relay_domain,
                source,
                sequence,
                timestamp_ns,
                len(payload),
                0,
            )
        )
    except struct.error as exc:
        raise LocalProtocolError(f"header field out of range ({exc})") from None
    buf += payload
    struct.pack_into("<I", buf, CHECKSUM_OFFSET, zlib.crc32(buf))
    return bytes(buf)


def check_message(message: bytes | bytearray | memoryview, max_payload_size: int = MAX_PAYLOAD_SIZE) -> Header:
    """Validate one complete message (magic, version, size, checksum) and return its header."""
    header = unpack_header(message)
    if header.version != PROTOCOL_VERSION:
        raise MalformedFrame(f"unsupported protocol version {header.version}")
    if header.payload_size > max_payload_size:
        raise MalformedFrame(f"payload_size {header.payload_size} over limit {max_payload_size}")
    if len(message) != header.message_size:
        raise MalformedFrame(f"message is {len(message)} bytes, header says {header.message_size}")
    if message_checksum(message) != header.checksum:
        raise MalformedFrame("checksum mismatch")
    return header
