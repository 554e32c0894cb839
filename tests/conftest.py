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


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """Put SIGTERM's and SIGINT's handlers back after each test. A node host listens for both
    (trio's ``open_signal_receiver``); tests that run several hosts in one process end them in
    any order, and each puts back what it found, so the last one out could leave another's
    handler installed for every later test (one process runs one host, where this cannot happen)."""
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        if signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)
