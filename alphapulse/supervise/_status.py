"""``status``: supervisord's view of each node joined with the node's own counters."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from alphapulse.runtime import ControlError, request
from alphapulse.runtime._crashloop import (
    FAILED,
    WAITING,
    CrashPolicy,
    RunRecord,
    StartDecision,
    describe_failures,
    describe_wait,
    read_record,
)
from alphapulse.runtime._failure import last_error
from alphapulse.supervise._codechanges import changed_code, describe_files
from alphapulse.supervise._supervisor import RunBase, Supervisor
from alphapulse.supervise._watch import read_outcome
from alphapulse.topology import METRICS_PROCESS, WATCH_PROCESS, state_file


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
    scheduling: str = "-"
    """the node's scheduling as its kernel reports it, where it differs from a plain process"""
    cpu_percent: float | None = None
    """CPU the node used over its last second, in percent of one core (as ``top``); None when
    it did not answer"""
    wakeups_per_s: float | None = None
    """how often the node was woken over its last second (voluntary context switches): most of
    a node's CPU follows this, not what one read costs"""
    rss_bytes: int | None = None
    """its resident memory"""
    private_bytes: int | None = None
    """resident less the shared libraries' pages: what adds up across nodes"""
    code_changed: list[str] = dataclasses.field(default_factory=list)
    """module files the node loaded that changed on disk since it started (``apply`` restarts it)"""
    problem: str = ""
    """why a node that should run does not (crashing, given up): its last logged error, else
    supervisord's own reason; for a running node, that it does not answer or runs changed code;
    empty for a node that runs as it should or was stopped deliberately"""
    log: str = ""
    """its stderr log, where the whole story is"""


@dataclasses.dataclass(frozen=True)
class NodeReport:
    """What supervisord and the node itself say about one node, as they said it: what
    ``status`` and the metrics exporter (``_metrics``) are made from."""

    topology: str
    node: str
    kind: str
    info: dict[str, Any]
    """supervisord's process info (empty when it does not know the node)"""
    stats: dict[str, Any]
    """the node's ``stats`` (empty unless it runs and answered)"""
    restarts: int
    record: RunRecord | None = None
    """what the node wrote about its last start (``runtime/_crashloop.py``), when it did"""
    policy: CrashPolicy = dataclasses.field(default_factory=CrashPolicy)
    code_changed: list[str] | None = None
    """the module files it loaded that changed since it started, when asked and it could say"""

    @property
    def state(self) -> str:
        return str(self.info.get("statename", "ABSENT"))

    @property
    def crash_streak(self) -> int:
        """Failures in a row before the node's current run or wait (0: it is not crash-looping)."""
        return self.record.streak if self.record is not None and self.record.pid == self.info.get("pid") else 0

    def crash_wait(self, now: float | None = None) -> str:
        """Why a running process does not serve yet because it waits out its crash-loop backoff
        (``failed 3 times in a row, ...; starting again in 4 s; last: ...``); empty otherwise."""
        record = self.record
        if (record is None or record.state != WAITING or record.pid != self.info.get("pid")
                or self.state not in ("STARTING", "RUNNING")):
            return ""
        left = max(0.0, (record.resume_at or 0.0) - (time.time() if now is None else now))
        wait = describe_wait(StartDecision(record.streak, left, record.reason, record.repeats), self.policy)
        return f"{wait}; last: {record.reason}" if record.reason else wait

    def crash_history(self) -> str:
        """The failures in a row the node's record tells of, whatever it does now (``apply
        --wait`` saw it wait, and its wait may have ended since): ``failed 3 times in a row, ...;
        last: ...``; empty when it tells of none."""
        record = self.record
        if record is None:
            return ""
        failures = record.streak + (1 if record.state == FAILED else 0)  # a failed record's own is not in it
        if failures == 0:
            return ""
        history = describe_failures(failures, record.repeats, self.policy)
        return f"{history}; last: {record.reason}" if record.reason else history


