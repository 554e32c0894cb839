"""``alphapulse metrics [FILE]``: serve applied topologies' node metrics to Prometheus."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from alphapulse.cli import ExitCode
from alphapulse.cli._common import add_run_dir, run_base, topology_name

HELP = "serve the nodes' counters, gaps, breakers, CPU and memory as Prometheus metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("file", type=Path, nargs="?",
                       help="topology file (default: every topology applied in the run directory)")
    which.add_argument("--topology", metavar="NAME", help="an applied topology by name (what the exporter "
                       "a topology's `metrics:` section starts under supervisord is given)")
    add_run_dir(parser)
    parser.add_argument("--listen", default="127.0.0.1:9464", metavar="HOST:PORT",
                        help="where to serve /metrics (default 127.0.0.1:9464; port 0 picks a free one)")
    parser.add_argument("--once", action="store_true",
                        help="print one scrape in the exposition format and exit (for node_exporter's "
                             "textfile collector, or a look)")


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, generate_latest, start_http_server

    base = run_base(args)
    names = [args.topology] if args.topology else [topology_name(args.file)] if args.file else None
    registry = CollectorRegistry(auto_describe=False)
    if args.once:
        registry.register(_collector(base, names))
        sys.stdout.write(generate_latest(registry).decode())
        return ExitCode.OK
    if _supervised():
        from alphapulse.runtime._orphan import end_with_supervisor

        end_with_supervisor()  # a killed supervisord takes its exporter with it, as it does its nodes
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        _error(f"--listen wants HOST:PORT, not {args.listen!r}")
        return ExitCode.USAGE
    try:  # first: a port already taken fails the exporter at once, well within supervisord's startsecs
        server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    except OSError as exc:
        _error(f"cannot listen on {args.listen}: {exc}")
        return ExitCode.RUNTIME
    registry.register(_collector(base, names))
    print(f"serving http://{host}:{server.server_port}/metrics (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return ExitCode.OK


def _collector(base, names: list[str] | None):
    from alphapulse.supervise._metrics import TopologyCollector

    return TopologyCollector(base, names)


def _supervised() -> bool:
    return os.environ.get("SUPERVISOR_ENABLED") == "1"


def _error(message: str) -> None:
    """Under supervisord, in the nodes' log format, so ``status`` and ``apply --wait`` show it as
    the reason the exporter is not running (``runtime/_failure.last_error``)."""
    if _supervised():
        logging.basicConfig(format="%(asctime)s %(levelname)s metrics %(name)s: %(message)s")
        logging.getLogger("alphapulse.metrics").error("%s", message)
    else:
        print(f"error: {message}", file=sys.stderr)
