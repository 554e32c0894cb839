"""Graph checks over a (leniently built) topology, each finding pointing into the file.

Like Vector's ``compile``: names, shape, types, cycles and resources are all checked in one
pass and every problem is reported. What a node publishes is computed once
(:func:`emitted_types`): a source or transform publishes what its kind declares, a relay what
its inputs let through, restricted to its domain and the system types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from alphapulse.kinds import Role
from alphapulse.protocol import RelayDomain, TLVDomain, TLVType, relay_domain_for
from alphapulse.topology._diagnostics import Diagnostic, Severity
from alphapulse.topology._explain import did_you_mean
from alphapulse.topology._loader import JsonPath
from alphapulse.topology._model import Link, NodeDecl, Topology
from alphapulse.topology._rundir import MAX_SOCKET_PATH, control_socket, data_socket

Emitted = frozenset[TLVType] | None


def is_system(tlv: TLVType) -> bool:
    return tlv.domain is TLVDomain.SYSTEM


def domain_types(domain: RelayDomain) -> frozenset[TLVType]:
    """What a relay of ``domain`` carries: the domain's own types plus the system types."""
    return frozenset(t for t in TLVType if relay_domain_for(t) is domain or is_system(t))


def titles(types: Iterable[TLVType]) -> str:
    return ", ".join(t.title for t in sorted(types))


def link_flow(link: Link, upstream: Emitted) -> Emitted:
    """What actually crosses one input: the upstream's types, narrowed by the link's filter."""
    if upstream is None:
        return frozenset(link.types) if link.types is not None else None
    return upstream if link.types is None else upstream & frozenset(link.types)


def emitted_types(nodes: Mapping[str, NodeDecl]) -> dict[str, Emitted]:
    """Per node, the TLV types it can publish (None when unknown, e.g. an unknown kind)."""
    result: dict[str, Emitted] = {}
    relays = []
    for name, node in nodes.items():
        if node.spec is None:
            result[name] = None
        elif node.spec.role is Role.RELAY:
            result[name] = frozenset()
            relays.append(name)
        else:
            result[name] = node.spec.emits or frozenset()
    changed = True
    while changed:  # relays feeding relays (even in a cycle): iterate to the fixpoint
        changed = False
        for name in relays:
            node = nodes[name]
            allowed = domain_types(node.domain) if node.domain else frozenset(TLVType)
            total: Emitted = frozenset()
            for link in node.inputs:
                if link.node not in nodes:
                    continue
                flow = link_flow(link, result[link.node])
                total = None if flow is None or total is None else total | (flow & allowed)
            if total != result[name]:
                result[name] = total
                changed = True
    return result


def node_relay_domain(node: NodeDecl) -> RelayDomain:
    """A relay's declared domain; otherwise the domain of what the node emits (market data
    when it emits nothing, like a sink)."""
    if node.domain is not None:
        return node.domain
    emits = sorted(t for t in (node.spec.emits if node.spec else None) or () if not is_system(t))
    return relay_domain_for(emits[0]) if emits else RelayDomain.MARKET_DATA


