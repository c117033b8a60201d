"""Every third-party module noisyclean imports at module level is a declared dependency.

Optional extras (cleanlab, ray, s3fs, ...) are imported inside the functions that need
them; a module-level import of a package that only an extra or a transitive dependency
brings breaks the README's first command on a fresh install (as scipy once did).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

# Python 3.11's TOML reader; on 3.10 (also supported) the test is skipped.
tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[1]


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = (re.match(r"[A-Za-z0-9_.-]+", dep) for dep in project["dependencies"])
    return {_norm(m[0]) for m in names if m}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _module_level_imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the files that import it at module level."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "noisyclean").rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "noisyclean" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_module_level_imports_are_declared_dependencies() -> None:
    declared = _declared()
    dists = md.packages_distributions()
    missing = {
        module: sorted(files)
        for module, files in _module_level_imports().items()
        if not {_norm(d) for d in dists.get(module, [module])} & declared
    }
    assert not missing, f"imported at module level but not in [project].dependencies: {missing}"
