"""A supervisord RPC plugin: reconcile one process group node by node.

supervisord's own ``update`` treats a ``[group:x]`` as one unit: add or change one program and
it stops and restarts the whole group. AlphaPulse wants ``<topology>:<node>`` names *and*
per-node changes, so this plugin (loaded by supervisord from the ``[rpcinterface:alphapulse]``
section of our base config) re-reads the configuration and swaps only the processes whose
configuration changed, adds new ones (they start through supervisord's normal autostart) and
removes deleted ones. Processes being changed or removed must be stopped first; the caller does
that over the standard API, so each step stays visible and ordered.

It also counts process starts, which supervisord does not report, for ``alphapulse status``,
and holds the secrets ``apply`` hands it (:meth:`AlphaPulseNamespace.putSecrets`): in memory
only, never in a file, put into the environment of the node processes that need them. Without
that, a node's secret could only come from the environment supervisord started with, and a key
set or rotated later would reach no node until supervisord itself restarted.
This module runs inside supervisord; it imports only supervisor and the standard library.
"""

from __future__ import annotations

import os
from collections import Counter

from supervisor import events
from supervisor.states import STOPPED_STATES, ProcessStates
from supervisor.xmlrpc import Faults, RPCError

API_VERSION = "1.1"

LIVE_STATES = frozenset({ProcessStates.STARTING, ProcessStates.RUNNING, ProcessStates.BACKOFF})
"""states of a process that runs, or will run again without being asked, on its old environment"""


class AlphaPulseNamespace:
    def __init__(self, supervisord) -> None:
        self.supervisord = supervisord
        self.starts: Counter[str] = Counter()
        self.secret_values: dict[str, dict[str, str]] = {}  # group -> variable -> value
        self.secret_needs: dict[str, dict[str, list[str]]] = {}  # group -> process -> variables
        self.started_with: dict[tuple[str, str], dict[str, str]] = {}  # the environment each process last got
        events.subscribe(events.ProcessStateStartingEvent, self._count_start)
        self._inject_on_every_read(supervisord.options)

    def _inject_on_every_read(self, options) -> None:
        """Have every re-read of the configuration carry the held secrets: ours (``syncGroup``)
        and supervisord's own (``supervisorctl reread/update``), which would otherwise find a
        group holding secrets changed and restart all of it without them."""
        read = options.process_config

        def process_config(*args, **kwargs):
            result = read(*args, **kwargs)
            for group in options.process_group_configs:
                for config in group.process_configs:
                    self._inject(group.name, config)
            return result

        options.process_config = process_config

    def _count_start(self, event) -> None:
        process = event.process
        self.starts[f"{process.group.config.name}:{process.config.name}"] += 1
        self.started_with[(process.group.config.name, process.config.name)] = dict(process.config.environment or {})

    def getAPIVersion(self) -> str:
        """@return string version  version of this plugin's API"""
        return API_VERSION

    def getStartCounts(self) -> dict:
        """Process starts since supervisord started, by "group:name".

        @return struct counts
        """
        return dict(self.starts)

    def putSecrets(self, name: str, values: dict, needs: dict) -> dict:
        """Hold the secrets of group ``name`` and put them into its processes' environment.

        ``values`` are merged into those held (a variable not given keeps its held value, else
        supervisord's own); ``needs`` replaces which variables each process gets. Takes effect at
        each process's next start: the caller restarts the ones reported.

        @param string name  the process group (topology) name
        @param struct values  variable name -> value
        @param struct needs  process name -> list of the variable names it reads
        @return struct changed  process name -> variables whose value differs from those it runs
            with, for each process that runs (or retries) with the old ones
        """
        changed = self.secretChanges(name, values, needs)
        self.secret_values.setdefault(name, {}).update({str(k): str(v) for k, v in values.items()})
        self.secret_needs[name] = {str(p): [str(v) for v in vs] for p, vs in needs.items()}
        group = self.supervisord.process_groups.get(name)
        for process in (group.processes if group else {}).values():
            self._inject(name, process.config)
        return changed

    def secretChanges(self, name: str, values: dict, needs: dict) -> dict:
        """What :meth:`putSecrets` would answer, holding nothing (``apply --dry-run``).

        @param string name  the process group (topology) name
        @param struct values  variable name -> value
        @param struct needs  process name -> list of the variable names it reads
        @return struct changed  process name -> variables whose value would differ
        """
        held = {**self.secret_values.get(name, {}), **{str(k): str(v) for k, v in values.items()}}
        group = self.supervisord.process_groups.get(name)
        changed: dict[str, list[str]] = {}
        for process_name, process in (group.processes if group else {}).items():
            variables = [str(v) for v in needs.get(process_name, [])]
            if not variables or process.get_state() not in LIVE_STATES:
                continue
            configured = {**(process.config.environment or {}), **{v: held[v] for v in variables if v in held}}
            before = _effective(self.started_with.get((name, process_name)), variables)
            after = _effective(configured, variables)
            differ = sorted(v for v in variables if after[v] != before[v])
            if differ:
                changed[process_name] = differ
        return changed

    def _inject(self, group: str, config) -> None:
        """Give ``config`` (a process's) the held values of the variables it needs."""
        held = self.secret_values.get(group, {})
        wanted = {v: held[v] for v in self.secret_needs.get(group, {}).get(config.name, []) if v in held}
        if wanted:
            config.environment = {**(config.environment or {}), **wanted}

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
        new = next((g for g in options.process_group_configs if g.name == name), None)  # secrets held put in
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
            self.secret_values.pop(name, None)
            self.secret_needs.pop(name, None)
            for key in [k for k in self.started_with if k[0] == name]:
                del self.started_with[key]
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


def _effective(environment: dict | None, variables: list[str]) -> dict[str, str | None]:
    """What a process started now would see of ``variables``: its configured environment
    first, else supervisord's own (which every child inherits)."""
    environment = environment or {}
    return {v: environment.get(v, os.environ.get(v)) for v in variables}


def make_interface(supervisord, **config) -> AlphaPulseNamespace:
    return AlphaPulseNamespace(supervisord)
