"""The supervised watcher (``reload: {watch: true}``): hot reload that outlives the terminal.

``apply`` has supervisord run ``alphapulse apply FILE --supervised`` beside the nodes as
``<topology>:_watch``, as Vector's ``--watch-config`` runs inside the service rather than in
someone's shell. It applies every settled edit of the file in-process (under the topology's
apply lock, so a person's ``apply`` and its own never interleave), refuses an invalid one with its
``file:line:col`` diagnostics and leaves the system as it was, and writes what became of the last
edit to ``<run>/state/_watch.json`` for ``status``. It resolves ``${VAR}`` with the values the
file was last applied with (the plan records them), not with supervisord's environment.

One edit it cannot apply itself: one that removes or changes its own entry (its command line, or
the variables the file refers to), since applying it means stopping the process doing the
applying. It hands that edit to a detached ``apply`` (its own session, so supervisord stopping
the watcher's process group does not take it along), which stops or replaces the watcher like any
other program.

Nor does it apply an edit with code older than what is installed: it notes the module files it
loaded (``runtime/_code.py``), and when an edit comes after they changed on disk (an upgrade), it
ends instead, and supervisord starts it afresh, on the new code, which applies the file.

Like the nodes (``runtime/_orphan.py``), it ends with the supervisord that started it. Before
it did, a watcher outlived a ``kill -9`` of supervisord: unsupervised, beside the one the next
``apply`` started, and still there after ``alphapulse down``, until the next edit of the file,
whose first line of output to the dead supervisord's pipe ended it (``BrokenPipeError``).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from alphapulse.runtime._code import LoadedCode, display_path, package_root
from alphapulse.runtime._orphan import end_with_supervisor
from alphapulse.supervise._apply import ApplyError, apply_plan, compile_file, load_applied_plan
from alphapulse.supervise._codechanges import describe_files
from alphapulse.supervise._secrets import secret_needs
from alphapulse.supervise._supervisor import RunBase, SupervisorError
from alphapulse.supervise._watch import WatchOutcome, read_outcome, watch, write_outcome
from alphapulse.topology import WATCH_PROCESS, format_diagnostics


def hands_over(applied: dict[str, Any] | None, plan: dict[str, Any]) -> bool:
    """Does applying ``plan`` over ``applied`` stop or replace the watcher (its entry removed or
    changed)? Then another process must apply it."""
    return (applied or {}).get("watch") != plan.get("watch")


def _recorded_variables(plan: dict[str, Any] | None) -> dict[str, str | None]:
    """The variables a plan's watcher resolves the file with (its ``watch.env``)."""
    return ((plan or {}).get("watch") or {}).get("env", {})


def adopt_environment(env: dict[str, str | None], environ: Any = os.environ) -> None:
    """Set each variable to its value, and unset those that were unset (None)."""
    for var, value in env.items():
        if value is None:
            environ.pop(var, None)
        else:
            environ[var] = value


