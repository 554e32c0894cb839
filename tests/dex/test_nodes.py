"""``source.evm_logs`` → ``transform.dex_classify`` through real sockets.

A local trio-websocket server speaks the JSON-RPC an EVM node does (eth_chainId, eth_subscribe
logs/newHeads with notifications, eth_blockNumber, eth_getLogs), serving blocks made from the
real receipt logs. Both nodes run in-process in a NodeHost, publishing on real Unix sockets;
the test reads those sockets with InputLinks, as any downstream node would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import tempfile
from collections import Counter
from typing import Any

import h11
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

import alphapulse.protocol as P
from alphapulse.runtime import InputLink, InputSpec, NodeConfigError, NodeHost, open_publisher
from nodes.evm_logs import parse_log
from tests.dex import as_blocks, block_hash, receipt_logs

V2_SWAP = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
DEX_TOPICS = [
    V2_SWAP,
    "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67",  # UniswapV3 Swap
    "0x8b3e96f2b889fa771c53c981b40daf005f63f637f1869f707052d15a3dd97140",  # Curve TokenExchange
    "0xb2e76ae99761dc136e598d4a629bb347eccb9532a5f8bbd72e18467c3c34cc98",  # Curve TokenExchange uint256
    "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1",  # UniswapV2 Sync
    "0x4c209b5fc8ad50758f13e2e1088ba56a560dff690a1c6fef26394f4c03821c4f",  # UniswapV2 Mint
]
API_KEY = "s3cr3t-key"
HANG_GUARD = 120  # seconds; only against a hang, the test normally takes well under one


# -- a JSON-RPC chain --------------------------------------------------------------------------------


def matches(log: dict[str, Any], query: dict[str, Any]) -> bool:
    addresses = query.get("address")
    if addresses and log["address"] not in addresses:
        return False
    topics = query.get("topics") or []
    return not topics or not topics[0] or (bool(log["topics"]) and log["topics"][0] in topics[0])


class FakeChain:
    """The JSON-RPC methods ``source.evm_logs`` uses, over WebSocket and HTTP POST."""

    def __init__(self, chain_id: int, head: int) -> None:
        self.chain_id = chain_id
        self.head = head
        self.blocks: dict[int, list[dict[str, Any]]] = {}
        self.sockets: dict[WebSocketConnection, dict[str, tuple[str, dict[str, Any]]]] = {}
        self.calls: Counter[str] = Counter()
        self.http_calls: Counter[str] = Counter()
        self.get_logs: list[tuple[str, int, int]] = []
        self.paths: list[str] = []
        self.up = True
        self.refused = 0
        self.max_range: int | None = None
        """eth_getLogs over more blocks than this is refused, as providers do."""
        self._ids = itertools.count(1)

    def answer(self, request: dict[str, Any], via: str) -> dict[str, Any]:
        method, params = request["method"], request.get("params", [])
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if method == "eth_chainId":
            reply["result"] = hex(self.chain_id)
        elif method == "eth_blockNumber":
            reply["result"] = hex(self.head)
        elif method == "eth_getLogs":
            query = params[0]
            first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            self.get_logs.append((via, first, last))
            if self.max_range is not None and last - first + 1 > self.max_range:
                reply["error"] = {"code": -32005, "message": "query returned more than 10000 results"}
            else:
                reply["result"] = [log for n in range(first, last + 1) for log in self.blocks.get(n, [])
                                   if matches(log, query)]
        else:
            reply["error"] = {"code": -32601, "message": f"the method {method} does not exist"}
        return reply

    async def serve_ws(self, request: WebSocketRequest) -> None:
        if not self.up:
            self.refused += 1
            await request.reject(503)
            return
        self.paths.append(request.path)
        ws = await request.accept()
        subscriptions = self.sockets[ws] = {}
        try:
            while True:
                request_obj = json.loads(await ws.get_message())
                self.calls[request_obj["method"]] += 1
                if request_obj["method"] == "eth_subscribe":
                    kind, *query = request_obj["params"]
                    sub_id = hex(next(self._ids))
                    subscriptions[sub_id] = (kind, query[0] if query else {})
                    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": request_obj["id"], "result": sub_id}))
                else:
                    await ws.send_message(json.dumps(self.answer(request_obj, "ws")))
        except ConnectionClosed:
            pass
        finally:
            self.sockets.pop(ws, None)

    def subscribed(self) -> int:
        return sum(1 for subs in self.sockets.values() if len(subs) == 2)

    async def _notify(self, kind: str, item_for) -> None:
        for ws, subscriptions in list(self.sockets.items()):
            for sub_id, (sub_kind, query) in list(subscriptions.items()):
                if sub_kind != kind:
                    continue
                for item in item_for(query):
                    message = {"jsonrpc": "2.0", "method": "eth_subscription",
                               "params": {"subscription": sub_id, "result": item}}
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send_message(json.dumps(message))

    async def mine(self, number: int, logs: list[dict[str, Any]]) -> None:
        self.blocks[number] = logs
        self.head = number
        await self._notify("logs", lambda query: [log for log in logs if matches(log, query)])
        await self._notify("newHeads", lambda query: [{"number": hex(number), "hash": block_hash(number)}])

    async def notify_log(self, log: dict[str, Any]) -> None:
        await self._notify("logs", lambda query: [log])

    async def send_raw(self, text: str) -> None:
        for ws in list(self.sockets):
            await ws.send_message(text)

    async def go_down(self) -> None:
        """Close every connection and refuse new ones until :meth:`go_up`."""
        self.up = False
        for ws in list(self.sockets):
            await ws.aclose()


async def serve_json_rpc_http(chain: FakeChain, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """JSON-RPC over HTTP POST (h11 on trio), answering from the same chain."""

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                request = json.loads(body)
                chain.http_calls[request["method"]] += 1
                answer = json.dumps(chain.answer(request, "http")).encode()
                headers = [("content-type", "application/json"), ("content-length", str(len(answer)))]
                await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=answer)) + conn.send(h11.EndOfMessage()))
                conn.start_next_cycle()
                body = b""
            elif isinstance(event, h11.ConnectionClosed):
                return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        task_status.started(listeners[0].socket.getsockname()[1])


# -- nodes on real sockets ------------------------------------------------------------------------------


def make_plan(run_dir: str, nodes: dict[str, tuple[str, dict[str, Any], list[str]]]) -> dict[str, Any]:
    plan: dict[str, Any] = {"nodes": {}}
    for i, (name, (kind, params, inputs)) in enumerate(nodes.items()):
        plan["nodes"][name] = {
            "kind": kind, "params": params, "secret_env": {}, "source_id": 100 + i, "relay_domain": 1,
            "sockets": {"data": f"{run_dir}/{name}.sock", "control": f"{run_dir}/{name}.ctl"},
            "inputs": [{"node": up, "socket": f"{run_dir}/{up}.sock"} for up in inputs],
            "restart": {"stopwaitsecs": 2},
        }
    return plan


class Collector:
    """Every TLV a node published, read from its socket by an InputLink."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    async def deliver(self, block: Any) -> None:
        for frame in block.frames():
            self.records += P.decode_message(frame).tlvs

    def of(self, cls: type) -> list[Any]:
        return [r for r in self.records if isinstance(r, cls)]


