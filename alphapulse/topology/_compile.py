"""Compile a checked topology into a plan: everything the runtime needs, all references resolved.

The plan is plain JSON (format 1, documented in docs/topology.md) so the node host and
``apply`` read it without the topology code. It is deterministic: the same file compiles to
byte-identical JSON. Per node it carries a ``restart`` fingerprint (everything that needs a
process restart when it changes) and a ``live`` fingerprint (params a running node can take, and
its ``cpu`` block).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from alphapulse.kinds import Role, build_params, live_fields, params_to_plain
from alphapulse.topology._checks import node_relay_domain
from alphapulse.topology._model import NodeDecl, Topology
from alphapulse.topology._rundir import control_socket, data_socket, log_dir, plan_path
from alphapulse.topology._schema import CPU_DEFAULTS, LINK_DEFAULTS

PLAN_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Plan:
    """A compiled topology. ``data`` is the JSON document; accessors read it."""

    data: Mapping[str, Any]

    @property
    def topology(self) -> str:
        return self.data["topology"]

    @property
    def run_dir(self) -> str:
        return self.data["run_dir"]

    @property
    def nodes(self) -> Mapping[str, Mapping[str, Any]]:
        return self.data["nodes"]

    @property
    def metrics(self) -> Mapping[str, Any] | None:
        """The topology's Prometheus exporter (``listen``, ``argv``), when it declares one."""
        return self.data.get("metrics")

    @property
    def watch(self) -> Mapping[str, Any] | None:
        """The file watcher's command (``reload.watch``), when the topology has one."""
        return self.data.get("watch")

    @property
    def plan_file(self) -> str:
        return plan_path(self.run_dir)

    def to_json(self) -> str:
        """The canonical text: sorted keys, two-space indent, trailing newline."""
        return json.dumps(self.data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"plan format {data.get('format')!r} is not {PLAN_FORMAT}")
        return cls(data)


def fold_source_id(name: str, attempt: int = 0) -> int:
    """A u16 in 1..65535 from the node name alone, so adding a node never moves another's id."""
    text = name if attempt == 0 else f"{name}#{attempt}"
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little") % 65535 + 1


def assign_source_ids(names: Iterable[str]) -> dict[str, int]:
    """Source ids for every node; a (rare) collision is resolved by re-hashing the name that
    sorts later with ``#1``, ``#2``… so the result does not depend on file order."""
    taken: dict[int, str] = {}
    result: dict[str, int] = {}
    for name in sorted(names):
        attempt = 0
        candidate = fold_source_id(name)
        while candidate in taken:
            attempt += 1
            candidate = fold_source_id(name, attempt)
        taken[candidate] = name
        result[name] = candidate
    return result


def fingerprint(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def full_params(node: NodeDecl) -> dict[str, Any]:
    """The node's params with the kind's defaults filled in, as plain JSON values."""
    if node.spec is None:
        return dict(node.params)
    return params_to_plain(build_params(node.spec.params_type, node.params))


def _is_relay(node: NodeDecl) -> bool:
    """A relay checks the CRC of every frame it forwards (and builds its placeholders itself), so
    its subscribers need not check them again: that pass was a quarter of a subscriber's CPU."""
    return node.spec is not None and node.spec.role is Role.RELAY


def compile_plan(topology: Topology, run_dir: str | None = None,
                 *, python: str | None = None) -> Plan:
    """The plan of a checked topology. ``run_dir`` overrides the topology's run directory
    (the final directory, not a base); ``python`` overrides ``sys.executable`` in argv."""
    run_dir = os.path.abspath(run_dir or topology.run_dir)
    python = python or sys.executable
    ids = assign_source_ids(topology.nodes)
    plan_file = plan_path(run_dir)
    nodes: dict[str, Any] = {}
    for name, node in topology.nodes.items():
        assert node.spec is not None, "compile_plan needs a topology without errors"
        params = full_params(node)
        live = live_fields(node.spec.params_type)
        inputs = [
            {
                "node": link.node,
                "socket": data_socket(run_dir, link.node),
                "types": sorted(int(t) for t in link.types) if link.types is not None else None,
                "instruments": sorted(i.id for i in link.instruments)
                if link.instruments is not None else None,
                "overflow": link.overflow,
                "queue": link.queue,
                "verify_checksums": link.checksums == "verify" or not _is_relay(topology.nodes[link.node]),
                **({"linger_ms": link.linger_ms} if link.linger_ms else {}),
                **({"resend_timeout_ms": link.resend_timeout_ms}
                   if link.resend_timeout_ms != LINK_DEFAULTS["resend_timeout_ms"] else {}),
            }
            for link in node.inputs
        ]
        entry = {
            "kind": node.kind,
            "module": node.spec.module,
            "role": node.spec.role.value,
            "source_id": ids[name],
            "relay_domain": int(node_relay_domain(node)),
            "argv": [python, "-m", "alphapulse", "node", "--plan", plan_file, name],
            "sockets": {
                "data": data_socket(run_dir, name),
                "control": control_socket(run_dir, name),
            },
            "inputs": inputs,
            "params": params,
            "secret_env": dict(node.secret_env),
            "restart": dict(node.restart),
            "breaker": dict(node.breaker),
            "cpu": dict(node.cpu),
        }
        if node.retransmit_buffer is not None:  # absent, the host keeps its default (and fingerprints stay)
            entry["retransmit_buffer"] = node.retransmit_buffer
        restart_part = {k: v for k, v in entry.items() if k not in ("params", "cpu")}
        restart_part["params"] = {k: v for k, v in params.items() if k not in live}
        live_part: dict[str, Any] = {k: v for k, v in params.items() if k in live}
        if node.cpu != CPU_DEFAULTS:  # the node applies its cpu block live; absent, fingerprints stay as they were
            live_part = {"params": live_part, "cpu": dict(node.cpu)}
        entry["fingerprint"] = {
            "restart": fingerprint(restart_part),
            "live": fingerprint(live_part),
        }
        nodes[name] = entry
    data: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "topology": topology.name,
        "source_file": topology.path,
        "workdir": os.path.dirname(topology.path),
        "run_dir": run_dir,
        "log_dir": log_dir(run_dir),
        "nodes": nodes,
    }
    if topology.watch:
        data["watch"] = {
            "file": topology.path,
            # what the file was resolved with: the watcher resolves edits the same way, not with
            # whatever environment supervisord happened to start with
            "env": dict(topology.env),
            "argv": [python, "-m", "alphapulse", "apply", topology.path, "--supervised", topology.name,
                     "--run-dir", os.path.dirname(run_dir)],
        }
    if topology.metrics_listen is not None:
        data["metrics"] = {
            "listen": topology.metrics_listen,
            "argv": [python, "-m", "alphapulse", "metrics", "--topology", topology.name,
                     "--run-dir", os.path.dirname(run_dir), "--listen", topology.metrics_listen],
        }
    return Plan(data)
