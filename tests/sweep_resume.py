"""What the two resume tests share: a tiny demo sweep, its space, and its MLflow runs.
(Two files, so that pytest-xdist runs the two minutes-long tests on two workers.)"""

from __future__ import annotations

from satn.tracking import open_client

TINY = {
    "data": {"corpus": "demo", "demo_per_class": 2},
    "folds": {"scheme": "speaker_kfold", "k": 3},  # three folds: resuming, not folds, is tested
    "model": {"tcn": {"channels": 8, "dilations": [1]}, "attention": {"heads": 2}},
    "train": {"epochs": 4, "batch_size": 8, "lr": 3e-3, "device": "cpu"},
}
# two trials: one that finished before the kill (never rerun), one it interrupted
SPACE = {"name": "resume", "metric": "dev_ua_best", "mode": "max", "num_samples": 2,
         "seed": 0, "scheduler": {"kind": "fifo"},
         "params": {"train.lr": {"loguniform": [1e-3, 5e-3]}}}


def sweep_runs(uri: str):
    client = open_client(uri)
    exp = client.get_experiment_by_name("satn")
    if exp is None:
        return client, []
    return client, client.search_runs([exp.experiment_id], "tags.`satn.sweep` = 'r1'")
