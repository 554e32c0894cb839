"""``source.evm_logs``: EVM logs over WebSocket JSON-RPC, with backfill and reorg retraction.

The sans-IO core comes first: :func:`parse_log` turns one JSON-RPC log object into an EvmLog
record, and :class:`LogStream` decides what to publish — de-duplication, confirmations, reorg
retractions and which block range a reconnect must backfill. The node at the bottom only moves
JSON between the RPC endpoint and that core.

Why each piece:

* ``eth_subscribe("logs")`` is the live feed; ``eth_subscribe("newHeads")`` comes with it so
  the node knows the head (confirmations) and the connection is never silent for the session's
  staleness timeout even when the log filter matches nothing for a while.
* A subscription misses whatever happened while disconnected, so after every reconnect the node
  asks ``eth_getLogs`` for the range from the last block it saw (minus ``confirmations``) to the
  current head. The subscription is opened *before* the head is read, so the two overlap instead
  of leaving a hole; the overlap is removed by de-duplication on (block hash, tx hash, log
  index). A range longer than ``max_backfill_blocks`` keeps its newest blocks and counts the
  older ones in ``dropped.backfill_blocks`` (a warning names the range).
* Reorgs: a log delivered with ``removed: true`` that was published is published again as an
  EvmLog with ``removed = 1`` (the retraction); ``transform.dex_classify`` turns it into a
  PoolEventRetraction of the event type it had produced. A removal that happened while the node
  was disconnected never arrives as a notification: the backfill re-reads the overlap and
  retracts what was published there but is no longer in the chain.
* With ``confirmations > 0`` a log waits until the head is that many blocks past it; a removal
  before then just drops it, with nothing to retract.

Errors retried are named: JSON-RPC failures are :class:`RpcError` (a ``ConnectionError``), so
the shared session loop reconnects with backoff and counts them on the ``upstream`` breaker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import trio

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import (
    MAX_EXTENDED_VALUE,
    EvmLog,
    TLVType,
    layout_for,
    mapping_for,
    pool,
)
from alphapulse.runtime import NodeConfigError, UpstreamStale, report, run_websocket_session

MAX_TOPICS = 4
"""LOG0..LOG4: an EVM log has at most four topics."""
MAX_DATA = MAX_EXTENDED_VALUE - layout_for(TLVType.EVM_LOG).head_size - MAX_TOPICS * 32
"""Largest data field an EvmLog TLV can carry (the extended TLV limit less head and topics)."""
RETAIN_BLOCKS = 512
"""Blocks of published log keys kept for de-duplication and reorg retraction."""

LogKey = tuple[bytes, bytes, int]
"""(block hash, tx hash, log index): one log in one block; a reorg changes the block hash."""


class BadLog(ValueError):
    """A JSON-RPC log object that is not a well-formed mined log."""


class RpcError(ConnectionError):
    """The RPC endpoint failed a request: the session is dropped and retried with backoff.

    ``code`` is the JSON-RPC error code when the endpoint answered with an error object, None
    when the transport or the answer itself failed."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


# -- parsing (sans-IO) -------------------------------------------------------------------------------


