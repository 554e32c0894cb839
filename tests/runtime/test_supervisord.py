"""apply / status / down under a real supervisord, with real node processes and sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from alphapulse.cli import main
from alphapulse.runtime import request
from alphapulse.supervise import RunBase, Supervisor, load_applied_plan, wait_until_running, wait_until_serving
from tests.runtime._deployment import deployed

pytestmark = pytest.mark.slow

TOPOLOGY = """\
topology: rt
nodes:
  src:
    kind: source.counter
    params: {rate: 4000, batch: 4}
  bus:
    kind: relay
    domain: market_data
    inputs: [src]
    params: {retransmit_buffer: 100000}
  sink:
    kind: sink.counter
    inputs: [bus]
"""


@pytest.fixture
def deployment(monkeypatch):
    with deployed(monkeypatch, "rt", TOPOLOGY) as where:
        yield where


def pids(base: Path) -> dict[str, int]:
    return {n: i["pid"] for n, i in Supervisor(RunBase(base)).group_processes("rt").items()}


def stats(base: Path, node: str) -> dict:
    plan = load_applied_plan(RunBase(base), "rt")
    return request(plan["nodes"][node]["sockets"]["control"], "stats")


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def scheduling(tid: int) -> tuple[int, int]:
    return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)


def received(base: Path, node: str = "sink") -> int:
    try:
        return stats(base, node)["counters"]["received"]
    except Exception:
        return 0


def test_apply_edit_kill_and_down(deployment, capsys) -> None:
    base, topo = deployment
    assert main(["apply", str(topo), "--wait", "30"]) == 0
    assert "added        bus, sink, src" in capsys.readouterr().out
    assert wait_until_running(RunBase(base), "rt", 30) == {"bus": "RUNNING", "sink": "RUNNING", "src": "RUNNING"}
    wait_for(lambda: received(base) > 2000, what="messages to flow to the sink")
    ctl = subprocess.run([sys.executable, "-m", "alphapulse", "ctl", "status"], capture_output=True, text=True,
                         env={**os.environ, "ALPHAPULSE_RUN_DIR": str(base)})
    assert "rt:bus" in ctl.stdout and "rt:sink" in ctl.stdout and "rt:src" in ctl.stdout
    # supervisorctl itself, on the base config at the repository root and on the run directory's copy
    repository = Path(__file__).resolve().parents[2]
    for config in ("supervisord.conf", str(base / "supervisord.conf")):
        ctl = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", config, "status"],
                             capture_output=True, text=True, cwd=repository,
                             env={**os.environ, "ALPHAPULSE_RUN_DIR": str(base)})
        states = dict(line.split()[:2] for line in ctl.stdout.splitlines())
        assert states == {"rt:bus": "RUNNING", "rt:sink": "RUNNING", "rt:src": "RUNNING"}, (config, ctl)

    # the same file again: nothing to do
    assert main(["apply", str(topo)]) == 0
    assert "up to date" in capsys.readouterr().out

    # a parameter-only edit reaches the node live: no pid changes
    before = pids(base)
    topo.write_text(TOPOLOGY.replace("rate: 4000", "rate: 3000"))
    assert main(["apply", str(topo)]) == 0
    out = capsys.readouterr().out
    assert "reconfigured src" in out
    assert pids(base) == before
    assert stats(base, "src")["params"]["rate"] == 3000

    # a cpu block reaches the node live too: every thread of the same process takes it
    topo.write_text(TOPOLOGY.replace("rate: 4000", "rate: 3000").replace(
        "    params: {rate: 3000, batch: 4}", "    params: {rate: 3000, batch: 4}\n    cpu: {policy: batch, nice: 4}"))
    assert main(["apply", str(topo)]) == 0
    assert "reconfigured src" in capsys.readouterr().out
    assert pids(base) == before
    assert {scheduling(tid) for tid in threads(before["src"])} == {(os.SCHED_BATCH, 4)}
    assert stats(base, "src")["cpu"]["actual"]["policy"] == "batch"
    assert main(["status", str(topo)]) == 0
    (src_row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("src ")]
    assert src_row.endswith("batch nice=4")
    # what the node cannot take is applied as far as it goes and shown as apply's warning
    topo.write_text(topo.read_text().replace("nice: 4}", "nice: 4, affinity: [0, 4095]}"))
    assert main(["apply", str(topo)]) == 0
    out = capsys.readouterr().out
    assert "reconfigured src" in out and "warning: src cpu: affinity [0, 4095]: CPUs [4095] are not available" in out
    assert pids(base) == before
    assert {os.sched_getaffinity(tid) == {0} for tid in threads(before["src"])} == {True}

    # a wiring edit restarts only the node whose inputs changed; a node starts with its cpu
    # block, and one whose block went away is put back as it started (live)
    topo.write_text(TOPOLOGY.replace("rate: 4000", "rate: 3000").replace(
        "    inputs: [bus]", "    inputs:\n      - from: bus\n        types: [Trade]\n        queue: 2000\n"
        "    cpu: {policy: batch}"))
    assert main(["apply", str(topo)]) == 0
    assert "restarted    sink" in capsys.readouterr().out
    after = pids(base)
    assert after["src"] == before["src"] and after["bus"] == before["bus"]
    assert after["sink"] != before["sink"]
    wait_until_running(RunBase(base), "rt", 30)
    assert {scheduling(tid) for tid in threads(before["src"])} == {(os.SCHED_OTHER, 0)}
    wait_for(lambda: received(base) > 0, what="the restarted sink to serve")  # it set its cpu block first
    assert {scheduling(tid) for tid in threads(after["sink"])} == {(os.SCHED_BATCH, 0)}
    assert stats(base, "sink")["cpu"]["problems"] == []

    # a broken edit is refused with file:line:col and nothing changes
    good = topo.read_text()
    topo.write_text(good.replace("kind: relay", "kind: relya"))
    assert main(["apply", str(topo)]) == 1
    err = capsys.readouterr().err
    assert f"{topo}:7:11: error: unknown node kind 'relya'" in err
    assert "did you mean 'relay'" in err
    assert pids(base) == after
    topo.write_text(good)

    # kill -9 the relay: supervisord restarts it, the sink reconnects, nothing goes silently missing
    wait_for(lambda: received(base) > 1000, what="the restarted sink to receive")
    os.kill(after["bus"], signal.SIGKILL)
    wait_for(lambda: pids(base).get("bus") not in (None, 0, after["bus"]), what="bus to be restarted")
    wait_until_running(RunBase(base), "rt", 30)
    first = received(base)
    wait_for(lambda: received(base) > first + 2000, what="messages to flow again after the restart")
    time.sleep(1.0)  # let the resend timeout of any open gap pass
    sink = stats(base, "sink")
    (epoch,) = sink["kind_stats"]["epochs"]  # the source never restarted: one epoch
    assert epoch["duplicates"] == 0
    # the relay came back with an empty retransmit buffer: the sink's resend of what it missed
    # went on to the source, which still held it (``runtime/_chain.py``); nothing is missing
    assert sink["counters"]["gaps_detected"] >= 1
    assert sink["counters"]["gaps_recovered"] == sink["counters"]["gaps_detected"]
    assert epoch["missing"] == sink["counters"]["messages_lost"] == 0
    assert stats(base, "bus")["publisher"]["resends_passed_upstream"] >= 1
    assert sink["counters"]["reconnects"] >= 1
    # the node process froze its start-up heap; collections since (often none: the hot path keeps
    # no per-message objects) are counted and timed
    assert sink["gc"]["frozen_objects"] > 10_000
    assert len(sink["gc"]["collections"]) == 3 and sink["gc"]["pause_ms_max"] >= 0

    # status shows the restart and the gap accounting
    assert main(["status", str(topo), "--json"]) == 0
    status_out = capsys.readouterr().out
    assert '"restarts": 1' in status_out
    # and what each node costs, from the node's own samples: every node here works a little
    rows = {row["node"]: row for row in json.loads(status_out)["rt"]["nodes"]}
    assert all(row["cpu_percent"] > 0 and row["private_bytes"] > 10 * 2**20 for row in rows.values()), rows
    assert all(row["wakeups_per_s"] > 0 for row in rows.values()), rows  # each is woken to work
    assert all(row["rss_bytes"] > row["private_bytes"] for row in rows.values()), rows
    # --watch shows the table again until its count is reached (or Ctrl-C)
    assert main(["status", str(topo), "--watch", "0.2", "--count", "2"]) == 0
    shown = capsys.readouterr().out
    assert shown.count("3/3 running, CPU ") == 2 and shown.count("NODE ") == 2

    # SIGTERM (supervisorctl stop) drains and exits cleanly within stopwaitsecs, not by SIGKILL
    sup = Supervisor(RunBase(base))
    sup.api.stopProcess("rt:sink", True)
    info = sup.api.getProcessInfo("rt:sink")
    assert (info["statename"], info["exitstatus"]) == ("STOPPED", 0)
    assert info["stop"] - info["start"] > 0

    # down stops everything and supervisord with it
    assert main(["down", str(topo)]) == 0
    assert "stopped bus, sink, src" in capsys.readouterr().out  # sink included though already stopped
    assert not Supervisor(RunBase(base)).is_running()


def test_a_dry_run_says_what_apply_would_do_and_why_and_changes_nothing(deployment, capsys) -> None:
    base, topo = deployment
    assert main(["apply", str(topo), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:5] == ["dry run: nothing was changed; applying rt would:", "  start supervisord",
                                    "  add          bus", "  add          sink", "  add          src"]
    assert not Supervisor(RunBase(base)).is_running() and load_applied_plan(RunBase(base), "rt") is None

    assert main(["apply", str(topo), "--wait", "30"]) == 0
    capsys.readouterr()
    before, plan_text = pids(base), RunBase(base).plan_file("rt").read_text()
    topo.write_text(TOPOLOGY.replace("rate: 4000", "rate: 3000").replace("retransmit_buffer: 100000",
                                                                          "retransmit_buffer: 50000"))
    assert main(["apply", str(topo), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "dry run: nothing was changed; applying rt would:",
        "  restart      bus  (params.retransmit_buffer)",
        "  reconfigure  src  (params.rate; live)",
        "  keep         sink  (unchanged)",
    ]
    assert pids(base) == before and RunBase(base).plan_file("rt").read_text() == plan_text
    Supervisor(RunBase(base)).stop("rt", "sink")
    assert main(["apply", str(topo), "--dry-run"]) == 0
    assert "  leave        sink  (STOPPED by hand)" in capsys.readouterr().out
    Supervisor(RunBase(base)).start("rt", "sink")

    topo.write_text("topology: rt\nnodes: [")  # a broken edit: refused as apply refuses it
    assert main(["apply", str(topo), "--dry-run"]) == 1
    assert "error" in capsys.readouterr().err


def test_restarted_source_starts_a_new_epoch_without_a_false_gap(deployment) -> None:
    base, topo = deployment
    assert main(["apply", str(topo), "--wait", "30"]) == 0
    wait_for(lambda: received(base) > 2000, what="messages to flow")
    os.kill(pids(base)["src"], signal.SIGKILL)
    wait_for(lambda: len(stats(base, "sink")["kind_stats"]["epochs"]) == 2, what="a second source epoch")
    sink = stats(base, "sink")
    assert sink["counters"]["gaps_detected"] == 0
    assert [e["missing"] for e in sink["kind_stats"]["epochs"]] == [0, 0]
    assert sink["inputs"][0]["sequence"]["producer_restarts"] == 1


def test_nodes_end_with_a_killed_supervisord_and_apply_starts_them_again(deployment, capsys) -> None:
    """``kill -9`` of supervisord (the OOM killer, a crash) must not leave its programs running
    unsupervised beside the set the next ``apply`` starts (``runtime/_orphan.py``): not its
    nodes, nor the file's watcher and metrics exporter."""
    base, topo = deployment
    topo.write_text(TOPOLOGY.replace("topology: rt\n", f"topology: rt\nreload: {{watch: true}}\n"
                                                         f"metrics: {{listen: 127.0.0.1:{free_port()}}}\n"))
    assert main(["apply", str(topo), "--wait", "60"]) == 0
    first = pids(base)
    assert {"_watch", "_metrics"} <= set(first)
    os.kill(int(RunBase(base).pidfile.read_text()), signal.SIGKILL)
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in first.values()),
             what="the orphaned programs to end")
    capsys.readouterr()
    assert main(["apply", str(topo), "--wait", "60"]) == 0  # the stale socket is no obstacle
    assert "started supervisord" in capsys.readouterr().out
    again = pids(base)
    assert set(again.values()).isdisjoint(first.values())
    plan = str(RunBase(base).plan_file("rt"))
    nodes = [p for p in os.listdir("/proc") if p.isdigit() and plan in _cmdline(int(p))]
    ours = {n: p for n, p in again.items() if not n.startswith("_")}
    assert sorted(int(p) for p in nodes) == sorted(ours.values())  # one process per node, no more
    watchers = [p for p in os.listdir("/proc") if p.isdigit() and f"{topo} --supervised rt" in _cmdline(int(p))]
    assert [int(p) for p in watchers] == [again["_watch"]]  # one watcher, no more
    wait_for(lambda: received(base) > 100, what="messages to flow again")


