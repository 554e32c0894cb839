"""Tests of ``source.evm_logs`` and ``transform.dex_classify``; loaders of ``../shared/data/evm``."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

RECEIPTS = "evm/ethereum-receipts-15573637.json"
POLYGON_RECEIPT = "evm/polygon/web3_response.eth_getTransactionReceipt_" \
    "0xcc6321f62e241e512bdbf7f466adfd2bd78543ee4a8efb69c2d58a5451ddb25d.json"
POLYGON_FILTER_LOGS = "evm/polygon/web3_response.eth_getFilterLogs_0xc06540724558e1036d5e19ae4d05348.json"
POLYGON_CSV = "evm/polygon/logs.csv"


def receipt_logs(shared_data: Path) -> list[dict[str, Any]]:
    """Every log of Ethereum block 15573637, as eth_getLogs / eth_subscribe("logs") give them."""
    doc = json.loads((shared_data / RECEIPTS).read_text())
    return [log for receipt in doc["result"] for log in receipt["logs"]]


def polygon_receipt_logs(shared_data: Path) -> list[dict[str, Any]]:
    return json.loads((shared_data / POLYGON_RECEIPT).read_text())["result"]["logs"]


def polygon_filter_logs(shared_data: Path) -> list[dict[str, Any]]:
    return json.loads((shared_data / POLYGON_FILTER_LOGS).read_text())["result"]


def polygon_csv_logs(shared_data: Path) -> list[dict[str, Any]]:
    """The CSV export rows turned back into JSON-RPC log objects (the export has no ``removed``)."""
    out = []
    with (shared_data / POLYGON_CSV).open(newline="") as f:
        for row in csv.DictReader(f):
            out.append({
                "address": row["address"],
                "topics": row["topics"].split(",") if row["topics"] else [],
                "data": row["data"],
                "blockNumber": hex(int(row["block_number"])),
                "blockHash": row["block_hash"],
                "transactionHash": row["transaction_hash"],
                "transactionIndex": hex(int(row["transaction_index"])),
                "logIndex": hex(int(row["log_index"])),
                "removed": False,
            })
    return out


def block_hash(number: int, fork: str = "") -> str:
    return "0x" + hashlib.sha256(f"{fork}{number}".encode()).hexdigest()


def as_blocks(logs: list[dict[str, Any]], first_block: int, n_blocks: int) -> dict[int, list[dict[str, Any]]]:
    """Real logs spread over ``n_blocks`` synthetic blocks (whole transactions per block), with
    blockNumber and blockHash rewritten; log indexes stay those of the real block (unique)."""
    txs: list[str] = []
    for log in logs:
        if log["transactionHash"] not in txs:
            txs.append(log["transactionHash"])
    per_block = -(-len(txs) // n_blocks)
    blocks: dict[int, list[dict[str, Any]]] = {}
    for log in logs:
        number = first_block + txs.index(log["transactionHash"]) // per_block
        blocks.setdefault(number, []).append({**log, "blockNumber": hex(number), "blockHash": block_hash(number)})
    return blocks
