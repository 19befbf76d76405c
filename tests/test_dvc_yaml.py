"""dvc.yaml declares each stage's code honestly: the source files a stage imports are its
deps (so editing one reruns exactly the stages that use it), and nothing else is."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

IMPORTED = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("stage", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
for name in sorted(sys.modules):
    if name == "videolm" or name.startswith("videolm."):
        print(sys.modules[name].__file__)
"""


def imported_sources(script: str) -> set[str]:
    """Project source files (relative paths) loaded by importing a stage script, less the
    subpackages' `__init__.py` files (which hold no code: `test_package_inits_hold_no_code`).
    The package's own `__init__.py` sets how OpenMP threads wait: a dep of every stage."""
    out = subprocess.run([sys.executable, "-c", IMPORTED, script], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    files = {Path(line).resolve().relative_to(ROOT).as_posix() for line in out.split()}
    return {f for f in files if not f.endswith("/__init__.py") or f == "src/videolm/__init__.py"}


def test_package_inits_hold_no_code() -> None:
    """A subpackage's `__init__.py` is its docstring alone: no stage's result can depend on it."""
    for init in sorted((ROOT / "src/videolm").glob("*/__init__.py")):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), init


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_match_imports(name: str) -> None:
    stage = STAGES[name]
    script = stage["cmd"].split()[-1]
    declared = {d for d in stage["deps"] if d.startswith("src/")}
    imported = imported_sources(script)
    covered = {f for f in imported if any(f == d or f.startswith(d + "/") for d in declared)}
    assert script in stage["deps"]
    assert imported - covered == set(), f"{name}: imports these but does not declare them"
    unused = {d for d in declared if not any(f == d or f.startswith(d + "/") for f in imported)}
    assert unused == set(), f"{name}: declares these but does not import them"