def test_a_hung_node_is_ended_by_its_watchdog_and_restarted(deployment, capsys) -> None:
    """A node whose event loop blocks (``runtime/_watchdog.py``) stays RUNNING to supervisord;
    its watchdog ends it after ``watchdog_seconds``, its stack in the log, and supervisord starts
    it again, long before the stall would have ended. The other nodes keep their pids."""
    base, topo = deployment
    stall = base / "stall-now"
    topo.write_text(TOPOLOGY.replace("    inputs: [bus]\n", "    inputs: [bus]\n"
                                     f"    params: {{stall_file: {stall}, stall_seconds: 120}}\n"
                                     "    restart: {watchdog_seconds: 2}\n"))
    assert main(["apply", str(topo), "--wait", "30"]) == 0
    wait_for(lambda: received(base) > 1000, what="messages to flow")
    first = pids(base)
    log = Path(Supervisor(RunBase(base)).group_processes("rt")["sink"]["stderr_logfile"])
    stall.touch()
    started = time.monotonic()
    wait_for(lambda: pids(base).get("sink") not in (None, 0, first["sink"]), timeout=60,
             what="the watchdog to end the hung sink and supervisord to start it again")
    assert time.monotonic() - started < 30  # the stall alone would have lasted 120 s
    assert not stall.exists()
    text = log.read_text()
    assert "stalling the event loop for 120.0 s" in text
    assert "Timeout (0:00:02)!" in text and "counter_sink.py" in text  # where it hung, in its log
    after = pids(base)
    assert {n: p for n, p in after.items() if n != "sink"} == {n: p for n, p in first.items() if n != "sink"}
    wait_for(lambda: received(base) > 100, what="messages to reach the restarted sink")

    def sink_row() -> dict:
        capsys.readouterr()
        assert main(["status", str(topo), "--json"]) == 0
        (row,) = [r for r in json.loads(capsys.readouterr().out)["rt"]["nodes"] if r["node"] == "sink"]
        return row

    row = wait_for(lambda: (r := sink_row())["state"] == "RUNNING" and r, what="status to show the sink running")
    assert row["restarts"] == 1


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_wait_means_every_node_serves_not_just_runs(deployment, capsys) -> None:
    """``apply --wait`` returns once every node answers on its control socket (kernels loaded,
    sockets open); a node supervisord runs that does not answer (here: its socket file removed)
    is reported as starting, and ``--wait`` fails rather than return early."""
    base, topo = deployment
    assert main(["apply", str(topo), "--wait", "30"]) == 0
    plan = load_applied_plan(RunBase(base), "rt")
    for entry in plan["nodes"].values():  # no retry: every node answers already
        assert request(entry["sockets"]["control"], "health")["ok"]
    os.unlink(plan["nodes"]["src"]["sockets"]["control"])
    states = wait_until_serving(RunBase(base), "rt", 1)
    assert states == {"bus": "RUNNING", "sink": "RUNNING", "src": "RUNNING (starting)"}
    capsys.readouterr()
    assert main(["apply", str(topo), "--wait", "1"]) != 0
    assert "not serving after 1 s: src\n  src: RUNNING (starting)\n" in capsys.readouterr().err