async def listen(nursery: trio.Nursery, plan: dict[str, Any], node: str) -> Collector:
    collector = Collector()
    link = InputLink(InputSpec(node=node, socket=plan["nodes"][node]["sockets"]["data"]),
                     subscriber_name=f"test-{node}")
    nursery.start_soon(link.run, collector.deliver)
    return collector


async def wait_until(predicate) -> None:
    with trio.fail_after(HANG_GUARD):
        while not predicate():
            await trio.sleep(0.01)


def subscribers(host: NodeHost) -> set[str]:
    return {s["name"] for s in host.stats()["publisher"]["subscribers"] if s["connected"]}


def log_key(log: dict[str, Any]) -> tuple[int, str, int]:
    return int(log["blockNumber"], 16), log["transactionHash"][2:], int(log["logIndex"], 16)


def record_key(record: Any) -> tuple[int, str, int]:
    return record.block_number, record.tx_hash.hex(), record.log_index


@pytest.fixture
def run_dir():
    with tempfile.TemporaryDirectory(prefix="apdex") as path:  # short: Unix socket paths are capped
        yield path


@pytest.fixture
def chain_blocks(shared_data):
    return as_blocks(receipt_logs(shared_data), 1001, 4)


def expected(blocks: dict[int, list[dict[str, Any]]], numbers) -> list[dict[str, Any]]:
    return [log for n in numbers for log in blocks[n] if matches(log, {"topics": [DEX_TOPICS]})]


