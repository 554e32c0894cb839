"""Prometheus metrics of applied topologies: what ``status`` shows, for a scraper.

An exporter in Prometheus' own sense (like ``node_exporter`` or a supervisord exporter): it keeps
nothing. Each scrape asks supervisord for its process table and every running node for its
``stats`` over the control socket, exactly what ``alphapulse status`` does, and renders them;
the nodes' counters are cumulative since each node started, so they are Prometheus counters
as they stand (a restart resets them, which ``rate()`` expects). Keeping the exporter out of
the nodes keeps HTTP and a metrics library off their hot paths and their ports.

``families`` is pure (reports in, metric families out), so it is tested without processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from alphapulse.supervise._apply import load_applied_plan
from alphapulse.supervise._status import NodeReport, node_reports
from alphapulse.supervise._supervisor import RunBase
from alphapulse.supervise._watch import WatchOutcome, read_outcome

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
"""``alphapulse_breaker_state``: a gauge, so an alert can say ``> 0``"""
NODE = ["topology", "node", "kind"]


def families(reports: Iterable[NodeReport]) -> list[Metric]:
    """The metric families for these nodes' reports (one sample per node and label set)."""

    def counter(name: str, doc: str, *labels: str) -> CounterMetricFamily:
        return CounterMetricFamily(f"alphapulse_{name}", doc, labels=[*NODE, *labels])

    def gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"alphapulse_{name}", doc, labels=[*NODE, *labels])

    up = gauge("node_up", "1 when supervisord runs the node and it answered on its control socket")
    degraded = gauge("node_degraded", "1 when the node answers but is degraded: a breaker not closed, or trouble it "
                     "copes with (a full disk it holds data through; `status` says what), 0 when healthy")
    state = gauge("node_state", "supervisord's state of the node (1 for the state it is in)", "state")
    restarts = counter("node_restarts", "Times supervisord started the node again")
    crash_streak = gauge("node_crash_streak", "Failures in a row before the node's current run or wait, each soon "
                         "after its start (2 and more: crash-loop backoff, the node waits before starting)")
    started = gauge("node_start_time_seconds", "When the node's process started (Unix time)")
    received = counter("received_messages", "Messages the node's handler received")
    sent = counter("sent_messages", "Messages the node published")
    dropped = counter("dropped_messages", "Messages the node dropped, by reason (counted, never silent)", "reason")
    errors = counter("errors", "Errors the node counted (bad input, failed handler calls), by kind", "error")
    gaps = counter("gaps", "Sequence gaps the node's inputs saw, by outcome", "outcome")
    lost = counter("lost_messages", "Messages missing in gaps that could not be recovered")
    decode = counter("decode_errors", "Frames an input rejected (bad magic, CRC, size...), by kind",
                     "upstream", "error")
    reconnects = counter("input_reconnects", "Times an input connected to its upstream again", "upstream")
    overflow = counter("subscriber_dropped_messages", "Messages a subscriber's overflow policy dropped",
                       "subscriber")
    queued = gauge("subscriber_queued_messages", "Messages waiting in a subscriber's queue", "subscriber")
    reach = gauge("retransmit_seconds", "How far back the node's retransmit buffer reaches now (the age of the "
                  "oldest message it holds): a relay downstream down longer than this loses messages")
    breaker = gauge("breaker_state", "Circuit breaker state: 0 closed, 1 half open, 2 open", "breaker")
    cpu = counter("cpu_seconds", "CPU time the node's process used (user + system)")
    woken = counter("wakeups", "Times the node's process was woken (voluntary context switches): most of its CPU "
                    "follows how often it wakes")
    resident = gauge("resident_memory_bytes", "The node's resident memory")
    private = gauge("private_memory_bytes", "Resident memory less shared library pages (adds up across nodes)")
    heap_used = gauge("heap_in_use_bytes", "The C allocator's heap in use (glibc mallinfo2, sampled once a minute)")
    heap_free = gauge("heap_free_bytes", "Free memory the C allocator keeps in its arenas: grows with fragmentation, "
                      "where heap_in_use_bytes grows with what the node holds")
    trims = counter("heap_trims", "Times the node handed free heap pages back to the system (malloc_trim, once its "
                    "free heap grew 2 MiB)")
    stale = gauge("node_code_changed", "1 when module files the node loaded changed on disk since it started "
                  "(`alphapulse apply` restarts it), 0 when none did")

    for report in reports:
        node = [report.topology, report.node, report.kind]
        stats, info = report.stats, report.info
        up.add_metric(node, 1 if stats else 0)
        state.add_metric([*node, report.state], 1)
        restarts.add_metric(node, report.restarts)
        crash_streak.add_metric(node, report.crash_streak)
        if report.state == "RUNNING" and info.get("start"):
            started.add_metric(node, float(info["start"]))
        if report.code_changed is not None:
            stale.add_metric(node, 1 if report.code_changed else 0)
        if not stats:
            continue
        degraded.add_metric(node, 0 if stats.get("status") == "healthy" else 1)
        counters = stats.get("counters", {})
        received.add_metric(node, counters.get("received", 0))
        sent.add_metric(node, counters.get("sent", 0))
        lost.add_metric(node, counters.get("messages_lost", 0))
        for outcome in ("detected", "recovered", "lost"):
            gaps.add_metric([*node, outcome], counters.get(f"gaps_{outcome}", 0))
        for key, value in sorted(counters.items()):
            if key.startswith("dropped."):
                dropped.add_metric([*node, key.removeprefix("dropped.")], value)
            elif key.startswith("errors."):
                errors.add_metric([*node, key.removeprefix("errors.")], value)
        for link in _inputs(stats.get("inputs") or []):
            reconnects.add_metric([*node, link["upstream"]], link.get("reconnects", 0))
            for kind, count in sorted(link.get("decode_errors", {}).items()):
                decode.add_metric([*node, link["upstream"], kind], count)
        publisher = stats.get("publisher") or {}
        if publisher.get("retransmit_held"):
            reach.add_metric(node, publisher.get("retransmit_seconds", 0.0))
        for subscriber in publisher.get("subscribers", []):
            overflow.add_metric([*node, subscriber["name"]], subscriber["dropped_overflow"])
            queued.add_metric([*node, subscriber["name"]], subscriber["queued_messages"])
        for name, value in sorted(stats.get("breakers", {}).items()):
            breaker.add_metric([*node, name], BREAKER_STATES.get(value, 2))
        usage = stats.get("usage", {})
        if usage:
            cpu.add_metric(node, usage.get("cpu_seconds", 0.0))
            woken.add_metric(node, usage.get("wakeups", 0))
            resident.add_metric(node, usage.get("rss_bytes", 0))
            private.add_metric(node, usage.get("private_bytes", 0))
            if "heap_in_use_bytes" in usage:
                heap_used.add_metric(node, usage["heap_in_use_bytes"])
                heap_free.add_metric(node, usage["heap_free_bytes"])
                trims.add_metric(node, usage.get("heap_trims", 0))
    return [up, degraded, state, restarts, crash_streak, started, received, sent, dropped, errors, gaps, lost, decode,
            reconnects, overflow, queued, reach, breaker, cpu, woken, resident, private, heap_used, heap_free, trims,
            stale]