def test_watch_applies_saved_edits_and_refuses_broken_ones(deployment) -> None:
    base, topo = deployment
    log = base / "watch.log"
    with open(log, "w") as out:
        watcher = subprocess.Popen(
            [sys.executable, "-u", "-m", "alphapulse", "apply", "--watch", str(topo)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "ALPHAPULSE_RUN_DIR": str(base)},
        )
    try:
        wait_for(lambda: "watching" in log.read_text(), what="the watcher to start")
        wait_until_serving(RunBase(base), "rt", 30)
        before = pids(base)
        topo.write_text(TOPOLOGY.replace("rate: 4000", "rate: 2500"))
        wait_for(lambda: "reconfigured src" in log.read_text(), what="the edit to be applied")
        assert stats(base, "src")["params"]["rate"] == 2500
        topo.write_text(TOPOLOGY.replace("rate: 4000", "rate: [oops"))
        wait_for(lambda: "nothing was changed" in log.read_text(), what="the broken edit to be refused")
        assert f"{topo}:5:" in log.read_text()
        assert pids(base) == before
        assert stats(base, "src")["params"]["rate"] == 2500
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(10)


def test_a_topology_s_reload_section_has_supervisord_run_a_watcher_that_applies_every_edit(
        deployment, capsys, monkeypatch) -> None:
    """``reload: {watch: true}``: hot reload without a terminal. ``apply`` runs ``rt:_watch``;
    it resolves the file with the variables of the last apply (not supervisord's), applies a
    saved parameter edit live, refuses a broken one (``status`` says why, with ``file:line:col``),
    and an edit that removes the section is handed to a separate apply, which stops and removes
    the watcher; the nodes keep their pids throughout."""
    from alphapulse.supervise import read_outcome

    base, topo = deployment
    watched = TOPOLOGY.replace("topology: rt\n", "topology: rt\nreload: {watch: true}\n").replace(
        "    params: {rate: 4000, batch: 4}", "    params:\n      rate: ${RT_RATE:-4000}\n      batch: 4")
    topo.write_text(watched)
    monkeypatch.delenv("RT_RATE", raising=False)  # supervisord starts without it
    from alphapulse.supervise._watch import WatchOutcome, write_outcome
    write_outcome(base / "rt", WatchOutcome(time.time() - 86400, "applied", ("reconfigured src",)))  # older code's
    assert main(["apply", str(topo), "--wait", "60"]) == 0
    out = capsys.readouterr().out
    assert "watcher      added" in out and f"watching     {topo}" in out
    assert read_outcome(base / "rt") is None or read_outcome(base / "rt").cause == "start"  # not yesterday's edit
    nodes = {n: p for n, p in pids(base).items() if n != "_watch"}
    assert set(nodes) == {"src", "bus", "sink"}

    monkeypatch.setenv("RT_RATE", "3500")
    before = time.time()
    assert main(["apply", str(topo)]) == 0
    out = capsys.readouterr().out
    assert "reconfigured src" in out and "watcher      restarted" in out  # the variables it resolves with changed

    def watch_line() -> str:
        assert main(["status", str(topo)]) == 0
        return next((line for line in capsys.readouterr().out.splitlines() if line.startswith("watch ")), "")

    # the new watcher's first look at the file (it may have changed while none ran) finds nothing to do
    first = wait_for(lambda: (o := read_outcome(base / "rt")) and o.at > before and o, what="the watcher's first look")
    assert first.outcome == "unchanged" and stats(base, "src")["params"]["rate"] == 3500
    wait_for(lambda: f"watch    {topo}  RUNNING  at start " in watch_line(), what="status to show the watcher")

    topo.write_text(watched.replace("batch: 4", "batch: 2"))
    wait_for(lambda: stats(base, "src")["params"]["batch"] == 2, what="the watcher to apply the edit")
    edited = wait_for(lambda: "applied" in (line := watch_line()) and line, what="status to show the edit applied")
    assert f"watch    {topo}  RUNNING  last edit " in edited and "applied: reconfigured src" in edited
    assert stats(base, "src")["params"]["rate"] == 3500

    # a restarted watcher finds the file as applied: status still names the last edit, not the restart
    watcher_pid = pids(base)["_watch"]
    assert main(["ctl", "restart", "rt:_watch"]) == 0
    log = base / "rt" / "logs" / "_watch.out.log"
    looked = "for topology rt (supervised)"  # printed after its first look: the third watcher's
    wait_for(lambda: pids(base)["_watch"] not in (0, watcher_pid) and log.read_text().count(looked) == 3,
             what="the restarted watcher's first look")
    assert watch_line() == edited

    topo.write_text(watched.replace("batch: 4", "batch: [oops"))
    line = wait_for(lambda: "refused" in (line := watch_line()) and line, what="the broken edit to be refused")
    assert f"refused: {topo}:9:6: error: YAML syntax error" in line  # where the parser noticed
    assert stats(base, "src")["params"]["batch"] == 2
    assert main(["status", str(topo), "--json"]) == 0  # the same, for scripts
    (watcher,) = json.loads(capsys.readouterr().out)["rt"]["programs"]
    assert watcher["program"] == "watcher" and watcher["process"] == "rt:_watch" and watcher["state"] == "RUNNING"
    assert watcher["file"] == str(topo) and watcher["pid"] == pids(base)["_watch"]
    assert watcher["last_edit"]["outcome"] == "refused" and watcher["last_edit"]["summary"] in line
    assert main(["metrics", "--topology", "rt", "--once"]) == 0  # what an alert on reloads reads
    scraped = capsys.readouterr().out
    assert 'alphapulse_config_last_reload_successful{topology="rt"} 0.0' in scraped
    assert 'alphapulse_config_last_reload_success_timestamp_seconds{topology="rt"}' in scraped

    topo.write_text(TOPOLOGY.replace("batch: 4", "batch: 2"))  # valid, and without the watcher
    wait_for(lambda: "_watch" not in pids(base), timeout=60, what="the watcher to be removed")
    assert pids(base) == nodes
    handover = base / "rt" / "logs" / "_watch.handover.log"  # written as that apply ends, after the removal
    wait_for(lambda: "watcher      removed" in handover.read_text(), what="the handed-over apply to report")
    assert watch_line() == ""
    assert read_outcome(base / "rt") is None  # a watcher added later does not show this one's last edit


