"""Node kinds: the contract (``Node``, ``node_kind``, ``param``) and the registry."""

from alphapulse.kinds._params import (
    NoParams,
    build_params,
    live_fields,
    param,
    params_schema,
    params_to_plain,
    secret_fields,
)
from alphapulse.kinds._registry import (
    ENTRY_POINT_GROUP,
    KindContractError,
    KindSpec,
    Node,
    Role,
    builtin_modules,
    get_kind,
    kinds_in_module,
    load_kinds,
    node_kind,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "KindContractError",
    "KindSpec",
    "NoParams",
    "Node",
    "Role",
    "build_params",
    "builtin_modules",
    "get_kind",
    "kinds_in_module",
    "live_fields",
    "load_kinds",
    "node_kind",
    "param",
    "params_schema",
    "params_to_plain",
    "secret_fields",
]