class SupervisedWatcher:
    """``alphapulse apply FILE --supervised``: the loop supervisord runs as ``<topology>:_watch``."""

    def __init__(self, file: Path, base: RunBase, topology: str, *, out: TextIO = sys.stdout,
                 err: TextIO = sys.stderr) -> None:
        self.file = file.absolute()
        self.base = base
        self.topology = topology
        """the topology this watcher belongs to (an edit that renames it is refused)"""
        self.out, self.err = out, err
        self.stopping = False
        """set by SIGTERM: finish an apply under way, then end (supervisord's stop)"""
        self.loaded_code: LoadedCode | None = None
        """the module files this process loaded, noted after its first apply imported the kinds"""

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        end_with_supervisor()  # a killed supervisord takes its watcher with it, as it does its nodes
        if self.stopping:
            return  # supervisord was gone before we asked: applying now would start another
        self.adopt_environment()
        self.apply_once(cause="start")  # the file may have changed while no watcher ran: the file is the truth
        root = package_root(__name__)
        self.loaded_code = LoadedCode([root] if root else [])
        self._print(f"watching {self.file} for topology {self.topology} (supervised)")
        watch(self.file, self._edited, stop=lambda: self.stopping)

    def adopt_environment(self) -> None:
        """Take the variables the file was last applied with (the plan's ``watch.env``): ours
        are supervisord's, from whichever apply started it, and an edit resolved with those
        would undo what the last apply set (a port, a path). Secrets are not among them: nodes
        read those from their own environment."""
        adopt_environment(_recorded_variables(load_applied_plan(self.base, self.topology)))

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _edited(self) -> None:
        self._print(f"-- {self.file} changed")
        changed = self.loaded_code.changed() if self.loaded_code is not None else []
        if changed:  # applying with the old code could write a plan the new nodes do not expect
            files = describe_files([display_path(path) for path in changed])
            self._print(f"this watcher's code changed since it started ({files}): ending, so that "
                        f"supervisord starts it afresh and the new code applies the edit")
            self.stopping = True
            return
        self.apply_once()

    def apply_once(self, *, cause: str = "edit") -> WatchOutcome | None:
        """Apply the file as it is now; record and return the outcome (None when told to stop
        while waiting for another apply: nothing was done). A start that changed nothing keeps
        the last edit's record, so ``status`` does not call the watcher's start an edit."""
        outcome = self._apply()
        if outcome is not None:
            run_dir = self.base.topology_dir(self.topology)
            previous = read_outcome(run_dir)
            outcome = dataclasses.replace(outcome, cause=cause).after(previous)
            if outcome.replaces(previous):
                write_outcome(run_dir, outcome)
            self._print(outcome.outcome, err=outcome.outcome in ("refused", "failed"))
        return outcome

    def _apply(self) -> WatchOutcome | None:
        now = time.time()
        try:
            plan, warnings = compile_file(self.file, self.base)
        except ApplyError as exc:
            text = format_diagnostics(exc.diagnostics)
            self.err.write(text)
            return WatchOutcome(now, "refused", (*text.splitlines(), str(exc)))
        except OSError as exc:
            return WatchOutcome(now, "refused", (f"cannot read {self.file}: {exc}",))
        self.err.write(format_diagnostics(warnings))
        if plan["topology"] != self.topology:
            return WatchOutcome(now, "refused", (
                f"{self.file} now declares topology {plan['topology']!r}; this watcher runs {self.topology!r}: "
                f"apply the file by hand (and `alphapulse down` the old name)",))
        applied = load_applied_plan(self.base, self.topology)
        if hands_over(applied, plan):
            log = self.hand_over(plan)
            new = sorted(set(_recorded_variables(plan)) - set(_recorded_variables(applied)))
            why = (f" (new variables {', '.join(new)}, resolved from supervisord's environment, not your "
                   f"shell's: `alphapulse apply FILE` resolves them from yours)") if new else ""
            return WatchOutcome(now, "handed over", (f"the edit changes this watcher{why}: applied by a separate "
                                                     f"`alphapulse apply` (log: {log})",))
        try:
            report = apply_plan(plan, self.base, give_up=lambda: self.stopping, environ=None)
        except ApplyError:
            return None  # told to stop while another apply ran
        except SupervisorError as exc:
            return WatchOutcome(now, "failed", (str(exc),))
        except Exception as exc:  # supervisord going away mid-apply, a full disk: say so, keep watching
            traceback.print_exc(file=self.err)
            return WatchOutcome(now, "failed", (f"{type(exc).__name__}: {exc}",))
        lines = report.lines()
        for line in lines:
            self._print(line)
        return WatchOutcome(now, "applied" if report.changed_anything else "unchanged", tuple(lines))

    def hand_over(self, plan: dict) -> Path:
        """Start ``alphapulse apply FILE`` in its own session (it outlives this process, which it
        stops); its output goes to a log beside the watcher's. It runs without the plan's secret
        variables: this process has supervisord's environment, whose values may be older than
        those a person's apply handed supervisord since (see ``_apply``)."""
        secrets = {v for variables in secret_needs(plan).values() for v in variables}
        log = self.base.topology_dir(self.topology) / "logs" / f"{WATCH_PROCESS}.handover.log"
        log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(log, "a") as sink:
            subprocess.Popen(
                [sys.executable, "-m", "alphapulse", "apply", str(self.file), "--run-dir", str(self.base.path)],
                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=os.getcwd(), env={k: v for k, v in os.environ.items() if k not in secrets},
            )
        return log

    def _print(self, line: str, *, err: bool = False) -> None:
        stream = self.err if err else self.out
        stream.write(line + "\n")
        stream.flush()
