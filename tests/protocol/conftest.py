"""Shared helpers: feed bytes to a FrameDecoder in every way they can arrive (h11's ``tr()``)."""

from __future__ import annotations

from collections.abc import Iterable

import alphapulse.protocol as P


def drain(decoder: P.FrameDecoder) -> list[bytes]:
    """Every frame the decoder can give now."""
    out: list[bytes] = []
    while True:
        block = decoder.next_block()
        if block is P.NEED_DATA:
            return out
        assert isinstance(block, P.FrameBlock) and len(block) > 0
        out.extend(bytes(frame) for frame in block.frames())


def feed(chunks: Iterable[bytes], *, eof: bool = True, **kwargs) -> tuple[list[bytes], P.FrameDecoder]:
    """Feed chunks one by one, draining after each; then EOF."""
    decoder = P.FrameDecoder(**kwargs)
    frames: list[bytes] = []
    for chunk in chunks:
        if not chunk:
            continue  # b"" would mean EOF
        decoder.receive_data(chunk)
        frames += drain(decoder)
    if eof:
        decoder.receive_data(b"")
        frames += drain(decoder)
    return frames, decoder


def every_way(data: bytes) -> Iterable[tuple[str, list[bytes]]]:
    """(description, chunking) for: whole, byte by byte, and split at every offset."""
    yield "whole", [data]
    yield "bytewise", [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield f"split@{cut}", [data[:cut], data[cut:]]