def test_adding_and_removing_a_node_leaves_the_others_running(deployment, capsys) -> None:
    base, topo = deployment
    assert main(["apply", str(topo), "--wait", "30"]) == 0
    before = pids(base)
    extra = "  audit:\n    kind: sink.counter\n    inputs: [bus]\n"
    topo.write_text(TOPOLOGY + extra)
    capsys.readouterr()
    assert main(["apply", str(topo), "--wait", "30"]) == 0
    out = capsys.readouterr().out
    assert "added        audit" in out and "unchanged    bus, sink, src" in out
    with_audit = pids(base)
    assert {n: with_audit[n] for n in before} == before and with_audit["audit"]
    wait_for(lambda: received(base, "audit") > 0, what="the new node to receive")
    topo.write_text(TOPOLOGY)
    assert main(["apply", str(topo)]) == 0
    assert "removed      audit" in capsys.readouterr().out
    assert pids(base) == before


def test_a_peer_relay_can_be_killed_without_stopping_the_data(deployment, capsys) -> None:
    """Switch the relay to ``delivery: peer`` by an edit: only the relay restarts, and the sink,
    still naming only the relay, now reads the source directly (nothing lost in the switch).
    Then ``kill -9`` the relay: supervisord restarts it, while the data keeps flowing to the sink
    over its peer link, which stays as it was."""
    base, topo = deployment
    assert main(["apply", str(topo), "--wait", "30"]) == 0
    wait_for(lambda: received(base) > 1000, what="messages to flow through the relay")
    before = pids(base)
    joins = stats(base, "sink")["inputs"][0]["sequence"]["joined_midstream"]  # 1 if it started after src
    topo.write_text(TOPOLOGY.replace("retransmit_buffer: 100000}", "retransmit_buffer: 100000, delivery: peer}"))
    capsys.readouterr()
    assert main(["apply", str(topo), "--wait", "30"]) == 0
    assert "restarted    bus\nunchanged    sink, src" in capsys.readouterr().out
    after = pids(base)
    assert after["bus"] != before["bus"] and after["src"] == before["src"] and after["sink"] == before["sink"]

    def peer() -> dict | None:
        peers = stats(base, "sink")["inputs"][0]["peers"]
        return peers[0] if peers and peers[0]["connected"] else None

    wait_for(peer, what="the sink's peer link to the source")
    os.kill(after["bus"], signal.SIGKILL)
    flowing = received(base)
    wait_for(lambda: received(base) > flowing + 1000, what="messages while the relay restarts")
    wait_for(lambda: pids(base)["bus"] not in (0, after["bus"]), what="supervisord to restart the relay")
    wait_for(lambda: stats(base, "sink")["inputs"][0]["connects"] == 3, what="the sink back at the relay")
    sink = stats(base, "sink")
    assert peer()["connects"] == 1  # the data link never dropped
    assert peer()["upstream"] == "src" and stats(base, "bus")["counters"]["received"] == 0
    assert sink["counters"]["messages_lost"] == 0
    link = sink["inputs"][0]
    assert link["sequence"]["joined_midstream"] + link["peers"][0]["sequence"]["joined_midstream"] == joins


