"""``alphapulse metrics [FILE]``: serve applied topologies' node metrics to Prometheus."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from alphapulse.cli import ExitCode
from alphapulse.cli._common import add_run_dir, run_base, topology_name

HELP = "serve the nodes' counters, gaps, breakers, CPU and memory as Prometheus metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, nargs="?",
                        help="topology file (default: every topology applied in the run directory)")
    add_run_dir(parser)
    parser.add_argument("--listen", default="127.0.0.1:9464", metavar="HOST:PORT",
                        help="where to serve /metrics (default 127.0.0.1:9464; port 0 picks a free one)")
    parser.add_argument("--once", action="store_true",
                        help="print one scrape in the exposition format and exit (for node_exporter's "
                             "textfile collector, or a look)")


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, generate_latest, start_http_server

    from alphapulse.supervise._metrics import TopologyCollector

    base = run_base(args)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TopologyCollector(base, [topology_name(args.file)] if args.file else None))
    if args.once:
        sys.stdout.write(generate_latest(registry).decode())
        return ExitCode.OK
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"error: --listen wants HOST:PORT, not {args.listen!r}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        server, _thread = start_http_server(int(port), addr=host, registry=registry)
    except OSError as exc:
        print(f"error: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return ExitCode.RUNTIME
    print(f"serving http://{host}:{server.server_port}/metrics (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return ExitCode.OK
