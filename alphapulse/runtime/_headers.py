"""Header fields the runtime's hot path reads straight from a block's frames.

A :class:`~alphapulse.protocol.FrameBlock` decodes its six per-frame header columns (including
each frame's first TLV type and instrument, for subscription filters) in one pass the first time
any of them is asked for. Moving a block through a link or a relay needs only three of them
(source and sequence for the sequence tracker, relay domain for a relay), and that full pass was
a fifth of a subscriber's CPU per message in bulk. These kernels read just those fields at their
offsets, taken from :data:`alphapulse.protocol.HEADER_FIELDS` (the one layout table), so the
columns are only computed when something else (a filter, a node's own code) asks for them.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from alphapulse.protocol._batch import _u16, _u64, as_u8
from alphapulse.protocol._header import HEADER_FIELDS, HEADER_SIZE

_WIDTHS = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}


def _field_offsets() -> dict[str, int]:
    offsets, at = {}, 0
    for name, wire, _ in HEADER_FIELDS:
        offsets[name] = at
        at += _WIDTHS[wire]
    assert at == HEADER_SIZE
    return offsets


_AT = _field_offsets()
SOURCE_AT = _AT["source"]
SEQUENCE_AT = _AT["sequence"]
RELAY_DOMAIN_AT = _AT["relay_domain"]

read_u16, read_u64 = _u16, _u64
"""Little-endian header words, for these kernels and the sequence tracker's: one unaligned load
each (numba intrinsics, see ``protocol._batch._load_codegen``)."""


@numba.njit(cache=True, nogil=True)
def _count_control(buf, offsets):  # pragma: no cover - jit
    count = 0
    for i in range(offsets.shape[0]):
        if read_u64(buf, offsets[i] + SEQUENCE_AT) == 0:
            count += 1
    return count


def count_control(block: Any) -> int:
    """How many frames of ``block`` are unsequenced control frames (sequence 0)."""
    known = getattr(block, "control_frames", None)  # counted by the decoder's scan
    if known is not None:
        return known
    if "_columns" in block.__dict__:  # already decoded: reuse
        sequences = block.sequence
        return int(sequences.shape[0] - np.count_nonzero(sequences))
    return _count_control(as_u8(block.data), block.offsets)


def frame_bytes(block: Any) -> np.ndarray:
    """``block.data`` as a flat uint8 array (no copy), for the kernels here."""
    return as_u8(block.data)


def relay_domains(block: Any) -> np.ndarray:
    """The relay domain of every frame (uint8), without decoding the other header columns."""
    if "_columns" in block.__dict__:
        return block.relay_domain
    return as_u8(block.data)[block.offsets + RELAY_DOMAIN_AT]
