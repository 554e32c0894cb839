"""The idle lane's native wait, over real socket pairs: a socket registered with a waiter is read
by the waiter inside its own poll of the lane's ``struct pollfd`` array, every other socket the
same poll found readable still gets its callback, and a waiter's False hands its socket back."""

from __future__ import annotations

import ctypes
import socket
import threading
import time

import numpy as np
import pytest
import trio

from alphapulse.runtime._fastlane import idle_lane

_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture
def lane_forced(monkeypatch):
    monkeypatch.setenv("ALPHAPULSE_IDLE_LANE", "1")


async def test_a_waiter_reads_its_socket_in_its_poll_and_the_others_keep_their_callbacks(lane_forced) -> None:
    lane = idle_lane()
    assert lane is not None, "this trio run loop has no idle lane"
    native_end, native_feed = socket.socketpair()
    plain_end, plain_feed = socket.socketpair()
    native_end.setblocking(False)
    plain_end.setblocking(False)
    by_waiter: list[bytes] = []
    by_callback: list[tuple[str, bytes]] = []
    polls: list[int] = []
    stopped = trio.Event()

    def waiter(pollfds: np.ndarray, timeout_ms: int, index: int) -> tuple[int, bool | None]:
        polls.append(timeout_ms)
        ready = _libc.poll(ctypes.c_void_p(pollfds.ctypes.data), len(pollfds) // 2, timeout_ms)
        if ready <= 0 or pollfds[2 * index + 1] >> 16 == 0:
            return ready, None
        pollfds[2 * index + 1] &= 0xFFFF
        data = native_end.recv(100)
        by_waiter.append(data)
        if data.endswith(b"stop"):
            stopped.set()
            return ready, False
        return ready, True

    def callback(name: str, sock: socket.socket):
        def on_readable() -> bool:
            by_callback.append((name, sock.recv(100)))
            return True
        return on_readable

    def feed() -> None:  # another thread, while trio sits in the lane
        time.sleep(0.05)
        native_feed.send(b"one")
        plain_feed.send(b"first")
        time.sleep(0.05)
        native_feed.send(b"two")
        time.sleep(0.05)
        plain_feed.send(b"second")
        native_feed.send(b"stop")

    with native_end, native_feed, plain_end, plain_feed:
        lane.register(native_end.fileno(), callback("native", native_end), waiter)
        lane.register(plain_end.fileno(), callback("plain", plain_end))
        thread = threading.Thread(target=feed)
        thread.start()
        with trio.fail_after(5):
            await stopped.wait()
            while len(by_callback) < 2:
                await trio.sleep(0.01)
        thread.join()
        assert lane._native is None  # the waiter's False handed its socket back
        assert native_end.fileno() not in lane._callbacks and plain_end.fileno() in lane._callbacks
        lane.unregister(plain_end.fileno())
    assert by_waiter == [b"one", b"two", b"stop"]  # never through the native socket's own callback
    assert by_callback == [("plain", b"first"), ("plain", b"second")]
    assert polls and all(t > 0 for t in polls)  # it waited only while trio had nothing to do


async def test_a_waiter_that_cannot_wait_now_leaves_the_poll_to_the_lane(lane_forced) -> None:
    """A waiter answering None (its fast path is not usable right now) is not a read: the lane
    polls itself, and the socket's callback reads."""
    lane = idle_lane()
    assert lane is not None
    end, feed = socket.socketpair()
    end.setblocking(False)
    asked: list[int] = []
    got: list[bytes] = []
    done = trio.Event()

    def on_readable() -> bool:
        got.append(end.recv(100))
        done.set()
        return False

    def waiter(pollfds: np.ndarray, timeout_ms: int, index: int) -> None:
        asked.append(index)
        return None

    with end, feed:
        lane.register(end.fileno(), on_readable, waiter)
        threading.Timer(0.05, lambda: feed.send(b"x")).start()
        with trio.fail_after(5):
            await done.wait()
    assert got == [b"x"] and asked and set(asked) == {1}  # entry 0 is trio's own epoll descriptor
    assert end.fileno() not in lane._callbacks
