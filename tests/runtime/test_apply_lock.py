"""The apply lock and the supervised watcher's decisions, without supervisord."""

from __future__ import annotations

import threading
import time

import pytest

from alphapulse.supervise._apply import ApplyError, ApplyReport, applying
from alphapulse.supervise._watch import WatchOutcome, read_outcome, write_outcome
from alphapulse.supervise._watcher import adopt_environment, hands_over
from alphapulse.topology import parse_topology


def test_one_apply_of_a_topology_at_a_time(tmp_path) -> None:
    """A second apply waits for the first; one told to give up while waiting raises and did nothing."""
    order: list[str] = []
    with applying(tmp_path / "rt"):
        with pytest.raises(ApplyError, match="another apply"), applying(tmp_path / "rt", give_up=lambda: True):
            order.append("second ran")  # never: it gave up waiting

        def second() -> None:
            with applying(tmp_path / "rt"):
                order.append("second")

        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.3)
        order.append("first")
    waiter.join(5)
    assert order == ["first", "second"]
    with applying(tmp_path / "other"), applying(tmp_path / "rt", give_up=lambda: True):
        pass  # another topology's lock is another lock


def test_the_watcher_hands_over_only_edits_of_itself() -> None:
    watch = {"file": "/t/rt.yaml", "argv": ["py", "-m", "alphapulse", "apply", "/t/rt.yaml", "--supervised", "rt"]}
    nodes = {"nodes": {"src": {}}}
    assert not hands_over({**nodes, "watch": watch}, {"nodes": {"src": {}, "sink": {}}, "watch": watch})
    assert hands_over({**nodes, "watch": watch}, nodes)  # removed: it would stop itself
    assert hands_over({**nodes, "watch": watch}, {**nodes, "watch": {**watch, "argv": ["other"]}})
    assert hands_over(nodes, {**nodes, "watch": watch})


def test_the_watcher_s_outcome_round_trips_and_reads_as_one_line(tmp_path) -> None:
    assert read_outcome(tmp_path) is None
    today = time.localtime()
    at = time.mktime((today.tm_year, today.tm_mon, today.tm_mday, 11, 2, 3, 0, 0, -1))
    outcome = WatchOutcome(at, "refused", ("", "rt.yaml:6:5: error: bad", "error: rt.yaml: 1 error(s)"))
    write_outcome(tmp_path, outcome)
    assert read_outcome(tmp_path) == outcome
    assert outcome.summary() == "last edit 11:02:03 refused: rt.yaml:6:5: error: bad"
    assert WatchOutcome(at, "unchanged", ("unchanged    bus, src", "topology rt is up to date; nothing to do")
                        ).summary() == "last edit 11:02:03 unchanged"
    assert WatchOutcome(at, "applied", ("reconfigured src", "unchanged    bus", "watcher      restarted")
                        ).summary() == "last edit 11:02:03 applied: reconfigured src; watcher restarted"
    started = WatchOutcome(at, "unchanged", (), cause="start")
    write_outcome(tmp_path, started)
    assert read_outcome(tmp_path) == started and started.summary() == "at start 11:02:03 unchanged"
    last_year = time.mktime((today.tm_year - 1, 3, 4, 11, 2, 3, 0, 0, -1))  # not today: the date too
    assert (WatchOutcome(last_year, "unchanged", ()).summary()
            == f"last edit {today.tm_year - 1}-03-04 11:02:03 unchanged")
    (tmp_path / "state" / "_watch.json").write_text('{"at": 1.0, "outcome": "applied", "lines": []}')
    assert read_outcome(tmp_path).cause == "edit"  # a record written before starts were told apart
    (tmp_path / "state" / "_watch.json").write_text("{not json")
    assert read_outcome(tmp_path) is None


def test_a_start_that_finds_the_file_as_applied_keeps_the_last_edit_s_outcome() -> None:
    edit = WatchOutcome(100.0, "applied", ("reconfigured src",))
    quiet_start = WatchOutcome(200.0, "unchanged", (), cause="start")
    assert quiet_start.replaces(None)  # the first start: there is nothing else to show
    assert not quiet_start.replaces(edit)  # status goes on naming the edit, not the watcher's restart
    assert quiet_start.replaces(WatchOutcome(150.0, "unchanged", (), cause="start"))
    assert WatchOutcome(200.0, "applied", ("reconfigured src",), cause="start").replaces(edit)  # edited while none ran
    assert WatchOutcome(200.0, "refused", ("rt.yaml:6:5: error: bad",), cause="start").replaces(edit)
    assert WatchOutcome(200.0, "unchanged", ()).replaces(edit)  # an edit that changed nothing is still an edit


