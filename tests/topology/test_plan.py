"""Compiling: the plan format, determinism, fingerprints, source ids, renderers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from alphapulse.kinds import load_kinds
from alphapulse.protocol import RelayDomain, TLVType, parse_instrument
from alphapulse.topology import (
    Plan,
    assign_source_ids,
    compile_plan,
    fold_source_id,
    load_topology,
    render_dot,
    render_mermaid,
    render_program_config,
    validate,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "topologies").glob("*.yaml"))

PIPE = """\
    topology: pipe
    defaults:
      restart: {startretries: 3}
      link: {queue: 100}
    nodes:
      src:
        kind: source.counter
        params:
          rate: 10
          count: 5
      market:
        kind: relay
        domain: market_data
        inputs: [src]
      out:
        kind: sink.websocket
        inputs:
          - from: market
            types: [Trade]
            instruments: ["coinbase:BTC-USD"]
            overflow: block
        params:
          token: ${TOKEN}
        restart: {stopwaitsecs: 30}
"""


def plan_of(load, text=PIPE, **env):
    return compile_plan(load(text, env=env), python="/py")


def test_plan_format(load):
    plan = plan_of(load)
    data = plan.data
    assert data["format"] == 1
    assert data["topology"] == "pipe"
    assert data["run_dir"] == "/tmp/ap/pipe"
    assert data["source_file"] == "/abs/topologies/t.yaml"
    out = data["nodes"]["out"]
    assert out["kind"] == "sink.websocket"
    assert out["role"] == "sink"
    assert out["argv"] == ["/py", "-m", "alphapulse", "node", "--plan", "/tmp/ap/pipe/plan.json",
                           "out"]
    assert out["sockets"] == {"data": "/tmp/ap/pipe/s/out.sock",
                              "control": "/tmp/ap/pipe/c/out.sock"}
    assert out["inputs"] == [{
        "node": "market", "socket": "/tmp/ap/pipe/s/market.sock",
        "types": [int(TLVType.TRADE)], "instruments": [parse_instrument("coinbase:BTC-USD").id],
        "overflow": "block", "queue": 100, "verify_checksums": False,  # from a relay: it checked them
    }]
    assert data["nodes"]["market"]["inputs"][0]["verify_checksums"] is True  # from a source
    assert out["params"]["token"] == "${TOKEN}"  # the secret stays a template
    assert out["secret_env"] == {"token": "TOKEN"}
    assert out["params"]["port"] == 8765  # kind defaults are filled in
    assert out["restart"] == {"autorestart": True, "startretries": 3, "startsecs": 1,
                              "stopwaitsecs": 30, "backoff_seconds": 0.1, "crash_delay_seconds": 1.0,
                              "crash_delay_max_seconds": 60.0, "crash_reset_seconds": 60.0,
                              "watchdog_seconds": 60.0}
    assert out["breaker"] == {"failure_threshold": 5, "window": 10.0, "cooldown": 5.0, "success_threshold": 1}
    assert out["module"] == "nodes.websocket"
    assert data["nodes"]["market"]["relay_domain"] == int(RelayDomain.MARKET_DATA)
    assert data["nodes"]["market"]["inputs"][0]["types"] is None
    assert set(out["fingerprint"]) == {"restart", "live"}


def test_checksum_policy_per_link(load):
    """``auto`` trusts a relay's CRC checks and verifies everything else; ``verify`` always checks,
    as a topology-wide default or on one link."""
    plan = compile_plan(load("""\
        topology: c
        defaults:
          link: {checksums: verify}
        nodes:
          src: {kind: source.counter}
          bus: {kind: relay, domain: market_data, inputs: [src]}
          strict: {kind: sink.counter, inputs: [bus]}
          relaxed: {kind: sink.counter, inputs: [{from: bus, checksums: auto}]}
          direct: {kind: sink.counter, inputs: [{from: src, checksums: auto}]}
    """))
    verify = {name: [i["verify_checksums"] for i in node["inputs"]] for name, node in plan.nodes.items()}
    assert verify == {"src": [], "bus": [True], "strict": [True], "relaxed": [False], "direct": [True]}


@pytest.mark.parametrize(("option", "default", "chosen"), [("linger_ms", 0, 2.5), ("resend_timeout_ms", 1000, 50)])
def test_link_options_reach_the_plan_only_where_not_the_default(load, option, default, chosen):
    """A link option reaches the plan's input (as a topology default or on one link); a link
    at the option's default has no such key, so existing plans stay as they were."""
    plan = compile_plan(load(f"""\
        topology: c
        defaults:
          link: {{{option}: 2500}}
        nodes:
          src: {{kind: source.counter}}
          bus: {{kind: relay, domain: market_data, inputs: [{{from: src, {option}: {default}}}]}}
          archive: {{kind: sink.counter, inputs: [bus]}}
          quick: {{kind: sink.counter, inputs: [{{from: bus, {option}: {chosen}}}]}}
    """))
    values = {name: [i.get(option) for i in node["inputs"]] for name, node in plan.nodes.items()}
    assert values == {"src": [], "bus": [None], "archive": [2500], "quick": [chosen]}
    if option == "resend_timeout_ms":  # the node's link waits that long (the default without the key)
        from alphapulse.runtime import InputLink, InputSpec

        waits = {name: [InputLink(InputSpec.from_plan(i), subscriber_name=name).tracker.resend_timeout
                        for i in node["inputs"]] for name, node in plan.nodes.items()}
        assert waits == {"src": [], "bus": [1.0], "archive": [2.5], "quick": [0.05]}


