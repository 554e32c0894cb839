"""``source.alpaca``: Alpaca stock market data (IEX or SIP) trades, quotes and bars.

Protocol (Alpaca market data v2 stream): the server greets with ``[{"T":"success","msg":
"connected"}]``; we send ``{"action":"auth",...}`` and, once ``authenticated``, one
``{"action":"subscribe","trades":[...],"quotes":[...],"bars":[...]}``; the server confirms with
a ``subscription`` message and then sends data points in JSON arrays (``t`` trades, ``q``
quotes, ``b`` minute bars, ``u`` updated minute bars, ``d`` daily bars).

Numbers arrive as JSON numbers; they are read as their exact text (never a float) and turned
into fixed point. Trades carry no aggressor side (Side.UNKNOWN).

Errors are handled by what they mean: auth failed (402), v2 not enabled (408) and insufficient
subscription (409) are credential or plan problems a retry cannot fix soon, so the session ends
and the next attempt waits ``auth_retry`` seconds (the ``auth`` breaker is open meanwhile,
shown by ``status``); connection limit exceeded (406: another client uses these keys) waits
``connection_limit_retry``; symbol limit exceeded (405) keeps the connection with what was
accepted and is reported (a reconnect would hit the same limit); auth timeout (404), slow client
(407) and internal error (500) reconnect with the usual backoff; 400/401/403 mean we misspoke,
and are counted and logged.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import logging
from collections import Counter
from typing import Any, Literal

import trio

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import (
    PRICE_SCALE,
    Bar,
    FixedPointError,
    InstrumentError,
    Quote,
    TLVType,
    Trade,
    mapping_for,
    parse_fixed,
    stock,
)
from alphapulse.runtime import BreakerSettings, UpstreamParams, UpstreamRejected, run_websocket_session

BAR_SECONDS = {"b": 60, "u": 60, "d": 86_400}
IGNORED = frozenset({"s", "l", "c", "x", "n"})
"""Trading status, LULD bands, corrections, cancel/errors, news: counted, not published."""
ERRORS = {
    400: "invalid_syntax",
    401: "not_authenticated",
    402: "auth_failed",
    403: "already_authenticated",
    404: "auth_timeout",
    405: "symbol_limit",
    406: "connection_limit",
    407: "slow_client",
    408: "v2_not_enabled",
    409: "insufficient_subscription",
    500: "internal_error",
}
CREDENTIAL_ERRORS = frozenset({402, 408, 409})
RECONNECT_ERRORS = frozenset({404, 407, 500})


class BadMessage(ValueError):
    """A data point without the documented shape; counted, never fatal."""


@dataclasses.dataclass(frozen=True, kw_only=True)  # redeclares some UpstreamParams defaults; key_id has none
class AlpacaParams(UpstreamParams):
    key_id: str = param(
        doc="Alpaca API key id. A secret: write it as ${VAR}, e.g. ${ALPACA_KEY_ID}.",
        secret=True,
    )
    secret_key: str = param(
        doc="Alpaca API secret key. A secret: write it as ${VAR}, e.g. ${ALPACA_SECRET_KEY}.",
        secret=True,
    )
    feed: Literal["iex", "sip"] = param(
        "iex",
        doc="Data feed: iex (free) or sip (consolidated, needs a subscription).",
    )
    endpoint: str | None = param(
        None,
        doc="WebSocket URL; null uses wss://stream.data.alpaca.markets/v2/<feed>.",
        pattern="^wss?://",
    )
    symbols: tuple[str, ...] = param(
        ("AAPL",),
        doc="Tickers to subscribe to.",
        minItems=1,
        items={"type": "string", "pattern": "^[A-Z][A-Z0-9.]*$"},
    )
    channels: tuple[Literal["trades", "quotes", "bars"], ...] = param(
        ("trades", "quotes"),
        doc="Data to subscribe to per ticker.",
        minItems=1,
        uniqueItems=True,
    )
    venue: str = param(
        "alpaca", doc="Exchange name used in instrument ids (stock:alpaca:AAPL).", pattern="^[a-z0-9_.]+$"
    )
    staleness_timeout: float = param(
        60.0,
        doc="Seconds without any frame before reconnecting (markets can be quiet).",
        live=True,
        exclusiveMinimum=0,
    )
    reconnect_initial: float = param(1.0, doc="First reconnect delay in seconds.", live=True, exclusiveMinimum=0)
    reconnect_max: float = param(
        60.0, doc="Cap of the exponential reconnect delay in seconds.", live=True, exclusiveMinimum=0
    )
    auth_retry: float = param(
        300.0,
        doc="Seconds to wait after Alpaca rejects the credentials or plan (402, 408, 409) "
        "before trying again; the auth breaker shows open meanwhile.",
        exclusiveMinimum=0,
    )
    connection_limit_retry: float = param(
        60.0,
        doc="Seconds to wait after 'connection limit exceeded' (406: another client is connected with these keys).",
        exclusiveMinimum=0,
    )


def _fixed(value: Any, what: str) -> int:
    """Exact fixed point of a JSON number read as text (``parse_float=str``) or an int."""
    if isinstance(value, bool):
        raise BadMessage(f"{what} is not a number: {value!r}")
    if isinstance(value, int):
        return value * PRICE_SCALE
    if isinstance(value, str):
        try:
            return parse_fixed(value)
        except FixedPointError as exc:
            raise BadMessage(f"{what}: {exc}") from None
    raise BadMessage(f"{what} is not a number: {value!r}")


class AlpacaSession:
    """Sans-IO: frames in, TLVs (``out``) and messages to send (``outgoing``) out; raises
    :class:`UpstreamRejected` when the session must end (the node's loop then reconnects)."""

    def __init__(
        self, params: AlpacaParams, counters: Counter[str] | None = None, log: logging.Logger | None = None
    ) -> None:
        self.params = params
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.log = log or logging.getLogger("alphapulse.alpaca")
        self.state = "closed"
        self.outgoing: list[str] = []
        self.out: list[Any] = []
        self.subscribed: dict[str, list[str]] = {}
        self.auth_failed = False
        self._ids: dict[str, int] = {}
        self._announced: set[int] = set()

    def connection_made(self) -> None:
        self.state = "connecting"
        self.outgoing.clear()
        self.auth_failed = False

    def take(self) -> tuple[list[str], list[Any]]:
        outgoing, out = self.outgoing, self.out
        self.outgoing, self.out = [], []
        return outgoing, out

    def subscribe_message(self) -> str:
        return json.dumps({"action": "subscribe", **{c: list(self.params.symbols) for c in self.params.channels}})

    # -- frames ------------------------------------------------------------------------------------
    def receive(self, frame: str | bytes, receive_ns: int) -> None:
        try:
            items = json.loads(frame, parse_float=str)
        except ValueError as exc:
            return self._bad("bad_json", f"not JSON: {exc}", frame)
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            return self._bad("bad_shape", "frame is not a JSON array", frame)
        for item in items:
            kind = item.get("T") if isinstance(item, dict) else None
            try:
                if kind in ("t", "q") or kind in BAR_SECONDS:
                    self._data(kind, item)
                elif kind == "success":
                    self._success(item)
                elif kind == "error":
                    self._error(item)
                elif kind == "subscription":
                    self._subscription(item)
                elif kind in IGNORED:
                    self.counters[f"ignored.{kind}"] += 1
                else:
                    self._bad("unknown_type", f"unknown message type {kind!r}", item)
            except BadMessage as exc:
                self._bad("bad_message", str(exc), item)
        return None

    def _bad(self, kind: str, detail: str, sample: Any) -> None:
        key = f"errors.{kind}"
        self.counters[key] += 1
        n = self.counters[key]
        if n <= 10 or n & (n - 1) == 0:
            self.log.warning("alpaca: %s (%s #%d) %.200r", detail, key, n, sample)

    def _success(self, item: dict) -> None:
        msg = item.get("msg")
        if msg == "connected":
            self.state = "authenticating"
            p = self.params
            # the only message that carries the secret: never logged
            self.outgoing.append(json.dumps({"action": "auth", "key": p.key_id, "secret": p.secret_key}))
        elif msg == "authenticated":
            self.state = "subscribing"
            self.counters["authenticated"] += 1
            self.log.info(
                "alpaca: authenticated; subscribing %s to %s",
                ", ".join(self.params.channels),
                ", ".join(self.params.symbols),
            )
            self.outgoing.append(self.subscribe_message())
        else:
            self.counters["success.other"] += 1

    def _subscription(self, item: dict) -> None:
        self.state = "streaming"
        self.subscribed = {c: list(item.get(c) or ()) for c in ("trades", "quotes", "bars")}
        self.counters["subscriptions"] += 1
        missing = [
            f"{c}:{s}"
            for c in self.params.channels
            for s in self.params.symbols
            if s not in self.subscribed.get(c, ()) and "*" not in self.subscribed.get(c, ())
        ]
        if missing:
            self.counters["subscription.missing"] = len(missing)
            self.log.warning("alpaca: not subscribed to %s", ", ".join(missing))

    def _error(self, item: dict) -> None:
        code = item.get("code")
        name = ERRORS.get(code, "venue") if isinstance(code, int) else "venue"
        self.counters[f"errors.{name}"] += 1
        text = f"error {code} {item.get('msg')!r}"
        if code in CREDENTIAL_ERRORS:
            self.auth_failed = True
            raise UpstreamRejected(f"{text}: check the key, secret and data plan", self.params.auth_retry)
        if code == 406:
            raise UpstreamRejected(f"{text}: another connection uses these keys", self.params.connection_limit_retry)
        if code in RECONNECT_ERRORS:
            raise UpstreamRejected(text, 0.0)
        self.log.error("alpaca: %s", text)  # 405 keeps what was accepted; 400/401/403 are our mistakes

    def _data(self, kind: str, item: dict) -> None:
        symbol = item.get("S")
        iid = self._ids.get(symbol) if isinstance(symbol, str) else None
        if iid is None:
            try:
                instrument = stock(self.params.venue, symbol)
            except (InstrumentError, AttributeError, TypeError):
                raise BadMessage(f"bad symbol {symbol!r}") from None
            iid = self._ids[symbol] = instrument.id
        if iid not in self._announced:
            self._announced.add(iid)
            self.out.append(mapping_for(stock(self.params.venue, symbol)))
        ts = _time(item.get("t"))
        if kind == "t":
            self.out.append(
                Trade(
                    instrument_id=iid,
                    price=_fixed(item.get("p"), "p"),
                    quantity=_fixed(item.get("s"), "s"),
                    exchange_ts_ns=ts,
                )
            )
            self.counters["trades"] += 1
        elif kind == "q":
            self.out.append(
                Quote(
                    instrument_id=iid,
                    bid_price=_fixed(item.get("bp"), "bp"),
                    bid_qty=_fixed(item.get("bs"), "bs"),
                    ask_price=_fixed(item.get("ap"), "ap"),
                    ask_qty=_fixed(item.get("as"), "as"),
                    exchange_ts_ns=ts,
                )
            )
            self.counters["quotes"] += 1
        else:
            count = item.get("n", 0)
            self.out.append(
                Bar(
                    instrument_id=iid,
                    start_ns=ts,
                    duration_ns=BAR_SECONDS[kind] * 1_000_000_000,
                    open=_fixed(item.get("o"), "o"),
                    high=_fixed(item.get("h"), "h"),
                    low=_fixed(item.get("l"), "l"),
                    close=_fixed(item.get("c"), "c"),
                    volume=_fixed(item.get("v"), "v"),
                    vwap=_fixed(item["vw"], "vw") if "vw" in item else 0,
                    trade_count=count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0,
                )
            )
            self.counters["bars"] += 1

    def snapshot(self, instrument_id: int) -> list[Any]:
        return [
            mapping_for(stock(self.params.venue, s))
            for s in self.params.symbols
            if instrument_id in (0, self._ids.get(s, stock(self.params.venue, s).id))
        ]


def _time(text: Any) -> int:
    """Exact Unix ns of Alpaca's RFC 3339 times (nanosecond precision, ``Z``)."""
    if not isinstance(text, str) or len(text) < 20 or text[-1] != "Z" or text[10] != "T":
        raise BadMessage(f"bad time {text!r}")
    head, _, frac = text[:-1].partition(".")
    try:
        seconds = calendar.timegm(
            (int(head[0:4]), int(head[5:7]), int(head[8:10]), int(head[11:13]), int(head[14:16]), int(head[17:19]))
        )
    except ValueError:
        raise BadMessage(f"bad time {text!r}") from None
    if len(head) != 19 or len(frac) > 9 or (frac and not frac.isdigit()):
        raise BadMessage(f"bad time {text!r}")
    return seconds * 1_000_000_000 + int(frac.ljust(9, "0") or 0)


@node_kind(
    "source.alpaca",
    emits=[TLVType.TRADE, TLVType.QUOTE, TLVType.BAR, TLVType.INSTRUMENT_MAPPING],
    example={
        "key_id": "${ALPACA_KEY_ID}",
        "secret_key": "${ALPACA_SECRET_KEY}",
        "feed": "iex",
        "symbols": ["AAPL", "MSFT"],
    },
)
class Alpaca(Node):
    """Alpaca stocks adapter: authenticated trades, quotes and bars from the v2 stream.

    Handles Alpaca's documented error codes distinctly: an auth failure stops retrying for
    ``auth_retry`` seconds (the auth breaker shows open), a connection limit is backed off, a
    symbol limit is reported.
    """

    Params = AlpacaParams

    def __init__(self, params: AlpacaParams) -> None:
        super().__init__(params)
        self.session = AlpacaSession(params)

    async def run(self, ctx):
        p = self.params
        session = self.session = AlpacaSession(p, ctx.counters, ctx.log)
        auth = ctx.breaker("auth", BreakerSettings(failure_threshold=1, window=p.auth_retry, cooldown=p.auth_retry))
        state: dict[str, Any] = {}

        async def on_connect(ws) -> None:
            state["ws"] = ws
            auth.allow(trio.current_time())  # an open auth breaker past its cool-down lets this probe through
            session.connection_made()

        async def send(outgoing: list[str]) -> None:
            for message in outgoing:
                await state["ws"].send_message(message)

        def on_message(frame, receive_ns: int):
            was_authenticated = session.state in ("subscribing", "streaming")
            try:
                session.receive(frame, receive_ns)
            except UpstreamRejected:
                if session.auth_failed:
                    auth.record_failure(trio.current_time())
                raise
            if not was_authenticated and session.state == "subscribing":
                auth.record_success(trio.current_time())
            outgoing, out = session.take()
            if out:
                ctx.messages(out, timestamp_ns=receive_ns)  # the session loop flushes after the read
            return send(outgoing) if outgoing else None

        url = p.endpoint or f"wss://stream.data.alpaca.markets/v2/{p.feed}"
        await run_websocket_session(ctx, url, on_connect=on_connect, on_message=on_message, policy=lambda: self.params)

    def snapshot(self, instrument_id: int):
        """A stock source keeps no book: its state is the names of its instruments."""
        return self.session.snapshot(instrument_id)

    def statistics(self) -> dict:
        return {"state": self.session.state, "subscribed": self.session.subscribed}
