"""Exchange ingest: a real adapter process on a WebSocket feed that bursts as the venue's did.

Run: ``python benchmarks/ingest.py [--speed S] [--quick]`` (needs ``../shared/data``). The
Coinbase Exchange capture (``coinbase/COINBASE.ws.28.0``: 6,839 frames over 30.8 s, five
products, 41% of frames within 100 µs of the one before) is served by a local WebSocket server
process at its recorded pace divided by ``--speed`` (default 1; ``--quick``: 4), each write
holding the frames due by then (``alphapulse.testing.serve_bursts``). Two consumers, one after
the other, each against a fresh server process:

* **ours**: the real ``source.coinbase`` node process (``python -m alphapulse node --plan ...``,
  as supervisord runs it: JSON parse, full-depth books, TLV frames, publish) feeding a real
  ``sink.counter`` node process over its Unix socket;
* **reference**: a trio-websocket client process that only takes each frame with
  ``get_message()`` and parses it with ``orjson``: what an adapter built on trio-websocket's
  per-message API spends before it does any work of its own;
* **our client alone**: the same, on the session loop's client (``runtime/_wsclient.py``,
  ``receive_batch``): the transport's share of the difference, at the same pace in the same run.
  The two clients run ``--repeats`` rounds each, alternating; the least CPU of each is compared.

The three run one after the other, each against a fresh feed process. CPU of every process
comes from ``/proc/<pid>/task/*/schedstat``, sampled when the server starts streaming and once
everything has arrived (start-up, imports and kernel loading are outside). Figures: CPU µs per
upstream frame of the adapter, the reference and our client (``ratio_...``: over the reference,
at the same pace in the same run), the adapter's frames per socket read and messages per
published block (each block is one wakeup of every node downstream), and the sink's CPU per
frame. The last line is one JSON object of all figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import sys
import time

if not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks._common import report
from benchmarks.relay import PY, ProcessSet, task_cpu_seconds, write_plan

CAPTURE = pathlib.Path("coinbase") / "COINBASE.ws.28.0"
PRODUCTS = ["SKL-USD", "BAND-GBP", "BAND-BTC", "DASH-BTC", "CRV-EUR"]
TOPOLOGY = """\
topology: ingest
nodes:
  venue:
    kind: source.coinbase
    params:
      feed: exchange
      endpoint: {url}
      products: {products}
      depth: 20
      staleness_timeout: 600
  sink:
    kind: sink.counter
    inputs: [venue]
"""


def shared_data() -> pathlib.Path:
    default = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    return pathlib.Path(os.environ.get("ALPHAPULSE_SHARED_DATA", default))


# -- child processes ------------------------------------------------------------------------------
def serve(cfg: dict) -> None:
    """The feed: ``serve_bursts`` on the capture; files mark its port, its start and its end."""
    import trio

    from alphapulse.testing import serve_bursts

    def touch(name: str, text: str = "") -> None:
        path = os.path.join(cfg["dir"], name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                serve_bursts, cfg["capture"], per_write=1000, speed=cfg["speed"], wait_for_messages=1))
            touch("port", str(server.port))
            await server.streaming.wait()
            touch("streaming")
            await server.finished.wait()
            touch("finished", json.dumps({"writes": server.writes, "frames": server.frames_sent}))

    trio.run(main)


def reference_client(cfg: dict) -> None:
    """trio-websocket's per-message API and a JSON parse per frame, nothing else."""
    import orjson
    import trio
    from trio_websocket import open_websocket_url

    async def main() -> None:
        async with open_websocket_url(cfg["url"]) as ws:
            await ws.send_message('{"type": "subscribe"}')
            for _ in range(cfg["frames"]):
                orjson.loads(await ws.get_message())
        with open(os.path.join(cfg["dir"], "reference.done"), "w", encoding="utf-8"):
            pass

    trio.run(main)


def our_client(cfg: dict) -> None:
    """The session loop's client, read by read, and a JSON parse per frame, nothing else."""
    import orjson
    import trio

    from alphapulse.runtime._wsclient import open_websocket

    async def main() -> None:
        async with open_websocket(cfg["url"]) as ws:
            await ws.send_message('{"type": "subscribe"}')
            got = 0
            while got < cfg["frames"]:
                for frame in await ws.receive_batch():
                    orjson.loads(frame)
                    got += 1
        with open(os.path.join(cfg["dir"], "reference.done"), "w", encoding="utf-8"):
            pass

    trio.run(main)


# -- the runs -------------------------------------------------------------------------------------
def start_feed(ps: ProcessSet, capture: pathlib.Path, speed: float) -> str:
    ps.start("feed", [PY, __file__, "--child", "serve", json.dumps(
        {"dir": ps.dir, "capture": str(capture), "speed": speed})])
    ps.wait_files(["port"], timeout=60)
    return f"ws://127.0.0.1:{pathlib.Path(ps.path('port')).read_text()}/"