def node_reports(plan: dict[str, Any], base: RunBase, *, ask_code: bool = False) -> list[NodeReport]:
    """Ask supervisord for its process table and each running node for its ``stats`` (and,
    with ``ask_code``, whether its code changed since it started: a few ms of file stats each)."""
    name = plan["topology"]
    sup = Supervisor(base)
    processes = sup.group_processes(name) if sup.is_running() else {}
    starts = sup.start_counts() if processes else {}
    reports = []
    for node, entry in sorted(plan["nodes"].items()):
        info = processes.get(node, {})
        stats: dict[str, Any] = {}
        code: list[str] | None = None
        if info.get("statename") == "RUNNING":
            try:
                stats = request(entry["sockets"]["control"], "stats", timeout=1.0)
            except ControlError:
                stats = {}
            if stats and ask_code:
                code = changed_code(entry["sockets"]["control"], timeout=1.0)
        record = read_record(state_file(plan["run_dir"], node)) if plan.get("run_dir") else None
        reports.append(NodeReport(name, node, entry["kind"], info, stats,
                                  restarts=max(0, starts.get(f"{name}:{node}", 0) - 1), record=record,
                                  policy=CrashPolicy.from_restart(entry.get("restart", {})), code_changed=code))
    return reports


def topology_status(plan: dict[str, Any], base: RunBase) -> list[NodeStatus]:
    return [_status_row(report) for report in node_reports(plan, base, ask_code=True)]


def _status_row(report: NodeReport) -> NodeStatus:
    info, stats, state, node = report.info, report.stats, report.state, report.node
    crash_wait = report.crash_wait()
    if crash_wait:
        state = CRASH_LOOP
    counters = stats.get("counters", {})
    breakers = stats.get("breakers", {})
    open_breakers = [n for n, s in breakers.items() if s != "closed"]
    usage = stats.get("usage", {})
    return NodeStatus(
        node=node,
        kind=report.kind,
        state=state,
        pid=int(info.get("pid", 0)),
        uptime=float(info["now"] - info["start"]) if state == "RUNNING" else 0.0,
        restarts=report.restarts,
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
        scheduling=_scheduling(stats.get("cpu")),
        cpu_percent=round(100 * usage["cpu_cores"], 1) if "cpu_cores" in usage else None,
        wakeups_per_s=usage.get("wakeups_per_s"),
        rss_bytes=usage.get("rss_bytes"),
        private_bytes=usage.get("private_bytes"),
        code_changed=list(report.code_changed or []),
        problem=(crash_wait or why_not_running(info) or (NOT_ANSWERING if state == "RUNNING" and not stats else "")
                 or str(stats.get("trouble") or "")
                 or (code_changed_problem(report.code_changed) if report.code_changed else "")),
        log=str(info.get("stderr_logfile", "")),
    )


NOT_ANSWERING = ("its control socket does not answer: still starting, or hung (its watchdog ends a hung node "
                 "after restart.watchdog_seconds)")
"""``status``'s problem for a node supervisord runs that did not answer ``stats``: supervisord
sees a process, not whether its event loop turns (``runtime/_watchdog.py``)"""


def code_changed_problem(files: list[str]) -> str:
    """``status``'s problem for a node running code that changed on disk since it started."""
    return (f"runs code that changed on disk since it started ({describe_files(files)}); "
            "`alphapulse apply` restarts it")


CRASH_LOOP = "CRASHLOOP"
"""``status``'s state for a node whose process waits out its crash-loop backoff (supervisord
says RUNNING: the process runs, sleeping before it starts; ``runtime/_crashloop.py``)"""
TROUBLED_STATES = frozenset({"BACKOFF", "EXITED", "FATAL", "UNKNOWN"})
"""supervisord states of a node that should run and does not (STOPPED is someone's choice)"""


def why_not_running(info: dict[str, Any]) -> str:
    """For a node in a :data:`TROUBLED_STATES` state: the last error its process logged (a
    crashed node's last line is ``node NAME failed: <reason> (<file:line>)``), else supervisord's
    ``spawnerr`` (e.g. the command could not be run); empty otherwise."""
    if info.get("statename") not in TROUBLED_STATES:
        return ""
    logged = last_error(info["stderr_logfile"]) if info.get("stderr_logfile") else None
    return logged or str(info.get("spawnerr") or "") or str(info.get("description") or "")


