"""Fixtures shared by the transform tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture
def sockets() -> Iterator[dict[str, str]]:
    """Paths for a host test's upstream, data and control Unix sockets, in a short /tmp directory
    (socket paths must stay under 108 bytes)."""
    base = tempfile.mkdtemp(prefix="aptr", dir="/tmp")
    yield {name: os.path.join(base, f"{name}.sock") for name in ("up", "data", "control")}
    shutil.rmtree(base, ignore_errors=True)
