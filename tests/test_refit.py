"""Refit after selection by inner folds: the refit trains on every training speaker of its
outer fold and nothing else, for the epochs the inner folds' dev curves chose, and the outer
test never moves it. The CLI test runs the installed `satn refit` on a run of `satn train`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fakes import MemoryDataset
from test_folds import ravdess_meta, speakers_of

from satn.config import ConfigError, ExperimentConfig, FoldConfig
from satn.folds import make_folds, member_folds, refit_folds
from satn.refit import chosen_epoch, mean_curve, refit


def test_a_refit_trains_on_every_speaker_its_inner_folds_were_dealt_from():
    meta = ravdess_meta()
    outer = make_folds(meta, FoldConfig(scheme="speaker_kfold", k=4, dev_groups=1))
    refits = refit_folds(meta, outer)
    inner = member_folds(meta, outer, inner_k=3)
    for fold, r in zip(outer, refits, strict=True):
        assert r.name == f"{fold.name}-refit" and r.scored_as == fold.name
        assert r.dev == () and r.test == fold.test
        assert set(r.train) == set(fold.train) | set(fold.dev)
        pool = set().union(*(set(m.train) | set(m.dev) for m in inner
                             if m.scored_as == fold.name))
        assert set(r.train) == pool  # exactly the speakers the inner folds chose among
        assert not speakers_of(meta, r.train) & speakers_of(meta, r.test)
        order = {u: i for i, u in enumerate(meta["id"])}
        assert list(r.train) == sorted(r.train, key=order.get)  # metadata row order


def test_the_chosen_epoch_is_where_the_mean_inner_curve_peaks():
    # each curve alone peaks elsewhere (3 and 1); their mean peaks at epoch 2
    assert chosen_epoch([[0.1, 0.6, 0.7], [0.9, 0.6, 0.2]]) == 2
    assert chosen_epoch([[0.5, 0.7, 0.7, 0.7]]) == 2  # a tie: the earliest, shorter training
    # a model stopped early by patience: only the epochs every model ran count
    assert mean_curve([[0.2, 0.4, 0.9], [0.4, 0.6]]) == pytest.approx({1: 0.3, 2: 0.5})
    assert chosen_epoch([[0.2, 0.4, 0.9], [0.4, 0.6]]) == 2
    with pytest.raises(ValueError, match="non-empty"):
        chosen_epoch([[0.5], []])


def _cfg(**over):
    return ExperimentConfig().override({
        "model.tcn.channels": 8, "model.attention.heads": 2, "model.tcn.dilations": "1,2",
        "train.epochs": 3, "train.batch_size": 16, "train.device": "cpu",
        "folds.scheme": "speaker_kfold", "folds.k": 5, "folds.dev_groups": 1,
        "selection.inner_k": 2, **over})


class _Relabelled(MemoryDataset):
    """The same features, with the labels of ``ids`` moved to another class."""

    def __init__(self, ids, **kw):
        super().__init__(**kw)
        moved = self.meta["id"].isin(ids)
        classes = sorted(set(self.meta["label"]))
        self.meta.loc[moved, "label"] = [classes[(classes.index(c) + 1) % len(classes)]
                                         for c in self.meta.loc[moved, "label"]]


def test_a_refit_trains_the_chosen_epochs_and_never_learns_from_the_test_side():
    torch.set_num_threads(1)
    data = MemoryDataset(per_speaker_class=2)
    cfg = _cfg()
    lines = []
    [r] = refit(cfg, data, {"fold2": 2}, perturbed=[], echo=lines.append)
    outer = make_folds(data.meta, cfg.folds)[1]
    assert r.name == "fold2" and r.epoch == 2
    assert sum("epoch" in ln and "train loss" in ln for ln in lines) == 2
    assert sorted(r.test.ids) == sorted(outer.test)
    assert r.test.probs.shape == (len(outer.test), 4)
    # other labels on the test side: the same model, the same probabilities
    [again] = refit(cfg, _Relabelled(outer.test, per_speaker_class=2), {"fold2": 2},
                    perturbed=[], echo=lambda _: None)
    assert np.array_equal(again.test.probs, r.test.probs)
    assert all(torch.equal(again.state_dict[k], v) for k, v in r.state_dict.items())
    # ... while other labels on its training side change what it learns
    [moved] = refit(cfg, _Relabelled(outer.dev, per_speaker_class=2), {"fold2": 2},
                    perturbed=[], echo=lambda _: None)
    assert not np.array_equal(moved.test.probs, r.test.probs)


def test_a_refit_refuses_folds_and_epochs_its_config_does_not_have():
    data = MemoryDataset(per_speaker_class=1)
    with pytest.raises(ConfigError, match="no outer fold"):
        refit(_cfg(), data, {"fold9": 1}, perturbed=[])
    with pytest.raises(ConfigError, match=r"outside 1..train.epochs=3"):
        refit(_cfg(), data, {"fold1": 4}, perturbed=[])


# ---------------------------------------------------------------- the installed command

SATN = Path(sys.executable).with_name("satn")
TINY = {
    "data": {"corpus": "demo", "demo_per_class": 2},
    "model": {"tcn": {"channels": 16, "dilations": [1, 2]}, "attention": {"heads": 2}},
    "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "device": "cpu"},
    "selection": {"inner_k": 2},
}


def _satn(ws: Path, *args, code: int = 0) -> str:
    res = subprocess.run([str(SATN), *map(str, args)], cwd=ws, capture_output=True, text=True,
                         timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                           "HOME": str(ws)})
    assert res.returncode == code, res.stdout + res.stderr
    return res.stdout + res.stderr


@pytest.mark.slow
def test_satn_refit_logs_a_run_that_compare_and_predict_read(tmp_path):
    from mlflow.tracking import MlflowClient

    from satn.tracking import load_predictions

    ws = tmp_path
    (ws / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (ws / "runtime.yaml").write_text(yaml.safe_dump({
        "features_dir": str(ws / "features"), "data_dir": str(ws / "data"),
        "mlflow": {"tracking_uri": f"sqlite:///{ws / 'mlflow.db'}", "experiment": "rf"}}))
    common = ["--config", ws / "tiny.yaml", "--ray-config", ws / "runtime.yaml"]
    out = _satn(ws, "train", *common, "--fold", "1", "--fold", "2")
    inner = out.split("MLflow run ")[1].split()[0]
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    out = _satn(ws, "refit", inner, "--ray-config", ws / "runtime.yaml")
    assert "epochs chosen by the inner folds: fold1 " in out and "(cached)" in out
    run = out.split("MLflow run ")[1].split()[0]
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(run)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["satn.kind"] == "refit"
    assert parent.data.tags["satn.refit_of"] == inner
    assert parent.info.experiment_id == client.get_run(inner).info.experiment_id
    a, b = load_predictions(uri, run), load_predictions(uri, inner)
    assert sorted(a["fold"].unique()) == ["fold1", "fold2"]
    # dev: the inner folds' pooled predictions, unchanged (the selection score stays theirs)
    dev_a = a[a["side"] == "dev"].sort_values("id").reset_index(drop=True)
    dev_b = b[b["side"] == "dev"].sort_values("id").reset_index(drop=True)
    assert dev_a[["fold", "id", "true", "pred"]].equals(dev_b[["fold", "id", "true", "pred"]])
    # test: the same utterances, scored by the refit
    assert sorted(a.loc[a["side"] == "test", "id"]) == sorted(b.loc[b["side"] == "test", "id"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{run}'")
    for c in children:
        assert 1 <= c.data.metrics["refit_epoch"] <= 2
        assert {x.path for x in client.list_artifacts(c.info.run_id, "checkpoint")} == {
            "checkpoint/best.pt"}
    compared = _satn(ws, "compare", run, inner, "--tracking-uri", uri, "--resamples", "200")
    assert "UA: A - B =" in compared
    wav = sorted((ws / "data" / "demo-corpus").rglob("*.wav"))[0]
    predicted = _satn(ws, "predict", wav, "--model", run, "--tracking-uri", uri,
                      "--format", "csv")
    assert wav.name in predicted
    # a run that chose its epochs on one dev side has nothing to refit by
    plain = _satn(ws, "train", *common, "--fold", "1", "--set", "selection.inner_k=0")
    plain_id = plain.split("MLflow run ")[1].split()[0]
    refused = _satn(ws, "refit", plain_id, "--ray-config", ws / "runtime.yaml", code=1)
    assert "selection.inner_k = 0" in refused and "Traceback" not in refused


def test_the_run_features_are_found_by_key_and_other_features_are_refused(tmp_path):
    from satn.config import RuntimeConfig
    from satn.prepare import dataset_of_run, prepare_dataset

    runtime = RuntimeConfig(features_dir=str(tmp_path / "features"),
                            data_dir=str(tmp_path / "data"))
    cfg = ExperimentConfig().override({"data.corpus": "demo", "data.demo_per_class": 1})
    _, info = prepare_dataset(cfg, runtime, progress=False, echo=lambda _: None)
    said = []
    found = dataset_of_run(cfg, runtime, info.key, echo=said.append)
    assert found.manifest["key"] == info.key and "(cached)" in said[0]
    # features the corpus no longer gives (its files changed since the run): refused
    with pytest.raises(ConfigError, match="the run trained on features 0123456789abcdef"):
        dataset_of_run(cfg, runtime, "0123456789abcdef", echo=lambda _: None)
