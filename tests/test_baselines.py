"""Classical baselines: perfect on separable data, C chosen without the test side,
openSMILE functionals through the store, log-mel statistics, predictions tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_store import good_corpus

from satn.baselines import BaselineConfig, run_baseline, select_c
from satn.baselines.classify import class_scores, make_classifier
from satn.baselines.features import PERCENTILES, OpenSmileExtractor, logmel_stats
from satn.config import ConfigError, ExperimentConfig
from satn.metrics import score
from satn.predictions import classes_of, read_predictions, write_predictions
from satn.store import build_dataset, open_dataset

CLASSES = ("neu", "hap", "sad")


def blobs(n_speakers: int = 8, per_class: int = 6, dim: int = 10, gap: float = 8.0,
          seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Three classes, each far along its own axis: linearly separable with a wide margin."""
    rng = np.random.default_rng(seed)
    xs, rows = [], []
    for s in range(n_speakers):
        for c, label in enumerate(CLASSES):
            for k in range(per_class):
                x = rng.normal(0, 1, dim)
                x[c] += gap
                xs.append(x)
                rows.append({"id": f"spk{s}_{label}{k}", "speaker": f"spk{s}", "label": label})
    return np.array(xs), pd.DataFrame(rows)


def kfold_cfg(**folds) -> ExperimentConfig:
    return ExperimentConfig().override({"data.classes": ",".join(CLASSES),
                                        "folds.scheme": "speaker_kfold", "folds.k": 4,
                                        "folds.dev_groups": 1, **folds})


@pytest.mark.parametrize("classifier", ["svm", "logreg"])
def test_separable_data_is_classified_perfectly_on_every_fold(classifier):
    x, meta = blobs()
    res = run_baseline(x, meta, kfold_cfg(), BaselineConfig(classifier=classifier,
                                                           c_grid=(0.01, 1.0)))
    assert len(res.folds) == 4
    for f in res.folds:
        assert f.test.wa == f.test.ua == 1.0 and f.dev.ua == 1.0
        # every utterance once per side, in the table the significance tests read
        pred = f.predictions
        assert sorted(pred["side"].unique()) == ["dev", "test"]
        assert (pred["true"] == pred["pred"]).all()
        assert classes_of(pred) == CLASSES
        assert f.sizes["test"] == (pred["side"] == "test").sum()
    assert res.test.ua_mean == 1.0 and res.summary()["test_ua_mean"] == 1.0
    # each test utterance of a speaker k-fold appears on exactly one fold's test side
    tests = pd.concat([f.predictions[f.predictions["side"] == "test"] for f in res.folds])
    assert sorted(tests["id"]) == sorted(meta["id"])


def test_noise_is_not_classified_perfectly():
    """The perfect score above is earned: pure noise scores near chance."""
    rng = np.random.default_rng(1)
    x, meta = blobs(gap=0.0)
    x = rng.normal(size=x.shape)
    res = run_baseline(x, meta, kfold_cfg(), BaselineConfig(classifier="logreg",
                                                           c_grid=(0.01, 1.0)))
    assert res.test.ua_mean < 0.6


def heldout_cfg() -> ExperimentConfig:
    return kfold_cfg(**{"folds.scheme": "heldout_speakers", "folds.test_speakers": "spk0,spk1",
                        "folds.dev_speakers": "spk2,spk3"})


