"""Import rules that keep the layers honest (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NODES = ROOT / "nodes"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def owner(module: str) -> str | None:
    """The kind module a ``nodes.*`` module belongs to (``nodes._coinbase._feed`` → ``coinbase``)."""
    parts = module.split(".")
    if parts[0] != "nodes" or len(parts) < 2:
        return None
    return parts[1].lstrip("_")


KIND_FILES = sorted(p for p in NODES.rglob("*.py") if p.name != "__init__.py" or p.parent != NODES)


@pytest.mark.parametrize("path", KIND_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_kinds_import_only_the_framework_and_their_own_helpers(path: Path) -> None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    mine = owner(module)
    for imported in imported_modules(path):
        if imported.startswith("alphapulse."):
            allowed = {"alphapulse.kinds", "alphapulse.protocol", "alphapulse.runtime", "alphapulse.captures"}
            assert imported in allowed, f"{module} imports {imported}: kinds use only the public framework APIs"
        if imported.startswith("nodes."):
            assert owner(imported) == mine, f"{module} imports {imported}: kinds never import another kind"


@pytest.mark.parametrize("package", ["protocol", "topology"])
def test_sans_io_layers_import_no_sockets_or_trio(package: str) -> None:
    for path in (ROOT / "alphapulse" / package).rglob("*.py"):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("socket", "trio", "trio_websocket", "asyncio")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: {package} is sans-IO"
