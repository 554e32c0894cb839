"""``alphapulse apply FILE``: start or update a running topology; ``--watch`` keeps doing it."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphapulse.cli import ExitCode
from alphapulse.cli._common import add_run_dir, print_diagnostics, run_base

if TYPE_CHECKING:
    from alphapulse.supervise import RunBase

HELP = "start or update a topology under supervisord (only what changed is touched)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="topology YAML file")
    add_run_dir(parser)
    parser.add_argument("--watch", action="store_true", help="re-apply on every saved edit until interrupted")
    parser.add_argument("--supervised", metavar="TOPOLOGY",
                        help="run as TOPOLOGY's watcher under supervisord (what `reload: {watch: true}` "
                             "starts as TOPOLOGY:_watch): apply now and on every saved edit, record each "
                             "outcome for `status`, end on SIGTERM")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and say what applying would do and why (add, remove, restart, "
                             "reconfigure, start), changing nothing")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for every node to serve (RUNNING, kernels loaded, "
                             "control socket answering)")


def run(args: argparse.Namespace) -> int:
    from alphapulse.supervise import (
        ApplyError,
        SupervisorError,
        apply_plan,
        compile_file,
        preview,
        wait_until_serving,
        watch,
    )

    base = run_base(args)
    if args.supervised:
        from alphapulse.supervise import SupervisedWatcher

        SupervisedWatcher(args.file, base, args.supervised).run()
        return ExitCode.OK

    def apply_once() -> int:
        try:
            plan, warnings = compile_file(args.file, base)
        except ApplyError as exc:
            print_diagnostics(exc.diagnostics)
            print(f"error: {exc}", file=sys.stderr)
            return ExitCode.INVALID
        except OSError as exc:
            print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
            return ExitCode.USAGE
        print_diagnostics(warnings)
        if args.dry_run:
            for line in preview(plan, base):
                print(line)
            return ExitCode.OK
        try:
            report = apply_plan(plan, base)
        except SupervisorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return ExitCode.RUNTIME
        for line in report.lines():
            print(line)
        if args.wait:
            states = wait_until_serving(base, plan["topology"], args.wait, ignore=report.left_stopped)
            not_serving = {n: s for n, s in states.items() if s != "RUNNING"}
            if not_serving:
                _print_not_serving(base, plan["topology"], not_serving, args.wait)
                return ExitCode.RUNTIME
        _print_endpoints(plan)
        return ExitCode.OK

    code = apply_once()
    if not args.watch:
        return code
    print(f"watching {args.file} for changes (Ctrl-C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        watch(args.file, lambda: print(f"-- {args.file} changed: exit {apply_once()}", flush=True))
    return ExitCode.OK


def _print_not_serving(base: RunBase, topology: str, not_serving: dict[str, str], waited: float) -> None:
    """Each node that does not serve, its state and, for one that crashed, was given up on or
    waits out its crash-loop backoff, why (its last logged error) and its log: the reason,
    without opening the log first."""
    from alphapulse.supervise import CRASH_LOOP, Supervisor, load_applied_plan, node_reports, why_not_running

    if "FATAL" in not_serving.values():
        why = "(supervisord gave up)"
    elif CRASH_LOOP in not_serving.values():
        why = "(crash loop)"
    else:
        why = f"after {waited:.0f} s"
    print(f"error: not serving {why}: {', '.join(sorted(not_serving))}", file=sys.stderr)
    try:
        reports = {r.node: r for r in node_reports(load_applied_plan(base, topology) or {}, base)}
    except Exception:  # the report is best effort: the states above are what was asked for
        reports = {}
    processes: dict[str, Any] = {}
    if any(node not in reports for node in not_serving):  # not a node: the metrics exporter
        with contextlib.suppress(Exception):
            processes = Supervisor(base).group_processes(topology)
    for node, state in sorted(not_serving.items()):
        report = reports.get(node)
        info = report.info if report is not None else processes.get(node, {})
        reason = ""
        if report is not None:  # a wait seen earlier may have ended since: then the record's story
            reason = report.crash_wait() or (report.crash_history() if state == CRASH_LOOP else "")
        reason = reason or why_not_running(info)
        print(f"  {node}: {state}{': ' + reason if reason else ''}", file=sys.stderr)
        if reason and info.get("stderr_logfile"):
            print(f"    log: {info['stderr_logfile']}", file=sys.stderr)
    looping = sorted(node for node, state in not_serving.items() if state == CRASH_LOOP)
    if looping:
        them = "it" if len(looping) == 1 else "them"
        names = " ".join(f"{topology}:{node}" for node in looping)
        print(f"  supervisord keeps starting {them} after each wait; once the cause is gone, "
              f"`alphapulse ctl restart {names}` starts {them} at once", file=sys.stderr)


def _print_endpoints(plan: dict) -> None:
    """Tell the user where to look: dashboards and bridges a node serves, the metrics exporter."""
    if plan.get("metrics"):
        print(f"metrics      http://{plan['metrics']['listen']}/metrics  (Prometheus)")
    if plan.get("watch"):
        print(f"watching     {plan['watch']['file']}  ({plan['topology']}:_watch applies every saved edit)")
    for name, node in sorted(plan["nodes"].items()):
        params = node.get("params", {})
        if node["kind"] == "sink.websocket":
            host, port = params.get("host", "127.0.0.1"), params.get("port", 8765)
            http_port = params.get("http_port")
            if http_port is None:  # the kind's default: the WebSocket port + 1
                http_port = port + 1 if port else 0
            if params.get("dashboard", True):
                print(f"dashboard    http://{host}:{http_port}/  (node {name})")
            print(f"websocket    ws://{host}:{port}/  (node {name})")
