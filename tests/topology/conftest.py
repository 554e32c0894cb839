from __future__ import annotations

import textwrap

import pytest

from alphapulse.topology import parse_topology

BASE = "/tmp/ap"


@pytest.fixture
def parse():
    """Parse dedented YAML text with a fixed environment and run-dir base."""

    def parse(text: str, env: dict[str, str] | None = None, run_dir: str = BASE):
        return parse_topology(textwrap.dedent(text), "t.yaml", env=env or {}, run_dir=run_dir,
                              abspath="/abs/topologies/t.yaml")

    return parse


@pytest.fixture
def load(parse):
    """Parse text that must be valid; returns the topology."""

    def load(text: str, env: dict[str, str] | None = None, run_dir: str = BASE):
        topology, diagnostics = parse(text, env, run_dir)
        assert topology is not None, [d.to_text() for d in diagnostics]
        return topology

    return load