def test_test_side_never_reaches_the_choice_of_c():
    """Scrambling the test side's features and labels changes its scores, never the choice."""
    x, meta = blobs(gap=1.0, seed=3)  # overlapping classes: C matters
    bcfg = BaselineConfig(classifier="svm", c_grid=(1e-4, 1e-3, 1e-2, 0.1, 1.0))
    cfg = heldout_cfg()
    base = run_baseline(x, meta, cfg, bcfg).folds[0]
    rng = np.random.default_rng(7)
    test = meta["speaker"].isin(["spk0", "spk1"]).to_numpy()
    x2, meta2 = x.copy(), meta.copy()
    x2[test] = rng.normal(0, 5, x2[test].shape)
    meta2.loc[test, "label"] = rng.permutation(meta2.loc[test, "label"].to_numpy())
    other = run_baseline(x2, meta2, cfg, bcfg).folds[0]
    assert other.c == base.c and other.dev_ua_by_c == base.dev_ua_by_c
    dev = lambda f: f.predictions[f.predictions["side"] == "dev"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(dev(other), dev(base))
    assert other.test.ua != base.test.ua  # the scrambled test side was really used for scoring
    # ... while the dev side does drive it: a different dev side changes the dev UA curve
    x3 = x.copy()
    devs = meta["speaker"].isin(["spk2", "spk3"]).to_numpy()
    x3[devs] = rng.normal(0, 5, x3[devs].shape)
    assert run_baseline(x3, meta, cfg, bcfg).folds[0].dev_ua_by_c != base.dev_ua_by_c


def test_select_c_keeps_the_best_dev_ua_and_the_smaller_c_on_ties():
    x, meta = blobs(gap=1.0, seed=5)
    y = meta["label"].map(CLASSES.index).to_numpy()
    tr, dv = np.arange(0, 90), np.arange(90, 144)
    sel = select_c(x[tr], y[tr], x[dv], y[dv], BaselineConfig(c_grid=(1.0, 1e-3, 0.1)), 3)
    best = max(sel.dev_ua.values())
    assert sel.c == min(c for c, ua in sel.dev_ua.items() if ua == best)
    assert sorted(sel.dev_ua) == [1e-3, 0.1, 1.0]
    # the kept model is the fit of that C: it reproduces its dev UA
    assert score(y[dv], sel.model.predict(x[dv]), 3).ua == sel.dev_ua[sel.c]
    with pytest.raises(ConfigError, match="dev side"):
        select_c(x[tr], y[tr], x[:0], y[:0], BaselineConfig(), 3)


def test_class_scores_binary_margins_and_a_class_missing_from_training():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = (x[:, 0] > 0).astype(np.int64) * 2  # classes 0 and 2 of 3; class 1 never trains
    for clf in ("svm", "logreg"):
        model = make_classifier(BaselineConfig(classifier=clf), 1.0).fit(x, y)
        s, pred = class_scores(model, x, 3)
        assert s.shape == (40, 3)
        assert set(pred) <= {0, 2}
        np.testing.assert_array_equal(pred, np.where(s[:, 2] > s[:, 0], 2, 0))
        assert (np.isnan(s[:, 1]) if clf == "svm" else (s[:, 1] == 0)).all()


def test_baseline_config_checks_its_values():
    with pytest.raises(ConfigError, match="baseline.classifier"):
        BaselineConfig(classifier="forest")
    with pytest.raises(ConfigError, match="baseline.c_grid"):
        BaselineConfig(c_grid=(0.0,))
    assert BaselineConfig(features="compare", classifier="logreg").name == "logreg/compare"


def test_logmel_stats_per_band():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)  # band 0: 0,2,..,38; band 1: 1,..,39
    v = logmel_stats(x)
    k = 2 + len(PERCENTILES)
    assert v.shape == (2 * k,)
    np.testing.assert_allclose(v[:2], [19.0, 20.0])
    np.testing.assert_allclose(v[2:4], x.std(0))
    np.testing.assert_allclose(v[4 + 2 * PERCENTILES.index(50):][:2], np.median(x, 0))


def test_opensmile_functionals_are_a_cached_dataset(tmp_path):
    import opensmile

    from satn.audio import read_audio

    load = good_corpus(tmp_path / "audio", n=3)
    ex = OpenSmileExtractor("egemaps")
    a = build_dataset(load, None, str(tmp_path / "store"), corpus_tag="toy", extractor=ex,
                      progress=False)
    assert "-egemaps-" in a.uri and a.n_rows == 3
    ds = open_dataset(a.uri)
    assert ds.frame_shape == (88,) and ds.manifest["kind"] == "egemaps"
    assert list(ds.meta["n_frames"]) == [1, 1, 1]
    again = build_dataset(load, None, str(tmp_path / "store"), corpus_tag="toy", extractor=ex,
                          progress=False)
    assert again.cached and again.key == a.key
    # the stored row is openSMILE's own answer for that file
    row = ds.meta.index[ds.meta["id"] == load.utterances[0].id][0]
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    wave = read_audio(load.utterances[0].path, 16000)
    np.testing.assert_allclose(ds.features(row), smile.process_signal(wave, 16000).to_numpy(),
                               rtol=1e-6)
    # another feature set is another dataset beside it
    b = build_dataset(load, None, str(tmp_path / "store"), corpus_tag="toy",
                      extractor=OpenSmileExtractor("compare"), progress=False)
    assert b.key != a.key and open_dataset(b.uri).frame_shape == (6373,)


def test_predictions_table_round_trip(tmp_path):
    x, meta = blobs(n_speakers=6, per_class=2)
    res = run_baseline(x, meta, heldout_cfg(), BaselineConfig(c_grid=(1.0,)))
    frame = res.folds[0].predictions
    path = write_predictions(frame, tmp_path / "p.parquet", "decision")
    back = read_predictions(path)
    pd.testing.assert_frame_equal(back, frame)
    assert back.attrs["score_kind"] == "decision"
    with pytest.raises(ValueError, match="score_kind"):
        write_predictions(frame, tmp_path / "q.parquet", "logits?")