def test_the_watcher_resolves_the_file_with_the_variables_it_was_applied_with(tmp_path) -> None:
    """The plan records the non-secret variables the file refers to (unset ones as None); the
    watcher takes exactly those, whatever supervisord's environment holds."""
    from alphapulse.topology import compile_plan

    text = """\
topology: rt
reload: {watch: true}
nodes:
  src:
    kind: source.counter
    params:
      rate: ${RT_RATE:-4000}
      batch: ${RT_BATCH:-4}
  sink:
    kind: sink.websocket
    inputs: [src]
    params: {token: "${RT_TOKEN}"}
"""
    env = {"RT_RATE": "3500", "RT_TOKEN": "s3cret", "UNRELATED": "x"}
    topology, diagnostics = parse_topology(text, "rt.yaml", env=env, run_dir=str(tmp_path))
    assert topology is not None, diagnostics
    watch = compile_plan(topology, python="/py").watch
    assert watch["env"] == {"RT_BATCH": None, "RT_RATE": "3500"}  # no secret, nothing unrelated
    supervisord_env = {"RT_RATE": "1", "RT_BATCH": "9", "PATH": "/bin"}
    adopt_environment(watch["env"], supervisord_env)
    assert supervisord_env == {"RT_RATE": "3500", "PATH": "/bin"}


