"""Kernels are compiled by one process at a time until numba's cache is filled (``_warm``)."""

from __future__ import annotations

import fcntl
import os
import pathlib
import threading
import time

from alphapulse.runtime._warm import _code_key, compiled_once


def test_a_second_loader_waits_for_the_first_then_nobody_waits() -> None:
    """Separate lock descriptions conflict like separate processes do, so threads show it."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp)
        events: list[str] = []

        def load(name: str, hold: float) -> None:
            with compiled_once(directory, "k1"):
                events.append(f"{name} start")
                time.sleep(hold)
                events.append(f"{name} end")

        first = threading.Thread(target=load, args=("first", 0.3))
        first.start()
        time.sleep(0.1)
        load("second", 0)  # blocks until the first has compiled
        first.join()
        assert events == ["first start", "first end", "second start", "second end"]
        assert (directory / "kernels-runtime-k1.ready").exists()

        # filled: a loader no longer takes the lock, even while something holds it
        fd = os.open(directory / "kernels-runtime.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            started = time.monotonic()
            load("third", 0)
            assert time.monotonic() - started < 0.2
        finally:
            os.close(fd)

        # the code changed: compiled under the lock again, and the old marker goes; another
        # name's (a node kind's kernels) has its own lock and marker, and stays
        load("fourth", 0)
        with compiled_once(directory, "k1", name="transform.x"):
            pass
        with compiled_once(directory, "k2"):
            pass
        assert sorted(p.name for p in directory.glob("*.ready")) == [
            "kernels-runtime-k2.ready", "kernels-transform.x-k1.ready"]


def test_no_usable_directory_means_no_lock() -> None:
    ran = []
    with compiled_once(None, "k"):
        ran.append(True)
    assert ran == [True]


def test_the_key_follows_the_source_files(tmp_path: pathlib.Path) -> None:
    (tmp_path / "sub").mkdir()
    source = tmp_path / "sub" / "kernel.py"
    source.write_text("x = 1\n")
    before = _code_key(tmp_path)
    assert _code_key(tmp_path) == before
    os.utime(source, ns=(1, 1))  # numba's cache checks mtime and size
    assert _code_key(tmp_path) != before


def test_a_kinds_own_kernels_load_through_its_hook_once_per_call() -> None:
    """``load_kind_kernels`` runs a kind's ``load_kernels`` (under that kind's compile lock) and
    says whether there was one; a kind without the hook is left alone."""
    from alphapulse.runtime._warm import load_kind_kernels

    class WithKernels:
        calls = 0

        def load_kernels(self) -> None:
            WithKernels.calls += 1

    assert load_kind_kernels(WithKernels(), "transform.with_kernels", __file__) is True
    assert WithKernels.calls == 1
    assert load_kind_kernels(object(), "sink.without", __file__) is False