class _Checker:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.nodes = topology.nodes
        self.marks = topology.marks
        self.out: list[Diagnostic] = []
        self.emitted = emitted_types(self.nodes)

    def report(self, path: JsonPath, message: str, code: str, *, key: bool = False,
               severity: Severity = Severity.ERROR) -> None:
        mark = self.marks.key(path) if key else self.marks.value(path)
        self.out.append(Diagnostic(severity, self.topology.file, mark.line, mark.col, message,
                                   code))

    def name_path(self, link: Link) -> JsonPath:
        """Where the upstream's name is written: the input item itself, or its 'from:'."""
        if (*link.path, "from") in self.marks.values:
            return (*link.path, "from")
        return link.path

    def run(self) -> list[Diagnostic]:
        for node in self.nodes.values():
            self.check_inputs(node)
        self.check_cycles()
        self.check_orphans()
        return self.out

    def check_inputs(self, node: NodeDecl) -> None:
        role = node.role
        if role is Role.SOURCE and node.inputs:
            self.report((*node.path, "inputs"),
                        f"node '{node.name}' is a source ({node.kind}) and cannot have inputs: "
                        "sources bring data in from outside; remove 'inputs', or use a transform "
                        "or sink kind to consume other nodes", "source-inputs", key=True)
        seen: set[str] = set()
        for link in node.inputs:
            where = self.name_path(link)
            up = self.nodes.get(link.node)
            if up is None:
                hint = did_you_mean(link.node, [n for n in self.nodes if n != node.name])
                self.report(where, f"node '{node.name}' takes input from '{link.node}', but "
                            f"there is no node '{link.node}'{hint}", "unknown-input")
                continue
            if link.node in seen:
                self.report(where, f"node '{node.name}' lists input '{link.node}' twice; it would "
                            "receive every message twice: merge the two entries", "duplicate-input")
            seen.add(link.node)
            if up.role is Role.SINK:
                feeders = ", ".join(f"'{i.node}'" for i in up.inputs) or "its upstream"
                self.report(where, f"node '{node.name}' takes input from '{link.node}', but "
                            f"'{link.node}' is a sink ({up.kind}) and publishes nothing; take the "
                            f"input from {feeders} instead", "sink-output")
                continue
            if role is Role.SOURCE:
                continue
            self.check_types(node, link, up)

    def check_types(self, node: NodeDecl, link: Link, up: NodeDecl) -> None:
        upstream = self.emitted.get(link.node)
        if upstream is not None and link.types is not None:
            for j, tlv in enumerate(link.types):
                if tlv not in upstream:
                    carries = titles(upstream) or "nothing"
                    verb = "carries" if up.role is Role.RELAY else "publishes"
                    self.report((*link.path, "types", j),
                                f"node '{node.name}' subscribes to {tlv.title} from '{link.node}', "
                                f"which never publishes it ('{link.node}' {verb} {carries}); "
                                f"remove {tlv.title} from 'types' or take it from a node that "
                                "emits it", "type-mismatch")
        accepts = node.spec.accepts if node.spec else None
        flow = link_flow(link, upstream)
        if accepts is not None and link.types is not None:
            for j, tlv in enumerate(link.types):
                if tlv not in accepts and not is_system(tlv):
                    self.report((*link.path, "types", j),
                                f"node '{node.name}' ({node.kind}) does not accept {tlv.title}; it "
                                f"accepts {titles(accepts)}", "type-mismatch")
        elif accepts is not None and flow is not None:
            useful = {t for t in flow if not is_system(t)}
            if useful and not useful & accepts:
                self.report(self.name_path(link),
                            f"node '{node.name}' ({node.kind}) accepts {titles(accepts)}, but "
                            f"'{link.node}' publishes only {titles(useful)}: nothing it could use "
                            "would arrive; connect it to a node that emits what it accepts",
                            "type-mismatch")
        if node.role is Role.RELAY and node.domain is not None and flow is not None:
            outside = sorted(t for t in flow if not is_system(t)
                             and relay_domain_for(t) is not node.domain)
            if outside:
                domains = sorted({relay_domain_for(t).name.lower() for t in outside})
                self.report(self.name_path(link),
                            f"relay '{node.name}' routes the {node.domain.name.lower()} domain, "
                            f"but "
                            f"input '{link.node}' publishes {titles(outside)} "
                            f"({', '.join(domains)} domain); send it to a relay of that domain, or "
                            "filter this input with 'types:'", "domain-mismatch")

    def check_cycles(self) -> None:
        order = list(self.nodes)
        consumers: dict[str, list[tuple[str, Link]]] = {n: [] for n in order}
        for node in self.nodes.values():
            for link in node.inputs:
                if link.node in consumers:
                    consumers[link.node].append((node.name, link))
        reported: set[frozenset[str]] = set()
        for start in order:
            cycle = self._cycle_from(start, consumers)
            if cycle is None or frozenset(cycle) in reported:
                continue
            reported.add(frozenset(cycle))
            last = cycle[-2]
            closing = next(link for link in self.nodes[start].inputs if link.node == last)
            loop = " → ".join(cycle)
            self.report(self.name_path(closing),
                        f"inputs form a cycle: {loop} (data would circle forever); remove one of "
                        "these inputs", "cycle")

    def _cycle_from(self, start: str, consumers: Mapping[str, list[tuple[str, Link]]]
                    ) -> list[str] | None:
        """The shortest data-flow cycle start → … → start, or None."""
        parents: dict[str, str] = {}
        frontier = [start]
        while frontier:
            following = []
            for current in frontier:
                for nxt, _ in consumers[current]:
                    if nxt == start:
                        path = [current]
                        while path[-1] != start:
                            path.append(parents[path[-1]])
                        return [*reversed(path), start]
                    if nxt not in parents:
                        parents[nxt] = current
                        following.append(nxt)
            frontier = following
        return None

    def check_orphans(self) -> None:
        consumed = {link.node for node in self.nodes.values() for link in node.inputs}
        for node in self.nodes.values():
            if node.role is None:
                continue
            if node.role is not Role.SOURCE and not node.inputs:
                self.report(node.path, f"node '{node.name}' ({node.kind}) has no inputs, so it "
                            "will never receive anything; add 'inputs:' or remove the node",
                            "orphan", key=True, severity=Severity.WARNING)
            elif node.role is not Role.SINK and node.name not in consumed:
                self.report(node.path, f"nothing consumes node '{node.name}' ({node.kind}); its "
                            "output goes nowhere: add it to some node's 'inputs' or remove it",
                            "orphan", key=True, severity=Severity.WARNING)


def graph_diagnostics(topology: Topology) -> list[Diagnostic]:
    """Inputs, roles, types, domains, cycles and orphans."""
    return _Checker(topology).run()


def socket_diagnostics(topology: Topology) -> list[Diagnostic]:
    """Socket paths that would not fit a Unix socket address."""
    out = []
    for node in topology.nodes.values():
        longest = max((data_socket(topology.run_dir, node.name),
                       control_socket(topology.run_dir, node.name)), key=lambda p: len(p.encode()))
        size = len(longest.encode())
        if size > MAX_SOCKET_PATH:
            mark = topology.marks.key(node.path)
            out.append(Diagnostic(
                Severity.ERROR, topology.file, mark.line, mark.col,
                f"node '{node.name}' would listen on {longest}, which is {size} bytes: over the "
                f"{MAX_SOCKET_PATH}-byte limit of Unix socket paths; shorten the node or topology "
                "name, or use a shorter run directory (--run-dir or ALPHAPULSE_RUN_DIR)",
                "socket-path"))
    return out
