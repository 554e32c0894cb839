"""``apply``: make the running system match a topology file, touching only what changed.

Vector's reload, with supervisord underneath: validate and compile completely before touching
anything (a bad file changes nothing), diff the new plan against the applied one by
fingerprint, then act per node — stop what is removed or must restart, swap the group's
process table (our supervisord plugin), start what is new or restarted, and push parameter-only
changes to running nodes over their control sockets. Applying the same file twice does nothing
the second time.

Secrets are not in the plan, so no fingerprint sees them: ``apply`` hands them to supervisord
and restarts the nodes whose secret changed (``_secrets``). Nor is the code: ``apply`` restarts
the nodes that say the module files they loaded changed since they started (``_codechanges``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import socket
import time
import xmlrpc.client
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from alphapulse import topology
from alphapulse.runtime import ControlError, request
from alphapulse.runtime._crashloop import WAITING, RunRecord, fails_alike, forget, read_record
from alphapulse.supervise._codechanges import code_changes
from alphapulse.supervise._secrets import secret_changes
from alphapulse.supervise._status import CRASH_LOOP
from alphapulse.supervise._supervisor import RunBase, Supervisor, write_atomically
from alphapulse.supervise._watch import outcome_file
from alphapulse.topology import METRICS_PROCESS, WATCH_PROCESS, state_file

log = logging.getLogger("alphapulse.apply")
RECONFIGURE_TIMEOUT = 10.0
STARTING_NODE_TIMEOUT = 180.0
"""how long a live update waits for a node that is alive but not yet answering (loading or, on a
fresh install, compiling its kernels) before it restarts the node instead"""


@dataclasses.dataclass
class ApplyReport:
    topology: str
    started_supervisord: bool = False
    added: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    restarted: list[str] = dataclasses.field(default_factory=list)
    reconfigured: list[str] = dataclasses.field(default_factory=list)
    started: list[str] = dataclasses.field(default_factory=list)
    """nodes supervisord had given up on (FATAL), started again as the file declares them"""
    left_stopped: list[str] = dataclasses.field(default_factory=list)
    """nodes someone stopped (``supervisorctl stop``): apply leaves them so, and does not wait for them"""
    unchanged: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    """what a node reported about a live update it could only partly take (its ``cpu`` block)"""
    companions: dict[str, str] = dataclasses.field(default_factory=dict)
    """what became of the programs beside the nodes, by label (``exporter``, ``watcher``):
    added, restarted, started or removed (absent: unchanged)"""

    @property
    def changed_anything(self) -> bool:
        return bool(self.added or self.removed or self.restarted or self.reconfigured or self.started
                    or self.companions)

    def lines(self) -> list[str]:
        out = []
        if self.started_supervisord:
            out.append("started supervisord")
        for verb in ("added", "removed", "restarted", "reconfigured", "started", "unchanged", "failed"):
            names = getattr(self, verb)
            if names:
                out.append(f"{verb:<12} {', '.join(names)}")
        out.extend(f"{label:<12} {change}" for label, change in self.companions.items())
        if not self.changed_anything and not self.failed:
            out.append(f"topology {self.topology} is up to date; nothing to do")
        out.extend(f"warning: {note}" for note in self.notes)
        return out


class ApplyError(RuntimeError):
    """The topology is invalid (diagnostics attached) or the system could not be changed."""

    def __init__(self, message: str, diagnostics: list[Any] | None = None) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics or []


def compile_file(path: Path, base: RunBase) -> tuple[dict[str, Any], list[Any]]:
    """Validate and compile: the plan and the warnings. Raises ApplyError carrying every
    diagnostic when the file has an error; nothing has been touched then."""
    loaded, diagnostics = topology.load_topology(str(path), run_dir=str(base.path))
    if loaded is None or topology.has_errors(diagnostics):
        errors = sum(1 for d in diagnostics if d.is_error)
        raise ApplyError(f"{path}: {errors} error(s); nothing was changed", diagnostics)
    plan = json.loads(topology.compile_plan(loaded).to_json())
    return plan, diagnostics


def load_applied_plan(base: RunBase, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(base.plan_file(name).read_text())
    except FileNotFoundError:
        return None


def apply_plan(plan: dict[str, Any], base: RunBase, give_up: Callable[[], bool] = lambda: False,
               environ: Mapping[str, str] | None = os.environ) -> ApplyReport:
    """Make the running topology match ``plan`` (see the module's docstring). One apply of a
    topology at a time: this waits for another to finish, unless ``give_up()`` says to stop
    waiting (ApplyError then; nothing was touched). The secret variables set in ``environ``
    are handed to supervisord; None hands none (the watcher: its environment is supervisord's,
    older than what a person's apply handed over) and keeps those held."""
    name = plan["topology"]
    report = ApplyReport(name)
    report.notes.extend(renamed_notes(plan, base))
    sup = Supervisor(base)
    report.started_supervisord = sup.ensure_running()
    with applying(base.topology_dir(name), give_up):
        _reconcile(plan, base, sup, report, environ or {})
    return report


def renamed_notes(plan: dict[str, Any], base: RunBase) -> list[str]:
    """A warning for each other topology applied from the same file: the file was renamed since
    (a new name is a new topology), and the old one still runs, on the same ports and paths."""
    source = plan.get("source_file")
    others = [n for n in base.applied_topologies()
              if n != plan["topology"] and (load_applied_plan(base, n) or {}).get("source_file") == source]
    return [f"{source} was applied before as topology {other!r}, which still runs beside {plan['topology']!r} "
            f"(a renamed topology is a new one): `alphapulse down {other}` stops it" for other in others]


@dataclasses.dataclass(frozen=True)
class Changes:
    """What an apply does to a running topology, decided before anything is touched."""

    diff: topology.PlanDiff
    restart: tuple[str, ...]
    """stopped (if running) and started afresh: new wiring, a new secret, changed code, or lost
    by supervisord"""
    revive: tuple[str, ...]
    """kept nodes supervisord gave up on (FATAL): started again, as the file says they run"""
    reconfigure: tuple[str, ...]
    """running nodes that take their new live params (and cpu block) over the control socket"""
    left_stopped: tuple[str, ...]
    """kept nodes someone stopped by hand: left so"""
    companions: dict[str, str]
    """label (exporter, watcher) -> added, restarted, started or removed"""

    @property
    def unchanged(self) -> list[str]:
        return sorted(n for n in self.diff.unchanged if n not in self.restart and n not in self.revive)


def decide(old: dict[str, Any] | None, plan: dict[str, Any], running: dict[str, dict[str, Any]],
           rekeyed: Collection[str] = (), recoded: Collection[str] = ()) -> Changes:
    """Sans-IO: the applied plan, the new one, supervisord's processes of the group, the nodes
    whose secret changed and those whose code changed -> what to do. ``apply`` does it; ``apply
    --dry-run`` prints it."""
    diff = topology.diff_plans(old, plan)
    kept = (*diff.unchanged, *diff.reconfigure)
    # a node the old plan has but supervisord lost (or never started) is simply (re)added
    restart = sorted(set(diff.restart) | {n for n in kept if n not in running}
                     | ((set(rekeyed) | set(recoded)) & set(kept)))
    # one supervisord gave up on is started again: the file says it runs (its new parameters, if
    # any, are in the program file by then); one stopped by hand stays stopped, and is named
    revive = sorted(n for n in kept if _state(running, n) == "FATAL")
    companions = {}
    for key, process, label in COMPANIONS:
        change = _companion_change((old or {}).get(key), plan.get(key), _state(running, process))
        if change:
            companions[label] = change
    return Changes(
        diff=diff,
        restart=tuple(restart),
        revive=tuple(revive),
        reconfigure=tuple(n for n in diff.reconfigure if n in running and n not in revive and n not in restart),
        left_stopped=tuple(sorted(n for n in kept if _state(running, n) == "STOPPED")),
        companions=companions,
    )


def preview(plan: dict[str, Any], base: RunBase, environ: Mapping[str, str] | None = os.environ) -> list[str]:
    """``apply --dry-run``: what applying ``plan`` would do, and why, touching nothing (not even
    starting supervisord)."""
    name = plan["topology"]
    old = load_applied_plan(base, name)
    sup = Supervisor(base)
    report = ApplyReport(name)
    report.notes.extend(renamed_notes(plan, base))
    running = sup.group_processes(name) if sup.is_running() else {}
    rekeyed = secret_changes(plan, sup, environ or {}, report.notes, hand_over=False) if running else set()
    recoded = code_changes(plan, _kept_running(old, plan, running), report.notes, verb="would restart")
    changes = decide(old, plan, running, rekeyed, recoded)
    before, after = (old or {}).get("nodes", {}), plan["nodes"]
    lines = [f"dry run: nothing was changed; applying {name} would:"]
    if not sup.is_running():
        lines.append("  start supervisord")
    for node in changes.diff.added:
        lines.append(f"  add          {node}")
    for node in changes.diff.removed:
        lines.append(f"  remove       {node}")
    for node in changes.restart:
        why = (", ".join(topology.changed_fields(before[node], after[node])) if node in changes.diff.restart
               else "a new secret value" if node in rekeyed
               else "its code changed since it started" if node in recoded else "not running under supervisord")
        lines.append(f"  restart      {node}  ({why})")
    for node in changes.reconfigure:
        lines.append(f"  reconfigure  {node}  ({', '.join(topology.changed_fields(before[node], after[node]))}; live)")
    for node in changes.revive:
        lines.append(f"  start        {node}  (FATAL: supervisord gave up on it)")
    lines.extend(f"  leave        {node}  (STOPPED by hand)" for node in changes.left_stopped)
    lines.extend(f"  {label:<12} {change}" for label, change in changes.companions.items())
    if changes.unchanged:
        lines.append(f"  keep         {', '.join(changes.unchanged)}  (unchanged)")
    lines.extend(f"warning: {note}" for note in report.notes)
    return lines


def _reconcile(plan: dict[str, Any], base: RunBase, sup: Supervisor, report: ApplyReport,
               environ: Mapping[str, str]) -> None:
    name = plan["topology"]
    old = load_applied_plan(base, name)
    running = sup.group_processes(name)
    rekeyed = secret_changes(plan, sup, environ, report.notes)
    changes = decide(old, plan, running, rekeyed, code_changes(plan, _kept_running(old, plan, running), report.notes))
    diff, restart, revive = changes.diff, changes.restart, changes.revive
    report.left_stopped = list(changes.left_stopped)
    report.notes.extend(f"{n} is STOPPED (stopped by hand?); apply leaves it so: "
                        f"`alphapulse ctl start {name}:{n}` starts it" for n in report.left_stopped)
    report.companions = dict(changes.companions)

    topo_dir = base.topology_dir(name)
    for sub in ("s", "c", "logs", "state"):
        (topo_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    for node in (*diff.removed, *restart):
        if node in running:
            sup.stop(name, node)
    for _, process, label in COMPANIONS:
        if changes.companions.get(label) in ("restarted", "removed"):
            sup.stop(name, process)  # syncGroup swaps only stopped processes; autostart starts the new one
    if changes.companions.get("watcher") in ("added", "removed"):
        # a watcher added (a new deployment, or a record older code left) starts with no last edit to show
        outcome_file(topo_dir).unlink(missing_ok=True)
    write_atomically(base.plan_file(name), json.dumps(plan, indent=2, sort_keys=True) + "\n")
    write_atomically(base.programs_file(name), topology.render_program_config(topology.Plan(plan)))
    sup.plugin.syncGroup(name)
    for node in (*restart, *revive):
        forget(state_file(plan["run_dir"], node))  # started by apply: afresh, without crash-loop backoff
        sup.start(name, node)
    for _, process, label in COMPANIONS:
        # autostart starts one whose program section changed (syncGroup made it anew); one whose
        # section is the same (the watcher's recorded variables changed) is the stopped old one
        if report.companions.get(label) in ("restarted", "started"):
            sup.start(name, process)
    report.added = sorted(diff.added)
    report.removed = sorted(diff.removed)
    report.restarted = sorted(set(restart) - set(diff.added))
    report.started = list(revive)
    for node in changes.reconfigure:
        control = plan["nodes"][node]["sockets"]["control"]
        try:
            _wait_until_answering(control, _same_process(sup, name, node), STARTING_NODE_TIMEOUT)
            entry = plan["nodes"][node]
            reply = request(control, "reconfigure", timeout=RECONFIGURE_TIMEOUT, params=entry["params"],
                            cpu=entry.get("cpu"))
            report.reconfigured.append(node)
            report.notes.extend(f"{node} cpu: {problem} (kept running; a restart starts it afresh)"
                                for problem in reply.get("cpu_problems", []))
        except ControlError as exc:
            log.warning("live update of %s failed (%s); restarting it instead", node, exc)
            sup.stop(name, node)
            sup.start(name, node)
            report.restarted.append(node)
    report.unchanged = changes.unchanged


def _kept_running(old: dict[str, Any] | None, plan: dict[str, Any], running: dict[str, dict[str, Any]]) -> list[str]:
    """The RUNNING nodes an apply would keep as they run (the fingerprints see no restart):
    the ones worth asking whether their code changed."""
    diff = topology.diff_plans(old, plan)
    return [n for n in (*diff.unchanged, *diff.reconfigure) if _state(running, n) == "RUNNING"]


COMPANIONS = (("metrics", METRICS_PROCESS, "exporter"), ("watch", WATCH_PROCESS, "watcher"))
"""the programs a topology may run beside its nodes: plan key, process name, label in reports"""


@contextlib.contextmanager
def applying(topology_dir: Path, give_up: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """Hold the topology's apply lock: two applies at once (a person's and the supervised
    watcher's, or two people's) would each diff against the plan the other is replacing. Waits
    for the holder; ApplyError when ``give_up()`` turns true first (a watcher told to stop)."""
    topology_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(topology_dir / "apply.lock", "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if give_up():
                    raise ApplyError("stopped while another apply of this topology was running") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _state(processes: dict[str, dict[str, Any]], name: str) -> str | None:
    """supervisord's state name for one of the group's processes (None: it has no such process)."""
    info = processes.get(name)
    return None if info is None else info["statename"]


def _companion_change(old: dict[str, Any] | None, new: dict[str, Any] | None, state: str | None) -> str:
    """What applying does to a program beside the nodes (not a node: no fingerprints; its plan
    entry, with its command line, is all there is to it). ``state`` is supervisord's for it
    (None: not there)."""
    if new is None:
        return "removed" if state is not None else ""
    if state is None:
        return "added"
    if new != old:
        return "restarted"
    return "started" if state == "FATAL" else ""


def _same_process(sup: Supervisor, group: str, node: str) -> Callable[[], bool]:
    """A check that the node's process is still the one running now (not exited, not replaced)."""
    def info() -> dict[str, Any] | None:
        try:
            return sup.api.getProcessInfo(f"{group}:{node}")
        except (OSError, xmlrpc.client.Error):  # supervisord cannot say: treat it as gone
            return None

    first = info()

    def still_alive() -> bool:
        now = info()
        return (first is not None and now is not None and now["pid"] == first["pid"]
                and now["statename"] in ("STARTING", "RUNNING"))

    return still_alive


def _wait_until_answering(path: str, still_alive: Callable[[], bool], timeout: float) -> None:
    """Wait until the node's control socket accepts a connection.

    supervisord calls a node RUNNING after ``startsecs``; the node binds its control socket only
    once its imports and kernels are loaded, which on a busy machine (or a fresh install, where it
    compiles them) takes longer than that. A socket file left by a killed process exists but
    refuses. Waiting for a live process beats restarting it: a restart would start the same wait
    over. Raises ControlError when the process dies or the wait runs out."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 0.5
    while True:
        problem = _refused(path)
        if problem is None:
            return
        now = time.monotonic()
        if now >= deadline:
            raise ControlError(f"control socket {path} did not answer within {timeout:.0f} s: {problem}")
        if now >= next_check:
            if not still_alive():
                raise ControlError(f"the node exited before its control socket answered: {problem}")
            next_check = now + 0.5
        time.sleep(0.05)


def _refused(path: str) -> OSError | None:
    """Why the control socket at ``path`` does not accept a connection now (None: it does)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(path)
    except OSError as exc:
        return exc
    return None


def down(name: str, base: RunBase) -> list[str]:
    """Stop and remove a topology; stop supervisord when it was the last one."""
    topology_dir = base.topology_dir(name)
    with applying(topology_dir) if topology_dir.is_dir() else contextlib.nullcontext():
        return _take_down(name, base)


def _take_down(name: str, base: RunBase) -> list[str]:
    sup = Supervisor(base)
    leftovers = (base.programs_file(name), base.plan_file(name))
    stopped: list[str] = []
    if sup.is_running():
        processes = sup.group_processes(name)
        if processes:
            sup.api.stopProcessGroup(name, True)
            stopped = sorted(processes)
        for path in leftovers:
            path.unlink(missing_ok=True)
        if processes:
            sup.plugin.syncGroup(name)
        if not base.applied_topologies():
            sup.shutdown()
    else:
        for path in leftovers:
            path.unlink(missing_ok=True)
    return stopped


def wait_until_running(base: RunBase, name: str, timeout: float = 30.0,
                       ignore: Collection[str] = ()) -> dict[str, str]:
    """Wait until every process of the topology (but those in ``ignore``) is RUNNING; returns the
    states seen last (looked at least once, also with no time left). Returns at once when one is
    FATAL: supervisord has given up on it, and waiting longer would not bring it back."""
    sup = Supervisor(base)
    deadline = time.monotonic() + timeout
    while True:
        states = {n: i["statename"] for n, i in sup.group_processes(name).items() if n not in ignore}
        if (states and all(s == "RUNNING" for s in states.values())) or time.monotonic() >= deadline:
            return states
        if "FATAL" in states.values():
            return states
        time.sleep(0.1)


SETTLE_SECONDS = 0.5
"""how long every node must keep serving, the same processes, before ``apply --wait`` says so: a
node opens its control socket before its kind starts, and a kind that fails at once (a path it
cannot create) was briefly seen serving"""
STARTING = "RUNNING (starting)"
"""what :func:`wait_until_serving` reports for a node supervisord runs that does not answer yet"""


def wait_until_serving(base: RunBase, name: str, timeout: float = 30.0,
                       ignore: Collection[str] = ()) -> dict[str, str]:
    """Wait until every node (but those in ``ignore``) is RUNNING *and* answers on its control
    socket: its kernels are loaded and its sockets open, so it serves (what ``apply --wait``
    promises; on a fresh install that includes numba compiling them), and still does, the same
    processes, :data:`SETTLE_SECONDS` later. Returns the states seen last: supervisord's,
    :data:`STARTING` for a running node not answering yet, or :data:`CRASH_LOOP` for one in its
    crash-loop backoff that will not serve in time (see :func:`waits_in_vain`). A node that will
    not serve (that, or FATAL: supervisord gave up) is set aside, and the others are waited for:
    the report then says which serve, not just that one does not. A shorter backoff after kills or
    differing failures is waited out: the node may serve after it."""
    deadline = time.monotonic() + timeout
    wall_deadline = time.time() + timeout
    plan = load_applied_plan(base, name) or {"nodes": {}}
    given_up: dict[str, str] = {}  # nodes that will not serve in the wait: FATAL, or CRASH_LOOP
    serving_pids: dict[str, int] | None = None  # the processes seen serving, to be seen again
    while True:
        if given_up and set(Supervisor(base).group_processes(name)) <= {*ignore, *given_up}:
            return given_up
        states = wait_until_running(base, name, max(0.0, deadline - time.monotonic()), {*ignore, *given_up})
        if states and all(s == "RUNNING" for s in states.values()):
            controls = {n: plan["nodes"].get(n, {}).get("sockets", {}).get("control") for n in states}
            starting = {n: STARTING for n, path in controls.items() if path and _refused(path) is not None}
            if not starting:
                pids = {n: info["pid"] for n, info in Supervisor(base).group_processes(name).items() if n in states}
                if pids == serving_pids or time.monotonic() >= deadline:
                    return {**states, **given_up}
                serving_pids = pids  # a node answers once its sockets are open, before its kind runs,
                time.sleep(SETTLE_SECONDS)  # which may fail at once: look again before saying so
                continue
            states = {**states, **starting}
        serving_pids = None
        states = {**states, **_crash_looping(base, plan, name, states, wall_deadline)}
        lost = {n: s for n, s in states.items() if s in ("FATAL", CRASH_LOOP)}
        if time.monotonic() >= deadline:
            return {**states, **given_up}
        if lost:
            given_up.update(lost)
            continue
        time.sleep(0.1)


def _crash_looping(base: RunBase, plan: dict[str, Any], name: str, states: dict[str, str],
                   after: float) -> dict[str, str]:
    """:data:`CRASH_LOOP` for each node of ``states`` whose process waits out its crash-loop
    backoff until after ``after`` (wall-clock time)."""
    run_dir = plan.get("run_dir")
    candidates = [n for n, s in states.items() if s in ("STARTING", "RUNNING", STARTING)]
    if not run_dir or not candidates:
        return {}
    pids = {n: i.get("pid") for n, i in Supervisor(base).group_processes(name).items()}
    found = {}
    for node in candidates:
        if waits_in_vain(read_record(state_file(run_dir, node)), pids.get(node), after):
            found[node] = CRASH_LOOP
    return found


def waits_in_vain(record: RunRecord | None, pid: int | None, after: float) -> bool:
    """Does process ``pid`` wait out a crash-loop backoff that will not end in a node serving by
    ``after`` (wall-clock time)? Yes when the wait ends after it, and when its last two failures or
    more were alike (:func:`fails_alike`: a taken port fails every start the same way, and waiting
    on would only find out after many starts and minutes). A record another process left says no,
    as does a short wait after kills (a chaos soak sets those off) or after differing failures."""
    return (record is not None and record.state == WAITING and record.pid == pid
            and ((record.resume_at or 0.0) > after or fails_alike(record)))
