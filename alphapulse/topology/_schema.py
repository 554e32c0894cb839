"""The topology JSON Schema, generated from the kind registry, and the files written from it.

``schemas/topology.schema.json`` is the envelope the framework owns (name, defaults, nodes,
inputs, restart, link policy) with one ``if kind == X then params: $ref nodes/X.schema.json``
per registered kind; ``schemas/nodes/<kind>.schema.json`` is each kind's own params schema.
Adding a kind means adding its module under ``nodes/`` and running ``alphapulse schema
--write``; a test regenerates the files and fails when the committed ones differ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema

from alphapulse.kinds import KindSpec, load_kinds
from alphapulse.protocol import RelayDomain, TLVType

DIALECT = "https://json-schema.org/draft/2020-12/schema"
TOPOLOGY_NAME_PATTERN = "^[a-z0-9][a-z0-9_-]*$"
NODE_NAME_PATTERN = "^[a-z][a-z0-9_]*$"
LISTEN_PATTERN = "^[^\\s:]+:[0-9]{1,5}$|^\\[[0-9A-Fa-f:.]+\\]:[0-9]{1,5}$"
"""``HOST:PORT``, an IPv6 host in brackets"""
OVERFLOW_POLICIES = ("block", "drop_oldest", "disconnect")
CPU_POLICIES = ("normal", "batch", "idle")
CPU_DEFAULTS: dict[str, Any] = {"policy": "normal"}
RETRANSMIT_BUFFER_DEFAULT = 16384
"""Messages a source's or transform's publisher keeps for resends unless its node says otherwise."""
"""A node without a ``cpu`` block: the normal policy, nice and affinity as supervisord started it."""
DOMAINS = tuple(d.name.lower() for d in RelayDomain)
TOPOLOGY_SCHEMA_FILE = "topology.schema.json"

RESTART_DEFAULTS: dict[str, Any] = {
    "autorestart": True,
    "startretries": 10,
    "startsecs": 1,
    "stopwaitsecs": 10,
    "backoff_seconds": 0.1,
    "crash_delay_seconds": 1.0,
    "crash_delay_max_seconds": 60.0,
    "crash_reset_seconds": 60.0,
    "watchdog_seconds": 60.0,
}
BREAKER_DEFAULTS: dict[str, Any] = {
    "failure_threshold": 5,
    "window": 10.0,
    "cooldown": 5.0,
    "success_threshold": 1,
}
LINK_DEFAULTS: dict[str, Any] = {
    "overflow": "drop_oldest", "queue": 4096, "checksums": "auto", "linger_ms": 0, "resend_timeout_ms": 1000,
}
CHECKSUM_POLICIES = ("auto", "verify")


def node_schema_file(kind: str) -> str:
    return f"nodes/{kind}.schema.json"


def _settings(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    """A closed object of optional settings (restart, breaker, cpu): unknown keys are errors."""
    return {"type": "object", "description": description, "additionalProperties": False, "properties": properties}


def _restart_schema() -> dict[str, Any]:
    return _settings(
        "Restart policy, mapped to supervisord; unset fields come from defaults.",
        {
            "autorestart": {
                "description": "Restart the node when it exits: true, false, or 'unexpected' "
                "(only on an exit code it did not expect).",
                "enum": [True, False, "unexpected"],
                "default": RESTART_DEFAULTS["autorestart"],
            },
            "startretries": {
                "type": "integer", "minimum": 0, "default": RESTART_DEFAULTS["startretries"],
                "description": "Failed starts in a row before supervisord gives up (FATAL).",
            },
            "startsecs": {
                "type": "integer", "minimum": 0, "default": RESTART_DEFAULTS["startsecs"],
                "description": "Seconds a node must stay up to count as started.",
            },
            "stopwaitsecs": {
                "type": "integer", "minimum": 1, "default": RESTART_DEFAULTS["stopwaitsecs"],
                "description": "Seconds between SIGTERM (drain, flush, close) and SIGKILL.",
            },
            "backoff_seconds": {
                "type": "number", "minimum": 0, "default": RESTART_DEFAULTS["backoff_seconds"],
                "description": "First delay of the node host's capped exponential reconnect "
                "backoff towards its upstreams.",
            },
            "crash_delay_seconds": {
                "type": "number", "minimum": 0, "default": RESTART_DEFAULTS["crash_delay_seconds"],
                "description": "Crash-loop backoff: after a second failure in a row (each within "
                "crash_reset_seconds of its start) the node waits this long before starting again, "
                "twice as long after each further one. 0 turns it off (supervisord then restarts at once).",
            },
            "crash_delay_max_seconds": {
                "type": "number", "minimum": 0, "default": RESTART_DEFAULTS["crash_delay_max_seconds"],
                "description": "The longest crash-loop wait.",
            },
            "crash_reset_seconds": {
                "type": "number", "minimum": 0, "default": RESTART_DEFAULTS["crash_reset_seconds"],
                "description": "A run that lasted this long was healthy: its failure starts a new streak.",
            },
            "watchdog_seconds": {
                "type": "number", "minimum": 0, "default": RESTART_DEFAULTS["watchdog_seconds"],
                "description": "A running node whose event loop has not come round for this long is "
                "hung: it writes every thread's stack to its log and exits, and supervisord restarts "
                "it. 0 turns the watchdog off.",
            },
        },
    )


def _cpu_schema() -> dict[str, Any]:
    return _settings(
        "The node process's Linux scheduling, set by the node itself (at start, and live "
        "on apply): policy, nice and CPU affinity, as systemd's CPUSchedulingPolicy=, Nice= and "
        "CPUAffinity= give a service.",
        {
            "policy": {
                "enum": list(CPU_POLICIES), "default": CPU_DEFAULTS["policy"],
                "description": "normal (SCHED_OTHER); batch (SCHED_BATCH: never preempts the task that "
                "woke it, so a relay finishes its fan-out first; the setting for a fan-out relay's "
                "subscribers on a machine with few idle cores); idle (SCHED_IDLE: only when nothing "
                "else wants the CPU).",
            },
            "nice": {
                "type": "integer", "minimum": -20, "maximum": 19,
                "description": "Nice value of every thread (lower runs first; below the current "
                "value needs CAP_SYS_NICE or RLIMIT_NICE). Default: as started.",
            },
            "affinity": {
                "type": "array", "minItems": 1, "uniqueItems": True,
                "items": {"type": "integer", "minimum": 0},
                "description": "CPUs the node may run on (as taskset -c). Default: as started.",
            },
        },
    )


def _breaker_schema() -> dict[str, Any]:
    return _settings(
        "Circuit breaker around the node's message handler and its upstream connection: "
        "after failure_threshold failures within window seconds it opens (skips, counts), lets one "
        "probe through after cooldown seconds, and closes after success_threshold good probes.",
        {
            "failure_threshold": {"type": "integer", "minimum": 1, "default": BREAKER_DEFAULTS["failure_threshold"],
                                  "description": "Failures within the window that open the breaker."},
            "window": {"type": "number", "exclusiveMinimum": 0, "default": BREAKER_DEFAULTS["window"],
                       "description": "Seconds over which failures are counted."},
            "cooldown": {"type": "number", "minimum": 0, "default": BREAKER_DEFAULTS["cooldown"],
                         "description": "Seconds the breaker stays open before one probe is let through."},
            "success_threshold": {"type": "integer", "minimum": 1, "default": BREAKER_DEFAULTS["success_threshold"],
                                  "description": "Consecutive successful probes that close it again."},
        },
    )


def _link_properties() -> dict[str, Any]:
    return {
        "overflow": {
            "enum": list(OVERFLOW_POLICIES),
            "description": "When this subscriber's queue is full: block (backpressure to the "
            "publisher), drop_oldest (count and drop), or disconnect (drop the subscriber).",
        },
        "queue": {
            "type": "integer", "minimum": 1, "maximum": 1048576,
            "description": "Messages queued for this subscriber before the overflow policy "
            "applies.",
        },
        "checksums": {
            "enum": list(CHECKSUM_POLICIES),
            "description": "CRC checks on what this input receives: auto (every frame, unless the "
            "upstream is a relay, which checked every frame it forwards) or verify (always).",
        },
        "linger_ms": {
            "type": "number", "minimum": 0, "maximum": 10000,
            "description": "Milliseconds to let messages gather before reading this input again "
            "(0: read as soon as anything arrives). Each read then takes a batch, which costs a "
            "sink that does not need low latency (Parquet, a recorder) far less CPU than a read "
            "per message; what arrives meanwhile waits in the socket and the upstream's queue, "
            "whose overflow policy applies.",
        },
        "resend_timeout_ms": {
            "type": "number", "minimum": 10, "maximum": 60000,
            "description": "Milliseconds to wait for the upstream's answer to a resend request "
            "after a sequence gap, holding that source's later messages meanwhile; then the gap "
            "is counted lost and a snapshot is asked for. An upstream that no longer holds the "
            "range says so at once; this is for an answer that does not come (a relay that just "
            "restarted passes the request on to the producer and answers for it).",
        },
    }


def _input_schema() -> dict[str, Any]:
    upstream = {"type": "string", "pattern": NODE_NAME_PATTERN,
                "description": "Name of the upstream node."}
    return {
        "description": "An upstream node: its name, or a mapping with a filter and link policy.",
        "if": {"type": "string"},
        "then": upstream,
        "else": {
            "type": "object",
            "additionalProperties": False,
            "required": ["from"],
            "properties": {
                "from": upstream,
                "types": {
                    "type": "array", "minItems": 1, "uniqueItems": True,
                    "description": "Only these TLV types (subscription filter).",
                    "items": {"enum": [t.title for t in TLVType]},
                },
                "instruments": {
                    "type": "array", "minItems": 1, "uniqueItems": True,
                    "description": "Only these instruments, in short form "
                    "(coinbase:BTC-USD, stock:alpaca:AAPL, pool:polygon:0x…).",
                    "items": {"type": "string", "minLength": 3},
                },
                **_link_properties(),
            },
        },
    }


def _node_schema(kinds: Mapping[str, KindSpec]) -> dict[str, Any]:
    per_kind = []
    for name, spec in kinds.items():
        then: dict[str, Any] = {"properties": {"params": {"$ref": node_schema_file(name)}}}
        if spec.params_schema().get("required"):
            then["required"] = ["params"]
        per_kind.append({
            "if": {"properties": {"kind": {"const": name}}, "required": ["kind"]},
            "then": then,
        })
    per_kind.append({
        "if": {"properties": {"kind": {"const": "relay"}}, "required": ["kind"]},
        "then": {"required": ["domain"]},
    })
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["kind"],
        "properties": {
            "kind": {
                "description": "The node kind (`alphapulse kinds` lists them).",
                "enum": list(kinds),
            },
            "description": {"type": "string", "description": "What this node is for."},
            "inputs": {
                "type": "array",
                "description": "Upstream nodes this node subscribes to (not for sources).",
                "items": {"$ref": "#/$defs/input"},
            },
            "domain": {
                "enum": list(DOMAINS),
                "description": "Relay domain this relay routes (relays only).",
            },
            "params": {"type": "object", "description": "The kind's parameters."},
            "restart": {"$ref": "#/$defs/restart"},
            "breaker": {"$ref": "#/$defs/breaker"},
            "cpu": {"$ref": "#/$defs/cpu"},
            "retransmit_buffer": {"$ref": "#/$defs/retransmit_buffer"},
        },
        "allOf": per_kind,
    }


def topology_schema(kinds: Mapping[str, KindSpec] | None = None) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a topology file, for the given (default: all) kinds."""
    kinds = load_kinds() if kinds is None else kinds
    return {
        "$schema": DIALECT,
        "title": "AlphaPulse topology",
        "description": "A market-data pipeline: named nodes of registered kinds and the links "
        "between them. Generated by `alphapulse schema --write`; do not edit.",
        "type": "object",
        "additionalProperties": False,
        "required": ["topology", "nodes"],
        "properties": {
            "topology": {
                "type": "string", "pattern": TOPOLOGY_NAME_PATTERN, "maxLength": 32,
                "description": "Name of the topology: its run directory and supervisord group.",
            },
            "description": {"type": "string", "description": "What this topology is for."},
            "defaults": {
                "type": "object",
                "additionalProperties": False,
                "description": "Defaults applied to every node and input.",
                "properties": {
                    "restart": {"$ref": "#/$defs/restart"},
                    "breaker": {"$ref": "#/$defs/breaker"},
                    "cpu": {"$ref": "#/$defs/cpu"},
                    "retransmit_buffer": {"$ref": "#/$defs/retransmit_buffer"},
                    "link": {
                        "type": "object", "additionalProperties": False,
                        "description": "Default queue and overflow policy of every input.",
                        "properties": _link_properties(),
                    },
                },
            },
            "metrics": {
                "type": "object",
                "additionalProperties": False,
                "required": ["listen"],
                "description": "A Prometheus exporter of this topology's nodes (what `alphapulse metrics` "
                "serves), run by supervisord beside them as `<topology>:_metrics`.",
                "properties": {
                    "listen": {
                        "type": "string", "pattern": LISTEN_PATTERN,
                        "description": "HOST:PORT to serve /metrics on, e.g. 127.0.0.1:9464.",
                    },
                },
            },
            "reload": {
                "type": "object",
                "additionalProperties": False,
                "description": "Hot reload without a terminal: `apply` has supervisord run a watcher "
                "beside the nodes (`<topology>:_watch`) that applies every saved edit of this file, as "
                "`alphapulse apply --watch` does.",
                "properties": {
                    "watch": {
                        "type": "boolean", "default": False,
                        "description": "Run the watcher (true) or not (false, the default).",
                    },
                },
            },
            "nodes": {
                "type": "object",
                "minProperties": 1,
                "description": "The nodes, by name (lowercase letters, digits, '_').",
                "propertyNames": {"pattern": NODE_NAME_PATTERN, "maxLength": 40},
                "additionalProperties": {"$ref": "#/$defs/node"},
            },
        },
        "$defs": {
            "node": _node_schema(kinds),
            "input": _input_schema(),
            "restart": _restart_schema(),
            "breaker": _breaker_schema(),
            "cpu": _cpu_schema(),
            "retransmit_buffer": {
                "type": "integer", "minimum": 0, "default": RETRANSMIT_BUFFER_DEFAULT,
                "description": "Sources and transforms: how many of the messages it published most "
                "recently the node keeps to answer resend requests (reserved at start, 128 bytes a "
                "message). A relay that restarts asks its producers for what came meanwhile, so this "
                "is how long an outage of the relays downstream is recovered without loss: at 1,000 "
                "msgs/s the default keeps 16 s. A relay's own buffer is its params.retransmit_buffer.",
            },
        },
    }


