"""Read exchange capture files: what a client sent and received, line by line, lazily.

Two formats are read, chosen from the file's first bytes (not its name):

**Line format** (``*.ws.*``, ``*.http.*``, ``*.0``; the cryptofeed ``sample_data`` format).
Plain UTF-8, one record per line::

    wss://HOST/PATH <-> TS          a WebSocket connection opened at unix time TS
    wss://HOST/PATH <- TS: JSON     a message the client SENT (subscribe requests)
    TS: FRAME                       a frame RECEIVED at TS (split on the FIRST ": "; FRAME is raw)
    URL -> TS: BODY                 a REST response body
    configuration: JSON             the recorder's own settings (metadata, not a record)

Received frames do not name their connection; their ``url`` is that of the last connection
opened before them in the file (``None`` if none was).

**Coinbase Advanced Trade JSON lines**, zstd-compressed (``COINBASE.jsonl.zst``): line 1 is a
header object (``{"t": "header", ...}``, see :func:`capture_header`), then one object per line
with ``t`` = ``http`` (``url``, ``data``), ``connect`` (``addr``), ``send`` (``addr``, ``data``)
or ``recv`` (``data`` is the raw frame); every row has ``ts`` and a ``conn`` name.

Both become :class:`CaptureRecord`. A line that cannot be read (no timestamp, unknown marker,
bad JSON row, invalid UTF-8) is skipped, counted in :class:`CaptureStatistics` and logged as a
warning naming the file and line: one bad line never makes a whole capture unreadable.

The parsing is sans-IO (:func:`parse_line`, :func:`parse_jsonl_row` take text and return
records); :func:`read_capture` only adds the file reading, decompression and counting. The
replay source node and the test replay servers (:mod:`alphapulse.testing`) are built on it.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from collections.abc import Iterator
from typing import Any, BinaryIO, Literal

import orjson

__all__ = [
    "CaptureFormatError",
    "CaptureKind",
    "CaptureRecord",
    "CaptureStatistics",
    "capture_format",
    "capture_header",
    "http_responses",
    "parse_jsonl_row",
    "parse_line",
    "read_capture",
    "received_frames",
    "sent_messages",
]

log = logging.getLogger("alphapulse.captures")

CaptureKind = Literal["connect", "send", "recv", "http"]
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_LOGGED_BAD_LINES = 5
"""Bad lines logged one by one per file; later ones are only counted (summary at the end)."""


class CaptureFormatError(ValueError):
    """A capture line or row that does not follow the format."""


@dataclasses.dataclass(frozen=True, slots=True)
class CaptureRecord:
    """One line of a capture.

    ``kind``: ``connect`` (``text`` empty), ``send`` (the message sent), ``recv`` (the raw frame
    received) or ``http`` (a REST response body). ``ts`` is the recorded unix time in seconds.
    ``url`` is the WebSocket URL for connect/send/recv (recv: of the connection last opened) and
    the request URL for http. ``conn`` names the connection where the format does (JSON lines).
    """

    kind: CaptureKind
    ts: float
    text: str
    url: str | None = None
    conn: str | None = None


@dataclasses.dataclass
class CaptureStatistics:
    """Counts of one :func:`read_capture` pass (filled in while the iterator is consumed)."""

    lines: int = 0
    records: int = 0
    blank: int = 0
    metadata: int = 0
    """``configuration:`` lines (line format) and header rows (JSON lines), not yielded."""
    bad_lines: int = 0
    bad_line_numbers: list[int] = dataclasses.field(default_factory=list)
    """The first few bad line numbers (1-based), for error messages."""
    by_kind: dict[str, int] = dataclasses.field(default_factory=dict)

    def _bad(self, number: int) -> None:
        self.bad_lines += 1
        if len(self.bad_line_numbers) < 20:
            self.bad_line_numbers.append(number)


# -- sans-IO parsing ---------------------------------------------------------------------------


def _timestamp(text: str, line: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CaptureFormatError(f"bad timestamp {text[:40]!r} in {line[:80]!r}") from None


CONFIGURATION_PREFIX = "configuration: "


def parse_line(line: str, current_url: str | None = None) -> CaptureRecord | None:
    """One line of the line format as a record; ``None`` for a blank or ``configuration:`` line.

    ``current_url`` is the URL of the connection last opened (it becomes a recv record's url).
    Raises :class:`CaptureFormatError` for a line that is none of the four forms.
    """
    line = line.rstrip("\r\n")
    if not line.strip() or line.startswith(CONFIGURATION_PREFIX):
        return None
    first = line[0]
    if first.isdigit():
        ts_text, sep, frame = line.partition(": ")
        if not sep:
            raise CaptureFormatError(f"received frame without ': ' after its timestamp: {line[:80]!r}")
        return CaptureRecord("recv", _timestamp(ts_text, line), frame, current_url)
    url, sep, rest = line.partition(" ")
    if not sep or "://" not in url:
        raise CaptureFormatError(f"line is neither 'TS: FRAME' nor 'URL <marker> TS...': {line[:80]!r}")
    marker, _, rest = rest.partition(" ")
    if marker == "<->":
        return CaptureRecord("connect", _timestamp(rest.strip(), line), "", url)
    ts_text, sep, body = rest.partition(": ")
    if not sep:
        raise CaptureFormatError(f"{marker!r} line without ': ' after its timestamp: {line[:80]!r}")
    if marker == "<-":
        return CaptureRecord("send", _timestamp(ts_text, line), body, url)
    if marker == "->":
        return CaptureRecord("http", _timestamp(ts_text, line), body, url)
    raise CaptureFormatError(f"unknown marker {marker!r} (expected <->, <- or ->): {line[:80]!r}")


def parse_jsonl_row(row: dict[str, Any] | str | bytes) -> CaptureRecord | None:
    """One row of the JSON-lines format as a record; ``None`` for the header row.

    Accepts the decoded object or its JSON text. Raises :class:`CaptureFormatError` when the row
    lacks what its ``t`` needs.
    """
    if isinstance(row, str | bytes):
        try:
            row = orjson.loads(row)
        except orjson.JSONDecodeError as exc:
            raise CaptureFormatError(f"row is not JSON: {exc}") from None
    if not isinstance(row, dict):
        raise CaptureFormatError(f"row is a {type(row).__name__}, not an object")
    kind = row.get("t")
    if kind == "header":
        return None
    try:
        ts = float(row["ts"])
        conn = row.get("conn")
        if kind == "recv":
            return CaptureRecord("recv", ts, _text(row["data"]), row.get("addr"), conn)
        if kind == "send":
            return CaptureRecord("send", ts, _text(row["data"]), row.get("addr"), conn)
        if kind == "connect":
            return CaptureRecord("connect", ts, "", row["addr"], conn)
        if kind == "http":
            return CaptureRecord("http", ts, _text(row["data"]), row["url"], conn)
    except (KeyError, TypeError, ValueError) as exc:
        raise CaptureFormatError(f"{kind!r} row lacks or garbles {exc}") from None
    raise CaptureFormatError(f"unknown row type t={kind!r}")


def _text(data: Any) -> str:
    if isinstance(data, str):
        return data
    # a few recorders store already-decoded JSON; give consumers the text they would have seen
    return orjson.dumps(data).decode()


# -- files ---------------------------------------------------------------------------------------


def capture_format(path: str | os.PathLike[str]) -> Literal["lines", "jsonl.zst"]:
    """Which of the two formats a file is in, from its first bytes."""
    with open(path, "rb") as f:
        return "jsonl.zst" if f.read(4) == ZSTD_MAGIC else "lines"


def _open_binary(path: str | os.PathLike[str]) -> tuple[BinaryIO, Literal["lines", "jsonl.zst"]]:
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller's finally
    if raw.read(4) != ZSTD_MAGIC:
        raw.seek(0)
        return raw, "lines"
    raw.seek(0)
    import zstandard  # only the JSON-lines captures need it

    reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    return io.BufferedReader(reader, buffer_size=1 << 20), "jsonl.zst"  # type: ignore[arg-type]


def capture_header(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The header object of a JSON-lines capture, or the ``configuration:`` object of a
    line-format file (``{"t": "configuration", "config": {...}}``); ``None`` if it has neither."""
    f, fmt = _open_binary(path)
    try:
        if fmt != "jsonl.zst":
            for raw in f:
                if raw.startswith(CONFIGURATION_PREFIX.encode()):
                    try:
                        return {"t": "configuration", "config": orjson.loads(raw[len(CONFIGURATION_PREFIX) :])}
                    except orjson.JSONDecodeError:
                        return None
            return None
        for raw in f:
            if raw.strip():
                row = orjson.loads(raw)
                return row if isinstance(row, dict) and row.get("t") == "header" else None
        return None
    finally:
        f.close()


def read_capture(
    path: str | os.PathLike[str],
    *,
    stats: CaptureStatistics | None = None,
) -> Iterator[CaptureRecord]:
    """Every record of a capture file, in file order, read lazily (constant memory).

    Pass a :class:`CaptureStatistics` to get line, record and bad-line counts; bad lines are
    skipped with a warning (the first :data:`MAX_LOGGED_BAD_LINES` one by one, then a summary).
    """
    stats = stats if stats is not None else CaptureStatistics()
    name = os.fspath(path)
    f, fmt = _open_binary(path)
    by_kind = stats.by_kind
    try:
        current_url: str | None = None
        for number, raw in enumerate(f, 1):
            stats.lines += 1
            try:
                if fmt == "lines":
                    text = raw.decode("utf-8")
                    record = parse_line(text, current_url)
                    if record is None:
                        if text.startswith(CONFIGURATION_PREFIX):
                            stats.metadata += 1
                        else:
                            stats.blank += 1
                        continue
                    if record.kind == "connect":
                        current_url = record.url
                else:
                    if not raw.strip():
                        stats.blank += 1
                        continue
                    record = parse_jsonl_row(raw)
                    if record is None:
                        stats.metadata += 1
                        continue
            except (CaptureFormatError, UnicodeDecodeError) as exc:
                stats._bad(number)
                if stats.bad_lines <= MAX_LOGGED_BAD_LINES:
                    log.warning("%s:%d: skipped unreadable capture line: %s", name, number, exc)
                continue
            stats.records += 1
            by_kind[record.kind] = by_kind.get(record.kind, 0) + 1
            yield record
    finally:
        f.close()
        if stats.bad_lines > MAX_LOGGED_BAD_LINES:
            log.warning(
                "%s: %d unreadable lines skipped in all (first at lines %s)",
                name,
                stats.bad_lines,
                ", ".join(map(str, stats.bad_line_numbers[:MAX_LOGGED_BAD_LINES])),
            )


def received_frames(path: str | os.PathLike[str], *, stats: CaptureStatistics | None = None) -> Iterator[str]:
    """The raw text of every received frame, in order."""
    for record in read_capture(path, stats=stats):
        if record.kind == "recv":
            yield record.text


def sent_messages(path: str | os.PathLike[str]) -> Iterator[CaptureRecord]:
    """Every message the recording client sent (subscribe requests), in order."""
    return (r for r in read_capture(path) if r.kind == "send")


def http_responses(path: str | os.PathLike[str]) -> Iterator[CaptureRecord]:
    """Every REST response of a capture (``url`` = request URL, ``text`` = body), in order."""
    return (r for r in read_capture(path) if r.kind == "http")
