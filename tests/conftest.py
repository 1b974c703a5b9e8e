"""Shared test fixtures. No environment is prepared here: satn must set what Ray and
MLflow need itself, the way a user's shell runs it (see tests/test_exposure.py)."""

import os
from pathlib import Path

import pytest

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