def kind_schema(spec: KindSpec) -> dict[str, Any]:
    return spec.params_schema()


def generated_files(kinds: Mapping[str, KindSpec] | None = None) -> dict[str, str]:
    """Every schema file's relative path under ``schemas/`` and its exact text."""
    kinds = load_kinds() if kinds is None else kinds
    files = {TOPOLOGY_SCHEMA_FILE: _dump(topology_schema(kinds))}
    for name, spec in kinds.items():
        files[node_schema_file(name)] = _dump(kind_schema(spec))
    return files


def _dump(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def default_schema_dir() -> Path:
    """``schemas/`` at the repository root (next to ``alphapulse/`` and ``nodes/``)."""
    return Path(__file__).resolve().parents[2] / "schemas"


def stale_schema_files(directory: Path) -> list[str]:
    """Relative paths that differ from, are missing against, or are extra to the generated set."""
    expected = generated_files()
    stale = []
    for rel, text in expected.items():
        target = directory / rel
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(rel)
    nodes_dir = directory / "nodes"
    if nodes_dir.is_dir():
        for path in sorted(nodes_dir.glob("*.schema.json")):
            rel = f"nodes/{path.name}"
            if rel not in expected:
                stale.append(rel)
    return sorted(stale)


def write_schema_files(directory: Path) -> list[str]:
    """Write the generated schema files, delete those of kinds that no longer exist."""
    expected = generated_files()
    changed = stale_schema_files(directory)
    for rel in changed:
        target = directory / rel
        if rel in expected:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(expected[rel], encoding="utf-8")
        else:
            target.unlink()
    return changed


def topology_validator() -> jsonschema.Draft202012Validator:
    """A validator of the topology schema with every kind's schema resolvable by its file name.

    Built once per set of registered kinds: a kind registered later (a plugin, a test's own
    kind) gets a validator that knows it instead of a stale one.
    """
    kinds = load_kinds()
    key = tuple((name, id(spec)) for name, spec in kinds.items())
    cached = _VALIDATORS.get(key)
    if cached is None:
        _VALIDATORS.clear()
        cached = _VALIDATORS[key] = _build_validator(kinds)
    return cached


_VALIDATORS: dict[tuple[tuple[str, int], ...], jsonschema.Draft202012Validator] = {}


def _build_validator(kinds: Mapping[str, KindSpec]) -> jsonschema.Draft202012Validator:
    resources = [
        (node_schema_file(name), referencing.jsonschema.DRAFT202012.create_resource(
            kind_schema(spec)))
        for name, spec in kinds.items()
    ]
    registry = referencing.Registry().with_resources(resources)
    return jsonschema.Draft202012Validator(topology_schema(kinds), registry=registry)
