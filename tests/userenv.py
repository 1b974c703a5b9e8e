"""How tests run satn as a user would: the installed entry points, a bare environment."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def bare_env(home: Path) -> dict[str, str]:
    """What a new user's login shell has: a PATH and a HOME, nothing satn-specific."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1"}


def entry_point(name: str) -> str:
    """The installed console script ``name`` (satn, satn-sweep) of this environment."""
    return str(Path(sys.executable).with_name(name))


def tiny_workspace(root: Path, config: dict, experiment: str, concurrent: int) -> Path:
    """``root`` with ``tiny.yaml`` (``config``) and a local ``runtime.yaml`` whose Ray,
    features, runs and MLflow store all live under ``root``."""
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    (root / "runtime.yaml").write_text(yaml.safe_dump({
        "ray": {"address": "local", "num_cpus": 2},
        "storage_path": str(root / "ray"), "features_dir": str(root / "features"),
        "data_dir": str(root / "data"), "max_concurrent_trials": concurrent,
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                   "experiment": experiment}}))
    return root
