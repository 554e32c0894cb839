"""The demo end to end: `alphapulse apply topologies/demo.yaml` under a real supervisord.

Two simulated exchanges → the real Coinbase adapters → book deltas → relays → the WebSocket
bridge and dashboard, the Parquet writer, the recorder and the arbitrage detector. After ~20 s
of running: every node is RUNNING and healthy, the dashboard shows a live book in a real
browser, DuckDB reads trades from both venues out of the Parquet files, and the market
recording, replayed by `source.replay` into a fresh recorder, reproduces the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import pytest

from alphapulse.cli import main
from alphapulse.runtime import request
from alphapulse.supervise import RunBase, Supervisor, load_applied_plan
from tests.sinks._browser import CHROMIUM, READ_PAGE, browser_or_skip, headless_chromium, wait_for_full_book

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "topologies" / "demo.yaml")
ARTIFACTS = ROOT / "artifacts"
RUN_SECONDS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def demo(monkeypatch):
    base = Path(tempfile.mkdtemp(prefix="ap", dir="/tmp"))  # short: socket paths stay < 107 bytes
    ports = {name: free_port() for name in ("DEMO_SIM_A_PORT", "DEMO_SIM_B_PORT", "DEMO_PORT", "DEMO_HTTP_PORT")}
    for name, port in ports.items():
        monkeypatch.setenv(name, str(port))
    monkeypatch.setenv("DEMO_OUTPUT", str(base / "out"))
    monkeypatch.setenv("ALPHAPULSE_RUN_DIR", str(base / "run"))
    yield base, ports
    for topology in ("demo", "replayed"):
        main(["down", topology])
    sup = Supervisor(RunBase(base / "run"))
    if sup.is_running():
        sup.shutdown()
    shutil.rmtree(base, ignore_errors=True)


def node_stats(base: Path, topology: str, node: str) -> dict:
    plan = load_applied_plan(RunBase(base / "run"), topology)
    return request(plan["nodes"][node]["sockets"]["control"], "stats", timeout=5)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:
            value, last_error = None, exc
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error})")


def check_dashboard(url: str, screenshot: Path) -> dict:
    with headless_chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        wait_for_full_book(page, 30_000)
        first = page.evaluate(READ_PAGE)
        page.wait_for_function(
            f"() => Number(document.getElementById('book-updates').textContent) >= {first['updates'] + 5}",
            timeout=30_000)
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=trade-row]').length >= 1"
            " && document.querySelectorAll('[data-testid=health-row]').length >= 12", timeout=30_000)
        second = page.evaluate(READ_PAGE)
        page.screenshot(path=str(screenshot), full_page=True)
        return {"first": first, "second": second, "health": page.inner_text("#health"), "errors": errors}


def test_demo_runs_end_to_end(demo, capsys) -> None:
    base, ports = demo
    started = time.monotonic()
    assert main(["apply", DEMO, "--wait", "120"]) == 0

    # it flows: the arbitrage detector sees both venues and signals, the Parquet writer flushed
    wait_for(lambda: node_stats(base, "demo", "arb")["counters"].get("signals", 0) > 0, 120, "arbitrage signals")
    wait_for(lambda: node_stats(base, "demo", "parquet")["counters"].get("rows.trades", 0) > 0, 60, "Parquet rows")
    time.sleep(max(0.0, RUN_SECONDS - (time.monotonic() - started)))

    # status: every node RUNNING and healthy, nothing dropped or in error
    assert main(["status", DEMO, "--json"]) == 0
    plan = load_applied_plan(RunBase(base / "run"), "demo")
    states = {}
    for node in plan["nodes"]:
        info = Supervisor(RunBase(base / "run")).api.getProcessInfo(f"demo:{node}")
        states[node] = info["statename"]
        stats = node_stats(base, "demo", node)
        assert stats["status"] == "healthy", (node, stats["breakers"])
        assert stats["counters"]["errors"] == 0, (node, stats["counters"])
    assert set(states.values()) == {"RUNNING"}, states
    # and its watcher (``reload: {watch: true}``) runs beside the nodes, having found the file as applied
    assert Supervisor(RunBase(base / "run")).api.getProcessInfo("demo:_watch")["statename"] == "RUNNING"

    def watch_line() -> str:
        assert main(["status", DEMO]) == 0
        return next((line for line in capsys.readouterr().out.splitlines() if line.startswith("watch ")), "")

    wait_for(lambda: watch_line().endswith("unchanged"), 30, "the watcher's first look to find nothing to do")

    # the dashboard in a real browser: a live book, best bid below best ask, updating
    if shutil.which("chromium") or os.path.exists(CHROMIUM):
        browser_or_skip()
        ARTIFACTS.mkdir(exist_ok=True)
        page = check_dashboard(f"http://127.0.0.1:{ports['DEMO_HTTP_PORT']}/", ARTIFACTS / "demo.png")
        book = page["second"]
        bids = [Decimal(p) for p in book["bids"]]
        asks = [Decimal(p) for p in book["asks"]]  # shown worst first, best next to the spread
        assert len(bids) >= 10 and len(asks) >= 10  # the simulated book is thinner at times than 20
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks, reverse=True)
        assert Decimal(book["bestBid"]) == bids[0] < asks[-1] == Decimal(book["bestAsk"])
        assert book["updates"] > page["first"]["updates"]
        assert page["errors"] == []
    else:
        browser_or_skip()

    # Parquet, read back with DuckDB: trades from both venues, exact decimal prices
    import duckdb

    parquet = base / "out" / "parquet"
    rows = duckdb.sql(
        f"SELECT venue, count(*), min(price), max(price), bool_and(price_float = CAST(price AS DOUBLE)) "
        f"FROM read_parquet('{parquet}/trades/*/*.parquet') GROUP BY venue ORDER BY venue").fetchall()
    assert [r[0] for r in rows] == ["sim_a", "sim_b"]
    for venue, count, low, high, floats_match in rows:
        assert count > 0 and floats_match
        assert isinstance(low, Decimal) and Decimal(1000) < low <= high < Decimal(100_000), (venue, low, high)
    for table in ("book_deltas", "arbitrage_signals"):
        # flushed every 5 s: on a fresh install books may start publishing after the first flush
        wait_for(lambda t=table: list((parquet / t).glob("*/*.parquet")), 60, f"a {table} Parquet file")
        (count,) = duckdb.sql(f"SELECT count(*) FROM read_parquet('{parquet}/{table}/*/*.parquet')").fetchall()[0]
        assert count > 0, table

    # stop: the recorder closes its file on SIGTERM
    assert main(["down", DEMO]) == 0
    recording = base / "out" / "recordings" / "market"
    files = sorted(recording.glob("*.frames"))
    assert files and not list(recording.glob("*.open"))
    original = b"".join(f.read_bytes() for f in files)

    # replay the recording into a fresh recorder: the same bytes come out
    replayed = base / "out" / "replayed"
    topology = base / "replayed.yaml"
    topology.write_text(json.dumps({
        "topology": "replayed",
        "nodes": {
            "player": {"kind": "source.replay", "params": {"path": str(recording), "speed": 0}},
            "copy": {"kind": "sink.recorder", "inputs": [{"from": "player", "overflow": "block"}],
                     "params": {"path": str(replayed)}},
        },
    }))
    assert main(["apply", str(topology), "--wait", "60"]) == 0
    wait_for(lambda: node_stats(base, "replayed", "copy")["counters"]["received"] >= len(original) // 200,
             60, "the replay to start arriving")
    total_frames = node_stats(base, "replayed", "player")["kind_stats"]["frames"]
    wait_for(lambda: node_stats(base, "replayed", "player")["kind_stats"]["passes"] >= 1, 60, "the replay to end")
    total_frames = node_stats(base, "replayed", "player")["kind_stats"]["frames"]
    wait_for(lambda: node_stats(base, "replayed", "copy")["counters"]["received"] >= total_frames, 60,
             "every replayed frame at the copy")
    copy = node_stats(base, "replayed", "copy")["counters"]
    assert copy["gaps_detected"] == 0 and copy["duplicates"] == 0
    assert main(["down", str(topology)]) == 0
    assert b"".join(f.read_bytes() for f in sorted(replayed.glob("*.frames"))) == original
