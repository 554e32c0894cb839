"""The public surface exists, and topology code stays free of runtime and socket machinery."""

from __future__ import annotations

import subprocess
import sys

import alphapulse.topology as topology


def test_all_exports_exist():
    for name in topology.__all__:
        assert hasattr(topology, name), name


def test_topology_imports_no_io_machinery():
    code = ("import sys, alphapulse.topology; "
            "bad = [m for m in ('trio', 'trio_websocket', 'alphapulse.runtime', "
            "'alphapulse.supervise', 'xmlrpc.client') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
