"""MLflow and Ray sit at the outer layer: each is imported by one place in satn, so the
models, features and training run without them (and a trial's code never talks to a
tracker the driver does not know of)."""

import ast
from pathlib import Path

import satn

ROOT = Path(satn.__file__).parent


def _importers(top: str) -> set[str]:
    """satn's modules (paths relative to the package) that import ``top`` anywhere."""
    out = set()
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and
                     not node.level else [])
            if any(n == top or n.startswith(top + ".") for n in names):
                out.add(path.relative_to(ROOT).as_posix())
    return out


def test_only_the_tracking_package_imports_mlflow():
    found = _importers("mlflow")
    assert found and all(p.startswith("tracking/") for p in found), found


def test_only_the_sweep_module_imports_ray_and_optuna():
    assert _importers("ray") == {"sweep.py"}
    assert _importers("optuna") == {"sweep.py"}
