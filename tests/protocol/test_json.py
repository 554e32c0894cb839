"""Records as JSON (``protocol.record_to_json``, what ``alphapulse tap`` prints): every TLV type
renders to plain JSON, and nothing is lost — the JSON reads back to the same record."""

from __future__ import annotations

import json
from typing import Any

import pytest

import alphapulse.protocol as P
from alphapulse.protocol._codec import FIXED, Array, Blob, Field, Text
from tests.protocol._records import BTC, POOL, RECORDS

NAMES = {BTC: "coinbase:BTC-USD", POOL.id: POOL.short}
IDS = {name: id_ for id_, name in NAMES.items()}


def _back(name: str, kind: Any, value: Any) -> Any:
    """The wire value a rendered value stands for (the inverse of the rendering rules)."""
    if name.endswith("instrument_id"):
        assert isinstance(value, str)
        return IDS.get(value) or int(value)
    if kind is FIXED:
        assert isinstance(value, str)
        return P.parse_fixed(value)
    if kind.py is bytes:
        assert value.startswith("0x")
        return bytes.fromhex(value[2:])
    if kind.size > 8:
        assert isinstance(value, str)  # wider than a JSON reader's integers: a decimal string
        return int(value)
    assert isinstance(value, int)
    return value


def _record_from_json(rendered: dict[str, Any]) -> Any:
    layout = next(layout for layout in P.LAYOUTS.values() if layout.name == rendered["type"])
    values = {}
    for item in layout.head:
        if isinstance(item, Field):
            key = item.name.removesuffix("_id") if item.name.endswith("instrument_id") else item.name
            values[item.name] = _back(item.name, item.kind, rendered[key])
    for tail in layout.tails:
        value = rendered[tail.name]
        if isinstance(tail, Array) and len(tail.elements) == 1:
            values[tail.name] = tuple(_back(*tail.elements[0], v) for v in value)
        elif isinstance(tail, Array):
            values[tail.name] = tuple(
                tuple(_back(name, kind, row[name.removesuffix("_id") if name.endswith("instrument_id") else name])
                      for name, kind in tail.elements) for row in value)
        elif isinstance(tail, Blob):
            values[tail.name] = bytes.fromhex(value[2:])
        elif isinstance(tail, Text):
            values[tail.name] = value
    return layout.record(**values)


EXTREMES = {  # fixed-point values a double cannot hold, and the smallest step
    "huge_trade": P.Trade(BTC, 2**62 + 1, -(2**61) - 3, 2**64 - 1, P.Side.SELL, 255),
    "tiny_quote": P.Quote(BTC, 1, -1, 10**8 + 1, 2**63 - 1, 0),
}


@pytest.mark.parametrize("key", sorted(RECORDS) + sorted(EXTREMES))
def test_every_type_renders_to_plain_json_that_reads_back_to_the_same_record(key: str) -> None:
    record = RECORDS.get(key) or EXTREMES[key]
    rendered = json.loads(json.dumps(P.record_to_json(record, NAMES)))  # plain JSON: no bytes, no Decimal
    assert rendered["type"] == P.layout_for(type(record).TLV_TYPE).name
    assert _record_from_json(rendered) == record


def test_a_trade_reads_as_a_person_would_write_it() -> None:
    trade = P.Trade(BTC, P.parse_fixed("65000.12345678"), P.parse_fixed("0.5"), 1_700_000_000_123_456_789, P.Side.BUY)
    assert P.record_to_json(trade, NAMES) == {
        "type": "Trade", "instrument": "coinbase:BTC-USD", "price": "65000.12345678", "quantity": "0.5",
        "exchange_ts_ns": 1_700_000_000_123_456_789, "side": 1, "flags": 0,
    }
    assert P.record_to_json(trade)["instrument"] == str(BTC)  # not named yet: the id, as a string


def test_wide_integers_are_strings_and_an_unknown_type_keeps_its_bytes() -> None:
    swap = P.record_to_json(RECORDS["pool_swap"], NAMES)
    assert swap["amount_out"] == str(2**255 + 12345) and swap["tick"] == -887272
    assert swap["instrument"] == POOL.short and swap["token_in"] == "0x2791bca1f2de4661ed88a30c99a7a9449aa84174"
    assert P.record_to_json(P.UnknownTLV(77, b"\x01\xff")) == {"type": 77, "bytes": "0x01ff"}
