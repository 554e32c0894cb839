"""A node process ends with the supervisord that started it.

When supervisord is stopped, it stops its programs first. When it is killed (``kill -9``, the
OOM killer, a crash), its children live on, re-parented to init, and nothing supervises them.
``alphapulse apply`` then starts a new supervisord and a second set of nodes beside the first.
The first set keeps running unseen: a second parquet writer in the same directory, a second
connection to every exchange. Measured before this module: a 3-node topology, supervisord
killed, the file applied again, and 6 node processes ran.

Linux's ``PR_SET_PDEATHSIG`` makes the kernel signal a process when its parent exits. The node
asks for SIGTERM, so it drains, flushes and closes as on ``supervisorctl stop``. This applies
only under supervisord (it sets ``SUPERVISOR_ENABLED`` for its programs). An ``alphapulse node``
started by hand keeps the usual Unix behaviour.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def end_with_supervisor(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Ask for SIGTERM when the parent (supervisord) exits; True if the kernel took the request.

    When the parent is already gone (it died between starting this process and this call),
    the signal is sent right away: the request alone would wait for a parent that never exits.
    """
    if environ.get("SUPERVISOR_ENABLED") != "1" or not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        return False
    if parent == 1 or os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
    return True
