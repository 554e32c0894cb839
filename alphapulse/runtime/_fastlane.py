"""The idle lane: read hot sockets from trio's idle point instead of waking a task per read.

A trio task that waits for a socket costs one trip through trio's scheduler per wakeup: about
35-45 µs of CPU on this project's 2-core reference machine, against 10-15 µs for a plain
``poll`` + ``recv``. At 10k messages/s arriving one at a time, that trip is most of what a relay
and each of its subscribers spend. So an input link that is idle between small messages hands
its socket to this lane, and waits for it to be handed back.

The lane is a :class:`trio.abc.Instrument`. When trio is about to block (``before_io_wait``
with a positive timeout: nothing is runnable), the lane polls trio's own epoll descriptor
together with the registered sockets, for at most that timeout. A registered socket that becomes
readable has its callback run right there, synchronously: read, decode, track, deliver, publish.
The lane returns to trio as soon as trio has anything to do: its epoll descriptor is readable (I/O
for a task, a signal, a ``run_sync_soon`` from another thread), a callback made a task runnable
(then it also pokes trio's wakeup socket, so trio does not sleep on the timeout it computed
before), or the timeout passed (a deadline is due; poked likewise).

Callbacks must not raise: the lane catches anything they do and hands the socket back with the
error, for the owning task to re-raise. It needs two private attributes of trio's run loop (its
epoll object and run queue); :func:`idle_lane` returns None when they are not there (another
trio version or I/O backend), and input links then simply wait the usual way.

On by default on the trio releases in :data:`VERIFIED_TRIO`; ``ALPHAPULSE_IDLE_LANE=0`` in a
node's environment turns it off (every link then waits in its own task), ``=1`` forces it on
another trio release. The stalls once blamed on it were the garbage collector walking
retransmit-buffer blocks and, later, the retransmit ring growing mid-stream (see ``_heap`` and
``_retransmit``); with those gone, runs with the lane on and off show the same tails.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger("alphapulse.lane")

Callback = Callable[[], bool]
"""Called when its socket is readable; returns False to unregister (the socket is handed back)."""

VERIFIED_TRIO = ("0.35.",)
"""trio releases the lane was checked against (it reads two private attributes of the run loop
and relies on the run queue being one deque for the whole run). Others: off unless forced."""

_LANE: trio.lowlevel.RunVar[IdleLane | None] = trio.lowlevel.RunVar("alphapulse_idle_lane")


def _noop() -> None:
    pass


class IdleLane(trio.abc.Instrument):
    """Runs registered socket callbacks from trio's idle point (see the module docstring)."""

    def __init__(self, epoll_fd: int, runq: Any) -> None:
        self._poll = select.poll()
        self._poll.register(epoll_fd, select.POLLIN)
        self._epoll_fd = epoll_fd
        self._runq = runq
        self._token = trio.lowlevel.current_trio_token()
        self._callbacks: dict[int, Callback] = {}

    def register(self, fd: int, callback: Callback) -> None:
        self._callbacks[fd] = callback
        self._poll.register(fd, select.POLLIN)

    def unregister(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def before_io_wait(self, timeout: float) -> None:
        if timeout <= 0 or not self._callbacks:
            return
        end = time.monotonic() + timeout
        poll, epoll_fd, callbacks = self._poll, self._epoll_fd, self._callbacks
        while callbacks:
            left = end - time.monotonic()
            if left <= 0:
                break
            events = poll.poll(left * 1000.0)
            if not events:
                break
            trio_ready = False
            for fd, _ in events:
                if fd == epoll_fd:
                    trio_ready = True
                    continue
                callback = callbacks.get(fd)
                if callback is None:
                    continue
                if not callback():
                    self.unregister(fd)
            if trio_ready:
                return  # trio's own get_events will not block: it has events
            if self._runq:
                break  # a callback woke a task
        # trio computed its timeout before calling us: make it look again now
        self._token.run_sync_soon(_noop)


def idle_lane() -> IdleLane | None:
    """This trio run's lane (installed on first use), or None where it cannot work."""
    try:
        return _LANE.get()
    except LookupError:
        pass
    lane: IdleLane | None = None
    setting = os.environ.get("ALPHAPULSE_IDLE_LANE", "")
    if setting == "0" or (setting != "1" and not trio.__version__.startswith(VERIFIED_TRIO)):
        if setting != "0":
            log.info("the idle lane is verified on trio %s only, this is trio %s: input links wait the usual "
                     "way (ALPHAPULSE_IDLE_LANE=1 forces it)", " / ".join(VERIFIED_TRIO), trio.__version__)
        _LANE.set(None)
        return None
    try:
        # private: trio has no public way to poll its epoll descriptor or see its run queue
        runner = trio._core._run.GLOBAL_RUN_CONTEXT.runner
        epoll = runner.io_manager._epoll
        lane = IdleLane(epoll.fileno(), runner.runq)
    except (AttributeError, RuntimeError):
        log.info("trio's run loop is not the one the idle lane knows: input links wait the usual way")
    if lane is not None:
        trio.lowlevel.add_instrument(lane)
    _LANE.set(lane)
    return lane
