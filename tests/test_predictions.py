"""A neural run keeps its best epoch's per-utterance predictions in every fold run."""

import pytest
import torch
from fakes import MemoryDataset

from satn.config import ExperimentConfig
from satn.significance import fold_scores


def test_neural_fold_runs_keep_the_best_epochs_predictions(tmp_path):
    from mlflow.tracking import MlflowClient

    from satn.runner import CrossValidation
    from satn.tracking import MlflowObserver, ensure_experiment, load_predictions

    torch.set_num_threads(1)
    cfg = ExperimentConfig().override({
        "model.tcn.channels": 8, "model.attention.heads": 2, "model.tcn.dilations": "1,2", "train.epochs": 2,
        "train.batch_size": 16, "train.device": "cpu"})
    data = MemoryDataset(per_speaker_class=2)
    exp = CrossValidation(cfg, data, folds=[1])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    obs = MlflowObserver(uri, ensure_experiment(uri, "t"), run_name="t")
    exp.run([obs])
    frame = load_predictions(uri, obs.parent_id)
    fold = exp.prepared[0].fold
    best = exp.trainers["fold1"].best
    for side in ("dev", "test"):
        rows = frame[frame["side"] == side]
        assert sorted(rows["id"]) == sorted(getattr(fold, side))
        speakers = dict(zip(data.meta["id"], data.meta["speaker"], strict=True))
        assert (rows["speaker"] == rows["id"].map(speakers)).all()
    assert frame.attrs["score_kind"] == "probability"
    scores = frame[[c for c in frame.columns if c.startswith("score.")]].to_numpy()
    assert scores.sum(1) == pytest.approx(1.0, abs=1e-5)
    assert fold_scores(frame, "ua") == pytest.approx({"fold1": best.test.ua})
    assert fold_scores(frame, "ua", side="dev") == pytest.approx({"fold1": best.dev.ua})
    run = MlflowClient(tracking_uri=uri).get_run(obs.fold_runs["fold1"])
    assert run.data.metrics["best_test_ua"] == pytest.approx(best.test.ua)


def test_scores_of_a_table_read_its_class_names_in_the_given_order():
    import numpy as np

    from satn.metrics import score
    from satn.predictions import predictions_frame, scores_of

    classes = ("neu", "hap", "sad")
    true, pred = [0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2]
    rows = predictions_frame([f"u{i}" for i in range(6)], ["s"] * 6, true,
                             np.eye(3)[pred], classes, "test")
    got, want = scores_of(rows, classes), score(true, pred, 3)
    assert (got.ua, got.wa) == pytest.approx((want.ua, want.wa))
    assert (got.confusion == want.confusion).all()
    # another class order names other rows and columns of the same matrix
    flipped = scores_of(rows, classes[::-1])
    assert (flipped.confusion == want.confusion[::-1, ::-1]).all()
