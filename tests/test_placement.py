"""Folds as Ray workers: each fold of a trial trains in its own process, at the same time
as the others, on the device Ray assigned to it (GPUs faked on a CPU machine). Three
folds, not IEMOCAP's five: each worker imports torch, and three show the packing."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

from satn.config import (
    ConfigError,
    ExperimentConfig,
    RayConfig,
    ResourceConfig,
    Resources,
    RuntimeConfig,
)

TINY = {"data": {"corpus": "demo", "demo_per_class": 2},
        "folds": {"scheme": "speaker_kfold", "k": 3},
        "model": {"tcn": {"channels": 8, "dilations": [1]}, "attention": {"heads": 2}},
        "train": {"epochs": 1, "batch_size": 8, "device": "auto"}}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from satn.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("placement")
    runtime = RuntimeConfig(storage_path=str(root / "ray"), features_dir=str(root / "features"),
                            data_dir=str(root / "data"))
    cfg, info = prepare_dataset(ExperimentConfig.from_dict(TINY), runtime, progress=False,
                                echo=lambda s: None)
    return root, cfg, runtime, info.uri


@pytest.mark.slow  # three Ray workers, each importing torch: about a minute on 2 cores
def test_folds_train_at_once_in_their_own_workers_on_the_gpus_ray_gave(demo, tmp_path):
    from satn.space import load_space
    from satn.sweep import run_sweep
    from satn.tracking import open_client

    root, cfg, runtime, uri = demo
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"name": "p", "num_samples": 1, "scheduler": {"kind": "fifo"},
                                     "params": {"train.lr": {"choice": [0.003]}}}))
    # two fake GPUs; 0.4 of one per fold packs two folds per GPU: 2 + 1
    runtime = replace(runtime, ray=RayConfig(num_cpus=2, num_gpus=2),
                      resources=ResourceConfig(per_fold=Resources(cpu=0.3, gpu=0.4),
                                               fold_placement="workers", driver_cpu=0.2),
                      mlflow=replace(runtime.mlflow, tracking_uri=f"sqlite:///{tmp_path}/m.db"))
    result = run_sweep(cfg, load_space(str(space)), runtime, uri, name="placement", verbose=0)
    assert result.n_errors == 0 and result.best_run_id

    client = open_client(result.tracking_uri)
    folds = client.search_runs([client.get_run(result.best_run_id).info.experiment_id],
                               "tags.`satn.level` = 'fold'")
    where = {r.data.tags["satn.fold"]: json.loads(r.data.tags["satn.placement"]) for r in folds}
    assert sorted(where) == [f"fold{i}" for i in range(1, 4)]
    pids = {w["pid"] for w in where.values()}
    assert len(pids) == 3  # three processes, one per fold
    # every fold's first epoch was under way while every other's was: they ran at once
    spans = [w["epoch_spans"][0] for w in where.values()]
    assert max(s for s, _ in spans) < min(e for _, e in spans)
    # each fold saw exactly the GPU Ray assigned it, and at most two folds share one
    per_gpu: dict[str, int] = {}
    for w in where.values():
        assert len(w["gpu_ids"]) == 1 and w["cuda_visible_devices"] == w["gpu_ids"][0]
        per_gpu[w["gpu_ids"][0]] = per_gpu.get(w["gpu_ids"][0], 0) + 1
        assert w["threads"] == 1  # a fraction of a CPU: one torch thread, no oversubscription
        assert w["device"] == "cpu"  # the GPUs are fake here: no CUDA to put the fold on
    assert sorted(per_gpu.values()) == [1, 2]


@pytest.mark.parametrize("resources, ray, message", [
    (dict(per_fold=Resources(cpu=1.0), fold_placement="workers"), RayConfig(num_cpus=2),
     "one trial needs 3.2 CPUs"),
    (dict(per_fold=Resources(cpu=0.2, gpu=0.6), fold_placement="workers"),
     RayConfig(num_cpus=2, num_gpus=2), "needs 3 GPU"),
    (dict(per_fold=Resources(cpu=4.0)), RayConfig(num_cpus=2), "a fold needs 4 CPU"),
])
def test_resources_that_cannot_be_placed_are_one_error_before_any_trial(
        demo, resources, ray, message, monkeypatch):
    from satn.space import load_space
    from satn.sweep import run_sweep

    root, cfg, runtime, uri = demo
    monkeypatch.setattr("satn.sweep.repair_runs", lambda *a, **k: [], raising=False)
    runtime = replace(runtime, ray=ray, resources=ResourceConfig(**resources),
                      mlflow=replace(runtime.mlflow, tracking_uri=f"sqlite:///{root}/bad.db"))
    with pytest.raises(ConfigError, match=message):
        run_sweep(cfg, load_space("satn_tcn"), runtime, uri, name="bad", verbose=0)


def test_per_fold_settings_are_checked_where_they_are_written():
    with pytest.raises(ConfigError, match="resources.per_fold.gpu must be a fraction"):
        Resources(gpu=1.5)
    with pytest.raises(ConfigError, match="resources.fold_placement must be one of"):
        ResourceConfig(fold_placement="processes")
    assert Resources(cpu=2.5).threads == 2 and Resources(cpu=0.25).threads == 1
    bundles = ResourceConfig(per_fold=Resources(cpu=1, gpu=0.2),
                             fold_placement="workers").bundles(5)
    assert bundles == [{"CPU": 0.2}] + [{"CPU": 1, "GPU": 0.2}] * 5
    assert ResourceConfig(per_fold=Resources(cpu=1), folds_in_parallel=5).bundles(5) == [
        {"CPU": 5}]


def test_gpu_shares_pack_first_fit():
    from satn.sweep import _gpus_to_pack

    assert _gpus_to_pack([0.2] * 5) == 1
    assert _gpus_to_pack([0.4] * 5) == 3
    assert _gpus_to_pack([0.6, 0.4, 0.5, 0.5]) == 2
    assert _gpus_to_pack([]) == 0


def test_a_trials_placement_group_has_a_bundle_for_every_member_model(demo):
    from satn.sweep import count_folds

    _, cfg, _, uri = demo
    assert count_folds(cfg, uri) == 3
    inner = cfg.override({"selection.inner_k": 2, "selection.seeds": 2})
    assert count_folds(inner, uri) == 3 * 2 * 2  # each fold: 2 inner groups x 2 seeds
