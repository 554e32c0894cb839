"""``alphapulse status``'s table: columns, scheduling, CPU and memory, and the totals line."""

from __future__ import annotations

from alphapulse.supervise import NodeStatus, format_table


def _row(node: str, **overrides) -> NodeStatus:
    fields = dict(node=node, kind="relay", state="RUNNING", pid=100, uptime=75.0, restarts=0, rate_in=1500.0,
                  rate_out=1500.0, received=9000, sent=9000, dropped=0, errors=0, gaps_detected=1,
                  gaps_recovered=1, gaps_lost=0, breaker="closed", health="healthy")
    return NodeStatus(**{**fields, **overrides})


def test_table_shows_usage_scheduling_and_totals() -> None:
    rows = [
        _row("bus", cpu_percent=12.5, wakeups_per_s=10234.4, rss_bytes=170 * 2**20, private_bytes=80 * 2**20,
             scheduling="batch nice=4"),
        _row("sink", kind="sink.counter", cpu_percent=3.0, wakeups_per_s=10.0, rss_bytes=160 * 2**20,
             private_bytes=70 * 2**20),
        _row("old", kind="sink.counter", state="STOPPED", pid=0, uptime=0.0),  # did not answer: no figures
    ]
    header, bus, sink, old, totals = format_table(rows).splitlines()
    assert header.split()[-4:] == ["CPU%", "WAKE/S", "RSS", "SCHED"]
    assert bus.split()[-6:] == ["closed", "12.5", "10,234", "170M", "batch", "nice=4"]
    assert sink.split()[-5:] == ["closed", "3.0", "10", "160M", "-"]
    assert old.split()[-5:] == ["closed", "-", "-", "-", "-"] and old.split()[3:5] == ["-", "-"]
    assert totals == "2/3 running, CPU 15.5% of a core, private memory 150M"


def test_a_node_that_should_run_and_does_not_gets_its_reason_below_the_table() -> None:
    rows = [
        _row("bus"),
        _row("rec", kind="sink.recorder", state="BACKOFF", pid=0, problem="node rec failed: OSError: disk full",
             log="/run/rt/logs/rec.err.log"),
    ]
    lines = format_table(rows).splitlines()
    assert lines[-3].startswith("1/2 running")
    assert lines[-2:] == ["rec BACKOFF: node rec failed: OSError: disk full", "  log: /run/rt/logs/rec.err.log"]


def test_why_not_running_prefers_the_logged_reason(tmp_path) -> None:
    from alphapulse.supervise import why_not_running

    log = tmp_path / "rec.err.log"
    log.write_text("2026-11-22 07:15:27,526 ERROR rec alphapulse.node: node rec failed: OSError: disk full\n")
    assert why_not_running({"statename": "FATAL", "stderr_logfile": str(log), "spawnerr": "Exited too quickly"}) \
        == "node rec failed: OSError: disk full"
    assert why_not_running({"statename": "FATAL", "stderr_logfile": str(tmp_path / "none"),
                            "spawnerr": "Exited too quickly (process log may have details)"}) \
        == "Exited too quickly (process log may have details)"
    assert why_not_running({"statename": "RUNNING", "stderr_logfile": str(log)}) == ""
    assert why_not_running({"statename": "STOPPED", "stderr_logfile": str(log)}) == ""  # someone stopped it


def test_a_running_node_that_does_not_answer_is_named_below_the_table() -> None:
    """supervisord says RUNNING for a hung process too: ``status`` says which did not answer."""
    from alphapulse.supervise._status import NOT_ANSWERING, NodeReport, _status_row

    info = {"statename": "RUNNING", "pid": 7, "now": 100, "start": 40, "stderr_logfile": "/run/rt/logs/bus.err.log"}
    silent = _status_row(NodeReport("rt", "bus", "relay", info, {}, restarts=0))
    answered = _status_row(NodeReport("rt", "sink", "sink.counter", {**info, "pid": 8}, {"status": "healthy"},
                                      restarts=0))
    assert (silent.problem, silent.health, answered.problem) == (NOT_ANSWERING, "unknown", "")
    lines = format_table([silent, answered]).splitlines()
    assert lines[-3].startswith("2/2 running (1 not answering), CPU")
    assert lines[-2:] == [f"bus RUNNING: {NOT_ANSWERING}", "  log: /run/rt/logs/bus.err.log"]


def test_a_running_node_s_trouble_is_named_below_the_table() -> None:
    """A node coping with something an operator should see (``Node.trouble``: a full disk it
    holds data through) runs, so supervisord sees nothing wrong: ``status`` says what."""
    from alphapulse.supervise._status import NodeReport, _status_row

    info = {"statename": "RUNNING", "pid": 7, "now": 100, "start": 40, "stderr_logfile": "/run/rt/logs/rec.err.log"}
    trouble = "writes to /data/rec failing for 63 s (last: [Errno 28] No space left on device); holding 1,000 messages"
    row = _status_row(NodeReport("rt", "rec", "sink.recorder", info, {"status": "degraded", "trouble": trouble},
                                 restarts=0))
    assert (row.problem, row.health) == (trouble, "degraded")
    assert format_table([row]).splitlines()[-2:] == [f"rec RUNNING: {trouble}", "  log: /run/rt/logs/rec.err.log"]
    fine = _status_row(NodeReport("rt", "rec", "sink.recorder", info, {"status": "healthy", "trouble": ""},
                                  restarts=0))
    assert fine.problem == ""


def test_a_crash_loop_seen_in_its_wait_is_still_told_once_the_wait_is_over() -> None:
    """``apply --wait`` sets a crash-looping node aside and waits for the others; by the time it
    reports, the node may be loading again or have failed again. Its record still tells the story."""
    from alphapulse.runtime._crashloop import FAILED, RUNNING, WAITING, RunRecord
    from alphapulse.supervise._status import NodeReport

    info = {"statename": "RUNNING", "pid": 7}
    taken = "node ws failed: OSError: [Errno 98] cannot listen on 127.0.0.1:8766 (dashboard): Address already in use"
    failed_again = NodeReport("rt", "ws", "sink.websocket", info, {}, restarts=3,
                              record=RunRecord(FAILED, streak=2, pid=7, reason=taken, repeats=3))
    assert failed_again.crash_wait() == ""
    assert failed_again.crash_history() == \
        f"failed 3 times in a row, each within 60 s of starting (the last 3 the same way); last: {taken}"
    loading = NodeReport("rt", "ws", "sink.websocket", info, {}, restarts=3,
                         record=RunRecord(RUNNING, streak=2, pid=7, started=1.0, reason=taken, repeats=2))
    assert loading.crash_history().startswith("failed 2 times in a row, each within 60 s of starting (the last 2")
    waiting = NodeReport("rt", "ws", "sink.websocket", info, {}, restarts=3,
                         record=RunRecord(WAITING, streak=2, pid=7, resume_at=1e12, reason=taken, repeats=2))
    assert waiting.crash_wait().startswith("failed 2 times in a row") and "starting again in" in waiting.crash_wait()
    healthy = NodeReport("rt", "ws", "sink.websocket", info, {}, restarts=0, record=RunRecord(RUNNING, pid=7))
    assert healthy.crash_history() == ""