def test_secret_value_never_in_plan(load):
    plan = plan_of(load, TOKEN="s3cr3t-value")
    assert "s3cr3t-value" not in plan.to_json()


def test_relay_domain_of_other_nodes(load):
    plan = compile_plan(load("""\
        topology: d
        nodes:
          cb: {kind: source.coinbase}
          arb: {kind: transform.arbitrage, inputs: [cb]}
          signals: {kind: relay, domain: signal, inputs: [arb]}
          out: {kind: sink.counter, inputs: [signals]}
    """))
    domains = {n: p["relay_domain"] for n, p in plan.nodes.items()}
    assert domains == {"cb": 1, "arb": 2, "signals": 2, "out": 1}


def test_plan_is_byte_identical_across_compiles(load):
    first = plan_of(load).to_json()
    second = plan_of(load).to_json()
    assert first == second
    assert Plan.from_json(first).to_json() == first
    assert json.loads(first)["nodes"]["src"]["argv"][0] == "/py"


def test_default_python_is_sys_executable(load):
    assert compile_plan(load(PIPE)).nodes["src"]["argv"][0] == sys.executable


def _fingerprints(plan):
    return {n: (p["fingerprint"]["restart"], p["fingerprint"]["live"])
            for n, p in plan.nodes.items()}


@pytest.mark.parametrize(("edit", "restart", "live"), [
    (("rate: 10", "rate: 20"), set(), {"src"}),               # live param
    (("count: 5", "count: 6"), {"src"}, set()),               # non-live param
    (("overflow: block", "overflow: drop_oldest"), {"out"}, set()),   # wiring of one node
    (("{stopwaitsecs: 30}", "{stopwaitsecs: 31}"), {"out"}, set()),   # restart policy
    (("startretries: 3", "startretries: 4"), {"src", "market", "out"}, set()),  # defaults
    (("        restart: {stopwaitsecs: 30}", "        restart: {stopwaitsecs: 30}\n        cpu: {policy: batch}"),
     set(), {"out"}),                                         # a cpu block: applied live
    (("  link: {queue: 100}", "  link: {queue: 100}\n      cpu: {nice: 5}"), set(), {"src", "market", "out"}),
    (("          count: 5", "          count: 5\n        retransmit_buffer: 100"), {"src"}, set()),  # reserved at start
    (("  link: {queue: 100}", "  link: {queue: 100}\n      retransmit_buffer: 100"), {"src"}, set()),  # not the relay's
])
def test_fingerprints_change_only_where_expected(load, edit, restart, live):
    before = _fingerprints(plan_of(load))
    after = _fingerprints(plan_of(load, PIPE.replace(*edit)))
    assert {n for n in before if before[n][0] != after[n][0]} == restart
    assert {n for n in before if before[n][1] != after[n][1]} == live


def test_cpu_block_merges_over_defaults_into_the_plan(load):
    text = PIPE.replace("  link: {queue: 100}", "  link: {queue: 100}\n      cpu: {policy: batch, nice: 5}")
    text = text.replace("        restart: {stopwaitsecs: 30}",
                        "        restart: {stopwaitsecs: 30}\n        cpu: {nice: 0, affinity: [1, 0]}")
    nodes = plan_of(load, text).nodes
    assert nodes["src"]["cpu"] == {"policy": "batch", "nice": 5}
    assert nodes["out"]["cpu"] == {"policy": "batch", "nice": 0, "affinity": [1, 0]}
    assert plan_of(load).nodes["src"]["cpu"] == {"policy": "normal"}


