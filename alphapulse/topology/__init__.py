"""Topology files: load with positions, check, compile to a plan, diff plans, render.

The flow: ``load_topology`` (YAML → env → schema → typed model → graph checks, every problem
as a :class:`Diagnostic`) → ``compile_plan`` (a deterministic JSON :class:`Plan`) →
``diff_plans`` (what ``apply`` must add, remove, restart or reconfigure). No sockets here.
"""

from alphapulse.topology._checks import domain_types, emitted_types
from alphapulse.topology._compile import (
    PLAN_FORMAT,
    Plan,
    assign_source_ids,
    compile_plan,
    fold_source_id,
)
from alphapulse.topology._diagnostics import (
    Diagnostic,
    Severity,
    format_diagnostics,
    has_errors,
    summary,
)
from alphapulse.topology._diff import PlanDiff, changed_fields, diff_plans
from alphapulse.topology._env import EnvSyntaxError, UnsetVariable, interpolate
from alphapulse.topology._graph import render_dot, render_mermaid
from alphapulse.topology._load import load_topology, parse_topology
from alphapulse.topology._loader import Mark, SourceMap
from alphapulse.topology._model import Link, NodeDecl, Topology
from alphapulse.topology._rundir import (
    MAX_SOCKET_PATH,
    RUN_DIR_ENV,
    control_socket,
    data_socket,
    plan_path,
    run_dir_base,
    state_file,
    topology_run_dir,
)
from alphapulse.topology._schema import (
    RETRANSMIT_BUFFER_DEFAULT,
    default_schema_dir,
    generated_files,
    stale_schema_files,
    topology_schema,
    write_schema_files,
)
from alphapulse.topology._supervisord import METRICS_PROCESS, WATCH_PROCESS, program_name, render_program_config
from alphapulse.topology._validate import validate

__all__ = [
    "MAX_SOCKET_PATH",
    "METRICS_PROCESS",
    "PLAN_FORMAT",
    "RETRANSMIT_BUFFER_DEFAULT",
    "RUN_DIR_ENV",
    "WATCH_PROCESS",
    "Diagnostic",
    "EnvSyntaxError",
    "Link",
    "Mark",
    "NodeDecl",
    "Plan",
    "PlanDiff",
    "Severity",
    "SourceMap",
    "Topology",
    "UnsetVariable",
    "assign_source_ids",
    "changed_fields",
    "compile_plan",
    "control_socket",
    "data_socket",
    "default_schema_dir",
    "diff_plans",
    "domain_types",
    "emitted_types",
    "fold_source_id",
    "format_diagnostics",
    "generated_files",
    "has_errors",
    "interpolate",
    "load_topology",
    "parse_topology",
    "plan_path",
    "program_name",
    "render_dot",
    "render_mermaid",
    "render_program_config",
    "run_dir_base",
    "stale_schema_files",
    "state_file",
    "summary",
    "topology_run_dir",
    "topology_schema",
    "validate",
    "write_schema_files",
]
