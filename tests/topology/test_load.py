"""Loading details: positions, env interpolation, secrets, run directories."""

from __future__ import annotations

from alphapulse.topology import (
    RUN_DIR_ENV,
    interpolate,
    run_dir_base,
    topology_run_dir,
)
from alphapulse.topology._loader import load_yaml

PIPE = """\
    topology: t
    nodes:
      src:
        kind: source.counter
        params:
          rate: ${RATE:-250}
          instruments: ["${VENUE-test}:CNT-USD"]
      out:
        kind: sink.counter
        inputs: [src]
"""


def test_positions_of_keys_and_values():
    doc, diags = load_yaml("a:\n  b: [1, {c: x}]\n", "f")
    assert not diags
    assert doc.data == {"a": {"b": [1, {"c": "x"}]}}
    assert doc.marks.key(("a", "b")) == (doc.marks.key(("a", "b")).__class__(2, 3))
    assert (doc.marks.value(("a", "b", 1, "c")).line, doc.marks.value(("a", "b", 1, "c")).col) \
        == (2, 14)
    assert doc.marks.value(("a", "missing")) == doc.marks.value(("a",))


def test_merge_keys_are_not_duplicates():
    doc, diags = load_yaml("base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  y: 3\n", "f")
    assert not diags
    assert doc.data["mine"] == {"x": 1, "y": 3}


def test_interpolation_resolves_and_retypes_plain_scalars(load):
    topology = load(PIPE, env={"RATE": "75"})
    assert topology.nodes["src"].params["rate"] == 75
    assert topology.nodes["src"].params["instruments"] == ["test:CNT-USD"]
    topology = load(PIPE, env={"RATE": "", "VENUE": ""})
    assert topology.nodes["src"].params["rate"] == 250  # ':-' also covers empty
    assert topology.nodes["src"].params["instruments"] == [":CNT-USD"]  # '-' only covers unset


def test_quoted_interpolation_stays_text(parse):
    # Only plain scalars are retyped; in flow style ({...}) a reference must be quoted.
    _, diags = parse("""\
        topology: t
        nodes:
          src: {kind: source.counter, params: {rate: "${RATE:-5}"}}
          out: {kind: sink.counter, inputs: [src]}
    """)
    assert [d.message for d in diags] == [
        "param 'rate' of node 'src' must be a number, not the text '5'"]


def test_interpolate_function():
    env = {"A": "1", "E": ""}
    assert interpolate("x${A}y$${A}", env) == "x1y${A}"
    assert interpolate("${E:-d}|${E-d}|${U-d}", env) == "d||d"


def test_secret_keeps_template_and_records_env(load):
    topology = load("""\
        topology: t
        nodes:
          alpaca:
            kind: source.alpaca
            params: {key_id: "${AK}", secret_key: "${AS}"}
          out: {kind: sink.counter, inputs: [alpaca]}
    """, env={"AK": "real-key-id", "AS": "real-secret"})
    node = topology.nodes["alpaca"]
    assert node.params == {"key_id": "${AK}", "secret_key": "${AS}"}
    assert node.secret_env == {"key_id": "AK", "secret_key": "AS"}


def test_unset_secret_is_a_warning_not_an_error(parse):
    topology, diags = parse("""\
        topology: t
        nodes:
          alpaca:
            kind: source.alpaca
            params: {key_id: "${AK}", secret_key: "${AS}"}
          out: {kind: sink.counter, inputs: [alpaca]}
    """)
    assert topology is not None
    assert [(d.severity.value, d.code, d.line, d.col) for d in diags] == [
        ("warning", "env-unset-secret", 5, 23), ("warning", "env-unset-secret", 5, 44)]


def test_run_dir_precedence():
    env = {RUN_DIR_ENV: "/from/env", "XDG_RUNTIME_DIR": "/run/user/1", "HOME": "/home/u"}
    assert run_dir_base("/cli", env) == "/cli"
    assert run_dir_base(None, env) == "/from/env"
    del env[RUN_DIR_ENV]
    assert run_dir_base(None, env) == "/run/user/1/alphapulse"
    del env["XDG_RUNTIME_DIR"]
    assert run_dir_base(None, env) == "/home/u/.alphapulse/run"
    assert topology_run_dir("demo", "/b", env) == "/b/demo"


def test_run_dir_from_env_in_load(load):
    topology = load(PIPE, env={RUN_DIR_ENV: "/srv/ap"}, run_dir=None)
    assert topology.run_dir == "/srv/ap/t"