def test_a_retransmit_buffer_reaches_the_plans_of_sources_and_transforms_only_where_set(load):
    """The relay keeps its param and the sink publishes nothing; an unset one leaves the plan
    (and so every fingerprint) as it was before the setting existed."""
    text = PIPE.replace("  link: {queue: 100}", "  link: {queue: 100}\n      retransmit_buffer: 50000")
    nodes = plan_of(load, text).nodes
    assert nodes["src"]["retransmit_buffer"] == 50000
    assert "retransmit_buffer" not in nodes["market"] and "retransmit_buffer" not in nodes["out"]
    own = text.replace("          count: 5", "          count: 5\n        retransmit_buffer: 0")
    assert plan_of(load, own).nodes["src"]["retransmit_buffer"] == 0  # none kept: its own wins over defaults
    assert all("retransmit_buffer" not in entry for entry in plan_of(load).nodes.values())


def test_adding_a_node_keeps_other_ids(load):
    before = plan_of(load).nodes
    extra = PIPE + "      rec: {kind: sink.recorder, inputs: [market]}\n"
    after = plan_of(load, extra).nodes
    assert all(after[n]["source_id"] == before[n]["source_id"] for n in before)
    assert all(after[n]["fingerprint"] == before[n]["fingerprint"] for n in before)


def test_source_ids_are_u16_and_deterministic():
    for name in ("a", "market", "x" * 40):
        assert 1 <= fold_source_id(name) <= 65535
        assert fold_source_id(name) == fold_source_id(name)


def test_source_id_collision_is_resolved_deterministically():
    # find two names that fold to the same id
    seen: dict[int, str] = {}
    for i in range(100000):
        name = f"n{i}"
        sid = fold_source_id(name)
        if sid in seen:
            first, second = sorted((seen[sid], name))
            break
        seen[sid] = name
    ids = assign_source_ids([second, first, "other"])
    assert ids[first] == fold_source_id(first)  # the name that sorts first keeps its id
    assert ids[second] == fold_source_id(second, 1) != ids[first]
    assert ids == assign_source_ids(["other", first, second])  # order of the file is irrelevant


def test_supervisord_config(load):
    text = render_program_config(plan_of(load))
    assert "[group:pipe]\nprograms=pipe_market,pipe_out,pipe_src\n" in text
    section = text[text.index("[program:pipe_out]"):]
    assert "process_name=out\n" in section
    assert ("command=/py -m alphapulse node --plan /tmp/ap/pipe/plan.json out\n") in section
    for line in ("autorestart=true", "startretries=3", "stopwaitsecs=30", "stopsignal=TERM",
                 "stopasgroup=true", "killasgroup=true",
                 "stdout_logfile=/tmp/ap/pipe/logs/out.out.log",
                 'environment=ALPHAPULSE_PLAN="/tmp/ap/pipe/plan.json",'
                 'ALPHAPULSE_TOPOLOGY="pipe",ALPHAPULSE_NODE="out",PYTHONUNBUFFERED="1"'):
        assert line + "\n" in section


def test_supervisord_config_quotes_and_escapes(load):
    plan = compile_plan(load(PIPE), python="/opt/my python/bin/python%1")
    text = render_program_config(plan)
    assert "command='/opt/my python/bin/python%%1' -m alphapulse" in text


def supervisord_groups(plan, config: str, tmp_path: Path) -> dict[str, list[str]]:
    """The process groups supervisord itself reads from a program file (its names, sorted)."""
    from supervisor.options import ServerOptions

    Path(plan.data["log_dir"]).mkdir(parents=True)
    programs = tmp_path / "pipe.conf"
    programs.write_text(config)
    main = tmp_path / "supervisord.conf"
    main.write_text(f"[supervisord]\nlogfile={tmp_path}/sd.log\n[include]\nfiles={programs}\n")
    options = ServerOptions()
    options.realize(["-c", str(main)])
    return {g.name: sorted(p.name for p in g.process_configs) for g in options.process_group_configs}


def test_supervisord_parses_the_config(load, tmp_path):
    plan = compile_plan(load(PIPE, run_dir=str(tmp_path)), python="/py")
    groups = supervisord_groups(plan, render_program_config(plan), tmp_path)
    assert groups == {"pipe": ["market", "out", "src"]}  # supervisorctl: pipe:out


