"""Search spaces: every space in the repo loads and validates; bad ones say why."""

import pytest

from satn.config import ConfigError, ExperimentConfig
from satn.space import ParamSpec, load_space


def test_every_space_in_the_repo_loads_and_validates(repo_root):
    spaces = sorted((repo_root / "experiments" / "spaces").glob("*.yaml"))
    assert {p.stem for p in spaces} >= {"satn_tcn", "satn_grid", "satn_table2"}
    with_teacher = ExperimentConfig().override({"transfer.teacher": "teacher.pt"})
    for path in spaces:
        space = load_space(str(path))
        space.validate(with_teacher)
        assert space.params


def test_named_lookup_and_dilations_travel_as_strings():
    space = load_space("satn_tcn")
    dil = space.params["model.tcn.dilations"]
    assert dil.kind == "choice" and all(isinstance(v, str) for v in dil.values)
    cfg = ExperimentConfig().override({"model.tcn.dilations": dil.values[0]})
    assert cfg.model.tcn.dilations == (1, 2, 4, 8, 16)


def test_grid_space_enumerates_named_variants():
    space = load_space("satn_grid")
    assert "model.variant" in space.grid and space.algorithm == "random"


def test_unknown_space_lists_known_ones():
    with pytest.raises(ConfigError, match="satn_tcn"):
        load_space("no_such_space")


@pytest.mark.parametrize("body, match", [
    ("params: {model.attention.heads: {choice: []}}", "non-empty list"),
    ("params: {train.lr: {loguniform: [0, 1]}}", "bad range"),
    ("params: {model.attention.heads: {normal: [0, 1]}}", "unknown kind"),
    ("params: {model.variant: {grid: [tcn_self]}}\nalgorithm: optuna", "need algorithm: random"),
    ("scheduler: {kind: hyperband}", "scheduler.kind"),
    ("trials: 3", "unknown key"),
])
def test_bad_spaces_say_why(tmp_path, body, match):
    path = tmp_path / "space.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=match):
        load_space(str(path))


def test_validate_catches_values_the_config_cannot_take(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params: {model.attention.heads: {choice: [2, many]}}")
    with pytest.raises(ConfigError, match="model.attention.heads='many'"):
        load_space(str(path)).validate(ExperimentConfig())
    path.write_text("params: {model.depth: {choice: [2]}}")
    with pytest.raises(ConfigError, match="depth"):
        load_space(str(path)).validate(ExperimentConfig())


def test_examples_span_the_range():
    spec = ParamSpec.parse("x", {"loguniform": [1e-4, 1e-2]})
    lo, mid, hi = spec.examples()
    assert lo == 1e-4 and hi == 1e-2 and lo < mid < hi



def test_a_grid_with_transfer_variants_needs_a_teacher_before_any_work():
    space = load_space("satn_table2")
    with pytest.raises(ConfigError, match="model.variant=blstm_soft_at trains with attention "
                                          "transfer: set transfer.teacher"):
        space.validate(ExperimentConfig())
    space.validate(ExperimentConfig().override({"transfer.teacher": "teacher.pt"}))
