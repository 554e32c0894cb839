"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real captures). Skips when absent; fails instead under
    ``ALPHAPULSE_REQUIRE_SHARED_DATA=1`` (CI), so missing data never passes silently."""
    path = Path(os.environ.get("ALPHAPULSE_SHARED_DATA", SHARED_DATA))
    if not path.is_dir():
        message = f"real captures not found at {path} (clone ../shared beside this repo)"
        if os.environ.get("ALPHAPULSE_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> None:
    """Compile (or load from numba's cache) the protocol and runtime kernels every node uses,
    once, before any test starts a clock: on a fresh clone the first compile takes tens of seconds,
    which must not count against a test's own deadlines."""
    import numpy as np

    from alphapulse import protocol
    from alphapulse.runtime import SequenceTracker, relay_domains, subscription
    from alphapulse.runtime._headers import count_control

    builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 7)
    frames = b"".join(builder.build(protocol.Trade(1, 2, 3, 4), 5) for _ in range(8))
    decoder = protocol.FrameDecoder()
    decoder.receive_data(frames + b"garbage" + frames[:40])
    block = decoder.next_block()
    block = protocol.FrameBlock.concat([block, protocol.FrameBlock.from_bytes(frames)])
    keep = np.arange(len(block)) % 2 == 0
    block.select(keep).with_placeholders(keep[: len(block) // 2])
    relay_domains(block)
    count_control(protocol.FrameBlock.from_bytes(frames))
    trusting = protocol.FrameDecoder(verify_checksums=False)
    trusting.receive_data(frames)
    trusting.next_block()
    protocol.verify_batch(block.data, block.offsets, block.sizes)
    protocol.trade_columns(protocol.FrameBlock.from_bytes(frames))
    subscription([1], [1]).compile().mask(block.tlv_type, block.instrument_id)
    SequenceTracker().feed(block, 0.0)
