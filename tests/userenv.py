"""How tests run satn as a user would: the installed entry points, a bare environment."""

from __future__ import annotations

import sys
from pathlib import Path


def bare_env(home: Path) -> dict[str, str]:
    """What a new user's login shell has: a PATH and a HOME, nothing satn-specific."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1"}


def entry_point(name: str) -> str:
    """The installed console script ``name`` (satn, satn-sweep) of this environment."""
    return str(Path(sys.executable).with_name(name))
