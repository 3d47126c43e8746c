"""The package's layering, checked on the source: data flows one way and Hydra stays at the edge.

application (app) -> report / planning -> pipeline -> estimators -> sampling, extraction, scoring -> models
-> data (dataset, prompts, metrics, ...) and tracking -> spec, errors. A module imports only modules of its
own layer or below; tracking is a leaf that imports only the spec, the errors and the reachability check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "culturealign"

LAYERS = {  # module (or package prefix) -> layer; higher layers may import lower ones
    "culturealign.errors": 0,
    "culturealign.spec": 0,
    "culturealign.redaction": 0,
    "culturealign.reachability": 1,
    "culturealign.dataset": 1,
    "culturealign.prompts": 1,
    "culturealign.metrics": 1,
    "culturealign.progress": 1,
    "culturealign.tracking": 1,
    "culturealign.models": 2,
    "culturealign.sampling": 3,
    "culturealign.extraction": 3,
    "culturealign.scoring": 3,
    "culturealign.estimators": 4,
    "culturealign.pipeline": 5,
    "culturealign.planning": 6,
    "culturealign.report": 6,
    "culturealign.app": 7,
    "culturealign.api": 7,  # the Python API: the CLI's twin
    "culturealign.countries": 7,  # generates conf/country from the dataset's keys
    "culturealign": 7,  # __init__ / __main__
}
TRACKING_MAY_IMPORT = (
    "culturealign.errors", "culturealign.spec", "culturealign.reachability", "culturealign.redaction", "culturealign.tracking",
)  # fmt: skip
EDGE_PACKAGES = ("hydra", "omegaconf")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def imports(path: Path) -> set[str]:
    """Every module imported anywhere in the file (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & SOURCES  # `from pkg import mod`
            found |= submodules or {node.module}
    return found


SOURCES = {module_name(path) for path in PACKAGE.rglob("*.py")}
MODULES = {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}
KNOWN = set(MODULES)


def internal(names: set[str]) -> set[str]:
    return {name for name in names if name in KNOWN}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_layer_above_it(module):
    above = sorted(name for name in internal(MODULES[module]) if layer(name) > layer(module))
    assert not above, f"{module} (layer {layer(module)}) imports {above}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_hydra_and_omegaconf_only_in_the_application_layer(module):
    edge = sorted(name for name in MODULES[module] if name.split(".")[0] in EDGE_PACKAGES)
    assert not edge or module.startswith("culturealign.app"), f"{module} imports {edge}"


def test_tracking_is_a_leaf():
    for module, names in MODULES.items():
        if module.startswith("culturealign.tracking"):
            others = sorted(n for n in internal(names) if not n.startswith(TRACKING_MAY_IMPORT))
            assert not others, f"{module} imports {others}"


def test_no_import_cycles():
    graph = {module: internal(names) - {module} for module, names in MODULES.items()}
    done, path = set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module) :] + [module]))
        if module in done:
            return
        path.append(module)
        for name in graph.get(module, ()):
            if not module.startswith(name + "."):  # a package's own submodules are not a cycle
                visit(name)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_the_check_itself_sees_imports():
    """Guards the guard: a known upward-free edge and the edge packages are found."""
    assert "culturealign.spec" in MODULES["culturealign.pipeline"]
    assert "hydra" in MODULES["culturealign.app.cli"]
    assert layer("culturealign.models.model") == 2 and layer("culturealign.app.cli") == 7
