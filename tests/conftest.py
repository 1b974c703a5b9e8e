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


# the files whose tests take minutes (`--durations`, 2 cores), longest first; the order
# only decides the suite's wall time, never a result
LONGEST = ("test_resume.py", "test_cli_e2e.py", "test_resume_retry.py", "test_baselines_cli.py",
           "test_placement.py", "test_slow.py", "test_exposure.py", "test_tacn_e2e.py")


def pytest_collection_modifyitems(config, items):
    """The longest files first, then the other files with slow tests, then the rest, each
    file's own order kept (some files' tests build on the ones before). With `-n 3`
    (`--dist loadfile --no-loadscope-reorder`, pyproject.toml) the long files start at
    once and the fast files fill the gaps, rather than one long file running alone at
    the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item) -> tuple[int, int]:
        if item.path.name in LONGEST:
            return 0, LONGEST.index(item.path.name)
        return (1 if item.path in slow_files else 2), 0

    items.sort(key=rank)


@pytest.fixture(autouse=True, scope="session")
def _one_share_of_the_cores_per_worker():
    """Under pytest-xdist, torch in each worker gets its share of the cores: two workers on
    two cores with two threads each spend their time waiting on each other. Only this test
    process's own arithmetic; the commands the tests start choose their threads themselves."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    yield
