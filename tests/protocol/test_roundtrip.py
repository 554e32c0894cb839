"""Property tests: any record the table allows round-trips; any chunking yields the same frames."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import alphapulse.protocol as P
from alphapulse.protocol._codec import Blob, Field, Kind, Text

from .conftest import feed

_INT_RANGES = {
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "i8": (-(2**7), 2**7 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "i64": (-(2**63), 2**63 - 1),
    "fixed": (-(2**63), 2**63 - 1),
    "u128": (0, 2**128 - 1),
    "u160": (0, 2**160 - 1),
    "u256": (0, 2**256 - 1),
    "i256": (-(2**255), 2**255 - 1),
}


def _kind(kind: Kind) -> st.SearchStrategy:
    if kind.py is bytes:
        return st.binary(min_size=kind.size, max_size=kind.size)
    lo, hi = _INT_RANGES[kind.name]
    # extremes on purpose: the edges are where encodings break
    return st.one_of(st.sampled_from([lo, hi, 0, min(hi, 1), max(lo, -1)]), st.integers(lo, hi))


def _tail(tail) -> st.SearchStrategy:
    if isinstance(tail, Text):
        return st.text(max_size=40)
    if isinstance(tail, Blob):
        return st.binary(max_size=300)
    if len(tail.elements) == 1:
        return st.lists(_kind(tail.elements[0][1]), max_size=40).map(tuple)
    element = st.tuples(*(_kind(k) for _, k in tail.elements))
    return st.lists(element, max_size=20).map(tuple)


def records_of(layout: P.Layout) -> st.SearchStrategy:
    kwargs = {item.name: _kind(item.kind) for item in layout.head if isinstance(item, Field)}
    kwargs.update({tail.name: _tail(tail) for tail in layout.tails})
    if layout.tlv_type == P.TLVType.EVM_LOG:
        kwargs["topics"] = st.lists(_kind(P.LAYOUTS[layout.tlv_type].tails[0].elements[0][1]), max_size=4).map(tuple)
    return st.builds(layout.record, **kwargs)


any_record = st.one_of(*(records_of(layout) for layout in P.LAYOUTS.values()))


@settings(max_examples=400, deadline=None)
@given(any_record)
def test_record_roundtrip(record):
    raw = P.encode(record)
    assert P.decode_payload(raw) == [record]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(any_record, min_size=1, max_size=3), min_size=1, max_size=6), st.data())
def test_messages_survive_any_chunking(groups, data):
    builder = P.MessageBuilder(P.RelayDomain.MARKET_DATA, 11, first_sequence=2**64 - 10)
    messages = [builder.build(group, 1_700_000_000_000_000_000 + i) for i, group in enumerate(groups)]
    stream = b"".join(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    frames, decoder = feed(chunks)
    assert frames == messages
    assert decoder.statistics().total_errors == 0
    assert [P.decode_message(f).tlvs for f in frames] == groups


def test_out_of_range_is_local_error():
    import pytest

    bad = [
        P.Trade(1, 2**63, 0, 0),
        P.Trade(-1, 0, 0, 0),
        P.PoolSwap(1, 1, b"\0" * 31, 0, 0, 0, 0, b"\0" * 20, b"\0" * 20, 0, 0, 0, 0, 0),
        P.PoolSwap(1, 1, b"\0" * 32, 0, 0, 0, 0, b"\0" * 20, b"\0" * 20, 2**256, 0, 0, 0, 0),
        P.InstrumentMapping(1, "x" * 70_000),
        P.Subscribe(1, 10, (256,), (), "x"),
    ]
    for record in bad:
        with pytest.raises(P.LocalProtocolError):
            P.encode(record)
    with pytest.raises(P.LocalProtocolError):
        P.MessageBuilder(1, 70_000)
    builder = P.MessageBuilder(1, 1, first_sequence=2**64 - 1)
    builder.build(P.Trade(1, 2, 3, 4), 0)
    with pytest.raises(P.LocalProtocolError):
        builder.build(P.Trade(1, 2, 3, 4), 0)
    with pytest.raises(P.LocalProtocolError):
        P.encode(object())