def test_a_metrics_section_becomes_an_exporter_program_beside_the_nodes(load, tmp_path):
    """``metrics: {listen}``: the plan carries the exporter's command line, the program file runs
    it as ``<topology>:_metrics`` (no node can be called that), and supervisord reads it."""
    text = PIPE.replace("    topology: pipe\n", "    topology: pipe\n    metrics: {listen: 127.0.0.1:9464}\n")
    plan = compile_plan(load(text, run_dir=str(tmp_path)), python="/py")
    assert plan.metrics == {"listen": "127.0.0.1:9464", "argv": [
        "/py", "-m", "alphapulse", "metrics", "--topology", "pipe", "--run-dir", str(tmp_path),
        "--listen", "127.0.0.1:9464"]}
    assert "metrics" not in plan_of(load).data  # none unless asked for
    fingerprints = {n: e["fingerprint"] for n, e in plan.nodes.items()}
    assert fingerprints == {n: e["fingerprint"] for n, e in compile_plan(
        load(PIPE, run_dir=str(tmp_path)), python="/py").nodes.items()}  # the nodes do not notice

    config = render_program_config(plan)
    assert "[group:pipe]\nprograms=pipe_market,pipe_out,pipe_src,pipe__metrics\n" in config
    section = config[config.index("[program:pipe__metrics]"):]
    assert "process_name=_metrics\n" in section and "autorestart=true\n" in section
    assert f"command=/py -m alphapulse metrics --topology pipe --run-dir {tmp_path} --listen 127.0.0.1:9464\n" \
        in section
    groups = supervisord_groups(plan, config, tmp_path)
    assert groups == {"pipe": ["_metrics", "market", "out", "src"]}


def test_a_reload_section_becomes_a_watcher_program_beside_the_nodes(load, tmp_path):
    """``reload: {watch: true}``: the plan carries the watcher's command line (``apply FILE
    --supervised NAME``), the program file runs it as ``<topology>:_watch`` beside the exporter,
    with time to finish an apply when stopped, and the nodes do not notice."""
    text = PIPE.replace("    topology: pipe\n",
                        "    topology: pipe\n    reload: {watch: true}\n    metrics: {listen: 127.0.0.1:9464}\n")
    topology = load(text, run_dir=str(tmp_path))
    plan = compile_plan(topology, python="/py")
    assert plan.watch == {"file": topology.path, "env": {}, "argv": [
        "/py", "-m", "alphapulse", "apply", topology.path, "--supervised", "pipe", "--run-dir", str(tmp_path)]}
    assert "watch" not in plan_of(load).data
    assert "watch" not in compile_plan(load(text.replace("watch: true", "watch: false")), python="/py").data
    assert {n: e["fingerprint"] for n, e in plan.nodes.items()} == {n: e["fingerprint"] for n, e in compile_plan(
        load(PIPE, run_dir=str(tmp_path)), python="/py").nodes.items()}

    config = render_program_config(plan)
    assert "programs=pipe_market,pipe_out,pipe_src,pipe__metrics,pipe__watch\n" in config
    section = config[config.index("[program:pipe__watch]"):]
    assert "process_name=_watch\n" in section and "stopwaitsecs=60\n" in section
    assert f"command=/py -m alphapulse apply {topology.path} --supervised pipe --run-dir {tmp_path}\n" in section
    groups = supervisord_groups(plan, config, tmp_path)
    assert groups == {"pipe": ["_metrics", "_watch", "market", "out", "src"]}


def test_graph_renderers(load):
    topology = load(PIPE)
    dot = render_dot(topology)
    assert '"market" -> "out" [label="Trade | coinbase:BTC-USD"];' in dot
    assert 'shape=hexagon' in dot and "cluster_source" in dot
    mermaid = render_mermaid(topology)
    assert mermaid.startswith("flowchart LR\n")
    assert '  src -->|"Trade"| market' in mermaid
    assert '    market{{"market<br/>relay"}}' in mermaid


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_validate_and_compile(path):
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=../schemas/topology.schema.json\n")
    topology, diagnostics = load_topology(path, env={}, run_dir="/tmp/ap")
    assert topology is not None, [d.to_text() for d in diagnostics]
    assert {d.code for d in diagnostics} <= {"env-unset-secret"}
    used = {n.kind for n in topology.nodes.values()}
    assert used <= set(load_kinds())
    assert compile_plan(topology).to_json() == compile_plan(topology).to_json()


def test_examples_validate_together():
    topologies, diagnostics = validate(EXAMPLES, env={}, run_dir="/tmp/ap")
    assert len(topologies) == len(EXAMPLES)
    assert not [d for d in diagnostics if d.is_error]


def test_two_topologies_claiming_one_run_dir(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    body = "nodes:\n  src: {kind: source.counter}\n  out: {kind: sink.counter, inputs: [src]}\n"
    a.write_text("topology: same\n" + body)
    b.write_text("# copy of a\ntopology: same\n" + body)
    topologies, diagnostics = validate([a, b, a], env={}, run_dir="/tmp/ap")
    assert [t.file for t in topologies] == [str(a)]
    assert [d.to_text() for d in diagnostics] == [
        f"{b}:2:11: error: topology 'same' would use run directory /tmp/ap/same, already claimed "
        f"by {a}:1:11; two topologies would share sockets and supervisord programs: give one of "
        "them another name"]
