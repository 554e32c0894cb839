"""Every invalid topology in the corpus gives exactly its expected diagnostics."""

from __future__ import annotations

import pytest

from alphapulse.topology import load_topology
from tests.topology.corpus import INVALID, expectations, read_case, render

FILES = sorted(INVALID.glob("*.yaml"))


def test_corpus_is_complete():
    expected = expectations()
    assert len(FILES) >= 25
    assert sorted(expected) == [p.name for p in FILES], "every corpus file needs an expectation"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_invalid_topology(path):
    case = read_case(path)
    topology, diagnostics = load_topology(path, env=case.env, run_dir=case.run_dir)
    assert render(diagnostics) == case.expected
    assert all(d.file == str(path) for d in diagnostics)
    if any(d.is_error for d in diagnostics):
        assert topology is None
    else:  # warnings only: still a usable topology
        assert topology is not None


def test_every_check_has_a_case():
    codes = set()
    for path in FILES:
        case = read_case(path)
        codes |= {d.code for d in load_topology(path, env=case.env, run_dir=case.run_dir)[1]}
    assert codes >= {
        "yaml", "empty", "schema", "unknown-key", "missing-key", "unknown-kind", "duplicate-key",
        "bad-name", "unknown-input", "source-inputs", "sink-output", "cycle", "orphan",
        "type-mismatch", "domain-mismatch", "socket-path", "env-unset", "env-syntax",
        "secret-literal", "secret-looking", "bad-instrument", "duplicate-input",
        "domain-not-relay", "retransmit-not-here",
    }
