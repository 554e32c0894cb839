"""Running a test script in a fresh interpreter, where no other test has compiled or run a kernel."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def assert_fresh_run_ok(script: str) -> None:
    """Run ``script`` (dedented) with this Python from the repo root; it must print ``ok`` last.
    On failure the end of its stderr is the assertion message."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, cwd=str(ROOT), timeout=600
    )
    assert done.stdout.strip().endswith("ok"), done.stderr[-3000:]
