"""What a fold run holds while it trains and once it ends: the data of its best epoch
from the first improvement on, the pictures of its final best when it ends."""

from pathlib import Path

import pytest
import torch
from fakes import MemoryDataset

from satn.config import ExperimentConfig


def _files(client, run_id: str, path: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, path)}


def _tiny(tmp_path, epochs: int):
    """A one-fold cross-validation of a tiny model, its MLflow observer and a client."""
    from mlflow.tracking import MlflowClient

    from satn.runner import CrossValidation
    from satn.tracking import MlflowObserver, ensure_experiment

    torch.set_num_threads(1)
    cfg = ExperimentConfig().override({
        "model.tcn.channels": 8, "model.attention.heads": 2, "model.tcn.dilations": "1",
        "train.epochs": epochs, "train.batch_size": 16, "train.device": "cpu"})
    exp = CrossValidation(cfg, MemoryDataset(per_speaker_class=2), folds=[1])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    obs = MlflowObserver(uri, ensure_experiment(uri, "t"), run_name="t")
    return exp, uri, obs, MlflowClient(tracking_uri=uri)


def test_a_fold_run_keeps_its_best_data_at_once_and_draws_pictures_when_it_ends(tmp_path):
    exp, _, obs, client = _tiny(tmp_path, epochs=3)
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


def _ended_writer() -> str:
    """The writer id of a process that has ended."""
    import subprocess
    import sys

    code = "from satn.tracking import writer_id; print(writer_id())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("ending", ["stopped by the tuner", "its process killed"])
def test_a_run_that_never_reached_its_end_gets_the_pictures_it_would_have_drawn(
        tmp_path, ending):
    """A tuner stops a trial inside its report (the sweep's driver draws), or its process
    is killed (``satn runs repair`` draws): the fold's pictures come from the data logged
    at its best, the same pictures the fold would have drawn at its end."""
    import numpy as np

    from satn.plots import attention_png, confusion_png
    from satn.safenames import safe_names
    from satn.tracking import WRITER_TAG, draw_stored_figures, repair_runs

    exp, uri, obs, client = _tiny(tmp_path, epochs=4)

    class Stopped(Exception):
        pass

    class Stop:  # the tuner's stop, after the second epoch's report
        def on_start(self, cv):
            pass

        def on_epoch(self, cv, epoch, stats, final):
            if epoch == 2:
                raise Stopped

    try:
        exp.run([obs, Stop()])
    except Stopped:
        pass
    run_id = obs.fold_runs["fold1"]
    assert not [f for f in _files(client, run_id, "confusion") if f.endswith(".png")]
    if ending == "stopped by the tuner":
        assert draw_stored_figures(uri, obs.parent_id) == 1
    else:
        dead = _ended_writer()
        for rid in (obs.parent_id, run_id):
            client.set_tag(rid, WRITER_TAG, dead)
        assert {o.run_id for o in repair_runs(uri)} == {obs.parent_id, run_id}
        assert client.get_run(run_id).info.status == "KILLED"
    assert draw_stored_figures(uri, obs.parent_id) == 0  # drawn once

    best = exp.trainers["fold1"].best
    ours = tmp_path / "ours"
    ours.mkdir()
    got = Path(client.download_artifacts(run_id, "", str(tmp_path / "got")))
    for side, scores in (("dev", best.dev), ("test", best.test)):
        confusion_png(scores.confusion, exp.classes, ours / f"{side}.png",
                      title=f"fold1 {side} (epoch {best.epoch})")
        assert (got / "confusion" / f"{side}.png").read_bytes() == (
            ours / f"{side}.png").read_bytes()
    names = safe_names(best.attention)
    assert len(names) == len(exp.prepared[0].data.probe_ids) > 0
    for safe, uid in names.items():
        attention_png(best.attention[uid], ours / f"{safe}.png", title=f"{uid} (epoch {best.epoch})")
        assert (got / "attention" / f"{safe}.png").read_bytes() == (
            ours / f"{safe}.png").read_bytes()
        assert np.array_equal(np.load(got / "attention" / f"{safe}.npy"), best.attention[uid])


def test_pictures_that_cannot_be_drawn_are_a_warning_not_an_error(tmp_path):
    """After a sweep or a repair the runs are marked: a store that fails to give back a
    run's data costs its pictures, with a warning naming the run."""
    from satn.tracking import draw_or_warn, ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(uri, "t")
    with pytest.warns(UserWarning, match="pictures of run no-such-run not drawn"):
        draw_or_warn(uri, "no-such-run")