def test_a_node_that_keeps_failing_is_named_with_its_reason(deployment, capsys) -> None:
    """A node that fails on every start: ``apply --wait`` stops waiting once supervisord gives up
    (FATAL), and it and ``status`` say why, from the node's own last log line."""
    base, topo = deployment
    blocker = base / "not_a_directory"
    blocker.write_text("")
    topo.write_text(TOPOLOGY + f"""\
  rec:
    kind: sink.recorder
    inputs: [bus]
    params: {{path: {blocker}/rec}}
    restart: {{startretries: 1, startsecs: 30}}
""")
    started = time.monotonic()
    assert main(["apply", str(topo), "--wait", "120"]) == 3
    assert time.monotonic() - started < 100  # it did not sit out the whole wait
    err = capsys.readouterr().err
    assert "error: not serving (supervisord gave up): rec" in err
    reason = f"rec: FATAL: node rec failed: NotADirectoryError: [Errno 20] Not a directory: '{blocker}/rec'"
    assert reason in err and "(nodes/recorder.py:" in err and f"log: {base}/rt/logs/rec.err.log" in err

    assert main(["status", str(topo)]) == 0
    out = capsys.readouterr().out
    assert reason.replace("rec: FATAL", "rec FATAL") in out
    assert "3/4 running" in out  # the others serve on
    assert main(["status", str(topo), "--json"]) == 0
    (rec,) = [row for row in json.loads(capsys.readouterr().out)["rt"]["nodes"] if row["node"] == "rec"]
    assert rec["state"] == "FATAL" and rec["problem"].startswith("node rec failed: NotADirectoryError")

    # the same file again: nothing to change but the node that gave up, which apply starts again
    # (failing the same way while the blocker is there)
    blocker.unlink()
    supervisor = Supervisor(RunBase(base))
    supervisor.stop("rt", "sink")  # stopped by hand: named, and left so
    assert main(["apply", str(topo), "--wait", "60"]) == 0
    out = capsys.readouterr().out
    assert "started      rec" in out and "unchanged    bus, sink, src" in out
    assert "warning: sink is STOPPED (stopped by hand?); apply leaves it so: `alphapulse ctl start rt:sink`" in out
    assert supervisor.group_processes("rt")["sink"]["statename"] == "STOPPED"
    assert (blocker / "rec").is_dir()  # the started rec is writing there
    supervisor.start("rt", "sink")

    # fixed and applied: started afresh, its failures forgotten (no crash-loop wait before it)
    fixed = topo.read_text().replace(f"{blocker}/rec", str(base / "rec"))
    topo.write_text(fixed.replace("startsecs: 30", "startsecs: 1"))
    assert main(["apply", str(topo), "--wait", "60"]) == 0
    record = json.loads((base / "rt" / "state" / "rec.json").read_text())
    assert record["state"] == "running" and record["streak"] == 0 and record["pid"] == pids(base)["rec"]


