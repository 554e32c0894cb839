"""Draw a topology as Graphviz dot or Mermaid: nodes grouped and shaped by role, edges labelled
with what flows over them (the filter, or what the upstream publishes; a relay's domain)."""

from __future__ import annotations

from alphapulse.kinds import Role
from alphapulse.topology._checks import emitted_types, is_system, link_flow
from alphapulse.topology._model import Link, Topology

_ROLES = (Role.SOURCE, Role.TRANSFORM, Role.RELAY, Role.SINK)
_DOT_SHAPES = {
    Role.SOURCE: "invhouse",
    Role.TRANSFORM: "box",
    Role.RELAY: "hexagon",
    Role.SINK: "cylinder",
}
_MERMAID_SHAPES = {
    Role.SOURCE: ("([", "])"),
    Role.TRANSFORM: ("[", "]"),
    Role.RELAY: ("{{", "}}"),
    Role.SINK: ("[(", ")]"),
}


def edge_label(topology: Topology, link: Link, emitted: dict) -> str:
    up = topology.nodes.get(link.node)
    flow = link_flow(link, emitted.get(link.node))
    parts = []
    if up is not None and up.role is Role.RELAY and up.domain is not None and link.types is None:
        parts.append(up.domain.name.lower())
    elif flow is not None:
        shown = sorted(t for t in flow if not is_system(t))
        parts.append(", ".join(t.title for t in shown))
    if link.instruments:
        parts.append(", ".join(i.short for i in link.instruments))
    return " | ".join(p for p in parts if p)


def _by_role(topology: Topology) -> dict[Role, list[str]]:
    groups: dict[Role, list[str]] = {role: [] for role in _ROLES}
    for name, node in topology.nodes.items():
        groups[node.role or Role.TRANSFORM].append(name)
    return groups


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(topology: Topology) -> str:
    emitted = emitted_types(topology.nodes)
    lines = [f"digraph {_q(topology.name)} {{", "  rankdir=LR;",
             '  node [fontname="Helvetica"]; edge [fontname="Helvetica", fontsize=10];']
    for role, names in _by_role(topology).items():
        if not names:
            continue
        lines.append(f"  subgraph cluster_{role.value} {{")
        lines.append(f'    label={_q(role.value + "s")}; style=dashed; color=gray;')
        for name in names:
            node = topology.nodes[name]
            label = f"{name}\\n{node.kind}"
            if node.domain is not None:
                label += f" ({node.domain.name.lower()})"
            lines.append(f"    {_q(name)} [shape={_DOT_SHAPES[role]}, label={_q(label)}];")
        lines.append("  }")
    for node in topology.nodes.values():
        for link in node.inputs:
            label = edge_label(topology, link, emitted)
            attrs = f" [label={_q(label)}]" if label else ""
            lines.append(f"  {_q(link.node)} -> {_q(node.name)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_mermaid(topology: Topology) -> str:
    emitted = emitted_types(topology.nodes)
    lines = ["flowchart LR"]
    for role, names in _by_role(topology).items():
        if not names:
            continue
        lines.append(f"  subgraph {role.value}s")
        for name in names:
            node = topology.nodes[name]
            left, right = _MERMAID_SHAPES[role]
            lines.append(f'    {name}{left}"{name}<br/>{node.kind}"{right}')
        lines.append("  end")
    for node in topology.nodes.values():
        for link in node.inputs:
            label = edge_label(topology, link, emitted).replace('"', "'")
            arrow = f'-->|"{label}"|' if label else "-->"
            lines.append(f"  {link.node} {arrow} {node.name}")
    return "\n".join(lines) + "\n"
