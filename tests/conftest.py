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
    from alphapulse.runtime._warm import load_hot_kernels

    load_hot_kernels()
