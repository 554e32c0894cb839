"""The node watchdog (``runtime/_watchdog.py``) in a process of its own: kicked, it lets the
process run; not kicked, it ends it with every thread's stack on stderr, even while Python is
blocked. The real-supervisord restart of a hung node is in ``test_supervisord.py``."""

from __future__ import annotations

import subprocess
import sys
import time

SCRIPT = """
import time
from alphapulse.runtime._watchdog import Watchdog
watchdog = Watchdog({seconds})
for _ in range(12):  # 1.2 s of kicks, longer than the timeout
    watchdog.kick()
    time.sleep(0.1)
print("kicked", flush=True)
{after}
time.sleep({block})  # blocking, as a hung event loop does
print("survived", flush=True)
"""


def run(seconds: float, block: float, after: str = "") -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(seconds=seconds, block=block, after=after)],
                          capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


def test_an_unkicked_watchdog_ends_a_blocked_process_with_its_stack() -> None:
    done, took = run(0.5, block=20)
    assert done.stdout == "kicked\n"  # the kicks held it off; the block did not
    assert done.returncode == 1 and took < 10
    assert "Timeout (0:00:00.500000)!" in done.stderr
    assert 'File "<string>", line 10 in <module>' in done.stderr  # where it hung: the sleep


def test_a_disarmed_or_zero_watchdog_never_fires() -> None:
    done, _ = run(0.5, block=1.5, after="watchdog.disarm()")
    assert (done.returncode, done.stdout, done.stderr) == (0, "kicked\nsurvived\n", "")
    done, _ = run(0, block=1.5)
    assert (done.returncode, done.stdout, done.stderr) == (0, "kicked\nsurvived\n", "")