def program_status(plan: dict[str, Any], base: RunBase) -> list[dict[str, Any]]:
    """The programs beside the nodes, as data (``status --json``): the Prometheus exporter
    (``metrics:``), where it serves; the file watcher (``reload.watch``), what it watches and its
    last outcome; each with supervisord's state, pid, uptime and why it does not run (a port
    already taken). Empty without them."""
    metrics, watch = plan.get("metrics"), plan.get("watch")
    if not metrics and not watch:
        return []
    sup = Supervisor(base)
    processes = sup.group_processes(plan["topology"]) if sup.is_running() else {}
    programs = []
    for program, process, where in (
        ("exporter", METRICS_PROCESS, metrics and {"url": f"http://{metrics['listen']}/metrics"}),
        ("watcher", WATCH_PROCESS, watch and {"file": watch["file"]}),
    ):
        if not where:
            continue
        info = processes.get(process) or {}
        entry = {"program": program, "process": f"{plan['topology']}:{process}", **where,
                 "state": info.get("statename", "ABSENT"), "pid": info.get("pid") or None,
                 "uptime": float(info["now"] - info["start"]) if info.get("pid") else 0.0,
                 "problem": why_not_running(info), "log": info.get("stderr_logfile", "")}
        if program == "watcher":
            outcome = read_outcome(plan["run_dir"])
            entry["last_edit"] = None if outcome is None else {
                "at": outcome.at, "outcome": outcome.outcome, "summary": outcome.summary(),
                "lines": list(outcome.lines), "succeeded_at": outcome.succeeded_at}
        programs.append(entry)
    return programs


def companion_lines(programs: list[dict[str, Any]]) -> list[str]:
    """:func:`program_status` as the lines below the table: ``metrics  URL  STATE``, ``watch
    FILE  STATE  last edit ...``, or the state with why it does not run and its log."""
    lines = []
    for entry in programs:
        what = (f"metrics  {entry['url']}" if entry["program"] == "exporter" else f"watch    {entry['file']}")
        line = f"{what}  {entry['state']}"
        if entry["problem"]:
            lines += [f"{line}: {entry['problem']}", f"  log: {entry['log']}"]
            continue
        last = entry.get("last_edit")
        lines.append(f"{line}  {last['summary']}" if last else line)
    return lines


def format_problems(rows: list[NodeStatus]) -> list[str]:
    """``NODE STATE: reason`` and where its log is, for each row with a problem."""
    lines = []
    for r in rows:
        if r.problem:
            lines.append(f"{r.node} {r.state}: {r.problem}")
            if r.log:
                lines.append(f"  log: {r.log}")
    return lines


def format_table(rows: list[NodeStatus]) -> str:
    headers = ("NODE", "KIND", "STATE", "PID", "UPTIME", "RESTARTS", "IN/S", "OUT/S", "DROPS", "ERRORS",
               "GAPS d/r/l", "BREAKER", "CPU%", "WAKE/S", "RSS", "SCHED")
    table = [headers]
    for r in rows:
        table.append((
            r.node, r.kind, r.state, str(r.pid or "-"), _duration(r.uptime), str(r.restarts),
            f"{r.rate_in:,.0f}", f"{r.rate_out:,.0f}", str(r.dropped), str(r.errors),
            f"{r.gaps_detected}/{r.gaps_recovered}/{r.gaps_lost}", r.breaker,
            "-" if r.cpu_percent is None else f"{r.cpu_percent:.1f}",
            "-" if r.wakeups_per_s is None else f"{r.wakeups_per_s:,.0f}", _mebibytes(r.rss_bytes), r.scheduling,
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    return "\n".join([*lines, _totals(rows), *format_problems(rows)])


def _totals(rows: list[NodeStatus]) -> str:
    """One line: how many nodes run, and what they cost together. Private memory, not resident:
    every node maps the same libraries, and adding resident sets would count those pages once
    per node."""
    running = sum(r.state == "RUNNING" for r in rows)
    silent = sum(r.problem == NOT_ANSWERING for r in rows)  # only a RUNNING row gets that problem
    cpu = sum(r.cpu_percent or 0.0 for r in rows)
    private = sum(r.private_bytes or 0 for r in rows)
    return (f"{running}/{len(rows)} running{f' ({silent} not answering)' if silent else ''}, "
            f"CPU {cpu:.1f}% of a core, private memory {_mebibytes(private)}")


def _scheduling(report: dict[str, Any] | None) -> str:
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


def _mebibytes(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:.0f}M"


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
