"""Running a test script in a fresh interpreter, where no other test has compiled or run a kernel."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def assert_fresh_run_ok(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> None:
    """Run ``script`` (dedented) with this Python from the repo root, ``args`` as its argv and
    ``env`` over this environment; it must print ``ok`` last. On failure the end of its stderr is
    the assertion message."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=timeout, env={**os.environ, **(env or {})})
    assert done.stdout.strip().endswith("ok"), done.stderr[-3000:]
