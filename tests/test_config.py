"""Config dataclasses: YAML round trip, overrides with coercion, clear errors."""

import dataclasses

import pytest
import yaml

from satn.config import ConfigError, ExperimentConfig, RuntimeConfig


def test_frozen():
    cfg = ExperimentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.attention.heads = 2


def test_override_coerces_strings_as_optuna_and_cli_give_them():
    cfg = ExperimentConfig().override({
        "model.tcn.dilations": "1,2,4", "model.attention.heads": "8", "train.lr": "3e-4",
        "train.max_frames": "none", "model.tcn.causal": "false", "data.classes": "neu,ang",
        "model.rnn.cell": "gru", "model.attention.energy_dim": "none"})
    assert cfg.model.tcn.dilations == (1, 2, 4)
    assert cfg.model.attention.heads == 8 and cfg.train.lr == 3e-4
    assert cfg.train.max_frames is None and cfg.model.tcn.causal is False
    assert cfg.data.classes == ("neu", "ang") and cfg.model.rnn.cell == "gru"
    assert ExperimentConfig().model.tcn.dilations == (1, 2, 4, 8, 16)  # the original is untouched


def test_model_settings_nest_by_family_and_flatten_to_dotted_keys():
    flat = ExperimentConfig().flat()
    assert flat["model.tcn.dilations"] == "1,2,4,8,16"
    assert flat["model.attention.form"] == "multihead" and flat["model.rnn.hidden"] == 128
    assert "model.heads" not in flat and "model.channels" not in flat
    assert flat["transfer.weight"] == 1.0


def test_flat_round_trips_through_override():
    cfg = ExperimentConfig().override({"model.tcn.dilations": (1, 1, 2), "data.label_map": {"exc": "hap",
                                                                                        "fru": "ang"}})
    again = ExperimentConfig().override(cfg.flat())
    assert again == cfg


def test_yaml_round_trip(tmp_path):
    cfg = ExperimentConfig().override({"model.attention.heads": 2, "folds.dev_speaker": "F"})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert ExperimentConfig.from_yaml(path) == cfg


@pytest.mark.parametrize("overrides, match", [
    ({"model.nope": 1}, "unknown config key 'nope'"),
    ({"nope.heads": 1}, "unknown config section"),
    ({"model.attention.heads": "many"}, "cannot read 'many' as int"),
    ({"train.epochs": 2.5}, "as int"),
])
def test_bad_overrides_say_what(overrides, match):
    with pytest.raises(ConfigError, match=match):
        ExperimentConfig().override(overrides)


def test_bad_yaml_says_where(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {attention: {heads: [1,\n")
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


@pytest.mark.parametrize("overrides, match", [
    ({"features.kind": "bogus"}, "features.kind must be one of logmel"),
    ({"features.hop_ms": 0}, "features.hop_ms must give a hop of 1 sample or more"),
    ({"features.win_ms": 100}, r"features.win_ms must give a window of 1 to n_fft=512"),
    ({"features.n_mels": 0}, "features.n_mels must be at least 1"),
    ({"features.delta_width": 4}, "features.delta_width must be odd"),
    ({"features.f_max": 20000}, r"features.f_max must be in \(0, 8000\] Hz"),
    ({"features.f_min": 5000, "features.f_max": 4000}, "features.f_min must be in"),
    ({"train.device": "gpu"}, "train.device must be auto, cpu, cuda or cuda:N, not 'gpu'"),
    ({"train.lr": 0}, "train.lr must be > 0"),
    ({"train.epochs": 0}, "train.epochs must be at least 1"),
    ({"model.dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
    ({"model.tcn.dilations": "0,2"}, "model.tcn.dilations must be one or more positive"),
    ({"model.tcn.convs_per_block": 0}, "model.tcn.convs_per_block must be at least 1"),
    ({"model.rnn.cell": "transformer"}, "model.rnn.cell must be one of rnn, gru, lstm"),
    ({"model.attention.form": "bahdanau"}, "model.attention.form must be one of paper, multihead"),
    ({"model.attention.pooling": "last"}, "model.attention.pooling must be one of mean, max"),
    ({"transfer.kind": "logits"}, "transfer.kind must be one of activation, attention, both"),
    ({"transfer.pairs": "encoder.layer4"}, "transfer.pairs must be one or more student:teacher"),
    ({"transfer.weight": -1}, "transfer.weight must be >= 0"),
    ({"data.classes": "neu"}, "data.classes must name two or more distinct classes"),
    ({"data.protocol": "scripted"}, "data.protocol must be one of satn, full"),
    ({"folds.k": 1}, "folds.k must be at least 2"),
])
def test_values_out_of_range_name_the_key_and_the_rule(overrides, match):
    with pytest.raises(ConfigError, match=match):
        ExperimentConfig().override(overrides)


def test_every_bad_value_of_a_section_is_named_at_once():
    with pytest.raises(ConfigError, match="train.epochs .*; train.lr "):
        ExperimentConfig().override({"train.epochs": 0, "train.lr": -1})


def test_a_bad_value_in_a_yaml_file_is_caught_on_load(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"features": {"n_mels": -3}}))
    with pytest.raises(ConfigError, match=r"exp.yaml: features.n_mels must be at least 1"):
        ExperimentConfig.from_yaml(path)


def test_lists_typed_with_brackets_read_as_lists():
    cfg = ExperimentConfig().override({"data.classes": "[neu, hap, sad, ang, sur]",
                                       "model.tcn.dilations": "[1, 2, 4]"})
    assert cfg.data.classes == ("neu", "hap", "sad", "ang", "sur")
    assert cfg.model.tcn.dilations == (1, 2, 4)
