"""Sweep pieces that need no Ray cluster (the full sweep runs in test_cli_e2e)."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from satn.config import ConfigError
from satn.space import load_space
from satn.sweep import COMPLETED, best_completed, param_space, trial_outcome


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


def _result(score, completed=True, error=None, name="t"):
    metrics = {"dev_ua_best": score, COMPLETED: float(completed), "trial_id": name}
    return SimpleNamespace(metrics=metrics, error=error, config={"id": name}, path=f"/r/{name}")


def test_best_is_chosen_among_trials_that_trained_to_the_end():
    results = [_result(0.61, name="ok"), _result(0.95, completed=False, name="asha"),
               _result(0.99, error=RuntimeError("oom"), name="err"), _result(0.58, name="ok2")]
    assert best_completed(results, "dev_ua_best", "max").config == {"id": "ok"}
    assert best_completed(results, "dev_ua_best", "min").config == {"id": "ok2"}
    assert best_completed(results[1:3], "dev_ua_best", "max") is None


def test_a_space_with_nothing_to_search_is_refused(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text(yaml.safe_dump({"name": "empty", "params": {}}))
    with pytest.raises(ConfigError, match="params is empty"):
        load_space(str(path))


def test_an_unwritable_results_folder_stops_the_sweep_before_ray(tmp_path, monkeypatch):
    from dataclasses import replace

    from satn.config import ExperimentConfig, RuntimeConfig
    from satn.sweep import run_sweep

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    started = []
    monkeypatch.setattr("satn.sweep.init_ray", lambda runtime: started.append(1))
    runtime = replace(RuntimeConfig(), storage_path=str(blocker / "ray"))
    with pytest.raises(ConfigError, match=r"ray storage_path: cannot write to .*a-file/ray"):
        run_sweep(ExperimentConfig(), load_space("satn_tcn"), runtime, "unused")
    assert not started and blocker.read_text() == "not a folder"


def test_run_names_say_the_variant_and_the_searched_values():
    from satn.config import ExperimentConfig
    from satn.sweep import run_name

    cfg = ExperimentConfig().override({"model.variant": "tcn_soft"})
    name = run_name("s1", cfg, {"train.lr": 0.00123456, "model.tcn.dilations": "1,2,4",
                                "model.variant": "tcn_soft"})
    assert name == "s1/tcn_soft dilations=1,2,4, lr=0.00123"
    assert run_name("s1", cfg, {}) == "s1/tcn_soft"


def test_a_trial_restored_without_a_checkpoint_continues_from_its_own_newest_state(tmp_path):
    import torch

    from satn.sweep import TRIAL_STATE, own_trial_state

    assert own_trial_state(None) is None and own_trial_state(tmp_path / "absent") is None
    assert own_trial_state(tmp_path) is None  # a trial that never reported starts afresh
    for k in (0, 1):
        (tmp_path / f"checkpoint_00000{k}").mkdir()
        torch.save({"epoch": k + 1}, tmp_path / f"checkpoint_00000{k}" / TRIAL_STATE)
    (tmp_path / "checkpoint_000002").mkdir()  # the killed process was writing this one
    (tmp_path / "checkpoint_000002" / TRIAL_STATE).write_bytes(b"\x80\x02half")
    (tmp_path / "checkpoint_000003").mkdir()  # and had only made this folder
    assert own_trial_state(str(tmp_path)) == {"epoch": 2}
    # resumed once already: that attempt numbered from 0 again, so the newest is not the last
    os.utime(tmp_path / "checkpoint_000002" / TRIAL_STATE, (1, 1))  # the old half-written one
    torch.save({"epoch": 3}, tmp_path / "checkpoint_000000" / TRIAL_STATE)
    assert own_trial_state(str(tmp_path)) == {"epoch": 3}


def test_pruned_checkpoints_keep_their_folders_so_a_lagging_record_still_restores(tmp_path):
    """Tune's record may name any checkpoint folder of the trial: all of them stay, only
    the newest KEEP states are kept, and the trial continues from the newest."""
    import torch

    from satn.sweep import TRIAL_STATE, own_trial_state, prune_states

    prune_states(None, 2)
    prune_states(tmp_path / "absent", 2)
    for k in range(5):
        (tmp_path / f"checkpoint_00000{k}").mkdir()
        torch.save({"epoch": k + 1}, tmp_path / f"checkpoint_00000{k}" / TRIAL_STATE)
        os.utime(tmp_path / f"checkpoint_00000{k}" / TRIAL_STATE, (100 + k, 100 + k))
    prune_states(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"checkpoint_00000{k}"
                                                          for k in range(5)]
    kept = sorted(f.parent.name for f in tmp_path.glob(f"*/{TRIAL_STATE}"))
    assert kept == ["checkpoint_000003", "checkpoint_000004"]
    assert own_trial_state(tmp_path) == {"epoch": 5}
    prune_states(tmp_path, 2)  # idempotent
    assert len(list(tmp_path.glob(f"*/{TRIAL_STATE}"))) == 2


def test_a_restored_trial_looks_for_its_checkpoints_in_the_storage_not_the_session():
    from satn.sweep import trial_storage_dir

    staging = "/tmp/ray/session_2026/artifacts/2026-12-04/r1/driver_artifacts/run_trial_ab_1_x"
    assert trial_storage_dir("/shared/ray-results/r1", staging) == \
        Path("/shared/ray-results/r1/run_trial_ab_1_x")
    assert trial_storage_dir("s3://bucket/r1", staging) is None  # Tune's own record only
    assert trial_storage_dir(None, staging) is None and trial_storage_dir("/x", None) is None