def measure(ps: ProcessSet, names: list[str], done, timeout: float) -> dict[str, float]:
    """CPU seconds of ``names`` from the feed's first write until ``done()``."""
    ps.wait_files(["streaming"], timeout=60)
    cpu0 = {name: task_cpu_seconds(ps.procs[name].pid) for name in names}
    ps.wait_files(["finished"], timeout=timeout)  # no stats requests while it streams: they cost the node CPU
    limit = time.monotonic() + timeout
    while not done():
        ps.check()
        if time.monotonic() > limit:
            raise TimeoutError(f"{ps.label}: not everything arrived within {timeout:.0f} s")
        time.sleep(0.01)
    return {name: task_cpu_seconds(ps.procs[name].pid) - cpu0[name] for name in names}


def run_ours(capture: pathlib.Path, frames: int, speed: float, timeout: float) -> dict:
    from alphapulse.runtime._control import request

    ps = ProcessSet("ours", budget=timeout + 120)
    try:
        url = start_feed(ps, capture, speed)
        plan = write_plan(ps, "ingest.yaml", TOPOLOGY.format(url=url, products=json.dumps(PRODUCTS)))
        env = {**os.environ, "ALPHAPULSE_LOG_LEVEL": "WARNING"}
        for name in ("sink", "venue"):
            ps.start(name, plan.nodes[name]["argv"], env=env)

        def stats(name: str) -> dict:
            try:
                return request(plan.nodes[name]["sockets"]["control"], "stats", timeout=1.0)
            except OSError:
                return {}

        seen: list[int] = []

        def arrived() -> bool:
            if stats("venue").get("counters", {}).get("upstream.frames", 0) < frames:
                return False
            seen.append(stats("sink").get("counters", {}).get("received", -1))  # still for 0.3 s: all in
            time.sleep(0.1)
            return len(seen) > 3 and len(set(seen[-4:])) == 1

        cpu = measure(ps, ["venue", "sink"], arrived, timeout)
        venue = stats("venue")
        counters, publisher = venue["counters"], venue["publisher"]
        return {"cpu": cpu, "frames": counters["upstream.frames"], "reads": counters["upstream.reads"],
                "messages": publisher["published_messages"], "blocks": publisher["published_blocks"],
                "errors": counters["errors"], "feed": json.loads(pathlib.Path(ps.path("finished")).read_text())}
    finally:
        ps.close()


def run_client(role: str, capture: pathlib.Path, frames: int, speed: float, timeout: float) -> dict:
    ps = ProcessSet(role, budget=timeout + 120)
    try:
        url = start_feed(ps, capture, speed)
        ps.start("client", [PY, __file__, "--child", role, json.dumps(
            {"dir": ps.dir, "url": url, "frames": frames})])
        cpu = measure(ps, ["client"], lambda: os.path.exists(ps.path("reference.done")), timeout)
        return {"cpu": cpu}
    finally:
        ps.close()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed", type=float, default=None, help="recorded pace divided by this (default 1)")
    ap.add_argument("--quick", action="store_true", help="four times the recorded pace")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of each client, alternating (default 3)")
    ap.add_argument("--child", nargs=2, metavar=("ROLE", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        role, cfg = args.child
        {"serve": serve, "reference": reference_client, "ours": our_client}[role](json.loads(cfg))
        return {}
    from alphapulse.captures import received_frames

    capture = shared_data() / CAPTURE
    if not capture.exists():
        sys.exit(f"needs the Coinbase capture at {capture} (../shared/data)")
    frames = sum(1 for _ in received_frames(capture))
    speed = args.speed if args.speed is not None else (4.0 if args.quick else 1.0)
    timeout = 31 / speed + 60
    ours = run_ours(capture, frames, speed, timeout)
    # the two clients alternate, so this machine's drift reaches both alike; the least of each is kept
    per_frame: dict[str, list[float]] = {"reference": [], "ours": []}
    for _ in range(args.repeats):
        for role, seen in per_frame.items():
            seen.append(run_client(role, capture, frames, speed, timeout)["cpu"]["client"] / frames * 1e6)
    venue_us = ours["cpu"]["venue"] / frames * 1e6
    reference_us, client_us = min(per_frame["reference"]), min(per_frame["ours"])
    figures: dict[str, float | int | str] = {
        "capture_frames": frames,
        "speed": speed,
        "feed_writes": ours["feed"]["writes"],
        "adapter_cpu_us_per_frame": round(venue_us, 1),
        "reference_trio_websocket_cpu_us_per_frame": round(reference_us, 1),
        "ratio_adapter_vs_reference_cpu": round(venue_us / reference_us, 3),
        "our_client_cpu_us_per_frame": round(client_us, 1),
        "ratio_our_client_vs_reference_cpu": round(client_us / reference_us, 3),
        "client_rounds_us_per_frame": {role: [round(x, 1) for x in seen] for role, seen in per_frame.items()},
        "adapter_frames_per_read": round(ours["frames"] / ours["reads"], 2),
        "adapter_messages_published": ours["messages"],
        "adapter_blocks_published": ours["blocks"],
        "adapter_messages_per_block": round(ours["messages"] / ours["blocks"], 2),
        "downstream_wakeups_per_frame": round(ours["blocks"] / frames, 3),
        "sink_cpu_us_per_frame": round(ours["cpu"]["sink"] / frames * 1e6, 1),
        "adapter_errors": ours["errors"],
    }
    report(figures)
    return figures


if __name__ == "__main__":
    main()
