"""Longer end-to-end checks (``pytest -m slow``): the shipped demo config learns,
and RAVDESS (development machines only) goes from wav files to a trained model."""

from __future__ import annotations

import pytest

from satn.config import ExperimentConfig, RuntimeConfig
from satn.prepare import prepare_dataset
from satn.runner import CrossValidation
from satn.store import open_dataset

pytestmark = pytest.mark.slow


def _runtime(tmp_path) -> RuntimeConfig:
    return RuntimeConfig(features_dir=str(tmp_path / "features"), data_dir=str(tmp_path / "data"))


def test_the_shipped_demo_config_learns_on_every_fold(repo_root, tmp_path):
    """The quick start's corpus and config, shortened: fold-mean test UA well above chance."""
    cfg = ExperimentConfig.from_yaml(repo_root / "experiments" / "demo.yaml").override(
        {"train.epochs": 6, "train.device": "cpu"})
    cfg, info = prepare_dataset(cfg, _runtime(tmp_path), progress=False, echo=lambda s: None)
    assert info.n_rows == 320 and info.n_problems == 0
    result = CrossValidation(cfg, open_dataset(info.uri)).run()
    assert len(result.folds) == 5
    assert result.test.ua_mean > 0.45, result.summary()  # chance is 0.25
    assert min(f.test.ua for f in result.folds) > 0.3


def test_ravdess_wavs_to_features_to_a_model_that_learns(repo_root, tmp_path, shared_corpora):
    cfg = ExperimentConfig.from_yaml(repo_root / "experiments" / "ravdess.yaml").override(
        {"data.root": str(shared_corpora / "ravdess"), "train.epochs": 6, "train.device": "cpu",
         "selection.inner_k": 0, "recipe.speeds": "[]"})  # one plain model: that it learns
    cfg, info = prepare_dataset(cfg, _runtime(tmp_path), progress=False, echo=lambda s: None)
    # actors 1-16: 16 x (4 neutral + 8 each of happy, sad, angry)
    assert info.n_rows == 448 and info.n_problems == 0
    ds = open_dataset(info.uri)
    assert ds.meta["speaker"].nunique() == 16
    result = CrossValidation(cfg, ds, folds=[1]).run()
    assert result.folds[0].test.ua > 0.3  # chance is 0.25; six epochs on one fold
