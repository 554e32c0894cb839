"""Loading a topology: text → positions → env interpolation → schema → typed model → checks.

Every stage adds diagnostics and keeps going with what it could make sense of, so one run
reports every problem. A :class:`Topology` comes back only when there are no errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from alphapulse.kinds import KindSpec, Role, load_kinds, secret_fields
from alphapulse.protocol import InstrumentError, RelayDomain, TLVType, parse_instrument
from alphapulse.topology._checks import graph_diagnostics, socket_diagnostics
from alphapulse.topology._diagnostics import Diagnostic, Severity, sort_diagnostics
from alphapulse.topology._env import EnvSyntaxError, UnsetVariable, find_refs, interpolate
from alphapulse.topology._explain import describe_path, schema_diagnostics
from alphapulse.topology._loader import JsonPath, Mark, SourceMap, load_yaml
from alphapulse.topology._model import Link, NodeDecl, Topology
from alphapulse.topology._rundir import topology_run_dir
from alphapulse.topology._schema import BREAKER_DEFAULTS, CPU_DEFAULTS, LINK_DEFAULTS, RESTART_DEFAULTS
from alphapulse.topology._secrets import looks_like_token, secret_name, suggested_env_name


def load_topology(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    run_dir: str | None = None,
) -> tuple[Topology | None, list[Diagnostic]]:
    """Read and check one topology file.

    ``env`` replaces ``os.environ`` for interpolation and the run directory; ``run_dir`` is a
    run-directory *base* (as ``--run-dir``). Returns the topology (None when there are errors)
    and every diagnostic, sorted by position.
    """
    file = os.fspath(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return None, [Diagnostic(Severity.ERROR, file, 1, 1, f"cannot read {file}: {reason}", "io")]
    except UnicodeDecodeError as exc:
        return None, [Diagnostic(Severity.ERROR, file, 1, 1,
                                 f"{file} is not UTF-8 text ({exc.reason})", "io")]
    return parse_topology(text, file, env=env, run_dir=run_dir,
                          abspath=os.path.abspath(file))


def parse_topology(
    text: str,
    file: str = "<topology>",
    *,
    env: Mapping[str, str] | None = None,
    run_dir: str | None = None,
    abspath: str | None = None,
) -> tuple[Topology | None, list[Diagnostic]]:
    """Check topology text; ``file`` is only used in messages (see :func:`load_topology`)."""
    env = os.environ if env is None else env
    doc, diags = load_yaml(text, file)
    if doc is None:
        return None, diags
    if not isinstance(doc.data, dict):
        diags.append(Diagnostic(Severity.ERROR, file, 1, 1, "a topology is a mapping with "
                                "'topology: <name>' and 'nodes:'; this file holds "
                                f"{type(doc.data).__name__} instead", "schema"))
        return None, sort_diagnostics(diags)
    builder = _Builder(doc.data, doc.marks, file, env)
    builder.interpolate()
    diags += builder.diagnostics
    # a value left as its ${VAR} template already has its env error: don't also call it mistyped
    env_marks = {(d.line, d.col) for d in builder.diagnostics if d.code.startswith("env-")}
    diags += [d for d in schema_diagnostics(builder.data, doc.marks, file)
              if (d.line, d.col) not in env_marks]
    topology = builder.model(run_dir, abspath or os.path.abspath(file))
    diags += builder.model_diagnostics
    if topology is not None:
        diags += graph_diagnostics(topology)
        diags += socket_diagnostics(topology)
    diags = sort_diagnostics(diags)
    if any(d.is_error for d in diags):
        return None, diags
    return topology, diags


class _Builder:
    def __init__(self, data: dict[str, Any], marks: SourceMap, file: str,
                 env: Mapping[str, str]) -> None:
        self.data = data
        self.marks = marks
        self.file = file
        self.env = env
        self.kinds = load_kinds()
        self.diagnostics: list[Diagnostic] = []
        self.model_diagnostics: list[Diagnostic] = []
        self.secret_env: dict[str, dict[str, str]] = {}
        self.env_refs: set[str] = set()
        """variables the file's non-secret values refer to (the watcher needs the same ones)"""

    def _emit(self, severity: Severity, mark: Mark, message: str, code: str,
              into: list[Diagnostic] | None = None) -> None:
        target = self.diagnostics if into is None else into
        target.append(Diagnostic(severity, self.file, mark.line, mark.col, message, code))

    def _nodes(self) -> dict[str, Any]:
        nodes = self.data.get("nodes")
        return nodes if isinstance(nodes, dict) else {}

    def _spec(self, entry: Any) -> KindSpec | None:
        kind = entry.get("kind") if isinstance(entry, dict) else None
        return self.kinds.get(kind) if isinstance(kind, str) else None

    # -- environment -------------------------------------------------------------------------

    def interpolate(self) -> None:
        """Resolve ``${VAR}`` everywhere except secret params, which are checked instead."""
        secret_paths: dict[JsonPath, tuple[str, str]] = {}
        for name, entry in self._nodes().items():
            spec = self._spec(entry)
            if spec is not None:
                for field in secret_fields(spec.params_type):
                    secret_paths[("nodes", name, "params", field)] = (name, field)
        self.data = self._walk(self.data, (), secret_paths)

    def _walk(self, value: Any, path: JsonPath, secrets: dict[JsonPath, tuple[str, str]]) -> Any:
        if isinstance(value, dict):
            return {k: self._walk(v, (*path, k), secrets) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v, (*path, i), secrets) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        if path in secrets:
            self._check_secret(value, path, *secrets[path])
            return value
        in_params = len(path) >= 4 and path[0] == "nodes" and path[2] == "params"
        if "$" not in value:
            if in_params:
                self._check_literal(value, path)
            return value
        try:
            self.env_refs.update(ref.name for ref in find_refs(value))
            resolved = interpolate(value, self.env)
        except EnvSyntaxError as exc:
            self._emit(Severity.ERROR, self._offset(path, exc.offset),
                       f"{describe_path(path)}: {exc}", "env-syntax")
            return value
        except UnsetVariable as exc:
            self._emit(Severity.ERROR, self._offset(path, exc.offset),
                       f"environment variable {exc.name} is not set and has no default "
                       f"({describe_path(path)}); set it, or give a default: "
                       f"${{{exc.name}:-value}}", "env-unset")
            return value
        if self.marks.styles.get(path) == "":
            return _retype(resolved)
        return resolved

    def _offset(self, path: JsonPath, offset: int) -> Mark:
        """Position of a character of a one-line scalar (quotes skipped)."""
        mark = self.marks.value(path)
        style = self.marks.styles.get(path, "")
        if style in ("|", ">"):
            return mark
        return Mark(mark.line, mark.col + offset + (1 if style else 0))

    def _check_secret(self, value: str, path: JsonPath, node: str, field: str) -> None:
        mark = self.marks.value(path)
        var = suggested_env_name(node, field)
        try:
            refs = find_refs(value)
        except EnvSyntaxError as exc:
            self._emit(Severity.ERROR, self._offset(path, exc.offset),
                       f"{describe_path(path)}: {exc}", "env-syntax")
            return
        if not refs:
            if value:
                self._emit(Severity.ERROR, mark,
                           f"param '{field}' of node '{node}' is a secret and must come from the "
                           f"environment, not a literal: write {field}: ${{{var}}} and set {var}",
                           "secret-literal")
            return
        ref = refs[0]
        if len(refs) > 1 or ref.text != value:
            self._emit(Severity.ERROR, mark,
                       f"param '{field}' of node '{node}' is a secret: write it as exactly one "
                       f"reference, e.g. ${{{ref.name}}}, with nothing around it", "secret-literal")
            return
        if ref.default:
            self._emit(Severity.ERROR, self._offset(path, ref.offset),
                       f"param '{field}' of node '{node}' is a secret, so its default would be a "
                       f"literal secret in the file; write ${{{ref.name}}} (or ${{{ref.name}:-}} "
                       "to allow it to be empty)", "secret-literal")
            return
        self.secret_env.setdefault(node, {})[field] = ref.name
        if ref.name not in self.env and ref.default is None:
            self._emit(Severity.WARNING, self._offset(path, ref.offset),
                       f"environment variable {ref.name} (secret param '{field}' of node "
                       f"'{node}') is not set here; the node reads it from its own environment "
                       "when it starts, so set it where supervisord runs", "env-unset-secret")

    def _check_literal(self, value: str, path: JsonPath) -> None:
        key = next((p for p in reversed(path) if isinstance(p, str)), "")
        if not value or not ((secret_name(key) and len(value) >= 8) or looks_like_token(value)):
            return
        var = suggested_env_name(str(path[1]), key)
        self._emit(Severity.WARNING, self.marks.value(path),
                   f"{describe_path(path)} looks like a secret written in the file; topology files "
                   f"get committed, so move it to the environment: ${{{var}}}", "secret-looking")

    # -- typed model -------------------------------------------------------------------------

    def _model_error(self, path: JsonPath, message: str, code: str, *, key: bool = False) -> None:
        mark = self.marks.key(path) if key else self.marks.value(path)
        self._emit(Severity.ERROR, mark, message, code, into=self.model_diagnostics)

    def model(self, run_dir: str | None, abspath: str) -> Topology | None:
        """The typed topology, leniently: whatever is well-formed, so graph checks can run."""
        name = self.data.get("topology")
        if not isinstance(name, str) or not name:
            return None
        defaults = self.data.get("defaults") if isinstance(self.data.get("defaults"), dict) else {}
        restart_defaults = {**RESTART_DEFAULTS, **_dict(defaults.get("restart"))}
        breaker_defaults = {**BREAKER_DEFAULTS, **_dict(defaults.get("breaker"))}
        link_defaults = {**LINK_DEFAULTS, **_dict(defaults.get("link"))}
        cpu_defaults = {**CPU_DEFAULTS, **_dict(defaults.get("cpu"))}
        retransmit_default = defaults.get("retransmit_buffer")
        nodes: dict[str, NodeDecl] = {}
        for node_name, entry in self._nodes().items():
            if not isinstance(entry, dict):
                continue
            decl = self._node(node_name, entry, restart_defaults, breaker_defaults, link_defaults, cpu_defaults,
                              retransmit_default)
            if decl is not None:
                nodes[node_name] = decl
        description = self.data.get("description")
        return Topology(
            name=name,
            description=description if isinstance(description, str) else "",
            file=self.file,
            path=abspath,
            run_dir=topology_run_dir(name, run_dir, self.env),
            nodes=nodes,
            marks=self.marks,
            metrics_listen=self._metrics_listen(),
            watch=bool(_dict(self.data.get("reload")).get("watch", False)),
            env={var: self.env.get(var) for var in sorted(self.env_refs)},
        )

    def _metrics_listen(self) -> str | None:
        metrics = self.data.get("metrics")
        listen = metrics.get("listen") if isinstance(metrics, dict) else None
        if not isinstance(listen, str) or ":" not in listen:
            return None
        port = listen.rpartition(":")[2]
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            self._model_error(("metrics", "listen"), f"'metrics.listen' has port {port}; a port is 1-65535 "
                              "(0, any free port, would leave a scraper nothing to point at)", "metrics-port")
            return None
        return listen

    def _node(self, name: str, entry: dict[str, Any], restart_defaults: dict[str, Any],
              breaker_defaults: dict[str, Any], link_defaults: dict[str, Any],
              cpu_defaults: dict[str, Any], retransmit_default: Any = None) -> NodeDecl | None:
        path: JsonPath = ("nodes", name)
        kind = entry.get("kind")
        if not isinstance(kind, str):
            return None
        spec = self.kinds.get(kind)
        domain = None
        if "domain" in entry:
            if spec is not None and spec.role is not Role.RELAY:
                self._model_error((*path, "domain"),
                                  f"'domain' is only for relays; node '{name}' is a {kind}, whose "
                                  "relay domain follows from the types it emits: remove 'domain'",
                                  "domain-not-relay", key=True)
            elif str(entry["domain"]).upper() in RelayDomain.__members__:
                domain = RelayDomain[str(entry["domain"]).upper()]
        inputs = []
        raw_inputs = entry.get("inputs")
        for i, item in enumerate(raw_inputs if isinstance(raw_inputs, list) else []):
            link = self._link((*path, "inputs", i), item, link_defaults)
            if link is not None:
                inputs.append(link)
        params = entry.get("params") if isinstance(entry.get("params"), dict) else {}
        description = entry.get("description")
        retransmit = self._retransmit_buffer(name, entry, spec, retransmit_default)
        return NodeDecl(
            name=name,
            kind=kind,
            spec=spec,
            inputs=tuple(inputs),
            params=params,
            secret_env=dict(sorted(self.secret_env.get(name, {}).items())),
            domain=domain,
            restart={**restart_defaults, **_dict(entry.get("restart"))},
            breaker={**breaker_defaults, **_dict(entry.get("breaker"))},
            cpu={**cpu_defaults, **_dict(entry.get("cpu"))},
            description=description if isinstance(description, str) else "",
            path=path,
            retransmit_buffer=retransmit,
        )

    def _retransmit_buffer(self, name: str, entry: dict[str, Any], spec: KindSpec | None,
                           default: Any) -> int | None:
        """The node's ``retransmit_buffer`` (its own, else ``defaults``'), for the nodes it is for:
        sources and transforms. A relay's is a param, and a sink publishes nothing."""
        own = entry.get("retransmit_buffer")
        if own is not None and spec is not None and spec.role in (Role.RELAY, Role.SINK):
            why = ("a relay's retransmit buffer is its params.retransmit_buffer" if spec.role is Role.RELAY
                   else f"node '{name}' is a sink, which publishes nothing")
            self._model_error(("nodes", name, "retransmit_buffer"), f"'retransmit_buffer' is for sources and "
                              f"transforms; {why}: remove it", "retransmit-not-here", key=True)
            return None
        if spec is None or spec.role in (Role.RELAY, Role.SINK):
            return None
        value = own if own is not None else default
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    def _link(self, path: JsonPath, item: Any, link_defaults: dict[str, Any]) -> Link | None:
        if isinstance(item, str):
            return Link(item, None, None, link_defaults["overflow"], link_defaults["queue"], path,
                        link_defaults["checksums"], link_defaults["linger_ms"], link_defaults["resend_timeout_ms"])
        if not isinstance(item, dict) or not isinstance(item.get("from"), str):
            return None
        types = None
        if isinstance(item.get("types"), list):
            known = [t for t in item["types"] if isinstance(t, str) and _is_title(t)]
            types = tuple(TLVType.from_title(t) for t in known)
        instruments = None
        if isinstance(item.get("instruments"), list):
            parsed = []
            for j, text in enumerate(item["instruments"]):
                if not isinstance(text, str):
                    continue
                try:
                    parsed.append(parse_instrument(text))
                except InstrumentError as exc:
                    self._model_error((*path, "instruments", j),
                                      f"{describe_path((*path, 'instruments', j))}: {exc}",
                                      "bad-instrument")
            instruments = tuple(parsed)
        overflow = item.get("overflow", link_defaults["overflow"])
        queue = item.get("queue", link_defaults["queue"])
        checksums = item.get("checksums", link_defaults["checksums"])
        linger_ms = item.get("linger_ms", link_defaults["linger_ms"])
        resend_timeout_ms = item.get("resend_timeout_ms", link_defaults["resend_timeout_ms"])
        return Link(item["from"], types, instruments, overflow, queue, path, checksums, linger_ms, resend_timeout_ms)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_title(text: str) -> bool:
    try:
        TLVType.from_title(text)
    except KeyError:
        return False
    return True


_RESOLVER = yaml.resolver.Resolver()
_TYPED_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
               "tag:yaml.org,2002:null"}


def _retype(text: str) -> Any:
    """Give an interpolated plain scalar the type YAML would give the same text written in place
    (``port: ${PORT:-8765}`` is the integer 8765)."""
    tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))
    if tag in _TYPED_TAGS:
        return yaml.safe_load(text)
    return text
