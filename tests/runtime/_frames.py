"""Real frames for runtime tests: Trade messages with chosen (source, epoch, counter)."""

from __future__ import annotations

from alphapulse import protocol
from alphapulse.runtime import make_sequence


def trade_frames(source: int, epoch: int, counters, instrument_id: int = 11) -> bytes:
    out = []
    for n in counters:
        record = protocol.Trade(instrument_id=instrument_id, price=100, quantity=n, exchange_ts_ns=0)
        out.append(protocol.encode_message(1, source, make_sequence(epoch, n), 0, protocol.encode(record)))
    return b"".join(out)


def block(*parts: bytes) -> protocol.FrameBlock:
    return protocol.FrameBlock.from_bytes(b"".join(parts))


def counters_of(blocks) -> list[tuple[int, int]]:
    """(source, counter) of every frame in delivery order."""
    out = []
    for b in blocks:
        for s, q in zip(b.source.tolist(), b.sequence.tolist(), strict=True):
            out.append((s, q & ((1 << 40) - 1)))
    return out
