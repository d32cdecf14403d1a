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