def reload_families(outcomes: Mapping[str, WatchOutcome]) -> list[Metric]:
    """Each watched topology's hot reload, as Prometheus reports its own
    (``prometheus_config_last_reload_successful``): whether the file's last edit took, and when
    one last did. An alert on ``== 0`` catches an edit the watcher refused."""
    successful = GaugeMetricFamily("alphapulse_config_last_reload_successful",
                                   "1 when the watcher (reload.watch) applied the file's last edit, 0 when it "
                                   "refused it (invalid) or could not apply it", labels=["topology"])
    success_time = GaugeMetricFamily("alphapulse_config_last_reload_success_timestamp_seconds",
                                     "When the watcher last applied the file (Unix time)", labels=["topology"])
    for topology, outcome in sorted(outcomes.items()):
        successful.add_metric([topology], 1 if outcome.succeeded else 0)
        if outcome.succeeded_at is not None:
            success_time.add_metric([topology], outcome.succeeded_at)
    return [successful, success_time]


def _inputs(links: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each input link and the peer links it opened (a ``peer`` relay's introductions)."""
    for link in links:
        yield link
        yield from _inputs(list(link.get("peers") or []))


class TopologyCollector(Collector):
    """Collects, on each scrape, the named topologies (default: every one applied in the run
    directory at that moment, so topologies applied later show up without a restart)."""

    def __init__(self, base: RunBase, names: list[str] | None = None) -> None:
        self.base = base
        self.names = names

    def collect(self) -> Iterator[Metric]:
        reports: list[NodeReport] = []
        outcomes: dict[str, WatchOutcome] = {}
        for name in self.names or self.base.applied_topologies():
            plan = load_applied_plan(self.base, name)
            if plan is not None:
                reports.extend(node_reports(plan, self.base, ask_code=True))
                outcome = read_outcome(plan["run_dir"]) if plan.get("watch") else None
                if outcome is not None:
                    outcomes[name] = outcome
        yield from families(reports)
        yield from reload_families(outcomes)
