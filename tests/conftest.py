"""Shared test setup: keep every service on 127.0.0.1 and out of the user's home."""

import os
from pathlib import Path

import pytest

# Set before ray / mlflow are imported anywhere in the test session.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# ../shared/corpora beside the checkout; SATN_SHARED_CORPORA names it elsewhere (a worktree)
SHARED_CORPORA = Path(os.environ.get("SATN_SHARED_CORPORA")
                      or Path(__file__).resolve().parents[2] / "shared" / "corpora")


@pytest.fixture
def shared_corpora() -> Path:
    """../shared/corpora when present (developers' machines), else skip."""
    if not SHARED_CORPORA.is_dir():
        pytest.skip(f"real corpora not found at {SHARED_CORPORA} (only on development machines)")
    return SHARED_CORPORA


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
