"""Running plans under supervisord: apply/reconcile, status, watch, down."""

from alphapulse.supervise._apply import (
    ApplyError,
    ApplyReport,
    apply_plan,
    compile_file,
    decide,
    down,
    load_applied_plan,
    preview,
    wait_until_running,
    wait_until_serving,
)
from alphapulse.supervise._secrets import secret_needs
from alphapulse.supervise._status import (
    CRASH_LOOP,
    NodeStatus,
    format_table,
    node_reports,
    topology_status,
    why_not_running,
)
from alphapulse.supervise._supervisor import (
    RunBase,
    Supervisor,
    SupervisorError,
    default_run_base,
    supervisorctl_argv,
)
from alphapulse.supervise._watch import WatchOutcome, read_outcome, watch
from alphapulse.supervise._watcher import SupervisedWatcher

__all__ = [
    "CRASH_LOOP",
    "ApplyError",
    "ApplyReport",
    "NodeStatus",
    "RunBase",
    "SupervisedWatcher",
    "Supervisor",
    "SupervisorError",
    "WatchOutcome",
    "apply_plan",
    "compile_file",
    "decide",
    "default_run_base",
    "down",
    "format_table",
    "load_applied_plan",
    "node_reports",
    "preview",
    "read_outcome",
    "secret_needs",
    "supervisorctl_argv",
    "topology_status",
    "wait_until_running",
    "wait_until_serving",
    "watch",
    "why_not_running",
]
