"""The layering of the code: no import cycles, and every import points down.

Read from the sources (every import statement, also those inside functions
and under ``TYPE_CHECKING``), so that a cycle cannot hide behind a lazy
import. The layers, top to bottom::

    prodfs_demo, mount_tools
    prodfs: mount > kernel > storage > resolution > stats
    pvc_service
    pvc_client

``pvc_service`` and ``prodfs`` both stand on ``pvc_client`` and never on each
other; ``pvc`` finds the code it needs from above through entry points.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from prodfs.resolution._cycles import components

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pvc_client", "pvc_service", "prodfs", "mount_tools", "prodfs_demo")

# what each part may import, besides itself and the standard library
ALLOWED = {
    "pvc_client": set(),
    "pvc_service": {"pvc_client"},
    "prodfs.stats": {"pvc_client"},
    "prodfs.resolution": {"pvc_client", "prodfs.stats"},
    "prodfs.storage": {"pvc_client", "prodfs.stats", "prodfs.resolution"},
    "prodfs.kernel": {"pvc_client", "prodfs.stats", "prodfs.resolution", "prodfs.storage"},
    "prodfs.mount": {"pvc_client", "prodfs.stats", "prodfs.resolution", "prodfs.storage", "prodfs.kernel"},
    # the stable plugin path is one alias of prodfs.resolution.strategies
    "prodfs.strategies": {"prodfs.resolution"},
    "prodfs": set(),
    "mount_tools": {"pvc_client", "prodfs"},
    "prodfs_demo": {"pvc_client", "pvc_service", "prodfs", "mount_tools"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for each import of one of ours; ``from P import M`` of a submodule M names it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield node.lineno, target


GRAPH = {name: sorted(set(_imports(name, path))) for name, path in MODULES.items()}


def _part(module: str) -> str:
    """The most specific key of ALLOWED that ``module`` belongs to."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in ALLOWED:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} belongs to no layer: add it to ALLOWED")


def test_the_layers_cover_every_module() -> None:
    assert {_part(m) for m in MODULES} <= set(ALLOWED)
    assert len(MODULES) > 80, "the sources were not found"


def _upward(graph: dict[str, list[tuple[int, str]]]) -> list[str]:
    wrong = []
    for name, edges in graph.items():
        here = _part(name)
        for line, target in edges:
            there = _part(target)
            if there != here and not any(there == a or there.startswith(a + ".") for a in ALLOWED[here]):
                wrong.append(f"{name}:{line} imports {target} ({here} -> {there})")
    return wrong


def _cycles(graph: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    # the resolver's own strongly connected components (tested in tests/resolver)
    succ = {name: [target for _, target in edges] for name, edges in graph.items()}
    return [sorted(members) for members, cyclic in components(list(graph), succ) if cyclic]


def test_imports_point_down() -> None:
    wrong = _upward(GRAPH)
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_can_fail() -> None:
    # what the tree had before it was layered: a lazy import of the service from the client,
    # a cycle through a function-level import, and storage reaching up to the mount
    graph = {"pvc_client.cli": [(88, "pvc_service.server")], "pvc_service.server": [],
             "pvc_client._client": [(443, "pvc_client._transfer")], "pvc_client._transfer": [(30, "pvc_client._client")],
             "prodfs.storage.blob_cache": [(1, "prodfs.mount.stats")], "prodfs.mount.stats": []}
    assert _upward(graph) == ["pvc_client.cli:88 imports pvc_service.server (pvc_client -> pvc_service)",
                              "prodfs.storage.blob_cache:1 imports prodfs.mount.stats (prodfs.storage -> prodfs.mount)"]
    assert _cycles(graph) == [["pvc_client._client", "pvc_client._transfer"]]
    # and the reader sees imports inside functions and under TYPE_CHECKING
    assert "pvc_client._transfer" in [t for _, t in GRAPH["pvc_client._client"]]
    inner = [t for _, t in GRAPH["mount_tools.cli"]]
    assert "prodfs.mount.daemon" in inner  # imported inside cmd_mount only


@pytest.mark.parametrize("group", ["pvc.plugins"])
def test_plugins_point_at_code_that_exists(group: str) -> None:
    # `pvc serve` and `pvc snapshot create --workspace` are found through these
    entries = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][group]
    for name, target in entries.items():
        module, _, attr = target.partition(":")
        assert module in MODULES, f"{group} {name}: no module {module}"
        assert attr in MODULES[module].read_text(), f"{group} {name}: {module} defines no {attr}"