def _hex_bytes(value: Any, size: int | None, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise BadLog(f"{what} is not a 0x hex string: {value!r:.80}")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise BadLog(f"{what} is not hex: {value!r:.80}") from None
    if size is not None and len(raw) != size:
        raise BadLog(f"{what} has {len(raw)} bytes, not {size}")
    return raw


def quantity(value: Any, what: str = "quantity") -> int:
    """A JSON-RPC QUANTITY (``"0x1b4"``) as an int."""
    if not isinstance(value, str) or not value.startswith("0x") or len(value) < 3:
        raise BadLog(f"{what} is not a 0x quantity: {value!r:.80}")
    try:
        return int(value, 16)
    except ValueError:
        raise BadLog(f"{what} is not hex: {value!r:.80}") from None


@dataclasses.dataclass(frozen=True)
class ChainLog:
    """One parsed log: where it is, and its EvmLog record (``removed`` as delivered)."""

    block_number: int
    key: LogKey
    record: Any


def parse_log(obj: Any, chain_id: int, instrument_of: Callable[[bytes], Any]) -> ChainLog:
    """A JSON-RPC log object (as ``eth_getLogs`` and ``eth_subscribe`` give it) → ChainLog.

    ``instrument_of(address)`` names the emitting contract (``pool(chain, address)``; callers
    cache it). Raises BadLog.
    """
    if not isinstance(obj, Mapping):
        raise BadLog(f"a log must be an object, got {type(obj).__name__}")
    try:
        address = _hex_bytes(obj["address"], 20, "address")
        block_number = quantity(obj["blockNumber"], "blockNumber")
        block_hash = _hex_bytes(obj["blockHash"], 32, "blockHash")
        tx_hash = _hex_bytes(obj["transactionHash"], 32, "transactionHash")
        log_index = quantity(obj["logIndex"], "logIndex")
        raw_topics = obj["topics"]
        data = _hex_bytes(obj["data"], None, "data")
    except KeyError as exc:
        raise BadLog(f"log has no {exc.args[0]!r} (pending logs are not accepted)") from None
    removed = obj.get("removed", False)
    if not isinstance(removed, bool):
        raise BadLog(f"removed is not a boolean: {removed!r}")
    if not isinstance(raw_topics, list) or len(raw_topics) > MAX_TOPICS:
        raise BadLog(f"topics must be a list of at most {MAX_TOPICS}")
    topics = tuple(_hex_bytes(t, 32, "topic") for t in raw_topics)
    if len(data) > MAX_DATA:
        raise BadLog(f"data of {len(data)} bytes does not fit an EvmLog TLV (max {MAX_DATA})")
    if log_index >= 1 << 32 or block_number >= 1 << 64:
        raise BadLog("blockNumber or logIndex out of range")
    record = EvmLog(instrument_of(address).id, chain_id, block_number, tx_hash, log_index, address, int(removed),
                    topics, data)
    return ChainLog(block_number, (block_hash, tx_hash, log_index), record)


# -- the stream state (sans-IO) ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Backfill:
    """An inclusive block range to read with eth_getLogs, and the older blocks left out."""

    first: int
    last: int
    skipped: int = 0


class LogStream:
    """What to publish, given logs, heads and backfills; remembers what it published.

    Methods return the records to publish, in order: an InstrumentMapping before the first log
    of each contract, EvmLogs, and EvmLogs with ``removed = 1`` for retractions.
    """

    def __init__(self, chain: str, chain_id: int, *, confirmations: int = 0, max_backfill_blocks: int = 2000,
                 retain_blocks: int = RETAIN_BLOCKS, counters: Counter[str] | None = None) -> None:
        self.chain = chain
        self.chain_id = chain_id
        self.confirmations = confirmations
        self.max_backfill_blocks = max_backfill_blocks
        self.retain_blocks = max(retain_blocks, confirmations + 1)
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.published: dict[int, dict[LogKey, Any]] = defaultdict(dict)
        self.pending: dict[int, dict[LogKey, Any]] = defaultdict(dict)
        self.head: int | None = None
        self.seen: int | None = None
        """Highest block seen (log, head or backfill end): the next backfill starts here."""
        self.connected_before = False
        self.instruments: dict[bytes, Any] = {}
        """contract address -> Instrument"""
        self.announced: set[bytes] = set()
        self._pruned_below = 0

    # -- input -----------------------------------------------------------------------------------
    def instrument_of(self, address: bytes) -> Any:
        instrument = self.instruments.get(address)
        if instrument is None:
            instrument = self.instruments[address] = pool(self.chain, "0x" + address.hex())
        return instrument

    def parse(self, obj: Any) -> ChainLog:
        return parse_log(obj, self.chain_id, self.instrument_of)

    def on_log(self, obj: Any) -> list[Any]:
        """A log from the subscription. Raises BadLog."""
        return self._take(self.parse(obj))

    def on_head(self, number: int) -> list[Any]:
        """A new head (newHeads, eth_blockNumber): releases logs that now have their confirmations."""
        self.head = number if self.head is None else max(self.head, number)
        self._see(number)
        return self._release()

    def backfill_range(self, head: int) -> Backfill | None:
        """The inclusive block range to backfill after a (re)connect, or None on the first connect
        (a source starts live; call ``on_head(head)`` then). A range over ``max_backfill_blocks``
        keeps its newest blocks."""
        if not self.connected_before:
            # notifications may already have arrived on this first connection: start live anyway
            self.connected_before = True
            self._see(head)
            return None
        first = max(0, self.seen - self.confirmations)
        if head < first:
            return None
        skipped = max(0, head - first + 1 - self.max_backfill_blocks)
        if skipped:
            self.counters["dropped.backfill_blocks"] += skipped
            self.counters["backfill.truncated"] += 1
        return Backfill(first + skipped, head, skipped)

    def known_keys(self, first: int, last: int) -> set[tuple[int, LogKey]]:
        """Logs held (published or waiting) in blocks first..last: a backfill's reconcile set."""
        out: set[tuple[int, LogKey]] = set()
        for table in (self.published, self.pending):
            for block, logs in table.items():
                if first <= block <= last:
                    out.update((block, key) for key in logs)
        return out

    def on_backfill(self, first: int, last: int, objs: list[Any], known_before: set[tuple[int, LogKey]]) -> list[Any]:
        """The complete ``eth_getLogs`` result for first..last: new logs are published once, and
        logs held from before the backfill that the chain no longer has are retracted."""
        out: list[Any] = []
        fetched: set[tuple[int, LogKey]] = set()
        for obj in objs:
            try:
                log = self.parse(obj)
            except BadLog:
                self.counters["errors.bad_log"] += 1
                continue
            if log.record.removed:
                continue
            fetched.add((log.block_number, log.key))
            out += self._take(log, backfilled=True)
        for block, key in sorted(known_before - fetched):
            out += self._remove(block, key, "reorg.retracted_by_backfill")
        self.counters["backfill.ranges"] += 1
        self.counters["backfill.blocks"] += last - first + 1
        out += self.on_head(last)
        return out

    # -- internals ----------------------------------------------------------------------------------
    def _see(self, block: int) -> None:
        if self.seen is None or block > self.seen:
            self.seen = block
            if block - self.retain_blocks > self._pruned_below + 64:
                self._prune(block - self.retain_blocks)

    def _prune(self, below: int) -> None:
        for block in [b for b in self.published if b < below]:
            del self.published[block]
        self._pruned_below = below

    def _take(self, log: ChainLog, backfilled: bool = False) -> list[Any]:
        block, key = log.block_number, log.key
        if log.record.removed:
            return self._remove(block, key, "reorg.retracted")
        if key in self.published.get(block, ()) or key in self.pending.get(block, ()):
            self.counters["duplicates"] += 1
            return []
        self.counters["backfilled" if backfilled else "live"] += 1
        self._see(block)
        if self.confirmations and (self.head is None or block > self.head - self.confirmations):
            self.pending[block][key] = log.record
            return []
        return self._publish(block, key, log.record)

    def _publish(self, block: int, key: LogKey, record: Any) -> list[Any]:
        self.published[block][key] = record
        self.counters["published"] += 1
        out: list[Any] = []
        if record.address not in self.announced:
            self.announced.add(record.address)
            out.append(mapping_for(self.instrument_of(record.address)))
        out.append(record)
        return out

    def _remove(self, block: int, key: LogKey, counter: str) -> list[Any]:
        record = self.published.get(block, {}).pop(key, None)
        if record is not None:
            self.counters[counter] += 1
            return [dataclasses.replace(record, removed=1)]
        if self.pending.get(block, {}).pop(key, None) is not None:
            self.counters["reorg.unconfirmed_dropped"] += 1
        else:
            self.counters["reorg.removed_unseen"] += 1
        return []

    def _release(self) -> list[Any]:
        if not self.pending or self.head is None:
            return []
        ready = sorted(b for b in self.pending if b <= self.head - self.confirmations)
        out: list[Any] = []
        for block in ready:
            logs = self.pending.pop(block)
            for key, record in sorted(logs.items(), key=lambda item: item[0][2]):
                out += self._publish(block, key, record)
        return out


# -- the node -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvmLogsParams:
    chain: str = param("polygon", doc="Chain name used in pool instrument ids (pool:<chain>:0x…).",
                       pattern="^[a-z0-9_.]+$")
    chain_id: int = param(
        137, doc="EIP-155 chain id written into every EvmLog; checked against eth_chainId on connect "
        "(a mismatch stops the node: it is pointed at the wrong chain).", minimum=1,
    )
    endpoint: str = param(
        "wss://polygon-bor-rpc.publicnode.com",
        doc="WebSocket JSON-RPC URL; '{api_key}' in it is replaced by api_key at start.",
        pattern="^wss?://",
    )
    backfill_endpoint: str | None = param(
        None, doc="HTTP JSON-RPC URL for eth_getLogs backfill after a reconnect ('{api_key}' is "
        "replaced too); null backfills over the WebSocket connection.", pattern="^https?://",
    )
    api_key: str = param(
        "", doc="RPC provider API key, if the endpoint needs one. A secret: write it as ${VAR}.",
        secret=True,
    )
    addresses: tuple[str, ...] = param(
        (), doc="Only logs from these contract addresses; empty means any address.",
        items={"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"},
    )
    topics: tuple[str, ...] = param(
        (), doc="Only logs whose topic0 is one of these; empty means any.",
        items={"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"},
    )
    confirmations: int = param(
        0, doc="Blocks to wait before publishing a log; 0 publishes at once and retracts on reorg.",
        minimum=0,
    )
    max_backfill_blocks: int = param(
        2000, doc="Largest block range backfilled after a reconnect; older blocks of a longer gap are "
        "skipped, counted (dropped.backfill_blocks) and logged.",
        minimum=1,
    )
    backfill_chunk_blocks: int = param(
        500, doc="Blocks per eth_getLogs request; a request the provider refuses (too many results) "
        "is split in halves down to one block.", minimum=1,
    )
    request_timeout: float = param(
        30.0, doc="Seconds to wait for a JSON-RPC answer before the connection is dropped and retried.",
        exclusiveMinimum=0,
    )


@node_kind(
    "source.evm_logs",
    emits=[TLVType.EVM_LOG, TLVType.INSTRUMENT_MAPPING],
    example={"chain": "polygon", "chain_id": 137, "endpoint": "wss://polygon-mainnet.g.alchemy.com/v2/{api_key}",
             "api_key": "${ALCHEMY_API_KEY}"},
)
class EvmLogs(Node):
    """EVM log source: eth_subscribe logs, eth_getLogs backfill so no block range is skipped.

    Logs are de-duplicated by (block hash, tx hash, log index). A log delivered with
    ``removed: true`` (a reorg) is published again with its ``removed`` flag set: that EvmLog is
    the retraction, which ``transform.dex_classify`` turns into a PoolEventRetraction.
    """

    Params = EvmLogsParams

    def __init__(self, params: EvmLogsParams) -> None:
        super().__init__(params)
        self.stream = LogStream(params.chain, params.chain_id, confirmations=params.confirmations,
                                max_backfill_blocks=params.max_backfill_blocks)
        self._ids = itertools.count(1)
        self._ws: Any = None
        self._http: httpx.AsyncClient | None = None
        self._subscriptions: dict[str, str] = {}
        """subscription id -> 'logs' or 'newHeads', for the current connection only"""
        self.ctx: Any = None

    # -- configuration ------------------------------------------------------------------------------
    def _url(self, template: str) -> str:
        return template.replace("{api_key}", self.params.api_key)

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced by ``***`` (for logs and error messages)."""
        return text.replace(self.params.api_key, "***") if self.params.api_key else text

    def log_filter(self) -> dict[str, Any]:
        """The eth_subscribe / eth_getLogs filter: addresses, and topic0 as an OR-list."""
        out: dict[str, Any] = {}
        if self.params.addresses:
            out["address"] = [a.lower() for a in self.params.addresses]
        if self.params.topics:
            out["topics"] = [[t.lower() for t in self.params.topics]]
        return out

    # -- the session ------------------------------------------------------------------------------------
    async def run(self, ctx):
        self.ctx = ctx
        self.stream.counters = ctx.counters
        url = self._url(self.params.endpoint)
        async with contextlib.AsyncExitStack() as stack:
            if self.params.backfill_endpoint:
                self._http = await stack.enter_async_context(httpx.AsyncClient(timeout=self.params.request_timeout))
            await run_websocket_session(ctx, url, on_connect=self._on_connect, on_message=self._on_message,
                                        on_disconnect=self._on_disconnect, log_url=self.redact(url))

    async def _on_connect(self, ws) -> None:
        """Subscribe first, then read the head, then backfill: the two overlap, never leave a hole."""
        self._ws = ws
        chain_id = self._quantity(await self._call("eth_chainId", []), "eth_chainId")
        if chain_id != self.params.chain_id:
            raise NodeConfigError(f"endpoint serves chain id {chain_id}, params say {self.params.chain_id}")
        self._subscriptions[await self._call("eth_subscribe", ["logs", self.log_filter()])] = "logs"
        self._subscriptions[await self._call("eth_subscribe", ["newHeads"])] = "newHeads"
        head = self._quantity(await self._call("eth_blockNumber", []), "eth_blockNumber")
        if self._http is not None:  # a lagging backfill node must not make fresh blocks look empty
            head = min(head, self._quantity(await self._call("eth_blockNumber", [], backfill=True),
                                            "eth_blockNumber"))
        span = self.stream.backfill_range(head)
        if span is not None:
            await self._backfill(span)
        else:
            self._emit(self.stream.on_head(head))
        await self.ctx.flush()

    def _on_disconnect(self) -> None:
        self._ws = None
        self._subscriptions.clear()

    async def _backfill(self, span: Backfill) -> None:
        if span.skipped:
            self.ctx.log.warning("gap of %d blocks is over max_backfill_blocks: blocks %d..%d are not backfilled",
                                 span.last - span.first + 1 + span.skipped, span.first - span.skipped,
                                 span.first - 1)
        known = self.stream.known_keys(span.first, span.last)
        logs: list[Any] = []
        step = self.params.backfill_chunk_blocks
        for start in range(span.first, span.last + 1, step):
            logs += await self._get_logs(start, min(span.last, start + step - 1))
        self._emit(self.stream.on_backfill(span.first, span.last, logs, known))
        self.ctx.log.info("backfilled blocks %d..%d: %d logs", span.first, span.last, len(logs))

    async def _get_logs(self, first: int, last: int) -> list[Any]:
        query = {**self.log_filter(), "fromBlock": hex(first), "toBlock": hex(last)}
        try:
            result = await self._call("eth_getLogs", [query], backfill=True)
        except RpcError as exc:
            if exc.code is None or first == last:
                raise
            self.ctx.counters["backfill.split"] += 1  # providers cap results per request: halve the range
            middle = (first + last) // 2
            return await self._get_logs(first, middle) + await self._get_logs(middle + 1, last)
        if not isinstance(result, list):
            raise RpcError(f"eth_getLogs answered {type(result).__name__}, not a list")
        return result

    # -- JSON-RPC -------------------------------------------------------------------------------------
    async def _call(self, method: str, params: list[Any], *, backfill: bool = False) -> Any:
        request_id = next(self._ids)
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        if backfill and self._http is not None:
            return await self._call_http(request)
        await self._ws.send_message(json.dumps(request))
        with trio.move_on_after(self.params.request_timeout):
            while True:
                message = self._decode(await self._ws.get_message())
                if isinstance(message, dict) and message.get("id") == request_id:
                    return self._result(message, method)
                if message is not None:
                    self._dispatch(message)  # notifications keep flowing while we wait
                    if self.ctx.pending:
                        await self.ctx.flush()
        raise UpstreamStale(f"no answer to {method} within {self.params.request_timeout:g} s")

    async def _call_http(self, request: dict[str, Any]) -> Any:
        method = request["method"]
        try:
            response = await self._http.post(self._url(self.params.backfill_endpoint), json=request)
            response.raise_for_status()
            message = response.json()
        except httpx.HTTPError as exc:
            raise RpcError(f"{method} over HTTP: {self.redact(str(exc))}") from None
        except ValueError:
            raise RpcError(f"{method} over HTTP: the answer is not JSON") from None
        if not isinstance(message, dict) or message.get("id") != request["id"]:
            raise RpcError(f"{method} over HTTP: not a JSON-RPC answer to our request")
        return self._result(message, method)

    @staticmethod
    def _result(message: dict[str, Any], method: str) -> Any:
        error = message.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            text = error.get("message") if isinstance(error, dict) else error
            raise RpcError(f"{method}: error {code}: {text!s:.200}", code=code if isinstance(code, int) else 0)
        return message.get("result")

    @staticmethod
    def _quantity(value: Any, what: str) -> int:
        try:
            return quantity(value, what)
        except BadLog as exc:
            raise RpcError(f"{what}: {exc}") from None

    def _decode(self, frame: str | bytes) -> Any:
        try:
            return json.loads(frame)
        except ValueError as exc:
            self._bad("errors.bad_json", exc)
            return None

    def _on_message(self, frame: str | bytes, receive_ts_ns: int):
        message = self._decode(frame)
        if message is not None:
            self._dispatch(message)
        return None  # the session loop flushes after the read

    def _dispatch(self, message: Any) -> None:
        """One JSON-RPC message that is not the answer being waited for."""
        if not isinstance(message, dict):
            self._bad("errors.bad_message", ValueError(f"not a JSON-RPC object: {message!r:.80}"))
            return
        if message.get("method") != "eth_subscription":
            self.ctx.counters["rpc.unexpected"] += 1  # a late answer, or a method we never asked for
            return
        params = message.get("params")
        kind = self._subscriptions.get(params.get("subscription")) if isinstance(params, dict) else None
        if kind is None:
            self.ctx.counters["rpc.stray_notifications"] += 1
            return
        result = params.get("result")
        try:
            if kind == "logs":
                self._emit(self.stream.on_log(result))
            else:
                number = result.get("number") if isinstance(result, dict) else None
                self._emit(self.stream.on_head(quantity(number, "newHeads number")))
        except BadLog as exc:
            self._bad("errors.bad_log", exc)

    def _emit(self, records: list[Any]) -> None:
        for record in records:
            self.ctx.message(record)

    def _bad(self, counter: str, exc: Exception) -> None:
        report(self.ctx.counters, self.ctx.log, counter, "%s: %s", counter, exc)

    # -- hooks --------------------------------------------------------------------------------------------
    def snapshot(self, instrument_id: int):
        """A log source has no book: its state is the names of the contracts it has published."""
        return [mapping_for(self.stream.instruments[a]) for a in sorted(self.stream.announced)
                if instrument_id in (0, self.stream.instruments[a].id)]

    def statistics(self) -> dict:
        return {
            "head": self.stream.head,
            "seen": self.stream.seen,
            "subscribed": sorted(self._subscriptions.values()),
            "waiting_logs": sum(len(v) for v in self.stream.pending.values()),
            "contracts": len(self.stream.announced),
        }
