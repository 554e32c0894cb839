"""The node-kind registry: declaring a kind registers it, and the contract is checked then.

A node kind is one class in one file under ``nodes/`` (or any module named by an
``alphapulse.node_kinds`` entry point), decorated with :func:`node_kind`::

    @node_kind("source.kraken", emits=[TLVType.TRADE, TLVType.ORDER_BOOK])
    class Kraken(Node):
        '''Kraken WebSocket v1: trades and L2 books with CRC32-checked integrity.'''
        Params = KrakenParams
        async def run(self, ctx): ...

The role comes from the name: ``source.*``, ``transform.*``, ``sink.*`` or ``relay``. The
decorator rejects a class that breaks the contract (no docstring, no ``run``, params without
descriptions, ports that do not fit the role) at import time, naming the kind and its file, so
a broken kind fails when it is loaded and not on the first message in production.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import importlib.metadata
import inspect
import pkgutil
from collections.abc import Iterable, Mapping
from typing import Any

from alphapulse.kinds._params import NoParams, params_schema
from alphapulse.protocol._types import TLVType

ENTRY_POINT_GROUP = "alphapulse.node_kinds"
BUILTIN_PACKAGE = "nodes"


class Role(enum.Enum):
    """What a node does in the graph; decides which checks apply to it."""

    SOURCE = "source"
    TRANSFORM = "transform"
    RELAY = "relay"
    SINK = "sink"

    @property
    def has_inputs(self) -> bool:
        return self is not Role.SOURCE

    @property
    def has_output(self) -> bool:
        return self is not Role.SINK


class KindContractError(TypeError):
    """A node kind's declaration breaks the contract; raised when its module is imported."""


class Node:
    """Base class of node kinds: holds the params and takes live updates.

    Subclasses define ``Params`` (a dataclass made with ``param()`` fields) and
    ``async def run(self, ctx)``. ``reconfigure`` receives params whose only changes are in
    ``live=True`` fields; override it when a change needs more than replacing ``self.params``.
    A kind with numba kernels of its own may define ``load_kernels(self)``: the node host runs
    it before the node serves, so they compile at start, not on the first block.
    """

    Params: type = NoParams

    def __init__(self, params: Any) -> None:
        self.params = params

    def reconfigure(self, params: Any) -> None:
        self.params = params

    def trouble(self) -> str:
        """What is wrong right now that the node copes with but an operator should see (a full
        disk it is holding data through), in one line; "" when nothing is. The node reports
        itself ``degraded`` meanwhile, and ``status`` shows the line below its table."""
        return ""

    async def run(self, ctx: Any) -> None:  # pragma: no cover - contract placeholder
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class KindSpec:
    """Everything the framework knows about one node kind, derived from its one class."""

    name: str
    role: Role
    factory: type
    emits: frozenset[TLVType] | None
    """TLV types the kind can publish; ``None`` means it re-publishes what it receives."""
    accepts: frozenset[TLVType] | None
    """TLV types the kind consumes; ``None`` means any."""
    summary: str
    example: Mapping[str, Any]
    module: str
    path: str

    @property
    def params_type(self) -> type:
        return self.factory.Params

    def params_schema(self) -> dict[str, Any]:
        schema = params_schema(self.params_type)
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://alphapulse.dev/schemas/nodes/{self.name}.schema.json",
            "title": f"{self.name} params",
            "description": self.summary,
            **schema,
        }


_REGISTRY: dict[str, KindSpec] = {}


def _role_of(name: str) -> Role:
    if name == "relay":
        return Role.RELAY
    prefix, dot, rest = name.partition(".")
    if dot and rest and prefix in ("source", "transform", "sink"):
        return Role(prefix)
    raise KindContractError(
        f"kind name {name!r} must be 'relay' or 'source.<name>', 'transform.<name>', 'sink.<name>'"
    )


def node_kind(
    name: str,
    *,
    emits: Iterable[TLVType] | None = (),
    accepts: Iterable[TLVType] | None = None,
    example: Mapping[str, Any] | None = None,
):
    """Register the decorated class as node kind ``name``, checking its contract now."""
    role = _role_of(name)

    def register(cls: type) -> type:
        where = f"{cls.__module__}.{cls.__qualname__} ({inspect.getsourcefile(cls)})"
        doc = inspect.getdoc(cls)
        if not doc:
            raise KindContractError(f"kind {name!r} at {where}: the class needs a docstring")
        params_type = getattr(cls, "Params", NoParams)
        if not dataclasses.is_dataclass(params_type):
            raise KindContractError(f"kind {name!r} at {where}: Params must be a dataclass")
        try:
            params_schema(params_type)
        except TypeError as exc:
            raise KindContractError(f"kind {name!r} at {where}: {exc}") from None
        run = getattr(cls, "run", None)
        if run is None or not inspect.iscoroutinefunction(run) or run is Node.run:
            raise KindContractError(f"kind {name!r} at {where}: needs 'async def run(self, ctx)'")
        emitted = None if emits is None else frozenset(TLVType(t) for t in emits)
        if role is Role.SINK and emitted:
            raise KindContractError(f"kind {name!r} at {where}: a sink emits nothing")
        if role in (Role.SOURCE, Role.TRANSFORM) and not emitted:
            raise KindContractError(
                f"kind {name!r} at {where}: a {role.value} must declare emits=[TLVType...]"
            )
        if role is Role.RELAY and emitted is not None:
            raise KindContractError(f"kind {name!r} at {where}: a relay passes through (emits=None)")
        accepted = None if accepts is None else frozenset(TLVType(t) for t in accepts)
        if role is Role.SOURCE and accepted:
            raise KindContractError(f"kind {name!r} at {where}: a source has no inputs to accept")
        spec = KindSpec(
            name=name,
            role=role,
            factory=cls,
            emits=frozenset() if role is Role.SINK else emitted,
            accepts=accepted,
            summary=doc.splitlines()[0],
            example=dict(example or {}),
            module=cls.__module__,
            path=inspect.getsourcefile(cls) or "?",
        )
        previous = _REGISTRY.get(name)
        if previous is not None and previous.module != spec.module:
            raise KindContractError(
                f"kind {name!r} is declared twice: in {previous.module} and in {spec.module}"
            )
        _REGISTRY[name] = spec
        cls.kind = name
        return cls

    return register


_loaded = False


def load_kinds() -> Mapping[str, KindSpec]:
    """Import every built-in kind under ``nodes/`` and every entry-point plugin, once."""
    global _loaded
    if not _loaded:
        package = importlib.import_module(BUILTIN_PACKAGE)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{BUILTIN_PACKAGE}.{info.name}")
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            entry.load()
        _loaded = True
    return dict(sorted(_REGISTRY.items()))


def get_kind(name: str, module: str | None = None) -> KindSpec:
    """The spec of kind ``name``; raises KeyError when no such kind is registered.

    With ``module`` (the plan records it) only that module is imported, so a node process
    starts without importing every other kind and its dependencies.
    """
    if module is not None and name not in _REGISTRY:
        importlib.import_module(module)
    if name in _REGISTRY:
        return _REGISTRY[name]
    return load_kinds()[name]


def builtin_modules() -> list[str]:
    """Names of the modules under ``nodes/`` (each must register exactly one kind)."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    return [
        f"{BUILTIN_PACKAGE}.{i.name}"
        for i in pkgutil.iter_modules(package.__path__)
        if not i.name.startswith("_")
    ]


def kinds_in_module(module: str) -> list[str]:
    load_kinds()
    return [name for name, spec in _REGISTRY.items() if spec.module == module]
