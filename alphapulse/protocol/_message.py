"""Whole messages: a builder that stamps sequence, size and checksum, and a one-message parser.

These are the one-at-a-time paths (adapters building what they just parsed, tests, tools). Hot
loops use the block decoder and the batch kernels instead.
"""

from __future__ import annotations

import dataclasses
import operator
import struct
import zlib
from collections.abc import Iterable
from typing import Any

from alphapulse.protocol._codec import Field, Layout, record_factory
from alphapulse.protocol._errors import LocalProtocolError, MalformedFrame
from alphapulse.protocol._header import (
    CHECKSUM_OFFSET,
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD_SIZE,
    PROTOCOL_VERSION,
    Header,
    check_message,
)
from alphapulse.protocol._layouts import LAYOUTS
from alphapulse.protocol._tlv import MAX_STANDARD_VALUE, decode_payload, encode

_U64_LIMIT = 1 << 64
_CRC = struct.Struct("<I")
_HEAD = "<IBBHQQII"


def _one_tlv_struct(layout: Layout) -> tuple[struct.Struct, Any] | None:
    """header + standard TLV header + value in one Struct, for plain fixed-size layouts."""
    fields = [item for item in layout.head if isinstance(item, Field)]
    if layout.tails or layout.fixed_size is None or layout.fixed_size > MAX_STANDARD_VALUE:
        return None
    if any(f.kind.to_wire is not None for f in fields):
        return None
    st = struct.Struct(_HEAD + "BB" + layout.head_struct.format[1:])
    getter = operator.attrgetter(*[f.name for f in fields])
    return st, getter


_FAST: dict[type, tuple[struct.Struct, Any, int, int]] = {}
for _layout in LAYOUTS.values():
    _pair = _one_tlv_struct(_layout)
    if _pair is not None and len(_layout.fields) > 1:
        _FAST[_layout.record] = (*_pair, int(_layout.tlv_type), _layout.head_size)


@dataclasses.dataclass(frozen=True)
class Message:
    """A decoded message: its header and its TLVs as records."""

    header: Header
    tlvs: list[Any]


_make_message = record_factory(Message, ("header", "tlvs"))
_make_header = record_factory(Header, [f.name for f in dataclasses.fields(Header)])
_HEADER = struct.Struct(_HEAD)
_ZERO4 = bytes(4)


def decode_message(message: bytes | bytearray | memoryview, max_payload_size: int = MAX_PAYLOAD_SIZE) -> Message:
    """Check one complete message (magic, version, size, CRC) and decode all its TLVs.

    Raises MalformedFrame when anything is wrong (this is the strict one-message path; a stream
    goes through FrameDecoder, which counts and skips bad frames instead).
    """
    view = memoryview(message)
    if len(view) < HEADER_SIZE:
        raise MalformedFrame(f"message of {len(view)} bytes is shorter than a header")
    fields = _HEADER.unpack_from(view)
    if fields[0] != MAGIC or fields[1] != PROTOCOL_VERSION or fields[6] > max_payload_size:
        check_message(view, max_payload_size)  # raises with the precise reason
    if len(view) != HEADER_SIZE + fields[6]:
        raise MalformedFrame(f"message is {len(view)} bytes, header says {HEADER_SIZE + fields[6]}")
    payload = view[HEADER_SIZE:]
    if zlib.crc32(payload, zlib.crc32(_ZERO4, zlib.crc32(view[:CHECKSUM_OFFSET]))) != fields[7]:
        raise MalformedFrame("checksum mismatch")
    return _make_message((_make_header(fields[1:]), decode_payload(payload)))


class MessageBuilder:
    """Builds the messages of one source: sequence numbers increase by one per message.

    Sans-IO: the caller passes the timestamp and writes the returned bytes wherever it likes.
    """

    def __init__(self, relay_domain: int, source: int, first_sequence: int = 1) -> None:
        if not 0 <= relay_domain <= 0xFF:
            raise LocalProtocolError(f"relay_domain {relay_domain} does not fit u8")
        if not 0 <= source <= 0xFFFF:
            raise LocalProtocolError(f"source {source} does not fit u16")
        if not 0 <= first_sequence < _U64_LIMIT:
            raise LocalProtocolError(f"first_sequence {first_sequence} does not fit u64")
        self.relay_domain = int(relay_domain)
        self.source = int(source)
        self.next_sequence = int(first_sequence)

    def build(self, tlvs: Any | bytes | Iterable[Any | bytes], timestamp_ns: int) -> bytes:
        """One message from a record, encoded TLV bytes, or a list of either."""
        fast = _FAST.get(type(tlvs))
        sequence = self.next_sequence
        if fast is not None:
            st, getter, tlv_type, length = fast
            try:
                buf = st.pack(
                    MAGIC,
                    PROTOCOL_VERSION,
                    self.relay_domain,
                    self.source,
                    sequence,
                    timestamp_ns,
                    length + 2,
                    0,
                    tlv_type,
                    length,
                    *getter(tlvs),
                )
            except struct.error as exc:
                raise LocalProtocolError(f"cannot encode {type(tlvs).__name__}: {exc}") from None
            self.next_sequence = sequence + 1
            crc = _CRC.pack(zlib.crc32(buf))
            return buf[:CHECKSUM_OFFSET] + crc + buf[HEADER_SIZE:]
        payload = self._payload(tlvs)
        try:
            head = struct.pack(
                _HEAD,
                MAGIC,
                PROTOCOL_VERSION,
                self.relay_domain,
                self.source,
                sequence,
                timestamp_ns,
                len(payload),
                0,
            )
        except struct.error as exc:
            raise LocalProtocolError(f"header field out of range: {exc}") from None
        self.next_sequence = sequence + 1
        crc = zlib.crc32(payload, zlib.crc32(head))
        return head[:CHECKSUM_OFFSET] + _CRC.pack(crc) + payload

    @staticmethod
    def _payload(tlvs: Any) -> bytes:
        if isinstance(tlvs, bytes | bytearray | memoryview):
            return bytes(tlvs)
        if type(tlvs) in _RECORD_TYPES:
            return encode(tlvs)
        return b"".join(
            bytes(item) if isinstance(item, bytes | bytearray | memoryview) else encode(item) for item in tlvs
        )


_RECORD_TYPES = frozenset(layout.record for layout in LAYOUTS.values())
