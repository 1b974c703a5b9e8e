"""What a fold run holds while it trains and once it ends: the data of its best epoch
from the first improvement on, the pictures of its final best when it ends."""

import torch
from fakes import MemoryDataset

from satn.config import ExperimentConfig


def _files(client, run_id: str, path: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, path)}


def test_a_fold_run_keeps_its_best_data_at_once_and_draws_pictures_when_it_ends(tmp_path):
    from mlflow.tracking import MlflowClient

    from satn.runner import CrossValidation
    from satn.tracking import MlflowObserver, ensure_experiment

    torch.set_num_threads(1)
    cfg = ExperimentConfig().override({
        "model.tcn.channels": 8, "model.attention.heads": 2, "model.tcn.dilations": "1",
        "train.epochs": 3, "train.batch_size": 16, "train.device": "cpu"})
    exp = CrossValidation(cfg, MemoryDataset(per_speaker_class=2), folds=[1])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    obs = MlflowObserver(uri, ensure_experiment(uri, "t"), run_name="t")
    client = MlflowClient(tracking_uri=uri)
    during: dict[int, set[str]] = {}

    class Look:  # what a tuner stopping the trial after this epoch would leave
        def on_start(self, cv):
            pass

        def on_epoch(self, cv, epoch, stats, final):
            if final is None:
                run_id = obs.fold_runs["fold1"]
                during[epoch] = (_files(client, run_id, "confusion")
                                 | _files(client, run_id, "attention")
                                 | _files(client, run_id, "checkpoint"))

    exp.run([obs, Look()])
    probes = exp.prepared[0].data.probe_ids
    assert probes and during
    for files in during.values():  # the best so far is all there, as data
        assert {"checkpoint/best.pt", "confusion/dev.csv", "confusion/test.csv",
                "attention/index.json"} <= files
        assert len([f for f in files if f.endswith(".npy")]) == len(probes)
        assert not [f for f in files if f.endswith(".png")]
    run_id = obs.fold_runs["fold1"]
    assert client.get_run(run_id).info.status == "FINISHED"
    attention = _files(client, run_id, "attention")
    npy = sorted(f[:-4] for f in attention if f.endswith(".npy"))
    assert npy == sorted(f[:-4] for f in attention if f.endswith(".png"))  # one per array
    assert _files(client, run_id, "confusion") == {
        f"confusion/{s}.{e}" for s in ("dev", "test") for e in ("csv", "png")}
