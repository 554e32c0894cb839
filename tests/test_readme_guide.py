"""The README's "add a new exchange in 5 minutes" guide is real code: load it and run it."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from alphapulse import protocol
from alphapulse.kinds import _registry as registry
from alphapulse.kinds import get_kind
from alphapulse.testing import run_node, serve_capture

README = Path(__file__).resolve().parents[1] / "README.md"


def guide_code() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.index("## Add a new exchange in 5 minutes")
    start = text.index("```python", section) + len("```python")
    return textwrap.dedent(text[start : text.index("```", start)])


@pytest.fixture
def myex(tmp_path):
    path = tmp_path / "myex_guide.py"
    path.write_text(guide_code())
    spec = importlib.util.spec_from_file_location("myex_guide", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["myex_guide"] = module
    spec.loader.exec_module(module)
    yield get_kind("source.myex")
    registry._REGISTRY.pop("source.myex", None)
    sys.modules.pop("myex_guide", None)


def test_guide_kind_meets_the_contract(myex) -> None:
    schema = myex.params_schema()
    assert set(schema["properties"]) == {"endpoint", "symbols"}
    assert all(p["description"] for p in schema["properties"].values())


async def test_guide_kind_publishes_exact_trades_and_counts_bad_frames(myex) -> None:
    frames = [
        json.dumps({"symbol": "BTC-USD", "price": "65000.12345678", "size": "0.5", "ts_ns": 1, "side": "buy"}),
        "not json at all",
        json.dumps({"symbol": "DOGE-USD", "price": "0.1", "size": "1", "ts_ns": 2, "side": "buy"}),
        json.dumps({"symbol": "BTC-USD", "price": "65001", "size": "2", "ts_ns": 3, "side": "sell"}),
    ]
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_capture, frames, wait_for_messages=1))
        params = {"endpoint": f"ws://127.0.0.1:{server.port}", "symbols": ["BTC-USD"]}
        async with run_node("source.myex", params) as run:
            await run.wait_for(lambda r: len(r.records(protocol.Trade)) == 2)
            btc = protocol.spot("myex", "BTC", "USD")
            assert run.records(protocol.InstrumentMapping) == [protocol.mapping_for(btc)]
            assert run.records(protocol.Trade) == [
                protocol.Trade(btc.id, 6500012345678, 50_000_000, 1, protocol.Side.BUY),
                protocol.Trade(btc.id, 6500100000000, 200_000_000, 3, protocol.Side.SELL),
            ]
            assert run.ctx.counters["errors.bad_frame"] == 2  # garbage and an unknown symbol
            assert server.received[0] == ['{"op":"subscribe","symbols":["BTC-USD"]}']
        nursery.cancel_scope.cancel()
