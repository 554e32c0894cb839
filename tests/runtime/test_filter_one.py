"""A subscriber filters a one-frame block in Python; it must give exactly what the kernels give."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alphapulse import protocol
from alphapulse.protocol._batch import SCOPED_TYPES
from alphapulse.runtime._filter import subscription

SCOPED = [int(t) for t in np.flatnonzero(SCOPED_TYPES)]
INSTRUMENT = 0x1122334455667788
TYPES = st.one_of(st.sampled_from([*SCOPED, 0, 80, 85, 99, 100, 254]), st.integers(0, 254))


@st.composite
def payloads(draw) -> bytes:
    """First TLVs of every shape the header kernel reads: none, standard, extended, values shorter
    than an instrument id, lengths that run past the payload."""
    shape = draw(st.sampled_from(["empty", "one_byte", "standard", "extended", "short_extended"]))
    tlv = draw(TYPES)
    value = INSTRUMENT.to_bytes(8, "little") + draw(st.binary(max_size=24))
    value = value[: draw(st.integers(0, len(value)))]
    length = draw(st.one_of(st.just(len(value)), st.integers(0, 255)))
    if shape == "empty":
        return b""
    if shape == "one_byte":
        return bytes([tlv])
    if shape == "standard":
        return bytes([tlv, min(length, 255)]) + value
    if shape == "short_extended":
        return bytes([protocol.EXTENDED_TLV_MARKER, tlv])[: draw(st.integers(1, 2))] + b"\x00"
    return bytes([protocol.EXTENDED_TLV_MARKER, tlv]) + struct.pack("<H", length) + value


@settings(max_examples=400, deadline=None)
@given(payload=payloads(),
       types=st.lists(TYPES, max_size=3, unique=True),
       instruments=st.lists(st.sampled_from([INSTRUMENT, 7, 0]), max_size=2, unique=True))
def test_one_frame_filter_matches_the_kernels(payload: bytes, types: list[int], instruments: list[int]) -> None:
    frame = protocol.encode_message(protocol.RelayDomain.MARKET_DATA, 9, 1234, 5678, payload)
    block = protocol.FrameBlock.from_bytes(frame)
    assert block.first_tlv_of_one() == (int(block.tlv_type[0]), int(block.instrument_id[0]))
    flt = subscription(types, instruments).compile()
    mask = flt.mask(block.tlv_type, block.instrument_id)
    expected = block if mask.all() else block.with_placeholders(mask)
    fresh = protocol.FrameBlock.from_bytes(frame)  # no columns decoded: the path a publisher takes
    got = fresh if flt.keeps(*fresh.first_tlv_of_one()) else fresh.placeholder_of_one()
    assert bytes(got.data) == bytes(expected.data)
    assert got.sizes.tolist() == expected.sizes.tolist() and got.offsets.tolist() == expected.offsets.tolist()
    assert protocol.scan_frames(bytes(got.data), final=True).offsets.tolist() == [0]  # a valid frame, CRC included