def test_the_watcher_records_an_apply_that_blew_up_and_keeps_watching(tmp_path, monkeypatch) -> None:
    """An unexpected error inside an apply (supervisord went away mid-way) is recorded as failed,
    with its traceback in the watcher's log; the watcher does not die of it."""
    import io

    from alphapulse.supervise import RunBase, _watcher
    from alphapulse.supervise._watcher import SupervisedWatcher

    topo = tmp_path / "rt.yaml"
    topo.write_text("topology: rt\nnodes:\n  src: {kind: source.counter}\n  out: {kind: sink.counter, inputs: [src]}\n")

    def gone(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(_watcher, "apply_plan", gone)  # the fault: where supervisord would be asked
    err = io.StringIO()
    watcher = SupervisedWatcher(topo, RunBase(tmp_path / "run"), "rt", out=io.StringIO(), err=err)
    outcome = watcher.apply_once()
    assert outcome is not None and outcome.outcome == "failed" and not outcome.succeeded
    assert outcome.lines == ("ConnectionRefusedError: [Errno 111] Connection refused",)
    assert "Traceback" in err.getvalue()
    assert read_outcome(tmp_path / "run" / "rt") == outcome


def test_the_watcher_hands_supervisord_no_secrets_of_its_own(tmp_path, monkeypatch) -> None:
    """The watcher's environment is supervisord's, older than the secrets a person's apply handed
    over since: its applies hand none, and the apply it hands an edit of itself to runs without them."""
    import io

    from alphapulse.supervise import RunBase, _watcher
    from alphapulse.supervise._watcher import SupervisedWatcher

    topo = tmp_path / "rt.yaml"
    topo.write_text("topology: rt\nnodes:\n  src: {kind: source.counter}\n"
                    "  out: {kind: sink.websocket, inputs: [src], params: {token: '${RT_TOKEN}'}}\n")
    monkeypatch.setenv("RT_TOKEN", "stale-value")
    monkeypatch.setenv("RT_OTHER", "kept")
    applied, spawned = [], []
    monkeypatch.setattr(_watcher, "apply_plan", lambda *a, **kw: applied.append(kw) or ApplyReport("rt"))
    monkeypatch.setattr(_watcher.subprocess, "Popen", lambda argv, **kw: spawned.append(kw))
    watcher = SupervisedWatcher(topo, RunBase(tmp_path / "run"), "rt", out=io.StringIO(), err=io.StringIO())
    watcher.apply_once()
    assert applied and applied[0]["environ"] is None
    plan, _ = _watcher.compile_file(topo, RunBase(tmp_path / "run"))
    watcher.hand_over(plan)
    (kw,) = spawned
    assert "RT_TOKEN" not in kw["env"] and kw["env"]["RT_OTHER"] == "kept"


def test_apply_decides_from_the_plans_and_supervisord_s_states_alone() -> None:
    """``decide`` is the whole of what apply (and ``--dry-run``) will do, as a pure function."""
    from alphapulse.supervise import decide
    from alphapulse.topology import changed_fields

    def entry(restart: str, live: str = "l", **fields) -> dict:
        return {"fingerprint": {"restart": restart, "live": live}, **fields}

    old = {"nodes": {"a": entry("1"), "b": entry("1"), "c": entry("1"), "d": entry("1"), "e": entry("1"),
                     "f": entry("1"), "gone": entry("1")}, "metrics": {"listen": "127.0.0.1:1"}}
    new = {"nodes": {"a": entry("2"), "b": entry("1", "l2"), "c": entry("1"), "d": entry("1"), "e": entry("1"),
                     "f": entry("1"), "new": entry("1")}, "metrics": {"listen": "127.0.0.1:2"}}
    running = {n: {"statename": "RUNNING"} for n in ("a", "b", "c", "f", "gone", "_metrics")}
    running["d"] = {"statename": "FATAL"}
    running["e"] = {"statename": "STOPPED"}
    changes = decide(old, new, running, rekeyed={"f"})
    assert changes.diff.added == ("new",) and changes.diff.removed == ("gone",)
    assert changes.restart == ("a", "f")  # rewired; a new secret value
    assert changes.reconfigure == ("b",) and changes.revive == ("d",) and changes.left_stopped == ("e",)
    assert changes.companions == {"exporter": "restarted"}
    assert changes.unchanged == ["c", "e"]
    del running["c"]  # supervisord lost it: started afresh
    assert "c" in decide(old, new, running).restart

    was = {"params": {"rate": 1, "batch": 2}, "inputs": [{"node": "x"}], "fingerprint": {}}
    now = {"params": {"rate": 1, "batch": 3, "count": 5}, "inputs": [{"node": "y"}], "fingerprint": {"x": 1}}
    assert changed_fields(was, now) == ["inputs", "params.batch", "params.count"]


def test_a_file_applied_under_another_name_before_is_named(tmp_path) -> None:
    """Renaming the topology in a file makes a new topology; the old one keeps running (ports,
    paths): apply warns, naming how to stop it."""
    import json

    from alphapulse.supervise import RunBase
    from alphapulse.supervise._apply import renamed_notes

    base = RunBase(tmp_path)
    for name, source in (("demo", "/t/demo.yaml"), ("other", "/t/other.yaml")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "plan.json").write_text(json.dumps({"topology": name, "source_file": source}))
    assert renamed_notes({"topology": "demo", "source_file": "/t/demo.yaml"}, base) == []
    assert renamed_notes({"topology": "demo2", "source_file": "/t/demo.yaml"}, base) == [
        "/t/demo.yaml was applied before as topology 'demo', which still runs beside 'demo2' "
        "(a renamed topology is a new one): `alphapulse down demo` stops it"]


def test_an_edit_with_a_new_variable_says_whose_environment_resolved_it(tmp_path, monkeypatch) -> None:
    """The watcher resolves with supervisord's environment: a variable new in the file gets that
    value, not the one in the shell of whoever edits; the outcome says so (and how to fix it)."""
    import io
    import json

    from alphapulse.supervise import RunBase, compile_file
    from alphapulse.supervise._watcher import SupervisedWatcher

    base = RunBase(tmp_path / "run")
    topo = tmp_path / "rt.yaml"
    text = "topology: rt\nreload: {{watch: true}}\nnodes:\n  src:\n    kind: source.counter\n{params}" \
           "  out: {{kind: sink.counter, inputs: [src]}}\n"
    topo.write_text(text.format(params=""))
    watcher = SupervisedWatcher(topo, base, "rt", out=io.StringIO(), err=io.StringIO())
    plan, _ = compile_file(topo, base)
    base.plan_file("rt").parent.mkdir(parents=True)
    base.plan_file("rt").write_text(json.dumps(plan))  # as applied
    topo.write_text(text.format(params="    params:\n      rate: ${RT_NEW_RATE:-100}\n"))
    monkeypatch.setattr(watcher, "hand_over", lambda plan: tmp_path / "handover.log")
    outcome = watcher.apply_once()
    assert outcome.outcome == "handed over"
    assert "new variables RT_NEW_RATE, resolved from supervisord's environment" in outcome.summary()
