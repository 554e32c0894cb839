"""The repository's own hygiene, checked with the tests: ruff, and every example topology valid."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alphapulse.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_example_topology_validates(capsys) -> None:
    files = sorted(str(p) for p in (ROOT / "topologies").glob("*.yaml"))
    assert files
    assert main(["validate", *files]) == 0, capsys.readouterr()
