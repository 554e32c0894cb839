"""Options and helpers shared by the subcommands that run topologies."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alphapulse.supervise import RunBase, default_run_base


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run directory of supervisord, plans, sockets and logs "
        "(default: $ALPHAPULSE_RUN_DIR or ~/.alphapulse/run)",
    )


def run_base(args: argparse.Namespace) -> RunBase:
    return RunBase((args.run_dir or default_run_base()).expanduser().absolute())


def topology_name(path: Path) -> str:
    """The ``topology:`` name a file declares (read leniently: the file may be broken now)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("topology"), str):
        return data["topology"]
    return path.stem


def print_diagnostics(diagnostics: list, stream=None) -> None:
    from alphapulse.topology import format_diagnostics

    (stream or sys.stderr).write(format_diagnostics(diagnostics))


def add_message_filter(parser: argparse.ArgumentParser) -> None:
    """``--types``, ``--instruments`` and ``--format``: which messages to print, and how."""
    parser.add_argument("--types", help="comma-separated TLV types to show, e.g. Trade,Quote (default: all)")
    parser.add_argument("--instruments", help="comma-separated instruments, e.g. coinbase:BTC-USD (default: all)")
    parser.add_argument("--format", choices=("json", "logfmt"), default="json",
                        help="one JSON object a line (default), or key=value pairs (logfmt) for reading by eye")


def message_filter(args: argparse.Namespace) -> tuple[list[int], list[int]] | str:
    """(TLV type numbers, instrument ids) from ``--types`` and ``--instruments``, or an error message."""
    from alphapulse import protocol

    titles = {t.title.lower(): t for t in protocol.TLVType}
    types = []
    for text in filter(None, (args.types or "").split(",")):
        tlv = titles.get(text.strip().lower())
        if tlv is None:
            return f"unknown TLV type {text.strip()!r}; types: {', '.join(t.title for t in protocol.TLVType)}"
        types.append(int(tlv))
    instruments = []
    for text in filter(None, (args.instruments or "").split(",")):
        try:
            instruments.append(protocol.parse_instrument(text.strip()).id)
        except protocol.InstrumentError as exc:
            return f"--instruments: {exc}"
    return types, instruments


def plural(n: int, noun: str) -> str:
    """``1 source``, ``2 sources``, ``1,024 messages``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def applied_node(args: argparse.Namespace, target: str, option: str) -> tuple[dict, dict] | str:
    """(plan, the node's entry) of ``TOPOLOGY/NODE`` in the applied topologies of the run
    directory, or an error message naming ``option`` (how the command took ``target``)."""
    from alphapulse.supervise import load_applied_plan

    topology, _, node = target.partition("/")
    if not topology or not node:
        return f"{option} wants TOPOLOGY/NODE, not {target!r}"
    base = run_base(args)
    plan = load_applied_plan(base, topology)
    if plan is None:
        return f"topology {topology} is not applied in {base.path}"
    entry = plan["nodes"].get(node)
    if entry is None:
        return f"topology {topology} has no node {node!r}; nodes: {', '.join(sorted(plan['nodes']))}"
    return plan, entry
