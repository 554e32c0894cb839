"""A supervisord RPC plugin: reconcile one process group node by node.

supervisord's own ``update`` treats a ``[group:x]`` as one unit: add or change one program and
it stops and restarts the whole group. AlphaPulse wants ``<topology>:<node>`` names *and*
per-node changes, so this plugin (loaded by supervisord from the ``[rpcinterface:alphapulse]``
section of our base config) re-reads the configuration and swaps only the processes whose
configuration changed, adds new ones (they start through supervisord's normal autostart) and
removes deleted ones. Processes being changed or removed must be stopped first; the caller does
that over the standard API, so each step stays visible and ordered.

It also counts process starts, which supervisord does not report, for ``alphapulse status``.
This module runs inside supervisord; it imports only supervisor and the standard library.
"""

from __future__ import annotations

from collections import Counter

from supervisor import events
from supervisor.states import STOPPED_STATES
from supervisor.xmlrpc import Faults, RPCError

API_VERSION = "1.0"


class AlphaPulseNamespace:
    def __init__(self, supervisord) -> None:
        self.supervisord = supervisord
        self.starts: Counter[str] = Counter()
        events.subscribe(events.ProcessStateStartingEvent, self._count_start)

    def _count_start(self, event) -> None:
        process = event.process
        self.starts[f"{process.group.config.name}:{process.config.name}"] += 1

    def getAPIVersion(self) -> str:
        """@return string version  version of this plugin's API"""
        return API_VERSION

    def getStartCounts(self) -> dict:
        """Process starts since supervisord started, by "group:name".

        @return struct counts
        """
        return dict(self.starts)

    def syncGroup(self, name: str) -> dict:
        """Re-read the configuration and apply it to group ``name``, process by process.

        @param string name  the process group (topology) name
        @return struct result  lists "added", "removed", "changed"; "group" is created/updated/removed
        """
        options = self.supervisord.options
        try:
            options.process_config(do_usage=False)
        except ValueError as exc:
            raise RPCError(Faults.CANT_REREAD, str(exc)) from None
        new = next((g for g in options.process_group_configs if g.name == name), None)
        running = self.supervisord.process_groups.get(name)
        if new is None and running is None:
            raise RPCError(Faults.BAD_NAME, name)
        if running is None:
            self.supervisord.add_process_group(new)
            return {"group": "created", "added": sorted(c.name for c in new.process_configs),
                    "removed": [], "changed": []}
        if new is None:
            if not self.supervisord.remove_process_group(name):
                raise RPCError(Faults.STILL_RUNNING, name)
            return {"group": "removed", "added": [], "removed": sorted(running.processes), "changed": []}
        old_configs = {c.name: c for c in running.config.process_configs}
        new_configs = {c.name: c for c in new.process_configs}
        removed = sorted(set(old_configs) - set(new_configs))
        added = sorted(set(new_configs) - set(old_configs))
        changed = sorted(n for n in set(old_configs) & set(new_configs) if old_configs[n] != new_configs[n])
        for process_name in removed + changed:
            if running.processes[process_name].get_state() not in STOPPED_STATES:
                raise RPCError(Faults.STILL_RUNNING, f"{name}:{process_name}")
        for process_name in removed:
            running.processes.pop(process_name).removelogs()
        for process_name in changed + added:
            config = new_configs[process_name]
            config.create_autochildlogs()
            running.processes[process_name] = config.make_process(running)
        running.config = new
        return {"group": "updated", "added": added, "removed": removed, "changed": changed}


def make_interface(supervisord, **config) -> AlphaPulseNamespace:
    return AlphaPulseNamespace(supervisord)
