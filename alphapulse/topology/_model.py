"""The typed topology: what a validated file means, with references resolved.

Built by :func:`alphapulse.topology.load_topology`; the checks and the compiler read only this.
Every object keeps the JSON path it came from so later checks can point at the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from alphapulse.kinds import KindSpec, Role
from alphapulse.protocol import Instrument, RelayDomain, TLVType
from alphapulse.topology._loader import JsonPath, SourceMap


@dataclasses.dataclass(frozen=True)
class Link:
    """One input of a node: which upstream, what it lets through, and its queue policy."""

    node: str
    types: tuple[TLVType, ...] | None
    """TLV filter; None means everything the upstream publishes."""
    instruments: tuple[Instrument, ...] | None
    """Instrument filter; None means every instrument."""
    overflow: str
    queue: int
    path: JsonPath
    checksums: str = "auto"
    """``auto``: CRCs checked unless the upstream is a relay (it checked them); ``verify``: always."""
    linger_ms: float = 0.0
    """Milliseconds between reads, for messages to gather (0: read as soon as anything arrives)."""
    resend_timeout_ms: float = 1000.0
    """Milliseconds to wait for a resend's answer before a gap is counted lost."""


@dataclasses.dataclass(frozen=True)
class NodeDecl:
    """One node as declared, env resolved (secret params keep their ``${VAR}`` template)."""

    name: str
    kind: str
    spec: KindSpec | None
    inputs: tuple[Link, ...]
    params: Mapping[str, Any]
    """Params as written in the file (the kind's defaults are filled in by the compiler)."""
    secret_env: Mapping[str, str]
    """Secret param name -> the environment variable the node host reads it from."""
    domain: RelayDomain | None
    """The declared relay domain (relays only)."""
    restart: Mapping[str, Any]
    """The restart policy, defaults merged."""
    breaker: Mapping[str, Any]
    """Circuit-breaker thresholds, defaults merged."""
    cpu: Mapping[str, Any]
    """Scheduling policy, nice and affinity (``runtime._cpu``), defaults merged."""
    description: str
    path: JsonPath
    retransmit_buffer: int | None = None
    """Messages its publisher keeps for resend requests, when the file sets it (sources and
    transforms; a relay's is its ``params.retransmit_buffer``)."""

    @property
    def role(self) -> Role | None:
        return self.spec.role if self.spec else None


@dataclasses.dataclass(frozen=True)
class Topology:
    """A topology file that passed validation (warnings allowed)."""

    name: str
    description: str
    file: str
    """The path as the user gave it (for messages)."""
    path: str
    """The absolute path of the file."""
    run_dir: str
    """The run directory this topology would use (``<base>/<name>``)."""
    nodes: Mapping[str, NodeDecl]
    marks: SourceMap = dataclasses.field(repr=False, compare=False)
    metrics_listen: str | None = None
    """``HOST:PORT`` of the topology's Prometheus exporter (``metrics.listen``), when it has one."""
    watch: bool = False
    """``reload.watch``: supervisord runs a watcher that applies every saved edit of this file."""
    env: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    """The variables the file's non-secret values refer to, as they were when it was loaded
    (None: unset). Secret params keep their ``${VAR}``: their variables are not here."""

    def consumers(self, name: str) -> list[str]:
        """Nodes that take ``name`` as an input, in file order."""
        return [n.name for n in self.nodes.values() if any(i.node == name for i in n.inputs)]