def test_metrics_serve_what_the_nodes_count_to_prometheus(deployment, capsys) -> None:
    """``alphapulse metrics``: one scrape printed, and the HTTP endpoint a Prometheus server would
    scrape, both read back with Prometheus' own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    base, topo = deployment
    assert main(["apply", str(topo), "--wait", "30"]) == 0
    wait_for(lambda: received(base) > 2000, what="messages to flow")
    capsys.readouterr()

    def samples(text: str) -> dict[tuple[str, str], float]:
        return {(s.name, s.labels.get("node", "")): s.value
                for family in text_string_to_metric_families(text) for s in family.samples
                if not s.labels.get("reason") and not s.labels.get("outcome") and not s.labels.get("state")}

    assert main(["metrics", str(topo), "--once"]) == 0
    once = samples(capsys.readouterr().out)
    assert all(once["alphapulse_node_up", node] == 1 for node in ("src", "bus", "sink"))
    assert once["alphapulse_received_messages_total", "sink"] > 2000
    assert once["alphapulse_sent_messages_total", "src"] >= once["alphapulse_received_messages_total", "sink"]
    assert once["alphapulse_private_memory_bytes", "bus"] > 10 * 2**20

    server = subprocess.Popen([sys.executable, "-m", "alphapulse", "metrics", "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "ALPHAPULSE_RUN_DIR": str(base)})
    try:
        line = server.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:") and line.rstrip().endswith("/metrics (Ctrl-C to stop)")
        url = line.split()[1]
        first = samples(httpx.get(url, timeout=10).text)
        time.sleep(1.5)
        second = samples(httpx.get(url, timeout=10).text)
    finally:
        server.terminate()
        server.wait(10)
    # every applied topology, scraped afresh each time: the counters move between two scrapes
    assert second["alphapulse_received_messages_total", "sink"] > first["alphapulse_received_messages_total", "sink"]
    assert second["alphapulse_cpu_seconds_total", "sink"] > first["alphapulse_cpu_seconds_total", "sink"]


def test_a_node_failing_soon_after_each_start_backs_off_and_a_fixed_edit_starts_it_at_once(deployment, capsys) -> None:
    """supervisord restarts a node that exits after ``startsecs`` at once, for ever. Ours waits
    before its third start in a row (crash-loop backoff): ``apply --wait`` stops waiting once that
    wait outlasts its own and says so, ``status`` shows CRASHLOOP with the reason, the metrics the
    streak. Fixing the node's configuration and applying it starts the node afresh, without the wait."""
    from prometheus_client.parser import text_string_to_metric_families

    base, topo = deployment
    blocker = base / "not_a_directory"
    blocker.write_text("")
    rec = """\
  rec:
    kind: sink.recorder
    inputs: [bus]
    params: {{path: {path}}}
    restart: {{startsecs: 0, crash_delay_seconds: 20}}
"""
    topo.write_text(TOPOLOGY + rec.format(path=f"{blocker}/rec"))
    started = time.monotonic()
    assert main(["apply", str(topo), "--wait", "15"]) == 3  # the 20 s wait outlasts it: no use waiting
    assert time.monotonic() - started < 14
    err = capsys.readouterr().err
    assert "error: not serving (crash loop): rec" in err
    assert "rec: CRASHLOOP: failed 2 times in a row, each within 60 s of starting (the last 2 the same way); " \
           "starting again in" in err
    assert f"last: node rec failed: NotADirectoryError: [Errno 20] Not a directory: '{blocker}/rec'" in err

    assert main(["status", str(topo)]) == 0
    out = capsys.readouterr().out
    assert "rec CRASHLOOP: failed 2 times in a row" in out and "3/4 running" in out
    assert main(["metrics", str(topo), "--once"]) == 0
    streaks = {s.labels["node"]: s.value for family in text_string_to_metric_families(capsys.readouterr().out)
               for s in family.samples if s.name == "alphapulse_node_crash_streak"}
    assert streaks == {"rec": 2, "src": 0, "bus": 0, "sink": 0}

    # supervisorctl stop (or restart) while it waits: it ends at once, and its streak with it
    state_file = base / "rt" / "state" / "rec.json"
    started = time.monotonic()
    Supervisor(RunBase(base)).api.stopProcess("rt:rec", True)
    assert time.monotonic() - started < 5
    assert Supervisor(RunBase(base)).group_processes("rt")["rec"]["statename"] == "STOPPED"
    stopped = json.loads(state_file.read_text())
    assert stopped["state"] == "stopped" and stopped["streak"] == 0

    topo.write_text(TOPOLOGY + rec.format(path=base / "rec"))  # fixed: started, and at once
    assert main(["apply", str(topo), "--wait", "60"]) == 0
    assert "restarted    rec" in capsys.readouterr().out
    record = json.loads(state_file.read_text())
    assert record["state"] == "running" and record["streak"] == 0 and record["pid"] == pids(base)["rec"]


