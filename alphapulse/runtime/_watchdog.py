"""A node whose event loop stops turning ends, with every thread's stack in its log.

supervisord restarts a process that exits. It does not notice one that hangs and keeps running:
a deadlock on the GIL, a C call that never returns, a blocking call on the event loop. Such a
node stays RUNNING in ``supervisorctl`` and counts in ``status``'s "12/12 running", but its
control socket is silent and its input backs up into the upstream's drops. Measured on the demo
(session 23): three nodes deadlocked by a debugger left ``status`` at 12/12 running while
``books`` dropped 101,548 messages into its stuck relay, and nothing restarted anything.

So the node host re-arms :func:`faulthandler.dump_traceback_later` from its once-a-second sampler
(a task on the event loop). If the loop does not come round for ``watchdog_seconds`` (a node's
``restart`` block, default 60), the timer fires. Its thread is C code that waits without the GIL,
so it fires even when Python is stuck. It writes every thread's traceback to stderr, which is the
node's log and shows where it hung, and ends the process with exit status 1. supervisord then
restarts the node as it would a crashed one. Its subscribers recover the gap from the relay's
buffer or a snapshot, and ``status`` counts the restart.

The timer is process-wide, so only a node process arms it (``alphapulse node``). Hosts that a
test runs in its own process do not. ``watchdog_seconds: 0`` turns it off. The host disarms it
before it drains on a stop, which ``stopwaitsecs`` bounds already.
"""

from __future__ import annotations

import faulthandler
import sys

DEFAULT_SECONDS = 60.0
"""A node's ``restart.watchdog_seconds`` when its plan has none (the topology schema's default)."""


class Watchdog:
    """Ends the process unless :meth:`kick` is called at least every ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.armed = False

    def kick(self) -> None:
        """Push the deadline ``seconds`` on from now (arms it the first time)."""
        if self.seconds <= 0:
            return
        faulthandler.dump_traceback_later(self.seconds, exit=True, file=sys.stderr)
        self.armed = True

    def disarm(self) -> None:
        if self.armed:
            faulthandler.cancel_dump_traceback_later()
            self.armed = False
