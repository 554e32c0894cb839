"""Crash-loop backoff (``runtime/_crashloop.py``): the decision as a pure function, the record as a
file, and the node's side with a clock and a sleep of its own (no processes: the supervisord test
in ``test_supervisord.py`` runs the real thing)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest

from alphapulse.runtime._crashloop import (
    FAILED,
    KILLED,
    RUNNING,
    STOPPED,
    WAITING,
    CrashLoop,
    CrashPolicy,
    RunRecord,
    decide_start,
    describe_wait,
    forget,
    read_record,
    write_record,
)

POLICY = CrashPolicy(first_delay=1.0, max_delay=8.0, reset_after=60.0)


def test_the_first_failure_restarts_at_once_then_the_wait_doubles_up_to_its_cap() -> None:
    assert [POLICY.delay(streak) for streak in range(8)] == [0, 0, 1, 2, 4, 8, 8, 8]
    assert CrashPolicy(first_delay=0).delay(5) == 0  # 0 turns it off
    assert CrashPolicy().delay(10_000) == 60.0  # no overflow however long the streak


def test_the_policy_comes_from_the_restart_block_with_defaults_for_what_it_leaves_out() -> None:
    assert CrashPolicy.from_restart({}) == CrashPolicy(1.0, 60.0, 60.0)
    assert CrashPolicy.from_restart({"crash_delay_seconds": 2, "crash_delay_max_seconds": 30,
                                     "crash_reset_seconds": 300, "startsecs": 1}) == CrashPolicy(2.0, 30.0, 300.0)


def test_a_clean_stop_or_no_record_is_a_fresh_start() -> None:
    assert decide_start(None, POLICY, 100.0).streak == 0
    fresh = decide_start(RunRecord(STOPPED, streak=0), POLICY, 100.0)
    assert (fresh.streak, fresh.delay, fresh.reason) == (0, 0.0, "")


def test_failures_soon_after_starting_make_a_streak_and_a_long_run_ends_it() -> None:
    soon = RunRecord(FAILED, streak=2, started=100.0, ended=105.0, reason="boom")
    decision = decide_start(soon, POLICY, 106.0)
    assert (decision.streak, decision.delay, decision.reason) == (3, 2.0, "boom")
    healthy = RunRecord(FAILED, streak=5, started=100.0, ended=100.0 + POLICY.reset_after, reason="boom")
    decision = decide_start(healthy, POLICY, 200.0)
    assert (decision.streak, decision.delay) == (1, 0.0)  # a new streak of one: restart at once


def test_a_process_that_left_running_behind_was_killed() -> None:
    """kill -9 or the OOM killer: no last words, so the next start measures the run to now."""
    decision = decide_start(RunRecord(RUNNING, streak=1, started=100.0), POLICY, 110.0)
    assert (decision.streak, decision.delay, decision.reason) == (2, 1.0, KILLED)
    old = decide_start(RunRecord(RUNNING, streak=4, started=100.0), POLICY, 100.0 + 3600)
    assert (old.streak, old.delay) == (1, 0.0)  # ran an hour: one failure, not a loop


def test_a_node_stopped_while_it_waited_waits_out_the_rest_and_no_more() -> None:
    waiting = RunRecord(WAITING, streak=4, resume_at=110.0, reason="boom")
    decision = decide_start(waiting, POLICY, 107.0)
    assert (decision.streak, decision.delay, decision.reason) == (4, 3.0, "boom")  # not a new failure
    assert decide_start(waiting, POLICY, 120.0).delay == 0.0
    far = RunRecord(WAITING, streak=4, resume_at=10_000.0)  # a clock stepped back: never beyond the cap
    assert decide_start(far, POLICY, 100.0).delay == POLICY.max_delay


def test_the_record_survives_a_round_trip_and_junk_is_no_record(tmp_path) -> None:
    path = tmp_path / "state" / "n.json"
    record = RunRecord(FAILED, streak=3, pid=42, started=1.5, ended=2.5, reason="node n failed: X")
    write_record(path, record)
    assert read_record(path) == record
    assert oct(os.stat(path.parent).st_mode & 0o777) == "0o700"
    for junk in ("", "{", "[]", '{"state": "dancing"}', '{"state": "failed", "streak": "x"}'):
        path.write_text(junk)
        assert read_record(path) is None
    forget(path)
    forget(path)  # twice: nothing to remove is fine
    assert read_record(path) is None


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.slept.append(seconds)
        self.now += seconds
        return True


def test_a_node_failing_every_few_seconds_waits_longer_each_time_until_it_stops_cleanly(tmp_path, caplog) -> None:
    fake = FakeTime()
    path = tmp_path / "state" / "n.json"

    def one_run(outcome: str) -> None:
        loop = CrashLoop(path, POLICY, name="n", clock=fake.clock, sleep=fake.sleep)
        loop.wait_before_start()
        assert read_record(path).state == RUNNING
        fake.now += 3.0  # runs three seconds
        if outcome == "fail":
            loop.failed("node n failed: OSError: disk full")
        elif outcome == "stop":
            loop.stopped()
        # "kill": no last words

    caplog.set_level(logging.WARNING, "alphapulse.node")
    for outcome in ("fail", "fail", "kill", "fail", "fail", "fail", "fail"):
        one_run(outcome)
    assert fake.slept == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert read_record(path).repeats == 4  # the kill broke the run of alike failures
    assert "node n: failed 2 times in a row, each within 60 s of starting (the last 2 the same way); " \
           "starting again in 1.0 s" in caplog.text
    assert "node n: failed 3 times in a row, each within 60 s of starting; starting again in 2.0 s" in caplog.text
    assert "node n: failed 6 times in a row, each within 60 s of starting (the last 3 the same way); " \
           "starting again in 8.0 s" in caplog.text
    assert "(last: node n failed: OSError: disk full)" in caplog.text
    assert f"(last: {KILLED})" in caplog.text  # after the run that was killed outright
    one_run("stop")
    assert read_record(path).streak == 0
    one_run("fail")
    assert fake.slept == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]  # the wait before the clean run, then none


def test_the_wait_is_on_record_while_it_lasts(tmp_path) -> None:
    """``status`` and ``apply --wait`` read the record while the node sleeps."""
    fake = FakeTime()
    path = tmp_path / "n.json"
    write_record(path, RunRecord(FAILED, streak=3, started=990.0, ended=999.0, reason="boom"))
    seen = []
    loop = CrashLoop(path, POLICY, name="n", clock=fake.clock,
                     sleep=lambda s: (seen.append(read_record(path)), fake.sleep(s))[1])
    assert loop.wait_before_start()
    decision = loop.decision
    (during,) = seen
    assert during.state == WAITING and during.pid == os.getpid() and during.streak == 4
    assert during.resume_at == pytest.approx(1000.0 + 4.0) and during.reason == "boom"
    assert describe_wait(decision, POLICY) == "failed 4 times in a row, each within 60 s of starting; " \
                                             "starting again in 4.0 s"


def test_a_record_that_cannot_be_written_costs_a_warning_not_the_node(tmp_path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    loop = CrashLoop(blocker / "state" / "n.json", POLICY, name="n")
    caplog.set_level(logging.WARNING, "alphapulse.node")
    assert loop.wait_before_start() and loop.decision.delay == 0
    loop.failed("x")
    loop.stopped()
    assert caplog.text.count("cannot keep its restart record") == 1


def test_a_stop_while_waiting_ends_the_streak_so_a_restart_by_hand_starts_at_once(tmp_path) -> None:
    """``supervisorctl stop`` / ``restart`` sends SIGTERM to the sleeping process: it ends at once,
    and the record says stopped, streak 0."""
    path = tmp_path / "n.json"
    write_record(path, RunRecord(FAILED, streak=5, started=time.time() - 2, ended=time.time() - 1, reason="boom"))
    loop = CrashLoop(path, CrashPolicy(first_delay=30.0, max_delay=30.0), name="n")
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    assert not loop.wait_before_start()
    assert time.monotonic() - started < 5
    assert loop.decision.delay == 30.0
    assert read_record(path) == RunRecord(STOPPED, streak=0, pid=os.getpid())
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_failures_alike_are_counted_and_a_kill_or_another_reason_starts_the_count_again() -> None:
    """``repeats``: how many of the last failures in a row gave the same reason. The node counts
    its own as it writes them; a kill (no last words) is counted at the next start."""
    first = decide_start(RunRecord(FAILED, streak=0, started=100.0, ended=101.0, reason="taken", repeats=1),
                         POLICY, 102.0)
    assert (first.streak, first.reason, first.repeats) == (1, "taken", 1)
    killed = decide_start(RunRecord(RUNNING, streak=3, started=100.0, reason="taken", repeats=3), POLICY, 101.0)
    assert (killed.reason, killed.repeats) == (KILLED, 1)
    killed_again = decide_start(RunRecord(RUNNING, streak=4, started=100.0, reason=KILLED, repeats=1), POLICY, 101.0)
    assert (killed_again.reason, killed_again.repeats) == (KILLED, 2)
    healthy = decide_start(RunRecord(FAILED, streak=5, started=100.0, ended=200.0, reason="taken", repeats=6),
                           POLICY, 201.0)
    assert (healthy.streak, healthy.repeats) == (1, 1)  # never more alike than in the streak
    assert RunRecord.from_json('{"state": "failed", "streak": 2}').repeats == 0  # a record from before the field


def test_the_node_counts_its_failures_alike_as_it_writes_them(tmp_path) -> None:
    fake = FakeTime()
    path = tmp_path / "n.json"
    seen = []
    for reason in ("OSError: taken", "OSError: taken", "OSError: taken", "ValueError: x", "ValueError: x"):
        loop = CrashLoop(path, POLICY, name="n", clock=fake.clock, sleep=fake.sleep)
        loop.wait_before_start()
        fake.now += 2.0
        loop.failed(reason)
        seen.append(read_record(path).repeats)
    assert seen == [1, 2, 3, 1, 2]


def test_apply_waits_out_a_backoff_that_may_end_in_a_node_serving_and_no_other() -> None:
    """``apply --wait S``: a node that starts again within the wait may still serve in it (a chaos
    soak kills nodes often enough to set off short backoffs); one whose backoff outlasts the wait
    will not, nor one whose last failures were alike (a taken port): either ends the wait at once."""
    from alphapulse.supervise._apply import waits_in_vain

    waiting = RunRecord(WAITING, streak=4, pid=42, resume_at=1010.0, reason="boom", repeats=1)
    assert waits_in_vain(waiting, 42, after=1005.0)
    assert not waits_in_vain(waiting, 42, after=1020.0)  # it starts before the wait is up
    assert not waits_in_vain(waiting, 43, after=1005.0)  # another process's record
    assert not waits_in_vain(RunRecord(RUNNING, streak=4, pid=42, started=1000.0), 42, after=1005.0)
    assert not waits_in_vain(None, 42, after=1005.0)
    alike = RunRecord(WAITING, streak=2, pid=42, resume_at=1010.0, reason="OSError: taken", repeats=2)
    assert waits_in_vain(alike, 42, after=1020.0)  # starts in time, but will fail the same way
    assert not waits_in_vain(alike, 43, after=1020.0)
    kills = RunRecord(WAITING, streak=3, pid=42, resume_at=1010.0, reason=KILLED, repeats=3)
    assert not waits_in_vain(kills, 42, after=1020.0)  # killed from outside: it may well serve
