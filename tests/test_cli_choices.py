"""The CLI's fixed choices are the lists the code itself accepts (the CLI keeps heavy
modules out of its start-up, so some lists are written there again: they must agree)."""

import click

from satn import cli
from satn.baselines.classify import CLASSIFIERS
from satn.baselines.features import FEATURE_SETS
from satn.config import CORPORA, FEATURE_KINDS, PROTOCOLS
from satn.demo.synth import BACKENDS
from satn.report import LAYOUTS


def _choices(command: click.Command, option: str) -> list[str]:
    param = next(p for p in command.params if p.name == option)
    assert isinstance(param.type, click.Choice), f"{command.name} --{option} is not a choice"
    return list(param.type.choices)


def test_cli_choices_are_the_codes_own_lists():
    assert _choices(cli.train, "corpus") == list(CORPORA)
    assert _choices(cli.train, "protocol") == list(PROTOCOLS)
    assert _choices(cli.features, "kind") == list(FEATURE_KINDS)
    assert _choices(cli.baseline, "feature_sets") == list(FEATURE_SETS)
    assert _choices(cli.baseline, "classifiers") == list(CLASSIFIERS)
    assert _choices(cli.demo_corpus, "backend") == ["auto", *BACKENDS]
    assert _choices(cli.report, "layout") == list(LAYOUTS)