def test_apply_wait_reports_a_node_whose_starts_fail_alike_without_waiting_out_its_backoff(deployment, capsys) -> None:
    """A taken port fails every start of the node the same way. ``apply --wait`` says so once two
    starts in a row have (seconds), instead of after the backoff outgrows the wait (the README's
    ``--wait 300`` on a machine whose dashboard port was taken: 4.5 minutes). supervisord keeps
    restarting the node, and it serves once the port is free."""
    import socket

    base, topo = deployment
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    bridge = f"""\
  ws:
    kind: sink.websocket
    inputs: [bus]
    params: {{port: {port}, dashboard: false}}
    restart: {{crash_delay_seconds: 1, crash_delay_max_seconds: 1}}
"""
    topo.write_text(TOPOLOGY + bridge)
    try:
        started = time.monotonic()
        assert main(["apply", str(topo), "--wait", "120"]) == 3  # the 1 s backoff alone would let it wait 120 s
        assert time.monotonic() - started < 60
        err = capsys.readouterr().err
        assert "error: not serving (crash loop): ws" in err
        assert "ws: CRASHLOOP: failed 2 times in a row, each within 60 s of starting (the last 2 the same way)" in err
        assert f"cannot listen on 127.0.0.1:{port} (WebSocket bridge): Address already in use" in err
        assert set(pids(base)) == {"src", "bus", "sink", "ws"}  # the others were not touched
    finally:
        taken.close()
    wait_for(lambda: main(["apply", str(topo), "--wait", "60"]) == 0, 90, "the node to serve on the freed port")
    capsys.readouterr()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_topology_s_metrics_section_runs_its_exporter_under_supervisord(deployment, capsys) -> None:
    """``metrics: {listen}`` in the file: ``apply`` runs the exporter as ``rt:_metrics`` beside
    the nodes, a port edit restarts only it, a taken port is named as the reason it is not
    running, and removing the section removes it; the nodes keep running throughout."""
    import socket

    from prometheus_client.parser import text_string_to_metric_families

    base, topo = deployment
    port = free_port()
    topo.write_text(TOPOLOGY.replace("topology: rt\n", f"topology: rt\nmetrics: {{listen: 127.0.0.1:{port}}}\n"))
    assert main(["apply", str(topo), "--wait", "60"]) == 0
    out = capsys.readouterr().out
    assert "exporter     added" in out and f"metrics      http://127.0.0.1:{port}/metrics" in out
    nodes = {n: p for n, p in pids(base).items() if n != "_metrics"}
    assert set(nodes) == {"src", "bus", "sink"} and "_metrics" in pids(base)
    wait_for(lambda: received(base) > 0, what="messages to flow")

    def scrape(at: int) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{at}/metrics", timeout=10).text
        return {s.labels["node"]: s.value for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "alphapulse_node_up"}

    assert wait_for(lambda: scrape(port) == {"src": 1, "bus": 1, "sink": 1}, what="the exporter to serve")
    assert main(["status", str(topo)]) == 0
    assert f"metrics  http://127.0.0.1:{port}/metrics  RUNNING" in capsys.readouterr().out

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        busy = taken.getsockname()[1]
        topo.write_text(topo.read_text().replace(str(port), str(busy)))
        assert main(["apply", str(topo), "--wait", "60"]) == 3
        captured = capsys.readouterr()
        assert "exporter     restarted" in captured.out
        reason = f"cannot listen on 127.0.0.1:{busy}: [Errno 98] Address already in use"
        assert f"_metrics: FATAL: {reason}" in captured.err
        assert main(["status", str(topo)]) == 0
        assert f"metrics  http://127.0.0.1:{busy}/metrics  FATAL: {reason}" in capsys.readouterr().out
        assert main(["status", str(topo), "--json"]) == 0
        (exporter,) = json.loads(capsys.readouterr().out)["rt"]["programs"]
        assert exporter["program"] == "exporter" and exporter["url"] == f"http://127.0.0.1:{busy}/metrics"
        assert exporter["state"] == "FATAL" and exporter["problem"] == reason and exporter["pid"] is None
    finally:
        taken.close()
    assert main(["apply", str(topo), "--wait", "60"]) == 0  # the port is free now: the same file starts it
    assert "exporter     started" in capsys.readouterr().out
    assert wait_for(lambda: scrape(busy) == {"src": 1, "bus": 1, "sink": 1}, what="the started exporter to serve")

    topo.write_text(TOPOLOGY)
    assert main(["apply", str(topo), "--wait", "60"]) == 0
    assert "exporter     removed" in capsys.readouterr().out
    assert pids(base) == nodes  # the nodes never restarted, and the exporter is gone
