"""The CLI's fixed choices are the lists the code itself accepts (the CLI keeps heavy
modules out of its start-up, so some lists are written there again: they must agree)."""

import click

from satn import cli
from satn.baselines.classify import CLASSIFIERS
from satn.baselines.features import FEATURE_SETS
from satn.config import CORPORA, FEATURE_KINDS, PROTOCOLS
from satn.demo.synth import BACKENDS
from satn.report import LAYOUTS


def _choices(name: str, option: str) -> list[str]:
    command = cli.main.commands[name]  # as `satn NAME --help` shows it
    param = next(p for p in command.params if p.name == option)
    assert isinstance(param.type, click.Choice), f"{command.name} --{option} is not a choice"
    return list(param.type.choices)


def test_cli_choices_are_the_codes_own_lists():
    assert _choices("train", "corpus") == list(CORPORA)
    assert _choices("train", "protocol") == list(PROTOCOLS)
    assert _choices("features", "kind") == list(FEATURE_KINDS)
    assert _choices("baseline", "feature_sets") == list(FEATURE_SETS)
    assert _choices("baseline", "classifiers") == list(CLASSIFIERS)
    assert _choices("demo-corpus", "backend") == ["auto", *BACKENDS]
    assert _choices("report", "layout") == list(LAYOUTS)
