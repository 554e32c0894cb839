"""DEX log classification throughput on the real Ethereum receipts (block 15573637, 929 logs).

Run: ``python benchmarks/dex.py [REPEAT]`` (or ``python -m benchmarks.dex``). The block's logs are
repeated REPEAT times for a stable measurement; every figure is the best of several runs. The
reference, measured in the same run on the same EvmLog records, is a straightforward per-log
Python decode: an if/elif on topic0 and ``int.from_bytes`` per ABI word into a tuple, with no
width checks, no direction logic beyond a comparison and no output records. The last line is
one JSON object of all figures.

Figures:

* ``classify_*``: ``Classifier.feed`` on EvmLog records (classify by topic0, exact ABI decode with
  width checks, PoolSwap/PoolSync/PoolMint records, mappings, per-topic0 unknown counts);
* ``node_*``: ``DexClassify.handle_block`` on a FrameBlock of EvmLog messages, building the output
  messages (header, sequence, CRC) as the node does;
* ``parse_json_*``: the source side, a JSON-RPC log object to an EvmLog record.

``all`` is every log of the block (86% of them are events the classifier does not decode:
Transfer, Approval...); ``dex`` is only the 131 logs with a known topic0.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
from typing import Any

import alphapulse.protocol as P

if not __package__:  # run as a script: make the repo root importable for benchmarks._common
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks._common import best_rate, report
from nodes.dex_classify import EVENTS, Classifier, DexClassify, DexClassifyParams
from nodes.evm_logs import parse_log

RECEIPTS = "evm/ethereum-receipts-15573637.json"


def shared_data() -> pathlib.Path:
    default = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    return pathlib.Path(os.environ.get("ALPHAPULSE_SHARED_DATA", default))


_V2 = bytes.fromhex("d78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822")
_V3 = bytes.fromhex("c42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67")
_CURVE = bytes.fromhex("8b3e96f2b889fa771c53c981b40daf005f63f637f1869f707052d15a3dd97140")
_CURVE_U256 = bytes.fromhex("b2e76ae99761dc136e598d4a629bb347eccb9532a5f8bbd72e18467c3c34cc98")
_SYNC = bytes.fromhex("1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1")
_MINT = bytes.fromhex("4c209b5fc8ad50758f13e2e1088ba56a560dff690a1c6fef26394f4c03821c4f")


def reference_decode(log: Any) -> tuple | None:
    """The straightforward per-log decode the classifier is compared with."""
    topics = log.topics
    if not topics:
        return None
    t0, d = topics[0], log.data
    if t0 == _V2:
        a0i, a1i, a0o, a1o = (int.from_bytes(d[i:i + 32], "big") for i in range(0, 128, 32))
        return ("v2", 0, a0i, a1o) if a0i > 0 else ("v2", 1, a1i, a0o)
    if t0 == _V3:
        a0 = int.from_bytes(d[0:32], "big", signed=True)
        a1 = int.from_bytes(d[32:64], "big", signed=True)
        return ("v3", 0 if a0 > 0 else 1, a0, a1, int.from_bytes(d[64:96], "big"),
                int.from_bytes(d[96:128], "big"), int.from_bytes(d[128:160], "big", signed=True))
    if t0 in (_CURVE, _CURVE_U256):
        return ("curve", *(int.from_bytes(d[i:i + 32], "big", signed=t0 == _CURVE) for i in range(0, 128, 32)))
    if t0 == _SYNC:
        return ("sync", int.from_bytes(d[0:32], "big"), int.from_bytes(d[32:64], "big"))
    if t0 == _MINT:
        return ("mint", int.from_bytes(d[0:32], "big"), int.from_bytes(d[32:64], "big"))
    return None


class _Ctx:
    """The part of NodeContext the handler uses, building messages exactly as NodeContext does."""

    def __init__(self) -> None:
        from collections import Counter

        self.counters: Counter[str] = Counter()
        self.log = logging.getLogger("bench")
        self.builder = P.MessageBuilder(P.RelayDomain.MARKET_DATA, 1)
        self.pending: list[bytes] = []

    def message(self, *tlvs: Any) -> None:
        self.pending.append(self.builder.build(tlvs[0] if len(tlvs) == 1 else list(tlvs), 1_700_000_000_000_000_000))


def measure(name: str, records: list[Any], figures: dict[str, Any]) -> None:
    n = len(records)
    builder = P.MessageBuilder(P.RelayDomain.MARKET_DATA, 2)
    block = P.FrameBlock.from_bytes(b"".join(builder.build(r, 1_700_000_000_000_000_000) for r in records))
    node = DexClassify(DexClassifyParams(chain="ethereum"))

    def classify():
        feed = Classifier("ethereum").feed
        for r in records:
            feed(r)

    def node_block():
        node.classifier = Classifier("ethereum")
        node.handle_block(block, _Ctx())

    def reference():
        for r in records:
            reference_decode(r)

    figures[f"{name}_logs"] = n
    figures[f"classify_{name}_logs_per_s"] = best_rate(classify, n)
    figures[f"node_{name}_logs_per_s"] = best_rate(node_block, n)
    figures[f"reference_{name}_logs_per_s"] = best_rate(reference, n)
    for key in ("classify", "node"):
        figures[f"ratio_{key}_{name}_vs_reference"] = round(
            figures[f"{key}_{name}_logs_per_s"] / figures[f"reference_{name}_logs_per_s"], 2)


def main(repeat: int = 50) -> dict[str, Any]:
    doc = json.loads((shared_data() / RECEIPTS).read_text())
    logs = [log for receipt in doc["result"] for log in receipt["logs"]]
    cache: dict[bytes, Any] = {}

    def instrument_of(address: bytes) -> Any:
        if address not in cache:
            cache[address] = P.pool("ethereum", "0x" + address.hex())
        return cache[address]

    records = [parse_log(log, 1, instrument_of).record for log in logs]
    dex = [r for r in records if r.topics and r.topics[0] in EVENTS]
    figures: dict[str, Any] = {"block_logs": len(records), "block_dex_logs": len(dex), "repeat": repeat}
    measure("all", records * repeat, figures)
    measure("dex", dex * repeat, figures)

    many = logs * repeat

    def parse_json():
        for log in many:
            parse_log(log, 1, instrument_of)

    figures["parse_json_all_logs_per_s"] = best_rate(parse_json, len(many))
    for key, value in list(figures.items()):
        if isinstance(value, float) and key.endswith("_per_s"):
            figures[key] = round(value)
    return figures


if __name__ == "__main__":
    report(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
