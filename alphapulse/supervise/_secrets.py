"""Secrets from ``apply``'s environment to the nodes that read them, through supervisord.

Secrets are not in the plan (only the variables' names, ``secret_env``), so no fingerprint sees
a new value. ``apply`` therefore hands the values its environment has for the plan's secret
variables to our supervisord plugin (``putSecrets``), which holds them in memory, never in a
file, puts them into the environment of the node processes that read them, and answers which
running nodes started with other values: ``apply`` restarts those. So setting or rotating a key
and applying again reaches the nodes, as an edit of the file would; an apply without the
variable keeps what supervisord holds.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Mapping
from typing import Any

from alphapulse.supervise._supervisor import Supervisor

UNKNOWN_METHOD = 1
"""supervisord's fault code for a method it does not have (``supervisor.xmlrpc.Faults``)"""


def secret_needs(plan: dict[str, Any]) -> dict[str, list[str]]:
    """The secret variables each node reads (its ``secret_env``), for the nodes that read any."""
    return {node: sorted(set(entry["secret_env"].values()))
            for node, entry in plan["nodes"].items() if entry.get("secret_env")}


def secret_changes(plan: dict[str, Any], sup: Supervisor, environ: Mapping[str, str], notes: list[str],
                   *, hand_over: bool = True) -> set[str]:
    """Give supervisord the secrets ``environ`` has for the plan's nodes (``hand_over``; else only
    ask what giving them would change); the nodes running on other values, which must restart to
    read the new ones. What a person should know goes into ``notes``."""
    needs = secret_needs(plan)
    values = {v: environ[v] for vs in needs.values() for v in vs if v in environ}
    try:
        ask = sup.plugin.putSecrets if hand_over else sup.plugin.secretChanges
        changed = ask(plan["topology"], values, needs)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode != UNKNOWN_METHOD:
            raise
        if values:
            notes.append("supervisord was started by an older AlphaPulse and cannot take secrets: "
                                "nodes read them from its environment (`alphapulse down` and apply again)")
        return set()
    verb = "restarted" if hand_over else "would restart"
    notes.extend(f"{node} {verb}: a new value of {', '.join(variables)}"
                        for node, variables in sorted(changed.items()))
    return set(changed)
