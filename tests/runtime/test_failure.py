"""A node's last words (``runtime/_failure.py``): one line naming the exception and our frame
that raised it, and reading that line back from the node's log."""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from alphapulse.runtime._failure import describe, last_error, leaves


def _open_missing(path: Path) -> None:
    path.open("rb")  # raised inside pathlib/io; the frame to name is this one


async def _fail_in_a_nursery(path: Path) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep_forever)
        _open_missing(path)


def test_describe_names_the_first_real_exception_and_our_frame(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    try:
        trio.run(_fail_in_a_nursery, missing)
    except BaseException as exc:  # the group trio raises is what a node sees
        caught = exc
    assert isinstance(caught, BaseExceptionGroup)
    assert [type(e) for e in leaves(caught)] == [FileNotFoundError]
    line = describe(caught)
    assert line.startswith(f"FileNotFoundError: [Errno 2] No such file or directory: '{missing}' (")
    assert line.endswith(f"test_failure.py:{_open_missing.__code__.co_firstlineno + 1} in _open_missing)")


def test_describe_counts_what_came_with_it() -> None:
    group = ExceptionGroup("two", [ValueError("bad param"), ExceptionGroup("inner", [KeyError("x")])])
    assert describe(group) == "ValueError: bad param and 1 more"  # never raised: no frame to name
    assert describe(RuntimeError()) == "RuntimeError"


def test_last_error_reads_the_nodes_own_format_back(tmp_path: Path) -> None:
    log_path = tmp_path / "node.err.log"
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s rec %(name)s: %(message)s"))  # as _host
    log = logging.getLogger("test_failure.node")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("node rec failed: first start")
        log.warning("upstream slow")
        log.error("node rec failed", exc_info=ValueError("traceback lines follow, unformatted"))
        log.error("node rec failed: NotADirectoryError: [Errno 20] (nodes/recorder.py:144 in open)")
        log.info("a later info line is not a reason")
    finally:
        log.removeHandler(handler)
        handler.close()
    assert last_error(log_path) == "node rec failed: NotADirectoryError: [Errno 20] (nodes/recorder.py:144 in open)"
    assert last_error(log_path, tail_bytes=10) is None  # only the tail is read: no whole line in it
    assert last_error(tmp_path / "absent.log") is None
    quiet = tmp_path / "quiet.log"
    quiet.write_text("2026-11-22 07:15:27,526 INFO rec alphapulse.node: ready\n")
    assert last_error(quiet) is None
