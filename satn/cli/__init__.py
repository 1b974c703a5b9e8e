"""Command line: each command parses options, builds a config and calls one function.

``satn`` is the group in :mod:`.common`; its commands live in one module per kind of
work (:mod:`.data`, :mod:`.training`, :mod:`.scores`, :mod:`.teacher`, :mod:`.tacn`,
:mod:`.runs`), and ``satn-sweep`` in :mod:`.sweep`.
"""

# importing a command module registers its commands on the group
from satn.cli import data, runs, scores, tacn, teacher, training  # noqa: F401
from satn.cli.common import load_runtime, main
from satn.cli.sweep import sweep_main

__all__ = ["load_runtime", "main", "sweep_main"]
