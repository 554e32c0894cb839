"""Fixtures shared by the source tests: the real Coinbase captures' received frames."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphapulse.captures import received_frames


@pytest.fixture(scope="module")
def advanced_frames(shared_data: Path) -> list[str]:
    """Coinbase Advanced Trade (``feed: advanced_trade``) frames, read once per test module."""
    return list(received_frames(shared_data / "coinbase_advanced" / "COINBASE.jsonl.zst"))


@pytest.fixture(scope="module")
def exchange_frames(shared_data: Path) -> list[str]:
    """Coinbase Exchange (``feed: exchange``) frames, read once per test module."""
    return list(received_frames(shared_data / "coinbase" / "COINBASE.ws.28.0"))
