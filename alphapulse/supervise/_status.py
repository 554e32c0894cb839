"""``status``: supervisord's view of each node joined with the node's own counters."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from alphapulse.runtime import ControlError, request
from alphapulse.supervise._supervisor import RunBase, Supervisor


@dataclasses.dataclass(frozen=True)
class NodeStatus:
    node: str
    kind: str
    state: str
    pid: int
    uptime: float
    restarts: int
    rate_in: float
    rate_out: float
    received: int
    sent: int
    dropped: int
    errors: int
    gaps_detected: int
    gaps_recovered: int
    gaps_lost: int
    breaker: str
    health: str
    cpu: str = "-"
    """the node's scheduling as its kernel reports it, where it differs from a plain process"""


def topology_status(plan: dict[str, Any], base: RunBase) -> list[NodeStatus]:
    name = plan["topology"]
    sup = Supervisor(base)
    processes = sup.group_processes(name) if sup.is_running() else {}
    starts = sup.start_counts() if processes else {}
    rows = []
    for node, entry in sorted(plan["nodes"].items()):
        info = processes.get(node, {})
        state = info.get("statename", "ABSENT")
        stats: dict[str, Any] = {}
        if state == "RUNNING":
            try:
                stats = request(entry["sockets"]["control"], "stats", timeout=1.0)
            except ControlError:
                stats = {}
        counters = stats.get("counters", {})
        breakers = stats.get("breakers", {})
        open_breakers = [n for n, s in breakers.items() if s != "closed"]
        rows.append(
            NodeStatus(
                node=node,
                kind=entry["kind"],
                state=state,
                pid=int(info.get("pid", 0)),
                uptime=float(info["now"] - info["start"]) if state == "RUNNING" else 0.0,
                restarts=max(0, starts.get(f"{name}:{node}", 0) - 1),
                rate_in=float(stats.get("rates", {}).get("in", 0.0)),
                rate_out=float(stats.get("rates", {}).get("out", 0.0)),
                received=int(counters.get("received", 0)),
                sent=int(counters.get("sent", 0)),
                dropped=int(counters.get("dropped", 0)),
                errors=int(counters.get("errors", 0)),
                gaps_detected=int(counters.get("gaps_detected", 0)),
                gaps_recovered=int(counters.get("gaps_recovered", 0)),
                gaps_lost=int(counters.get("gaps_lost", 0)),
                breaker=",".join(f"{n.split('.')[-1]}={breakers[n]}" for n in open_breakers) or "closed",
                health=stats.get("status", "unknown" if state == "RUNNING" else "-"),
                cpu=_cpu_summary(stats.get("cpu")),
            )
        )
    return rows


def format_table(rows: list[NodeStatus]) -> str:
    headers = ("NODE", "KIND", "STATE", "PID", "UPTIME", "RESTARTS", "IN/S", "OUT/S", "DROPS", "ERRORS",
               "GAPS d/r/l", "BREAKER", "CPU")
    table = [headers]
    for r in rows:
        table.append((
            r.node, r.kind, r.state, str(r.pid or "-"), _duration(r.uptime), str(r.restarts),
            f"{r.rate_in:,.0f}", f"{r.rate_out:,.0f}", str(r.dropped), str(r.errors),
            f"{r.gaps_detected}/{r.gaps_recovered}/{r.gaps_lost}", r.breaker, r.cpu,
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)


def _cpu_summary(report: dict[str, Any] | None) -> str:
    """``batch nice=4 cpus=0,1`` from a node's ``stats.cpu``; ``-`` for a plain process, ``!``
    appended when the node could not take all of its ``cpu`` block."""
    if not report:
        return "-"
    actual = report.get("actual", {})
    parts = []
    if actual.get("policy", "normal") != "normal":
        parts.append(str(actual["policy"]))
    if actual.get("nice"):
        parts.append(f"nice={actual['nice']}")
    cpus = actual.get("affinity") or []
    if cpus and len(cpus) < (os.cpu_count() or len(cpus)):
        parts.append("cpus=" + ",".join(str(c) for c in cpus))
    if report.get("problems"):
        parts.append("!")
    return " ".join(parts) or "-"


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
