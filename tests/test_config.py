"""Config dataclasses: YAML round trip, overrides with coercion, clear errors."""

import dataclasses

import pytest
import yaml

from satn.config import ConfigError, ExperimentConfig, RuntimeConfig


def test_frozen():
    cfg = ExperimentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.heads = 2


def test_override_coerces_strings_as_optuna_and_cli_give_them():
    cfg = ExperimentConfig().override({
        "model.dilations": "1,2,4", "model.heads": "8", "train.lr": "3e-4",
        "train.max_frames": "none", "model.causal": "false", "data.classes": "neu,ang"})
    assert cfg.model.dilations == (1, 2, 4)
    assert cfg.model.heads == 8 and cfg.train.lr == 3e-4
    assert cfg.train.max_frames is None and cfg.model.causal is False
    assert cfg.data.classes == ("neu", "ang")
    assert ExperimentConfig().model.dilations == (1, 2, 4, 8, 16)  # the original is untouched


def test_flat_round_trips_through_override():
    cfg = ExperimentConfig().override({"model.dilations": (1, 1, 2), "data.label_map": {"exc": "hap",
                                                                                        "fru": "ang"}})
    again = ExperimentConfig().override(cfg.flat())
    assert again == cfg


def test_yaml_round_trip(tmp_path):
    cfg = ExperimentConfig().override({"model.heads": 2, "folds.dev_speaker": "F"})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert ExperimentConfig.from_yaml(path) == cfg


@pytest.mark.parametrize("overrides, match", [
    ({"model.nope": 1}, "unknown config key 'nope'"),
    ({"nope.heads": 1}, "unknown config section"),
    ({"model.heads": "many"}, "cannot read 'many' as int"),
    ({"train.epochs": 2.5}, "as int"),
])
def test_bad_overrides_say_what(overrides, match):
    with pytest.raises(ConfigError, match=match):
        ExperimentConfig().override(overrides)


def test_bad_yaml_says_where(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {heads: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        ExperimentConfig.from_yaml(path)
    path.write_text("model: {size: 3}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        ExperimentConfig.from_yaml(path)


def test_every_experiment_yaml_in_the_repo_loads(repo_root):
    files = sorted((repo_root / "experiments").glob("*.yaml"))
    assert files
    for f in files:
        ExperimentConfig.from_yaml(f)


def test_runtime_configs_load(repo_root):
    local = RuntimeConfig.from_yaml(repo_root / "ray_config.yaml")
    assert local.ray.address == "local" and local.ray.node_ip == "127.0.0.1"
    cluster = RuntimeConfig.from_yaml(repo_root / "cluster" / "runtime.yaml")
    assert cluster.ray.address == "auto"
    assert cluster.resources.per_trial["gpu"] == pytest.approx(1.0)
