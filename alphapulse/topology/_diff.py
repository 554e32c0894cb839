"""What ``apply`` must do to go from one plan to the next, decided by fingerprints alone.

As Vector's config diff: a node is added, removed, restarted (its restart fingerprint changed),
reconfigured live (only its live fingerprint changed) or left alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from alphapulse.topology._compile import Plan


@dataclasses.dataclass(frozen=True)
class PlanDiff:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    restart: tuple[str, ...]
    reconfigure: tuple[str, ...]
    unchanged: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.restart or self.reconfigure)

    def to_dict(self) -> dict[str, list[str]]:
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _nodes(plan: Plan | Mapping[str, Any] | None) -> Mapping[str, Mapping[str, Any]]:
    if plan is None:
        return {}
    data = plan.data if isinstance(plan, Plan) else plan
    return data["nodes"]


def diff_plans(old: Plan | Mapping[str, Any] | None, new: Plan | Mapping[str, Any]) -> PlanDiff:
    """Sort every node into exactly one bucket; ``old`` None means nothing runs yet."""
    before, after = _nodes(old), _nodes(new)
    added, removed, restart, reconfigure, unchanged = [], [], [], [], []
    for name in sorted(set(before) | set(after)):
        if name not in before:
            added.append(name)
        elif name not in after:
            removed.append(name)
        else:
            was, now = before[name]["fingerprint"], after[name]["fingerprint"]
            if was["restart"] != now["restart"]:
                restart.append(name)
            elif was["live"] != now["live"]:
                reconfigure.append(name)
            else:
                unchanged.append(name)
    return PlanDiff(tuple(added), tuple(removed), tuple(restart), tuple(reconfigure),
                    tuple(unchanged))


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two plan entries of one node, for a person: ``params.NAME`` per
    parameter, else the entry's key (``inputs``, ``restart``, ``cpu``, ...)."""
    changed = []
    for key in sorted((set(old) | set(new)) - {"fingerprint"}):
        was, now = old.get(key), new.get(key)
        if was == now:
            continue
        if key == "params" and isinstance(was, Mapping) and isinstance(now, Mapping):
            changed.extend(f"params.{name}" for name in sorted(set(was) | set(now)) if was.get(name) != now.get(name))
        else:
            changed.append(key)
    return changed
