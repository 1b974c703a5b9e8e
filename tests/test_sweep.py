"""Sweep pieces that need no Ray cluster (the full sweep runs in test_cli_e2e)."""

from satn.space import load_space
from satn.sweep import COMPLETED, param_space, trial_outcome


def test_a_trial_tune_stopped_is_not_taken_for_a_completed_one():
    # Tune adds its reserved done=True to the last result of every trial ASHA stops
    assert trial_outcome({"done": True, "training_iteration": 1}, None) == "stopped_early"
    assert trial_outcome({"done": True, COMPLETED: True}, None) == "completed"
    assert trial_outcome({COMPLETED: True}, RuntimeError("boom")) == "error"


def test_param_space_maps_every_kind_to_a_tune_domain():
    from ray.tune.search.sample import Categorical, Float

    space = param_space(load_space("satn_tcn"))
    assert set(space) == set(load_space("satn_tcn").params)
    dil = space["model.tcn.dilations"]
    # lists travel as strings so that Optuna can hold them
    assert isinstance(dil, Categorical) and all(isinstance(c, str) for c in dil.categories)
    assert isinstance(space["train.lr"], Float) and space["train.lr"].lower > 0
    grid = param_space(load_space("satn_grid"))
    assert any(isinstance(v, dict) and "grid_search" in v for v in grid.values())
