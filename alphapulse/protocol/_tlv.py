"""TLV framing and the record-level codec built on the layout table.

Standard TLV: ``type u8, length u8, value``. Extended TLV (values up to 65535 bytes):
``255, 0, type u8, length u16 LE, value``. ``encode_tlv`` picks the standard form whenever the
value fits 255 bytes; readers accept either form for any type.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from alphapulse.protocol._codec import Layout
from alphapulse.protocol._errors import LocalProtocolError, MalformedFrame
from alphapulse.protocol._instrument import Instrument
from alphapulse.protocol._layouts import LAYOUTS, InstrumentMapping
from alphapulse.protocol._types import EXTENDED_TLV_MARKER, TLVType

MAX_STANDARD_VALUE = 255
MAX_EXTENDED_VALUE = 65535
_EXT = struct.Struct("<BBBH")
_BY_CLASS: dict[type, Layout] = {layout.record: layout for layout in LAYOUTS.values()}
_DECODERS = {int(t): layout.decode_value for t, layout in LAYOUTS.items()}
_LEVEL = np.dtype([("price", "<i8"), ("qty", "<i8")])
_CHANGE = np.dtype([("price", "<i8"), ("qty", "<i8"), ("side", "u1")])
assert _CHANGE.itemsize == 17


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownTLV:
    """A TLV whose type this version does not define; kept as bytes so it can be forwarded."""

    tlv_type: int
    value: bytes


def layout_for(tlv_type: int) -> Layout:
    """The table row of a type; raises KeyError for an undefined type."""
    return LAYOUTS[tlv_type]  # type: ignore[index]


def encode_tlv(tlv_type: int, value: bytes | bytearray | memoryview) -> bytes:
    """Frame a value: standard header if it fits 255 bytes, extended otherwise."""
    n = len(value)
    if not 0 < tlv_type < EXTENDED_TLV_MARKER:
        raise LocalProtocolError(f"TLV type {tlv_type} must be 1-254")
    if n <= MAX_STANDARD_VALUE:
        return bytes((tlv_type, n)) + value
    if n <= MAX_EXTENDED_VALUE:
        return _EXT.pack(EXTENDED_TLV_MARKER, 0, tlv_type, n) + value
    raise LocalProtocolError(f"TLV value of {n} bytes exceeds {MAX_EXTENDED_VALUE}")


def iter_tlvs(payload: bytes | bytearray | memoryview) -> Iterator[tuple[int, memoryview]]:
    """Yield (type, value view) for each TLV; raises MalformedFrame on a truncated TLV."""
    view = memoryview(payload)
    n = len(view)
    pos = 0
    while pos < n:
        if n - pos < 2:
            raise MalformedFrame(f"truncated TLV header at payload offset {pos}")
        tlv_type = view[pos]
        if tlv_type == EXTENDED_TLV_MARKER:
            if n - pos < 5:
                raise MalformedFrame(f"truncated extended TLV header at payload offset {pos}")
            _, _, tlv_type, length = _EXT.unpack_from(view, pos)
            start = pos + 5
        else:
            length = view[pos + 1]
            start = pos + 2
        end = start + length
        if end > n:
            raise MalformedFrame(f"TLV type {tlv_type} at offset {pos} claims {length} bytes, {n - start} left")
        yield tlv_type, view[start:end]
        pos = end


def encode(record: Any) -> bytes:
    """A record as one TLV, header included (standard or extended as the size requires)."""
    if isinstance(record, UnknownTLV):
        return encode_tlv(record.tlv_type, record.value)
    try:
        layout = _BY_CLASS[type(record)]
    except KeyError:
        raise LocalProtocolError(f"{type(record).__name__} is not a TLV record") from None
    value = layout.encode_value(record)
    if layout.fixed_size is not None and layout.fixed_size <= MAX_STANDARD_VALUE:
        return bytes((layout.tlv_type, layout.fixed_size)) + value
    return encode_tlv(layout.tlv_type, value)


def decode(tlv_type: int, value: bytes | bytearray | memoryview) -> Any:
    """The record for one TLV value; UnknownTLV for undefined types; MalformedFrame if bad."""
    layout = LAYOUTS.get(tlv_type)  # type: ignore[call-overload]
    if layout is None:
        return UnknownTLV(tlv_type, bytes(value))
    return layout.decode_value(value)


def decode_payload(payload: bytes | bytearray | memoryview) -> list[Any]:
    """Every TLV of a message payload as records, in order; MalformedFrame if one is bad."""
    view = memoryview(payload)
    n = len(view)
    if n >= 2 and view[1] == n - 2 and view[0] != EXTENDED_TLV_MARKER:
        # one standard TLV: the common message shape, skip the generator
        decoder = _DECODERS.get(view[0])
        if decoder is not None:
            return [decoder(view[2:])]
    return [decode(tlv_type, value) for tlv_type, value in iter_tlvs(view)]


def mapping_for(instrument: Instrument) -> Any:
    """The InstrumentMapping record that names ``instrument`` on the wire."""
    return InstrumentMapping(instrument.id, instrument.canonical)


def order_book_levels(value: bytes | bytearray | memoryview) -> tuple[np.ndarray, np.ndarray]:
    """Zero-copy numpy views (fields ``price``, ``qty``) of an OrderBook value's bids and asks."""
    layout = LAYOUTS[TLVType.ORDER_BOOK]
    if len(value) < layout.head_size:
        raise MalformedFrame("OrderBook value shorter than its head")
    n_bids, n_asks = struct.unpack_from("<HH", value, layout.head_size - 4)
    if layout.head_size + (n_bids + n_asks) * _LEVEL.itemsize != len(value):
        raise MalformedFrame("OrderBook level counts do not match the value size")
    bids = np.frombuffer(value, _LEVEL, n_bids, layout.head_size)
    asks = np.frombuffer(value, _LEVEL, n_asks, layout.head_size + n_bids * _LEVEL.itemsize)
    return bids, asks


def order_book_changes(value: bytes | bytearray | memoryview) -> np.ndarray:
    """Zero-copy numpy view (fields ``price``, ``qty``, ``side``) of an OrderBookDelta's changes."""
    layout = LAYOUTS[TLVType.ORDER_BOOK_DELTA]
    if len(value) < layout.head_size:
        raise MalformedFrame("OrderBookDelta value shorter than its head")
    (n_changes,) = struct.unpack_from("<H", value, layout.head_size - 3)
    if layout.head_size + n_changes * _CHANGE.itemsize != len(value):
        raise MalformedFrame("OrderBookDelta change count does not match the value size")
    return np.frombuffer(value, _CHANGE, n_changes, layout.head_size)
