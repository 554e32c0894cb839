"""The bridge's JSON protocol: client requests parsed (strictly), server messages rendered.

Sans-IO, like the TLV protocol: text in, :class:`Request` or :class:`ClientError` out; state
in, JSON text out. The contract clients rely on, kept next to the code that implements it:

Client → server, one JSON object per text message::

    {"op": "subscribe",   "channels": ["book", "trades"], "instruments": ["sim_a:BTC-USD"], "id": 1}
    {"op": "unsubscribe", "channels": ["book"], "instruments": ["sim_a:BTC-USD"]}
    {"op": "list"}            # the instruments message again
    {"op": "ping", "id": 7}   # answered {"type": "pong", "id": 7}

``channels``: ``book`` (snapshot then deltas of the top ``book_levels`` per side), ``bbo`` (best
bid/ask), ``trades``, ``signals`` (arbitrage), ``health`` (per-node health and rates; takes no
instruments). ``instruments``: ``venue:BASE-QUOTE`` (one venue), ``BASE-QUOTE`` (every venue),
another short form (``stock:alpaca:AAPL``), a bare ticker (``AAPL``, every venue) or ``*``
(everything); default ``["*"]``. ``id`` is optional and echoed in the reply.

Server → client: objects with a ``type``: ``hello``, ``instruments``, ``subscribed``,
``unsubscribed``, ``book_snapshot``, ``book_delta``, ``bbo``, ``trades_snapshot``, ``trade``,
``swap`` (DEX, on the trades channel), ``signals_snapshot``, ``signal``, ``health``, ``pong``,
``error``. Instrument-scoped messages
name the instrument three ways: ``instrument`` (``sim_a:BTC-USD``), ``venue`` and ``symbol``
(``BTC-USD``). Prices and sizes are exact decimal strings (``"60001.25"``), never floats; levels
are ``{"price", "size"}`` objects, best first; in a ``book_delta`` a size of ``"0"`` removes the
level from the view. ``seq`` is the book view's version: each delta is exactly one more than the
message before it for that instrument, so a gap means the client should resubscribe.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import orjson

from alphapulse import protocol

_SYMBOL = re.compile(r"^[A-Z0-9_.]+(-[A-Z0-9_.]+)?$")
CHANNELS = ("book", "bbo", "trades", "signals", "health")
INSTRUMENT_CHANNELS = frozenset(CHANNELS) - {"health"}
OPS = ("subscribe", "unsubscribe", "list", "ping")


class ClientError(ValueError):
    """A client message we cannot act on; becomes an ``error`` message, never a crash."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclasses.dataclass(frozen=True)
class Pattern:
    """Which instruments a subscription covers: ``*``, one instrument id, or a symbol on every venue."""

    text: str
    instrument_id: int = 0
    symbol: str = ""

    @classmethod
    def parse(cls, text: Any) -> Pattern:
        if not isinstance(text, str) or not text.strip():
            raise ClientError("bad_instrument", f"instrument must be a non-empty string, not {text!r}")
        text = text.strip()
        if text == "*":
            return cls("*")
        if ":" in text or "|" in text:
            try:
                inst = protocol.parse_instrument(text)
            except protocol.InstrumentError as exc:
                raise ClientError("bad_instrument", str(exc)) from None
            return cls(inst.short, instrument_id=inst.id)
        symbol = text.upper().replace("/", "-")
        if not _SYMBOL.match(symbol):
            raise ClientError("bad_instrument", f"cannot read instrument {text!r}: use 'venue:BASE-QUOTE', "
                              "'BASE-QUOTE' (every venue), a ticker, or '*'")
        return cls(symbol, symbol=symbol)

    def matches(self, instrument_id: int, symbol: str) -> bool:
        if self.instrument_id:
            return self.instrument_id == instrument_id
        return not self.symbol or self.symbol == symbol


@dataclasses.dataclass(frozen=True)
class Request:
    op: str
    channels: tuple[str, ...] = ()
    patterns: tuple[Pattern, ...] = ()
    all_instruments: bool = False
    """``instruments`` was not given: for unsubscribe, every pattern of those channels."""
    request_id: Any = None


def parse_request(text: str | bytes) -> Request:
    """One client message; raises :class:`ClientError` with a code for anything malformed."""
    if isinstance(text, bytes):
        raise ClientError("binary_not_supported", "send JSON as text messages")
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ClientError("bad_json", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ClientError("bad_request", "a request is a JSON object with an 'op'")
    request_id = obj.get("id")
    if request_id is not None and not isinstance(request_id, (str, int)):
        raise ClientError("bad_request", "'id' must be a string or an integer")
    op = obj.get("op")
    if op not in OPS:
        raise ClientError("unknown_op", f"unknown op {op!r}; ops: {', '.join(OPS)}", request_id)
    if op in ("list", "ping"):
        return Request(op, request_id=request_id)
    channels = obj.get("channels")
    if isinstance(channels, str):
        channels = [channels]
    if not isinstance(channels, list) or not channels:
        raise ClientError("bad_request", "'channels' must be a non-empty list", request_id)
    for channel in channels:
        if channel not in CHANNELS:
            raise ClientError("unknown_channel", f"unknown channel {channel!r}; channels: {', '.join(CHANNELS)}",
                              request_id)
    instruments = obj.get("instruments")
    if isinstance(instruments, str):
        instruments = [instruments]
    if instruments is not None and not isinstance(instruments, list):
        raise ClientError("bad_request", "'instruments' must be a list of strings", request_id)
    try:
        patterns = tuple(Pattern.parse(i) for i in instruments or ["*"])
    except ClientError as exc:
        raise ClientError(exc.code, str(exc), request_id) from None
    return Request(op, tuple(dict.fromkeys(channels)), patterns, instruments is None, request_id)


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def error(code: str, message: str, request_id: Any = None) -> str:
    body: dict[str, Any] = {"type": "error", "code": code, "error": message}
    if request_id is not None:
        body["id"] = request_id
    return dumps(body)


def levels(pairs: list[tuple[int, int]]) -> list[dict[str, str]]:
    fmt = protocol.format_fixed
    return [{"price": fmt(p), "size": fmt(q)} for p, q in pairs]


def optional_level(pair: tuple[int, int] | None) -> dict[str, str] | None:
    return None if pair is None else {"price": protocol.format_fixed(pair[0]), "size": protocol.format_fixed(pair[1])}
