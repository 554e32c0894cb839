"""A live update waits for a node that is alive but not yet answering on its control socket."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from alphapulse.runtime import ControlError
from alphapulse.supervise._apply import _wait_until_answering


@pytest.fixture
def stale_socket():
    """A control socket file left by a killed node: it exists, and connecting is refused."""
    with tempfile.TemporaryDirectory(prefix="apw", dir="/tmp") as tmp:
        path = str(Path(tmp) / "control.sock")
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()
        yield path


def _listen_after(path: str, delay: float, bound: list[socket.socket]) -> threading.Thread:
    def late_start() -> None:
        time.sleep(delay)
        Path(path).unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        bound.append(listener)

    thread = threading.Thread(target=late_start)
    thread.start()
    return thread


def test_a_stale_socket_file_is_not_taken_for_a_started_node(stale_socket) -> None:
    bound: list[socket.socket] = []
    thread = _listen_after(stale_socket, 0.6, bound)
    started = time.monotonic()
    try:
        _wait_until_answering(stale_socket, lambda: True, timeout=10)
        assert time.monotonic() - started >= 0.5
        assert bound, "returned before the node listened"
    finally:
        thread.join()
        for listener in bound:
            listener.close()


def test_a_node_that_exits_while_starting_ends_the_wait(stale_socket) -> None:
    started = time.monotonic()
    with pytest.raises(ControlError, match="exited before its control socket answered"):
        _wait_until_answering(stale_socket, lambda: False, timeout=30)
    assert time.monotonic() - started < 5


def test_a_node_that_never_answers_runs_out_the_wait(stale_socket) -> None:
    with pytest.raises(ControlError, match="did not answer within"):
        _wait_until_answering(stale_socket, lambda: True, timeout=0.3)
