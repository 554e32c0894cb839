"""The topology commands, run in-process through ``alphapulse.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alphapulse.cli import main

ROOT = Path(__file__).resolve().parents[2]
INVALID = Path(__file__).parent / "invalid"
DEMO = str(ROOT / "topologies" / "demo.yaml")


@pytest.fixture(autouse=True)
def _short_run_dir(monkeypatch):
    monkeypatch.setenv("ALPHAPULSE_RUN_DIR", "/tmp/ap")


def test_validate_ok(capsys):
    assert main(["validate", DEMO]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "0 errors, 0 warnings in 1 file\n"


def test_validate_all_examples(capsys):
    files = [str(p) for p in sorted((ROOT / "topologies").glob("*.yaml"))]
    assert main(["validate", *files]) == 0


def test_validate_invalid_text(capsys):
    path = str(INVALID / "unknown_input.yaml")
    assert main(["validate", path]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{path}:3:3: warning: nothing consumes node 'source' (source.counter); its output goes "
        "nowhere: add it to some node's 'inputs' or remove it",
        f"{path}:7:14: error: node 'sink' takes input from 'sorce', but there is no node 'sorce'; "
        "did you mean 'source'?",
    ]


def test_validate_json(capsys):
    path = str(INVALID / "misspelt_kind.yaml")
    assert main(["validate", "--format", "json", path]) == 1
    [item] = json.loads(capsys.readouterr().out)
    assert item == {"severity": "error", "file": path, "line": 4, "col": 11,
                    "code": "unknown-kind", "message": item["message"]}
    assert "did you mean 'source.coinbase'?" in item["message"]


def test_validate_github(capsys):
    path = str(INVALID / "param_range.yaml")
    assert main(["validate", "--format", "github", path]) == 1
    assert capsys.readouterr().out == (
        f"::error file={path},line=8,col=21,title=schema::param 'depth' of node 'books' must be "
        "at least 1, not 0\n")


def test_warnings_fail_only_with_strict(capsys):
    path = str(INVALID / "orphan.yaml")
    assert main(["validate", path]) == 0
    assert main(["validate", "--strict", path]) == 1


def test_many_files_report_everything(capsys):
    files = [str(INVALID / "cycle.yaml"), str(INVALID / "empty.yaml"), DEMO]
    assert main(["validate", *files]) == 1
    out = capsys.readouterr().out
    assert "cycle.yaml:8:19: error" in out and "empty.yaml:1:1: error" in out


def test_missing_file_is_a_usage_error(capsys, tmp_path):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().out


def test_bad_arguments_are_usage_errors(capsys):
    assert main(["validate"]) == 2
    assert main(["graph", DEMO, "--format", "png"]) == 2


def test_plan_is_stable(capsys):
    assert main(["plan", DEMO, "--run-dir", "/tmp/apx"]) == 0
    first = capsys.readouterr().out
    assert main(["plan", DEMO, "--run-dir", "/tmp/apx"]) == 0
    assert capsys.readouterr().out == first
    plan = json.loads(first)
    assert plan["run_dir"] == "/tmp/apx/demo"
    assert list(plan) == sorted(plan)


def test_plan_uses_env_run_dir(capsys):
    assert main(["plan", DEMO]) == 0
    assert json.loads(capsys.readouterr().out)["run_dir"] == "/tmp/ap/demo"


def test_plan_supervisord(capsys):
    assert main(["plan", DEMO, "--supervisord"]) == 0
    out = capsys.readouterr().out
    assert "[group:demo]" in out and "[program:demo_bridge]" in out


def test_plan_of_invalid_file(capsys):
    assert main(["plan", str(INVALID / "cycle.yaml")]) == 1
    assert "error: inputs form a cycle" in capsys.readouterr().err


def test_graph_formats(capsys):
    assert main(["graph", DEMO]) == 0
    assert capsys.readouterr().out.startswith('digraph "demo" {')
    assert main(["graph", DEMO, "--format", "mermaid"]) == 0
    assert capsys.readouterr().out.startswith("flowchart LR")


def test_schema_print_and_check(capsys, tmp_path):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "source.coinbase" in schema["$defs"]["node"]["properties"]["kind"]["enum"]
    assert main(["schema", "--kind", "relay"]) == 0
    assert "retransmit_buffer" in capsys.readouterr().out
    assert main(["schema", "--check", "--dir", str(tmp_path)]) == 1
    assert main(["schema", "--write", "--dir", str(tmp_path)]) == 0
    (tmp_path / "nodes" / "source.gone.schema.json").write_text("{}")
    assert main(["schema", "--check", "--dir", str(tmp_path)]) == 1
    assert main(["schema", "--write", "--dir", str(tmp_path)]) == 0
    assert not (tmp_path / "nodes" / "source.gone.schema.json").exists()
    assert main(["schema", "--check", "--dir", str(tmp_path)]) == 0


def test_a_reader_that_leaves_early_ends_the_command_quietly():
    """``alphapulse kinds | head -1``: no BrokenPipeError traceback, the shell's SIGPIPE status."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first write
    try:
        writer = subprocess.run([sys.executable, "-m", "alphapulse", "kinds"], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert writer.stderr == "" and writer.returncode == 141
