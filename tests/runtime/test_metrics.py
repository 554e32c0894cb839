"""``alphapulse metrics``: node reports rendered as Prometheus metrics, and read back with
Prometheus' own parser (``prometheus_client.parser``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from alphapulse.supervise._metrics import families
from alphapulse.supervise._status import NodeReport


class _Fixed:
    def __init__(self, reports: list[NodeReport]) -> None:
        self.reports = reports

    def collect(self):
        return families(self.reports)


def scrape(reports: list[NodeReport]) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape, through the text format and back."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(reports))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def labels(node: str, kind: str, **more: str) -> tuple:
    return tuple(sorted({"topology": "rt", "node": node, "kind": kind, **more}.items()))


RELAY_STATS = {
    "counters": {"received": 5000, "sent": 4990, "dropped.wrong_domain": 3, "errors.bad_tlv": 2, "gaps_detected": 2,
                 "gaps_recovered": 1, "gaps_lost": 1, "messages_lost": 7, "snapshots.forwarded": 9},
    "inputs": [{"upstream": "src", "reconnects": 1, "decode_errors": {"bad_checksum": 4},
                "peers": [{"upstream": "other", "reconnects": 0, "decode_errors": {}, "peers": []}]}],
    "publisher": {"subscribers": [{"name": "sink", "dropped_overflow": 11, "queued_messages": 5}],
                  "retransmit_held": 65536, "retransmit_seconds": 81.5},
    "breakers": {"node.handler": "open"},
    "status": "degraded",
    "usage": {"cpu_seconds": 1.25, "wakeups": 48_000, "rss_bytes": 170 * 2**20, "private_bytes": 80 * 2**20,
              "heap_in_use_bytes": 30 * 2**20, "heap_free_bytes": 3 * 2**20, "heap_trims": 2},
}


def test_a_running_node_and_a_crashed_one() -> None:
    running = NodeReport("rt", "bus", "relay", {"statename": "RUNNING", "start": 1_700_000_000}, RELAY_STATS,
                         restarts=2, code_changed=["nodes/relay.py"])
    crashed = NodeReport("rt", "rec", "sink.recorder", {"statename": "BACKOFF"}, {}, restarts=5)
    healthy = NodeReport("rt", "pq", "sink.parquet", {"statename": "RUNNING"}, {"status": "healthy", "counters": {}},
                         restarts=0)
    got = scrape([running, crashed, healthy])
    bus, rec = labels("bus", "relay"), labels("rec", "sink.recorder")
    assert got["alphapulse_node_up", bus] == 1 and got["alphapulse_node_up", rec] == 0
    assert got["alphapulse_node_degraded", bus] == 1  # an open breaker
    assert got["alphapulse_node_degraded", labels("pq", "sink.parquet")] == 0
    assert ("alphapulse_node_degraded", rec) not in got  # it could not say
    assert got["alphapulse_node_state", labels("rec", "sink.recorder", state="BACKOFF")] == 1
    assert got["alphapulse_node_restarts_total", rec] == 5
    assert got["alphapulse_node_start_time_seconds", bus] == 1_700_000_000
    assert got["alphapulse_received_messages_total", bus] == 5000
    assert got["alphapulse_sent_messages_total", bus] == 4990
    assert got["alphapulse_dropped_messages_total", labels("bus", "relay", reason="wrong_domain")] == 3
    assert got["alphapulse_errors_total", labels("bus", "relay", error="bad_tlv")] == 2
    assert got["alphapulse_gaps_total", labels("bus", "relay", outcome="lost")] == 1
    assert got["alphapulse_lost_messages_total", bus] == 7
    assert got["alphapulse_decode_errors_total", labels("bus", "relay", upstream="src", error="bad_checksum")] == 4
    assert got["alphapulse_input_reconnects_total", labels("bus", "relay", upstream="other")] == 0  # a peer link
    assert got["alphapulse_subscriber_dropped_messages_total", labels("bus", "relay", subscriber="sink")] == 11
    assert got["alphapulse_subscriber_queued_messages", labels("bus", "relay", subscriber="sink")] == 5
    assert got["alphapulse_retransmit_seconds", bus] == 81.5
    assert ("alphapulse_retransmit_seconds", labels("pq", "sink.parquet")) not in got  # it holds nothing
    assert got["alphapulse_breaker_state", labels("bus", "relay", breaker="node.handler")] == 2
    assert got["alphapulse_cpu_seconds_total", bus] == 1.25
    assert got["alphapulse_wakeups_total", bus] == 48_000
    assert got["alphapulse_private_memory_bytes", bus] == 80 * 2**20
    assert got["alphapulse_node_code_changed", bus] == 1
    assert got["alphapulse_heap_in_use_bytes", bus] == 30 * 2**20
    assert got["alphapulse_heap_free_bytes", bus] == 3 * 2**20
    assert got["alphapulse_heap_trims_total", bus] == 2
    assert ("alphapulse_node_code_changed", rec) not in got  # it could not say
    # a node that did not answer has no counters, rather than zeros that would read as a reset
    assert ("alphapulse_received_messages_total", rec) not in got
    assert ("alphapulse_node_start_time_seconds", rec) not in got


def test_a_watched_topology_s_last_reload_is_a_metric_as_prometheus_reports_its_own() -> None:
    """``alphapulse_config_last_reload_successful`` 0 after a refused edit, with the time the
    file last took carried over from the outcome before (``WatchOutcome.after``)."""
    from alphapulse.supervise._metrics import reload_families
    from alphapulse.supervise._watch import WatchOutcome

    took = WatchOutcome(1000.0, "applied", ("reconfigured src",)).after(None)
    refused = WatchOutcome(1060.0, "refused", ("rt.yaml:9:6: error: YAML syntax error",)).after(took)
    assert (took.succeeded_at, refused.succeeded_at) == (1000.0, 1000.0)
    first = WatchOutcome(1.0, "refused").after(None)  # never took while watched

    class Reloads:
        def collect(self):
            return reload_families({"rt": refused, "ok": took, "new": first})

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Reloads())
    samples = {(s.name, s.labels["topology"]): s.value for family in
               text_string_to_metric_families(generate_latest(registry).decode()) for s in family.samples}
    assert samples == {
        ("alphapulse_config_last_reload_successful", "new"): 0,
        ("alphapulse_config_last_reload_successful", "ok"): 1,
        ("alphapulse_config_last_reload_successful", "rt"): 0,
        ("alphapulse_config_last_reload_success_timestamp_seconds", "ok"): 1000.0,
        ("alphapulse_config_last_reload_success_timestamp_seconds", "rt"): 1000.0,
    }
