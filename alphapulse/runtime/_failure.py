"""A node's last words: why its process ended, as one line a person (and ``apply``) can read.

An exception that ends a node leaves trio as an ``ExceptionGroup`` whose printed traceback runs
to dozens of lines per start, and supervisord restarts the node again and again. So the node
logs the traceback once and then one line, last, naming the exception and where in our code it
was raised; ``apply --wait`` and ``status`` show that line beside a node that is not running.
"""

from __future__ import annotations

import os
import re
import sysconfig
import traceback
from collections import deque
from pathlib import Path

FAILED = "failed: "
"""what the node's last line says before the reason (``node NAME failed: ...``)"""
_LIBRARIES = tuple(
    os.path.realpath(p) for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                                  sysconfig.get_paths()["platlib"]}
)
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ (?:ERROR|CRITICAL) \S+ (?P<logger>[\w.]+): (?P<message>.*)$")
"""a line the node's logging format wrote at ERROR or above (``runtime/_host.py``)"""


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions an exception group holds, however deeply nested; ``[exc]`` otherwise."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def describe(exc: BaseException) -> str:
    """``FileNotFoundError: [Errno 2] ... (nodes/recorder.py:144 in open)``: the first real
    exception, where our code raised it (the innermost frame outside the standard library and
    installed packages), and how many others came with it."""
    found = leaves(exc)
    first = found[0]
    text = f"{type(first).__name__}: {first}" if str(first) else type(first).__name__
    where = _our_frame(first)
    if where is not None:
        text += f" ({where})"
    if len(found) > 1:
        text += f" and {len(found) - 1} more"
    return text


def _our_frame(exc: BaseException) -> str | None:
    """The innermost frame of our code, skipping helpers that raise on their caller's behalf
    (``__tracebackhide__ = True`` in the function, pytest's convention): a port that is taken
    is the node's, not ``start_listening``'s."""
    ours = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        if (filename.startswith("<") or os.path.realpath(filename).startswith(_LIBRARIES)
                or frame.f_locals.get("__tracebackhide__")):
            continue
        ours = (filename, lineno, frame.f_code.co_name)
    if ours is None:
        return None
    filename, lineno, function = ours
    path = os.path.realpath(filename)
    try:
        shown = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        shown = path
    if shown.startswith(".."):
        parts = Path(path).parts
        shown = os.path.join(*parts[-2:])
    return f"{shown}:{lineno} in {function}"


def last_error(log_path: str | os.PathLike[str], *, tail_bytes: int = 256 * 1024) -> str | None:
    """The last ERROR (or worse) message a node logged in ``log_path`` (its stderr log), without
    timestamp and logger; None when there is none or the file cannot be read. Reads only the
    file's tail: logs rotate at megabytes."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - tail_bytes))
            lines = deque(log.read().decode("utf-8", "replace").splitlines(), maxlen=4096)
    except OSError:
        return None
    for line in reversed(lines):
        match = _LOG_LINE.match(line.rstrip("\r"))
        if match:
            return match["message"]
    return None
