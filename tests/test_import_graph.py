"""Code tests of the import graph: no cycles, no import against the package layering, no
private name used outside its module.

Every import between first-party modules counts, the ones inside functions included: a
lazy import hides a cycle from Python but not from a reader. The packages are layered
`llata_core` < `features` < `serving` < `flows`; a module imports only its own layer or
the ones below. A name with a leading underscore belongs to its module: another module
that needs it needs a public name (or the code belongs in the module that owns it).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"llata_core": 0, "features": 1, "serving": 2, "flows": 3}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports (a submodule import runs its package)."""

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for name in names:
                target = known(name)
                while target and target != module and not module.startswith(target + "."):
                    targets.add(target)
                    target = known(target.rpartition(".")[0])
        graph[module] = targets
    return graph


def test_first_party_imports_have_no_cycle() -> None:
    graph = _imports(_modules())
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = " -> ".join([*path[path.index(module) :], module])
            raise AssertionError(f"import cycle: {cycle}")
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_no_package_imports_a_layer_above_it() -> None:
    graph = _imports(_modules())
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if LAYERS[target.split(".")[0]] > LAYERS[module.split(".")[0]]
    )
    assert not upward, upward


def _private_uses(path: Path, modules: dict[str, Path]) -> list[str]:
    """`from m import _name` and `m._name` in `path`, where `m` is a first-party module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bound: set[str] = set()  # local names of first-party modules (`import a.b as m`, ...)
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.level or node.module in modules):
            for alias in node.names:
                if alias.name.startswith("_"):
                    uses.append(f"{path.name}:{node.lineno} imports {alias.name}")
                elif f"{node.module}.{alias.name}" in modules:
                    bound.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            owner = ast.unparse(node.value)
            if owner.split(".")[0] in bound and not node.attr.startswith("__"):
                uses.append(f"{path.name}:{node.lineno} uses {owner}.{node.attr}")
    return uses


def test_no_module_uses_another_modules_private_names() -> None:
    modules = _modules()
    scripts = sorted((ROOT / "benchmarks").rglob("*.py"))
    uses = [
        f"{path.relative_to(ROOT)}: {use}"
        for path in [*modules.values(), *scripts]
        for use in _private_uses(path, modules)
    ]
    assert not uses, uses


def test_the_artifact_format_is_read_only_through_the_forecaster_package() -> None:
    """`llata_core.forecaster.artifact` knows the files of an artifact; everyone else goes
    through the names `llata_core.forecaster` exports."""
    graph = _imports(_modules())
    inner = (
        "llata_core.forecaster.artifact",
        "llata_core.forecaster.combined",
        "llata_core.forecaster.metrics",
        "llata_core.forecaster.predict",
    )
    outside = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if not module.startswith("llata_core.forecaster")
        for target in targets
        if target in inner
    )
    assert not outside, outside


def test_the_configuration_loads_without_pandas_or_torch() -> None:
    """`llata --help` reads the configuration; it must not pay for pandas or torch."""
    code = (
        "import sys, llata_core.config; "
        "print(sorted(m for m in ('numpy', 'pandas', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
