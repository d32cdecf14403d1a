"""The package boundaries of DESIGN.md, checked on the source and on a real import.

- ``mednext`` imports nothing but torch and the standard library;
- ``mednext`` and ``baselines`` never import ``harness`` or ``nnunetv2``;
- inside ``harness`` only ``harness/nnunet`` imports ``nnunetv2``.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)


def _imported_roots(package: str) -> dict[str, set[str]]:
    """Top-level module names imported by each file of a package (relative imports skipped)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        roots: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = roots
    return found


def test_mednext_imports_only_torch_and_stdlib():
    for path, roots in _imported_roots("mednext").items():
        extra = {r for r in roots if r not in STDLIB and r not in {"torch", "mednext"}}
        assert not extra, f"{path} imports {sorted(extra)}"


@pytest.mark.parametrize("package", ["mednext", "baselines"])
def test_architecture_packages_do_not_import_the_harness(package):
    allowed = {"torch", "monai", "dynamic_network_architectures", "numpy", "mednext", "baselines"}
    for path, roots in _imported_roots(package).items():
        extra = {r for r in roots if r not in STDLIB and r not in allowed}
        assert not extra, f"{path} imports {sorted(extra)}"


def test_only_the_nnunet_seam_imports_nnunetv2():
    offenders = [path for path, roots in _imported_roots("harness").items()
                 if "nnunetv2" in roots and not path.startswith("harness/nnunet")]
    assert not offenders, f"nnunetv2 imported outside harness/nnunet: {offenders}"


@pytest.mark.parametrize("package", ["mednext", "baselines"])
def test_importing_an_architecture_package_loads_neither_harness_nor_nnunetv2(package):
    code = (f"import sys, {package}; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('harness', 'nnunetv2')); "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {package} loaded {out.stdout.strip()}"


def _harness_graph() -> dict[str, set[str]]:
    """Module -> harness modules it imports (also inside functions). ``from pkg import sub`` and
    relative imports resolve to the submodule; an edge from a module to a package it lives in
    (a package's facade re-exporting its own submodules) is not a dependency and is left out."""
    mods = {}
    for path in (ROOT / "harness").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if is_pkg else name.split(".")[:-1]
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(t + "."):
                    deps.add(t)
        graph[name] = deps
    return graph


def test_harness_has_no_import_cycles():
    graph = _harness_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_reports_do_not_import_the_job_layer():
    """Jobs know how to run things, reports how to read results; which runs a study expects is
    declared below both (harness.studies.runs)."""
    graph = _harness_graph()
    offenders = {m: sorted(d for d in deps if d.startswith("harness.jobs"))
                 for m, deps in graph.items() if m.startswith("harness.report")}
    assert not any(offenders.values()), offenders
    assert not any(d.startswith(("harness.jobs", "harness.report"))
                   for m, deps in graph.items() if m.startswith("harness.studies") for d in deps)
