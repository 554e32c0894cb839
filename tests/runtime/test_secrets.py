"""Secrets reach the nodes through ``apply``, held by supervisord in memory: set late, rotated,
kept when an apply's environment lacks them; never written to a file. Real supervisord."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from alphapulse.cli import main
from alphapulse.supervise import RunBase, Supervisor, load_applied_plan, secret_needs
from tests.runtime._deployment import deployed

pytestmark = pytest.mark.slow

TOPOLOGY = """\
topology: rs
nodes:
  src:
    kind: source.counter
    params: {rate: 100, batch: 1}
  feed:
    kind: source.alpaca
    params:
      key_id: ${RS_KEY_ID}
      secret_key: ${RS_SECRET_KEY}
      endpoint: ws://127.0.0.1:9/
    restart: {startsecs: 0, crash_delay_seconds: 30}
"""
FIRST, SECOND = "k3y-first-7c1d9e", "k3y-second-04b2fa"


@pytest.fixture
def deployment(monkeypatch):
    monkeypatch.setenv("RS_SECRET_KEY", "s3cret-rs-55aa")
    monkeypatch.delenv("RS_KEY_ID", raising=False)
    with deployed(monkeypatch, "rs", TOPOLOGY) as where:
        yield where


def process(base: Path, node: str) -> dict:
    return Supervisor(RunBase(base)).group_processes("rs")[node]


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def files_holding(base: Path, text: str) -> list[Path]:
    return [p for p in base.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_plan_names_the_secret_variables_each_node_reads(deployment) -> None:
    base, topo = deployment
    assert main(["plan", str(topo)]) == 0
    from alphapulse.supervise import compile_file

    plan, _ = compile_file(topo, RunBase(base))
    assert secret_needs(plan) == {"feed": ["RS_KEY_ID", "RS_SECRET_KEY"]}


def test_a_secret_set_or_rotated_after_supervisord_started_reaches_only_its_node(deployment, capsys) -> None:
    base, topo = deployment
    # supervisord starts without RS_KEY_ID: the node cannot start, and says why
    assert main(["apply", str(topo), "--wait", "10"]) == 3
    err = capsys.readouterr().err
    assert ("parameter 'key_id' needs environment variable RS_KEY_ID (it is not set; export it and run "
            "`alphapulse apply` again)") in err
    src_pid = process(base, "src")["pid"]

    # set now and applied: supervisord (started without it) gets it, and the node starts with it
    os.environ["RS_KEY_ID"] = FIRST
    assert main(["apply", str(topo), "--wait", "60"]) == 0
    out = capsys.readouterr().out
    assert "feed" in out and FIRST not in out
    feed_pid = process(base, "feed")["pid"]
    assert environment_of(feed_pid)["RS_KEY_ID"] == FIRST
    assert "RS_KEY_ID" not in environment_of(src_pid)  # only the nodes that read it get it

    # the same value again: nothing to do
    assert main(["apply", str(topo)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert process(base, "feed")["pid"] == feed_pid

    # rotated: a dry run says so and holds nothing
    os.environ["RS_KEY_ID"] = SECOND
    assert main(["apply", str(topo), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "  restart      feed  (a new secret value)" in out and "feed would restart: a new value of RS_KEY_ID" in out
    assert SECOND not in out and process(base, "feed")["pid"] == feed_pid

    # applied: that node restarts with the new value, named with the variable, never the value
    assert main(["apply", str(topo), "--wait", "60"]) == 0
    out = capsys.readouterr().out
    assert "restarted    feed" in out and "unchanged    src" in out
    assert "feed restarted: a new value of RS_KEY_ID" in out
    assert SECOND not in out and FIRST not in out
    rotated_pid = process(base, "feed")["pid"]
    assert rotated_pid != feed_pid and environment_of(rotated_pid)["RS_KEY_ID"] == SECOND
    assert process(base, "src")["pid"] == src_pid

    # an apply from a shell without it keeps what supervisord holds, through later restarts too
    del os.environ["RS_KEY_ID"]
    assert main(["apply", str(topo)]) == 0
    assert process(base, "feed")["pid"] == rotated_pid
    assert main(["ctl", "restart", "rs:feed"]) == 0
    capsys.readouterr()
    restarted = process(base, "feed")
    assert restarted["pid"] != rotated_pid and environment_of(restarted["pid"])["RS_KEY_ID"] == SECOND

    # supervisord's own re-read (`supervisorctl update`) finds nothing changed: no restart, no loss
    assert main(["ctl", "update"]) == 0
    assert process(base, "feed")["pid"] == restarted["pid"] and process(base, "src")["pid"] == src_pid

    # held in memory only: no file of the run directory has a value (plan, program file, logs)
    assert load_applied_plan(RunBase(base), "rs")["nodes"]["feed"]["secret_env"] == {
        "key_id": "RS_KEY_ID", "secret_key": "RS_SECRET_KEY"}
    time.sleep(0.5)  # whatever the restarted node logs at start
    assert files_holding(base, SECOND) == [] and files_holding(base, FIRST) == []