# -- the tests ---------------------------------------------------------------------------------------------


async def test_live_disconnect_backfill_and_reorg_through_both_nodes(run_dir, chain_blocks, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("TEST_EVM_KEY", API_KEY)
    chain = FakeChain(chain_id=1, head=1000)
    async with contextlib.AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        server = await nursery.start(functools.partial(serve_websocket, chain.serve_ws, "127.0.0.1", 0, None,
                                                       max_message_size=16 * 1024 * 1024))
        port = server.port
        plan = make_plan(run_dir, {
            "logs": ("source.evm_logs", {"chain": "ethereum", "chain_id": 1, "topics": DEX_TOPICS,
                                         "endpoint": f"ws://127.0.0.1:{port}/v2/{{api_key}}"}, []),
            "dex": ("transform.dex_classify", {"chain": "ethereum"}, ["logs", "other"]),
        })
        plan["nodes"]["logs"]["secret_env"] = {"api_key": "TEST_EVM_KEY"}
        # a second upstream of the classifier, published by the test: what else may arrive there
        other = await stack.enter_async_context(open_publisher(f"{run_dir}/other.sock", source_id=999))
        source = await nursery.start(NodeHost(plan, "logs").run)
        dex = await nursery.start(NodeHost(plan, "dex").run)
        logs_out = await listen(nursery, plan, "logs")
        dex_out = await listen(nursery, plan, "dex")
        await wait_until(lambda: chain.subscribed() == 1 and subscribers(source) == {"dex", "test-logs"}
                         and subscribers(dex) == {"test-dex"}
                         and {s.name for s in other.statistics().subscribers} == {"dex"})
        v2_record = parse_log(chain_blocks[1001][7], 1, lambda a: P.pool("ethereum", "0x" + a.hex())).record
        upstream_retraction = P.PoolEventRetraction(7, 99, bytes(32), 3, int(P.TLVType.POOL_SWAP))
        builder = P.MessageBuilder(P.RelayDomain.MARKET_DATA, 999)
        other.publish_nowait(P.FrameBlock.from_bytes(b"".join(builder.build(tlv, 1) for tlv in (
            upstream_retraction,  # passes through
            P.Trade(1, 2, 3, 4),  # not for this node: ignored
            P.encode_tlv(P.TLVType.EVM_LOG, bytes(10)),  # a truncated EvmLog value
            dataclasses.replace(v2_record, topics=(bytes.fromhex(V2_SWAP[2:]),), data=b"\1"),  # wrong ABI
        ))))

        def published():
            return [r for r in logs_out.of(P.EvmLog) if not r.removed]

        # live
        await chain.mine(1001, chain_blocks[1001])
        await wait_until(lambda: len(published()) == len(expected(chain_blocks, [1001])))
        # the connection drops; two blocks are mined while the source is away
        await chain.go_down()
        await chain.mine(1002, chain_blocks[1002])
        await chain.mine(1003, chain_blocks[1003])
        chain.up = True
        await wait_until(lambda: len(published()) == len(expected(chain_blocks, [1001, 1002, 1003])))
        await wait_until(lambda: chain.subscribed() == 1)
        # live again, then garbage, a malformed log and a reorg removing one swap of block 1004
        await chain.mine(1004, chain_blocks[1004])
        await chain.send_raw("not json")
        await chain.notify_log({"address": "0x12", "removed": False})
        swap = next(log for log in chain_blocks[1004] if log["topics"][0] == V2_SWAP)
        await chain.notify_log({**swap, "removed": True})
        await wait_until(lambda: len(dex_out.of(P.PoolEventRetraction)) == 2)
        await wait_until(lambda: source.stats()["counters"]["errors"] == 2)
        source_stats, dex_stats = source.stats(), dex.stats()
        nursery.cancel_scope.cancel()

    wanted = expected(chain_blocks, [1001, 1002, 1003, 1004])
    # every matching log exactly once, the missed blocks through the backfill, nothing else
    assert sorted(record_key(r) for r in published()) == sorted(log_key(log) for log in wanted)
    assert chain.get_logs == [("ws", 1001, 1003)]  # from the last block seen to the head
    assert source_stats["counters"]["duplicates"] == len(expected(chain_blocks, [1001]))
    assert source_stats["counters"]["upstream.connects"] == 2
    (removed,) = [r for r in logs_out.of(P.EvmLog) if r.removed]
    assert record_key(removed) == log_key(swap)
    counters = source_stats["counters"]
    assert counters["errors.bad_json"] == 1 and counters["errors.bad_log"] == 1 and counters["reorg.retracted"] == 1
    # the classifier: every swap, sync and mint, each named by a mapping first, and the retraction
    classes = Counter(log["topics"][0] for log in wanted)
    assert len(dex_out.of(P.PoolSwap)) == sum(classes[t] for t in DEX_TOPICS[:4])
    assert len(dex_out.of(P.PoolSync)) == classes[DEX_TOPICS[4]]
    assert len(dex_out.of(P.PoolMint)) == classes[DEX_TOPICS[5]]
    assert dex_stats["kind_stats"]["classified"]["UniswapV2.Swap"] == classes[V2_SWAP]
    passed, retraction = sorted(dex_out.of(P.PoolEventRetraction), key=lambda r: r.block_number)
    assert passed == upstream_retraction
    assert dex_stats["counters"]["errors.bad_log"] == 2
    assert dex_stats["counters"]["ignored_tlvs"] == len(logs_out.of(P.InstrumentMapping)) + 1
    assert record_key(retraction) == log_key(swap) and retraction.retracted_type == P.TLVType.POOL_SWAP
    assert retraction.instrument_id == P.pool("ethereum", swap["address"]).id
    named: set[int] = set()
    for record in dex_out.records:
        if isinstance(record, P.InstrumentMapping):
            named.add(record.instrument_id)
        elif hasattr(record, "instrument_id") and record != upstream_retraction:
            assert record.instrument_id in named
    # the API key reached the endpoint and never the log
    assert chain.paths == [f"/v2/{API_KEY}"] * 2
    assert API_KEY not in caplog.text and "/v2/***" in caplog.text


async def test_http_backfill_splits_ranges_the_provider_refuses(run_dir, chain_blocks):
    chain = FakeChain(chain_id=1, head=1000)
    chain.max_range = 1
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_websocket, chain.serve_ws, "127.0.0.1", 0, None,
                                                       max_message_size=16 * 1024 * 1024))
        http_port = await nursery.start(serve_json_rpc_http, chain)
        plan = make_plan(run_dir, {
            "logs": ("source.evm_logs", {"chain": "ethereum", "chain_id": 1, "topics": DEX_TOPICS,
                                         "endpoint": f"ws://127.0.0.1:{server.port}",
                                         "backfill_endpoint": f"http://127.0.0.1:{http_port}"}, []),
        })
        source = await nursery.start(NodeHost(plan, "logs").run)
        logs_out = await listen(nursery, plan, "logs")
        await wait_until(lambda: chain.subscribed() == 1 and subscribers(source) == {"test-logs"})
        await chain.mine(1001, chain_blocks[1001])
        await wait_until(lambda: len(logs_out.of(P.EvmLog)) == len(expected(chain_blocks, [1001])))
        await chain.go_down()
        await chain.mine(1002, chain_blocks[1002])
        chain.up = True
        await wait_until(lambda: len(logs_out.of(P.EvmLog)) == len(expected(chain_blocks, [1001, 1002])))
        stats = source.stats()
        nursery.cancel_scope.cancel()
    assert chain.get_logs == [("http", 1001, 1002), ("http", 1001, 1001), ("http", 1002, 1002)], chain.get_logs
    assert chain.calls["eth_getLogs"] == 0 and chain.http_calls["eth_blockNumber"] == 2  # each connect
    assert stats["counters"]["backfill.split"] == 1
    keys = [record_key(r) for r in logs_out.of(P.EvmLog)]
    assert sorted(keys) == sorted(log_key(log) for log in expected(chain_blocks, [1001, 1002]))


async def test_a_node_pointed_at_the_wrong_chain_stops(run_dir):
    chain = FakeChain(chain_id=1, head=1000)
    with pytest.raises(ExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, chain.serve_ws, "127.0.0.1", 0, None)
            plan = make_plan(run_dir, {"logs": ("source.evm_logs", {
                "chain": "polygon", "chain_id": 137, "endpoint": f"ws://127.0.0.1:{server.port}"}, [])})
            await NodeHost(plan, "logs").run()
    assert info.group_contains(NodeConfigError, match="chain id 1, params say 137")