def test_logged_baseline_reads_back_for_comparison(tmp_path):
    """log_baseline -> MLflow -> load_predictions gives the table and metrics it was given."""
    from mlflow.tracking import MlflowClient

    from satn.significance import compare, fold_scores
    from satn.tracking import ensure_experiment, load_predictions, log_baseline

    x, meta = blobs(gap=1.0, seed=2)
    cfg = heldout_cfg()  # one fold: MLflow and plotting time, not more coverage, grows with folds
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = ensure_experiment(uri, "t")
    runs = {}
    for clf in ("svm", "logreg"):
        res = run_baseline(x, meta, cfg, BaselineConfig(classifier=clf, c_grid=(0.01, 1.0)))
        runs[clf] = (res, log_baseline(uri, exp, cfg, res, features={"key": "k", "uri": "u"}))
    res, run_id = runs["svm"]
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(run_id)
    assert parent.data.tags["satn.level"] == "config" and parent.info.status == "FINISHED"
    assert parent.data.metrics["test_ua_mean"] == pytest.approx(res.test.ua_mean)
    frame = load_predictions(uri, run_id)
    assert frame.attrs["variant"] == "svm/egemaps"  # the BaselineConfig default features
    assert frame.attrs["score_kind"] == "decision"
    assert sorted(frame["fold"].unique()) == [f.name for f in res.folds]
    assert fold_scores(frame, "ua") == pytest.approx({f.name: f.test.ua for f in res.folds})
    c = compare(frame, load_predictions(uri, runs["logreg"][1]), "ua", n_resamples=200)
    assert c.diff.estimate == pytest.approx(res.test.ua_mean - runs["logreg"][0].test.ua_mean)


@pytest.mark.parametrize("classifier", ["svm", "logreg"])
def test_inner_cv_choice_predicts_every_training_speaker_once_and_refits_on_them(classifier):
    x, meta = blobs()
    cfg = kfold_cfg(**{"selection.inner_k": 3})
    res = run_baseline(x, meta, cfg, BaselineConfig(classifier=classifier, c_grid=(0.01, 1.0)))
    plain = run_baseline(x, meta, kfold_cfg(), BaselineConfig(classifier=classifier,
                                                              c_grid=(0.01, 1.0)))
    for f, p in zip(res.folds, plain.folds, strict=True):
        assert f.test.ua == 1.0 and f.dev.ua == 1.0
        dev = f.predictions[f.predictions["side"] == "dev"]
        test = set(p.predictions.loc[p.predictions["side"] == "test", "id"])
        pool = [u for u in meta["id"] if u not in test]
        # dev: the outer train and dev speakers, each utterance once (cross-validated)
        assert sorted(dev["id"]) == sorted(pool)
        assert f.sizes["train"] == f.sizes["dev"] == len(pool)


def test_inner_cv_choice_never_sees_the_test_side():
    x, meta = blobs(gap=1.0, seed=3)
    bcfg = BaselineConfig(classifier="svm", c_grid=(1e-4, 1e-3, 1e-2, 0.1, 1.0))
    cfg = heldout_cfg().override({"selection.inner_k": 3})
    base = run_baseline(x, meta, cfg, bcfg).folds[0]
    rng = np.random.default_rng(7)
    test = meta["speaker"].isin(["spk0", "spk1"]).to_numpy()
    x2 = x.copy()
    x2[test] = rng.normal(0, 5, x2[test].shape)
    other = run_baseline(x2, meta, cfg, bcfg).folds[0]
    assert other.c == base.c and other.dev_ua_by_c == base.dev_ua_by_c
    assert other.test.ua != base.test.ua
    # the outer dev speakers are now training speakers: moving them moves the CV curve
    x3 = x.copy()
    devs = meta["speaker"].isin(["spk2", "spk3"]).to_numpy()
    x3[devs] = rng.normal(0, 5, x3[devs].shape)
    assert run_baseline(x3, meta, cfg, bcfg).folds[0].dev_ua_by_c != base.dev_ua_by_c


def test_speaker_normalisation_removes_what_each_speaker_adds():
    """Every speaker shifts and scales all of their vectors (a voice); the classes differ
    a little within each speaker. Unseen test speakers defeat global standardisation;
    each speaker standardised by their own statistics (no labels) is classified well."""
    rng = np.random.default_rng(5)
    x, meta = blobs(n_speakers=8, gap=3.0, seed=5)
    for s in meta["speaker"].unique():
        rows = (meta["speaker"] == s).to_numpy()
        x[rows] = x[rows] * rng.uniform(0.5, 3.0) + rng.normal(0, 25, x.shape[1])
    bcfg = BaselineConfig(classifier="logreg", c_grid=(0.01, 1.0))
    plain = run_baseline(x, meta, kfold_cfg(), bcfg)
    own = run_baseline(x, meta, kfold_cfg(**{"recipe.normalisation": "speaker"}), bcfg)
    assert own.test.ua_mean > 0.9 > plain.test.ua_mean
