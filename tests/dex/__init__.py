"""Tests of ``source.evm_logs`` and ``transform.dex_classify``; loaders of ``../shared/data/evm``."""

from __future__ import annotations

import csv
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
