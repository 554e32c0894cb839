"""A topology file in a fresh run directory of its own, taken down (supervisord too) afterwards."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from alphapulse.cli import main
from alphapulse.supervise import RunBase, Supervisor


@contextlib.contextmanager
def deployed(monkeypatch, name: str, text: str) -> Iterator[tuple[Path, Path]]:
    """(run directory, topology file ``<name>.yaml`` holding ``text``); ALPHAPULSE_RUN_DIR points there."""
    base = Path(tempfile.mkdtemp(prefix="ap", dir="/tmp"))  # short: socket paths stay < 107 bytes
    monkeypatch.setenv("ALPHAPULSE_RUN_DIR", str(base))
    topo = base / f"{name}.yaml"
    topo.write_text(text)
    try:
        yield base, topo
    finally:
        main(["down", str(topo)])
        sup = Supervisor(RunBase(base))
        if sup.is_running():
            sup.shutdown()
        shutil.rmtree(base, ignore_errors=True)
