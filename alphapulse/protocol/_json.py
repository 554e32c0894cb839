"""Records as JSON values, for people and for ``jq``: what ``alphapulse tap`` prints.

The layout table says what every field is, so one walk renders every TLV type:

* fixed-point values (prices, quantities) are decimal strings (``"60000.12"``), exact;
* a field or array element named ``*instrument_id`` becomes ``*instrument``: the instrument's
  short name (``coinbase:BTC-USD``) once an ``InstrumentMapping`` named it, else its id as a
  decimal string;
* integers of up to 64 bits are numbers (nanosecond times need all 64: Python and jq 1.7 keep
  them exact); wider ones (u128/u256 amounts, sqrt prices) are decimal strings;
* bytes (addresses, hashes, blobs) are ``0x`` hex; an unknown TLV type is its number and bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alphapulse.protocol._codec import FIXED, Array, Blob, Field, Kind, Text
from alphapulse.protocol._fixed import format_fixed
from alphapulse.protocol._layouts import LAYOUTS
from alphapulse.protocol._tlv import UnknownTLV

_WIDE = 8
"""bytes beyond which an integer kind is written as a string"""
_INSTRUMENT = "instrument_id"


def record_to_json(record: Any, names: Mapping[int, str] | None = None) -> dict[str, Any]:
    """One decoded record as a JSON-ready dict, its type first (``{"type": "Trade", ...}``);
    ``names`` maps instrument ids to the names to show."""
    if names is None:
        names = {}
    if isinstance(record, UnknownTLV):
        return {"type": int(record.tlv_type), "bytes": _hex(record.value)}
    layout = LAYOUTS[type(record).TLV_TYPE]
    out: dict[str, Any] = {"type": layout.name}
    for item in layout.head:
        if isinstance(item, Field):
            key, value = _value(item.name, item.kind, getattr(record, item.name), names)
            out[key] = value
    for tail in layout.tails:
        value = getattr(record, tail.name)
        if isinstance(tail, Array):
            out[tail.name] = _array(tail, value, names)
        elif isinstance(tail, Blob):
            out[tail.name] = _hex(value)
        elif isinstance(tail, Text):
            out[tail.name] = value
    return out


def _array(tail: Array, elements: Any, names: Mapping[int, str]) -> list[Any]:
    if len(tail.elements) == 1:
        name, kind = tail.elements[0]
        return [_value(name, kind, v, names)[1] for v in elements]
    rendered = []
    for element in elements:
        row = {}
        for (name, kind), v in zip(tail.elements, element, strict=True):
            key, value = _value(name, kind, v, names)
            row[key] = value
        rendered.append(row)
    return rendered


def _value(name: str, kind: Kind, value: Any, names: Mapping[int, str]) -> tuple[str, Any]:
    if name.endswith(_INSTRUMENT):
        return name.removesuffix("_id"), names.get(value) or str(value)
    if kind is FIXED:
        return name, format_fixed(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return name, _hex(value)
    if kind.size > _WIDE and isinstance(value, int):
        return name, str(value)
    return name, value


def _hex(value: bytes | bytearray | memoryview) -> str:
    return "0x" + bytes(value).hex()
